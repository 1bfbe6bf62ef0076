/* health: service info, liveness, readiness and the effective configuration. */
#include "config.h"

#include "agents.h"
#include "conf.h"
#include "handler.h"
#include "metrics.h"
#include "provider.h"
#include "store.h"
#include "trace.h"
#include "vtime.h"

#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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
	const char *pattern;
	char path[128];
	size_t i, plen;

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
		/* "{model*}" (the rest of the path) is the router's own syntax: "{model}" here. */
		pattern = ctx->routes[i].pattern;
		plen = strlen(pattern);
		if (plen >= 2 && memcmp(pattern + plen - 2, "*}", 2) == 0) {
			snprintf(path, sizeof(path), "%.*s}", (int)plen - 2, pattern);
			pattern = path;
		}
		json_object_object_add(ep, "path", json_object_new_string(pattern));
		json_object_array_add(list, ep);
	}
	json_object_object_add(doc, "endpoints", list);
	reply(ctx, 200, doc);
}

/* Liveness touches nothing and allocates nothing beyond the body: a constant. */
void
health_live(struct handler_ctx *ctx)
{
	static const char body[] = "{\"status\":\"ok\",\"service\":\"" SERVICE_NAME
	    "\",\"version\":\"" PACKAGE_VERSION "\"}";

	buf_reset(&ctx->resp->body, 65536);
	buf_append(&ctx->resp->body, body, sizeof(body) - 1);
	ctx->resp->status = 200;
	http_response_header(ctx->resp, "Content-Type", "application/json");
}

static double
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/*
 * Pings the store; returns its check object (caller puts) and sets *ok (it
 * answered) and *full (it answers, but the pool's last turn append was
 * refused for lack of room: store_full_seen). Status "ok", "full" or "down".
 */
static struct json_object *
store_check(struct handler_ctx *ctx, int *ok, int *full)
{
	struct json_object *c = json_object_new_object();
	double t0 = mono_ms(), ms;
	enum store_status s = store_ping(ctx->store);
	const char *kind = store_kind(ctx->store_handle);
	char text[16];

	ms = mono_ms() - t0;
	*ok = s == STORE_OK;
	*full = *ok && store_full_seen();
	if (c == NULL)
		return NULL;
	snprintf(text, sizeof(text), "%.3f", ms);
	json_object_object_add(c, "status",
	    json_object_new_string(!*ok ? "down" : *full ? "full" : "ok"));
	json_object_object_add(c, "kind", json_object_new_string(kind));
	json_object_object_add(c, "full", json_object_new_boolean(*full));
	json_object_object_add(c, "response_time_ms", json_object_new_double_s(ms, text));
	if (!*ok)
		json_object_object_add(c, "error", json_object_new_string(store_conn_error(ctx->store)));
	else if (*full)
		json_object_object_add(c, "error", json_object_new_string(strcmp(kind, "redis") == 0 ?
		    "the last turn was refused for lack of room: Redis is at maxmemory "
		    "(raise it, or delete sessions); reads go on" :
		    "the last turn was refused for lack of room: the LMDB map is full "
		    "(raise VALERIE_LMDB_MAP_MB, or delete sessions); reads go on"));
	return c;
}

/*
 * Ready when the configuration is valid (it is, or the worker would not have
 * started), the session store answers and the process is not draining.
 */
void
health_ready(struct handler_ctx *ctx)
{
	struct json_object *doc, *checks, *reasons, *sc;
	int store_ok = 0, store_full = 0, ready;

	doc = json_object_new_object();
	checks = json_object_new_object();
	reasons = json_object_new_array();
	/* NOTE: a full store stays ready: it answers, and every instance shares it. */
	sc = store_check(ctx, &store_ok, &store_full);
	if (doc == NULL || checks == NULL || reasons == NULL || sc == NULL) {
		json_object_put(checks);
		json_object_put(reasons);
		json_object_put(doc);
		json_object_put(sc);
		reply(ctx, 503, NULL);
		return;
	}
	ready = !ctx->draining && store_ok;
	json_object_object_add(checks, "config", json_object_new_string("ok"));
	json_object_object_add(checks, "store", json_object_new_string(store_ok ? "ok" : "down"));
	json_object_object_add(checks, "process",
	    json_object_new_string(ctx->draining ? "draining" : "ok"));
	if (ctx->draining)
		json_object_array_add(reasons,
		    json_object_new_string("worker is shutting down"));
	if (!store_ok) {
		char why[256];

		snprintf(why, sizeof(why), "session store unreachable: %s",
		    store_conn_error(ctx->store));
		json_object_array_add(reasons, json_object_new_string(why));
	}
	json_object_put(sc);
	json_object_object_add(doc, "status", json_object_new_string(ready ? "ready" : "not_ready"));
	json_object_object_add(doc, "checks", checks);
	json_object_object_add(doc, "reasons", reasons);
	reply(ctx, ready ? 200 : 503, doc);
}

