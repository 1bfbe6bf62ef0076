/* retry: backoff with full jitter and cancellable waits, shared by providers and agents. */
#include "config.h"

#include "retry.h"

#include <stdlib.h>
#include <time.h>

int
retry_sleep(long long ms, retry_cancelled_fn cancelled, void *ctx)
{
	struct timespec ts;
	long long step;

	while (ms > 0) {
		if (cancelled != NULL && cancelled(ctx))
			return -1;
		step = ms < RETRY_STEP_MS ? ms : RETRY_STEP_MS;
		ts.tv_sec = (time_t)(step / 1000);
		ts.tv_nsec = (long)(step % 1000) * 1000000L;
		nanosleep(&ts, NULL);
		ms -= step;
	}
	return 0;
}

int
retry_backoff(int attempt, long long retry_after_ms, long long time_left_ms,
    retry_cancelled_fn cancelled, void *ctx)
{
	long long cap = RETRY_BASE_MS, wait;

	while (attempt-- > 0 && cap < RETRY_CAP_MS)
		cap *= 2;
	if (cap > RETRY_CAP_MS)
		cap = RETRY_CAP_MS;
	wait = (long long)arc4random_uniform((unsigned int)cap + 1);
	if (retry_after_ms > wait)
		wait = retry_after_ms;
	if (wait >= time_left_ms)
		return -1;
	return retry_sleep(wait, cancelled, ctx);
}
