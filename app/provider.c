/* provider: picks the provider for a call; backoff and the HTTP call shared by network providers. */
#include "config.h"

#include "circuit.h"
#include "conf.h"
#include "metrics.h"
#include "httpc.h"
#include "provider.h"
#include "retry.h"
#include "sse.h"
#include "trace.h"
#include "jsoncheck.h"

#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

void
provider_result_free(struct llm_result *r)
{
	if (r == NULL)
		return;
	buf_free(&r->text);
	provider_tool_calls_clear(r);
}

struct llm_tool_call *
provider_tool_call(struct llm_result *res, size_t index)
{
	struct llm_tool_call *calls;
	size_t n;

	if (index >= PROVIDER_TOOL_CALLS_MAX)
		return NULL;
	if (index < res->ntool_calls)
		return &res->tool_calls[index];
	n = index + 1;
	calls = realloc(res->tool_calls, n * sizeof(*calls));
	if (calls == NULL)
		return NULL;
	memset(calls + res->ntool_calls, 0, (n - res->ntool_calls) * sizeof(*calls));
	res->tool_calls = calls;
	res->ntool_calls = n;
	return &calls[index];
}

void
provider_tool_calls_clear(struct llm_result *res)
{
	size_t i;

	for (i = 0; i < res->ntool_calls; i++) {
		buf_free(&res->tool_calls[i].id);
		buf_free(&res->tool_calls[i].name);
		buf_free(&res->tool_calls[i].arguments);
	}
	free(res->tool_calls);
	res->tool_calls = NULL;
	res->ntool_calls = 0;
}

/* A buffer's text as a JSON string; "" when empty. */
static struct json_object *
buf_json(const struct buf *b)
{
	return json_object_new_string_len(b->data != NULL ? b->data : "", (int)b->len);
}

struct json_object *
provider_tool_calls_json(const struct llm_result *res, int *oom)
{
	struct json_object *list, *call, *fn;
	const struct llm_tool_call *tc;
	size_t i;

	*oom = 0;
	if (res->ntool_calls == 0)
		return NULL;
	if ((list = json_object_new_array()) == NULL)
		goto oom;
	for (i = 0; i < res->ntool_calls; i++) {
		tc = &res->tool_calls[i];
		if (tc->id.oom || tc->name.oom || tc->arguments.oom)
			goto oom;
		call = json_object_new_object();
		fn = json_object_new_object();
		if (call == NULL || fn == NULL || json_object_array_add(list, call) != 0) {
			json_object_put(call);
			json_object_put(fn);
			goto oom;
		}
		json_object_object_add(call, "id", buf_json(&tc->id));
		json_object_object_add(call, "type", json_object_new_string("function"));
		json_object_object_add(fn, "name", buf_json(&tc->name));
		json_object_object_add(fn, "arguments", tc->arguments.len > 0 ?
		    buf_json(&tc->arguments) : json_object_new_string("{}"));
		json_object_object_add(call, "function", fn);
	}
	return list;
oom:
	json_object_put(list);
	*oom = 1;
	return NULL;
}

long long
provider_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long
provider_time_left(const struct llm_request *req)
{
	if (req->deadline_ms <= 0)
		return 1LL << 40;
	return req->deadline_ms - provider_now_ms();
}

int
provider_sleep(const struct llm_request *req, long long ms)
{
	return retry_sleep(ms, req->cancelled, req->ctx);
}

int
provider_backoff(const struct llm_request *req, int attempt, long long retry_after_ms)
{
	return retry_backoff(attempt, retry_after_ms, provider_time_left(req), req->cancelled,
	    req->ctx);
}

/* --- the HTTP call shared by the network providers --- */

/* One attempt: the wire's view of the stream plus the SSE parser feeding it. */
struct http_attempt {
	struct provider_stream s;
	struct sse_parser sse;
	const struct provider_wire *w;
	const struct httpc_response *resp;   /* the answer being read: its content type */
	struct buf whole;      /* a plain JSON answer to the stream asked for (json) */
	int json;              /* 1: the answer is application/json, not a stream; 0: not yet known */
	int known;             /* whether the body's first bytes came (json decided) */
	long long done_ms;     /* monotonic: when the clean end came (0: not yet) */
	int ended;             /* the transfer was stopped after the clean end */
};

int
provider_stream_text(struct provider_stream *s, const char *text, size_t len)
{
	if (len == 0)
		return 0;
	buf_append(&s->res->text, text, len);
	s->res->streamed = 1;
	if (s->req->on_delta(s->req->ctx, text, len) != 0) {
		s->client_gone = 1;
		return -1;
	}
	return 0;
}

struct json_object *
provider_parse_json(const char *text, size_t len)
{
	return jsoncheck_parse(text, len, JSON_TOKENER_DEFAULT_DEPTH);
}

int
provider_base64(const char *s, size_t len)
{
	const char *end = s + len;
	size_t pad;

	if (len == 0 || len % 4 != 0)
		return 0;
	pad = end[-1] == '=' ? (end[-2] == '=' ? 2 : 1) : 0;
	for (end -= pad; s < end; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		    (*s >= '0' && *s <= '9') || *s == '+' || *s == '/'))
			return 0;
	return 1;
}

