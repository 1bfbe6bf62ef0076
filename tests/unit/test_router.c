/* test_router: route matching, parameters, 404 versus 405 and the Allow list. */
#include "config.h"

#include "check.h"
#include "router.h"

static void h(struct handler_ctx *ctx) { (void)ctx; }

static const struct route routes[] = {
	{"GET", "/", ROLE_ANY, h},
	{"GET", "/health", ROLE_ANY, h},
	{"GET", "/health/ready", ROLE_ANY, h},
	{"GET", "/api/v1/sessions/{id}", ROLE_USER, h},
	{"DELETE", "/api/v1/sessions/{id}", ROLE_USER, h},
	{"POST", "/memory/clear/{id}", ROLE_USER, h},
	{"GET", "/v1/models/{model*}", ROLE_USER, h},
};
#define N (sizeof(routes) / sizeof(routes[0]))

static enum router_result
m(const char *method, const char *path, struct route_match *rm, char *allow)
{
	return router_match(routes, N, method, path, rm, allow, 64);
}

int
main(void)
{
	struct route_match rm;
	char allow[64], longseg[400];

	CHECK_INT(m("GET", "/", &rm, allow), ROUTER_FOUND);
	CHECK_STR(rm.route->pattern, "/");
	CHECK_INT(m("GET", "/health", &rm, allow), ROUTER_FOUND);
	CHECK_STR(rm.route->pattern, "/health");
	CHECK_INT(m("GET", "/health/", &rm, allow), ROUTER_FOUND);
	CHECK_INT(m("HEAD", "/health", &rm, allow), ROUTER_FOUND);
	CHECK_INT(m("GET", "/health/ready", &rm, allow), ROUTER_FOUND);
	CHECK_STR(rm.route->pattern, "/health/ready");

	/* Unknown paths and near misses are 404. */
	CHECK_INT(m("GET", "/healthz", &rm, allow), ROUTER_NOT_FOUND);
	CHECK_INT(m("GET", "/health/ready/x", &rm, allow), ROUTER_NOT_FOUND);
	CHECK_INT(m("GET", "//health", &rm, allow), ROUTER_NOT_FOUND);
	CHECK_INT(m("GET", "", &rm, allow), ROUTER_NOT_FOUND);
	CHECK_INT(m("GET", "/api/v1/sessions/", &rm, allow), ROUTER_NOT_FOUND);
	CHECK_INT(m("GET", "/api/v1/sessions", &rm, allow), ROUTER_NOT_FOUND);

	/* Parameters. */
	CHECK_INT(m("GET", "/api/v1/sessions/user_123", &rm, allow), ROUTER_FOUND);
	CHECK_STR(rm.param, "user_123");
	CHECK_STR(rm.route->pattern, "/api/v1/sessions/{id}");
	CHECK_INT(m("DELETE", "/api/v1/sessions/abc", &rm, allow), ROUTER_FOUND);
	CHECK_STR(rm.route->method, "DELETE");
	CHECK_INT(m("POST", "/memory/clear/s1", &rm, allow), ROUTER_FOUND);
	CHECK_STR(rm.param, "s1");
	memset(longseg, 'a', sizeof(longseg));
	memcpy(longseg, "/memory/clear/", 14);
	longseg[sizeof(longseg) - 1] = '\0';
	/*
	 * A segment longer than ROUTER_PARAM_MAX is still the route (its handler
	 * refuses the parameter with a 400, not a 404 "no such route"), its
	 * param "" so that nothing is cut.
	 */
	CHECK_INT(m("POST", longseg, &rm, allow), ROUTER_FOUND);
	CHECK_STR(rm.route->pattern, "/memory/clear/{id}");
	CHECK_STR(rm.param, "");
	longseg[14 + ROUTER_PARAM_MAX] = '\0';
	CHECK_INT(m("POST", longseg, &rm, allow), ROUTER_FOUND);
	CHECK_INT(strlen(rm.param), ROUTER_PARAM_MAX);
	CHECK_INT(m("GET", longseg, &rm, allow), ROUTER_METHOD_NOT_ALLOWED);

	/* A last {name*} takes the rest of the path, slashes included. */
	CHECK_INT(m("GET", "/v1/models/gpt-4o", &rm, allow), ROUTER_FOUND);
	CHECK_STR(rm.param, "gpt-4o");
	CHECK_INT(m("GET", "/v1/models/meta-llama/Llama-3.1-8B/", &rm, allow), ROUTER_FOUND);
	CHECK_STR(rm.param, "meta-llama/Llama-3.1-8B");
	CHECK_STR(rm.route->pattern, "/v1/models/{model*}");
	CHECK_INT(m("GET", "/v1/models/", &rm, allow), ROUTER_NOT_FOUND);
	CHECK_INT(m("GET", "/v1/models", &rm, allow), ROUTER_NOT_FOUND);
	CHECK_INT(m("DELETE", "/v1/models/a/b", &rm, allow), ROUTER_METHOD_NOT_ALLOWED);

	/* A known path with the wrong method is 405 with the methods it takes. */
	CHECK_INT(m("PUT", "/health", &rm, allow), ROUTER_METHOD_NOT_ALLOWED);
	CHECK_STR(allow, "GET, HEAD");
	CHECK_INT(m("POST", "/api/v1/sessions/x", &rm, allow), ROUTER_METHOD_NOT_ALLOWED);
	CHECK_STR(allow, "GET, HEAD, DELETE");
	CHECK_INT(m("GET", "/memory/clear/x", &rm, allow), ROUTER_METHOD_NOT_ALLOWED);
	CHECK_STR(allow, "POST");
	CHECK(rm.route == NULL);

	return check_done("test_router");
}
