/* provider_openai: OpenAI chat completions (and compatible servers) over libcurl, whole or streamed. */
#include "config.h"

#include "conf.h"
#include "httpc.h"
#include "provider.h"
#include "sse.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPENAI_URL_MAX 1024
#define OPENAI_AUTH_MAX 600
#define JSON_PLAIN (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* State of one streamed attempt. */
struct oa_stream {
	const struct llm_request *req;
	struct llm_result *res;
	struct sse_parser sse;
	int done;            /* [DONE] seen */
	int failed;          /* an error chunk or garbage */
	int client_gone;
	char why[200];
};

/* Parses `text` (len bytes) as JSON; NULL if it is not. Caller puts. */
static struct json_object *
parse_json(const char *text, size_t len)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o;

	if (tok == NULL)
		return NULL;
	o = json_tokener_parse_ex(tok, text, (int)len);
	if (json_tokener_get_error(tok) != json_tokener_success) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

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

/* The message of an OpenAI-style error body, for our own error text. */
static void
upstream_message(const struct httpc_response *r, char *out, size_t outlen)
{
	struct json_object *doc = parse_json(r->body.data ? r->body.data : "", r->body.len), *e, *m;

	if (doc != NULL && json_object_object_get_ex(doc, "error", &e) &&
	    json_object_object_get_ex(e, "message", &m))
		snprintf(out, outlen, "%.160s", json_object_get_string(m));
	else if (strncmp(r->content_type, "text/html", 9) == 0)
		snprintf(out, outlen, "an HTML error page");
	else
		snprintf(out, outlen, "no error message");
	json_object_put(doc);
}

static int
on_event(void *p, const char *event, const char *data, size_t len)
{
	struct oa_stream *s = p;
	struct json_object *doc, *choices, *c0, *delta, *content, *err, *m;

	(void)event;
	if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
		s->done = 1;
		return 0;
	}
	doc = parse_json(data, len);
	if (doc == NULL) {
		snprintf(s->why, sizeof(s->why), "the upstream stream sent a chunk that is not JSON");
		s->failed = 1;
		return 1;
	}
	if (json_object_object_get_ex(doc, "error", &err)) {
		if (json_object_object_get_ex(err, "message", &m))
			snprintf(s->why, sizeof(s->why), "the upstream stream failed: %.150s",
			    json_object_get_string(m));
		else
			snprintf(s->why, sizeof(s->why), "the upstream stream failed");
		s->failed = 1;
		json_object_put(doc);
		return 1;
	}
	take_model(doc, s->res);
	take_usage(doc, s->res);
	if (json_object_object_get_ex(doc, "choices", &choices) &&
	    json_object_is_type(choices, json_type_array) && json_object_array_length(choices) > 0 &&
	    (c0 = json_object_array_get_idx(choices, 0)) != NULL &&
	    json_object_object_get_ex(c0, "delta", &delta) &&
	    json_object_object_get_ex(delta, "content", &content) &&
	    json_object_is_type(content, json_type_string) && json_object_get_string_len(content) > 0) {
		const char *t = json_object_get_string(content);
		size_t n = (size_t)json_object_get_string_len(content);

		buf_append(&s->res->text, t, n);
		s->res->streamed = 1;
		if (s->req->on_delta(s->req->ctx, t, n) != 0) {
			s->client_gone = 1;
			json_object_put(doc);
			return 1;
		}
	}
	json_object_put(doc);
	return 0;
}

static int
on_data(void *p, const char *data, size_t len)
{
	struct oa_stream *s = p;

	return sse_feed(&s->sse, data, len) != 0 ? 1 : 0;
}

static int
cancelled(void *p)
{
	const struct oa_stream *s = p;

	return s->req->cancelled != NULL && s->req->cancelled(s->req->ctx);
}

/* Reads a whole (non-streamed) answer. */
static enum provider_status
read_whole(const struct httpc_response *r, struct llm_result *res)
{
	struct json_object *doc = parse_json(r->body.data ? r->body.data : "", r->body.len);
	struct json_object *choices, *c0, *msg, *content;
	enum provider_status st = PROVIDER_ERROR;

	if (doc == NULL) {
		snprintf(res->error, sizeof(res->error), "the upstream answer is not valid JSON");
		return PROVIDER_ERROR;
	}
	if (!json_object_object_get_ex(doc, "choices", &choices) ||
	    !json_object_is_type(choices, json_type_array) ||
	    json_object_array_length(choices) == 0 ||
	    (c0 = json_object_array_get_idx(choices, 0)) == NULL ||
	    !json_object_object_get_ex(c0, "message", &msg) ||
	    !json_object_object_get_ex(msg, "content", &content) ||
	    !json_object_is_type(content, json_type_string)) {
		snprintf(res->error, sizeof(res->error),
		    "the upstream answer has no choices[0].message.content");
		goto out;
	}
	buf_append(&res->text, json_object_get_string(content),
	    (size_t)json_object_get_string_len(content));
	take_model(doc, res);
	take_usage(doc, res);
	st = res->text.oom ? PROVIDER_NOMEM : PROVIDER_OK;
out:
	json_object_put(doc);
	return st;
}

/* Builds the request body. Caller frees with free(). */
static char *
request_body(const char *model, const struct llm_request *req)
{
	struct json_object *doc = json_object_new_object(), *opts;
	char *text = NULL;

	if (doc == NULL)
		return NULL;
	json_object_object_add(doc, "model", json_object_new_string(model));
	json_object_object_add(doc, "messages", json_object_get(req->messages));
	if (req->on_delta != NULL) {
		json_object_object_add(doc, "stream", json_object_new_boolean(1));
		opts = json_object_new_object();
		json_object_object_add(opts, "include_usage", json_object_new_boolean(1));
		json_object_object_add(doc, "stream_options", opts);
	}
	text = strdup(json_object_to_json_string_ext(doc, JSON_PLAIN));
	json_object_put(doc);
	return text;
}

