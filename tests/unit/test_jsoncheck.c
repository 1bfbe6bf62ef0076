/* test_jsoncheck: the strict JSON check accepts RFC 8259 and refuses what json-c lets through. */
#include "config.h"

#include "buf.h"
#include "check.h"
#include "jsoncheck.h"

#include <json-c/json.h>

/*
 * buf_json_string writes strict JSON (jsoncheck accepts it) that reads back
 * as the same bytes: every byte 1..127, UTF-8, and NUL inside the string.
 */
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

int
main(void)
{
	size_t off;
	const char *why;

	test_buf_json_string();
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
