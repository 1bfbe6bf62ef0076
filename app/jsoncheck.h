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
 * jsoncheck, also telling of integers json-c cannot hold exactly (below -2^63
 * or above 2^64-1: it saturates them, see jsoncheck_int): *big_int is 1 +
 * the offset of the first such integer, or 0 when there is none, and
 * *big_key (may be NULL) 1 + the offset of the quote of the member name read
 * last before it (0 for none). Such a value passed on (a tool's JSON
 * Schema) would become another number.
 */
enum jsoncheck_result jsoncheck_ints(const char *s, size_t len, int max_depth, size_t *offset,
    const char **why, size_t *big_int, size_t *big_key);

struct buf;

/*
 * json-c 0.16 (Debian 12) tests the code point decoded from a \u surrogate
 * pair with its surrogate macros, so characters whose low 16 bits fall in
 * D800..DFFF (U+1D800..U+1DFFF, U+2D800..: SignWriting, CJK extension F, ...)
 * come out as U+FFFD. Before json-c reads s[0..len): 0 when s has no such
 * pair; 1 and `out` holding s with those pairs written as raw UTF-8 (the same
 * JSON value); -1 when out ran out of memory.
 */
int jsoncheck_for_json_c(const char *s, size_t len, struct buf *out);

/*
 * Parses s[0..len) with json-c as exactly one JSON value (whitespace may
 * follow, nothing else), nesting at most `max_depth`; NULL when it is not.
 * For answers from upstreams and agents. Caller puts.
 */
struct json_object *jsoncheck_parse(const char *s, size_t len, int max_depth);

#define JSONCHECK_INT_MAX 9223372036854775807 /* 2^63-1, no suffix: STR() spells it */

/*
 * Whether `v` is a JSON integer that json-c holds exactly, from
 * -JSONCHECK_INT_MAX to JSONCHECK_INT_MAX: 0 with its value in *out, else -1
 * (NULL, not an integer, or out of that range). For integers from outside.
 * NOTE: json-c 0.16's tokener saturates an integer it cannot hold, with no
 * error and no errno from json_object_get_int64/uint64 afterwards: below
 * -2^63 it becomes INT64_MIN, above 2^64-1 UINT64_MAX (2^63..2^64-1 are kept
 * as uint64, which json_object_get_int64 saturates to INT64_MAX). So -2^63,
 * which a saturated value cannot be told from, and anything above 2^63-1 are
 * refused; tests/unit/test_jsoncheck.c holds json-c to this.
 */
int jsoncheck_int(const struct json_object *v, long long *out);

/*
 * Reading a text jsoncheck accepted without building a json-c tree: for the
 * hot path of an upstream answer, where a few members are wanted and the
 * tree (hash tables, copies, frees) cost more than the rest of the request.
 * A jsonv is where one value starts and ends in that text; the text must
 * outlive it. Members are found as json-c finds them: by their unescaped
 * name, the last of several with one name.
 */
struct jsonv {
	const char *p, *end;   /* the value's first byte, one past its last */
};

/* Checks s[0..len) with jsoncheck (depth max_depth); 0 and *root, or -1. */
int jsonv_root(const char *s, size_t len, int max_depth, struct jsonv *root);

/* '{', '[', '"', 't', 'f', 'n', or '0' for a number. */
char jsonv_kind(const struct jsonv *v);

/* The member `name` of an object: 0 and *out, or -1 (none, or not an object). */
int jsonv_member(const struct jsonv *obj, const char *name, struct jsonv *out);

/*
 * Several members in one walk: found[i] says whether names[i] is there and
 * out[i] is it. -1 when obj is not an object.
 */
int jsonv_members(const struct jsonv *obj, const char *const *names, struct jsonv *out,
    int *found, size_t n);

/*
 * What jsonv_find looks for inside a value: the member `name` of an object
 * (found as jsonv_member finds it: by its unescaped name, the last of
 * several), or with name NULL the first element of an array; recorded in
 * out[slot] (slot -1: not recorded, only looked into), and the wants
 * kids[0..nkids) looked for inside it.
 */
struct jsonv_want {
	const char *name;
	const struct jsonv_want *kids;
	size_t nkids;
	int slot;
};

/*
 * The values the wants w[0..n) name inside object or array v, in one walk
 * of its text: found[slot] says whether each was there (found[0..nslots)
 * are cleared first) and out[slot] is it. What is inside a member is what is
 * inside the last member of that name, as with nested jsonv_member and
 * jsonv_first calls. -1 when v is neither an object nor an array.
 */
int jsonv_find(const struct jsonv *v, const struct jsonv_want *w, size_t n, struct jsonv *out,
    int *found, size_t nslots);

/* The first element of an array: 0 and *out, or -1 (empty, or not an array). */
int jsonv_first(const struct jsonv *arr, struct jsonv *out);

/* Appends a string's unescaped bytes (UTF-8) to out; -1 if not a string. */
int jsonv_string(const struct jsonv *v, struct buf *out);

/* An integer without fraction or exponent that fits: 0 and *out, else -1. */
int jsonv_int64(const struct jsonv *v, long long *out);

#endif
