/* ratelimit: a token bucket per principal (or client address), shared by every worker and host. */
#include "config.h"

#include "auth.h"
#include "buf.h"
#include "conf.h"
#include "ratelimit.h"
#include "store.h"
#include "vtime.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RL_MAGIC 0x76616c726c696d31ULL   /* "valrlim1" */
#define RL_SLOTS 65536                    /* buckets on one host */
#define RL_PROBE 8                        /* slots of a group: where one key may live */
#define RL_STRIPES 256                    /* mutexes: group % RL_STRIPES */

/*
 * The host's table, mapped by every worker process. A slot holds one
 * bucket: the key's 64-bit hash, the tokens and when they were counted.
 * A key lives in one of the RL_PROBE slots of the group its hash names; when
 * all are taken by other keys the one idle longest is given over (a bucket idle that long is
 * full anyway, unless the table is flooded with keys: then a caller may get a
 * fresh bucket early; nginx's per-IP limit still holds).
 */
struct rl_slot {
	uint64_t hash;          /* 0: free */
	int64_t last_ms;
	double tokens;
};

struct rl_table {
	uint64_t magic;
	uint64_t size;
	pthread_mutex_t locks[RL_STRIPES];
	struct rl_slot slots[RL_SLOTS];
};

struct ratelimit {
	int redis;
	double capacity;
	double per_ms;          /* tokens added a millisecond */
	int fd;
	struct rl_table *t;
	long long (*now_ms)(void);   /* the wall clock (vtime_now_ms); tests set their own */
};

double
ratelimit_refill(double tokens, double capacity, double per_ms, long long elapsed_ms)
{
	if (elapsed_ms > 0)
		tokens += (double)elapsed_ms * per_ms;
	return tokens > capacity ? capacity : tokens;
}

/* FNV-1a, never 0 (0 marks a free slot). */
static uint64_t
key_hash(const char *key)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *key != '\0'; key++) {
		h ^= (unsigned char)*key;
		h *= 1099511628211ULL;
	}
	return h != 0 ? h : 1;
}

static int
table_init(struct rl_table *t)
{
	pthread_mutexattr_t attr;
	size_t i;

	memset(t, 0, sizeof(*t));
	if (pthread_mutexattr_init(&attr) != 0)
		return -1;
	pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	/* A worker killed while holding a lock must not wedge the others. */
	pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
	for (i = 0; i < RL_STRIPES; i++)
		if (pthread_mutex_init(&t->locks[i], &attr) != 0) {
			pthread_mutexattr_destroy(&attr);
			return -1;
		}
	pthread_mutexattr_destroy(&attr);
	t->size = sizeof(*t);
	t->magic = RL_MAGIC;
	return 0;
}