enum provider_image
provider_image_url(const char *url, size_t len, char media[PROVIDER_IMAGE_TYPE_MAX],
    size_t *data)
{
	static const char *const types[] = {"png", "jpeg", "jpg", "gif", "webp"};
	const char *p, *end = url + len, *comma;
	size_t i, tlen;

	if ((len > 7 && strncasecmp(url, "http://", 7) == 0) ||
	    (len > 8 && strncasecmp(url, "https://", 8) == 0)) {
		for (i = 0; i < len; i++)
			if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
				return PROVIDER_IMAGE_BAD;
		return PROVIDER_IMAGE_HTTP;
	}
	if (len < 11 || strncasecmp(url, "data:image/", 11) != 0)
		return PROVIDER_IMAGE_BAD;
	p = url + 11;
	if ((comma = memchr(p, ',', (size_t)(end - p))) == NULL)
		return PROVIDER_IMAGE_BAD;
	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		tlen = strlen(types[i]);
		if ((size_t)(comma - p) == tlen + 7 && strncasecmp(p, types[i], tlen) == 0 &&
		    strncasecmp(p + tlen, ";base64", 7) == 0)
			break;
	}
	if (i == sizeof(types) / sizeof(types[0]) ||
	    !provider_base64(comma + 1, (size_t)(end - comma - 1)))
		return PROVIDER_IMAGE_BAD;
	if (media != NULL)
		snprintf(media, PROVIDER_IMAGE_TYPE_MAX, "image/%s",
		    strcmp(types[i], "jpg") == 0 ? "jpeg" : types[i]);
	if (data != NULL)
		*data = (size_t)(comma + 1 - url);
	return PROVIDER_IMAGE_DATA;
}

int
provider_file_data(const char *s, size_t len, size_t *data)
{
	static const char prefix[] = "data:application/pdf;base64,";
	size_t n = sizeof(prefix) - 1;

	if (len <= n || strncasecmp(s, prefix, n) != 0 || !provider_base64(s + n, len - n))
		return 0;
	if (data != NULL)
		*data = n;
	return 1;
}

/* The kind of a non-text part's type, or PROVIDER_MEDIA_KINDS (text, or unknown). */
static enum provider_media
media_kind(const char *type)
{
	if (strcmp(type, "image_url") == 0)
		return PROVIDER_MEDIA_IMAGE;
	if (strcmp(type, "file") == 0)
		return PROVIDER_MEDIA_FILE;
	if (strcmp(type, "input_audio") == 0)
		return PROVIDER_MEDIA_AUDIO;
	return PROVIDER_MEDIA_KINDS;
}

int
provider_content_text(struct json_object *content, const char *sep, struct buf *out,
    size_t media[PROVIDER_MEDIA_KINDS])
{
	struct json_object *part, *v;
	const char *type;
	enum provider_media kind;
	size_t i, texts = 0;

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
		type = json_object_object_get_ex(part, "type", &v) &&
		    json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
		if (type != NULL && (kind = media_kind(type)) != PROVIDER_MEDIA_KINDS) {
			if (media != NULL)
				media[kind]++;
			continue;
		}
		if ((type != NULL && strcmp(type, "text") != 0) ||
		    !json_object_object_get_ex(part, "text", &v) ||
		    !json_object_is_type(v, json_type_string))
			return -1;
		if (texts++ > 0)
			buf_puts(out, sep);
		buf_append(out, json_object_get_string(v), (size_t)json_object_get_string_len(v));
	}
	return 0;
}

int
provider_url(char *out, size_t outlen, const char *base, const char *path)
{
	size_t blen = strlen(base), plen = strlen(path);

	while (blen > 0 && base[blen - 1] == '/')
		blen--;
	if (blen >= outlen || plen >= outlen - blen) {
		if (outlen > 0)
			out[0] = '\0';
		return -1;
	}
	memcpy(out, base, blen);
	memcpy(out + blen, path, plen + 1);
	return 0;
}

/* One event for the wire's handler; nothing after the clean end is read. */
static int
attempt_event(void *p, const char *event, const char *data, size_t len)
{
	struct http_attempt *a = p;

	if (a->s.done)
		return 0;
	if (a->w->on_event(&a->s, event, data, len) != 0)
		return 1;
	if (a->s.done)
		a->done_ms = provider_now_ms();
	return 0;
}

