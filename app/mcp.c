/* mcp: a Model Context Protocol client over Streamable HTTP (protocol 2025-06-18 and 2025-11-25). */
#include "config.h"

#include "mcp.h"

#include "httpc.h"
#include "sse.h"
#include "jsoncheck.h"
#include "vtime.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MCP_JSON_DEPTH 64            /* nesting accepted in an answer */
#define MCP_CONNECT_TIMEOUT_MS 10000 /* at most; never more than the call's own timeout */

struct mcp_client {
	char *url;
	size_t max_bytes;
	pthread_mutex_t lock;        /* the session fields below */
	pthread_mutex_t init_lock;   /* one initialize at a time */
	int ready;                   /* initialized: the session may be used */
	unsigned long generation;    /* bumped by each initialize */
	char session[MCP_SESSION_ID_MAX + 1];
	char version[16];
	unsigned long init_ended;    /* initializes that ended, and how the last failed: */
	enum mcp_status init_status;
	long long init_budget_ms;    /* the time it had */
	struct mcp_error init_err;
	atomic_llong next_id;
	atomic_int list_changed;
};

/* The session a request is sent with (a copy: other threads may replace it meanwhile). */
struct snapshot {
	unsigned long generation;
	char session[MCP_SESSION_ID_MAX + 1];
	char version[16];
};

/* One HTTP exchange: the answer as it arrives. */
struct exchange {
	const struct mcp_opts *o;
	const struct mcp_client *c;
	const struct snapshot *s;    /* the session the request went with */
	struct httpc_response *resp;
	struct mcp_reader r;
	char session[MCP_SESSION_ID_MAX + 1];
	int session_bad;
	long long end_ms;            /* CLOCK_MONOTONIC: the exchange's time is up */
	struct httpc *side;          /* replies to the server's requests; made when needed */
	size_t replied;              /* r.replies sent so far */
};

struct mcp_client *
mcp_client_new(const char *url, size_t max_bytes)
{
	struct mcp_client *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->url = strdup(url);
	if (c->url == NULL) {
		free(c);
		return NULL;
	}
	c->max_bytes = max_bytes > 0 ? max_bytes : MCP_RESPONSE_MAX;
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->init_lock, NULL);
	atomic_init(&c->next_id, 1);
	atomic_init(&c->list_changed, 0);
	return c;
}

void
mcp_client_free(struct mcp_client *c)
{
	if (c == NULL)
		return;
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->init_lock);
	free(c->url);
	free(c);
}

int
mcp_take_list_changed(struct mcp_client *c)
{
	return atomic_exchange(&c->list_changed, 0);
}

void
mcp_session_info(struct mcp_client *c, char *version, size_t vlen, char *session, size_t slen)
{
	pthread_mutex_lock(&c->lock);
	snprintf(version, vlen, "%s", c->ready ? c->version : "");
	snprintf(session, slen, "%s", c->ready ? c->session : "");
	pthread_mutex_unlock(&c->lock);
}

const char *
mcp_status_text(enum mcp_status s)
{
	switch (s) {
	case MCP_OK: return "ok";
	case MCP_UNREACHABLE: return "unreachable";
	case MCP_TIMEOUT: return "timeout";
	case MCP_CANCELLED: return "cancelled";
	case MCP_HTTP: return "http error";
	case MCP_PROTOCOL: return "protocol error";
	case MCP_RPC: return "json-rpc error";
	case MCP_TOO_LARGE: return "answer too large";
	case MCP_BROKEN: return "connection broken";
	case MCP_NOMEM: return "out of memory";
	}
	return "unknown";
}

struct json_object *
mcp_json_parse(const char *text, size_t len)
{
	return jsoncheck_parse(text, len, MCP_JSON_DEPTH);
}

/* Whether JSON-RPC id `id` is `want` (servers echo the number; a string of it is accepted). */
static int
id_matches(struct json_object *id, long long want)
{
	char text[32];

	if (json_object_is_type(id, json_type_int))
		return json_object_get_int64(id) == want;
	if (json_object_is_type(id, json_type_string)) {
		snprintf(text, sizeof(text), "%lld", want);
		return strcmp(json_object_get_string(id), text) == 0;
	}
	return 0;
}

/*
 * Notes the reply owed to request `id` (borrowed) of method `method` from
 * the server: an empty result to ping, "method not found" to the rest. NOTE:
 * best effort: out of memory, or past MCP_SERVER_REQUESTS_MAX, the request
 * goes unanswered as before, which costs the server a wait, not us the answer.
 */
static void
owe_reply(struct mcp_reader *r, struct json_object *id, const char *method)
{
	struct json_object *m, *e;

	/* MCP: a request id is a string or an integer, never null. */
	if (!json_object_is_type(id, json_type_int) && !json_object_is_type(id, json_type_string))
		return;
	if (r->replies == NULL && (r->replies = json_object_new_array()) == NULL)
		return;
	if (json_object_array_length(r->replies) >= MCP_SERVER_REQUESTS_MAX ||
	    (m = json_object_new_object()) == NULL)
		return;
	json_object_object_add(m, "jsonrpc", json_object_new_string("2.0"));
	json_object_object_add(m, "id", json_object_get(id));
	if (strcmp(method, "ping") == 0) {
		json_object_object_add(m, "result", json_object_new_object());
	} else if ((e = json_object_new_object()) != NULL) {
		json_object_object_add(e, "code", json_object_new_int(-32601));
		json_object_object_add(e, "message", json_object_new_string("Method not found"));
		json_object_object_add(m, "error", e);
	}
	if (json_object_array_add(r->replies, m) != 0)
		json_object_put(m);
}

/*
 * Looks at one message (or a batch) from the server: keeps the response to
 * our request, notes tools/list_changed, notes the reply owed to a request
 * when `streamed` (one in an event stream: the server may wait for it), skips
 * the rest (progress, logging). Returns 1 once the answer is found.
 */