/* One attempt: fills *st and says whether another attempt may help. */
static enum provider_attempt
attempt(const struct conf *conf, struct httpc *http, const struct llm_request *req,
    struct llm_result *res, const char *url, const char *const *headers, const char *body,
    long long *retry_after_ms, enum provider_status *st)
{
	struct httpc_request hr;
	struct httpc_response r;
	struct oa_stream s;
	enum httpc_result hres;
	long long left = provider_time_left(req), total = conf->openai_timeout * 1000;
	char err[160], msg[180];
	enum provider_attempt next = ATTEMPT_DONE;

	memset(&s, 0, sizeof(s));
	s.req = req;
	s.res = res;
	sse_init(&s.sse, on_event, &s);
	memset(&hr, 0, sizeof(hr));
	hr.method = "POST";
	hr.url = url;
	hr.headers = headers;
	hr.body = body;
	hr.body_len = strlen(body);
	hr.connect_timeout_ms = (long)conf->openai_connect_timeout_ms;
	hr.first_byte_timeout_ms = (long)conf->openai_first_token_timeout_ms;
	hr.total_timeout_ms = (long)(left < total ? (left > 1 ? left : 1) : total);
	hr.max_bytes = req->on_delta != NULL ? PROVIDER_STREAM_MAX : PROVIDER_RESPONSE_MAX;
	hr.on_data = req->on_delta != NULL ? on_data : NULL;
	hr.cancelled = cancelled;
	hr.ctx = &s;
	res->attempts++;
	*retry_after_ms = -1;

	hres = httpc_perform(http, &hr, &r, err, sizeof(err));
	if (s.client_gone || hres == HTTPC_CANCELLED) {
		*st = PROVIDER_CANCELLED;
		goto out;
	}
	if (hres == HTTPC_ABORTED && s.failed) {
		snprintf(res->error, sizeof(res->error), "%s", s.why);
		*st = PROVIDER_ERROR;
		next = res->streamed ? ATTEMPT_DONE : ATTEMPT_RETRY;
		goto out;
	}
	if (hres != HTTPC_OK) {
		snprintf(res->error, sizeof(res->error), "openai: %s", err);
		*st = hres == HTTPC_TIMEOUT || hres == HTTPC_FIRST_BYTE_TIMEOUT ? PROVIDER_TIMEOUT :
		    hres == HTTPC_NOMEM ? PROVIDER_NOMEM : PROVIDER_ERROR;
		if (hres != HTTPC_TOO_LARGE && hres != HTTPC_NOMEM && !res->streamed)
			next = ATTEMPT_RETRY;
		goto out;
	}
	if (r.status < 200 || r.status > 299) {
		upstream_message(&r, msg, sizeof(msg));
		snprintf(res->error, sizeof(res->error), "openai answered %ld: %s", r.status, msg);
		*st = PROVIDER_ERROR;
		*retry_after_ms = r.retry_after_ms;
		if (r.status == 429 || r.status == 408 || r.status >= 500)
			next = ATTEMPT_RETRY;
		goto out;
	}
	if (req->on_delta == NULL) {
		*st = read_whole(&r, res);
		goto out;
	}
	if (!s.done) {
		snprintf(res->error, sizeof(res->error),
		    "the upstream stream ended before [DONE]");
		*st = PROVIDER_ERROR;
		next = res->streamed ? ATTEMPT_DONE : ATTEMPT_RETRY;
		goto out;
	}
	*st = PROVIDER_OK;
out:
	sse_free(&s.sse);
	httpc_response_free(&r);
	if (*st != PROVIDER_OK && next == ATTEMPT_RETRY && !res->streamed) {
		/* Nothing reached the client: the next attempt starts clean. */
		buf_reset(&res->text, 0);
		res->input_tokens = res->output_tokens = 0;
	}
	return next;
}

enum provider_status
provider_openai_complete(const struct conf *conf, struct httpc *http,
    const struct llm_request *req, struct llm_result *res)
{
	char url[OPENAI_URL_MAX], auth[OPENAI_AUTH_MAX];
	const char *headers[5];
	const char *model = req->model != NULL ? req->model : conf->openai_model;
	enum provider_status st = PROVIDER_ERROR;
	long long retry_after;
	char *body;
	size_t n = 0, blen;
	int i;

	res->provider = "openai";
	snprintf(res->model, sizeof(res->model), "%s", model);
	blen = strlen(conf->openai_base_url);
	while (blen > 0 && conf->openai_base_url[blen - 1] == '/')
		blen--;
	snprintf(url, sizeof(url), "%.*s/chat/completions", (int)blen, conf->openai_base_url);
	headers[n++] = "Content-Type: application/json";
	headers[n++] = req->on_delta != NULL ? "Accept: text/event-stream" : "Accept: application/json";
	if (conf->openai_api_key != NULL) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", conf->openai_api_key);
		headers[n++] = auth;
	}
	headers[n] = NULL;
	body = request_body(model, req);
	if (body == NULL)
		return PROVIDER_NOMEM;
	for (i = 0;; i++) {
		if (attempt(conf, http, req, res, url, headers, body, &retry_after, &st) != ATTEMPT_RETRY)
			break;
		if (i >= conf->openai_max_retries || provider_backoff(req, i, retry_after) != 0)
			break;
	}
	if (st == PROVIDER_OK && res->output_tokens == 0 && res->text.len > 0)
		res->output_tokens = 1;
	free(body);
	explicit_bzero(auth, sizeof(auth));
	return st;
}
