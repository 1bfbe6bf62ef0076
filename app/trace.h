/* trace: OTLP/HTTP JSON traces of chat turns, sent by a background thread to Langfuse or any collector. */
#ifndef VALERIE_TRACE_H
#define VALERIE_TRACE_H

#include <stddef.h>

#include "store.h"

struct conf;
struct json_object;

#define TRACE_ID_HEX 32   /* 16 bytes */
#define SPAN_ID_HEX 16    /* 8 bytes */

/*
 * One chat turn's trace: its ids and the trace-level attributes every span
 * repeats (Langfuse reads them from any span). Plain data on the request's
 * stack; `on` is 0 when tracing is off, and then every call is a no-op.
 */
struct trace_turn {
	int on;
	char trace_id[TRACE_ID_HEX + 1];
	char span_id[SPAN_ID_HEX + 1];     /* the turn's own (root) span */
	char parent_id[SPAN_ID_HEX + 1];   /* the caller's span from `traceparent`, or "" */
	char name[64];                     /* the trace's name: the route */
	char session_id[STORE_ID_MAX + 1]; /* "" when stateless */
	char user_id[STORE_ID_MAX + 1];    /* "" when unknown: no user.id sent */
	long long start_ns;                /* Unix nanoseconds */
};

/* One provider call, as a generation span under the turn. Borrowed fields. */
struct trace_generation {
	const char *provider;
	const char *model;
	long long start_ns, end_ns;        /* Unix nanoseconds */
	long long first_token_ns;          /* 0 when nothing was streamed */
	long long input_tokens, output_tokens;
	int attempts;
	const char *error;                 /* NULL on success */
	struct json_object *input;         /* the messages sent (only with VALERIE_TRACE_CONTENT) */
	const char *output;                /* the reply's text */
	size_t output_len;
};

/* One tool call on an agent, as a tool span under the turn. Borrowed fields. */
struct trace_tool {
	const char *agent;
	const char *tool;
	long long start_ns, end_ns;
	const char *error;                 /* NULL when the tool answered */
	const char *input;                 /* the arguments (only with VALERIE_TRACE_CONTENT) */
	const char *output;                /* the result's text */
	size_t output_len;
};

/*
 * Starts this process's exporter when tracing is configured: LANGFUSE_HOST
 * with both Langfuse keys (OTLP at /api/public/otel/v1/traces, Basic auth),
 * else OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces). Registers the span
 * counters at 0 either way. Returns 0, or -1 with `err` filled.
 */
int trace_start(const struct conf *conf, char *err, size_t errlen);

/*
 * Stops the exporter: what is queued is exported, in as many batches as it
 * takes, for at most TRACE_STOP_WAIT_S (3 s; the rest is dropped and
 * counted), then the thread is joined and everything freed.
 */
void trace_stop(void);

/* Whether spans are being exported. */
int trace_enabled(void);

/* Unix time in nanoseconds. */
long long trace_now_ns(void);

/*
 * Begins a turn's trace: new ids, or the trace id and parent span of a valid
 * W3C `traceparent` header (may be NULL). No-op (t->on = 0) when tracing is off.
 */
void trace_turn_begin(struct trace_turn *t, const char *traceparent, const char *name,
    const char *session_id, const char *user_id);

/* Queues a generation span for one provider call. Never blocks on the network. */
void trace_generation(const struct trace_turn *t, const struct trace_generation *g);

/* Queues a tool span for one agent tool call. Never blocks on the network. */
void trace_tool(const struct trace_turn *t, const struct trace_tool *c);

/*
 * Queues the turn's root span, ended now: `error` NULL on success; `input`
 * and `output` (the user's messages as JSON text, the reply) are recorded only
 * with VALERIE_TRACE_CONTENT=true. Never blocks on the network.
 */
void trace_turn_end(const struct trace_turn *t, int status, const char *error,
    const char *input, const char *output, size_t output_len);

/*
 * The exporter's state for /health/detailed: "disabled", "ok" (the last
 * export succeeded, or none was due yet) or "failing", with the spans queued
 * now and the last export's time in milliseconds.
 */
void trace_health(const char **status, size_t *queued, long long *last_ms);

#endif