static int
consider(struct mcp_reader *r, struct json_object *msg, int streamed)
{
	struct json_object *id, *method;
	size_t i, n;

	if (json_object_is_type(msg, json_type_array)) {
		n = json_object_array_length(msg);
		for (i = 0; i < n; i++)
			if (consider(r, json_object_array_get_idx(msg, i), streamed))
				return 1;
		return 0;
	}
	if (!json_object_is_type(msg, json_type_object))
		return 0;
	if (json_object_object_get_ex(msg, "method", &method)) {
		if (!json_object_is_type(method, json_type_string))
			return 0;
		if (strcmp(json_object_get_string(method), "notifications/tools/list_changed") == 0)
			r->list_changed = 1;
		else if (streamed && json_object_object_get_ex(msg, "id", &id))
			owe_reply(r, id, json_object_get_string(method));
		return 0;
	}
	if (r->answer != NULL || r->want_id == 0 || !json_object_object_get_ex(msg, "id", &id) ||
	    !id_matches(id, r->want_id))
		return 0;
	if (!json_object_object_get_ex(msg, "result", NULL) &&
	    !json_object_object_get_ex(msg, "error", NULL))
		return 0;
	r->answer = json_object_get(msg);
	return 1;
}

static int
on_event(void *p, const char *event, const char *data, size_t len)
{
	struct mcp_reader *r = p;
	struct json_object *msg;
	int found;

	/* NOTE: 2025-11-25 streams open with a priming event: an id and empty data. */
	if (len == 0 || strcmp(event, "message") != 0)
		return 0;
	msg = mcp_json_parse(data, len);
	if (msg == NULL)
		return 0;   /* not JSON: not ours to judge; the answer may still come */
	found = consider(r, msg, 1);
	json_object_put(msg);
	return found;
}

void
mcp_reader_init(struct mcp_reader *r, long long want_id)
{
	memset(r, 0, sizeof(*r));
	r->want_id = want_id;
	sse_init(&r->sse, on_event, r);
	/*
	 * NOTE: servers send each message as one data line (the TypeScript SDK
	 * does): a tool's answer may be as long as an event, and the answer cap
	 * (httpc's max_bytes) bounds it, as it bounds a JSON body.
	 */
	r->sse.line_max = SSE_EVENT_MAX;
}

int
mcp_reader_resumable(const struct mcp_reader *r)
{
	const char *id = r->sse.last_id;
	size_t i;

	if (r->mode != 2 || r->failed || r->answer != NULL || id[0] == '\0')
		return 0;
	for (i = 0; id[i] != '\0'; i++)
		if ((unsigned char)id[i] < 0x20 || (unsigned char)id[i] > 0x7e)
			return 0;
	return 1;
}

void
mcp_reader_restart(struct mcp_reader *r)
{
	struct sse_parser old = r->sse;

	sse_init(&r->sse, on_event, r);
	r->sse.line_max = old.line_max;
	memcpy(r->sse.last_id, old.last_id, sizeof(r->sse.last_id));
	memcpy(r->sse.id, old.last_id, sizeof(r->sse.id));
	r->sse.retry_ms = old.retry_ms;
	r->sse.has_retry = old.has_retry;
	sse_free(&old);
}

void
mcp_reader_free(struct mcp_reader *r)
{
	json_object_put(r->answer);
	r->answer = NULL;
	json_object_put(r->replies);
	r->replies = NULL;
	sse_free(&r->sse);
	buf_free(&r->body);
}

int
mcp_reader_feed(struct mcp_reader *r, const char *content_type, const char *data, size_t len)
{
	int rc;

	if (r->failed)
		return -1;
	if (r->answer != NULL)
		return 1;
	if (r->mode == 0)
		r->mode = content_type != NULL &&
		    strncasecmp(content_type, "text/event-stream", 17) == 0 ? 2 : 1;
	if (r->mode == 1) {
		buf_append(&r->body, data, len);
		if (r->body.oom) {
			r->failed = 1;
			return -1;
		}
		return 0;
	}
	rc = sse_feed(&r->sse, data, len);
	if (rc == -1) {
		r->failed = 1;
		return -1;
	}
	/* Stop at the answer: nothing after it concerns this request. */
	return rc != 0 ? 1 : 0;
}

/*
 * Splits a JSON-RPC answer: MCP_OK with *result (caller puts), or MCP_RPC with
 * the error's code and message in `err`.
 */
static enum mcp_status
answer_result(struct json_object *answer, struct json_object **result, struct mcp_error *err)
{
	struct json_object *e, *v;

	*result = NULL;
	if (json_object_object_get_ex(answer, "error", &e)) {
		err->rpc_code = json_object_object_get_ex(e, "code", &v) ? json_object_get_int64(v) : 0;
		snprintf(err->text, sizeof(err->text), "%.200s (JSON-RPC error %lld)",
		    json_object_object_get_ex(e, "message", &v) &&
		    json_object_is_type(v, json_type_string) ? json_object_get_string(v) :
		    "no message", err->rpc_code);
		return MCP_RPC;
	}
	json_object_object_get_ex(answer, "result", &v);
	*result = json_object_get(v);
	return MCP_OK;
}

enum mcp_status
mcp_reader_finish(struct mcp_reader *r, struct json_object **result, struct mcp_error *err)
{
	struct json_object *doc;

	*result = NULL;
	if (r->failed) {
		if (r->body.oom) {
			snprintf(err->text, sizeof(err->text), "out of memory");
			return MCP_NOMEM;
		}
		snprintf(err->text, sizeof(err->text),
		    "an event stream line or event larger than allowed");
		return MCP_PROTOCOL;
	}
	if (r->mode != 2 && r->answer == NULL) {
		doc = mcp_json_parse(r->body.data != NULL ? r->body.data : "", r->body.len);
		if (doc != NULL)
			consider(r, doc, 0);
		json_object_put(doc);
	}
	if (r->answer == NULL) {
		snprintf(err->text, sizeof(err->text), "%s", r->mode == 2 ?
		    "the event stream ended without the answer" :
		    "the answer is not the JSON-RPC response expected");
		return MCP_PROTOCOL;
	}
	return answer_result(r->answer, result, err);
}

