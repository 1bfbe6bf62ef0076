/* trace: OTLP/HTTP JSON traces of chat turns, sent by a background thread to Langfuse or any collector. */
#include "config.h"

#include "buf.h"
#include "conf.h"
#include "httpc.h"
#include "log.h"
#include "metrics.h"
#include "trace.h"
#include "utf8.h"
#include "vtime.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TRACE_BATCH_MAX 256          /* spans in one export */
#define TRACE_FLUSH_MS 1000          /* a partial batch waits at most this long */
#define TRACE_URL_MAX 1024
#define TRACE_AUTH_MAX 1200
#define TRACE_ANSWER_MAX 65536       /* what is read of the collector's answer */
#define TRACE_STOP_WAIT_S 3          /* the last export's limit when the worker stops */
#define TRACE_CONTENT_MAX 32768      /* bytes kept of one input or output attribute */
/*
 * Bytes of one export's body. Langfuse Cloud refuses requests over 5 MB and
 * proxies in front of self-hosted ones often allow less; a batch that would
 * be larger goes out as several requests, so one refusal loses no more.
 */
#define TRACE_BODY_MAX (4 * 1024 * 1024)
#define JSON_PLAIN (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/*
 * One exporter per process. Request threads serialise their spans and push
 * the text into a bounded ring; the exporter thread takes batches and POSTs
 * them. A full ring drops the new span (counted): the request path never
 * waits for the collector, whether it is down, slow or hanging.
 */
static struct {
	int on;
	int content;                  /* VALERIE_TRACE_CONTENT */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	char **ring;
	size_t cap, head, count;
	int stopping;
	long timeout_ms;
	char url[TRACE_URL_MAX];
	char auth[TRACE_AUTH_MAX];    /* "Authorization: Basic ..." or "" */
	int langfuse;
	char *resource;               /* the resource's JSON, built once */
	atomic_int failing;
	atomic_int aborting;          /* trace_stop: give up an export in flight */
	atomic_llong last_ms;
} ex = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

long long
trace_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void
count_spans(const char *outcome, size_t n)
{
	char labels[40];

	metrics_labels(labels, sizeof(labels), "outcome", outcome, (char *)NULL);
	metrics_counter_add("valerie_trace_spans_total", labels, (double)n);
}

/* `n` random bytes as lower-case hex into out (2n + 1 bytes), never all zeros. */
static void
random_hex(char *out, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char b[16];
	size_t i;

	do {
		arc4random_buf(b, n);
		for (i = 0; i < n && b[i] == 0; i++)
			;
	} while (i == n);
	for (i = 0; i < n; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 15];
	}
	out[2 * n] = '\0';
}

/* Whether s[0..n) is lower-case hex and not all zeros. */
static int
hex_id(const char *s, size_t n)
{
	size_t i;
	int nonzero = 0;

	for (i = 0; i < n; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
		nonzero |= s[i] != '0';
	}
	return nonzero;
}

/* --- building spans ------------------------------------------------------- */

static void
attr_value(struct json_object *attrs, const char *key, const char *type, struct json_object *v)
{
	struct json_object *a = json_object_new_object(), *val = json_object_new_object();

	if (a == NULL || val == NULL || v == NULL) {
		json_object_put(a);
		json_object_put(val);
		json_object_put(v);
		return;
	}
	json_object_object_add(val, type, v);
	json_object_object_add(a, "key", json_object_new_string(key));
	json_object_object_add(a, "value", val);
	if (json_object_array_add(attrs, a) != 0)
		json_object_put(a);
}

static void
attr_str(struct json_object *attrs, const char *key, const char *v, size_t len)
{
	attr_value(attrs, key, "stringValue", json_object_new_string_len(v, (int)len));
}

static void
attr_cstr(struct json_object *attrs, const char *key, const char *v)
{
	attr_str(attrs, key, v, strlen(v));
}

/*
 * `v` into `out` with each JSON string that is a base64 data URL
 * ("data:<type>;base64,...", an image or a PDF a user sent) replaced by a note of its
 * type and size. Returns 1 when it replaced one, else 0 (`out` unused).
 */
