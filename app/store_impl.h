/* store_impl: what a session store implementation provides to store.c (internal). */
#ifndef VALERIE_STORE_IMPL_H
#define VALERIE_STORE_IMPL_H

#include "store.h"

/*
 * One implementation. Every function has the contract of its store_* twin in
 * store.h; `st` is what open returned, `c` what conn_new returned.
 */
struct store_ops {
	const char *kind;
	void *(*open)(const struct conf *conf, char *err, size_t errlen);
	void (*close)(void *st);
	void *(*conn_new)(void *st);
	void (*conn_free)(void *c);
	const char *(*conn_error)(const void *c);
	enum store_status (*load)(void *c, const char *sid, int max_turns, size_t max_chars,
	    int before, struct store_session_info *info, struct buf *turns_out);
	enum store_status (*append)(void *c, const char *sid, const char *owner,
	    const char *idem_key, const char *messages_json, long long now_ms, int *turn_out);
	enum store_status (*idem_find)(void *c, const char *sid, const char *idem_key,
	    int *turn_out);
	enum store_status (*get_turn)(void *c, const char *sid, int turn, struct buf *out);
	enum store_status (*delete_session)(void *c, const char *sid);
	enum store_status (*ping)(void *c);
	enum store_status (*count)(void *c, long long *active);
	/* The cache; store.c has checked the key, the length and the TTL. */
	enum store_status (*cache_get)(void *c, const char *key, struct buf *out);
	enum store_status (*cache_put)(void *c, const char *key, const char *value, size_t len,
	    long long ttl_s);
	/* Redis only (NULL for LMDB): a token bucket; see ratelimit.h. */
	enum store_status (*bucket_take)(void *c, const char *key, double capacity,
	    double per_ms, int *allowed, double *tokens);
};

extern const struct store_ops store_lmdb_ops;
extern const struct store_ops store_redis_ops;

#endif