enum mcp_status
mcp_parse_answer(const char *content_type, const char *body, size_t len, long long want_id,
    struct json_object **result, int *list_changed, struct mcp_error *err)
{
	struct mcp_reader r;
	enum mcp_status st;

	mcp_reader_init(&r, want_id);
	/* As over HTTP: an empty body is never fed, whatever its type. */
	if (len > 0)
		mcp_reader_feed(&r, content_type, body, len);
	st = mcp_reader_finish(&r, result, err);
	if (list_changed != NULL)
		*list_changed = r.list_changed;
	mcp_reader_free(&r);
	return st;
}

static int ex_cancelled(void *p);
static const char *text_of(struct json_object *m);

/* The text of a request's session headers (add_session_headers). */
struct session_headers {
	char session[MCP_SESSION_ID_MAX + 32];
	char version[48];
};

/*
 * Appends Mcp-Session-Id and MCP-Protocol-Version, each when known, to
 * `headers` at *h, their text kept in `hs`.
 */
static void
add_session_headers(const char *session, const char *version, struct session_headers *hs,
    const char **headers, size_t *h)
{
	if (session[0] != '\0') {
		snprintf(hs->session, sizeof(hs->session), "Mcp-Session-Id: %s", session);
		headers[(*h)++] = hs->session;
	}
	if (version[0] != '\0') {
		snprintf(hs->version, sizeof(hs->version), "MCP-Protocol-Version: %s", version);
		headers[(*h)++] = hs->version;
	}
}

/*
 * POSTs the replies the reader noted for the server's requests and not yet
 * sent, each as its own POST with the session's headers (the spec's way for
 * a client's response), on a handle of its own: the answer's stream is still
 * open on the caller's. Best effort: a reply the server refuses or that
 * times out (MCP_REPLY_TIMEOUT_MS at most, within the exchange's time) is
 * not retried; the answer's stream says what came of it.
 */
static void
send_replies(struct exchange *x)
{
	struct session_headers hs;
	char why[160];
	const char *headers[5], *session;
	struct httpc_request hr;
	struct httpc_response resp;
	struct json_object *m;
	long long left;
	size_t h = 0, n = x->r.replies != NULL ? json_object_array_length(x->r.replies) : 0;

	if (x->replied >= n)
		return;
	headers[h++] = "Content-Type: application/json";
	headers[h++] = "Accept: application/json, text/event-stream";
	/* During initialize the session is the one this very answer's headers gave. */
	session = x->s->session[0] != '\0' ? x->s->session : x->session;
	add_session_headers(session, x->s->version, &hs, headers, &h);
	headers[h] = NULL;
	for (; x->replied < n; x->replied++) {
		left = x->end_ms - vtime_mono_ms();
		if (left <= 0 || (x->side == NULL && (x->side = httpc_new()) == NULL))
			return;
		if (left > MCP_REPLY_TIMEOUT_MS)
			left = MCP_REPLY_TIMEOUT_MS;
		m = json_object_array_get_idx(x->r.replies, x->replied);
		memset(&hr, 0, sizeof(hr));
		hr.method = "POST";
		hr.url = x->c->url;
		hr.headers = headers;
		hr.body = text_of(m);
		hr.body_len = strlen(hr.body);
		hr.total_timeout_ms = (long)left;
		hr.connect_timeout_ms = (long)left;
		hr.max_bytes = 4096;   /* a 202 without a body is the answer expected */
		hr.cancelled = ex_cancelled;
		hr.ctx = x;
		httpc_perform(x->side, &hr, &resp, why, sizeof(why));
		httpc_response_free(&resp);
	}
}

static int
on_data(void *p, const char *data, size_t len)
{
	struct exchange *x = p;
	int rc = mcp_reader_feed(&x->r, x->resp->content_type, data, len);

	/* NOTE: a server may wait for these replies before it sends the answer. */
	if (rc == 0)
		send_replies(x);
	return rc != 0;
}

static void
on_header(void *p, const char *name, const char *value)
{
	struct exchange *x = p;
	size_t i, n = strlen(value);

	if (strcmp(name, "mcp-session-id") != 0)
		return;
	/* The spec: visible ASCII only. Anything else is not echoed back in a header. */
	for (i = 0; i < n; i++)
		if ((unsigned char)value[i] < 0x21 || (unsigned char)value[i] > 0x7e)
			break;
	if (n == 0 || i < n || n > MCP_SESSION_ID_MAX) {
		x->session_bad = 1;
		return;
	}
	memcpy(x->session, value, n + 1);
}

static int
ex_cancelled(void *p)
{
	const struct exchange *x = p;

	return x->o->cancelled != NULL && x->o->cancelled(x->o->ctx);
}

/* A short printable reason from a non-2xx body: a JSON-RPC error message, else its start. */
static void
body_reason(const struct httpc_response *r, char *out, size_t outlen)
{
	struct json_object *doc, *e, *m;
	size_t i, n = 0;

	out[0] = '\0';
	if (r->body.len == 0)
		return;
	doc = mcp_json_parse(r->body.data, r->body.len);
	if (doc != NULL && json_object_object_get_ex(doc, "error", &e) &&
	    json_object_object_get_ex(e, "message", &m) && json_object_is_type(m, json_type_string)) {
		snprintf(out, outlen, "%.160s", json_object_get_string(m));
		json_object_put(doc);
		return;
	}
	json_object_put(doc);
	for (i = 0; i < r->body.len && n + 1 < outlen && n < 120; i++)
		out[n++] = (unsigned char)r->body.data[i] >= 0x20 &&
		    (unsigned char)r->body.data[i] < 0x7f ? r->body.data[i] : ' ';
	out[n] = '\0';
}

/*
 * Waits `ms` unless the caller's client goes away first (then returns 1).
 * NOTE: in slices, so that a client leaving is noticed within 200 ms.
 */
