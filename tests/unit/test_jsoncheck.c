/* test_jsoncheck: the strict JSON check accepts RFC 8259 and refuses what json-c lets through. */
#include "config.h"

#include "buf.h"
#include "check.h"
#include "jsoncheck.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdint.h>

/* jsoncheck_int on the value `text` parses to: 0 and *n, or -1. */
static int
int_of(const char *text, long long *n)
{
	struct json_object *o = json_tokener_parse(text);
	int r = jsoncheck_int(o, n);

	json_object_put(o);
	return r;
}

/*
 * Integers from outside: json-c saturates what it cannot hold, silently
 * (json_object_get_int64 and _uint64 set no errno for an integer object), so
 * jsoncheck_int takes only what json-c provably holds exactly. The first
 * checks pin json-c's behaviour: a json-c that changes it fails here.
 */
static void
test_int(void)
{
	struct json_object *o;
	long long n = 0;

	o = json_tokener_parse("99999999999999999999999");
	CHECK(o != NULL && json_object_is_type(o, json_type_int));
	CHECK_STR(json_object_get_string(o), "18446744073709551615");
	errno = 0;
	CHECK(json_object_get_int64(o) == INT64_MAX && errno == 0);
	json_object_put(o);
	o = json_tokener_parse("-99999999999999999999999");
	CHECK(o != NULL && json_object_get_int64(o) == INT64_MIN);
	json_object_put(o);
	o = json_tokener_parse("9223372036854775808");
	CHECK(o != NULL && json_object_get_int64(o) == INT64_MAX &&
	    json_object_get_uint64(o) == (uint64_t)INT64_MAX + 1);
	json_object_put(o);

	CHECK_INT(int_of("0", &n), 0);
	CHECK_INT(n, 0);
	CHECK_INT(int_of("42", &n), 0);
	CHECK_INT(n, 42);
	CHECK_INT(int_of("-7", &n), 0);
	CHECK_INT(n, -7);
	CHECK_INT(int_of("9223372036854775807", &n), 0);
	CHECK(n == INT64_MAX);
	CHECK_INT(int_of("-9223372036854775807", &n), 0);
	CHECK(n == -INT64_MAX);
	CHECK_INT(int_of("9223372036854775808", &n), -1);
	CHECK_INT(int_of("18446744073709551615", &n), -1);
	CHECK_INT(int_of("18446744073709551616", &n), -1);
	CHECK_INT(int_of("99999999999999999999999", &n), -1);
	CHECK_INT(int_of("-9223372036854775808", &n), -1);
	CHECK_INT(int_of("-9223372036854775809", &n), -1);
	CHECK_INT(int_of("1.5", &n), -1);
	CHECK_INT(int_of("1e3", &n), -1);
	CHECK_INT(int_of("\"5\"", &n), -1);
	CHECK_INT(jsoncheck_int(NULL, &n), -1);
}

/*
 * buf_json_string writes strict JSON (jsoncheck accepts it) that reads back
 * as the same bytes: every byte 1..127, UTF-8, and NUL inside the string.
 */
/* jsoncheck_ints: where the first integer json-c would saturate is, and its member name. */
static void
test_big_ints(void)
{
	static const struct {
		const char *text;
		size_t at, key;   /* offsets + 1; 0: none */
	} cases[] = {
		{"18446744073709551615", 0, 0},                 /* 2^64-1: held exactly */
		{"18446744073709551616", 1, 0},                 /* 2^64 */
		{"-9223372036854775808", 0, 0},                 /* -2^63 */
		{"-9223372036854775809", 1, 0},
		{"[99999999999999999999999]", 2, 0},
		{"[1e30, 100000000000000000000.5, 1234567890123456789]", 0, 0},
		{"{\"a\":1,\"schema\":{\"maximum\":100000000000000000000}}", 28, 18},
		{"{\"n\":[1, -100000000000000000000, 200000000000000000000]}", 10, 2},
		{"\"100000000000000000000\"", 0, 0},            /* a string */
	};
	size_t i, off, at, key;
	const char *why;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		at = key = 99;
		CHECK_INT(jsoncheck_ints(cases[i].text, strlen(cases[i].text), 8, &off, &why, &at,
		    &key), JSONCHECK_OK);
		CHECK_INT(at, cases[i].at);
		CHECK_INT(key, cases[i].key);
	}
}

