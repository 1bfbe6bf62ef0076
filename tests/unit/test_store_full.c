/*
 * test_store_full: an LMDB store whose map fills up. Appends then fail as
 * FULL (a 507), not UNAVAILABLE, with the log naming VALERIE_LMDB_MAP_MB:
 * valerie_store_up stays 1 through refused writes and served reads (the store
 * is up; it only refuses new data) and valerie_store_full says the last
 * append was refused. Once sessions expire or are deleted, or cached values
 * expire, the store takes turns again without a restart, and
 * valerie_store_full goes back to 0.
 */
#include "config.h"

#include "bigturn.h"
#include "check.h"
#include "conf.h"
#include "metrics.h"
#include "store.h"
#include "tmpdir.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FILL_MAX 10000           /* appends before the test gives up filling */

/* Appends one-turn sessions named prefix.N until the store is full; returns how many fit. */
static int
fill(struct store_conn *c, const char *prefix, const char *turn)
{
	char id[128];
	int i, t;
	enum store_status s = STORE_OK;

	for (i = 0; i < FILL_MAX; i++) {
		snprintf(id, sizeof(id), "%s.%d", prefix, i);
		s = store_append(c, id, "alice", NULL, turn, 1000, &t);
		if (s != STORE_OK)
			break;
	}
	CHECK_INT(s, STORE_FULL);
	CHECK_CONTAINS(store_conn_error(c), "VALERIE_LMDB_MAP_MB");
	return i;
}

/* The value of the unlabelled series `name` in the exposition, or -1 if absent. */
static double
gauge(const char *name)
{
	struct buf b = {0};
	char want[96];
	const char *p;
	double v = -1;

	metrics_render(&b);
	snprintf(want, sizeof(want), "\n%s ", name);
	if (b.data != NULL && (p = strstr(b.data, want)) != NULL)
		v = strtod(p + strlen(want), NULL);
	buf_free(&b);
	return v;
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
	struct conf conf;
	struct store *st;
	struct store_conn *c;
	struct store_session_info info;
	struct buf b = {0};
	char err[256], id[128], path[4200];
	char *turn = big_turn('x');
	const char *dir = tmpdir_make("valerie-store-full");
	int n, i, t;

	if (dir == NULL || turn == NULL || setenv("VALERIE_DATA_DIR", dir, 1) != 0 ||
	    setenv("VALERIE_LMDB_MAP_MB", "16", 1) != 0 ||
	    setenv("VALERIE_SESSION_STORE", "lmdb", 1) != 0)
		return 1;
	if (conf_load(&conf, real_get, NULL, err, sizeof(err)) != CONF_OK) {
		fprintf(stderr, "config: %s\n", err);
		return 1;
	}
	st = store_open(&conf, err, sizeof(err));
	if (st == NULL) {
		fprintf(stderr, "store_open: %s\n", err);
		return 1;
	}
	c = store_conn_new(st);
	CHECK(c != NULL);
	snprintf(path, sizeof(path), "%s/valerie.metrics", dir);
	if (metrics_open(path, err, sizeof(err)) != 0) {
		fprintf(stderr, "metrics_open: %s\n", err);
		return 1;
	}
	store_metrics_init();
	CHECK(gauge("valerie_store_full") == 0);
	CHECK_INT(store_full_seen(), 0);

	/* VALERIE_LMDB_MAP_MB is the bound: 16 MB holds far fewer than FILL_MAX turns. */
	n = fill(c, "live", turn);
	printf("live sessions that fit: %d\n", n);
	CHECK(n > 100 && n < 260);
	/* Full, the store is up (it answered) and says it is full. */
	CHECK(gauge("valerie_store_up") == 1);
	CHECK(gauge("valerie_store_full") == 1);
	CHECK_INT(store_full_seen(), 1);    /* what /health/detailed reports */
	/* Full, the store still reads; refused writes and served reads do not flip "up". */
	CHECK_INT(store_load(c, "live.0", 0, 0, &info, &b), STORE_OK);
	CHECK_INT(store_append(c, "one.more", "alice", NULL, turn, 1000, &t), STORE_FULL);
	CHECK(gauge("valerie_store_up") == 1);
	CHECK_INT(store_ping(c), STORE_OK);
	CHECK(gauge("valerie_store_up") == 1);
	/* A worker that starts now does not clear what the others saw. */
	store_metrics_init();
	CHECK(gauge("valerie_store_full") == 1);

	/* Deleting sessions makes room again. */
	for (i = 0; i < 20; i++) {
		snprintf(id, sizeof(id), "live.%d", i);
		CHECK_INT(store_delete(c, id), STORE_OK);
	}
	CHECK_INT(store_append(c, "after.delete", "alice", NULL, turn, 2000, &t), STORE_OK);
	CHECK_INT(t, 1);
	CHECK(gauge("valerie_store_full") == 0);
	CHECK_INT(store_full_seen(), 0);

	/* Sessions that expire make room again too: the sweep runs even when full. */
	for (i = 20; i < n; i++) {
		snprintf(id, sizeof(id), "live.%d", i);
		CHECK_INT(store_delete(c, id), STORE_OK);
	}
	conf.session_ttl = 1;
	n = fill(c, "brief", turn);
	printf("brief sessions that fit: %d\n", n);
	CHECK(n > 100);
	sleep(2);
	conf.session_ttl = 86400;
	for (i = 0; i < 20; i++) {
		snprintf(id, sizeof(id), "after.expiry.%d", i);
		CHECK_INT(store_append(c, id, "alice", NULL, turn, 3000, &t), STORE_OK);
	}
	buf_reset(&b, 0);
	CHECK_INT(store_load(c, "brief.0", 0, 0, &info, &b), STORE_NOT_FOUND);

	/* Expired cache entries make room for turns as well. */
	for (i = 0; i < 20; i++) {
		snprintf(id, sizeof(id), "after.expiry.%d", i);
		CHECK_INT(store_delete(c, id), STORE_OK);
	}
	CHECK_INT(store_delete(c, "after.delete"), STORE_OK);
	for (i = 0; i < FILL_MAX; i++) {
		snprintf(id, sizeof(id), "cache.%d", i);
		if (store_cache_put(c, id, turn, TURN_BYTES, 1) != STORE_OK)
			break;
	}
	printf("cache entries that fit: %d\n", i);
	CHECK(i > 100 && i < FILL_MAX);
	CHECK_CONTAINS(store_conn_error(c), "VALERIE_LMDB_MAP_MB");
	CHECK_INT(store_append(c, "before.cache.expiry", "alice", NULL, turn, 4000, &t),
	    STORE_FULL);
	sleep(2);
	for (i = 0; i < 20; i++) {
		snprintf(id, sizeof(id), "after.cache.expiry.%d", i);
		CHECK_INT(store_append(c, id, "alice", NULL, turn, 5000, &t), STORE_OK);
	}

	free(turn);
	buf_free(&b);
	store_conn_free(c);
	store_close(st);
	metrics_close();
	return check_done("test_store_full");
}
