/* jsoncheck: strict RFC 8259 syntax check of untrusted JSON before json-c sees it; whole-value parsing. */
#include "config.h"

#include "jsoncheck.h"
#include "buf.h"
#include "utf8.h"

#include <json-c/json.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct jc {
	const unsigned char *p, *end, *start;
	const char *why;
	enum jsoncheck_result res;
	int depth, max_depth;
	size_t big_int;          /* 1 + the offset of the first integer json-c saturates, or 0 */
	const unsigned char *key, *big_key;   /* the last member name read (its quote), and the
	                                         one before that integer */
};

static int
fail(struct jc *c, enum jsoncheck_result r, const char *why)
{
	c->res = r;
	c->why = why;
	return -1;
}

/*
 * NOTE: the scans below step a local pointer and store c->p once: stepping
 * c->p itself made the compiler store it at every byte (a byte read may
 * alias it), twice the instructions per byte.
 */
static void
ws(struct jc *c)
{
	const unsigned char *p = c->p;

	while (p < c->end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	c->p = p;
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

/* The bytes that end a run of plain string bytes: control characters, '"' and '\\'. */
static const unsigned char string_stop[256] = {
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	['"'] = 1, ['\\'] = 1
};

static int
string(struct jc *c)
{
	const unsigned char *run, *p, *end = c->end;
	unsigned int u, lo, high;

	c->p++; /* the opening quote */
	for (;;) {
		run = p = c->p;
		high = 0;
		while (p < end && !string_stop[*p])
			high |= *p++;
		c->p = p;
		/* NOTE: a run of ASCII needs no second look. */
		if ((high & 0x80) && !utf8_valid((const char *)run, (size_t)(c->p - run))) {
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

/*
 * Whether the integer digits d[0..n) (no leading zero), negative or not, lie
 * outside what json-c 0.16 holds exactly: -2^63 to 2^64-1 (jsoncheck.h).
 */
static int
saturates(const unsigned char *d, size_t n, int negative)
{
	static const char max_pos[] = "18446744073709551615", max_neg[] = "9223372036854775808";
	const char *max = negative ? max_neg : max_pos;
	size_t maxlen = negative ? sizeof(max_neg) - 1 : sizeof(max_pos) - 1;

	return n > maxlen || (n == maxlen && memcmp(d, max, n) > 0);
}

static int
number(struct jc *c)
{
	const unsigned char *start = c->p, *d;
	int negative = *c->p == '-';

	if (negative)
		c->p++;
	d = c->p;
	if (c->p < c->end && *c->p == '0') {
		c->p++;
		if (c->p < c->end && *c->p >= '0' && *c->p <= '9')
			return fail(c, JSONCHECK_SYNTAX, "number with a leading zero");
	} else if (digits(c) != 0) {
		return -1;
	}
	if (c->big_int == 0 && c->p - d >= 19 &&
	    (c->p == c->end || (*c->p != '.' && *c->p != 'e' && *c->p != 'E')) &&
	    saturates(d, (size_t)(c->p - d), negative)) {
		c->big_int = (size_t)(start - c->start) + 1;
		c->big_key = c->key;
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
			c->key = c->p;
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
	return jsoncheck_ints(s, len, max_depth, offset, why, NULL, NULL);
}

enum jsoncheck_result
jsoncheck_ints(const char *s, size_t len, int max_depth, size_t *offset, const char **why,
    size_t *big_int, size_t *big_key)
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
	if (big_int != NULL)
		*big_int = c.big_int;
	if (big_key != NULL)
		*big_key = c.big_int > 0 && c.big_key != NULL ? (size_t)(c.big_key - c.start) + 1 : 0;
	return c.res;
}

/* The four hex digits at p as *v: 0, or -1 when they are not four hex digits. */
static int
hexat(const char *p, unsigned int *v)
{
	int i, d;

	*v = 0;
	for (i = 0; i < 4; i++) {
		if (p[i] >= '0' && p[i] <= '9')
			d = p[i] - '0';
		else if ((p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'f')
			d = (p[i] | 0x20) - 'a' + 10;
		else
			return -1;
		*v = *v << 4 | (unsigned int)d;
	}
	return 0;
}

static void put_utf8(struct buf *out, unsigned int u);

int
jsoncheck_for_json_c(const char *s, size_t len, struct buf *out)
{
	const char *p = s, *end = s + len, *done = s, *q;
	unsigned int hi, lo;

	while ((q = memchr(p, '\\', (size_t)(end - p))) != NULL) {
		if (end - q >= 12 && q[1] == 'u' && hexat(q + 2, &hi) == 0 && hi >= 0xd800 &&
		    hi <= 0xdbff && (hi & 0x3e) == 0x36 && q[6] == '\\' && q[7] == 'u' &&
		    hexat(q + 8, &lo) == 0 && lo >= 0xdc00 && lo <= 0xdfff) {
			buf_append(out, done, (size_t)(q - done));
			put_utf8(out, 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00));
			p = done = q + 12;
			continue;
		}
		/* any other escape: step over the backslash and the byte it escapes */
		p = end - q > 2 ? q + 2 : end;
	}
	if (done == s)
		return 0;
	buf_append(out, done, (size_t)(end - done));
	return out->oom ? -1 : 1;
}

struct json_object *
jsoncheck_parse(const char *text, size_t len, int max_depth)
{
	struct json_tokener *tok;
	struct json_object *o;
	struct buf fixed = {0};
	size_t end;
	int r;

	if (len > INT_MAX)
		return NULL;
	r = jsoncheck_for_json_c(text, len, &fixed);
	if (r < 0) {
		buf_free(&fixed);
		return NULL;
	}
	if (r > 0) {
		text = fixed.data;
		len = fixed.len;
	}
	tok = json_tokener_new_ex(max_depth);
	if (tok == NULL) {
		buf_free(&fixed);
		return NULL;
	}
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
	buf_free(&fixed);
	return o;
}

_Static_assert(JSONCHECK_INT_MAX == INT64_MAX, "jsoncheck_int's range is int64's, but INT64_MIN");

int
jsoncheck_int(const struct json_object *v, long long *out)
{
	int64_t x;

	if (v == NULL || !json_object_is_type(v, json_type_int))
		return -1;
	x = json_object_get_int64(v);
	if (x == INT64_MIN || (x == INT64_MAX && json_object_get_uint64(v) != (uint64_t)INT64_MAX))
		return -1;
	*out = (long long)x;
	return 0;
}

int
jsonv_root(const char *s, size_t len, int max_depth, struct jsonv *root)
{
	const char *why;
	size_t off;

	if (jsoncheck(s, len, max_depth, &off, &why) != JSONCHECK_OK)
		return -1;
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\n' ||
	    s[len - 1] == '\r'))
		len--;
	while (len > 0 && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) {
		s++;
		len--;
	}
	root->p = s;
	root->end = s + len;
	return 0;
}

char
jsonv_kind(const struct jsonv *v)
{
	char k = v->p < v->end ? *v->p : 'n';

	return k == '-' || (k >= '0' && k <= '9') ? '0' : k;
}

/* A cursor on validated text: value() then only skips. */
static void
cursor(struct jc *c, const char *p, const char *end)
{
	memset(c, 0, sizeof(*c));
	c->p = c->start = (const unsigned char *)p;
	c->end = (const unsigned char *)end;
	c->max_depth = INT_MAX;
}

static void
put_utf8(struct buf *out, unsigned int u)
{
	char b[4];
	size_t n;

	if (u < 0x80) {
		b[0] = (char)u;
		n = 1;
	} else if (u < 0x800) {
		b[0] = (char)(0xc0 | (u >> 6));
		b[1] = (char)(0x80 | (u & 0x3f));
		n = 2;
	} else if (u < 0x10000) {
		b[0] = (char)(0xe0 | (u >> 12));
		b[1] = (char)(0x80 | ((u >> 6) & 0x3f));
		b[2] = (char)(0x80 | (u & 0x3f));
		n = 3;
	} else {
		b[0] = (char)(0xf0 | (u >> 18));
		b[1] = (char)(0x80 | ((u >> 12) & 0x3f));
		b[2] = (char)(0x80 | ((u >> 6) & 0x3f));
		b[3] = (char)(0x80 | (u & 0x3f));
		n = 4;
	}
	buf_append(out, b, n);
}

int
jsonv_string(const struct jsonv *v, struct buf *out)
{
	struct jc c;
	const unsigned char *run;
	unsigned int u, lo;

	if (jsonv_kind(v) != '"')
		return -1;
	cursor(&c, v->p + 1, v->end - 1);
	for (;;) {
		run = c.p;
		while (c.p < c.end && *c.p != '\\')
			c.p++;
		buf_append(out, run, (size_t)(c.p - run));
		if (c.p >= c.end)
			return 0;
		c.p++;   /* validated: an escape follows */
		switch (*c.p++) {
		case 'b': buf_append(out, "\b", 1); break;
		case 'f': buf_append(out, "\f", 1); break;
		case 'n': buf_append(out, "\n", 1); break;
		case 'r': buf_append(out, "\r", 1); break;
		case 't': buf_append(out, "\t", 1); break;
		case 'u':
			hex4(&c, &u);
			if (u >= 0xd800 && u <= 0xdbff) {
				c.p += 2;
				hex4(&c, &lo);
				u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
			}
			put_utf8(out, u);
			break;
		default:   /* " \\ / */
			buf_append(out, c.p - 1, 1);
			break;
		}
	}
}

/*
 * The end of the value at p in validated text: no checks, only the nesting
 * and where strings end. Walking with value() again would validate every
 * string a second time.
 */
static const char *
skip(const char *p, const char *end)
{
	int depth = 0;

	while (p < end) {
		if (*p == '"') {
			for (p++; p < end && *p != '"'; p++)
				if (*p == '\\')
					p++;
			p++;
		} else if (*p == '{' || *p == '[') {
			depth++;
			p++;
		} else if (*p == '}' || *p == ']') {
			depth--;
			p++;
		} else if (depth == 0) {
			/* a number or a literal */
			while (p < end && ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
			    *p == '-' || *p == '+' || *p == '.' || *p == 'E'))
				p++;
			return p;
		} else {
			p++;
		}
		if (depth == 0)
			return p;
	}
	return end;
}

static const char *
blanks(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* Whether the name text[0..len) (raw, between its quotes) unescapes to `name`. */
static int
name_is(const char *text, size_t len, const char *name)
{
	size_t n = strlen(name);
	struct jsonv v;
	struct buf b = {0};
	int same;

	/* NOTE: most names have no escape: compare the bytes; else unescape first. */
	if (memchr(text, '\\', len) == NULL)
		return len == n && memcmp(text, name, n) == 0;
	v.p = text - 1;
	v.end = text + len + 1;
	jsonv_string(&v, &b);
	/* NOTE: json-c keeps a name up to its first \u0000: so do we, to find what it finds. */
	same = !b.oom && b.len > 0 && strlen(b.data) == n && memcmp(b.data, name, n) == 0;
	buf_free(&b);
	return same;
}

int
jsonv_members(const struct jsonv *obj, const char *const *names, struct jsonv *out,
    int *found, size_t n)
{
	const char *p, *name, *end = obj->end;
	size_t i, len;

	for (i = 0; i < n; i++)
		found[i] = 0;
	if (jsonv_kind(obj) != '{')
		return -1;
	p = obj->p + 1;
	for (;;) {
		p = blanks(p, end);
		if (p >= end || *p != '"')
			break;   /* the closing brace */
		name = p + 1;
		p = skip(p, end);
		len = (size_t)(p - 1 - name);
		p = blanks(p, end) + 1;   /* past ':' */
		p = blanks(p, end);
		for (i = 0; i < n; i++)
			if (name_is(name, len, names[i])) {
				/* NOTE: a later one replaces it: json-c keeps the last of duplicates */
				out[i].p = p;
				out[i].end = skip(p, end);
				found[i] = 1;
				break;
			}
		p = i < n ? out[i].end : skip(p, end);
		p = blanks(p, end);
		if (p < end && *p == ',')
			p++;
	}
	return 0;
}

/* Clears the found flags of the wants w[0..n) and of everything below them. */
static void
clear_found(const struct jsonv_want *w, size_t n, int *found)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (w[i].slot >= 0)
			found[w[i].slot] = 0;
		clear_found(w[i].kids, w[i].nkids, found);
	}
}

/* Records the value p..end as want w (and leaves its kids as walk found them). */
static void
record(const struct jsonv_want *w, const char *p, const char *end, struct jsonv *out, int *found)
{
	if (w->slot < 0)
		return;
	out[w->slot].p = p;
	out[w->slot].end = end;
	found[w->slot] = 1;
}

/*
 * The end of the value at p in validated text, as skip finds it, recording
 * the wants w[0..n) inside it on the way: each byte is read once, where
 * looking each level up with jsonv_members and jsonv_first read a nested
 * value once per level above it.
 */
static const char *
walk(const char *p, const char *end, const struct jsonv_want *w, size_t n, struct jsonv *out,
    int *found)
{
	const char *name, *v, *vend;
	size_t i, len;
	int escaped;

	if (n == 0 || p >= end || (*p != '{' && *p != '['))
		return skip(p, end);
	if (*p == '[') {
		for (i = 0; i < n && w[i].name != NULL; i++)
			;
		v = blanks(p + 1, end);
		if (i == n || v >= end || *v == ']')
			return skip(p, end);
		clear_found(&w[i], 1, found);
		vend = walk(v, end, w[i].kids, w[i].nkids, out, found);
		record(&w[i], v, vend, out, found);
		for (p = blanks(vend, end); p < end && *p == ','; p = blanks(p, end))
			p = skip(blanks(p + 1, end), end);
		return p < end ? p + 1 : end;   /* past ']' */
	}
	p++;
	for (;;) {
		p = blanks(p, end);
		if (p >= end || *p != '"')
			break;   /* the closing brace */
		/* the name: validated, so a '"' not escaped ends it */
		escaped = 0;
		for (name = ++p; p < end && *p != '"'; p++)
			if (*p == '\\') {
				escaped = 1;
				p++;
			}
		len = (size_t)(p - name);
		p = blanks(blanks(p + 1, end) + 1, end);   /* past ':' */
		for (i = 0; i < n; i++)
			if (w[i].name != NULL && (escaped ? name_is(name, len, w[i].name) :
			    len > 0 ? w[i].name[0] == name[0] && strncmp(w[i].name, name, len) == 0 &&
			    w[i].name[len] == '\0' : w[i].name[0] == '\0'))
				break;
		if (i == n) {
			p = skip(p, end);
		} else {
			/* NOTE: a later one replaces it, what was found inside the earlier one too */
			clear_found(&w[i], 1, found);
			vend = walk(p, end, w[i].kids, w[i].nkids, out, found);
			record(&w[i], p, vend, out, found);
			p = vend;
		}
		p = blanks(p, end);
		if (p < end && *p == ',')
			p++;
	}
	return p < end ? p + 1 : end;   /* past '}' */
}

int
jsonv_find(const struct jsonv *v, const struct jsonv_want *w, size_t n, struct jsonv *out,
    int *found, size_t nslots)
{
	size_t i;

	for (i = 0; i < nslots; i++)
		found[i] = 0;
	if (jsonv_kind(v) != '{' && jsonv_kind(v) != '[')
		return -1;
	walk(v->p, v->end, w, n, out, found);
	return 0;
}

int
jsonv_member(const struct jsonv *obj, const char *name, struct jsonv *out)
{
	int found;

	if (jsonv_members(obj, &name, out, &found, 1) != 0 || !found)
		return -1;
	return 0;
}

int
jsonv_first(const struct jsonv *arr, struct jsonv *out)
{
	const char *p;

	if (jsonv_kind(arr) != '[')
		return -1;
	p = blanks(arr->p + 1, arr->end);
	if (p >= arr->end || *p == ']')
		return -1;
	out->p = p;
	out->end = skip(p, arr->end);
	return 0;
}

int
jsonv_int64(const struct jsonv *v, long long *out)
{
	char tmp[24], *end;
	size_t n = (size_t)(v->end - v->p);
	long long x;

	if (jsonv_kind(v) != '0' || n >= sizeof(tmp) ||
	    memchr(v->p, '.', n) != NULL || memchr(v->p, 'e', n) != NULL ||
	    memchr(v->p, 'E', n) != NULL)
		return -1;
	memcpy(tmp, v->p, n);
	tmp[n] = '\0';
	errno = 0;
	x = strtoll(tmp, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = x;
	return 0;
}