static void
test_buf_json_string(void)
{
	char all[200];
	size_t n = 0, off;
	int c;
	const char *why;
	struct buf b = {0};
	struct json_object *o;

	for (c = 1; c < 128; c++)
		all[n++] = (char)c;
	memcpy(all + n, "caf\xc3\xa9 \xf0\x9f\x98\x80", 10);
	n += 10;
	all[n++] = '\0';
	all[n++] = 'z';
	buf_json_string(&b, all, n);
	CHECK(!b.oom);
	CHECK_INT(jsoncheck(b.data, b.len, 4, &off, &why), JSONCHECK_OK);
	o = json_tokener_parse(b.data);
	CHECK(o != NULL && json_object_is_type(o, json_type_string) &&
	    (size_t)json_object_get_string_len(o) == n &&
	    memcmp(json_object_get_string(o), all, n) == 0);
	json_object_put(o);
	buf_reset(&b, 0);
	buf_json_string(&b, "", 0);
	CHECK_STR(b.data, "\"\"");
	buf_reset(&b, 0);
	buf_json_string(&b, "a\"b\\c\n\x01", 7);
	CHECK_STR(b.data, "\"a\\\"b\\\\c\\n\\u0001\"");
	buf_free(&b);
}

static enum jsoncheck_result
jc(const char *s, int depth)
{
	size_t off;
	const char *why;

	return jsoncheck(s, strlen(s), depth, &off, &why);
}

#define OK(s) CHECK_INT(jc(s, 8), JSONCHECK_OK)
#define SYNTAX(s) CHECK_INT(jc(s, 8), JSONCHECK_SYNTAX)
#define UTF8(s) CHECK_INT(jc(s, 8), JSONCHECK_UTF8)

/* The jsonv reader: members by unescaped name (the last of duplicates), kinds, strings, integers. */
static void
test_jsonv(void)
{
	static const char doc[] = " {\"a\":1,\"choices\":[{\"message\":{\"content\":\"x\\\"y\\u00e9\\ud83d\\ude00\\n\"}},2],"
	    "\"dup\":\"first\",\"n\":null,\"d\\u0075p\":\"last\",\"big\":99999999999999999999,"
	    "\"neg\":-42,\"f\":1.5,\"e\":[],\"o\":{}} \n";
	static const char *const names[] = {"n", "a", "missing"};
	struct jsonv root, v, c0, m, outs[3];
	int found[3];
	long long x;
	struct buf b = {0};

	CHECK_INT(jsonv_root(doc, sizeof(doc) - 1, 8, &root), 0);
	CHECK(jsonv_kind(&root) == '{');
	CHECK(jsonv_member(&root, "choices", &v) == 0 && jsonv_kind(&v) == '[');
	CHECK(jsonv_first(&v, &c0) == 0 && jsonv_member(&c0, "message", &m) == 0);
	CHECK(jsonv_member(&m, "content", &v) == 0 && jsonv_string(&v, &b) == 0);
	CHECK_STR(b.data, "x\"y\xc3\xa9\xf0\x9f\x98\x80\n");
	buf_reset(&b, 0);
	CHECK(jsonv_member(&root, "dup", &v) == 0 && jsonv_string(&v, &b) == 0);
	CHECK_STR(b.data, "last");
	buf_reset(&b, 0);
	CHECK(jsonv_member(&root, "a", &v) == 0 && jsonv_int64(&v, &x) == 0 && x == 1);
	CHECK(jsonv_member(&root, "neg", &v) == 0 && jsonv_int64(&v, &x) == 0 && x == -42);
	CHECK(jsonv_member(&root, "big", &v) == 0 && jsonv_kind(&v) == '0' && jsonv_int64(&v, &x) != 0);
	CHECK(jsonv_member(&root, "f", &v) == 0 && jsonv_int64(&v, &x) != 0);
	CHECK(jsonv_member(&root, "n", &v) == 0 && jsonv_kind(&v) == 'n' && jsonv_string(&v, &b) != 0);
	CHECK(jsonv_member(&root, "e", &v) == 0 && jsonv_first(&v, &c0) != 0);
	CHECK(jsonv_member(&root, "o", &v) == 0 && jsonv_member(&v, "a", &m) != 0);
	CHECK(jsonv_member(&root, "content", &v) != 0);   /* only direct members */
	CHECK(jsonv_members(&root, names, outs, found, 3) == 0 && found[0] && found[1] && !found[2]);
	CHECK(jsonv_kind(&outs[0]) == 'n' && jsonv_int64(&outs[1], &x) == 0 && x == 1);
	CHECK(jsonv_member(&outs[1], "a", &v) != 0);   /* not an object */
	CHECK(jsonv_root("{\"a\":NaN}", 10, 8, &root) != 0);
	CHECK(jsonv_root("[1,2", 4, 8, &root) != 0);
	buf_free(&b);
}

