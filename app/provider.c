/* provider: picks the configured provider for a call; backoff shared by network providers. */
#include "config.h"

#include "conf.h"
#include "provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BACKOFF_BASE_MS 250
#define BACKOFF_CAP_MS 8000
#define BACKOFF_STEP_MS 50   /* waits are cut in steps to notice a gone client */

void
provider_result_free(struct llm_result *r)
{
	if (r == NULL)
		return;
	buf_free(&r->text);
}

long long
provider_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long
provider_time_left(const struct llm_request *req)
{
	if (req->deadline_ms <= 0)
		return 1LL << 40;
	return req->deadline_ms - provider_now_ms();
}

int
provider_backoff(const struct llm_request *req, int attempt, long long retry_after_ms)
{
	long long cap = BACKOFF_BASE_MS, wait, step;
	struct timespec ts;

	while (attempt-- > 0 && cap < BACKOFF_CAP_MS)
		cap *= 2;
	if (cap > BACKOFF_CAP_MS)
		cap = BACKOFF_CAP_MS;
	wait = (long long)arc4random_uniform((unsigned int)cap + 1);
	if (retry_after_ms > wait)
		wait = retry_after_ms;
	if (wait >= provider_time_left(req))
		return -1;
	while (wait > 0) {
		if (req->cancelled != NULL && req->cancelled(req->ctx))
			return -1;
		step = wait < BACKOFF_STEP_MS ? wait : BACKOFF_STEP_MS;
		ts.tv_sec = (time_t)(step / 1000);
		ts.tv_nsec = (long)(step % 1000) * 1000000L;
		nanosleep(&ts, NULL);
		wait -= step;
	}
	return 0;
}

enum provider_status
provider_complete(const struct conf *conf, struct httpc *http, const struct llm_request *req,
    struct llm_result *res)
{
	if (strcmp(conf->llm_provider, "openai") == 0)
		return provider_openai_complete(conf, http, req, res);
	if (strcmp(conf->llm_provider, "offline") == 0)
		return provider_offline_complete(conf, req, res);
	res->provider = conf->llm_provider;
	snprintf(res->error, sizeof(res->error),
	    "provider %s is not available in this build yet; set VALERIE_LLM_PROVIDER=offline "
	    "or openai", conf->llm_provider);
	return PROVIDER_ERROR;
}
