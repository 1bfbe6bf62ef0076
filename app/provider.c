/* provider: picks the configured provider for a call. */
#include "config.h"

#include "conf.h"
#include "provider.h"

#include <stdio.h>
#include <string.h>

void
provider_result_free(struct llm_result *r)
{
	if (r == NULL)
		return;
	buf_free(&r->text);
}

enum provider_status
provider_complete(const struct conf *conf, const struct llm_request *req, struct llm_result *res)
{
	if (strcmp(conf->llm_provider, "offline") == 0)
		return provider_offline_complete(conf, req, res);
	res->provider = conf->llm_provider;
	snprintf(res->error, sizeof(res->error),
	    "provider %s is not available in this build yet; set VALERIE_LLM_PROVIDER=offline",
	    conf->llm_provider);
	return PROVIDER_ERROR;
}
