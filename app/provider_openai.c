/* provider_openai: OpenAI chat completions (and compatible servers) over libcurl, whole or streamed. */
#include "config.h"

#include "conf.h"
#include "jsoncheck.h"
#include "provider.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPENAI_URL_MAX 1024
#define OPENAI_AUTH_MAX 600
#define JSON_PLAIN (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static void
take_usage(struct json_object *doc, struct llm_result *res)
{
	struct json_object *u, *v;

	if (!json_object_object_get_ex(doc, "usage", &u) || !json_object_is_type(u, json_type_object))
		return;
	if (json_object_object_get_ex(u, "prompt_tokens", &v))
		res->input_tokens = json_object_get_int64(v);
	if (json_object_object_get_ex(u, "completion_tokens", &v))
		res->output_tokens = json_object_get_int64(v);
}

static void
take_model(struct json_object *doc, struct llm_result *res)
{
	struct json_object *v;

	if (json_object_object_get_ex(doc, "model", &v) && json_object_is_type(v, json_type_string))
		snprintf(res->model, sizeof(res->model), "%s", json_object_get_string(v));
}

/* The message of an OpenAI-style error body {"error": {"message"}}; -1 without one. */
static int
error_text(const char *body, size_t len, char *out, size_t outlen)
{
	struct json_object *doc = provider_parse_json(body, len), *e, *m;
	int rc = -1;

	if (doc != NULL && json_object_object_get_ex(doc, "error", &e) &&
	    json_object_object_get_ex(e, "message", &m)) {
		snprintf(out, outlen, "%.160s", json_object_get_string(m));
		rc = 0;
	}
	json_object_put(doc);
	return rc;
}

static void
take_finish(struct json_object *choice, struct llm_result *res)
{
	struct json_object *v;

	if (json_object_object_get_ex(choice, "finish_reason", &v) &&
	    json_object_is_type(v, json_type_string))
		snprintf(res->finish_reason, sizeof(res->finish_reason), "%s",
		    json_object_get_string(v));
}

