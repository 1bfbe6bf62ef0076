/* app: the route table and the request pipeline shared by every route. */
#include "config.h"

#include "agents.h"
#include "app.h"
#include "auth.h"
#include "bizctx.h"
#include "circuit.h"
#include "conf.h"
#include "handler.h"
#include "httpc.h"
#include "log.h"
#include "metrics.h"
#include "provider.h"
#include "ratelimit.h"
#include "router.h"
#include "store.h"
#include "trace.h"
#include "vtime.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define APP_PATH_MAX 4096 /* longer paths are a 414 */

/* The route table: one line a route, in the order GET / lists them. */
static const struct route routes[] = {
	{"GET", "/", ROLE_ANY, health_root},
	{"GET", "/health", ROLE_ANY, health_live},
	{"GET", "/health/live", ROLE_ANY, health_live},
	{"GET", "/health/ready", ROLE_ANY, health_ready},
	{"GET", "/health/detailed", ROLE_ANY, health_detailed},
	{"GET", "/config", ROLE_ADMIN, health_config},
	{"POST", "/api/v1/chat", ROLE_USER, chat_v1},
	{"POST", "/api/agent/chat", ROLE_USER, chat_agent},
	{"GET", "/api/v1/sessions/{id}", ROLE_USER, session_get},
	{"DELETE", "/api/v1/sessions/{id}", ROLE_USER, session_delete},
	{"POST", "/memory/clear/{id}", ROLE_USER, session_clear},
	{"POST", "/v1/chat/completions", ROLE_USER, openai_chat_completions},
	{"GET", "/v1/models", ROLE_USER, openai_models},
	{"GET", "/v1/models/{model*}", ROLE_USER, openai_model_get},
	{"GET", "/metrics", ROLE_ANY, health_metrics},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

extern char **environ;

struct app {
	const struct conf *conf;
	struct store *store;
	struct circuits *circuits;
	struct agents *agents;
	struct auth *auth;
	struct ratelimit *rl;
	atomic_int draining;
};

/*
 * The HTTP metric series of the requests this thread answered, by route index
 * (NROUTES: unmatched), method label and status; direct-mapped, a miss looks
 * the series up by its label text. NOTE: never invalidated: the series live
 * in the mapped metrics file until app_destroy, and are never removed.
 */
#define APP_COUNTED_SLOTS 32

struct counted_slot {
	struct metrics_series *requests;
	const char *method;          /* method_label's pointer */
	unsigned int route;
	int status;
};

struct app_worker {
	struct app *app;
	struct store_conn *store;
	struct httpc *http;
	struct metrics_series *duration[NROUTES + 1];
	struct counted_slot counted[APP_COUNTED_SLOTS];
};

struct app *
app_create(const struct conf *conf, char *err, size_t errlen)
{
	struct app *app = calloc(1, sizeof(*app));
	char path[4096];

	if (app == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	app->conf = conf;
	atomic_init(&app->draining, 0);
	if (httpc_global_init(conf->ca_bundle, err, errlen) != 0) {
		free(app);
		return NULL;
	}
	httpc_set_builtin(strcmp(conf->http_client, "builtin") == 0);
	app->store = store_open(conf, err, errlen);
	if (app->store == NULL) {
		free(app);
		return NULL;
	}
	/* The breakers live next to the data, shared by every worker of the host. */
	if (mkdir(conf->data_dir, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "VALERIE_DATA_DIR: cannot create %s: %s", conf->data_dir,
		    strerror(errno));
		app_destroy(app);
		return NULL;
	}
	snprintf(path, sizeof(path), "%s/valerie.circuits", conf->data_dir);
	app->circuits = circuits_open(path, err, errlen);
	if (app->circuits == NULL) {
		app_destroy(app);
		return NULL;
	}
	snprintf(path, sizeof(path), "%s/valerie.metrics", conf->data_dir);
	if (metrics_open(path, err, errlen) != 0) {
		app_destroy(app);
		return NULL;
	}
	{
		char labels[64];

		metrics_labels(labels, sizeof(labels), "version", PACKAGE_VERSION, (char *)NULL);
		metrics_gauge_set("valerie_build_info", labels, 1);
	}
	provider_metrics_init(conf);
	app->agents = agents_open(conf, app->circuits, environ, err, errlen);
	if (app->agents == NULL) {
		app_destroy(app);
		return NULL;
	}
	store_metrics_init();
	bizctx_metrics_init(conf);
	metrics_counter_add("valerie_ratelimit_rejections_total", "scope=\"principal\"", 0);
	metrics_counter_add("valerie_ratelimit_rejections_total", "scope=\"address\"", 0);
	if ((app->auth = auth_open(conf, err, errlen)) == NULL ||
	    (app->rl = ratelimit_open(conf, strcmp(conf->session_store, "redis") == 0, err,
	    errlen)) == NULL) {
		app_destroy(app);
		return NULL;
	}
	if (trace_start(conf, err, errlen) != 0) {
		app_destroy(app);
		return NULL;
	}
	return app;
}

void
app_destroy(struct app *app)
{
	if (app == NULL)
		return;
	trace_stop();
	auth_close(app->auth);
	ratelimit_close(app->rl);
	agents_end_sessions(app->agents, AGENTS_END_SESSIONS_MS);
	agents_close(app->agents);
	store_close(app->store);
	circuits_close(app->circuits);
	metrics_close();
	free(app);
}

struct app_worker *
app_worker_new(struct app *app)
{
	struct app_worker *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return NULL;
	w->app = app;
	w->store = store_conn_new(app->store);
	w->http = httpc_new();
	if (w->store == NULL || w->http == NULL) {
		store_conn_free(w->store);
		httpc_free(w->http);
		free(w);
		return NULL;
	}
	return w;
}

void
app_worker_free(struct app_worker *w)
{
	if (w == NULL)
		return;
	store_conn_free(w->store);
	httpc_free(w->http);
	free(w);
}

/* Monotonic ms after which turns in flight end (0: not stopping). One app per process. */
static atomic_llong stop_due_ms;

/*
 * NOTE: the least time before the drain limit at which turns in flight are
 * told to end. A call waiting on a silent upstream notices within about
 * 200 ms (app/httpc.c), an agent call or a backoff wait within its own step,
 * and the answer must still be written before the limit. With less (a
 * quarter of a limit of 1 to 4 s, before httpc polled every 200 ms) a turn
 * waiting on a provider was cut at the limit, not ended with 503.
 */
#define APP_STOP_MARGIN_MIN_MS 1500

void
app_set_draining(struct app *app)
{
	long long limit = app->conf->shutdown_timeout * 1000;
	long long margin = limit / 4 < 3000 ? limit / 4 : 3000;

	if (margin < APP_STOP_MARGIN_MIN_MS)
		margin = APP_STOP_MARGIN_MIN_MS < limit ? APP_STOP_MARGIN_MIN_MS : limit;

	atomic_store(&app->draining, 1);
	atomic_store(&stop_due_ms, vtime_mono_ms() + limit - margin);
}

int
app_stop_due(void)
{
	long long due = atomic_load(&stop_due_ms);

	return due > 0 && vtime_mono_ms() >= due;
}

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* An HTTP method is a token of upper-case letters (what nginx passes on). */
static int
method_ok(const char *m)
{
	size_t n = 0;

	if (m == NULL)
		return 0;
	for (; m[n] != '\0'; n++)
		if (m[n] < 'A' || m[n] > 'Z')
			return 0;
	return n > 0 && n <= 16;
}

/*
 * Checks what every route needs before routing: a method, a path, a body the
 * transport could read within the limit. Returns 0, or fills resp and -1.
 */
static int
check_request(const struct app *app, const struct http_request *req,
    struct http_response *resp)
{
	if (!method_ok(req->method)) {
		http_response_error(resp, 400, "bad_request", "missing or malformed method");
		return -1;
	}
	if (req->path == NULL || req->path[0] != '/') {
		http_response_error(resp, 400, "bad_request", "missing or malformed path");
		return -1;
	}
	if (strlen(req->path) > APP_PATH_MAX) {
		http_response_error(resp, 414, "uri_too_long", "the request path is too long");
		return -1;
	}
	switch (req->body_error) {
	case HTTP_BODY_OK:
		break;
	case HTTP_BODY_TOO_LARGE: {
		char msg[96];

		snprintf(msg, sizeof(msg), "request body larger than %lld bytes",
		    app->conf->max_body_bytes);
		http_response_error(resp, 413, "payload_too_large", msg);
		return -1;
	}
	case HTTP_BODY_BAD_LENGTH:
		http_response_error(resp, 400, "bad_request", "malformed Content-Length");
		return -1;
	case HTTP_BODY_READ_FAILED:
	default:
		http_response_error(resp, 400, "bad_request",
		    "the request body could not be read completely");
		return -1;
	}
	if (req->nheaders_dropped) {
		http_response_error(resp, 431, "headers_too_large", "too many request headers");
		return -1;
	}
	return 0;
}

/* Replaces whatever a handler left with a plain 500 when memory ran out. */
static void
fix_oom(struct http_response *resp)
{
	if (!resp->body.oom || resp->streaming)
		return;
	http_response_reset(resp);
	http_response_error(resp, 500, "internal_error", "out of memory");
	if (resp->body.oom) {
		/* NOTE: not even the error fits: send a static body. */
		buf_reset(&resp->body, 0);
		resp->status = 500;
	}
}

/* The method as a label value: the usual ones, else "other" (labels stay bounded). */
static const char *
method_label(const char *m)
{
	static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH",
		"OPTIONS", NULL};
	size_t i;

	for (i = 0; m != NULL && known[i] != NULL; i++)
		if (strcmp(m, known[i]) == 0)
			return known[i];
	return "other";
}

/*
 * Fills `labels` (METRICS_LABELS_MAX + 1 bytes) with route="...", and, with a
 * method, ,method="...",code="..."; without printf. Route templates and the
 * method label are plain ASCII from our own tables, the status is 3 digits.
 */
static void
http_labels(char *labels, const char *route, const char *method, int status)
{
	size_t rl = strlen(route), ml, n = 0;

	if (rl > 120)
		rl = 120;
	memcpy(labels + n, "route=\"", 7);
	n += 7;
	memcpy(labels + n, route, rl);
	n += rl;
	labels[n++] = '"';
	if (method != NULL) {
		ml = strlen(method);
		memcpy(labels + n, ",method=\"", 9);
		n += 9;
		memcpy(labels + n, method, ml);
		n += ml;
		memcpy(labels + n, "\",code=\"", 8);
		n += 8;
		labels[n++] = (char)('0' + status / 100);
		labels[n++] = (char)('0' + status / 10 % 10);
		labels[n++] = (char)('0' + status % 10);
		labels[n++] = '"';
	}
	labels[n] = '\0';
}

/*
 * Counts the request: its duration by route, and the request by route,
 * method and status. Every request comes through here, so the series are
 * found through the worker's cache (struct app_worker) and looked up by label
 * text only the first time a thread sees the combination.
 */
static void
count_request(struct app_worker *w, const struct http_request *req,
    const struct http_response *resp, unsigned int ri, double seconds)
{
	char labels[METRICS_LABELS_MAX + 1];
	const char *route = ri < NROUTES ? routes[ri].pattern : "unmatched";
	const char *method = method_label(req->method);
	int st = resp->status >= 100 && resp->status <= 999 ? resp->status : 500;
	struct counted_slot *c;

	if (w->duration[ri] == NULL) {
		http_labels(labels, route, NULL, 0);
		w->duration[ri] = metrics_histogram("valerie_http_request_duration_seconds",
		    labels);
	}
	metrics_series_observe(w->duration[ri], seconds);
	c = &w->counted[(ri * 7u + (unsigned int)st) % APP_COUNTED_SLOTS];
	if (c->requests == NULL || c->route != ri || c->status != st || c->method != method) {
		http_labels(labels, route, method, st);
		c->requests = metrics_counter("valerie_http_requests_total", labels);
		c->route = ri;
		c->status = st;
		c->method = method;
	}
	metrics_series_add(c->requests, 1);
}

static void
access_log(const struct http_request *req, const struct http_response *resp,
    const char *route, double seconds)
{
	struct log_access_fields f;

	f.request_id = req->request_id ? req->request_id : "";
	f.method = req->method ? req->method : "";
	f.route = route;
	f.status = resp->status;
	f.duration_ms = seconds * 1e3;
	f.remote_addr = req->remote_addr ? req->remote_addr : "";
	f.bytes = resp->streaming ? resp->bytes_sent : resp->body.len;
	f.client_gone = resp->aborted;
	log_access(resp->status >= 500 ? LOG_LVL_ERROR : LOG_LVL_INFO, &f);
}

/* --- who may call: credentials, roles, the rate limit, CORS ----------------------- */

/*
 * The caller when no credentials are asked for: "anonymous", an admin when
 * VALERIE_AUTH=none (development: every route is open, BRIEF section 4).
 */
static void
anonymous(const struct app *app, struct principal *p)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->id, sizeof(p->id), "anonymous");
	p->admin = !auth_required(app->auth);
}

