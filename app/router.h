/* router: matches a method and path against a static route table. */
#ifndef VALERIE_ROUTER_H
#define VALERIE_ROUTER_H

#include <stddef.h>

#define ROUTER_PARAM_MAX 256 /* longest {param} segment copied into route_match */

struct handler_ctx;

/* Who may call a route (enforced by the auth layer; recorded here). */
enum role {
	ROLE_ANY = 0,
	ROLE_USER,
	ROLE_ADMIN
};

typedef void (*route_handler)(struct handler_ctx *ctx);

/*
 * One route. `pattern` is a path whose segments are literals or "{name}"; a
 * parameter matches one non-empty segment of any length. A last "{name*}"
 * matches the rest of the path, slashes included (an OpenAI model id such as
 * "meta-llama/Llama-3.1-8B"). The pattern doubles as the metrics label of
 * the route.
 */
struct route {
	const char *method;
	const char *pattern;
	enum role role;
	route_handler handler;
};

enum router_result {
	ROUTER_FOUND = 0,
	ROUTER_NOT_FOUND,
	ROUTER_METHOD_NOT_ALLOWED
};

struct route_match {
	const struct route *route;
	/*
	 * The first {param}, or "": also when its segment is longer than
	 * ROUTER_PARAM_MAX, so a handler must refuse "" (no valid parameter
	 * is empty or that long).
	 */
	char param[ROUTER_PARAM_MAX + 1];
};

/*
 * Finds the route for `method` and `path` (no query string). HEAD matches GET
 * routes. A single trailing slash is ignored ("/health/" is "/health").
 * On ROUTER_METHOD_NOT_ALLOWED, `allow` receives the methods the path accepts
 * ("GET, HEAD"). `match` and `allow` are the caller's.
 */
enum router_result router_match(const struct route *routes, size_t nroutes,
    const char *method, const char *path, struct route_match *match,
    char *allow, size_t allowlen);

#endif