static int
elide_data_urls(const char *v, size_t len, struct buf *out)
{
	/* from: the first byte not copied yet; p: where the search goes on. */
	const char *from = v, *p = v, *end = v + len, *q, *type, *stop, *d, *e;

	while ((q = memmem(p, (size_t)(end - p), "\"data:", 6)) != NULL) {
		type = q + 6;
		p = q + 1;
		for (stop = type; stop < end && *stop != '"' && *stop != ';' && *stop != ','; stop++)
			;
		if ((size_t)(end - stop) < 8 || memcmp(stop, ";base64,", 8) != 0 || stop - type > 64)
			continue;
		for (e = d = stop + 8; e < end && *e != '"' && *e != '\\'; e++)
			;
		if (e == end || *e != '"')
			continue;
		buf_append(out, from, (size_t)(q - from));
		buf_printf(out, "\"[%.*s, %zu bytes of base64, not traced]\"", (int)(stop - type), type,
		    (size_t)(e - d));
		from = p = e + 1;
	}
	if (from == v)
		return 0;
	buf_append(out, from, (size_t)(end - from));
	return 1;
}

/*
 * `v` into `out` with the base64 of each audio part a user sent
 * ("input_audio":{"data":"...", as openai_api.c rebuilds it) replaced by a
 * note of its size. Returns 1 when it replaced one, else 0 (`out` unused).
 */
static int
elide_audio(const char *v, size_t len, struct buf *out)
{
	static const char key[] = "\"input_audio\":{\"data\":\"";
	const size_t klen = sizeof(key) - 1;
	const char *from = v, *p = v, *end = v + len, *q, *d, *e;

	while ((q = memmem(p, (size_t)(end - p), key, klen)) != NULL) {
		d = q + klen;
		for (e = d; e < end && *e != '"' && *e != '\\'; e++)
			;
		if (e == end || *e != '"') {
			p = d;
			continue;
		}
		buf_append(out, from, (size_t)(d - 1 - from));
		buf_printf(out, "\"[audio, %zu bytes of base64, not traced]\"", (size_t)(e - d));
		from = p = e + 1;
	}
	if (from == v)
		return 0;
	buf_append(out, from, (size_t)(end - from));
	return 1;
}

/*
 * A conversation's text (an input or output): images, files and audio sent
 * inline replaced by a note (a trace keeps the conversation, not megabytes
 * of base64 that the cap would cut into noise; http(s) image URLs stay,
 * Langfuse shows them), then at most TRACE_CONTENT_MAX bytes, cut on a character boundary
 * and marked with the whole length, so one long reply cannot make an export
 * the collector refuses. `sent`: the text is what a client sent (the parts
 * Valerie rebuilt), where audio is looked for; replies and tool data are
 * not rewritten for it.
 */
static void
attr_content(struct json_object *attrs, const char *key, const char *v, size_t len, int sent)
{
	struct buf b, e, a;

	buf_init(&e);
	buf_init(&a);
	if (elide_data_urls(v, len, &e) && !e.oom) {
		v = e.data;
		len = e.len;
	}
	if (sent && elide_audio(v, len, &a) && !a.oom) {
		v = a.data;
		len = a.len;
	}
	if (len <= TRACE_CONTENT_MAX) {
		attr_str(attrs, key, v, len);
	} else {
		buf_init(&b);
		buf_append(&b, v, utf8_prefix(v, len, TRACE_CONTENT_MAX));
		buf_printf(&b, "... [truncated, %zu bytes in all]", len);
		if (!b.oom)
			attr_str(attrs, key, b.data, b.len);
		buf_free(&b);
	}
	buf_free(&a);
	buf_free(&e);
}

/* OTLP JSON carries 64-bit integers as decimal strings. */
static void
attr_int(struct json_object *attrs, const char *key, long long v)
{
	char n[24];

	snprintf(n, sizeof(n), "%lld", v);
	attr_value(attrs, key, "intValue", json_object_new_string(n));
}

static struct json_object *
ns_string(long long ns)
{
	char n[24];

	snprintf(n, sizeof(n), "%lld", ns);
	return json_object_new_string(n);
}

/*
 * A span of the turn's trace with the trace-level attributes (Langfuse reads
 * them from every span). `kind`: 1 internal, 2 server, 3 client. NULL on OOM.
 */