/* NOTE: not snprintf: these three go with every answer (bench/README.md). */
static void
ratelimit_headers(struct http_response *resp, const struct rl_result *r)
{
	char v[BUF_DECIMAL_SIZE];

	http_response_header(resp, "RateLimit-Limit", buf_decimal(v, r->limit, 1));
	http_response_header(resp, "RateLimit-Remaining", buf_decimal(v, r->remaining, 1));
	http_response_header(resp, "RateLimit-Reset", buf_decimal(v, r->reset_s, 1));
}

/*
 * Authenticates the caller of a route that needs a role, checks the role,
 * then takes a token from the caller's bucket (per principal; per client
 * address without auth). Returns 0 to go on, or -1 with the answer made:
 * 401, 403 or 429.
 */
static int
admit(struct app_worker *w, enum role role, const struct http_request *req,
    struct http_response *resp, struct principal *who)
{
	struct app *app = w->app;
	struct rl_result rl;
	char why[200], key[STORE_ID_MAX + 8], v[24], addr[64];
	enum auth_result ar;
	int by_address;

	ratelimit_address(req->remote_addr != NULL ? req->remote_addr : "", addr, sizeof(addr));

	if (auth_required(app->auth)) {
		if ((ar = auth_check(app->auth, req, who, why, sizeof(why))) != AUTH_OK) {
			/*
			 * Failed credentials spend the client address's bucket, so guessing
			 * keys or tokens is limited like any other traffic.
			 */
			snprintf(key, sizeof(key), "f:%s", addr);
			ratelimit_take(app->rl, w->store, key, &rl);
			if (!rl.unavailable && !rl.allowed) {
				metrics_counter_add("valerie_ratelimit_rejections_total",
				    "scope=\"address\"", 1);
				http_response_error(resp, 429, "rate_limited", "too many failed "
				    "attempts: wait for Retry-After seconds");
				ratelimit_headers(resp, &rl);
				http_response_header(resp, "Retry-After", buf_decimal(v, rl.retry_after_s, 1));
				return -1;
			}
			/*
			 * RFC 6750 3.1: no error code when nothing was sent; invalid_token
			 * when a credential was, so a client knows to get a new one.
			 */
			http_response_error(resp, 401, "unauthorized", why);
			http_response_header(resp, "WWW-Authenticate", ar == AUTH_INVALID ?
			    "Bearer realm=\"valerie\", error=\"invalid_token\"" : "Bearer realm=\"valerie\"");
			return -1;
		}
		if (role == ROLE_ADMIN && !who->admin) {
			http_response_error(resp, 403, "forbidden", "this route needs the admin role");
			return -1;
		}
	} else {
		anonymous(app, who);
	}
	by_address = !auth_required(app->auth);
	/* "a:<addr>" or "p:<principal>", as snprintf "%s:%s" wrote it. */
	key[0] = by_address ? 'a' : 'p';
	key[1] = ':';
	buf_strcpy(key + 2, sizeof(key) - 2, by_address ? addr : who->id);
	ratelimit_take(app->rl, w->store, key, &rl);
	if (rl.unavailable)
		return 0;
	ratelimit_headers(resp, &rl);
	if (!rl.allowed) {
		metrics_counter_add("valerie_ratelimit_rejections_total",
		    by_address ? "scope=\"address\"" : "scope=\"principal\"", 1);
		http_response_error(resp, 429, "rate_limited", "too many requests: wait for "
		    "Retry-After seconds");
		http_response_header(resp, "Retry-After", buf_decimal(v, rl.retry_after_s, 1));
		return -1;
	}
	return 0;
}