/* Appends the string member `key` of `o` to `out`, if it is a string. */
static void
append_str(struct json_object *o, const char *key, struct buf *out)
{
	struct json_object *v;

	if (json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
		buf_append(out, json_object_get_string(v), (size_t)json_object_get_string_len(v));
}

/*
 * Appends the text of a message's (or a delta's) `content` to `out`: a
 * string, or the text parts of an array of parts (Mistral's reasoning models
 * answer [{type: "thinking", ...}, {type: "text", text}]; the other parts
 * are not the answer). Null or absent is no text. Returns 0, or -1 when the
 * content is something else.
 */
static int
content_text(struct json_object *content, struct buf *out)
{
	struct json_object *part, *v;
	size_t i;

	if (content == NULL)
		return 0;
	if (json_object_is_type(content, json_type_string)) {
		buf_append(out, json_object_get_string(content),
		    (size_t)json_object_get_string_len(content));
		return 0;
	}
	if (!json_object_is_type(content, json_type_array))
		return -1;
	for (i = 0; i < json_object_array_length(content); i++) {
		part = json_object_array_get_idx(content, i);
		if (json_object_object_get_ex(part, "type", &v) &&
		    json_object_is_type(v, json_type_string) &&
		    strcmp(json_object_get_string(v), "text") == 0)
			append_str(part, "text", out);
	}
	return 0;
}

/* Whether the call `tc` already has an id other than `id`. */
static int
other_id(const struct llm_tool_call *tc, const char *id, size_t len)
{
	return tc->id.len > 0 && (tc->id.len != len || memcmp(tc->id.data, id, len) != 0);
}

/*
 * Joins the tool call fragments of a stream chunk's delta (or takes the whole
 * calls of a message): {index, id?, function: {name?, arguments?}}. A whole
 * message's calls have no index and come in order. Streamed (`slots`, the
 * stream's provider_stream.tool_slot), each index seen fills the next call,
 * whatever its number: gateways in front of Claude number calls from the
 * content block's index (the first is 1), and a call of its own is never
 * left empty before it. A fragment with an id other than its call's starts a
 * new call: Ollama streams every parallel call whole under index 0. Some
 * compatible servers stream fragments without an index: one with a new id
 * starts the next call, one without continues the last. Returns 0, or -1
 * when a call is malformed or there are too many.
 */
static int
take_tool_calls(struct json_object *calls, struct llm_result *res, unsigned char *slots)
{
	struct json_object *c, *v, *fn;
	struct llm_tool_call *tc;
	size_t i, index, wire = 0, idlen = 0;
	const char *id;
	int indexed;

	if (calls == NULL || !json_object_is_type(calls, json_type_array))
		return calls == NULL ? 0 : -1;
	for (i = 0; i < json_object_array_length(calls); i++) {
		c = json_object_array_get_idx(calls, i);
		if (!json_object_is_type(c, json_type_object))
			return -1;
		index = i;
		if (slots != NULL) {
			id = json_object_object_get_ex(c, "id", &v) &&
			    json_object_is_type(v, json_type_string) &&
			    (idlen = (size_t)json_object_get_string_len(v)) > 0 ?
			    json_object_get_string(v) : NULL;
			indexed = json_object_object_get_ex(c, "index", &v) && v != NULL;
			if (indexed) {
				if (!json_object_is_type(v, json_type_int) ||
				    json_object_get_int64(v) < 0 ||
				    json_object_get_int64(v) >= PROVIDER_TOOL_CALLS_MAX)
					return -1;
				wire = (size_t)json_object_get_int64(v);
				index = slots[wire] > 0 ? (size_t)slots[wire] - 1 : res->ntool_calls;
			} else {
				index = id != NULL || res->ntool_calls == 0 ? res->ntool_calls :
				    res->ntool_calls - 1;
				/* NOTE: a server may repeat a call's id in each of its fragments. */
				if (id != NULL && res->ntool_calls > 0 &&
				    !other_id(&res->tool_calls[res->ntool_calls - 1], id, idlen))
					index = res->ntool_calls - 1;
			}
			if (id != NULL && index < res->ntool_calls &&
			    other_id(&res->tool_calls[index], id, idlen))
				index = res->ntool_calls;
			if (indexed && index < PROVIDER_TOOL_CALLS_MAX)
				slots[wire] = (unsigned char)(index + 1);
		}
		if ((tc = provider_tool_call(res, index)) == NULL)
			return -1;
		/* NOTE: the id and the name come whole in a call's first fragment. */
		if (tc->id.len == 0)
			append_str(c, "id", &tc->id);
		if (json_object_object_get_ex(c, "function", &fn) &&
		    json_object_is_type(fn, json_type_object)) {
			if (tc->name.len == 0)
				append_str(fn, "name", &tc->name);
			append_str(fn, "arguments", &tc->arguments);
		}
	}
	return 0;
}

/* One chunk of a stream: `data: {chunk}` events, then `data: [DONE]`. */
static int
on_event(struct provider_stream *s, const char *event, const char *data, size_t len)
{
	struct json_object *doc, *choices, *c0, *delta, *content, *err, *m, *calls;
	struct buf parts = {0};
	int rc = 0;

	(void)event;
	if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
		s->done = 1;
		return 0;
	}
	doc = provider_parse_json(data, len);
	if (doc == NULL) {
		snprintf(s->why, sizeof(s->why), "the upstream stream sent a chunk that is not JSON");
		s->failed = 1;
		return 1;
	}
	/* NOTE: some compatible servers put "error": null in every chunk. */
	if (json_object_object_get_ex(doc, "error", &err) && err != NULL) {
		if (json_object_object_get_ex(err, "message", &m))
			snprintf(s->why, sizeof(s->why), "the upstream stream failed: %.150s",
			    json_object_get_string(m));
		else
			snprintf(s->why, sizeof(s->why), "the upstream stream failed");
		s->failed = 1;
		s->error_kind = provider_error_kind(err);
		json_object_put(doc);
		return 1;
	}
	take_model(doc, s->res);
	take_usage(doc, s->res);
	if (!json_object_object_get_ex(doc, "choices", &choices) ||
	    !json_object_is_type(choices, json_type_array) ||
	    json_object_array_length(choices) == 0 ||
	    (c0 = json_object_array_get_idx(choices, 0)) == NULL)
		goto out;
	take_finish(c0, s->res);
	if (!json_object_object_get_ex(c0, "delta", &delta) ||
	    !json_object_is_type(delta, json_type_object))
		goto out;
	if (json_object_object_get_ex(delta, "tool_calls", &calls) &&
	    take_tool_calls(calls, s->res, s->tool_slot) != 0) {
		snprintf(s->why, sizeof(s->why), "the upstream stream sent a malformed tool call "
		    "(or more than %d)", PROVIDER_TOOL_CALLS_MAX);
		s->failed = 1;
		rc = 1;
		goto out;
	}
	/*
	 * The text: a string, or Mistral's parts; a refusal (structured outputs)
	 * streams as delta.refusal with no content, and is the answer, marked as
	 * a refusal (res->refusal) for the client's format.
	 */
	if (!json_object_object_get_ex(delta, "content", &content) || content == NULL ||
	    (json_object_is_type(content, json_type_string) &&
	    json_object_get_string_len(content) == 0)) {
		json_object_object_get_ex(delta, "refusal", &content);
		if (json_object_is_type(content, json_type_string) &&
		    json_object_get_string_len(content) > 0 && s->res->text.len == 0)
			s->res->refusal = 1;
	}
	if (json_object_is_type(content, json_type_string)) {
		if (provider_stream_text(s, json_object_get_string(content),
		    (size_t)json_object_get_string_len(content)) != 0)
			rc = 1;
	} else if (json_object_is_type(content, json_type_array)) {
		content_text(content, &parts);
		if (parts.oom) {
			snprintf(s->why, sizeof(s->why), "out of memory");
			s->failed = 1;
			rc = 1;
		} else if (provider_stream_text(s, parts.data, parts.len) != 0) {
			rc = 1;
		}
	}
out:
	buf_free(&parts);
	json_object_put(doc);
	return rc;
}

