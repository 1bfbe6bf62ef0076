/* store: the session store interface; lmdb (one host, embedded) and redis (several hosts). */
#ifndef VALERIE_STORE_H
#define VALERIE_STORE_H

#include <stddef.h>

#include "buf.h"

struct conf;

#define STORE_ID_MAX 128      /* session ids and owners: 1..128 characters */
/*
 * Idempotency keys as the store sees them: the chat layer scopes a client's
 * Idempotency-Key (up to 200 bytes) to its caller as principal \x1f key, and a
 * principal is up to STORE_ID_MAX: 329 bytes at most, with room to spare.
 */
#define STORE_IDEM_MAX 360
#define STORE_CACHE_KEY_MAX 200              /* bytes of a cache key */
#define STORE_CACHE_VALUE_MAX (1024 * 1024)  /* bytes of a cached value */
#define STORE_CACHE_TTL_MAX 31536000         /* seconds a cached value may live */

enum store_status {
	STORE_OK = 0,
	STORE_NOT_FOUND,     /* no such session (or expired), turn or key */
	STORE_UNAVAILABLE,   /* cannot reach or use the store now: 503 */
	STORE_NOMEM,
	STORE_CORRUPT,       /* stored data that does not parse: 500 */
	STORE_EXISTS,        /* store_append: the idempotency key is already recorded */
	STORE_FULL,          /* a write refused for lack of room (LMDB map full, Redis at
	                        maxmemory): the store is up and reads work: 507 */
	STORE_UNREPLICATED   /* store_append: written to the Redis primary, but fewer
	                        replicas than VALERIE_SESSION_REDIS_MIN_REPLICAS confirmed
	                        it in time: 503, a retry with the same key replays it */
};

/* What the store knows of a session besides its turns. Plain data. */
struct store_session_info {
	char owner[STORE_ID_MAX + 1];
	long long created_ms;   /* Unix time in milliseconds */
	long long updated_ms;
	int turns;              /* number of the last turn, 0 if none */
};

/*
 * A session is a sequence of turns numbered 1, 2, ... with no gaps. A turn is
 * stored as the JSON text {"turn":N,"messages":[...]} where each message is an
 * object the chat layer wrote (role, content, ts, usage, tool calls...); the
 * store never looks inside messages.
 *
 * Keys and limits: session ids are 1..STORE_ID_MAX characters of
 * [A-Za-z0-9_.:-] (the caller validates); every write slides the session's
 * expiry to now + VALERIE_SESSION_TTL; expired sessions read as NOT_FOUND and
 * are swept by the store.
 */

struct store;        /* per process: configuration, LMDB environment */
struct store_conn;   /* per thread: a Redis connection, LMDB read state */

/*
 * Opens the store VALERIE_SESSION_STORE names with the configuration (borrowed,
 * must outlive the store). LMDB creates VALERIE_DATA_DIR if needed. Redis only
 * parses the URL here: connections are made per thread, lazily. Returns NULL
 * with `err` filled when the store cannot be used at all.
 */
struct store *store_open(const struct conf *conf, char *err, size_t errlen);

/* Closes the store. Accepts NULL. Every connection must be freed first. */
void store_close(struct store *st);

/* "lmdb" or "redis". */
const char *store_kind(const struct store *st);

/* A connection for one thread. NULL on OOM. Never blocks on the network. */
struct store_conn *store_conn_new(struct store *st);
void store_conn_free(struct store_conn *c);

/* The last error on this connection, for the log ("" if none). Borrowed. */
const char *store_conn_error(const struct store_conn *c);

/*
 * Loads the session's info and its last turns, oldest first, as a JSON array
 * of turn objects appended to `turns_out` (caller's buffer). At most
 * `max_turns` turns (0: all) and at most `max_chars` bytes of turn JSON
 * (0: no limit), counted from the newest; the newest turn is always included
 * even if alone it is longer. NOT_FOUND when the session does not exist.
 */
enum store_status store_load(struct store_conn *c, const char *sid, int max_turns,
    size_t max_chars, struct store_session_info *info, struct buf *turns_out);

/*
 * A page of the session: its info and, oldest first, the newest `max_turns`
 * turns (0: all) numbered below `before` (1 or more), in one store read
 * (an LMDB read transaction, one Redis script). "[]" when there are none.
 */
enum store_status store_load_before(struct store_conn *c, const char *sid, int max_turns,
    int before, struct store_session_info *info, struct buf *turns_out);

