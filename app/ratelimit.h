/* ratelimit: a token bucket per principal (or client address), shared by every worker and host. */
#ifndef VALERIE_RATELIMIT_H
#define VALERIE_RATELIMIT_H

#include <stddef.h>

struct conf;
struct store_conn;

/* What one request's take came to, for the answer's headers. */
struct rl_result {
	int allowed;
	int unavailable;          /* the shared bucket could not be reached: allowed anyway */
	long long limit;          /* RATE_LIMIT_BURST */
	long long remaining;      /* whole tokens left */
	long long reset_s;        /* seconds until the bucket is full again */
	long long retry_after_s;  /* when refused: seconds until one token is back */
};

struct ratelimit;

/*
 * Opens the limiter for this process. With the Redis store the buckets live
 * in Redis (one Lua script per take, on the Redis server's clock) and are
 * shared by every host using it; with LMDB they live in a file mapped by
 * every worker of this host (DATA_DIR/valerie.ratelimit) under process-shared
 * robust mutexes, cheaper than a synced commit per request. NULL with `err`.
 */
struct ratelimit *ratelimit_open(const struct conf *conf, int redis, char *err, size_t errlen);
void ratelimit_close(struct ratelimit *rl);

/*
 * Takes one token from the bucket of `key` ("p:<principal>" or
 * "a:<address>"): capacity RATE_LIMIT_BURST, refilled at
 * RATE_LIMIT_REQUESTS_PER_MINUTE. `c` is this thread's store connection (the
 * Redis one). When the shared bucket cannot be reached the request is let
 * through (out->unavailable set): nginx's per-IP limit still stands in front,
 * and a store outage must not turn into refusing every caller.
 */
void ratelimit_take(struct ratelimit *rl, struct store_conn *c, const char *key,
    struct rl_result *out);

/*
 * The client address as a bucket names it, into `out`: an IPv6 address by
 * its /64 (one site or host gets a whole /64, so its other addresses would
 * be fresh buckets), anything else (IPv4, an IPv4-mapped IPv6 address as
 * IPv4) as it is.
 */
void ratelimit_address(const char *addr, char *out, size_t outlen);

/* For tests: the wall clock the host's table reads, in ms (vtime_now_ms by default). */
void ratelimit_set_clock(struct ratelimit *rl, long long (*now_ms)(void));

/* The local table's bucket math, for tests: tokens after `elapsed_ms` at `per_ms`. */
double ratelimit_refill(double tokens, double capacity, double per_ms, long long elapsed_ms);

#endif