static int
pause_ms(const struct exchange *x, long long ms)
{
	long long end = vtime_mono_ms() + ms, left;
	struct timespec ts;

	while ((left = end - vtime_mono_ms()) > 0) {
		if (ex_cancelled((void *)x))
			return 1;
		if (left > 200)
			left = 200;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)left * 1000000L;
		nanosleep(&ts, NULL);
	}
	return ex_cancelled((void *)x);
}

/*
 * The status and text of a transfer that ended with the client gone, an
 * answer over the cap or out of memory: the same for a request and for the
 * resumption of its answer.
 */
static enum mcp_status
transfer_end(enum httpc_result hres, const struct mcp_client *c, struct mcp_error *err)
{
	if (hres == HTTPC_CANCELLED) {
		snprintf(err->text, sizeof(err->text), "the client went away");
		return MCP_CANCELLED;
	}
	if (hres == HTTPC_TOO_LARGE) {
		snprintf(err->text, sizeof(err->text), "the answer is larger than %zu bytes",
		    c->max_bytes);
		return MCP_TOO_LARGE;
	}
	snprintf(err->text, sizeof(err->text), "out of memory");
	return MCP_NOMEM;
}

/*
 * The answer's event stream ended (or broke) without the answer after an
 * event with an id: as 2025-11-25 allows, the server closed the connection,
 * not the stream, and expects the client to come back. Reconnects with GET
 * and Last-Event-ID after the `retry:` it asked for (MCP_RESUME_WAIT_MS when
 * none), as often as that happens (at most MCP_RESUMES_MAX times) within
 * the exchange's time, feeding the same reader; `got` is the bytes the
 * answer took so far (the cap holds for all its streams). MCP_OK when the
 * reader now has the answer or there is nothing more to try
 * (mcp_reader_finish says which), else why not with err->text. NOTE: the
 * request went out and no failure here says otherwise: a resumed stream
 * refused with 404 is not the "unknown session" that lets a request be sent
 * again, so it is MCP_PROTOCOL, never MCP_HTTP.
 */
static enum mcp_status
resume(struct exchange *x, struct httpc *http, size_t got, struct mcp_error *err)
{
	struct session_headers hs;
	char hlast[SSE_ID_MAX + 32], why[160];
	const char *headers[5], *session;
	struct httpc_response *post = x->resp, r;
	struct httpc_request hr;
	enum httpc_result hres;
	enum mcp_status st = MCP_OK;
	long long wait, left;
	size_t h;
	int n;

	for (n = 0; n < MCP_RESUMES_MAX && mcp_reader_resumable(&x->r); n++) {
		wait = x->r.sse.has_retry ? x->r.sse.retry_ms : MCP_RESUME_WAIT_MS;
		if (wait < MCP_RESUME_MIN_WAIT_MS)
			wait = MCP_RESUME_MIN_WAIT_MS;
		if (vtime_mono_ms() + wait >= x->end_ms) {
			snprintf(err->text, sizeof(err->text), "no answer in time: the event stream "
			    "ended and the server asked to come back after %lld ms", wait);
			return MCP_TIMEOUT;
		}
		if (pause_ms(x, wait)) {
			snprintf(err->text, sizeof(err->text), "the client went away");
			return MCP_CANCELLED;
		}
		if (got >= x->c->max_bytes) {
			snprintf(err->text, sizeof(err->text), "the answer is larger than %zu bytes",
			    x->c->max_bytes);
			return MCP_TOO_LARGE;
		}
		mcp_reader_restart(&x->r);
		h = 0;
		headers[h++] = "Accept: text/event-stream";
		session = x->s->session[0] != '\0' ? x->s->session : x->session;
		add_session_headers(session, x->s->version, &hs, headers, &h);
		snprintf(hlast, sizeof(hlast), "Last-Event-ID: %s", x->r.sse.last_id);
		headers[h++] = hlast;
		headers[h] = NULL;
		left = x->end_ms - vtime_mono_ms();
		memset(&hr, 0, sizeof(hr));
		hr.method = "GET";
		hr.url = x->c->url;
		hr.headers = headers;
		hr.total_timeout_ms = (long)(left > 0 ? left : 1);
		hr.connect_timeout_ms = (long)(left < MCP_CONNECT_TIMEOUT_MS ? hr.total_timeout_ms :
		    MCP_CONNECT_TIMEOUT_MS);
		hr.max_bytes = x->c->max_bytes - got;
		hr.on_data = on_data;
		hr.cancelled = ex_cancelled;
		hr.ctx = x;
		x->resp = &r;
		hres = httpc_perform(http, &hr, &r, why, sizeof(why));
		x->resp = post;
		got += r.bytes;
		if (hres == HTTPC_ABORTED && x->r.answer != NULL)
			hres = HTTPC_OK;
		switch (hres) {
		case HTTPC_OK:
		case HTTPC_BROKEN:
			if (r.status != 0 && (r.status < 200 || r.status > 299)) {
				snprintf(err->text, sizeof(err->text), "the event stream ended without "
				    "the answer, and resuming it was refused: HTTP %ld", r.status);
				st = MCP_PROTOCOL;
			}
			break;
		case HTTPC_CONNECT:
			break;   /* the next round tries again, while there is time */
		case HTTPC_TIMEOUT:
		case HTTPC_FIRST_BYTE_TIMEOUT:
			snprintf(err->text, sizeof(err->text), "no answer in time (the event stream "
			    "was resumed)");
			st = MCP_TIMEOUT;
			break;
		case HTTPC_CANCELLED:
		case HTTPC_TOO_LARGE:
		case HTTPC_NOMEM:
			st = transfer_end(hres, x->c, err);
			break;
		default:
			break;   /* stopped: the reader failed, mcp_reader_finish says why */
		}
		httpc_response_free(&r);
		if (st != MCP_OK || x->r.answer != NULL)
			return st;
	}
	return MCP_OK;
}

