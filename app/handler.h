/* handler: what a route handler receives, and the handlers of each module. */
#ifndef VALERIE_HANDLER_H
#define VALERIE_HANDLER_H

#include <stddef.h>

#include "http.h"
#include "router.h"

struct conf;

/* Everything a handler may use. All borrowed for the request's duration. */
struct handler_ctx {
	const struct conf *conf;
	const struct http_request *req;
	struct http_response *resp;
	const char *param;            /* the route's {param}, or "" */
	const struct route *routes;   /* the route table, for GET / */
	size_t nroutes;
	int draining;                 /* the process is shutting down */
};

/* health.c */
void health_root(struct handler_ctx *ctx);
void health_live(struct handler_ctx *ctx);
void health_ready(struct handler_ctx *ctx);
void health_config(struct handler_ctx *ctx);

#endif
