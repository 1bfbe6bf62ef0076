/* provider_anthropic: the Anthropic Messages API over libcurl, whole or streamed. */
#include "config.h"

#include "conf.h"
#include "provider.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ANTHROPIC_URL_MAX 1024
#define ANTHROPIC_KEY_HEADER_MAX 600
#define ANTHROPIC_VERSION "2023-06-01"
#define ANTHROPIC_MAX_TOKENS 4096   /* required by the API; the most an answer may take */
#define JSON_PLAIN (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* The string member `key` of `o` (borrowed), or NULL if absent or not a string. */
static const char *
get_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/*
 * Takes the token counts of a `usage` object. Counts are cumulative (a later
 * message_delta repeats and updates them), so each replaces the last; never
 * added. NOTE: input_tokens leaves out the cached prompt, so the cache
 * fields, when present, are counted in.
 */
static void
take_usage(struct json_object *usage, struct llm_result *res)
{
	struct json_object *v;
	long long in;

	if (usage == NULL || !json_object_is_type(usage, json_type_object))
		return;
	if (json_object_object_get_ex(usage, "input_tokens", &v)) {
		in = json_object_get_int64(v);
		if (json_object_object_get_ex(usage, "cache_creation_input_tokens", &v))
			in += json_object_get_int64(v);
		if (json_object_object_get_ex(usage, "cache_read_input_tokens", &v))
			in += json_object_get_int64(v);
		res->input_tokens = in;
	}
	if (json_object_object_get_ex(usage, "output_tokens", &v))
		res->output_tokens = json_object_get_int64(v);
}

static void
take_model(struct json_object *msg, struct llm_result *res)
{
	const char *m = get_str(msg, "model");

	if (m != NULL)
		snprintf(res->model, sizeof(res->model), "%s", m);
}

/* "type: message" of an Anthropic error object {"type", "message"}; -1 if it is not one. */
static int
error_line(struct json_object *err, char *out, size_t outlen)
{
	const char *type = get_str(err, "type"), *msg = get_str(err, "message");

	if (type == NULL && msg == NULL)
		return -1;
	if (type != NULL && msg != NULL)
		snprintf(out, outlen, "%.40s: %.140s", type, msg);
	else
		snprintf(out, outlen, "%.160s", type != NULL ? type : msg);
	return 0;
}

/* The reason in an error body {"type": "error", "error": {"type", "message"}}. */
static int
error_text(const char *body, size_t len, char *out, size_t outlen)
{
	struct json_object *doc = provider_parse_json(body, len), *e;
	int rc = -1;

	if (doc != NULL && json_object_object_get_ex(doc, "error", &e))
		rc = error_line(e, out, outlen);
	json_object_put(doc);
	return rc;
}

/*
 * One event of a stream. The text comes in content_block_delta events of type
 * text_delta; message_start brings the model and the input tokens,
 * message_delta the output tokens; message_stop is the only clean end. An
 * `error` event (overloaded_error...) fails the call; ping and unknown events
 * are ignored, whatever their data.
 */