/*
 * One POST of `body` with the session of `s` (empty fields: none sent).
 * `want_id` is the request's id (0 for a notification: a 2xx is enough).
 * On MCP_OK with a request, *result is the matching response's result
 * (caller puts); a JSON-RPC error is MCP_RPC. `session_out` (may be NULL)
 * gets the Mcp-Session-Id the server sent.
 */
static enum mcp_status
exchange(struct mcp_client *c, struct httpc *http, const struct mcp_opts *o,
    const struct snapshot *s, const char *body, long long want_id, struct json_object **result,
    char *session_out, struct mcp_error *err)
{
	struct session_headers hs;
	char why[160], reason[200];
	const char *headers[5];
	struct httpc_request hr;
	struct httpc_response r;
	struct exchange x;
	enum httpc_result hres;
	enum mcp_status st = MCP_OK;
	long long total = o->timeout_ms, left;
	size_t h = 0;

	*result = NULL;
	if (o->deadline_ms > 0) {
		left = o->deadline_ms - vtime_mono_ms();
		if (left <= 0) {
			snprintf(err->text, sizeof(err->text), "no time left before the deadline");
			return MCP_TIMEOUT;
		}
		if (total <= 0 || left < total)
			total = left;
	}
	if (o->cancelled != NULL && o->cancelled(o->ctx)) {
		snprintf(err->text, sizeof(err->text), "the client went away");
		return MCP_CANCELLED;
	}
	headers[h++] = "Content-Type: application/json";
	headers[h++] = "Accept: application/json, text/event-stream";
	add_session_headers(s->session, s->version, &hs, headers, &h);
	headers[h] = NULL;

	memset(&x, 0, sizeof(x));
	x.o = o;
	x.c = c;
	x.s = s;
	x.resp = &r;
	x.end_ms = vtime_mono_ms() + (total > 0 ? total : 1LL << 40);
	mcp_reader_init(&x.r, want_id);
	memset(&hr, 0, sizeof(hr));
	hr.method = "POST";
	hr.url = c->url;
	hr.headers = headers;
	hr.body = body;
	hr.body_len = strlen(body);
	hr.total_timeout_ms = (long)(total > 0 ? total : 0);
	hr.connect_timeout_ms = (long)(total > 0 && total < MCP_CONNECT_TIMEOUT_MS ? total :
	    MCP_CONNECT_TIMEOUT_MS);
	hr.max_bytes = c->max_bytes;
	hr.on_data = on_data;
	hr.cancelled = ex_cancelled;
	hr.on_header = on_header;
	hr.ctx = &x;

	hres = httpc_perform(http, &hr, &r, why, sizeof(why));
	err->sent = hres != HTTPC_CONNECT;
	err->http_status = r.status;
	if (hres == HTTPC_ABORTED && x.r.answer != NULL)
		hres = HTTPC_OK;
	/* A stream that broke after an event with an id is resumed below, as one that ended. */
	if (hres == HTTPC_BROKEN && want_id != 0 && r.status >= 200 && r.status <= 299 &&
	    mcp_reader_resumable(&x.r))
		hres = HTTPC_OK;
	switch (hres) {
	case HTTPC_OK:
		break;
	case HTTPC_CONNECT:
		snprintf(err->text, sizeof(err->text), "%s", why);
		st = MCP_UNREACHABLE;
		goto out;
	case HTTPC_TIMEOUT:
	case HTTPC_FIRST_BYTE_TIMEOUT:
		snprintf(err->text, sizeof(err->text), "no answer within %lld ms", total);
		st = MCP_TIMEOUT;
		goto out;
	case HTTPC_CANCELLED:
	case HTTPC_TOO_LARGE:
	case HTTPC_NOMEM:
		st = transfer_end(hres, c, err);
		goto out;
	case HTTPC_ABORTED:
		/* Stopped without the answer: the reader failed, and says why. */
		st = mcp_reader_finish(&x.r, result, err);
		goto out;
	default:
		snprintf(err->text, sizeof(err->text), "%s", why);
		st = MCP_BROKEN;
		goto out;
	}
	if (r.status < 200 || r.status > 299) {
		body_reason(&r, reason, sizeof(reason));
		snprintf(err->text, sizeof(err->text), "HTTP %ld%s%s", r.status,
		    reason[0] != '\0' ? ": " : "", reason);
		st = MCP_HTTP;
		goto out;
	}
	if (session_out != NULL) {
		if (x.session_bad) {
			snprintf(err->text, sizeof(err->text), "the server sent an invalid Mcp-Session-Id");
			st = MCP_PROTOCOL;
			goto out;
		}
		memcpy(session_out, x.session, sizeof(x.session));
	}
	if (want_id != 0 && mcp_reader_resumable(&x.r)) {
		st = resume(&x, http, r.bytes, err);
		if (st != MCP_OK)
			goto out;
	}
	if (want_id != 0)
		st = mcp_reader_finish(&x.r, result, err);
out:
	if (x.r.list_changed)
		atomic_store(&c->list_changed, 1);
	httpc_free(x.side);
	mcp_reader_free(&x.r);
	httpc_response_free(&r);
	return st;
}

/* `{"jsonrpc":"2.0","id":id,"method":method,"params":params}` (id 0: a notification). Caller puts. */
static struct json_object *
message(long long id, const char *method, struct json_object *params)
{
	struct json_object *m = json_object_new_object();

	if (m == NULL)
		return NULL;
	if (json_object_object_add(m, "jsonrpc", json_object_new_string("2.0")) != 0 ||
	    (id != 0 && json_object_object_add(m, "id", json_object_new_int64(id)) != 0) ||
	    json_object_object_add(m, "method", json_object_new_string(method)) != 0 ||
	    (params != NULL && json_object_object_add(m, "params", json_object_get(params)) != 0)) {
		json_object_put(m);
		return NULL;
	}
	return m;
}

