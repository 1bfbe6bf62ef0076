/* router: matches a method and path against a static route table. */
#include "config.h"

#include "router.h"

#include <stdio.h>
#include <string.h>

/*
 * Whether `path` (of length `plen`) fits `pattern`; copies the first {param}
 * into `param` ("" when it is longer than ROUTER_PARAM_MAX). Segments are
 * compared one by one.
 */
static int
path_fits(const char *pattern, const char *path, size_t plen, char *param)
{
	const char *pe = path + plen, *seg_end, *pat_end;
	size_t seglen, patlen;
	int got_param = 0;

	param[0] = '\0';
	while (*pattern != '\0' && path < pe) {
		if (*pattern != '/' || *path != '/')
			return 0;
		pattern++;
		path++;
		pat_end = strchr(pattern, '/');
		patlen = pat_end ? (size_t)(pat_end - pattern) : strlen(pattern);
		seg_end = memchr(path, '/', (size_t)(pe - path));
		seglen = seg_end ? (size_t)(seg_end - path) : (size_t)(pe - path);
		/* "{name*}", last in a pattern: the rest of the path, slashes and all (model ids). */
		if (patlen >= 3 && pattern[0] == '{' && pattern[patlen - 2] == '*' &&
		    pattern[patlen - 1] == '}' && pattern[patlen] == '\0') {
			seglen = (size_t)(pe - path);
		}
		if (patlen >= 2 && pattern[0] == '{' && pattern[patlen - 1] == '}') {
			if (seglen == 0)
				return 0;
			/*
			 * NOTE: a longer segment still fits, leaving `param` "": the
			 * handler refuses it as it refuses any other bad parameter (400
			 * invalid_session_id), where a 404 would say "no such route".
			 */
			if (!got_param && seglen <= ROUTER_PARAM_MAX) {
				memcpy(param, path, seglen);
				param[seglen] = '\0';
				got_param = 1;
			}
		} else if (patlen != seglen || memcmp(pattern, path, seglen) != 0) {
			return 0;
		}
		pattern += patlen;
		path += seglen;
	}
	return *pattern == '\0' && path == pe;
}

static int
method_fits(const char *route_method, const char *method)
{
	if (strcmp(route_method, method) == 0)
		return 1;
	return strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0;
}

enum router_result
router_match(const struct route *routes, size_t nroutes, const char *method,
    const char *path, struct route_match *match, char *allow, size_t allowlen)
{
	char scratch[ROUTER_PARAM_MAX + 1];
	size_t plen = strlen(path), i, n = 0;
	int path_known = 0;

	if (plen > 1 && path[plen - 1] == '/')
		plen--;
	memset(match, 0, sizeof(*match));
	if (allowlen > 0)
		allow[0] = '\0';
	for (i = 0; i < nroutes; i++) {
		if (!path_fits(routes[i].pattern, path, plen, scratch))
			continue;
		if (method_fits(routes[i].method, method)) {
			match->route = &routes[i];
			memcpy(match->param, scratch, sizeof(scratch));
			return ROUTER_FOUND;
		}
		path_known = 1;
		if (n < allowlen && strstr(allow, routes[i].method) == NULL) {
			n += (size_t)snprintf(allow + n, allowlen - n, "%s%s", n ? ", " : "",
			    routes[i].method);
			if (strcmp(routes[i].method, "GET") == 0 && n < allowlen)
				n += (size_t)snprintf(allow + n, allowlen - n, ", HEAD");
		}
	}
	return path_known ? ROUTER_METHOD_NOT_ALLOWED : ROUTER_NOT_FOUND;
}