/*
 * jsonv_find: nested members and first elements in one walk, by unescaped
 * name; what was found inside an earlier member of a name is forgotten when
 * a later one of that name replaces it (json-c keeps the last).
 */
static void
test_jsonv_find(void)
{
	static const char doc[] = "{\"choices\":[{\"message\":{\"content\":\"old\"}}],"
	    "\"usage\":{\"prompt_tokens\":1},\"ch\\u006fices\":[{\"message\":{\"role\":\"a\"},"
	    "\"finish_reason\":\"stop\"},{\"message\":{\"content\":\"second\"}}],"
	    "\"usage\":7,\"\":\"empty\",\"model\":\"m\"}";
	enum { C0, MSG, CONTENT, FINISH, IN, MODEL, EMPTY, N };
	static const struct jsonv_want msg[] = {{"content", NULL, 0, CONTENT}};
	static const struct jsonv_want choice[] = {
		{"message", msg, 1, MSG}, {"finish_reason", NULL, 0, FINISH}
	};
	static const struct jsonv_want first[] = {{NULL, choice, 2, C0}};
	static const struct jsonv_want usage[] = {{"prompt_tokens", NULL, 0, IN}};
	static const struct jsonv_want top[] = {
		{"choices", first, 1, -1}, {"usage", usage, 1, -1}, {"model", NULL, 0, MODEL},
		{"", NULL, 0, EMPTY}
	};
	struct jsonv root, out[N];
	int found[N];
	struct buf b = {0};

	CHECK_INT(jsonv_root(doc, sizeof(doc) - 1, 8, &root), 0);
	CHECK_INT(jsonv_find(&root, top, 4, out, found, N), 0);
	CHECK(found[C0] && jsonv_kind(&out[C0]) == '{');
	CHECK(found[MSG] && jsonv_kind(&out[MSG]) == '{');
	CHECK(!found[CONTENT]);   /* the first "choices" had it; the last (escaped name) has not */
	CHECK(found[FINISH] && jsonv_string(&out[FINISH], &b) == 0);
	CHECK_STR(b.data, "stop");
	buf_reset(&b, 0);
	CHECK(!found[IN]);        /* the last "usage" is not an object */
	CHECK(found[MODEL] && jsonv_string(&out[MODEL], &b) == 0);
	CHECK_STR(b.data, "m");
	buf_reset(&b, 0);
	CHECK(found[EMPTY] && jsonv_string(&out[EMPTY], &b) == 0);
	CHECK_STR(b.data, "empty");
	CHECK(jsonv_root("\"s\"", 3, 8, &root) == 0 && jsonv_find(&root, top, 4, out, found, N) != 0);
	CHECK(jsonv_root("[[1]]", 5, 8, &root) == 0 && jsonv_find(&root, top, 4, out, found, N) == 0);
	CHECK(!found[C0] && !found[MODEL]);
	buf_free(&b);
}

/*
 * json-c 0.16 turns escaped pairs for U+xD800..U+xDFFF into U+FFFD: the
 * escapes jsoncheck_for_json_c rewrites, and what the parsers then give.
 */
