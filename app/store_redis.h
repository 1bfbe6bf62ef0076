/* store_redis: what the Redis store lends besides store.h: its connection, for operator tools. */
#ifndef VALERIE_STORE_REDIS_H
#define VALERIE_STORE_REDIS_H

#include <stddef.h>

struct redisContext;   /* hiredis */

/*
 * Every key Valerie writes starts with this: sessions (valerie:{sid}:meta,
 * :turns, :idem), the index valerie:sessions, the cache valerie:cache:<key>
 * and the rate-limit buckets valerie:rl:{hash}.
 */
#define STORE_REDIS_KEY_PREFIX "valerie:"

/*
 * Connects to `url` (VALERIE_SESSION_REDIS_URL's forms) as the store does: the
 * same parsing, connect timeout, AUTH and SELECT. Returns a blocking hiredis
 * context with the store's per-command timeout set; the caller frees it with
 * redisFree. NULL with `err` filled (never holding the password) when the URL
 * is wrong or Redis cannot be reached or refuses the login.
 */
struct redisContext *store_redis_connect(const char *url, char *err, size_t errlen);

/*
 * Checks `url` as the store will parse it when a worker starts, without
 * connecting. Returns 0, or -1 with `why` filled (one line, never quoting
 * the URL, which may hold a password). For conf.c: check-config refuses
 * what the worker would refuse.
 */
int store_redis_url_check(const char *url, char *why, size_t whylen);

#endif