/*
 * Appends one turn atomically: the next turn number is assigned (no gaps or
 * duplicates, whatever the concurrency across threads, processes and hosts),
 * the session is created with `owner` if it is new; if it exists (and has not
 * expired) with another owner, appends nothing and returns NOT_FOUND (NOTE:
 * a turn runs for seconds between its load and its append: the session one
 * caller found absent may meanwhile have been made by another, and a turn
 * must not land in someone else's conversation); its expiry slides
 * (conf->session_ttl is read at every write). With `idem_key` (NULL for none),
 * also records (sid, key) -> turn with the same expiry, in the same atomic
 * step; if that key is already recorded, appends nothing and returns
 * STORE_EXISTS with the recorded turn in *turn_out (two retries racing each
 * other make one turn). `messages_json` is a JSON array text. `now_ms` is the turn's time,
 * recorded as the session's created/updated time; the expiry counts from the
 * store's own clock. Writes the assigned number to *turn_out.
 */
enum store_status store_append(struct store_conn *c, const char *sid, const char *owner,
    const char *idem_key, const char *messages_json, long long now_ms, int *turn_out);

/*
 * Finds an idempotency key store_append recorded for this session (keys are
 * scoped to their session, so a Redis Cluster keeps them in the session's
 * slot): writes the turn it answered. NOT_FOUND if unknown or expired.
 */
enum store_status store_idem_find(struct store_conn *c, const char *sid,
    const char *idem_key, int *turn_out);

/* Appends one turn's JSON object to `out`. NOT_FOUND if there is no such turn. */
enum store_status store_get_turn(struct store_conn *c, const char *sid, int turn,
    struct buf *out);

/* Deletes the session and its turns. NOT_FOUND if it did not exist. */
enum store_status store_delete(struct store_conn *c, const char *sid);

/* Checks the store answers (a read for LMDB, PING for Redis). */
enum store_status store_ping(struct store_conn *c);

/*
 * The number of sessions alive now (not expired) in the whole store, for
 * valerie_sessions_active: LMDB counts its records less the expired ones not
 * yet swept; Redis keeps an index of sessions by expiry (valerie:sessions,
 * updated at every append, which also prunes it now and then) and drops the
 * expired ones first.
 */
enum store_status store_count(struct store_conn *c, long long *active);

/*
 * Takes a token from the bucket `key` atomically in the store (Redis: a Lua
 * script on the server's clock): `capacity` tokens, refilled at `per_ms` a
 * millisecond. *allowed says if one was taken, *tokens what is left.
 * UNAVAILABLE when the store has no shared buckets (LMDB) or cannot be reached.
 */
enum store_status store_bucket_take(struct store_conn *c, const char *key, double capacity,
    double per_ms, int *allowed, double *tokens);

/*
 * A small cache beside the sessions, shared as they are (by every worker of
 * the host on LMDB, by every host on Redis), for what is costly to fetch and
 * may be a little stale. Keys are 1..STORE_CACHE_KEY_MAX bytes of visible
 * ASCII (0x21..0x7e); values are 0..STORE_CACHE_VALUE_MAX bytes of anything.
 *
 * store_cache_put stores `value` (`len` bytes) under `key` for `ttl_s`
 * seconds (1..STORE_CACHE_TTL_MAX) by the store's clock, replacing any older
 * value; UNAVAILABLE for a key, value or TTL out of range. store_cache_get
 * appends the value to `out` (caller's buffer); NOT_FOUND when the key is
 * absent, expired or not a valid key. Redis keeps valerie:cache:<key> with
 * SET ... EX; LMDB keeps the value behind its expiry and sweeps expired
 * entries at every put.
 */
enum store_status store_cache_get(struct store_conn *c, const char *key, struct buf *out);
enum store_status store_cache_put(struct store_conn *c, const char *key, const char *value,
    size_t len, long long ttl_s);

/* Registers the store's error counters at 0 (once per process, after metrics_open). */
void store_metrics_init(void);

/*
 * Whether the pool's last turn append met a full store (valerie_store_full,
 * shared by every worker, so whichever worker asks knows what another one
 * met): 1 until a turn is stored again; 0 when unknown.
 */
int store_full_seen(void);

/* A short text for a status ("ok", "unavailable", ...). */
const char *store_status_text(enum store_status s);

#endif