static struct json_object *
span_new(const struct trace_turn *t, const char *span_id, const char *parent, const char *name,
    int kind, long long start_ns, long long end_ns, struct json_object **attrs)
{
	struct json_object *s = json_object_new_object();

	*attrs = json_object_new_array();
	if (s == NULL || *attrs == NULL) {
		json_object_put(s);
		json_object_put(*attrs);
		return NULL;
	}
	json_object_object_add(s, "traceId", json_object_new_string(t->trace_id));
	json_object_object_add(s, "spanId", json_object_new_string(span_id));
	if (parent != NULL && *parent != '\0')
		json_object_object_add(s, "parentSpanId", json_object_new_string(parent));
	json_object_object_add(s, "name", json_object_new_string(name));
	json_object_object_add(s, "kind", json_object_new_int(kind));
	json_object_object_add(s, "startTimeUnixNano", ns_string(start_ns));
	json_object_object_add(s, "endTimeUnixNano", ns_string(end_ns > start_ns ? end_ns : start_ns));
	json_object_object_add(s, "attributes", *attrs);
	attr_cstr(*attrs, "langfuse.trace.name", t->name);
	/* NOTE: empty ids are left out: Langfuse would record a session or a user named "". */
	if (t->session_id[0] != '\0')
		attr_cstr(*attrs, "session.id", t->session_id);
	if (t->user_id[0] != '\0')
		attr_cstr(*attrs, "user.id", t->user_id);
	return s;
}

/* OTLP status: 1 ok, 2 error with its message. */
static void
span_status(struct json_object *s, const char *error)
{
	struct json_object *st = json_object_new_object();

	if (st == NULL)
		return;
	json_object_object_add(st, "code", json_object_new_int(error != NULL ? 2 : 1));
	if (error != NULL)
		json_object_object_add(st, "message", json_object_new_string(error));
	json_object_object_add(s, "status", st);
}

/* Serialises the span (owned) into the ring; drops it (counted) when the ring is full. */
static void
enqueue(struct json_object *s)
{
	size_t len;
	const char *json = json_object_to_json_string_length(s, JSON_PLAIN, &len);
	char *text = NULL;

	/*
	 * NOTE: json-c copies bytes from 0x80 as they are: ill-formed UTF-8 (an
	 * upstream's error message cut at a byte count) would make the whole
	 * batch invalid JSON, refused by the collector. Such bytes sit inside
	 * strings, where \ufffd stands in for them.
	 */
	if (json != NULL && !utf8_valid(json, len)) {
		struct buf fixed;

		buf_init(&fixed);
		utf8_repair(&fixed, json, len, "\\ufffd");
		if (!fixed.oom && fixed.len > 0)
			text = fixed.data;   /* NUL-terminated (buf.h); the ring owns it now */
		else
			buf_free(&fixed);
	} else if (json != NULL) {
		text = strdup(json);
	}
	json_object_put(s);
	if (text == NULL) {
		count_spans("dropped", 1);
		return;
	}
	pthread_mutex_lock(&ex.mu);
	if (ex.count == ex.cap || ex.stopping) {
		pthread_mutex_unlock(&ex.mu);
		free(text);
		count_spans("dropped", 1);
		return;
	}
	ex.ring[(ex.head + ex.count) % ex.cap] = text;
	ex.count++;
	if (ex.count >= TRACE_BATCH_MAX)
		pthread_cond_signal(&ex.cv);
	pthread_mutex_unlock(&ex.mu);
}

int
trace_enabled(void)
{
	return ex.on;
}

void
trace_turn_begin(struct trace_turn *t, const char *traceparent, const char *name,
    const char *session_id, const char *user_id)
{
	memset(t, 0, sizeof(*t));
	if (!ex.on)
		return;
	t->on = 1;
	/* W3C: version "00", 32-hex trace id, 16-hex parent id, 2-hex flags. */
	if (traceparent != NULL && strlen(traceparent) == 55 && memcmp(traceparent, "00-", 3) == 0 &&
	    traceparent[35] == '-' && traceparent[52] == '-' && hex_id(traceparent + 3, 32) &&
	    hex_id(traceparent + 36, 16)) {
		memcpy(t->trace_id, traceparent + 3, 32);
		memcpy(t->parent_id, traceparent + 36, 16);
	} else {
		random_hex(t->trace_id, 16);
	}
	random_hex(t->span_id, 8);
	snprintf(t->name, sizeof(t->name), "%s", name);
	snprintf(t->session_id, sizeof(t->session_id), "%s", session_id != NULL ? session_id : "");
	snprintf(t->user_id, sizeof(t->user_id), "%s", user_id != NULL ? user_id : "");
	t->start_ns = trace_now_ns();
}