static int
on_event(struct provider_stream *s, const char *event, const char *data, size_t len)
{
	struct json_object *doc, *msg, *delta, *v;
	const char *type = event, *t;
	char line[180];
	int rc = 0;

	if (strcmp(event, "message") == 0)
		type = NULL;   /* no event name: the data's type says */
	else if (strcmp(type, "message_start") != 0 && strcmp(type, "content_block_delta") != 0 &&
	    strcmp(type, "message_delta") != 0 && strcmp(type, "message_stop") != 0 &&
	    strcmp(type, "error") != 0)
		return 0;
	doc = provider_parse_json(data, len);
	if (doc == NULL) {
		snprintf(s->why, sizeof(s->why), "the upstream stream sent an event that is not JSON");
		s->failed = 1;
		return 1;
	}
	if (type == NULL && (type = get_str(doc, "type")) == NULL)
		type = "";
	if (strcmp(type, "message_start") == 0) {
		if (json_object_object_get_ex(doc, "message", &msg)) {
			take_model(msg, s->res);
			if (json_object_object_get_ex(msg, "usage", &v))
				take_usage(v, s->res);
		}
	} else if (strcmp(type, "content_block_delta") == 0) {
		if (json_object_object_get_ex(doc, "delta", &delta) &&
		    (t = get_str(delta, "type")) != NULL && strcmp(t, "text_delta") == 0 &&
		    json_object_object_get_ex(delta, "text", &v) &&
		    json_object_is_type(v, json_type_string) &&
		    provider_stream_text(s, json_object_get_string(v),
		    (size_t)json_object_get_string_len(v)) != 0)
			rc = 1;
	} else if (strcmp(type, "message_delta") == 0) {
		if (json_object_object_get_ex(doc, "usage", &v))
			take_usage(v, s->res);
	} else if (strcmp(type, "message_stop") == 0) {
		s->done = 1;
	} else if (strcmp(type, "error") == 0) {
		if (json_object_object_get_ex(doc, "error", &v) &&
		    error_line(v, line, sizeof(line)) == 0)
			snprintf(s->why, sizeof(s->why), "the upstream stream failed: %.170s", line);
		else
			snprintf(s->why, sizeof(s->why), "the upstream stream failed");
		s->failed = 1;
		rc = 1;
	}
	json_object_put(doc);
	return rc;
}

/* Reads a whole (non-streamed) answer: the text blocks of `content`, joined. */
static enum provider_status
read_whole(const char *body, size_t len, struct llm_result *res)
{
	struct json_object *doc = provider_parse_json(body, len);
	struct json_object *content, *block, *v;
	enum provider_status st = PROVIDER_ERROR;
	const char *t;
	size_t i;
	int texts = 0;
	char line[180];

	if (doc == NULL) {
		snprintf(res->error, sizeof(res->error), "the upstream answer is not valid JSON");
		return PROVIDER_ERROR;
	}
	if (json_object_object_get_ex(doc, "error", &v) && error_line(v, line, sizeof(line)) == 0) {
		snprintf(res->error, sizeof(res->error), "anthropic failed: %s", line);
		goto out;
	}
	if (!json_object_object_get_ex(doc, "content", &content) ||
	    !json_object_is_type(content, json_type_array)) {
		snprintf(res->error, sizeof(res->error), "the upstream answer has no content array");
		goto out;
	}
	for (i = 0; i < json_object_array_length(content); i++) {
		block = json_object_array_get_idx(content, i);
		if ((t = get_str(block, "type")) == NULL || strcmp(t, "text") != 0 ||
		    !json_object_object_get_ex(block, "text", &v) ||
		    !json_object_is_type(v, json_type_string))
			continue;
		buf_append(&res->text, json_object_get_string(v),
		    (size_t)json_object_get_string_len(v));
		texts++;
	}
	if (texts == 0) {
		snprintf(res->error, sizeof(res->error), "the upstream answer has no text content");
		goto out;
	}
	take_model(doc, res);
	if (json_object_object_get_ex(doc, "usage", &v))
		take_usage(v, res);
	st = PROVIDER_OK;
out:
	json_object_put(doc);
	return st;
}

static const struct provider_wire anthropic_wire = {
	"anthropic", "message_stop", on_event, read_whole, error_text
};

/* Appends the text of an OpenAI-shaped content (a string, or parts with `text`); -1 if neither. */
static int
content_text(struct json_object *content, struct buf *out)
{
	struct json_object *part, *v;
	size_t i;

	if (json_object_is_type(content, json_type_string)) {
		buf_append(out, json_object_get_string(content),
		    (size_t)json_object_get_string_len(content));
		return 0;
	}
	if (!json_object_is_type(content, json_type_array))
		return -1;
	for (i = 0; i < json_object_array_length(content); i++) {
		part = json_object_array_get_idx(content, i);
		if (!json_object_object_get_ex(part, "text", &v) ||
		    !json_object_is_type(v, json_type_string))
			return -1;
		if (i > 0 && out->len > 0)
			buf_puts(out, "\n\n");
		buf_append(out, json_object_get_string(v), (size_t)json_object_get_string_len(v));
	}
	return 0;
}

