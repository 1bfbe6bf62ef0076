/* jsoncheck: strict RFC 8259 syntax check of untrusted JSON before json-c sees it. */
#ifndef VALERIE_JSONCHECK_H
#define VALERIE_JSONCHECK_H

#include <stddef.h>

struct json_object;

enum jsoncheck_result {
	JSONCHECK_OK = 0,
	JSONCHECK_SYNTAX,    /* not JSON: *why says what, *offset where */
	JSONCHECK_UTF8,      /* a string is not valid UTF-8 */
	JSONCHECK_DEPTH      /* more than max_depth nested arrays/objects */
};

/*
 * Checks that s[0..len) is exactly one JSON value with optional whitespace
 * around it, per RFC 8259: no NaN or Infinity, no leading zeros or bare
 * dots in numbers, no raw control characters or bad escapes in strings
 * (\u escapes of lone surrogates are refused), UTF-8 well formed, at most
 * `max_depth` nested containers. json-c accepts several of these even in
 * strict mode. On failure *offset is the byte where it went wrong and *why a
 * static description.
 */
enum jsoncheck_result jsoncheck(const char *s, size_t len, int max_depth, size_t *offset,
    const char **why);

/*
 * Parses s[0..len) with json-c as exactly one JSON value (whitespace may
 * follow, nothing else), nesting at most `max_depth`; NULL when it is not.
 * For answers from upstreams and agents. Caller puts.
 */
struct json_object *jsoncheck_parse(const char *s, size_t len, int max_depth);

#endif
