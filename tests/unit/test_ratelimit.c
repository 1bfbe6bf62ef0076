/*
 * test_ratelimit: the host's token buckets (LMDB store: the table every worker
 * maps). A burst then refusals with the right numbers; separate keys separate
 * buckets; the refill arithmetic; and one bucket shared by several processes
 * taking from it at once (forked children), never more tokens than the burst;
 * a wall clock stepped back does not stop the refill.
 */
#include "config.h"

#include "check.h"
#include "fakeenv.h"
#include "tmpdir.h"

#include "conf.h"
#include "ratelimit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILDREN 4
#define TRIES 50   /* per child, all at once: far more than the burst */

static long long fake_ms;

static long long
fake_clock(void)
{
	return fake_ms;
}

int
main(void)
{
	char err[256], key[32];
	/* 6 a minute: one token every 10 s, so no refill happens during the test. */
	const char *env[] = {"VALERIE_DATA_DIR", NULL, "RATE_LIMIT_BURST", "5",
		"RATE_LIMIT_REQUESTS_PER_MINUTE", "6", NULL, NULL};
	struct conf conf;
	struct ratelimit *rl;
	struct rl_result r;
	int i, status, allowed, *shared;
	pid_t pids[CHILDREN];

	/* Addresses as buckets name them: IPv6 by its /64, IPv4 (mapped or not) as it is. */
	{
		static const char *const cases[][2] = {
			{"192.0.2.7", "192.0.2.7"},
			{"::ffff:192.0.2.7", "192.0.2.7"},
			{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
			{"2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"},
			{"::1", "0:0:0:0::/64"},
			{"fe80::1", "fe80:0:0:0::/64"},
			{"", ""},
			{"unix:", "unix:"},
		};
		char got[64];
		size_t k;

		for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
			ratelimit_address(cases[k][0], got, sizeof(got));
			CHECK_STR(got, cases[k][1]);
		}
	}
	if ((env[1] = tmpdir_make("valerie-rl")) == NULL)
		return 1;
	CHECK_INT(conf_load(&conf, fake_get, env, err, sizeof(err)), CONF_OK);
	rl = ratelimit_open(&conf, 0, err, sizeof(err));
	CHECK(rl != NULL);
	if (rl == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}

	/* A burst of 5, then refusals that say when to come back. */
	for (i = 0; i < 5; i++) {
		ratelimit_take(rl, NULL, "p:alice", &r);
		CHECK_INT(r.allowed, 1);
		CHECK_INT(r.limit, 5);
		CHECK_INT(r.remaining, 4 - i);
		CHECK_INT(r.unavailable, 0);
	}
	ratelimit_take(rl, NULL, "p:alice", &r);
	CHECK_INT(r.allowed, 0);
	CHECK_INT(r.remaining, 0);
	CHECK(r.retry_after_s >= 9 && r.retry_after_s <= 10);   /* one token: 10 s */
	CHECK(r.reset_s >= 49 && r.reset_s <= 50);               /* five tokens: 50 s */

	/* Another principal, another bucket; an address is a key of its own too. */
	ratelimit_take(rl, NULL, "p:bob", &r);
	CHECK_INT(r.allowed, 1);
	CHECK_INT(r.remaining, 4);
	ratelimit_take(rl, NULL, "a:127.0.0.1", &r);
	CHECK_INT(r.allowed, 1);

	/* Refill: capacity caps it; nothing is added for no time. */
	CHECK(ratelimit_refill(0.0, 5.0, 0.0001, 10000) > 0.999 &&
	    ratelimit_refill(0.0, 5.0, 0.0001, 10000) < 1.001);
	CHECK(ratelimit_refill(4.5, 5.0, 0.0001, 100000) == 5.0);
	CHECK(ratelimit_refill(2.0, 5.0, 0.0001, 0) == 2.0);
	CHECK(ratelimit_refill(2.0, 5.0, 0.0001, -50) == 2.0);

	/*
	 * The wall clock stepped back an hour: no time passed, and the bucket goes
	 * on from there: a token is back 10 s later, as Retry-After said, not an
	 * hour and 10 s later.
	 */
	ratelimit_set_clock(rl, fake_clock);
	fake_ms = 1800000000000LL;
	for (i = 0; i < 5; i++)
		ratelimit_take(rl, NULL, "p:clock", &r);
	ratelimit_take(rl, NULL, "p:clock", &r);
	CHECK_INT(r.allowed, 0);
	fake_ms -= 3600 * 1000;
	ratelimit_take(rl, NULL, "p:clock", &r);
	CHECK_INT(r.allowed, 0);
	CHECK_INT(r.retry_after_s, 10);
	fake_ms += 10 * 1000;
	ratelimit_take(rl, NULL, "p:clock", &r);
	CHECK_INT(r.allowed, 1);
	CHECK_INT(r.remaining, 0);

	/* Many keys: each gets its own full bucket (the table gives idle slots over). */
	for (i = 0; i < 2000; i++) {
		snprintf(key, sizeof(key), "p:user-%d", i);
		ratelimit_take(rl, NULL, key, &r);
		if (!r.allowed)
			break;
	}
	CHECK_INT(i, 2000);
	ratelimit_close(rl);

	/* Processes sharing one bucket: exactly the burst passes, whoever takes. */
	shared = mmap(NULL, sizeof(int) * CHILDREN, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(shared != MAP_FAILED);
	for (i = 0; i < CHILDREN; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			struct ratelimit *mine = ratelimit_open(&conf, 0, err, sizeof(err));
			int n = 0, t;

			if (mine == NULL)
				_exit(2);
			for (t = 0; t < TRIES; t++) {
				ratelimit_take(mine, NULL, "p:shared", &r);
				n += r.allowed;
			}
			shared[i] = n;
			ratelimit_close(mine);
			_exit(0);
		}
	}
	for (allowed = 0, i = 0; i < CHILDREN; i++) {
		CHECK(waitpid(pids[i], &status, 0) == pids[i]);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		allowed += shared[i];
	}
	CHECK_INT(allowed, 5);
	munmap(shared, sizeof(int) * CHILDREN);

	return check_done("test_ratelimit");
}