void
trace_generation(const struct trace_turn *t, const struct trace_generation *g)
{
	struct json_object *s, *attrs;
	char id[SPAN_ID_HEX + 1], name[200], usage[80], ts[32];

	if (t == NULL || !t->on)
		return;
	random_hex(id, 8);
	snprintf(name, sizeof(name), "chat %s", g->model);
	s = span_new(t, id, t->span_id, name, 3, g->start_ns, g->end_ns, &attrs);
	if (s == NULL) {
		count_spans("dropped", 1);
		return;
	}
	attr_cstr(attrs, "langfuse.observation.type", "generation");
	attr_cstr(attrs, "langfuse.observation.model.name", g->model);
	attr_cstr(attrs, "gen_ai.system", g->provider);
	attr_cstr(attrs, "gen_ai.request.model", g->model);
	attr_cstr(attrs, "gen_ai.operation.name", "chat");
	attr_int(attrs, "gen_ai.usage.input_tokens", g->input_tokens);
	attr_int(attrs, "gen_ai.usage.output_tokens", g->output_tokens);
	snprintf(usage, sizeof(usage), "{\"input\":%lld,\"output\":%lld}", g->input_tokens,
	    g->output_tokens);
	attr_cstr(attrs, "langfuse.observation.usage_details", usage);
	attr_int(attrs, "valerie.attempts", g->attempts);
	if (g->first_token_ns > 0) {
		vtime_iso(g->first_token_ns / 1000000, ts);
		attr_cstr(attrs, "langfuse.observation.completion_start_time", ts);
	}
	if (ex.content && g->input != NULL) {
		const char *in = json_object_to_json_string_ext(g->input, JSON_PLAIN);

		if (in != NULL)
			attr_content(attrs, "langfuse.observation.input", in, strlen(in), 1);
	}
	if (ex.content && g->output != NULL && g->error == NULL)
		attr_content(attrs, "langfuse.observation.output", g->output, g->output_len, 0);
	if (g->error != NULL) {
		attr_cstr(attrs, "langfuse.observation.level", "ERROR");
		attr_cstr(attrs, "langfuse.observation.status_message", g->error);
	}
	span_status(s, g->error);
	enqueue(s);
}

void
trace_tool(const struct trace_turn *t, const struct trace_tool *c)
{
	struct json_object *s, *attrs;
	char id[SPAN_ID_HEX + 1], name[200];

	if (t == NULL || !t->on)
		return;
	random_hex(id, 8);
	snprintf(name, sizeof(name), "%s.%s", c->agent, c->tool);
	s = span_new(t, id, t->span_id, name, 3, c->start_ns, c->end_ns, &attrs);
	if (s == NULL) {
		count_spans("dropped", 1);
		return;
	}
	attr_cstr(attrs, "langfuse.observation.type", "tool");
	attr_cstr(attrs, "gen_ai.operation.name", "execute_tool");
	attr_cstr(attrs, "gen_ai.tool.name", name);
	attr_cstr(attrs, "valerie.agent", c->agent);
	if (ex.content && c->input != NULL)
		attr_content(attrs, "langfuse.observation.input", c->input, strlen(c->input), 0);
	if (ex.content && c->output != NULL)
		attr_content(attrs, "langfuse.observation.output", c->output, c->output_len, 0);
	if (c->error != NULL) {
		attr_cstr(attrs, "langfuse.observation.level", "ERROR");
		attr_cstr(attrs, "langfuse.observation.status_message", c->error);
	}
	span_status(s, c->error);
	enqueue(s);
}