/*
 * Adds the message `role` of `text` to `list`, unless it is empty, or an
 * assistant message with nothing before it (Anthropic wants the user first).
 * Returns 0, or -1 when memory ran out.
 */
static int
add_message(struct json_object *list, const char *role, const struct buf *text)
{
	struct json_object *m, *r, *c;

	if (text->oom)
		return -1;
	if (text->len == 0 || (json_object_array_length(list) == 0 && strcmp(role, "assistant") == 0))
		return 0;
	m = json_object_new_object();
	r = json_object_new_string(role);
	c = json_object_new_string_len(text->data, (int)text->len);
	if (m == NULL || r == NULL || c == NULL) {
		json_object_put(m);
		json_object_put(r);
		json_object_put(c);
		return -1;
	}
	json_object_object_add(m, "role", r);
	json_object_object_add(m, "content", c);
	if (json_object_array_add(list, m) != 0) {
		json_object_put(m);
		return -1;
	}
	return 0;
}

/*
 * Translates the OpenAI-shaped `in` into the body's `system` and `messages`:
 * system (and developer) messages go to `system`, joined by a blank line;
 * consecutive messages of one role are merged the same way, so roles
 * alternate; empty ones and a leading assistant message are dropped. Roles
 * with no plain-text meaning here (tool) are refused. Returns PROVIDER_OK,
 * PROVIDER_ERROR with `err` filled, or PROVIDER_NOMEM.
 */
static enum provider_status
translate(struct json_object *in, struct json_object *doc, char *err, size_t errlen)
{
	struct json_object *list = NULL, *m, *content, *system;
	struct buf sys, cur, piece;
	const char *role, *cur_role = NULL;
	enum provider_status st = PROVIDER_ERROR;
	size_t i;

	buf_init(&sys);
	buf_init(&cur);
	buf_init(&piece);
	if (!json_object_is_type(in, json_type_array)) {
		snprintf(err, errlen, "anthropic: the messages are not a list");
		goto out;
	}
	list = json_object_new_array();
	if (list == NULL) {
		st = PROVIDER_NOMEM;
		goto out;
	}
	for (i = 0; i < json_object_array_length(in); i++) {
		m = json_object_array_get_idx(in, i);
		role = get_str(m, "role");
		buf_reset(&piece, 4096);
		if (role == NULL || !json_object_object_get_ex(m, "content", &content) ||
		    content_text(content, &piece) != 0) {
			snprintf(err, errlen, "anthropic: message %zu has no role or no text content", i);
			goto out;
		}
		if (piece.oom) {
			st = PROVIDER_NOMEM;
			goto out;
		}
		if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
			if (sys.len > 0 && piece.len > 0)
				buf_puts(&sys, "\n\n");
			buf_append(&sys, piece.data, piece.len);
			continue;
		}
		if (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0) {
			snprintf(err, errlen, "anthropic: messages of role %.20s cannot be sent yet", role);
			goto out;
		}
		if (piece.len == 0)
			continue;
		if (cur_role != NULL && strcmp(cur_role, role) != 0) {
			if (add_message(list, cur_role, &cur) != 0) {
				st = PROVIDER_NOMEM;
				goto out;
			}
			buf_reset(&cur, 4096);
		}
		if (cur.len > 0)
			buf_puts(&cur, "\n\n");
		buf_append(&cur, piece.data, piece.len);
		cur_role = strcmp(role, "user") == 0 ? "user" : "assistant";
	}
	if ((cur_role != NULL && add_message(list, cur_role, &cur) != 0) || sys.oom) {
		st = PROVIDER_NOMEM;
		goto out;
	}
	if (json_object_array_length(list) == 0) {
		snprintf(err, errlen, "anthropic: there is no user message to send");
		goto out;
	}
	if (sys.len > 0) {
		if ((system = json_object_new_string_len(sys.data, (int)sys.len)) == NULL) {
			st = PROVIDER_NOMEM;
			goto out;
		}
		json_object_object_add(doc, "system", system);
	}
	json_object_object_add(doc, "messages", list);
	list = NULL;
	st = PROVIDER_OK;
