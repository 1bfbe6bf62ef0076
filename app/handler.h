/* handler: what a route handler receives, and the handlers of each module. */
#ifndef VALERIE_HANDLER_H
#define VALERIE_HANDLER_H

#include <stddef.h>

#include "http.h"
#include "router.h"

struct agents;
struct conf;
struct circuits;
struct httpc;
struct store;
struct store_conn;

/* Everything a handler may use. All borrowed for the request's duration. */
struct handler_ctx {
	const struct conf *conf;
	const struct http_request *req;
	struct http_response *resp;
	const char *param;            /* the route's {param}, or "" (none, or too long: refuse it) */
	const struct route *routes;   /* the route table, for GET / */
	size_t nroutes;
	int draining;                 /* the process is shutting down */
	struct store *store_handle;   /* the process's session store */
	struct store_conn *store;     /* this thread's connection to it */
	struct httpc *http;           /* this thread's HTTP client (kept connections) */
	struct circuits *circuits;    /* the pool's circuit breakers */
	struct agents *agents;        /* the process's MCP agents */
	const char *principal;        /* who calls: JWT sub, "key:<name>", or "anonymous" */
	int admin;                    /* the caller may read and delete any session */
	const char *company;          /* the company the caller is bound to, "" if none */
};

/* health.c */
void health_root(struct handler_ctx *ctx);
void health_live(struct handler_ctx *ctx);
void health_ready(struct handler_ctx *ctx);
void health_config(struct handler_ctx *ctx);
void health_detailed(struct handler_ctx *ctx);
void health_metrics(struct handler_ctx *ctx);

/* chat.c */
void chat_v1(struct handler_ctx *ctx);
void chat_agent(struct handler_ctx *ctx);

/* openai_api.c */
void openai_chat_completions(struct handler_ctx *ctx);
void openai_models(struct handler_ctx *ctx);
void openai_model_get(struct handler_ctx *ctx);

/* sessions.c */
void session_get(struct handler_ctx *ctx);
void session_delete(struct handler_ctx *ctx);
void session_clear(struct handler_ctx *ctx);

#endif
