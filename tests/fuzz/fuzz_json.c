/*
 * fuzz_json: differential target: what jsoncheck accepts, json-c must parse
 * the same way, and the jsonv reader must see the same members, kinds,
 * strings and integers as json-c's tree; jsonv_find must find what nested
 * jsonv_member and jsonv_first calls find.
 */
#include "config.h"

#include "buf.h"
#include "jsoncheck.h"

#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char
kind_of(struct json_object *o)
{
	switch (json_object_get_type(o)) {
	case json_type_object: return '{';
	case json_type_array: return '[';
	case json_type_string: return '"';
	case json_type_boolean: return json_object_get_boolean(o) ? 't' : 'f';
	case json_type_int:
	case json_type_double: return '0';
	default: return 'n';
	}
}

/* The jsonv view of v and json-c's o agree, down to `depth` levels. */
static void
same(const struct jsonv *v, struct json_object *o, int depth)
{
	struct buf b = {0};
	struct jsonv m;
	long long x;

	if (jsonv_kind(v) != kind_of(o))
		abort();
	switch (jsonv_kind(v)) {
	case '"':
		if (jsonv_string(v, &b) != 0 || (!b.oom && (b.len != (size_t)json_object_get_string_len(o) ||
		    (b.len > 0 && memcmp(b.data, json_object_get_string(o), b.len) != 0))))
			abort();
		buf_free(&b);
		break;
	case '0':
		if (jsonv_int64(v, &x) == 0 && (!json_object_is_type(o, json_type_int) ||
		    x != json_object_get_int64(o)))
			abort();
		break;
	case '{':
		if (depth == 0)
			break;
		json_object_object_foreach(o, key, val) {
			if (jsonv_member(v, key, &m) != 0)
				abort();
			same(&m, val, depth - 1);
		}
		if (jsonv_member(v, "\x01no such member", &m) == 0 &&
		    !json_object_object_get_ex(o, "\x01no such member", NULL))
			abort();
		break;
	case '[':
		if ((jsonv_first(v, &m) == 0) != (json_object_array_length(o) > 0))
			abort();
		if (depth > 0 && json_object_array_length(o) > 0)
			same(&m, json_object_array_get_idx(o, 0), depth - 1);
		break;
	default:
		break;
	}
}

/* Whether jsonv_find's found[i]/out[i] is what the nested calls found (`ok`, `want`). */
static void
same_span(int found, const struct jsonv *out, int ok, const struct jsonv *want)
{
	if (found != ok || (ok && (out->p != want->p || out->end != want->end)))
		abort();
}

/* jsonv_find with the wants of provider_openai's read_whole_plain, against nested calls. */
static void
same_find(const struct jsonv *root)
{
	enum { C0, MSG, CONTENT, FINISH, IN, MODEL, N };
	static const struct jsonv_want msg[] = {{"content", NULL, 0, CONTENT}};
	static const struct jsonv_want choice[] = {
		{"message", msg, 1, MSG}, {"finish_reason", NULL, 0, FINISH}
	};
	static const struct jsonv_want first[] = {{NULL, choice, 2, C0}};
	static const struct jsonv_want usage[] = {{"prompt_tokens", NULL, 0, IN}};
	static const struct jsonv_want top[] = {
		{"choices", first, 1, -1}, {"usage", usage, 1, -1}, {"model", NULL, 0, MODEL}
	};
	struct jsonv out[N], ch, c0, m, v;
	int found[N], ok;

	if (jsonv_find(root, top, 3, out, found, N) != 0) {
		if (jsonv_kind(root) == '{' || jsonv_kind(root) == '[')
			abort();
		return;
	}
	ok = jsonv_member(root, "choices", &ch) == 0 && jsonv_first(&ch, &c0) == 0;
	same_span(found[C0], &out[C0], ok, &c0);
	ok = ok && jsonv_member(&c0, "message", &m) == 0;
	same_span(found[MSG], &out[MSG], ok, &m);
	same_span(found[CONTENT], &out[CONTENT], ok && jsonv_member(&m, "content", &v) == 0, &v);
	ok = found[C0] && jsonv_member(&c0, "finish_reason", &v) == 0;
	same_span(found[FINISH], &out[FINISH], ok, &v);
	ok = jsonv_member(root, "usage", &m) == 0 && jsonv_member(&m, "prompt_tokens", &v) == 0;
	same_span(found[IN], &out[IN], ok, &v);
	same_span(found[MODEL], &out[MODEL], jsonv_member(root, "model", &v) == 0, &v);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_tokener *tok;
	struct json_object *obj;
	struct buf fixed = {0};
	const char *why, *text;
	size_t off, tlen;
	char *copy;

	if (jsoncheck((const char *)data, size, 16, &off, &why) != JSONCHECK_OK) {
		if (off > size || why == NULL)
			abort();
		return 0;
	}
	/*
	 * Accepted: json-c must build it (with a terminator so numbers end),
	 * given as Valerie gives it, around json-c 0.16's surrogate pair bug.
	 */
	if (jsoncheck_for_json_c((const char *)data, size, &fixed) < 0)
		return 0;
	if (fixed.len > 0) {
		text = fixed.data;
		tlen = fixed.len;
	} else {
		text = (const char *)data;
		tlen = size;
	}
	copy = malloc(tlen + 1);
	if (copy == NULL) {
		buf_free(&fixed);
		return 0;
	}
	memcpy(copy, text, tlen);
	copy[tlen] = '\0';
	buf_free(&fixed);
	tok = json_tokener_new_ex(18);
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	obj = json_tokener_parse_ex(tok, copy, (int)tlen + 1);
	if (obj == NULL && json_tokener_get_error(tok) != json_tokener_success)
		abort();
	{
		struct jsonv root;

		if (jsonv_root((const char *)data, size, 16, &root) != 0)
			abort();
		same(&root, obj, 4);
		same_find(&root);
	}
	json_object_put(obj);
	json_tokener_free(tok);
	free(copy);
	return 0;
}