out:
	json_object_put(list);
	buf_free(&piece);
	buf_free(&cur);
	buf_free(&sys);
	return st;
}

/* Builds the request body into *out (caller frees with free()). */
static enum provider_status
request_body(const char *model, const struct llm_request *req, char **out, char *err,
    size_t errlen)
{
	struct json_object *doc = json_object_new_object();
	enum provider_status st;

	*out = NULL;
	if (doc == NULL)
		return PROVIDER_NOMEM;
	json_object_object_add(doc, "model", json_object_new_string(model));
	json_object_object_add(doc, "max_tokens", json_object_new_int(ANTHROPIC_MAX_TOKENS));
	st = translate(req->messages, doc, err, errlen);
	if (st != PROVIDER_OK)
		goto out;
	if (req->on_delta != NULL)
		json_object_object_add(doc, "stream", json_object_new_boolean(1));
	*out = strdup(json_object_to_json_string_ext(doc, JSON_PLAIN));
	if (*out == NULL)
		st = PROVIDER_NOMEM;
out:
	json_object_put(doc);
	return st;
}

enum provider_status
provider_anthropic_complete(const struct conf *conf, struct httpc *http,
    const struct llm_request *req, struct llm_result *res)
{
	char url[ANTHROPIC_URL_MAX], key[ANTHROPIC_KEY_HEADER_MAX];
	const char *headers[6];
	const char *model = req->model != NULL ? req->model : conf->anthropic_model;
	struct provider_call call;
	enum provider_status st;
	char *body = NULL;
	size_t n = 0;
	int klen;

	key[0] = '\0';
	res->provider = "anthropic";
	snprintf(res->model, sizeof(res->model), "%s", model);
	if (provider_url(url, sizeof(url), conf->anthropic_base_url, "/v1/messages") != 0) {
		snprintf(res->error, sizeof(res->error), "ANTHROPIC_BASE_URL is too long");
		return PROVIDER_ERROR;
	}
	headers[n++] = "Content-Type: application/json";
	headers[n++] = req->on_delta != NULL ? "Accept: text/event-stream" : "Accept: application/json";
	headers[n++] = "anthropic-version: " ANTHROPIC_VERSION;
	if (conf->anthropic_api_key != NULL) {
		klen = snprintf(key, sizeof(key), "x-api-key: %s", conf->anthropic_api_key);
		if (klen < 0 || (size_t)klen >= sizeof(key)) {
			snprintf(res->error, sizeof(res->error), "the Anthropic API key is too long");
			st = PROVIDER_ERROR;
			goto out;
		}
		headers[n++] = key;
	}
	headers[n] = NULL;
	st = request_body(model, req, &body, res->error, sizeof(res->error));
	if (st != PROVIDER_OK)
		goto out;
	memset(&call, 0, sizeof(call));
	call.url = url;
	call.headers = headers;
	call.body = body;
	call.timeout_s = conf->anthropic_timeout;
	call.connect_timeout_ms = conf->anthropic_connect_timeout_ms;
	call.first_token_timeout_ms = conf->anthropic_first_token_timeout_ms;
	call.max_retries = conf->anthropic_max_retries;
	st = provider_http_complete(http, &anthropic_wire, &call, req, res);
out:
	free(body);
	explicit_bzero(key, sizeof(key));
	return st;
}
