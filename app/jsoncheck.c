/* jsoncheck: strict RFC 8259 syntax check of untrusted JSON before json-c sees it; whole-value parsing. */
#include "config.h"

#include "jsoncheck.h"
#include "utf8.h"

#include <json-c/json.h>
#include <limits.h>
#include <string.h>

struct jc {
	const unsigned char *p, *end, *start;
	const char *why;
	enum jsoncheck_result res;
	int depth, max_depth;
};

static int
fail(struct jc *c, enum jsoncheck_result r, const char *why)
{
	c->res = r;
	c->why = why;
	return -1;
}

static void
ws(struct jc *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static int
hex4(struct jc *c, unsigned int *v)
{
	int i;

	*v = 0;
	if (c->end - c->p < 4)
		return fail(c, JSONCHECK_SYNTAX, "truncated \\u escape");
	for (i = 0; i < 4; i++, c->p++) {
		unsigned char ch = *c->p;

		*v <<= 4;
		if (ch >= '0' && ch <= '9')
			*v |= ch - '0';
		else if (ch >= 'a' && ch <= 'f')
			*v |= ch - 'a' + 10;
		else if (ch >= 'A' && ch <= 'F')
			*v |= ch - 'A' + 10;
		else
			return fail(c, JSONCHECK_SYNTAX, "bad \\u escape");
	}
	return 0;
}

static int
string(struct jc *c)
{
	const unsigned char *run;
	unsigned int u, lo;

	c->p++; /* the opening quote */
	for (;;) {
		run = c->p;
		while (c->p < c->end && *c->p != '"' && *c->p != '\\' && *c->p >= 0x20)
			c->p++;
		if (!utf8_valid((const char *)run, (size_t)(c->p - run))) {
			c->p = run;
			return fail(c, JSONCHECK_UTF8, "a string is not valid UTF-8");
		}
		if (c->p >= c->end)
			return fail(c, JSONCHECK_SYNTAX, "unterminated string");
		if (*c->p == '"') {
			c->p++;
			return 0;
		}
		if (*c->p < 0x20)
			return fail(c, JSONCHECK_SYNTAX, "raw control character in a string");
		c->p++; /* backslash */
		if (c->p >= c->end)
			return fail(c, JSONCHECK_SYNTAX, "unterminated escape");
		if (strchr("\"\\/bfnrt", *c->p) != NULL && *c->p != '\0') {
			c->p++;
			continue;
		}
		if (*c->p != 'u')
			return fail(c, JSONCHECK_SYNTAX, "unknown escape in a string");
		c->p++;
		if (hex4(c, &u) != 0)
			return -1;
		if (u >= 0xdc00 && u <= 0xdfff)
			return fail(c, JSONCHECK_UTF8, "lone low surrogate escape in a string");
		if (u >= 0xd800 && u <= 0xdbff) {
			if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u')
				return fail(c, JSONCHECK_UTF8, "lone high surrogate escape in a string");
			c->p += 2;
			if (hex4(c, &lo) != 0)
				return -1;
			if (lo < 0xdc00 || lo > 0xdfff)
				return fail(c, JSONCHECK_UTF8, "bad surrogate pair escape in a string");
		}
	}
}

static int
digits(struct jc *c)
{
	const unsigned char *s = c->p;

	while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
		c->p++;
	return c->p > s ? 0 : fail(c, JSONCHECK_SYNTAX, "malformed number");
}

static int
number(struct jc *c)
{
	if (*c->p == '-')
		c->p++;
	if (c->p < c->end && *c->p == '0') {
		c->p++;
		if (c->p < c->end && *c->p >= '0' && *c->p <= '9')
			return fail(c, JSONCHECK_SYNTAX, "number with a leading zero");
	} else if (digits(c) != 0) {
		return -1;
	}
	if (c->p < c->end && *c->p == '.') {
		c->p++;
		if (digits(c) != 0)
			return -1;
	}
	if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
		c->p++;
		if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
			c->p++;
		if (digits(c) != 0)
			return -1;
	}
	return 0;
}

static int
literal(struct jc *c, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
		return fail(c, JSONCHECK_SYNTAX, "unexpected character");
	c->p += n;
	return 0;
}

static int value(struct jc *c);

static int
container(struct jc *c, unsigned char close)
{
	int first = 1;

	if (++c->depth > c->max_depth)
		return fail(c, JSONCHECK_DEPTH, "nested too deeply");
	c->p++;
	for (;;) {
		ws(c);
		if (c->p >= c->end)
			return fail(c, JSONCHECK_SYNTAX, "unexpected end of input");
		if (*c->p == close && first) {
			c->p++;
			break;
		}
		if (close == '}') {
			if (*c->p != '"')
				return fail(c, JSONCHECK_SYNTAX, "expected a member name");
			if (string(c) != 0)
				return -1;
			ws(c);
			if (c->p >= c->end || *c->p != ':')
				return fail(c, JSONCHECK_SYNTAX, "expected ':'");
			c->p++;
		}
		if (value(c) != 0)
			return -1;
		ws(c);
		if (c->p >= c->end)
			return fail(c, JSONCHECK_SYNTAX, "unexpected end of input");
		if (*c->p == close) {
			c->p++;
			break;
		}
		if (*c->p != ',')
			return fail(c, JSONCHECK_SYNTAX, "expected ',' or the end of the container");
		c->p++;
		first = 0;
	}
	c->depth--;
	return 0;
}

static int
value(struct jc *c)
{
	ws(c);
	if (c->p >= c->end)
		return fail(c, JSONCHECK_SYNTAX, "unexpected end of input");
	switch (*c->p) {
	case '{':
		return container(c, '}');
	case '[':
		return container(c, ']');
	case '"':
		return string(c);
	case 't':
		return literal(c, "true");
	case 'f':
		return literal(c, "false");
	case 'n':
		return literal(c, "null");
	default:
		if (*c->p == '-' || (*c->p >= '0' && *c->p <= '9'))
			return number(c);
		return fail(c, JSONCHECK_SYNTAX, "unexpected character");
	}
}

enum jsoncheck_result
jsoncheck(const char *s, size_t len, int max_depth, size_t *offset, const char **why)
{
	struct jc c;

	memset(&c, 0, sizeof(c));
	c.p = c.start = (const unsigned char *)s;
	c.end = c.p + len;
	c.max_depth = max_depth;
	c.res = JSONCHECK_OK;
	if (value(&c) == 0) {
		ws(&c);
		if (c.p != c.end)
			fail(&c, JSONCHECK_SYNTAX, "unexpected bytes after the JSON value");
	}
	*offset = (size_t)(c.p - c.start);
	*why = c.why;
	return c.res;
}

struct json_object *
jsoncheck_parse(const char *text, size_t len, int max_depth)
{
	struct json_tokener *tok;
	struct json_object *o;
	size_t end;

	if (len > INT_MAX)
		return NULL;
	tok = json_tokener_new_ex(max_depth);
	if (tok == NULL)
		return NULL;
	o = json_tokener_parse_ex(tok, text, (int)len);
	if (json_tokener_get_error(tok) != json_tokener_success) {
		json_object_put(o);
		o = NULL;
	} else {
		/* NOTE: the tokener stops after one value; anything but blanks after it is garbage. */
		for (end = json_tokener_get_parse_end(tok); end < len; end++)
			if (text[end] != ' ' && text[end] != '\t' && text[end] != '\r' &&
			    text[end] != '\n')
				break;
		if (end < len) {
			json_object_put(o);
			o = NULL;
		}
	}
	json_tokener_free(tok);
	return o;
}