static void
test_json_c_surrogates(void)
{
	static const char doc[] = "{\"\\ud836\\udc00\":\"a\\\\ud836\\\\udc00\\uD837\\uDFFF\\ud83d\\ude00\"}";
	static const char plain[] = "[\"\\ud83d\\ude00\\n\"]", escaped[] = "[\"\\\\ud836\\\\udc00\"]";
	struct json_object *o, *v;
	struct buf b = {0};

	/* nothing to do: no pair in the range, or an escaped backslash before it */
	CHECK_INT(jsoncheck_for_json_c(plain, sizeof(plain) - 1, &b), 0);
	CHECK_INT(jsoncheck_for_json_c(escaped, sizeof(escaped) - 1, &b), 0);
	CHECK_INT(jsoncheck_for_json_c("", 0, &b), 0);
	CHECK_INT((int)b.len, 0);
	/* the name and the second pair of the value; the escaped backslash stays */
	CHECK_INT(jsoncheck_for_json_c(doc, sizeof(doc) - 1, &b), 1);
	CHECK_STR(b.data, "{\"\xf0\x9d\xa0\x80\":\"a\\\\ud836\\\\udc00\xf0\x9d\xbf\xbf\\ud83d\\ude00\"}");
	buf_free(&b);
	CHECK_INT(jc(doc, 8), JSONCHECK_OK);
	o = jsoncheck_parse(doc, sizeof(doc) - 1, 8);
	CHECK(o != NULL && json_object_object_get_ex(o, "\xf0\x9d\xa0\x80", &v));
	if (o != NULL && v != NULL)
		CHECK_STR(json_object_get_string(v), "a\\ud836\\udc00" "\xf0\x9d\xbf\xbf\xf0\x9f\x98\x80");
	json_object_put(o);
}

int
main(void)
{
	size_t off;
	const char *why;

	test_buf_json_string();
	test_int();
	test_big_ints();
	test_jsonv();
	test_jsonv_find();
	test_json_c_surrogates();
	OK("{}");
	OK(" { \"a\" : [1, -2.5e+3, 0, 0.1, true, false, null, \"x\\n\\u00e9\\ud83d\\ude00\"] } \n");
	OK("42");
	OK("\"caf\xc3\xa9\"");
	OK("[[[]]]");
	SYNTAX("");
	SYNTAX("   ");
	SYNTAX("{");
	SYNTAX("{\"a\":1,}");
	SYNTAX("[1,]");
	SYNTAX("{\"a\" 1}");
	SYNTAX("{a:1}");
	SYNTAX("NaN");
	SYNTAX("[Infinity]");
	SYNTAX("[-Infinity]");
	SYNTAX("[1.]");
	SYNTAX("[.5]");
	SYNTAX("[01]");
	SYNTAX("[1e]");
	SYNTAX("[+1]");
	SYNTAX("[\"a\tb\"]");          /* raw control character */
	SYNTAX("[\"\\x41\"]");         /* unknown escape */
	SYNTAX("[\"\\u12\"]");
	SYNTAX("{} {}");
	SYNTAX("[tru]");
	SYNTAX("/* c */ {}");
	SYNTAX("['a']");
	UTF8("[\"\xc0\xaf\"]");        /* overlong */
	UTF8("[\"\xed\xa0\x80\"]");    /* encoded surrogate */
	UTF8("[\"\xff\"]");
	UTF8("[\"\\ud800\"]");         /* lone surrogate escape */
	UTF8("[\"\\udc00x\"]");
	UTF8("[\"\\ud800\\u0041\"]");
	/* Depth counts containers only. */
	CHECK_INT(jc("{\"e\":[[[[1]]]]}", 5), JSONCHECK_OK);
	CHECK_INT(jc("{\"e\":[[[[[1]]]]]}", 5), JSONCHECK_DEPTH);
	CHECK_INT(jsoncheck("{\"a\":x}", 7, 8, &off, &why), JSONCHECK_SYNTAX);
	CHECK_INT(off, 5);
	CHECK(why != NULL);
	/* Embedded NUL bytes are not JSON. */
	CHECK_INT(jsoncheck("{}\0", 3, 8, &off, &why), JSONCHECK_SYNTAX);
	return check_done("test_jsoncheck");
}