/* Whether `origin` is in CORS_ORIGINS (exactly; "*" never passes the production check). */
static int
origin_allowed(const struct conf *conf, const char *origin)
{
	const char *p = conf->cors_origins, *comma;
	size_t len, n = strlen(origin);

	for (; p != NULL && *p != '\0'; p = comma ? comma + 1 : NULL) {
		comma = strchr(p, ',');
		len = comma ? (size_t)(comma - p) : strlen(p);
		if ((len == 1 && *p == '*') || (len == n && memcmp(p, origin, n) == 0))
			return 1;
	}
	return 0;
}

/* The CORS headers of an answer to an allowed origin; nothing for the others. */
static void
cors_headers(const struct conf *conf, const struct http_request *req, struct http_response *resp)
{
	const char *origin = http_request_header(req, "origin");

	if (origin == NULL || !origin_allowed(conf, origin))
		return;
	http_response_header(resp, "Access-Control-Allow-Origin", origin);
	http_response_header(resp, "Vary", "Origin");
	http_response_header(resp, "Access-Control-Expose-Headers", "X-Trace-Id, X-Session-Turn, "
	    "RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After, "
	    "Idempotent-Replayed");
}

/*
 * The header names a preflight asks for, when they are a plain list (names
 * and commas only). NOTE: an allowed origin is one of the operator's own
 * front-ends, so what its page asks to send is allowed as asked: clients add
 * headers of their own (the OpenAI SDK's x-stainless-*), which a fixed list
 * would make the browser refuse.
 */
