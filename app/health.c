/* health: service info, liveness, readiness and the effective configuration. */
#include "config.h"

#include "conf.h"
#include "handler.h"

#include <json-c/json.h>

#define SERVICE_NAME "valerie"

static void
reply(struct handler_ctx *ctx, int status, struct json_object *doc)
{
	if (doc == NULL) {
		ctx->resp->body.oom = 1;
		return;
	}
	http_response_json(ctx->resp, status, doc);
	json_object_put(doc);
}

void
health_root(struct handler_ctx *ctx)
{
	struct json_object *doc, *list, *ep;
	size_t i;

	doc = json_object_new_object();
	list = json_object_new_array();
	if (doc == NULL || list == NULL) {
		json_object_put(list);
		reply(ctx, 500, NULL);
		json_object_put(doc);
		return;
	}
	json_object_object_add(doc, "service", json_object_new_string(SERVICE_NAME));
	json_object_object_add(doc, "version", json_object_new_string(PACKAGE_VERSION));
	for (i = 0; i < ctx->nroutes; i++) {
		ep = json_object_new_object();
		if (ep == NULL)
			continue;
		json_object_object_add(ep, "method",
		    json_object_new_string(ctx->routes[i].method));
		json_object_object_add(ep, "path",
		    json_object_new_string(ctx->routes[i].pattern));
		json_object_array_add(list, ep);
	}
	json_object_object_add(doc, "endpoints", list);
	reply(ctx, 200, doc);
}

void
health_live(struct handler_ctx *ctx)
{
	struct json_object *doc = json_object_new_object();

	if (doc != NULL) {
		json_object_object_add(doc, "status", json_object_new_string("ok"));
		json_object_object_add(doc, "service", json_object_new_string(SERVICE_NAME));
		json_object_object_add(doc, "version", json_object_new_string(PACKAGE_VERSION));
	}
	reply(ctx, 200, doc);
}

/*
 * Ready when the configuration is valid (it is, or the worker would not have
 * started) and the process is not draining. Dependencies join the checks as
 * they are built (the session store first).
 */
void
health_ready(struct handler_ctx *ctx)
{
	struct json_object *doc, *checks, *reasons;
	int ready = !ctx->draining;

	doc = json_object_new_object();
	checks = json_object_new_object();
	reasons = json_object_new_array();
	if (doc == NULL || checks == NULL || reasons == NULL) {
		json_object_put(checks);
		json_object_put(reasons);
		json_object_put(doc);
		reply(ctx, 503, NULL);
		return;
	}
	json_object_object_add(checks, "config", json_object_new_string("ok"));
	json_object_object_add(checks, "process",
	    json_object_new_string(ctx->draining ? "draining" : "ok"));
	if (ctx->draining)
		json_object_array_add(reasons,
		    json_object_new_string("worker is shutting down"));
	json_object_object_add(doc, "status", json_object_new_string(ready ? "ready" : "not_ready"));
	json_object_object_add(doc, "checks", checks);
	json_object_object_add(doc, "reasons", reasons);
	reply(ctx, ready ? 200 : 503, doc);
}

void
health_config(struct handler_ctx *ctx)
{
	reply(ctx, 200, conf_to_json(ctx->conf));
}