/*
 * The usual answer, text without tool calls, read off the text (jsonv)
 * without a json-c tree: parsing the answer into one and freeing it was the
 * largest single cost of a completion in the worker (about 30,000
 * instructions of 200,000). Returns 1 when it took the answer, 0 when the
 * answer is anything else (tool calls, odd types, not strict JSON): then
 * read_whole reads it with json-c and says what is wrong, as before.
 */
static int
read_whole_plain(const char *body, size_t len, struct llm_result *res)
{
	enum { C0, MSG, CONTENT, CALLS, FINISH, IN, OUT, MODEL, NSLOTS };
	static const struct jsonv_want message[] = {
		{"content", NULL, 0, CONTENT}, {"tool_calls", NULL, 0, CALLS}
	};
	static const struct jsonv_want choice[] = {
		{"message", message, 2, MSG}, {"finish_reason", NULL, 0, FINISH}
	};
	static const struct jsonv_want first[] = {{NULL, choice, 2, C0}};
	static const struct jsonv_want counts[] = {
		{"prompt_tokens", NULL, 0, IN}, {"completion_tokens", NULL, 0, OUT}
	};
	/* NOTE: the counts are looked for in the last "usage" only when it is an object. */
	static const struct jsonv_want top[] = {
		{"choices", first, 1, -1}, {"usage", counts, 2, -1}, {"model", NULL, 0, MODEL}
	};
	struct jsonv root, v[NSLOTS];
	int f[NSLOTS];
	long long in = 0, out = 0;
	struct buf tmp = {0};

	/* choices[0] an object with a message object whose content is a string, tool_calls absent or null */
	if (jsonv_root(body, len, JSON_TOKENER_DEFAULT_DEPTH, &root) != 0 ||
	    jsonv_kind(&root) != '{' || jsonv_find(&root, top, 3, v, f, NSLOTS) != 0 ||
	    !f[C0] || jsonv_kind(&v[C0]) != '{' || !f[MSG] || jsonv_kind(&v[MSG]) != '{' ||
	    !f[CONTENT] || jsonv_kind(&v[CONTENT]) != '"' ||
	    (f[CALLS] && jsonv_kind(&v[CALLS]) != 'n'))
		return 0;
	if ((f[IN] && jsonv_int64(&v[IN], &in) != 0) || (f[OUT] && jsonv_int64(&v[OUT], &out) != 0))
		return 0;
	jsonv_string(&v[CONTENT], &res->text);
	if (f[MODEL] && jsonv_kind(&v[MODEL]) == '"') {
		jsonv_string(&v[MODEL], &tmp);
		if (!tmp.oom)
			buf_strcpy(res->model, sizeof(res->model), tmp.len > 0 ? tmp.data : "");
		buf_reset(&tmp, 0);
	}
	if (f[FINISH] && jsonv_kind(&v[FINISH]) == '"') {
		jsonv_string(&v[FINISH], &tmp);
		if (!tmp.oom)
			buf_strcpy(res->finish_reason, sizeof(res->finish_reason),
			    tmp.len > 0 ? tmp.data : "");
	}
	buf_free(&tmp);
	if (f[IN])
		res->input_tokens = in;
	if (f[OUT])
		res->output_tokens = out;
	return 1;
}