void
trace_turn_end(const struct trace_turn *t, int status, const char *error, const char *input,
    const char *output, size_t output_len)
{
	struct json_object *s, *attrs;

	if (t == NULL || !t->on)
		return;
	s = span_new(t, t->span_id, t->parent_id, t->name, 2, t->start_ns, trace_now_ns(), &attrs);
	if (s == NULL) {
		count_spans("dropped", 1);
		return;
	}
	attr_cstr(attrs, "langfuse.observation.type", "span");
	attr_cstr(attrs, "http.route", t->name);
	attr_int(attrs, "http.response.status_code", status);
	if (ex.content && input != NULL) {
		attr_content(attrs, "langfuse.trace.input", input, strlen(input), 1);
		attr_content(attrs, "langfuse.observation.input", input, strlen(input), 1);
	}
	if (ex.content && output != NULL && error == NULL) {
		attr_content(attrs, "langfuse.trace.output", output, output_len, 0);
		attr_content(attrs, "langfuse.observation.output", output, output_len, 0);
	}
	if (error != NULL) {
		attr_cstr(attrs, "langfuse.observation.level", "ERROR");
		attr_cstr(attrs, "langfuse.observation.status_message", error);
	}
	span_status(s, error);
	enqueue(s);
}

/* --- the exporter thread -------------------------------------------------- */

static int
export_cancelled(void *arg)
{
	(void)arg;
	return atomic_load(&ex.aborting);
}

/*
 * POSTs `n` spans as one OTLP request; counts them exported or failed.
 * Returns 0 when the collector answered (whatever the status), -1 when it
 * could not be reached or did not answer.
 */
static int
export_request(struct httpc *http, char **spans, size_t n)
{
	struct httpc_request req;
	struct httpc_response resp;
	struct buf body;
	const char *headers[5];
	enum httpc_result r;
	char err[200];
	size_t i, h = 0;
	long long t0 = vtime_mono_ms();
	int ok;

	buf_init(&body);
	buf_puts(&body, "{\"resourceSpans\":[{\"resource\":");
	buf_puts(&body, ex.resource);
	buf_puts(&body, ",\"scopeSpans\":[{\"scope\":{\"name\":\"valerie\",\"version\":\""
	    PACKAGE_VERSION "\"},\"spans\":[");
	for (i = 0; i < n; i++) {
		if (i > 0)
			buf_puts(&body, ",");
		buf_puts(&body, spans[i]);
	}
	buf_puts(&body, "]}]}]}");
	if (body.oom) {
		buf_free(&body);
		count_spans("failed", n);
		atomic_store(&ex.failing, 1);
		return 0;
	}
	headers[h++] = "Content-Type: application/json";
	if (ex.auth[0] != '\0')
		headers[h++] = ex.auth;
	if (ex.langfuse)
		headers[h++] = "x-langfuse-ingestion-version: 4";
	headers[h] = NULL;
	memset(&req, 0, sizeof(req));
	req.method = "POST";
	req.url = ex.url;
	req.headers = headers;
	req.body = body.data;
	req.body_len = body.len;
	req.connect_timeout_ms = ex.timeout_ms;
	req.total_timeout_ms = ex.timeout_ms;
	req.max_bytes = TRACE_ANSWER_MAX;
	req.cancelled = export_cancelled;
	r = httpc_perform(http, &req, &resp, err, sizeof(err));
	ok = r == HTTPC_OK && resp.status >= 200 && resp.status <= 299;
	atomic_store(&ex.last_ms, vtime_mono_ms() - t0);
	atomic_store(&ex.failing, !ok);
	count_spans(ok ? "exported" : "failed", n);
	if (!ok) {
		struct json_object *f = json_object_new_object();

		if (f != NULL) {
			json_object_object_add(f, "spans", json_object_new_int64((long long)n));
			json_object_object_add(f, "error", json_object_new_string(r == HTTPC_OK ?
			    "the collector answered with an error status" : err));
			json_object_object_add(f, "status", json_object_new_int64(resp.status));
		}
		log_emit(LOG_LVL_WARNING, "trace export failed", f);
		json_object_put(f);
	}
	httpc_response_free(&resp);
	buf_free(&body);
	return r == HTTPC_OK ? 0 : -1;
}

/*
 * Exports `n` spans in requests of at most TRACE_BODY_MAX bytes (a span
 * larger than that alone goes alone). Once the collector cannot be reached,
 * the rest is counted failed without trying: each try could take the whole
 * export timeout.
 */
