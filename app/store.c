/* store: picks the session store implementation and forwards to it. */
#include "config.h"

#include "conf.h"
#include "metrics.h"
#include "store.h"
#include "store_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct store {
	const struct store_ops *ops;
	void *impl;
};

struct store_conn {
	const struct store_ops *ops;
	void *impl;
};

static double
mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Counts one operation: its duration, a failure, whether the store answered.
 * NOTE: a full store (STORE_FULL) answered: it refuses new data but is up and
 * still reads, so valerie_store_up stays 1 (were it 0, each write refused
 * and each read served would flip it); valerie_store_full says what the last
 * append met instead, and the append counts as an error of its op. Likewise
 * an append its replicas did not confirm (STORE_UNREPLICATED): the primary
 * answered.
 */
static enum store_status
counted(const char *op, double t0, enum store_status s)
{
	char labels[32];
	int up = s == STORE_OK || s == STORE_NOT_FOUND || s == STORE_EXISTS || s == STORE_FULL ||
	    s == STORE_UNREPLICATED;

	metrics_labels(labels, sizeof(labels), "op", op, (char *)NULL);
	metrics_observe("valerie_store_op_duration_seconds", labels, mono_s() - t0);
	if (s != STORE_OK && s != STORE_NOT_FOUND && s != STORE_EXISTS)
		metrics_counter_add("valerie_store_errors_total", labels, 1);
	metrics_gauge_set("valerie_store_up", "", up);
	if (strcmp(op, "append") == 0 && (s == STORE_OK || s == STORE_FULL))
		metrics_gauge_set("valerie_store_full", "", s == STORE_FULL);
	return s;
}

void
store_metrics_init(void)
{
	static const char *const ops[] = {"load", "append", "idem_find", "get_turn", "delete",
		"ping", "cache_get", "cache_put"};
	char labels[32];
	size_t i;

	for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		metrics_labels(labels, sizeof(labels), "op", ops[i], (char *)NULL);
		metrics_counter_add("valerie_store_errors_total", labels, 0);
	}
	/* Created at 0 if new; a restarted worker must not clear what another one saw. */
	metrics_gauge_add("valerie_store_full", "", 0);
}

int
store_full_seen(void)
{
	double v = 0;

	return metrics_gauge_get("valerie_store_full", "", &v) == 0 && v != 0;
}

struct store *
store_open(const struct conf *conf, char *err, size_t errlen)
{
	const struct store_ops *ops;
	struct store *st;

	if (strcmp(conf->session_store, "redis") == 0)
		ops = &store_redis_ops;
	else
		ops = &store_lmdb_ops;
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	st->ops = ops;
	st->impl = ops->open(conf, err, errlen);
	if (st->impl == NULL) {
		free(st);
		return NULL;
	}
	return st;
}

void
store_close(struct store *st)
{
	if (st == NULL)
		return;
	st->ops->close(st->impl);
	free(st);
}

const char *
store_kind(const struct store *st)
{
	return st->ops->kind;
}

struct store_conn *
store_conn_new(struct store *st)
{
	struct store_conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->ops = st->ops;
	c->impl = st->ops->conn_new(st->impl);
	if (c->impl == NULL) {
		free(c);
		return NULL;
	}
	return c;
}

void
store_conn_free(struct store_conn *c)
{
	if (c == NULL)
		return;
	c->ops->conn_free(c->impl);
	free(c);
}

const char *
store_conn_error(const struct store_conn *c)
{
	return c->ops->conn_error(c->impl);
}

enum store_status
store_load(struct store_conn *c, const char *sid, int max_turns, size_t max_chars,
    struct store_session_info *info, struct buf *turns_out)
{
	double t0 = mono_s();

	return counted("load", t0, c->ops->load(c->impl, sid, max_turns, max_chars, 0, info,
	    turns_out));
}