/*
 * Each provider of the chain with its circuit state; *callable says whether
 * any of them would be called now (not every circuit open).
 */
static struct json_object *
providers_check(struct handler_ctx *ctx, int *callable)
{
	struct json_object *list = json_object_new_array(), *p;
	const char *names = ctx->conf->llm_fallbacks, *comma, *state;
	char name[32];
	size_t len;
	int first = 1;

	*callable = 0;
	if (list == NULL)
		return NULL;
	for (;;) {
		if (first) {
			snprintf(name, sizeof(name), "%s", ctx->conf->llm_provider);
			first = 0;
		} else if (names != NULL && *names != '\0') {
			comma = strchr(names, ',');
			len = comma ? (size_t)(comma - names) : strlen(names);
			snprintf(name, sizeof(name), "%.*s", (int)len, names);
			names = comma ? comma + 1 : NULL;
		} else {
			break;
		}
		state = provider_circuit_state(ctx->conf, ctx->circuits, name);
		*callable |= strcmp(state, "open") != 0;
		p = json_object_new_object();
		if (p == NULL)
			continue;
		json_object_object_add(p, "name", json_object_new_string(name));
		json_object_object_add(p, "status",
		    json_object_new_string(strcmp(state, "closed") == 0 ? "ok" : "down"));
		json_object_object_add(p, "circuit", json_object_new_string(state));
		json_object_array_add(list, p);
	}
	return list;
}

/*
 * The trace exporter: not required (a collector that is down never fails a
 * turn), so it never makes the answer 503; "failing" says the last export
 * did not go through.
 */
static struct json_object *
trace_check(void)
{
	struct json_object *o = json_object_new_object();
	const char *status;
	size_t queued;
	long long ms;

	if (o == NULL)
		return NULL;
	trace_health(&status, &queued, &ms);
	json_object_object_add(o, "status", json_object_new_string(status));
	json_object_object_add(o, "queued", json_object_new_int64((long long)queued));
	json_object_object_add(o, "response_time_ms", json_object_new_int64(ms));
	return o;
}

/* Every dependency with its status and response time; 503 when a required one is down. */
void
health_detailed(struct handler_ctx *ctx)
{
	struct json_object *doc = json_object_new_object(), *deps = json_object_new_object();
	long long t0 = vtime_mono_ms();
	int store_ok = 0, store_full = 0, callable = 0;

	if (doc == NULL || deps == NULL) {
		json_object_put(doc);
		json_object_put(deps);
		reply(ctx, 503, NULL);
		return;
	}
	json_object_object_add(deps, "store", store_check(ctx, &store_ok, &store_full));
	json_object_object_add(deps, "providers", providers_check(ctx, &callable));
	json_object_object_add(deps, "trace_exporter", trace_check());
	json_object_object_add(deps, "agents", agents_health_json(ctx->agents));
	/*
	 * Degraded: chat turns fail (no provider would be called: every circuit
	 * open; the store is full, so every turn answers 507) or the process is
	 * leaving. Only a store that is down, which this instance needs for every
	 * turn, makes it 503: a provider outage or a full store (it answers, reads
	 * work, every instance shares it) is not the instance's to be restarted
	 * or taken out of the balancer for.
	 */
	json_object_object_add(doc, "status", json_object_new_string(store_ok && !store_full &&
	    callable && !ctx->draining ? "ok" : "degraded"));
	json_object_object_add(doc, "service", json_object_new_string(SERVICE_NAME));
	json_object_object_add(doc, "version", json_object_new_string(PACKAGE_VERSION));
	json_object_object_add(doc, "draining", json_object_new_boolean(ctx->draining));
	json_object_object_add(doc, "dependencies", deps);
	json_object_object_add(doc, "response_time_ms", json_object_new_int64(vtime_mono_ms() - t0));
	reply(ctx, store_ok ? 200 : 503, doc);
}

/* GET /metrics: the pool's metrics in the Prometheus text format (nginx keeps it internal). */
void
health_metrics(struct handler_ctx *ctx)
{
	long long active = 0;

	/* Refreshes valerie_store_up; the session count only when the store answered. */
	if (store_ping(ctx->store) == STORE_OK && store_count(ctx->store, &active) == STORE_OK)
		metrics_gauge_set("valerie_sessions_active", "", (double)active);
	provider_metrics_scrape(ctx->conf, ctx->circuits);
	agents_metrics_scrape(ctx->agents);
	buf_reset(&ctx->resp->body, 65536);
	metrics_render(&ctx->resp->body);
	ctx->resp->status = 200;
	http_response_header(ctx->resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
}

void
health_config(struct handler_ctx *ctx)
{
	reply(ctx, 200, conf_to_json(ctx->conf));
}