static void
export_batch(struct httpc *http, char **spans, size_t n)
{
	size_t i = 0, j, size, len;

	while (i < n) {
		size = strlen(ex.resource) + 256;   /* the envelope and the resource */
		for (j = i; j < n; j++) {
			len = strlen(spans[j]) + 1;
			if (j > i && size + len > TRACE_BODY_MAX)
				break;
			size += len;
		}
		if (export_request(http, spans + i, j - i) != 0) {
			if (j < n)
				count_spans("failed", n - j);
			return;
		}
		i = j;
	}
}

static void *
exporter(void *arg)
{
	struct httpc *http = httpc_new();
	char *batch[TRACE_BATCH_MAX];
	struct timespec until;
	size_t n, i;
	int stopping;

	(void)arg;
	for (;;) {
		pthread_mutex_lock(&ex.mu);
		if (ex.count < TRACE_BATCH_MAX && !ex.stopping) {
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += TRACE_FLUSH_MS / 1000;
			pthread_cond_timedwait(&ex.cv, &ex.mu, &until);
		}
		n = ex.count < TRACE_BATCH_MAX ? ex.count : TRACE_BATCH_MAX;
		for (i = 0; i < n; i++) {
			batch[i] = ex.ring[ex.head];
			ex.head = (ex.head + 1) % ex.cap;
		}
		ex.count -= n;
		stopping = ex.stopping;
		pthread_mutex_unlock(&ex.mu);
		if (n > 0) {
			if (http != NULL)
				export_batch(http, batch, n);
			else
				count_spans("failed", n);
			for (i = 0; i < n; i++)
				free(batch[i]);
		}
		/*
		 * NOTE: when stopping, batches go on until the queue is empty
		 * or trace_stop gives up (TRACE_STOP_WAIT_S, `aborting`); what
		 * is left then is dropped, and counted, by trace_stop.
		 */
		if (stopping && (n == 0 || atomic_load(&ex.aborting)))
			break;
	}
	httpc_free(http);
	return NULL;
}

