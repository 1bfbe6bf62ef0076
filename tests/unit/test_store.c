/*
 * test_store: the session store contract, run against the store the environment names
 * (VALERIE_SESSION_STORE, VALERIE_DATA_DIR, VALERIE_SESSION_REDIS_URL): turns numbered
 * without gaps under concurrent threads and processes, windows, idempotency records,
 * expiry, deletion; the cache beside the sessions (values, replacement, keys refused,
 * expiry, seen by another process). With no store set it uses LMDB in a fresh temp dir.
 */
#include "config.h"

#include "chat.h"
#include "check.h"
#include "conf.h"
#include "store.h"
#include "tmpdir.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define THREADS 8
#define PER_THREAD 25
#define PROCS 4
#define PER_PROC 25

static struct conf conf;
static struct store *st;
static char sid_prefix[64];

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sid(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s.%s", sid_prefix, name);
}

/* Parses a JSON array of turns; returns it (caller puts) or NULL. */
static struct json_object *
parse(const struct buf *b)
{
	return b->len ? json_tokener_parse(b->data) : NULL;
}

static int
turn_no(struct json_object *turns, size_t i)
{
	struct json_object *t = json_object_array_get_idx(turns, i), *n;

	return json_object_object_get_ex(t, "turn", &n) ? json_object_get_int(n) : -1;
}

static void *
appender(void *arg)
{
	const char *s = arg;
	struct store_conn *c = store_conn_new(st);
	int i, turn, *bad = calloc(1, sizeof(int));

	for (i = 0; i < PER_THREAD; i++)
		if (store_append(c, s, "anonymous", NULL,
		    "[{\"role\":\"user\",\"content\":\"x\"}]", now_ms(), &turn) != STORE_OK)
			(*bad)++;
	store_conn_free(c);
	return bad;
}

/* Every turn 1..n present exactly once, in order. */
static void
check_sequence(const char *s, int n)
{
	struct store_conn *c = store_conn_new(st);
	struct store_session_info info;
	struct json_object *turns;
	struct buf b = {0};
	int i, ok = 1;

	CHECK_INT(store_load(c, s, 0, 0, &info, &b), STORE_OK);
	CHECK_INT(info.turns, n);
	turns = parse(&b);
	CHECK(turns != NULL && (int)json_object_array_length(turns) == n);
	for (i = 0; turns != NULL && i < n && ok; i++)
		if (turn_no(turns, (size_t)i) != i + 1) {
			fprintf(stderr, "turn %d at index %d\n", turn_no(turns, (size_t)i), i);
			ok = 0;
		}
	CHECK(ok);
	json_object_put(turns);
	buf_free(&b);
	store_conn_free(c);
}

static const char *
real_get(const char *name, void *ctx)
{
	(void)ctx;
	return getenv(name);
}