static int
attempt_data(void *p, const char *data, size_t len)
{
	struct http_attempt *a = p;
	size_t i;
	int rc;

	/*
	 * NOTE: after the clean end ([DONE], message_stop) the answer is whole.
	 * The transfer goes on to HTTP's last chunk, normally in the same read,
	 * so the connection is kept for the next call; an upstream that holds it
	 * back is cut PROVIDER_DONE_GRACE_MS later (attempt_cancelled) instead
	 * of making the client wait for the call's timeout.
	 */
	if (a->s.done)
		return 0;
	/*
	 * NOTE: some compatible servers ignore `stream` (with tools, say) and
	 * answer plain JSON: it is kept whole, read as a whole answer and
	 * streamed out at the end (http_attempt). Told by its content type and
	 * its first byte, '{': an event stream mislabelled application/json
	 * still reads as one.
	 */
	for (i = 0; !a->known && i < len; i++) {
		if (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n')
			continue;
		a->known = 1;
		a->json = data[i] == '{' &&
		    strncasecmp(a->resp->content_type, "application/json", 16) == 0;
	}
	if (a->json) {
		if (a->whole.len + len > PROVIDER_RESPONSE_MAX || (buf_append(&a->whole, data, len),
		    a->whole.oom)) {
			snprintf(a->s.why, sizeof(a->s.why), a->whole.oom ? "out of memory" :
			    "the upstream's JSON answer to a stream is larger than allowed");
			a->s.failed = 1;
			a->s.error_kind = PROVIDER_ERR_FINAL;   /* as a whole answer too large */
			return 1;
		}
		return 0;
	}
	rc = sse_feed(&a->sse, data, len);
	if (rc == -1 && !a->s.failed && !a->s.client_gone) {
		snprintf(a->s.why, sizeof(a->s.why),
		    "the upstream stream sent a line or an event larger than allowed");
		a->s.failed = 1;
	}
	return rc != 0 ? 1 : 0;
}

/*
 * What an upstream's HTTP status says of trying again: 429, 408 and 5xx
 * (Anthropic's 529 overloaded too) may pass; 400, 404, 413 and 422 refuse
 * the request itself (a bad tool schema, an unknown model), the caller's to
 * fix; the rest (a wrong key, no credit) will not change.
 */
static enum provider_error_kind
status_kind(long long status)
{
	if (status == 429 || status == 408 || status >= 500)
		return PROVIDER_ERR_RETRYABLE;
	return status == 400 || status == 404 || status == 413 || status == 422 ?
	    PROVIDER_ERR_REJECTED : PROVIDER_ERR_FINAL;
}

/* The kind an error's type or code names; *known is 0 for a name not listed. */
static enum provider_error_kind
name_kind(const char *name, int *known)
{
	static const char *const retryable[] = {"overloaded_error", "api_error", "rate_limit_error",
		"timeout_error", "server_error", "requests", "tokens", "rate_limit_exceeded", NULL};
	static const char *const rejected[] = {"invalid_request_error", "not_found_error",
		"request_too_large", NULL};
	size_t i;

	*known = 1;
	for (i = 0; retryable[i] != NULL; i++)
		if (strcmp(name, retryable[i]) == 0)
			return PROVIDER_ERR_RETRYABLE;
	for (i = 0; rejected[i] != NULL; i++)
		if (strcmp(name, rejected[i]) == 0)
			return PROVIDER_ERR_REJECTED;
	*known = 0;
	return PROVIDER_ERR_FINAL;
}

enum provider_error_kind
provider_error_kind(struct json_object *err)
{
	struct json_object *v;
	enum provider_error_kind k;
	const char *type = NULL;
	int known;

	if (err == NULL || !json_object_is_type(err, json_type_object))
		return PROVIDER_ERR_RETRYABLE;
	if (json_object_object_get_ex(err, "type", &v) && json_object_is_type(v, json_type_string)) {
		type = json_object_get_string(v);
		if ((k = name_kind(type, &known), known))
			return k;
	}
	/*
	 * NOTE: a type not listed does not decide before the code: vLLM and
	 * SGLang name their errors after Python classes ("BadRequestError")
	 * and give the HTTP status as the code (400: the request was refused).
	 */
	if (json_object_object_get_ex(err, "code", &v) && json_object_is_type(v, json_type_int))
		return status_kind(json_object_get_int64(v));
	if (json_object_object_get_ex(err, "code", &v) && json_object_is_type(v, json_type_string)) {
		k = name_kind(json_object_get_string(v), &known);
		return known ? k : PROVIDER_ERR_FINAL;
	}
	return type != NULL ? PROVIDER_ERR_FINAL : PROVIDER_ERR_RETRYABLE;
}

static int
attempt_cancelled(void *p)
{
	struct http_attempt *a = p;

	if (a->s.done && provider_now_ms() - a->done_ms >= PROVIDER_DONE_GRACE_MS) {
		a->ended = 1;
		return 1;
	}
	return a->s.req->cancelled != NULL && a->s.req->cancelled(a->s.req->ctx);
}

/* The upstream's reason for a non-2xx answer, one short line. */
static void
error_reason(const struct provider_wire *w, const struct httpc_response *r, char *out,
    size_t outlen)
{
	if (w->error_text(r->body.data != NULL ? r->body.data : "", r->body.len, out, outlen) == 0)
		return;
	if (strncasecmp(r->content_type, "text/html", 9) == 0)
		snprintf(out, outlen, "an HTML error page");
	else
		snprintf(out, outlen, "no error message");
}

/* One attempt: fills *st and says whether another attempt may help. */
static enum provider_attempt
http_attempt(struct httpc *http, const struct provider_wire *w, const struct provider_call *call,
    const struct llm_request *req, struct llm_result *res, long long *retry_after_ms,
    enum provider_status *st)
{
	struct httpc_request hr;
	struct httpc_response r;
	struct http_attempt a;
	enum httpc_result hres;
	long long left = provider_time_left(req), total = call->timeout_s * 1000;
	char err[160], msg[180];
	enum provider_attempt next = ATTEMPT_DONE;

	memset(&a, 0, sizeof(a));
	a.s.req = req;
	a.s.res = res;
	a.w = w;
	a.resp = &r;
	sse_init(&a.sse, attempt_event, &a);
	memset(&hr, 0, sizeof(hr));
	hr.method = "POST";
	hr.url = call->url;
	hr.headers = call->headers;
	hr.body = call->body;
	hr.body_len = strlen(call->body);
	hr.connect_timeout_ms = (long)call->connect_timeout_ms;
	hr.first_byte_timeout_ms = (long)call->first_token_timeout_ms;
	hr.total_timeout_ms = (long)(left < total ? (left > 1 ? left : 1) : total);
	hr.max_bytes = req->on_delta != NULL ? PROVIDER_STREAM_MAX : PROVIDER_RESPONSE_MAX;
	hr.on_data = req->on_delta != NULL ? attempt_data : NULL;
	hr.cancelled = attempt_cancelled;
	hr.ctx = &a;
	res->attempts++;
	*retry_after_ms = -1;

	hres = httpc_perform(http, &hr, &r, err, sizeof(err));
	if (a.ended && hres == HTTPC_CANCELLED)
		hres = HTTPC_OK;   /* stopped after the clean end: the answer is whole */
	if (a.s.client_gone || hres == HTTPC_CANCELLED) {
		*st = PROVIDER_CANCELLED;
		goto out;
	}
	if (a.s.failed) {
		snprintf(res->error, sizeof(res->error), "%s", a.s.why);
		*st = PROVIDER_ERROR;
		/* An error event that says the request was refused is not retried. */
		if (!res->streamed && a.s.error_kind == PROVIDER_ERR_RETRYABLE)
			next = ATTEMPT_RETRY;
		else if (!res->streamed && a.s.error_kind == PROVIDER_ERR_REJECTED)
			*st = PROVIDER_REJECTED;
		goto out;
	}
	/*
	 * NOTE: the stream's clean end ([DONE], message_stop) came whole: a
	 * connection that then broke or timed out before HTTP's last chunk loses
	 * nothing of the answer.
	 */
	if (a.s.done && (hres == HTTPC_BROKEN || hres == HTTPC_TIMEOUT))
		hres = HTTPC_OK;
	if (hres != HTTPC_OK) {
		snprintf(res->error, sizeof(res->error), "%s: %s", w->name, err);
		*st = hres == HTTPC_TIMEOUT || hres == HTTPC_FIRST_BYTE_TIMEOUT ? PROVIDER_TIMEOUT :
		    hres == HTTPC_NOMEM ? PROVIDER_NOMEM : PROVIDER_ERROR;
		if (hres != HTTPC_TOO_LARGE && hres != HTTPC_NOMEM && !res->streamed)
			next = ATTEMPT_RETRY;
		goto out;
	}
	if (r.status < 200 || r.status > 299) {
		error_reason(w, &r, msg, sizeof(msg));
		snprintf(res->error, sizeof(res->error), "%s answered %ld: %s", w->name, r.status, msg);
		res->last_status = r.status;
		*st = PROVIDER_ERROR;
		*retry_after_ms = r.retry_after_ms;
		if (status_kind(r.status) == PROVIDER_ERR_RETRYABLE)
			next = ATTEMPT_RETRY;
		else if (status_kind(r.status) == PROVIDER_ERR_REJECTED)
			*st = PROVIDER_REJECTED;   /* the caller's to fix, not the upstream's failure */
		goto out;
	}
	if (req->on_delta == NULL) {
		*st = w->read_whole(r.body.data != NULL ? r.body.data : "", r.body.len, res);
		if (*st == PROVIDER_OK && res->text.oom)
			*st = PROVIDER_NOMEM;
		goto out;
	}
	if (a.json) {
		/* A whole answer to the stream asked for: its text goes out as one delta. */
		*st = w->read_whole(a.whole.data != NULL ? a.whole.data : "", a.whole.len, res);
		if (*st == PROVIDER_OK && res->text.oom)
			*st = PROVIDER_NOMEM;
		if (*st == PROVIDER_OK && res->text.len > 0) {
			res->streamed = 1;
			if (req->on_delta(req->ctx, res->text.data, res->text.len) != 0)
				*st = PROVIDER_CANCELLED;
		}
		goto out;
	}
	if (!a.s.done) {
		snprintf(res->error, sizeof(res->error), "the upstream stream ended before %s",
		    w->stream_end);
		*st = PROVIDER_ERROR;
		next = res->streamed ? ATTEMPT_DONE : ATTEMPT_RETRY;
		goto out;
	}
	*st = res->text.oom ? PROVIDER_NOMEM : PROVIDER_OK;
out:
	sse_free(&a.sse);
	buf_free(&a.whole);
	httpc_response_free(&r);
	if (*st != PROVIDER_OK && next == ATTEMPT_RETRY && !res->streamed) {
		/* Nothing reached the client: the next attempt starts clean. */
		buf_reset(&res->text, 0);
		provider_tool_calls_clear(res);
		res->finish_reason[0] = '\0';
		res->refusal = 0;
		res->input_tokens = res->output_tokens = 0;
	}
	return next;
}

enum provider_status
provider_http_complete(struct httpc *http, const struct provider_wire *w,
    const struct provider_call *call, const struct llm_request *req, struct llm_result *res)
{
	enum provider_status st = PROVIDER_ERROR;
	long long retry_after;
	int i;

	res->provider = w->name;
	for (i = 0;; i++) {
		if (http_attempt(http, w, call, req, res, &retry_after, &st) != ATTEMPT_RETRY)
			break;
		if (i >= call->max_retries)
			break;
		if (provider_backoff(req, i, retry_after) != 0) {
			if (req->cancelled != NULL && req->cancelled(req->ctx))
				st = PROVIDER_CANCELLED;
			break;
		}
	}
	if (st == PROVIDER_OK && res->output_tokens == 0 && (res->text.len > 0 || res->ntool_calls))
		res->output_tokens = 1;
	return st;
}

/* Breaker settings of a provider: failures that open it, milliseconds before a probe. */
static void
breaker_settings(const struct conf *conf, const char *name, int *threshold, long long *reset_ms)
{
	if (strcmp(name, "openai") == 0) {
		*threshold = (int)conf->openai_cb_failure_threshold;
		*reset_ms = conf->openai_cb_reset_timeout * 1000;
	} else if (strcmp(name, "anthropic") == 0) {
		*threshold = (int)conf->anthropic_cb_failure_threshold;
		*reset_ms = conf->anthropic_cb_reset_timeout * 1000;
	} else {
		*threshold = 1000000;   /* the offline provider does not fail */
		*reset_ms = 1000;
	}
}

static struct circuit *
breaker(struct circuits *circuits, const char *name)
{
	char key[CIRCUIT_NAME_MAX + 1];
	size_t n;

	_Static_assert(CIRCUIT_NAME_MAX >= 9 + 40, "a provider's circuit name fits");
	if (circuits == NULL)
		return NULL;
	/* "provider:%.40s", without printf: every provider call asks. */
	memcpy(key, "provider:", 9);
	n = strnlen(name, 40);
	memcpy(key + 9, name, n);
	key[9 + n] = '\0';
	return circuits_get(circuits, key);
}

const char *
provider_circuit_state(const struct conf *conf, struct circuits *circuits, const char *name)
{
	struct circuit *c = breaker(circuits, name);
	int threshold;
	long long reset_ms;

	if (c == NULL)
		return "closed";
	breaker_settings(conf, name, &threshold, &reset_ms);
	switch (circuit_state_now(c, circuit_now_ms(), reset_ms)) {
	case CIRCUIT_OPEN: return "open";
	case CIRCUIT_HALF_OPEN: return "half_open";
	default: return "closed";
	}
}

/*
 * What provider `name` needs made before its call: Anthropic's body, whose
 * translation may refuse (PROVIDER_REJECTED, or PROVIDER_UNSUPPORTED for what
 * the Messages API has no form for; `err` says why). *body NULL for the others.
 */
static enum provider_status
prepare(const struct conf *conf, const char *name, const struct llm_request *req, char **body,
    char *err, size_t errlen)
{
	*body = NULL;
	if (strcmp(name, "anthropic") != 0)
		return PROVIDER_OK;
	return provider_anthropic_body(req->model != NULL ? req->model : conf->anthropic_model,
	    req, body, err, errlen);
}

const char *
provider_default_model(const struct conf *conf, const char *name)
{
	return strcmp(name, "openai") == 0 ? conf->openai_model :
	    strcmp(name, "anthropic") == 0 ? conf->anthropic_model : "offline";
}

/*
 * The model to ask provider `name`, number `i` of the chain, for a request
 * that named `model` (NULL: none, the provider's default). A client names a
 * model of the provider it talks to (the OpenAI SDK always does); a fallback
 * of another vendor does not know it and would refuse the call (a 404, the
 * end of the chain), so a fallback gets its own default unless the model is
 * that default.
 */
static const char *
fallback_model(const struct conf *conf, const char *name, size_t i, const char *model)
{
	if (i == 0 || model == NULL || strcmp(model, provider_default_model(conf, name)) == 0)
		return model;
	return NULL;
}

/*
 * A request that names the default model of a fallback (GET /v1/models lists
 * it as that provider's) goes to that provider first, the others after it in
 * their order.
 */
static void
lead(const struct conf *conf, char chain[PROVIDER_CHAIN_MAX][PROVIDER_NAME_MAX], size_t n,
    const char *model)
{
	char first[PROVIDER_NAME_MAX];
	size_t j;

	if (model == NULL || strcmp(model, provider_default_model(conf, chain[0])) == 0)
		return;
	for (j = 1; j < n && strcmp(model, provider_default_model(conf, chain[j])) != 0; j++)
		;
	if (j == n)
		return;
	memcpy(first, chain[j], sizeof(first));
	memmove(chain[1], chain[0], j * sizeof(chain[0]));
	memcpy(chain[0], first, sizeof(first));
}

/* One provider's call; `body` is what prepare made (taken). */
static enum provider_status
call_one(const struct conf *conf, struct httpc *http, const char *name,
    const struct llm_request *req, char *body, struct llm_result *res)
{
	if (strcmp(name, "openai") == 0)
		return provider_openai_complete(conf, http, req, res);
	if (strcmp(name, "anthropic") == 0)
		return provider_anthropic_complete(conf, http, req, body, res);
	if (strcmp(name, "offline") == 0)
		return provider_offline_complete(conf, req, res);
	res->provider = "unknown";
	snprintf(res->error, sizeof(res->error), "provider %s is not available in this build",
	    name);
	return PROVIDER_ERROR;
}

/* Appends `text` to the error list (separated by "; " unless it is a suffix), truncating. */
static void
append_error(char *errors, size_t size, const char *text)
{
	size_t len = strlen(errors), n;

	if (len > 0 && text[0] != ':' && len + 2 < size) {
		memcpy(errors + len, "; ", 3);
		len += 2;
	}
	n = strlen(text);
	if (n > size - 1 - len)
		n = size - 1 - len;
	memcpy(errors + len, text, n);
	errors[len + n] = '\0';
}

/* Watches a call's first streamed token (for the time-to-first-token histogram). */
struct tap {
	const struct llm_request *orig;
	long long first_ms;
};

static int
tap_delta(void *p, const char *text, size_t len)
{
	struct tap *t = p;

	if (t->first_ms == 0)
		t->first_ms = provider_now_ms();
	return t->orig->on_delta(t->orig->ctx, text, len);
}

static int
tap_cancelled(void *p)
{
	struct tap *t = p;

	return t->orig->cancelled != NULL && t->orig->cancelled(t->orig->ctx);
}

/* The model as a label value: a configured one, else "other" (labels stay bounded). */
static void
model_label(const struct conf *conf, const char *model, char *out, size_t outlen)
{
	const char *p = conf->models, *comma;
	size_t len, n = strlen(model);
	int known = strcmp(model, conf->openai_model) == 0 ||
	    strcmp(model, conf->anthropic_model) == 0 || strcmp(model, "offline") == 0;

	for (; !known && p != NULL && *p != '\0'; p = comma ? comma + 1 : NULL) {
		comma = strchr(p, ',');
		len = comma ? (size_t)(comma - p) : strlen(p);
		known = len == n && memcmp(p, model, n) == 0;
	}
	metrics_label_value(known ? model : "other", out, outlen);
}

/*
 * The series count_call updates for one provider and model label, kept by
 * each thread: six label texts built and six series looked up by them (a
 * hash and two string compares each) were about 5,000 instructions of a
 * completion. A slot is looked up on its first use, so the same series exist
 * as when each call looked them up; a NULL slot (table full, or no metrics)
 * is looked up again next time. Valid while the metrics epoch stays.
 */
enum { OUTCOME_OK, OUTCOME_TIMEOUT, OUTCOME_RATE_LIMITED, OUTCOME_ERROR, OUTCOMES };

struct llm_series {
	unsigned long epoch;
	char prov[32], model[96];   /* label values, escaped */
	struct metrics_series *requests[OUTCOMES], *duration, *ttft, *tokens_in, *tokens_out;
	struct metrics_series *retries, *up;
};

static _Thread_local struct llm_series llm_series;

/* This thread's series for label values prov and model, emptied when they or the epoch changed. */
static struct llm_series *
llm_series_for(const char *prov, const char *model)
{
	struct llm_series *c = &llm_series;
	unsigned long epoch = metrics_epoch();

	if (c->epoch != epoch || strcmp(c->prov, prov) != 0 || strcmp(c->model, model) != 0) {
		memset(c, 0, sizeof(*c));
		c->epoch = epoch;
		snprintf(c->prov, sizeof(c->prov), "%s", prov);
		snprintf(c->model, sizeof(c->model), "%s", model);
	}
	return c;
}

/*
 * The series *slot of metric `name` (a counter, histogram or gauge, by
 * `get`), looked up on first use with labels provider, model (unless
 * with_model is 0) and k=v (when k is not NULL).
 */
static struct metrics_series *
llm_slot(struct metrics_series **slot, struct metrics_series *(*get)(const char *, const char *),
    const char *name, const struct llm_series *c, int with_model, const char *k, const char *v)
{
	char labels[METRICS_LABELS_MAX + 1];

	if (*slot != NULL)
		return *slot;
	if (!with_model)
		metrics_labels(labels, sizeof(labels), "provider", c->prov, (char *)NULL);
	else if (k == NULL)
		metrics_labels(labels, sizeof(labels), "provider", c->prov, "model", c->model,
		    (char *)NULL);
	else
		metrics_labels(labels, sizeof(labels), "provider", c->prov, "model", c->model, k, v,
		    (char *)NULL);
	*slot = get(name, labels);
	return *slot;
}

/* Counts one provider call in the metrics of BRIEF section 13. */
static void
count_call(const struct conf *conf, const char *name, enum provider_status st,
    const struct llm_result *res, long long start_ms, const struct tap *tap)
{
	static const char *const outcomes[OUTCOMES] = {"ok", "timeout", "rate_limited", "error"};
	char model[96], prov[32];
	int o = OUTCOME_ERROR;
	double seconds = (double)(provider_now_ms() - start_ms) / 1000.0;
	struct llm_series *c;

	metrics_label_value(name, prov, sizeof(prov));
	model_label(conf, res->model[0] ? res->model : "other", model, sizeof(model));
	c = llm_series_for(prov, model);
	if (st == PROVIDER_OK)
		o = OUTCOME_OK;
	else if (st == PROVIDER_TIMEOUT)
		o = OUTCOME_TIMEOUT;
	else if (res->last_status == 429)
		o = OUTCOME_RATE_LIMITED;
	metrics_series_add(llm_slot(&c->requests[o], metrics_counter, "valerie_llm_requests_total",
	    c, 1, "outcome", outcomes[o]), 1);
	metrics_series_observe(llm_slot(&c->duration, metrics_histogram,
	    "valerie_llm_request_duration_seconds", c, 1, NULL, NULL), seconds);
	if (tap->first_ms > 0)
		metrics_series_observe(llm_slot(&c->ttft, metrics_histogram,
		    "valerie_llm_time_to_first_token_seconds", c, 1, NULL, NULL),
		    (double)(tap->first_ms - start_ms) / 1000.0);
	if (st == PROVIDER_OK) {
		metrics_series_add(llm_slot(&c->tokens_in, metrics_counter, "valerie_llm_tokens_total",
		    c, 1, "direction", "input"), (double)res->input_tokens);
		metrics_series_add(llm_slot(&c->tokens_out, metrics_counter,
		    "valerie_llm_tokens_total", c, 1, "direction", "output"),
		    (double)res->output_tokens);
	}
	if (res->attempts > 1)
		metrics_series_add(llm_slot(&c->retries, metrics_counter, "valerie_llm_retries_total",
		    c, 0, NULL, NULL), res->attempts - 1);
	metrics_series_set(llm_slot(&c->up, metrics_gauge, "valerie_provider_up", c, 0, NULL, NULL),
	    st == PROVIDER_OK || st == PROVIDER_REJECTED ? 1 : 0);
}

/* One provider call as a generation span of the turn's trace. */
static void
trace_call(const struct llm_request *req, const char *name, enum provider_status st,
    const struct llm_result *res, long long start_ms, long long start_ns, const struct tap *tap)
{
	struct trace_generation g;

	if (req->trace == NULL || !req->trace->on)
		return;
	memset(&g, 0, sizeof(g));
	g.provider = name;
	g.model = res->model[0] != '\0' ? res->model : name;
	g.start_ns = start_ns;
	/* NOTE: the end read from the same clock as the start: a ms-derived end could pass the turn's. */
	g.end_ns = trace_now_ns();
	if (tap->first_ms > 0)
		g.first_token_ns = start_ns + (tap->first_ms - start_ms) * 1000000LL;
	g.input_tokens = res->input_tokens;
	g.output_tokens = res->output_tokens;
	g.attempts = res->attempts;
	g.error = st == PROVIDER_OK ? NULL : st == PROVIDER_CANCELLED ? "the client went away" :
	    res->error[0] != '\0' ? res->error : "failed";
	g.input = req->messages;
	g.output = res->text.data != NULL ? res->text.data : "";
	g.output_len = res->text.len;
	trace_generation(req->trace, &g);
}

static void
count_circuit_open(const struct conf *conf, const char *name)
{
	char labels[METRICS_LABELS_MAX + 1], model[96], prov[32];

	metrics_label_value(name, prov, sizeof(prov));
	model_label(conf, provider_default_model(conf, name), model, sizeof(model));
	metrics_labels(labels, sizeof(labels), "provider", prov, "model", model,
	    "outcome", "circuit_open", (char *)NULL);
	metrics_counter_add("valerie_llm_requests_total", labels, 1);
}

size_t
provider_chain(const struct conf *conf, char chain[PROVIDER_CHAIN_MAX][PROVIDER_NAME_MAX])
{
	const char *p = conf->llm_fallbacks, *comma;
	size_t n = 0, j, len;
	int dup;

	buf_strcpy(chain[n++], PROVIDER_NAME_MAX, conf->llm_provider);
	while (p != NULL && *p != '\0' && n < PROVIDER_CHAIN_MAX) {
		comma = strchr(p, ',');
		len = comma ? (size_t)(comma - p) : strlen(p);
		snprintf(chain[n], PROVIDER_NAME_MAX, "%.*s", (int)len, p);
		for (dup = 0, j = 0; j < n; j++)
			dup |= strcmp(chain[j], chain[n]) == 0;
		if (!dup)
			n++;
		p = comma ? comma + 1 : NULL;
	}
	return n;
}

void
provider_metrics_init(const struct conf *conf)
{
	static const char *const outcomes[] = {"ok", "error", "timeout", "rate_limited",
		"circuit_open"};
	char chain[PROVIDER_CHAIN_MAX][PROVIDER_NAME_MAX], labels[METRICS_LABELS_MAX + 1];
	char model[96], prov[32];
	size_t n = provider_chain(conf, chain), i, o;

	for (i = 0; i < n; i++) {
		metrics_label_value(chain[i], prov, sizeof(prov));
		model_label(conf, provider_default_model(conf, chain[i]), model, sizeof(model));
		for (o = 0; o < sizeof(outcomes) / sizeof(outcomes[0]); o++) {
			metrics_labels(labels, sizeof(labels), "provider", prov, "model", model,
			    "outcome", outcomes[o], (char *)NULL);
			metrics_counter_add("valerie_llm_requests_total", labels, 0);
		}
		metrics_labels(labels, sizeof(labels), "provider", prov, "model", model,
		    "direction", "input", (char *)NULL);
		metrics_counter_add("valerie_llm_tokens_total", labels, 0);
		metrics_labels(labels, sizeof(labels), "provider", prov, "model", model,
		    "direction", "output", (char *)NULL);
		metrics_counter_add("valerie_llm_tokens_total", labels, 0);
		metrics_labels(labels, sizeof(labels), "provider", prov, (char *)NULL);
		metrics_counter_add("valerie_llm_retries_total", labels, 0);
		metrics_counter_add("valerie_llm_fallbacks_total", labels, 0);
		/*
		 * The last call's outcome is the pool's, and its circuit outlives a
		 * restart (valerie.circuits): a provider still configured keeps it.
		 * Never created here: a fallback never called is not "down".
		 */
		metrics_gauge_keep("valerie_provider_up", labels);
	}
}

void
provider_metrics_scrape(const struct conf *conf, struct circuits *circuits)
{
	char chain[PROVIDER_CHAIN_MAX][PROVIDER_NAME_MAX], labels[METRICS_LABELS_MAX + 1], prov[32];
	size_t n = provider_chain(conf, chain), i;
	const char *state;

	for (i = 0; i < n; i++) {
		metrics_label_value(chain[i], prov, sizeof(prov));
		state = provider_circuit_state(conf, circuits, chain[i]);
		snprintf(labels, sizeof(labels), "target=\"provider:%s\"", prov);
		metrics_gauge_set("valerie_circuit_state", labels,
		    strcmp(state, "open") == 0 ? 2 : strcmp(state, "half_open") == 0 ? 1 : 0);
	}
}

enum provider_status
provider_complete(const struct conf *conf, struct httpc *http, struct circuits *circuits,
    const struct llm_request *req, struct llm_result *res)
{
	char chain[PROVIDER_CHAIN_MAX][PROVIDER_NAME_MAX], errors[sizeof(res->error)] = "";
	enum provider_status st = PROVIDER_UNAVAILABLE, ps;
	struct llm_request tapped = *req;
	struct tap tap;
	struct circuit *c;
	long long reset_ms, start, start_ns;
	size_t n = provider_chain(conf, chain), i;
	int threshold, tried = 0, attempts = 0, late = 0, skipped_open = 0, refused = 0;
	char labels[METRICS_LABELS_MAX + 1], prov[32], why[sizeof(res->error)];
	char *body;

	lead(conf, chain, n, req->model);
	tap.orig = req;
	tapped.cancelled = tap_cancelled;
	tapped.ctx = &tap;
	if (req->on_delta != NULL)
		tapped.on_delta = tap_delta;
	for (i = 0; i < n; i++) {
		/*
		 * NOTE: the turn's time is up (the last provider used it): a network
		 * fallback would get a call of a millisecond, fail, and take a mark
		 * on its circuit for another's slowness. The offline one costs no time.
		 */
		if (strcmp(chain[i], "offline") != 0 &&
		    provider_time_left(req) < PROVIDER_CALL_MIN_MS) {
			append_error(errors, sizeof(errors), chain[i]);
			append_error(errors, sizeof(errors), ": not tried, the turn's time is up");
			late = 1;
			continue;
		}
		/*
		 * The offline provider is a stand-in for providers that failed, not
		 * for one that has no form for the request: with nothing failed,
		 * the client hears why instead of a non-answer.
		 */
		if (strcmp(chain[i], "offline") == 0 && i > 0 && refused > 0 && tried == 0 &&
		    skipped_open == 0 && !late)
			continue;
		/*
		 * A provider that has no form for the request (Anthropic and audio)
		 * is passed over before its circuit is asked: no call, no mark, no
		 * probe taken; the next one may serve it. A request it cannot
		 * express at all is the caller's to change: 400, as any would say.
		 */
		tapped.model = fallback_model(conf, chain[i], i, req->model);
		ps = prepare(conf, chain[i], &tapped, &body, why, sizeof(why));
		if (ps == PROVIDER_NOMEM)
			return ps;
		if (ps == PROVIDER_UNSUPPORTED) {
			append_error(errors, sizeof(errors), why);
			refused++;
			continue;
		}
		if (ps == PROVIDER_REJECTED) {
			res->provider = "anthropic";
			res->attempts = attempts;
			memcpy(res->error, why, sizeof(res->error));
			return ps;
		}
		c = breaker(circuits, chain[i]);
		breaker_settings(conf, chain[i], &threshold, &reset_ms);
		if (c != NULL && !circuit_allow(c, circuit_now_ms(), reset_ms)) {
			free(body);
			append_error(errors, sizeof(errors), chain[i]);
			append_error(errors, sizeof(errors), ": circuit open");
			count_circuit_open(conf, chain[i]);
			skipped_open++;
			continue;
		}
		if (tried++ > 0) {
			/* A fallback: start its answer clean. */
			res->fallbacks++;
			buf_reset(&res->text, 0);
			provider_tool_calls_clear(res);
			res->finish_reason[0] = '\0';
			res->refusal = 0;
			res->input_tokens = res->output_tokens = 0;
		}
		tap.first_ms = 0;
		res->attempts = 0;
		res->last_status = 0;
		res->model[0] = '\0';
		start = provider_now_ms();
		start_ns = trace_now_ns();
		st = call_one(conf, http, chain[i], &tapped, body, res);
		res->provider_ms += provider_now_ms() - start;
		trace_call(req, chain[i], st, res, start, start_ns, &tap);
		attempts += res->attempts;
		if (st != PROVIDER_CANCELLED && st != PROVIDER_NOMEM)
			count_call(conf, chain[i], st, res, start, &tap);
		if (st == PROVIDER_OK) {
			if (res->finish_reason[0] == '\0' || (res->ntool_calls > 0 &&
			    strcmp(res->finish_reason, "stop") == 0))
				snprintf(res->finish_reason, sizeof(res->finish_reason), "%s",
				    res->ntool_calls > 0 ? "tool_calls" : "stop");
			if (c != NULL)
				circuit_success(c);
			/*
			 * Answered by another than the provider the request went to
			 * first: after its failure, its open circuit, or its passing
			 * over. (Counting only calls after a failed one left the panel
			 * flat while an open circuit sent every turn to the fallback.)
			 */
			if (i > 0) {
				metrics_label_value(chain[i], prov, sizeof(prov));
				metrics_labels(labels, sizeof(labels), "provider", prov, (char *)NULL);
				metrics_counter_add("valerie_llm_fallbacks_total", labels, 1);
			}
			res->attempts = attempts;
			return st;
		}
		if (st == PROVIDER_CANCELLED || st == PROVIDER_NOMEM)
			return st;
		if (st == PROVIDER_REJECTED) {
			/* The upstream works; another would refuse the same request. */
			if (c != NULL)
				circuit_success(c);
			res->attempts = attempts;
			return st;
		}
		if (c != NULL)
			circuit_failure(c, circuit_now_ms(), threshold);
		append_error(errors, sizeof(errors), res->error);
		if (res->streamed)
			return st;   /* text already reached the client: no fallback */
	}
	res->attempts = attempts;
	if (tried == 0) {
		res->provider = conf->llm_provider;
		if (refused > 0 && skipped_open == 0 && !late) {
			/* No provider can express it: the caller's to change. */
			memcpy(res->error, errors, sizeof(res->error));
			return PROVIDER_REJECTED;
		}
		if (late) {
			snprintf(res->error, sizeof(res->error), "the turn's time ran out (%.200s)",
			    errors);
			return PROVIDER_TIMEOUT;
		}
		snprintf(res->error, sizeof(res->error), "no provider available (%.200s)", errors);
		return PROVIDER_UNAVAILABLE;
	}
	memcpy(res->error, errors, sizeof(res->error));
	return st;
}