static const char *
text_of(struct json_object *m)
{
	return json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* initialize, then notifications/initialized; fills `s` with the new session. */
static enum mcp_status
initialize(struct mcp_client *c, struct httpc *http, const struct mcp_opts *o,
    struct snapshot *s, struct mcp_error *err)
{
	struct json_object *params = NULL, *caps, *info, *msg = NULL, *res = NULL, *none_res = NULL, *v;
	struct snapshot none;
	enum mcp_status st = MCP_NOMEM;
	const char *version;
	long long id = atomic_fetch_add(&c->next_id, 1);

	memset(&none, 0, sizeof(none));
	memset(s, 0, sizeof(*s));
	params = json_object_new_object();
	caps = json_object_new_object();
	info = json_object_new_object();
	if (params == NULL || caps == NULL || info == NULL) {
		json_object_put(caps);
		json_object_put(info);
		goto out;
	}
	json_object_object_add(info, "name", json_object_new_string("valerie"));
	json_object_object_add(info, "version", json_object_new_string(PACKAGE_VERSION));
	json_object_object_add(params, "protocolVersion", json_object_new_string(MCP_PROTOCOL_LATEST));
	json_object_object_add(params, "capabilities", caps);
	json_object_object_add(params, "clientInfo", info);
	msg = message(id, "initialize", params);
	if (msg == NULL)
		goto out;
	st = exchange(c, http, o, &none, text_of(msg), id, &res, s->session, err);
	if (st != MCP_OK)
		goto out;
	version = json_object_object_get_ex(res, "protocolVersion", &v) &&
	    json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
	if (strcmp(version, MCP_PROTOCOL_LATEST) != 0 && strcmp(version, MCP_PROTOCOL_OLDER) != 0) {
		snprintf(err->text, sizeof(err->text), "the server speaks MCP protocol \"%.40s\"; "
		    "Valerie speaks %s and %s", version, MCP_PROTOCOL_LATEST, MCP_PROTOCOL_OLDER);
		st = MCP_PROTOCOL;
		goto out;
	}
	snprintf(s->version, sizeof(s->version), "%s", version);
	json_object_put(msg);
	msg = message(0, "notifications/initialized", NULL);
	if (msg == NULL) {
		st = MCP_NOMEM;
		goto out;
	}
	st = exchange(c, http, o, s, text_of(msg), 0, &none_res, NULL, err);
out:
	if (st != MCP_OK && st != MCP_NOMEM) {
		char text[sizeof(err->text)];

		snprintf(text, sizeof(text), "initialize: %.240s", err->text);
		memcpy(err->text, text, sizeof(text));
	} else if (st == MCP_NOMEM) {
		snprintf(err->text, sizeof(err->text), "out of memory");
	}
	json_object_put(res);
	json_object_put(none_res);
	json_object_put(msg);
	json_object_put(params);
	return st;
}

/*
 * The session to send a request with, initializing one first if there is
 * none. NOTE: a thread initializing holds init_lock across the network
 * exchange so that the others wait for its session instead of each opening
 * their own, and take its failure as theirs; the wait is bounded by that
 * thread's timeout.
 */
/* Copies the live session into `s` if there is one (c->lock held). */
static int
snapshot_ready(const struct mcp_client *c, struct snapshot *s)
{
	if (!c->ready)
		return 0;
	s->generation = c->generation;
	memcpy(s->session, c->session, sizeof(s->session));
	memcpy(s->version, c->version, sizeof(s->version));
	return 1;
}

/* The time an exchange of `o` may take from now (timeout and deadline). */
static long long
budget_ms(const struct mcp_opts *o)
{
	long long t = o->timeout_ms > 0 ? o->timeout_ms : 1LL << 40, left;

	if (o->deadline_ms > 0) {
		left = o->deadline_ms - vtime_mono_ms();
		if (left < t)
			t = left;
	}
	return t;
}

/*
 * Whether the last initialize's failure answers a thread that waited for
 * it (c->lock held): not when the other's client went away, nor a timeout
 * of an attempt that had less time than this one has.
 */
static int
failure_shared(const struct mcp_client *c, const struct mcp_opts *o)
{
	/*
	 * NOTE: the last initialize may have succeeded and its session been
	 * forgotten since: that is no answer (and would leave `s` unfilled).
	 */
	if (c->init_status == MCP_OK || c->init_status == MCP_CANCELLED ||
	    c->init_status == MCP_NOMEM)
		return 0;
	return c->init_status != MCP_TIMEOUT || c->init_budget_ms >= budget_ms(o);
}

static enum mcp_status
session_get(struct mcp_client *c, struct httpc *http, const struct mcp_opts *o,
    struct snapshot *s, struct mcp_error *err)
{
	enum mcp_status st = MCP_OK;
	unsigned long seen;
	long long budget;

	pthread_mutex_lock(&c->lock);
	if (snapshot_ready(c, s)) {
		pthread_mutex_unlock(&c->lock);
		return MCP_OK;
	}
	seen = c->init_ended;
	pthread_mutex_unlock(&c->lock);

	pthread_mutex_lock(&c->init_lock);
	pthread_mutex_lock(&c->lock);
	if (snapshot_ready(c, s)) {
		pthread_mutex_unlock(&c->lock);
		goto out;
	}
	/*
	 * NOTE: an initialize that failed while this thread waited is its
	 * answer too: trying again at once, one thread after another, made N
	 * concurrent calls to a hung agent wait N timeouts.
	 */
	if (c->init_ended != seen && failure_shared(c, o)) {
		st = c->init_status;
		*err = c->init_err;
		pthread_mutex_unlock(&c->lock);
		goto out;
	}
	pthread_mutex_unlock(&c->lock);
	budget = budget_ms(o);
	st = initialize(c, http, o, s, err);
	pthread_mutex_lock(&c->lock);
	c->init_ended++;
	if (st == MCP_OK) {
		c->generation++;
		s->generation = c->generation;
		memcpy(c->session, s->session, sizeof(c->session));
		memcpy(c->version, s->version, sizeof(c->version));
		c->ready = 1;
		c->init_status = MCP_OK;
	} else {
		c->init_status = st;
		c->init_budget_ms = budget;
		c->init_err = *err;
	}
	pthread_mutex_unlock(&c->lock);
out:
	pthread_mutex_unlock(&c->init_lock);
	return st;
}

/* The server forgot session `generation`: the next request initializes anew. */
static void
session_forget(struct mcp_client *c, unsigned long generation)
{
	pthread_mutex_lock(&c->lock);
	if (c->ready && c->generation == generation) {
		c->ready = 0;
		c->session[0] = '\0';
	}
	pthread_mutex_unlock(&c->lock);
}

enum mcp_status
mcp_session_end(struct mcp_client *c, struct httpc *http, long long timeout_ms,
    struct mcp_error *err)
{
	char hsession[MCP_SESSION_ID_MAX + 32], hversion[48], why[160];
	const char *headers[3];
	struct httpc_request hr;
	struct httpc_response r;
	struct snapshot s;
	enum httpc_result hres;
	enum mcp_status st = MCP_OK;
	int have;

	memset(err, 0, sizeof(*err));
	memset(&s, 0, sizeof(s));
	pthread_mutex_lock(&c->lock);
	have = snapshot_ready(c, &s) && s.session[0] != '\0';
	c->ready = 0;
	c->session[0] = '\0';
	pthread_mutex_unlock(&c->lock);
	if (!have)
		return MCP_OK;
	if (timeout_ms <= 0) {
		snprintf(err->text, sizeof(err->text), "no time left to end the session");
		return MCP_TIMEOUT;
	}
	snprintf(hsession, sizeof(hsession), "Mcp-Session-Id: %s", s.session);
	snprintf(hversion, sizeof(hversion), "MCP-Protocol-Version: %s", s.version);
	headers[0] = hsession;
	headers[1] = hversion;
	headers[2] = NULL;
	memset(&hr, 0, sizeof(hr));
	hr.method = "DELETE";
	hr.url = c->url;
	hr.headers = headers;
	hr.body = "";
	hr.total_timeout_ms = (long)timeout_ms;
	hr.connect_timeout_ms = (long)timeout_ms;
	hr.max_bytes = 4096;   /* the answer is not read: only its status counts */
	hres = httpc_perform(http, &hr, &r, why, sizeof(why));
	err->sent = hres != HTTPC_CONNECT;
	err->http_status = r.status;
	switch (hres) {
	case HTTPC_OK:
	case HTTPC_TOO_LARGE:
		if ((r.status < 200 || r.status > 299) && r.status != 405) {
			snprintf(err->text, sizeof(err->text), "HTTP %ld", r.status);
			st = MCP_HTTP;
		}
		break;
	case HTTPC_CONNECT:
		snprintf(err->text, sizeof(err->text), "%s", why);
		st = MCP_UNREACHABLE;
		break;
	case HTTPC_TIMEOUT:
	case HTTPC_FIRST_BYTE_TIMEOUT:
		snprintf(err->text, sizeof(err->text), "no answer within %lld ms", timeout_ms);
		st = MCP_TIMEOUT;
		break;
	default:
		snprintf(err->text, sizeof(err->text), "%s", why);
		st = MCP_BROKEN;
		break;
	}
	httpc_response_free(&r);
	return st;
}

enum mcp_status
mcp_request(struct mcp_client *c, struct httpc *http, const struct mcp_opts *o,
    const char *method, struct json_object *params, struct json_object **result,
    struct mcp_error *err)
{
	struct json_object *msg;
	struct snapshot s;
	enum mcp_status st;
	long long id;
	int round;

	*result = NULL;
	memset(err, 0, sizeof(*err));
	for (round = 0;; round++) {
		st = session_get(c, http, o, &s, err);
		if (st != MCP_OK) {
			err->sent = 0;   /* the request itself never went out */
			return st;
		}
		id = atomic_fetch_add(&c->next_id, 1);
		msg = message(id, method, params);
		if (msg == NULL) {
			snprintf(err->text, sizeof(err->text), "out of memory");
			return MCP_NOMEM;
		}
		st = exchange(c, http, o, &s, text_of(msg), id, result, NULL, err);
		json_object_put(msg);
		/*
		 * NOTE: the spec answers an unknown session with 404; some servers
		 * (server-everything among them) send 400 instead. Either way the
		 * request was refused unprocessed, so sending it again in a new
		 * session repeats nothing.
		 */
		if (st == MCP_HTTP && round == 0 && (err->http_status == 404 ||
		    (err->http_status == 400 && s.session[0] != '\0'))) {
			session_forget(c, s.generation);
			continue;
		}
		break;
	}
	return st;
}

/* Whether a tool object has a usable name: a string of 1 to MCP_TOOL_NAME_MAX bytes, no NUL. */
static int
tool_ok(struct json_object *tool)
{
	struct json_object *name;
	int len;

	if (!json_object_is_type(tool, json_type_object) ||
	    !json_object_object_get_ex(tool, "name", &name) ||
	    !json_object_is_type(name, json_type_string))
		return 0;
	len = json_object_get_string_len(name);
	return len > 0 && len <= MCP_TOOL_NAME_MAX &&
	    strlen(json_object_get_string(name)) == (size_t)len;
}

enum mcp_status
mcp_tools_page(struct json_object *result, struct json_object *all, struct json_object **next,
    struct mcp_error *err)
{
	struct json_object *list, *t, *cursor;
	size_t i, n;

	*next = NULL;
	if (!json_object_object_get_ex(result, "tools", &list) ||
	    !json_object_is_type(list, json_type_array)) {
		snprintf(err->text, sizeof(err->text), "tools/list answered without a tools array");
		return MCP_PROTOCOL;
	}
	n = json_object_array_length(list);
	for (i = 0; i < n && json_object_array_length(all) < MCP_TOOLS_MAX; i++) {
		t = json_object_array_get_idx(list, i);
		if (tool_ok(t) && json_object_array_add(all, json_object_get(t)) != 0) {
			json_object_put(t);
			snprintf(err->text, sizeof(err->text), "out of memory");
			return MCP_NOMEM;
		}
	}
	if (json_object_object_get_ex(result, "nextCursor", &cursor) &&
	    json_object_is_type(cursor, json_type_string) && json_object_get_string_len(cursor) > 0)
		*next = cursor;
	return MCP_OK;
}

enum mcp_status
mcp_list_tools(struct mcp_client *c, struct httpc *http, const struct mcp_opts *o,
    struct json_object **tools, struct mcp_error *err)
{
	struct json_object *all, *params = NULL, *res = NULL, *next;
	enum mcp_status st = MCP_OK;
	int page;

	*tools = NULL;
	memset(err, 0, sizeof(*err));
	all = json_object_new_array();
	if (all == NULL)
		return MCP_NOMEM;
	for (page = 0; page < MCP_LIST_PAGES_MAX; page++) {
		st = mcp_request(c, http, o, "tools/list", params, &res, err);
		json_object_put(params);
		params = NULL;
		if (st != MCP_OK)
			break;
		st = mcp_tools_page(res, all, &next, err);
		if (st != MCP_OK || next == NULL)
			break;
		params = json_object_new_object();
		if (params == NULL || json_object_object_add(params, "cursor",
		    json_object_get(next)) != 0) {
			st = MCP_NOMEM;
			break;
		}
		json_object_put(res);
		res = NULL;
	}
	json_object_put(params);
	json_object_put(res);
	if (st != MCP_OK) {
		json_object_put(all);
		if (st == MCP_NOMEM)
			snprintf(err->text, sizeof(err->text), "out of memory");
		return st;
	}
	*tools = all;
	return MCP_OK;
}

/* Appends one content item of a tool result as text. */
static void
content_text(struct buf *out, struct json_object *item)
{
	struct json_object *type, *v, *r = NULL;
	const char *t;

	if (!json_object_object_get_ex(item, "type", &type) ||
	    !json_object_is_type(type, json_type_string))
		return;
	t = json_object_get_string(type);
	if (out->len > 0)
		buf_puts(out, "\n");
	if (strcmp(t, "text") == 0 && json_object_object_get_ex(item, "text", &v) &&
	    json_object_is_type(v, json_type_string)) {
		buf_append(out, json_object_get_string(v), (size_t)json_object_get_string_len(v));
	} else if (strcmp(t, "resource") == 0 && json_object_object_get_ex(item, "resource", &r) &&
	    json_object_object_get_ex(r, "text", &v) && json_object_is_type(v, json_type_string)) {
		buf_append(out, json_object_get_string(v), (size_t)json_object_get_string_len(v));
	} else if (strcmp(t, "resource_link") == 0 && json_object_object_get_ex(item, "uri", &v)) {
		buf_printf(out, "[resource: %.500s]", json_object_get_string(v));
	} else {
		/*
		 * image, audio, or a blob resource: the model gets a mention, not the
		 * bytes. NOTE: an embedded resource keeps its mimeType and uri in
		 * item.resource, not beside its type as an image does.
		 */
		if (strcmp(t, "resource") == 0 && json_object_object_get_ex(item, "resource", &r) &&
		    json_object_is_type(r, json_type_object))
			item = r;
		buf_printf(out, "[%.40s", t);
		if (json_object_object_get_ex(item, "mimeType", &v) &&
		    json_object_is_type(v, json_type_string))
			buf_printf(out, ": %.100s", json_object_get_string(v));
		if (item == r && json_object_object_get_ex(item, "uri", &v) &&
		    json_object_is_type(v, json_type_string))
			buf_printf(out, " %.500s", json_object_get_string(v));
		buf_puts(out, "]");
	}
}

enum mcp_status
mcp_tool_result_parse(struct json_object *result, struct mcp_tool_result *out,
    struct mcp_error *err)
{
	struct json_object *content, *v;
	size_t i, n;

	memset(out, 0, sizeof(*out));
	if (!json_object_is_type(result, json_type_object)) {
		snprintf(err->text, sizeof(err->text), "tools/call answered without a result object");
		return MCP_PROTOCOL;
	}
	out->is_error = json_object_object_get_ex(result, "isError", &v) &&
	    json_object_get_boolean(v);
	if (json_object_object_get_ex(result, "content", &content) &&
	    json_object_is_type(content, json_type_array)) {
		n = json_object_array_length(content);
		for (i = 0; i < n; i++)
			content_text(&out->text, json_object_array_get_idx(content, i));
	}
	if (out->text.len == 0 && json_object_object_get_ex(result, "structuredContent", &v))
		buf_puts(&out->text, text_of(v));
	if (out->text.oom) {
		snprintf(err->text, sizeof(err->text), "out of memory");
		return MCP_NOMEM;
	}
	return MCP_OK;
}

enum mcp_status
mcp_call_tool(struct mcp_client *c, struct httpc *http, const struct mcp_opts *o,
    const char *name, struct json_object *arguments, struct mcp_tool_result *out,
    struct mcp_error *err)
{
	struct json_object *params, *res = NULL;
	enum mcp_status st;

	memset(out, 0, sizeof(*out));
	memset(err, 0, sizeof(*err));
	params = json_object_new_object();
	if (params == NULL ||
	    json_object_object_add(params, "name", json_object_new_string(name)) != 0 ||
	    json_object_object_add(params, "arguments", arguments != NULL ?
	    json_object_get(arguments) : json_object_new_object()) != 0) {
		json_object_put(params);
		snprintf(err->text, sizeof(err->text), "out of memory");
		return MCP_NOMEM;
	}
	st = mcp_request(c, http, o, "tools/call", params, &res, err);
	json_object_put(params);
	if (st == MCP_OK)
		st = mcp_tool_result_parse(res, out, err);
	json_object_put(res);
	return st;
}

void
mcp_tool_result_free(struct mcp_tool_result *r)
{
	if (r != NULL)
		buf_free(&r->text);
}