int
main(void)
{
	struct store_conn *c;
	struct store_session_info info;
	struct buf b = {0};
	struct json_object *turns;
	pthread_t tids[THREADS];
	char err[256], s1[128], s2[128], s3[128], s4[128];
	int turn, i, p, failed_appends = 0;
	long long active0 = 0, active = 0;

	if (getenv("VALERIE_SESSION_STORE") == NULL && getenv("VALERIE_DATA_DIR") == NULL) {
		const char *dir = tmpdir_make("valerie-store");

		if (dir == NULL || setenv("VALERIE_DATA_DIR", dir, 1) != 0)
			return 1;
	}
	if (conf_load(&conf, real_get, NULL, err, sizeof(err)) != CONF_OK) {
		fprintf(stderr, "config: %s\n", err);
		return 1;
	}
	snprintf(sid_prefix, sizeof(sid_prefix), "t%ld-%d", (long)time(NULL), (int)getpid());
	st = store_open(&conf, err, sizeof(err));
	if (st == NULL) {
		fprintf(stderr, "store_open: %s\n", err);
		return 1;
	}
	printf("store: %s\n", store_kind(st));
	c = store_conn_new(st);
	CHECK(c != NULL);
	CHECK_INT(store_ping(c), STORE_OK);

	/* A new session: turn 1, owner recorded; the next append is turn 2. */
	sid(s1, sizeof(s1), "basic");
	CHECK_INT(store_count(c, &active0), STORE_OK);
	CHECK_INT(store_load(c, s1, 0, 0, &info, &b), STORE_NOT_FOUND);
	CHECK_INT(store_append(c, s1, "alice", NULL,
	    "[{\"role\":\"user\",\"content\":\"hello\"},{\"role\":\"assistant\",\"content\":\"hi\"}]",
	    1000, &turn), STORE_OK);
	CHECK_INT(turn, 1);
	/* The count moves with a new session. */
	CHECK_INT(store_count(c, &active), STORE_OK);
	CHECK_INT(active, active0 + 1);
	CHECK_INT(store_append(c, s1, "alice", NULL,
	    "[{\"role\":\"user\",\"content\":\"second\"}]", 2000, &turn), STORE_OK);
	CHECK_INT(turn, 2);
	buf_reset(&b, 0);
	CHECK_INT(store_load(c, s1, 0, 0, &info, &b), STORE_OK);
	CHECK_STR(info.owner, "alice");
	CHECK_INT(info.turns, 2);
	CHECK_INT(info.created_ms, 1000);
	CHECK_INT(info.updated_ms, 2000);
	turns = parse(&b);
	CHECK(turns != NULL && json_object_array_length(turns) == 2);
	CHECK_INT(turn_no(turns, 0), 1);
	CHECK_INT(turn_no(turns, 1), 2);
	CHECK_CONTAINS(b.data, "\"content\":\"hello\"");
	json_object_put(turns);
	/*
	 * Another owner's turn (one that found no session at its load, while
	 * alice made it) appends nothing: NOT_FOUND, the session unchanged.
	 */
	turn = 0;
	CHECK_INT(store_append(c, s1, "mallory", NULL,
	    "[{\"role\":\"user\",\"content\":\"not yours\"}]", 2500, &turn), STORE_NOT_FOUND);
	CHECK_INT(turn, 0);
	buf_reset(&b, 0);
	CHECK_INT(store_load(c, s1, 0, 0, &info, &b), STORE_OK);
	CHECK_STR(info.owner, "alice");
	CHECK_INT(info.turns, 2);
	CHECK_INT(info.updated_ms, 2000);
	CHECK(strstr(b.data, "not yours") == NULL);

	/* Windows: by turns, by characters (the newest turn always comes). */
	for (i = 0; i < 8; i++)
		store_append(c, s1, "alice", NULL, "[{\"role\":\"user\",\"content\":\"0123456789\"}]",
		    3000 + i, &turn);
	CHECK_INT(turn, 10);
	buf_reset(&b, 0);
	CHECK_INT(store_load(c, s1, 3, 0, &info, &b), STORE_OK);
	turns = parse(&b);
	CHECK(turns != NULL && json_object_array_length(turns) == 3);
	CHECK_INT(turn_no(turns, 0), 8);
	CHECK_INT(turn_no(turns, 2), 10);
	CHECK_INT(info.turns, 10);
	json_object_put(turns);
	buf_reset(&b, 0);
	CHECK_INT(store_load(c, s1, 0, 1, &info, &b), STORE_OK);
	turns = parse(&b);
	CHECK(turns != NULL && json_object_array_length(turns) == 1);
	CHECK_INT(turn_no(turns, 0), 10);
	json_object_put(turns);
	buf_reset(&b, 0);
	CHECK_INT(store_load(c, s1, 0, 150, &info, &b), STORE_OK);
	turns = parse(&b);
	CHECK(turns != NULL && json_object_array_length(turns) >= 1 &&
	    json_object_array_length(turns) < 10 && b.len <= 160);
	json_object_put(turns);

	/* Pages: the newest turns below a turn number, in one read. */
	{
		static const struct {
			int limit, before, first, n;
		} pages[] = {{3, 5, 2, 3}, {0, 3, 1, 2}, {2, 1, 0, 0}, {0, 100, 1, 10},
		    {4, 11, 7, 4}, {1, 2, 1, 1}};
		size_t k;

		for (k = 0; k < sizeof(pages) / sizeof(pages[0]); k++) {
			buf_reset(&b, 0);
			memset(&info, 0, sizeof(info));
			CHECK_INT(store_load_before(c, s1, pages[k].limit, pages[k].before, &info, &b),
			    STORE_OK);
			CHECK_INT(info.turns, 10);
			CHECK_STR(info.owner, "alice");
			turns = parse(&b);
			CHECK(turns != NULL);
			if (turns == NULL)
				continue;
			CHECK_INT(json_object_array_length(turns), pages[k].n);
			for (i = 0; i < pages[k].n && (size_t)i < json_object_array_length(turns); i++)
				CHECK_INT(turn_no(turns, (size_t)i), pages[k].first + i);
			json_object_put(turns);
		}
		buf_reset(&b, 0);
		CHECK_INT(store_load_before(c, "no-such-session-xyz", 3, 2, &info, &b),
		    STORE_NOT_FOUND);
	}

	/* One turn by number. */
	buf_reset(&b, 0);
	CHECK_INT(store_get_turn(c, s1, 1, &b), STORE_OK);
	CHECK_CONTAINS(b.data, "\"turn\":1");
	CHECK_CONTAINS(b.data, "hello");
	buf_reset(&b, 0);
	CHECK_INT(store_get_turn(c, s1, 11, &b), STORE_NOT_FOUND);

	/* Idempotency: recorded with the turn, found again, unknown keys are not. */
	sid(s2, sizeof(s2), "idem");
	{
		char key[200];

		snprintf(key, sizeof(key), "alice\x1f%s-key-1", sid_prefix);
		CHECK_INT(store_append(c, s2, "alice", key,
		    "[{\"role\":\"user\",\"content\":\"pay\"}]", 5000, &turn), STORE_OK);
		turn = 0;
		CHECK_INT(store_idem_find(c, s2, key, &turn), STORE_OK);
		CHECK_INT(turn, 1);
		CHECK_INT(store_idem_find(c, s1, key, &turn), STORE_NOT_FOUND);
		/* A retry with a recorded key appends nothing and names the turn. */
		turn = 0;
		CHECK_INT(store_append(c, s2, "alice", key,
		    "[{\"role\":\"user\",\"content\":\"pay again\"}]", 5001, &turn), STORE_EXISTS);
		CHECK_INT(turn, 1);
		buf_reset(&b, 0);
		CHECK_INT(store_load(c, s2, 0, 0, &info, &b), STORE_OK);
		CHECK_INT(info.turns, 1);
		/* Another owner learns nothing of alice's keys: NOT_FOUND, not EXISTS. */
		CHECK_INT(store_append(c, s2, "mallory", key,
		    "[{\"role\":\"user\",\"content\":\"pay\"}]", 5002, &turn), STORE_NOT_FOUND);
		snprintf(key, sizeof(key), "alice\x1f%s-key-2", sid_prefix);
		CHECK_INT(store_idem_find(c, s2, key, &turn), STORE_NOT_FOUND);
	}

	/*
	 * The longest idempotency key the chat layer builds (principal \x1f
	 * Idempotency-Key: a JWT sub of STORE_ID_MAX characters and a header of
	 * CHAT_IDEM_KEY_MAX) on the longest session id: kept and found like any.
	 */
	{
		char lsid[STORE_ID_MAX + 1], owner[STORE_ID_MAX + 1];
		char key[STORE_ID_MAX + 1 + CHAT_IDEM_KEY_MAX + 1];
		size_t n;

		snprintf(lsid, sizeof(lsid), "%s.long-idem.", sid_prefix);
		for (n = strlen(lsid); n < STORE_ID_MAX; n++)
			lsid[n] = 's';
		lsid[STORE_ID_MAX] = '\0';
		memset(owner, 'o', STORE_ID_MAX);
		owner[STORE_ID_MAX] = '\0';
		n = (size_t)snprintf(key, sizeof(key), "%s\x1f", owner);
		memset(key + n, 'k', CHAT_IDEM_KEY_MAX);
		key[n + CHAT_IDEM_KEY_MAX] = '\0';
		CHECK_INT(store_append(c, lsid, owner, key,
		    "[{\"role\":\"user\",\"content\":\"long key\"}]", 5003, &turn), STORE_OK);
		CHECK_INT(turn, 1);
		turn = 0;
		CHECK_INT(store_idem_find(c, lsid, key, &turn), STORE_OK);
		CHECK_INT(turn, 1);
		turn = 0;
		CHECK_INT(store_append(c, lsid, owner, key,
		    "[{\"role\":\"user\",\"content\":\"long key\"}]", 5004, &turn), STORE_EXISTS);
		CHECK_INT(turn, 1);
		CHECK_INT(store_delete(c, lsid), STORE_OK);
	}

	/* Delete: gone for reads, a second delete is NOT_FOUND, the id can start anew. */
	CHECK_INT(store_count(c, &active0), STORE_OK);
	CHECK_INT(store_delete(c, s2), STORE_OK);
	CHECK_INT(store_count(c, &active), STORE_OK);
	CHECK_INT(active, active0 - 1);
	buf_reset(&b, 0);
	CHECK_INT(store_load(c, s2, 0, 0, &info, &b), STORE_NOT_FOUND);
	CHECK_INT(store_delete(c, s2), STORE_NOT_FOUND);
	CHECK_INT(store_append(c, s2, "bob", NULL, "[]", 6000, &turn), STORE_OK);
	CHECK_INT(turn, 1);

	/* Threads appending to one session: no gap, no duplicate. */
	sid(s3, sizeof(s3), "threads");
	for (i = 0; i < THREADS; i++)
		pthread_create(&tids[i], NULL, appender, s3);
	for (i = 0; i < THREADS; i++) {
		void *r;

		pthread_join(tids[i], &r);
		failed_appends += *(int *)r;
		free(r);
	}
	CHECK_INT(failed_appends, 0);
	check_sequence(s3, THREADS * PER_THREAD);

	/* Processes appending to one session (each opens the store itself). */
	sid(s4, sizeof(s4), "procs");
	store_conn_free(c);
	c = NULL;
	for (p = 0; p < PROCS; p++) {
		if (fork() == 0) {
			struct store *mine = store_open(&conf, err, sizeof(err));
			struct store_conn *mc = mine ? store_conn_new(mine) : NULL;
			int bad = mc == NULL;

			for (i = 0; mc != NULL && i < PER_PROC; i++)
				if (store_append(mc, s4, "anonymous", NULL, "[]", now_ms(), &turn) !=
				    STORE_OK)
					bad = 1;
			store_conn_free(mc);
			store_close(mine);
			_exit(bad);
		}
	}
	for (p = 0; p < PROCS; p++) {
		int status = 0;

		wait(&status);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	check_sequence(s4, PROCS * PER_PROC);

	/* The cache: absent, stored, replaced, any bytes, refused keys and TTLs. */
	c = store_conn_new(st);
	{
		char k1[128], k2[128], longkey[STORE_CACHE_KEY_MAX + 2];
		int status = 0;

		snprintf(k1, sizeof(k1), "%s:cache:one", sid_prefix);
		snprintf(k2, sizeof(k2), "%s:cache:two", sid_prefix);
		buf_reset(&b, 0);
		CHECK_INT(store_cache_get(c, k1, &b), STORE_NOT_FOUND);
		CHECK_INT(store_cache_put(c, k1, "first", 5, 60), STORE_OK);
		CHECK_INT(store_cache_get(c, k1, &b), STORE_OK);
		CHECK(b.len == 5 && memcmp(b.data, "first", 5) == 0);
		CHECK_INT(store_cache_put(c, k1, "second value", 12, 60), STORE_OK);
		buf_reset(&b, 0);
		CHECK_INT(store_cache_get(c, k1, &b), STORE_OK);
		CHECK(b.len == 12 && memcmp(b.data, "second value", 12) == 0);
		CHECK_INT(store_cache_put(c, k2, "a\0b\xff", 4, 60), STORE_OK);
		buf_reset(&b, 0);
		CHECK_INT(store_cache_get(c, k2, &b), STORE_OK);
		CHECK(b.len == 4 && memcmp(b.data, "a\0b\xff", 4) == 0);
		CHECK_INT(store_cache_put(c, k2, "", 0, 60), STORE_OK);
		buf_reset(&b, 0);
		CHECK_INT(store_cache_get(c, k2, &b), STORE_OK);
		CHECK_INT((int)b.len, 0);
		memset(longkey, 'k', sizeof(longkey) - 1);
		longkey[sizeof(longkey) - 1] = '\0';
		CHECK_INT(store_cache_put(c, "", "x", 1, 60), STORE_UNAVAILABLE);
		CHECK_INT(store_cache_put(c, "has space", "x", 1, 60), STORE_UNAVAILABLE);
		CHECK_INT(store_cache_put(c, longkey, "x", 1, 60), STORE_UNAVAILABLE);
		CHECK_INT(store_cache_put(c, k1, "x", 1, 0), STORE_UNAVAILABLE);
		CHECK_INT(store_cache_put(c, k1, "x", STORE_CACHE_VALUE_MAX + 1, 60),
		    STORE_UNAVAILABLE);
		CHECK_INT(store_cache_get(c, "has space", &b), STORE_NOT_FOUND);
		CHECK_INT(store_cache_get(c, longkey, &b), STORE_NOT_FOUND);
		/*
		 * Another process (another worker) sees the value. NOTE: the connection
		 * is freed first, as above, so valgrind does not count it lost in the child.
		 */
		store_conn_free(c);
		c = NULL;
		if (fork() == 0) {
			struct store *mine = store_open(&conf, err, sizeof(err));
			struct store_conn *mc = mine ? store_conn_new(mine) : NULL;
			struct buf mb = {0};
			int ok = mc != NULL && store_cache_get(mc, k1, &mb) == STORE_OK &&
			    mb.len == 12 && memcmp(mb.data, "second value", 12) == 0;

			buf_free(&mb);
			store_conn_free(mc);
			store_close(mine);
			_exit(ok ? 0 : 1);
		}
		wait(&status);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		c = store_conn_new(st);
	}

	/* Expiry: a session idle longer than the TTL reads as gone; so does a cached value. */
	{
		char s5[128], k3[128], k4[128];

		snprintf(k3, sizeof(k3), "%s:cache:short", sid_prefix);
		snprintf(k4, sizeof(k4), "%s:cache:long", sid_prefix);
		CHECK_INT(store_cache_put(c, k3, "brief", 5, 1), STORE_OK);
		CHECK_INT(store_cache_put(c, k4, "lasting", 7, 60), STORE_OK);

		conf.session_ttl = 1;
		sid(s5, sizeof(s5), "ttl");
		CHECK_INT(store_append(c, s5, "anonymous", "ttl-key", "[]", now_ms(), &turn), STORE_OK);
		buf_reset(&b, 0);
		CHECK_INT(store_load(c, s5, 0, 0, &info, &b), STORE_OK);
		sleep(2);
		buf_reset(&b, 0);
		CHECK_INT(store_load(c, s5, 0, 0, &info, &b), STORE_NOT_FOUND);
		CHECK_INT(store_idem_find(c, s5, "ttl-key", &turn), STORE_NOT_FOUND);
		conf.session_ttl = 86400;
		/*
		 * An append after the expiry: with Redis it drops the expired session from
		 * the index (test_store_redis.py checks nothing expired is left there).
		 */
		CHECK_INT(store_append(c, s1, "alice", NULL, "[]", now_ms(), &turn), STORE_OK);
		CHECK_INT(turn, 11);
		buf_reset(&b, 0);
		CHECK_INT(store_cache_get(c, k3, &b), STORE_NOT_FOUND);
		/* A put sweeps the expired entry; the key can be stored again; others stay. */
		CHECK_INT(store_cache_put(c, k4, "lasting", 7, 60), STORE_OK);
		CHECK_INT(store_cache_get(c, k3, &b), STORE_NOT_FOUND);
		CHECK_INT(store_cache_put(c, k3, "again", 5, 60), STORE_OK);
		CHECK_INT(store_cache_get(c, k3, &b), STORE_OK);
		CHECK(b.len == 5 && memcmp(b.data, "again", 5) == 0);
		buf_reset(&b, 0);
		CHECK_INT(store_cache_get(c, k4, &b), STORE_OK);
		CHECK(b.len == 7 && memcmp(b.data, "lasting", 7) == 0);
	}

	buf_free(&b);
	store_conn_free(c);
	store_close(st);
	return check_done("test_store");
}