enum store_status
store_load_before(struct store_conn *c, const char *sid, int max_turns, int before,
    struct store_session_info *info, struct buf *turns_out)
{
	double t0 = mono_s();

	return counted("load", t0, c->ops->load(c->impl, sid, max_turns, 0, before > 0 ? before : 1,
	    info, turns_out));
}

enum store_status
store_append(struct store_conn *c, const char *sid, const char *owner, const char *idem_key,
    const char *messages_json, long long now_ms, int *turn_out)
{
	double t0 = mono_s();

	return counted("append", t0, c->ops->append(c->impl, sid, owner, idem_key, messages_json,
	    now_ms, turn_out));
}

enum store_status
store_idem_find(struct store_conn *c, const char *sid, const char *idem_key, int *turn_out)
{
	double t0 = mono_s();

	return counted("idem_find", t0, c->ops->idem_find(c->impl, sid, idem_key, turn_out));
}

enum store_status
store_get_turn(struct store_conn *c, const char *sid, int turn, struct buf *out)
{
	double t0 = mono_s();

	return counted("get_turn", t0, c->ops->get_turn(c->impl, sid, turn, out));
}

enum store_status
store_delete(struct store_conn *c, const char *sid)
{
	double t0 = mono_s();

	return counted("delete", t0, c->ops->delete_session(c->impl, sid));
}

enum store_status
store_ping(struct store_conn *c)
{
	double t0 = mono_s();

	return counted("ping", t0, c->ops->ping(c->impl));
}

/* A cache key as store.h defines it: 1..STORE_CACHE_KEY_MAX bytes of visible ASCII. */
static int
cache_key_valid(const char *key)
{
	size_t i;

	if (key == NULL)
		return 0;
	for (i = 0; key[i] != '\0'; i++)
		if (i >= STORE_CACHE_KEY_MAX || key[i] < 0x21 || key[i] > 0x7e)
			return 0;
	return i > 0;
}

enum store_status
store_cache_get(struct store_conn *c, const char *key, struct buf *out)
{
	double t0 = mono_s();

	if (!cache_key_valid(key))
		return STORE_NOT_FOUND;
	return counted("cache_get", t0, c->ops->cache_get(c->impl, key, out));
}

enum store_status
store_cache_put(struct store_conn *c, const char *key, const char *value, size_t len,
    long long ttl_s)
{
	double t0 = mono_s();

	/* NOTE: refused before the store is asked, so a caller's mistake is not a store error. */
	if (!cache_key_valid(key) || len > STORE_CACHE_VALUE_MAX || ttl_s < 1 ||
	    ttl_s > STORE_CACHE_TTL_MAX)
		return STORE_UNAVAILABLE;
	return counted("cache_put", t0, c->ops->cache_put(c->impl, key, value != NULL ? value : "",
	    len, ttl_s));
}

/* NOTE: not timed as a store operation: it runs at scrape time, not for a request. */
enum store_status
store_count(struct store_conn *c, long long *active)
{
	*active = 0;
	return c->ops->count(c->impl, active);
}

enum store_status
store_bucket_take(struct store_conn *c, const char *key, double capacity, double per_ms,
    int *allowed, double *tokens)
{
	*allowed = 1;
	*tokens = capacity;
	if (c->ops->bucket_take == NULL)
		return STORE_UNAVAILABLE;
	return c->ops->bucket_take(c->impl, key, capacity, per_ms, allowed, tokens);
}

const char *
store_status_text(enum store_status s)
{
	switch (s) {
	case STORE_OK: return "ok";
	case STORE_NOT_FOUND: return "not_found";
	case STORE_UNAVAILABLE: return "unavailable";
	case STORE_NOMEM: return "out_of_memory";
	case STORE_CORRUPT: return "corrupt";
	case STORE_EXISTS: return "exists";
	case STORE_FULL: return "full";
	case STORE_UNREPLICATED: return "unreplicated";
	}
	return "unknown";
}
