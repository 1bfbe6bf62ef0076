/* retry: backoff with full jitter and cancellable waits, shared by providers and agents. */
#ifndef VALERIE_RETRY_H
#define VALERIE_RETRY_H

#define RETRY_BASE_MS 250
#define RETRY_CAP_MS 8000
#define RETRY_STEP_MS 50   /* waits are cut in steps to notice a gone client */

/* Whether the caller's client is gone (NULL: never). */
typedef int (*retry_cancelled_fn)(void *ctx);

/* Sleeps `ms` in short steps; -1 as soon as `cancelled` says so, else 0. */
int retry_sleep(long long ms, retry_cancelled_fn cancelled, void *ctx);

/*
 * Waits before retry number `attempt` (0 for the first retry): exponential
 * backoff from RETRY_BASE_MS capped at RETRY_CAP_MS with full jitter, at
 * least `retry_after_ms` (-1: none). Returns 0, or -1 if the wait would not
 * end before `time_left_ms` runs out or the client went away (then nothing
 * more should be tried).
 */
int retry_backoff(int attempt, long long retry_after_ms, long long time_left_ms,
    retry_cancelled_fn cancelled, void *ctx);

#endif