/* Reads a whole (non-streamed) answer: choices[0].message's content and tool calls. */
static enum provider_status
read_whole(const char *body, size_t len, struct llm_result *res)
{
	struct json_object *doc;
	struct json_object *choices, *c0, *msg, *content = NULL, *calls = NULL, *refusal;
	enum provider_status st = PROVIDER_ERROR;

	if (read_whole_plain(body, len, res))
		return PROVIDER_OK;
	doc = provider_parse_json(body, len);
	if (doc == NULL) {
		snprintf(res->error, sizeof(res->error), "the upstream answer is not valid JSON");
		return PROVIDER_ERROR;
	}
	if (!json_object_object_get_ex(doc, "choices", &choices) ||
	    !json_object_is_type(choices, json_type_array) ||
	    json_object_array_length(choices) == 0 ||
	    (c0 = json_object_array_get_idx(choices, 0)) == NULL ||
	    !json_object_object_get_ex(c0, "message", &msg) ||
	    !json_object_is_type(msg, json_type_object)) {
		snprintf(res->error, sizeof(res->error),
		    "the upstream answer has no choices[0].message");
		goto out;
	}
	json_object_object_get_ex(msg, "content", &content);
	json_object_object_get_ex(msg, "tool_calls", &calls);
	if (take_tool_calls(calls, res, NULL) != 0) {
		snprintf(res->error, sizeof(res->error), "the upstream answer has malformed tool "
		    "calls (or more than %d)", PROVIDER_TOOL_CALLS_MAX);
		goto out;
	}
	/*
	 * NOTE: content is null when the model only calls tools, when it refused
	 * (message.refusal says why: that is the answer), and with vLLM's
	 * reasoning parsers when max_tokens ran out while it reasoned (an empty
	 * answer, cut by length).
	 */
	if (content_text(content, &res->text) != 0) {
		snprintf(res->error, sizeof(res->error),
		    "the upstream answer's choices[0].message.content is not text");
		goto out;
	}
	if (res->text.len == 0 && res->ntool_calls == 0 &&
	    json_object_object_get_ex(msg, "refusal", &refusal) &&
	    json_object_is_type(refusal, json_type_string) &&
	    json_object_get_string_len(refusal) > 0) {
		buf_append(&res->text, json_object_get_string(refusal),
		    (size_t)json_object_get_string_len(refusal));
		res->refusal = 1;
	}
	take_finish(c0, res);
	take_model(doc, res);
	take_usage(doc, res);
	st = PROVIDER_OK;
out:
	json_object_put(doc);
	return st;
}

static const struct provider_wire openai_wire = {
	"openai", "[DONE]", on_event, read_whole, error_text
};

/* Appends `v` as json-c writes it (JSON_PLAIN); -1 when json-c is out of memory. */
static int
append_json(struct buf *b, struct json_object *v)
{
	size_t len;
	const char *text = json_object_to_json_string_length(v, JSON_PLAIN, &len);

	if (text == NULL)
		return -1;
	buf_append(b, text, len);
	return 0;
}

/* Appends `,"name":` and a new json-c value `v` (taken: put here) as json-c writes it. */
static int
append_member(struct buf *b, const char *name, struct json_object *v)
{
	int rc;

	if (v == NULL)
		return -1;
	buf_puts(b, ",\"");
	buf_puts(b, name);
	buf_puts(b, "\":");
	rc = append_json(b, v);
	json_object_put(v);
	return rc;
}

