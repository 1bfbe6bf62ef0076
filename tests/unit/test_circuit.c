/*
 * test_circuit: the shared circuit breaker. Closed lets calls through; `threshold`
 * failures in a row open it; open refuses until the reset time, then exactly one caller
 * gets the half-open probe; a probe's success closes, its failure reopens; a probe out
 * longer than the reset time (its process died) is replaced by one new probe. Then two
 * threads ask at the same instant, many times over: never two probes at once.
 */
#include "config.h"

#include "check.h"
#include "circuit.h"
#include "tmpdir.h"

#include <pthread.h>
#include <stdatomic.h>

#define RESET 1000
#define ROUNDS 20000

static struct circuit *shared;
static pthread_barrier_t go, over;
static long long round_now;
static atomic_int allowed;

static void *
racer(void *arg)
{
	int i;

	(void)arg;
	for (i = 0; i < ROUNDS; i++) {
		pthread_barrier_wait(&go);
		if (circuit_allow(shared, round_now, RESET))
			atomic_fetch_add(&allowed, 1);
		pthread_barrier_wait(&over);
	}
	return NULL;
}

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	CHECK(f != NULL);
	if (f == NULL)
		return;
	fputs(text, f);
	fclose(f);
}

int
main(void)
{
	char path[4200], boot[4200], err[256];
	struct circuits *cs;
	struct circuit *c;
	pthread_t t[2];
	long long now = 1000000;
	int i, n, twice = 0;

	if (tmpdir_make("valerie-circuit") == NULL)
		return 1;
	/*
	 * The table outlives a reboot in VALERIE_DATA_DIR, but its times are the
	 * monotonic clock's: in another boot it starts afresh (all closed), in the same
	 * boot it is kept.
	 */
	snprintf(boot, sizeof(boot), "%s/boot_id", tmpdir_path);
	write_file(boot, "boot-one\n");
	circuits_set_boot_id_file(boot);
	snprintf(path, sizeof(path), "%s/reboot", tmpdir_path);
	cs = circuits_open(path, err, sizeof(err));
	CHECK(cs != NULL);
	if (cs == NULL)
		return 1;
	c = circuits_get(cs, "provider:boot");
	circuit_failure(c, 50000000, 1);    /* opened late in a long uptime */
	circuits_close(cs);
	cs = circuits_open(path, err, sizeof(err));
	c = circuits_get(cs, "provider:boot");
	CHECK_INT(circuit_state_now(c, 50000000, RESET), CIRCUIT_OPEN);
	circuits_close(cs);
	write_file(boot, "boot-two\n");
	cs = circuits_open(path, err, sizeof(err));
	c = circuits_get(cs, "provider:boot");
	CHECK_INT(circuit_state_now(c, 1000, RESET), CIRCUIT_CLOSED);
	CHECK(circuit_allow(c, 1000, RESET));
	circuits_close(cs);

	snprintf(path, sizeof(path), "%s/circuits", tmpdir_path);
	cs = circuits_open(path, err, sizeof(err));
	CHECK(cs != NULL);
	if (cs == NULL)
		return 1;
	c = circuits_get(cs, "provider:test");
	CHECK(c != NULL);

	/* Closed; three failures open it. */
	CHECK(circuit_allow(c, now, RESET));
	circuit_failure(c, now, 3);
	circuit_failure(c, now, 3);
	CHECK(circuit_allow(c, now, RESET));
	circuit_failure(c, now, 3);
	CHECK_INT(circuit_state_now(c, now, RESET), CIRCUIT_OPEN);
	CHECK(!circuit_allow(c, now + RESET - 1, RESET));

	/* After the reset time: one probe, and no other call while it is out. */
	CHECK(circuit_allow(c, now + RESET, RESET));
	for (n = 0, i = 0; i < 10; i++)
		n += circuit_allow(c, now + RESET + i, RESET);
	CHECK_INT(n, 0);
	/* Its failure reopens: again nothing until the reset time from then. */
	circuit_failure(c, now + RESET + 10, 3);
	CHECK_INT(circuit_state_now(c, now + RESET + 10, RESET), CIRCUIT_OPEN);
	CHECK(!circuit_allow(c, now + 2 * RESET, RESET));
	CHECK(circuit_allow(c, now + 2 * RESET + 10, RESET));
	CHECK(!circuit_allow(c, now + 2 * RESET + 11, RESET));
	/* A probe out longer than the reset time: one new probe. */
	CHECK(circuit_allow(c, now + 3 * RESET + 10, RESET));
	CHECK(!circuit_allow(c, now + 3 * RESET + 10, RESET));
	/* Its success closes. */
	circuit_success(c);
	CHECK_INT(circuit_state_now(c, now + 3 * RESET + 20, RESET), CIRCUIT_CLOSED);
	CHECK(circuit_allow(c, now + 3 * RESET + 20, RESET));

	/* Two threads at once on a circuit whose reset time just passed: one probe. */
	shared = circuits_get(cs, "provider:race");
	CHECK(shared != NULL);
	pthread_barrier_init(&go, NULL, 3);
	pthread_barrier_init(&over, NULL, 3);
	for (i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, racer, NULL);
	for (i = 0; i < ROUNDS; i++) {
		now += 10 * RESET;
		circuit_failure(shared, now, 1);          /* a probe failed, or the first failure */
		if (circuit_allow(shared, now, RESET))   /* still open: refused */
			twice++;
		round_now = now + RESET;
		atomic_store(&allowed, 0);
		pthread_barrier_wait(&go);
		pthread_barrier_wait(&over);
		if (atomic_load(&allowed) != 1)
			twice++;
	}
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	if (twice > 0)
		fprintf(stderr, "%d of %d rounds did not let exactly one probe through\n", twice,
		    ROUNDS);
	CHECK_INT(twice, 0);
	circuits_close(cs);
	return check_done("test_circuit");
}