struct ratelimit *
ratelimit_open(const struct conf *conf, int redis, char *err, size_t errlen)
{
	struct ratelimit *rl = calloc(1, sizeof(*rl));
	char path[4096];
	struct stat sb;

	if (rl == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	rl->redis = redis;
	rl->fd = -1;
	rl->now_ms = vtime_now_ms;
	rl->capacity = (double)conf->rate_limit_burst;
	rl->per_ms = (double)conf->rate_limit_rpm / 60000.0;
	if (redis)
		return rl;
	snprintf(path, sizeof(path), "%s/valerie.ratelimit", conf->data_dir);
	rl->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (rl->fd < 0) {
		snprintf(err, errlen, "VALERIE_DATA_DIR: cannot open %s: %s", path, strerror(errno));
		free(rl);
		return NULL;
	}
	/* The first process sizes and stamps the table; a stale layout is reset. */
	flock(rl->fd, LOCK_EX);
	if (fstat(rl->fd, &sb) != 0 || (size_t)sb.st_size != sizeof(struct rl_table)) {
		if (ftruncate(rl->fd, 0) != 0 || ftruncate(rl->fd, sizeof(struct rl_table)) != 0) {
			snprintf(err, errlen, "cannot size %s: %s", path, strerror(errno));
			goto fail;
		}
	}
	rl->t = mmap(NULL, sizeof(struct rl_table), PROT_READ | PROT_WRITE, MAP_SHARED, rl->fd, 0);
	if (rl->t == MAP_FAILED) {
		rl->t = NULL;
		snprintf(err, errlen, "cannot map %s: %s", path, strerror(errno));
		goto fail;
	}
	if ((rl->t->magic != RL_MAGIC || rl->t->size != sizeof(struct rl_table)) &&
	    table_init(rl->t) != 0) {
		snprintf(err, errlen, "cannot set up the rate-limit table in %s", path);
		goto fail;
	}
	flock(rl->fd, LOCK_UN);
	return rl;
fail:
	flock(rl->fd, LOCK_UN);
	ratelimit_close(rl);
	return NULL;
}

void
ratelimit_set_clock(struct ratelimit *rl, long long (*now_ms)(void))
{
	rl->now_ms = now_ms;
}

void
ratelimit_close(struct ratelimit *rl)
{
	if (rl == NULL)
		return;
	if (rl->t != NULL)
		munmap(rl->t, sizeof(struct rl_table));
	if (rl->fd >= 0)
		close(rl->fd);
	free(rl);
}

static int
stripe_lock(pthread_mutex_t *m)
{
	int rc = pthread_mutex_lock(m);

	if (rc == EOWNERDEAD) {
		/* Its holder died mid-update: a bucket may be off by a token, nothing worse. */
		pthread_mutex_consistent(m);
		rc = 0;
	}
	return rc;
}

/*
 * The local table: takes a token from the key's bucket, if any. A key lives
 * in the group of RL_PROBE slots its hash names, and one mutex guards a whole
 * group, so finding, creating and updating a bucket is one critical section.
 */
static void
take_local(struct ratelimit *rl, const char *key, int *allowed, double *tokens)
{
	uint64_t h = key_hash(key);
	size_t group = (size_t)(h % (RL_SLOTS / RL_PROBE)), i, pick = 0;
	struct rl_slot *g = &rl->t->slots[group * RL_PROBE], *s = NULL;
	pthread_mutex_t *m = &rl->t->locks[group % RL_STRIPES];
	long long now;

	*allowed = 1;
	*tokens = rl->capacity;
	if (stripe_lock(m) != 0)
		return;
	/*
	 * NOTE: the time is read under the lock, so the processes sharing a bucket
	 * see it move forward in turn. A wall clock stepped back counts as no time
	 * passing, and the bucket goes on from the new time (as the Redis script
	 * does), rather than waiting, refilling nothing, for the clock to catch
	 * up with the old one.
	 */
	now = rl->now_ms();
	for (i = 0; i < RL_PROBE; i++) {
		if (g[i].hash == h) {
			s = &g[i];
			break;
		}
		if (g[pick].hash != 0 && (g[i].hash == 0 || g[i].last_ms < g[pick].last_ms))
			pick = i;
	}
	if (s == NULL) {
		/* A new bucket, full, in a free slot or the one idle longest. */
		s = &g[pick];
		s->hash = h;
		s->tokens = rl->capacity;
		s->last_ms = now;
	}
	s->tokens = ratelimit_refill(s->tokens, rl->capacity, rl->per_ms, now - s->last_ms);
	s->last_ms = now;
	*allowed = s->tokens >= 1.0;
	if (*allowed)
		s->tokens -= 1.0;
	*tokens = s->tokens;
	pthread_mutex_unlock(m);
}

void
ratelimit_take(struct ratelimit *rl, struct store_conn *c, const char *key,
    struct rl_result *out)
{
	char rkey[64], hex[65];
	double tokens;
	int allowed;

	memset(out, 0, sizeof(*out));
	out->allowed = 1;
	out->limit = (long long)rl->capacity;
	if (rl->redis) {
		/* NOTE: a hash names the bucket: bounded, and any principal id fits a hash tag. */
		auth_sha256_hex(key, strlen(key), hex);
		snprintf(rkey, sizeof(rkey), "valerie:rl:{%.32s}", hex);
		if (store_bucket_take(c, rkey, rl->capacity, rl->per_ms, &allowed, &tokens) !=
		    STORE_OK) {
			out->unavailable = 1;
			out->remaining = out->limit;
			return;
		}
	} else {
		take_local(rl, key, &allowed, &tokens);
	}
	out->allowed = allowed;
	out->remaining = tokens < 0 ? 0 : (long long)floor(tokens);
	out->reset_s = (long long)ceil((rl->capacity - tokens) / rl->per_ms / 1000.0);
	if (!allowed)
		out->retry_after_s = (long long)ceil((1.0 - tokens) / rl->per_ms / 1000.0);
	if (!allowed && out->retry_after_s < 1)
		out->retry_after_s = 1;
}

void
ratelimit_address(const char *addr, char *out, size_t outlen)
{
	unsigned char a[16];
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	if (inet_pton(AF_INET6, addr, a) != 1) {
		buf_strcpy(out, outlen, addr);
		return;
	}
	if (memcmp(a, mapped, sizeof(mapped)) == 0) {
		snprintf(out, outlen, "%u.%u.%u.%u", a[12], a[13], a[14], a[15]);
		return;
	}
	snprintf(out, outlen, "%x:%x:%x:%x::/64", a[0] << 8 | a[1], a[2] << 8 | a[3],
	    a[4] << 8 | a[5], a[6] << 8 | a[7]);
}