/*
 * Builds the request body. Caller frees with free(). NOTE: written as text,
 * the bytes json-c wrote for the object {model, messages, tools, tool_choice,
 * temperature, top_p, max_tokens, stop, the passed-on fields, stream,
 * stream_options} in that order (test_provider_body compares the two):
 * building that object around the messages and freeing it was about 3,500
 * instructions of a completion. The values other than the model are still
 * written by json-c.
 */
char *
provider_openai_body(const char *model, const struct llm_request *req)
{
	struct buf b = {0};
	char d[BUF_DECIMAL_SIZE];
	int rc = 0;

	buf_puts(&b, "{\"model\":");
	buf_json_string(&b, model, strlen(model));
	buf_puts(&b, ",\"messages\":");
	rc |= append_json(&b, req->messages);
	if (req->tools != NULL) {
		buf_puts(&b, ",\"tools\":");
		rc |= append_json(&b, req->tools);
	}
	if (req->tool_choice != NULL) {
		buf_puts(&b, ",\"tool_choice\":");
		rc |= append_json(&b, req->tool_choice);
	}
	if (req->params.has_temperature)
		rc |= append_member(&b, "temperature", json_object_new_double(req->params.temperature));
	if (req->params.has_top_p)
		rc |= append_member(&b, "top_p", json_object_new_double(req->params.top_p));
	if (req->params.max_tokens > 0) {
		buf_puts(&b, req->params.max_completion_tokens ? ",\"max_completion_tokens\":" :
		    ",\"max_tokens\":");
		buf_puts(&b, buf_decimal(d, req->params.max_tokens, 1));
	}
	if (req->params.stop != NULL) {
		buf_puts(&b, ",\"stop\":");
		rc |= append_json(&b, req->params.stop);
	}
	if (req->params.openai_extra != NULL) {
		json_object_object_foreach(req->params.openai_extra, k, v) {
			buf_puts(&b, ",");
			buf_json_string(&b, k, strlen(k));
			buf_puts(&b, ":");
			rc |= append_json(&b, v);
		}
	}
	if (req->on_delta != NULL)
		buf_puts(&b, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
	buf_puts(&b, "}");
	if (rc != 0 || b.oom) {
		buf_free(&b);
		return NULL;
	}
	return b.data;
}

enum provider_status
provider_openai_complete(const struct conf *conf, struct httpc *http,
    const struct llm_request *req, struct llm_result *res)
{
	char url[OPENAI_URL_MAX], auth[OPENAI_AUTH_MAX];
	const char *headers[5];
	const char *model = req->model != NULL ? req->model : conf->openai_model;
	struct provider_call call;
	enum provider_status st;
	char *body;
	size_t n = 0;

	res->provider = "openai";
	buf_strcpy(res->model, sizeof(res->model), model);
	if (provider_url(url, sizeof(url), conf->openai_base_url, "/chat/completions") != 0) {
		snprintf(res->error, sizeof(res->error), "OPENAI_BASE_URL is too long");
		return PROVIDER_ERROR;
	}
	headers[n++] = "Content-Type: application/json";
	headers[n++] = req->on_delta != NULL ? "Accept: text/event-stream" : "Accept: application/json";
	if (conf->openai_api_key != NULL) {
		/* "Authorization: Bearer %s", cut to fit as snprintf cut it. */
		memcpy(auth, "Authorization: Bearer ", 22);
		buf_strcpy(auth + 22, sizeof(auth) - 22, conf->openai_api_key);
		headers[n++] = auth;
	}
	headers[n] = NULL;
	body = provider_openai_body(model, req);
	if (body == NULL)
		return PROVIDER_NOMEM;
	memset(&call, 0, sizeof(call));
	call.url = url;
	call.headers = headers;
	call.body = body;
	call.timeout_s = conf->openai_timeout;
	call.connect_timeout_ms = conf->openai_connect_timeout_ms;
	call.first_token_timeout_ms = conf->openai_first_token_timeout_ms;
	call.max_retries = conf->openai_max_retries;
	st = provider_http_complete(http, &openai_wire, &call, req, res);
	free(body);
	explicit_bzero(auth, sizeof(auth));
	return st;
}