static int
header_list_ok(const char *s)
{
	size_t n;

	for (n = 0; s[n] != '\0'; n++)
		if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
		    (s[n] >= '0' && s[n] <= '9') || s[n] == '-' || s[n] == '_' || s[n] == ',' ||
		    s[n] == ' '))
			return 0;
	return n > 0;
}

/*
 * A CORS preflight (OPTIONS with Access-Control-Request-Method): 204 with
 * what may be sent for an allowed origin, 403 for another. Returns 1 when it
 * answered.
 */
static int
cors_preflight(const struct conf *conf, const struct http_request *req,
    struct http_response *resp)
{
	const char *origin = http_request_header(req, "origin"), *asked;

	if (strcmp(req->method, "OPTIONS") != 0 || origin == NULL ||
	    http_request_header(req, "access-control-request-method") == NULL)
		return 0;
	if (!origin_allowed(conf, origin)) {
		http_response_error(resp, 403, "origin_not_allowed",
		    "this origin is not in CORS_ORIGINS");
		return 1;
	}
	resp->status = 204;
	cors_headers(conf, req, resp);
	http_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS");
	asked = http_request_header(req, "access-control-request-headers");
	/* A list too long for one response header gets the fixed one. */
	if (asked == NULL || !header_list_ok(asked) ||
	    http_response_header(resp, "Access-Control-Allow-Headers", asked) != 0)
		http_response_header(resp, "Access-Control-Allow-Headers", "Authorization, "
		    "Content-Type, X-API-Key, X-Session-Id, Idempotency-Key, traceparent");
	http_response_header(resp, "Access-Control-Max-Age", "600");
	return 1;
}