/* The resource: service name and version, host, environment. */
static char *
resource_json(const struct conf *conf)
{
	struct json_object *r = json_object_new_object(), *attrs = json_object_new_array();
	char host[256] = "";
	char *text = NULL;

	if (r == NULL || attrs == NULL) {
		json_object_put(r);
		json_object_put(attrs);
		return NULL;
	}
	json_object_object_add(r, "attributes", attrs);
	attr_cstr(attrs, "service.name", "valerie");
	attr_cstr(attrs, "service.version", PACKAGE_VERSION);
	if (gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0')
		attr_cstr(attrs, "host.name", host);
	attr_cstr(attrs, "deployment.environment", conf->env);
	text = strdup(json_object_to_json_string_ext(r, JSON_PLAIN));
	json_object_put(r);
	return text;
}

/* "Authorization: Basic " + base64(public:secret). Returns -1 if it does not fit. */
static int
basic_auth(const char *user, const char *secret, char *out, size_t outlen)
{
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char plain[900];
	size_t len, i, o;
	int n;

	n = snprintf(plain, sizeof(plain), "%s:%s", user, secret);
	if (n < 0 || (size_t)n >= sizeof(plain))
		return -1;
	len = (size_t)n;
	o = (size_t)snprintf(out, outlen, "Authorization: Basic ");
	if (o + (len + 2) / 3 * 4 + 1 > outlen) {
		explicit_bzero(plain, sizeof(plain));
		return -1;
	}
	for (i = 0; i < len; i += 3) {
		unsigned v = (unsigned char)plain[i] << 16;

		if (i + 1 < len)
			v |= (unsigned char)plain[i + 1] << 8;
		if (i + 2 < len)
			v |= (unsigned char)plain[i + 2];
		out[o++] = b64[(v >> 18) & 63];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = i + 1 < len ? b64[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? b64[v & 63] : '=';
	}
	out[o] = '\0';
	explicit_bzero(plain, sizeof(plain));
	return 0;
}

/* The collector's URL: base without trailing slashes, then `path`. */
static int
join_url(char *out, size_t outlen, const char *base, const char *path)
{
	size_t blen = strlen(base);
	int n;

	while (blen > 0 && base[blen - 1] == '/')
		blen--;
	n = snprintf(out, outlen, "%.*s%s", (int)blen, base, path);
	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

int
trace_start(const struct conf *conf, char *err, size_t errlen)
{
	static const char *const outcomes[] = {"exported", "dropped", "failed"};
	size_t i;

	for (i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++)
		count_spans(outcomes[i], 0);
	if (ex.on)
		return 0;
	ex.auth[0] = '\0';
	ex.langfuse = 0;
	if (conf->langfuse_host != NULL && *conf->langfuse_host != '\0' &&
	    conf->langfuse_public_key != NULL && conf->langfuse_secret_key != NULL) {
		if (join_url(ex.url, sizeof(ex.url), conf->langfuse_host,
		    "/api/public/otel/v1/traces") != 0 ||
		    basic_auth(conf->langfuse_public_key, conf->langfuse_secret_key, ex.auth,
		    sizeof(ex.auth)) != 0) {
			snprintf(err, errlen, "LANGFUSE_HOST or the Langfuse keys are too long");
			return -1;
		}
		ex.langfuse = 1;
	} else if (conf->otlp_endpoint != NULL && *conf->otlp_endpoint != '\0') {
		if (join_url(ex.url, sizeof(ex.url), conf->otlp_endpoint, "/v1/traces") != 0) {
			snprintf(err, errlen, "OTEL_EXPORTER_OTLP_ENDPOINT is too long");
			return -1;
		}
	} else {
		return 0;   /* tracing off */
	}
	ex.content = strcmp(conf->trace_content, "true") == 0;
	ex.timeout_ms = (long)conf->trace_export_timeout_ms;
	ex.cap = (size_t)conf->trace_queue_size;
	ex.head = ex.count = 0;
	ex.stopping = 0;
	atomic_store(&ex.failing, 0);
	atomic_store(&ex.last_ms, 0);
	ex.ring = calloc(ex.cap, sizeof(*ex.ring));
	ex.resource = resource_json(conf);
	if (ex.ring == NULL || ex.resource == NULL) {
		free(ex.ring);
		free(ex.resource);
		ex.ring = NULL;
		ex.resource = NULL;
		snprintf(err, errlen, "out of memory for the trace queue");
		return -1;
	}
	if (pthread_create(&ex.thread, NULL, exporter, NULL) != 0) {
		free(ex.ring);
		free(ex.resource);
		ex.ring = NULL;
		ex.resource = NULL;
		snprintf(err, errlen, "cannot start the trace exporter thread");
		return -1;
	}
	ex.on = 1;
	return 0;
}

void
trace_stop(void)
{
	struct timespec until;
	size_t dropped;

	if (!ex.on)
		return;
	pthread_mutex_lock(&ex.mu);
	ex.stopping = 1;
	pthread_cond_signal(&ex.cv);
	pthread_mutex_unlock(&ex.mu);
	/*
	 * The exporter goes on until what is queued is exported; if that takes
	 * longer (a collector that hangs or is slow) it is given up after
	 * TRACE_STOP_WAIT_S (httpc polls `cancelled` about once a second), so a
	 * dead collector never holds a worker's exit.
	 */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += TRACE_STOP_WAIT_S;
	if (pthread_timedjoin_np(ex.thread, NULL, &until) != 0) {
		atomic_store(&ex.aborting, 1);
		pthread_join(ex.thread, NULL);
		atomic_store(&ex.aborting, 0);
	}
	/* What the exporter could not send before it was given up is dropped, and counted. */
	for (dropped = 0; ex.count > 0; dropped++) {
		free(ex.ring[ex.head]);
		ex.head = (ex.head + 1) % ex.cap;
		ex.count--;
	}
	if (dropped > 0)
		count_spans("dropped", dropped);
	free(ex.ring);
	free(ex.resource);
	ex.ring = NULL;
	ex.resource = NULL;
	ex.on = 0;
}

void
trace_health(const char **status, size_t *queued, long long *last_ms)
{
	*queued = 0;
	*last_ms = 0;
	if (!ex.on) {
		*status = "disabled";
		return;
	}
	pthread_mutex_lock(&ex.mu);
	*queued = ex.count;
	pthread_mutex_unlock(&ex.mu);
	*status = atomic_load(&ex.failing) ? "failing" : "ok";
	*last_ms = atomic_load(&ex.last_ms);
}
