/* jsonbody: a request body parsed as one JSON object, with every refusal a clear JSON error. */
#include "config.h"

#include "jsonbody.h"
#include "jsoncheck.h"

#include <ctype.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define STR_(x) #x
#define STR(x) STR_(x)

static int
is_json_type(const char *ct)
{
	size_t n = strlen("application/json");

	if (ct == NULL || strncasecmp(ct, "application/json", n) != 0)
		return 0;
	return ct[n] == '\0' || ct[n] == ';' || isspace((unsigned char)ct[n]);
}

struct json_object *
jsonbody_parse(const struct http_request *req, struct http_response *resp, int max_depth)
{
	struct json_object *obj;
	enum jsoncheck_result jr;
	const char *why;
	char msg[240];
	size_t off, big, key;

	if (!is_json_type(req->content_type)) {
		http_response_error(resp, 415, "unsupported_media_type",
		    "send the body as Content-Type: application/json");
		return NULL;
	}
	if (req->body_len == 0) {
		http_response_error(resp, 400, "invalid_json", "the request body is empty");
		return NULL;
	}
	/*
	 * NOTE: json-c 0.16 accepts NaN, Infinity, "1.", raw control characters
	 * and overlong UTF-8 even in strict mode, and counts scalars as a nesting
	 * level: our own strict check decides, json-c only builds the tree.
	 */
	jr = jsoncheck_ints(req->body, req->body_len, max_depth, &off, &why, &big, &key);
	if (jr == JSONCHECK_OK && big > 0) {
		/*
		 * NOTE: json-c would make it another number: refused here, for every
		 * field, the ones passed on as they are (tool schemas) included.
		 */
		const char *k = key > 0 ? req->body + key : "";
		size_t klen = 0;

		while (key > 0 && k + klen < req->body + req->body_len && k[klen] != '"' &&
		    k[klen] != '\\' && klen < 60)
			klen++;
		snprintf(msg, sizeof(msg), "field \"%.*s\": the integer at byte %zu is beyond "
		    "-2^63..2^64-1, which cannot be passed on unchanged (write it as 1e20)",
		    (int)klen, k, big - 1);
		http_response_error(resp, 400, "invalid_field", msg);
		return NULL;
	}
	if (jr != JSONCHECK_OK) {
		if (jr == JSONCHECK_DEPTH)
			snprintf(msg, sizeof(msg), "the JSON body is nested deeper than %d levels",
			    max_depth);
		else
			snprintf(msg, sizeof(msg), "invalid JSON at byte %zu: %s", off, why);
		http_response_error(resp, 400, jr == JSONCHECK_UTF8 ? "invalid_utf8" : "invalid_json",
		    msg);
		return NULL;
	}
	for (off = 0; off < req->body_len && isspace((unsigned char)req->body[off]); off++)
		;
	if (req->body[off] != '{') {
		http_response_error(resp, 400, "invalid_body", "the body must be a JSON object");
		return NULL;
	}
	/* json-c counts a scalar as a level: one more than our containers. */
	obj = jsoncheck_parse(req->body, req->body_len, max_depth + 1);
	if (obj == NULL) {
		/* After jsoncheck only memory can fail json-c: a 500, as before. */
		resp->body.oom = 1;
		return NULL;
	}
	if (!json_object_is_type(obj, json_type_object)) {
		/* Cannot happen after jsoncheck; refuse rather than trust it. */
		json_object_put(obj);
		http_response_error(resp, 400, "invalid_json", "the JSON body could not be parsed");
		return NULL;
	}
	return obj;
}

int
jsonbody_field(struct json_object *obj, const char *name, enum jsonbody_type type,
    struct json_object **out, struct http_response *resp)
{
	struct json_object *v;
	const char *want = "a string";
	char msg[160];
	long long n;
	int ok;

	*out = NULL;
	if (!json_object_object_get_ex(obj, name, &v) || v == NULL)
		return 0;
	switch (type) {
	case JB_STRING:
		ok = json_object_is_type(v, json_type_string);
		break;
	case JB_BOOL:
		ok = json_object_is_type(v, json_type_boolean);
		want = "true or false";
		break;
	case JB_OBJECT:
		ok = json_object_is_type(v, json_type_object);
		want = "an object";
		break;
	case JB_STRING_OR_INT:
	default:
		ok = json_object_is_type(v, json_type_string) ||
		    (json_object_is_type(v, json_type_int) && jsoncheck_int(v, &n) == 0);
		want = "a string or an integer from -" STR(JSONCHECK_INT_MAX) " to "
		    STR(JSONCHECK_INT_MAX);
		break;
	}
	if (ok && json_object_is_type(v, json_type_string) &&
	    strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v)) {
		snprintf(msg, sizeof(msg), "field \"%s\" holds a NUL character", name);
		http_response_error(resp, 400, "invalid_field", msg);
		return -1;
	}
	if (!ok) {
		snprintf(msg, sizeof(msg), "field \"%s\" must be %s", name, want);
		http_response_error(resp, 400, "invalid_field", msg);
		return -1;
	}
	*out = v;
	return 0;
}