void
app_handle(struct app_worker *w, const struct http_request *req,
    struct http_response *resp)
{
	struct handler_ctx ctx;
	struct route_match match;
	struct principal who;
	char allow[64];
	const char *route = "unmatched";
	unsigned int ri = NROUTES;
	double t0 = now_seconds(), seconds;

	metrics_inflight_add(1);
	if (check_request(w->app, req, resp) != 0)
		goto out;
	if (cors_preflight(w->app->conf, req, resp))
		goto out;
	switch (router_match(routes, NROUTES, req->method, req->path, &match, allow,
	    sizeof(allow))) {
	case ROUTER_NOT_FOUND:
		http_response_error(resp, 404, "not_found", "no such route");
		goto out;
	case ROUTER_METHOD_NOT_ALLOWED:
		http_response_error(resp, 405, "method_not_allowed",
		    "this route does not accept that method");
		http_response_header(resp, "Allow", allow);
		goto out;
	case ROUTER_FOUND:
		break;
	}
	route = match.route->pattern;
	ri = (unsigned int)(match.route - routes);
	cors_headers(w->app->conf, req, resp);
	if (match.route->role != ROLE_ANY && admit(w, match.route->role, req, resp, &who) != 0)
		goto out;
	memset(&ctx, 0, sizeof(ctx));
	ctx.conf = w->app->conf;
	ctx.req = req;
	ctx.resp = resp;
	ctx.param = match.param;
	ctx.routes = routes;
	ctx.nroutes = NROUTES;
	ctx.draining = atomic_load(&w->app->draining);
	ctx.store_handle = w->app->store;
	ctx.store = w->store;
	ctx.http = w->http;
	ctx.circuits = w->app->circuits;
	ctx.agents = w->app->agents;
	if (match.route->role == ROLE_ANY)
		anonymous(w->app, &who);
	ctx.principal = who.id;
	ctx.admin = who.admin;
	ctx.company = who.company;
	match.route->handler(&ctx);
out:
	fix_oom(resp);
	if (!resp->streaming)
		http_response_header(resp, "Cache-Control", "no-store");
	seconds = now_seconds() - t0;
	access_log(req, resp, route, seconds);
	count_request(w, req, resp, ri, seconds);
	metrics_inflight_add(-1);
}
