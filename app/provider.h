/* provider: one call to a language model, whole or streamed, whatever the wire format behind it. */
#ifndef VALERIE_PROVIDER_H
#define VALERIE_PROVIDER_H

#include <stddef.h>

#include "buf.h"

#define PROVIDER_RESPONSE_MAX (8 * 1024 * 1024)   /* a whole (non-streamed) answer */
#define PROVIDER_STREAM_MAX (16 * 1024 * 1024)    /* all the bytes of one stream */
/* After a stream's clean end, how long HTTP's last chunk may take before the call is cut. */
#define PROVIDER_DONE_GRACE_MS 250
#define PROVIDER_CALL_MIN_MS 100                  /* less left of the turn: no fallback call */

struct circuits;
struct conf;
struct httpc;
struct json_object;
struct trace_turn;

enum provider_status {
	PROVIDER_OK = 0,
	PROVIDER_CANCELLED,   /* the caller's client went away */
	PROVIDER_ERROR,       /* the upstream failed or answered garbage: 502 */
	PROVIDER_TIMEOUT,     /* 504 */
	PROVIDER_UNAVAILABLE, /* every provider's circuit is open: 503 */
	PROVIDER_NOMEM,
	PROVIDER_REJECTED,    /* the upstream refused the request itself (4xx): 400 */
	PROVIDER_UNSUPPORTED  /* this provider has no form for part of the request (Anthropic
	                         and audio), which another may take: provider_complete passes
	                         over it, and answers REJECTED when none can */
};

/* Sampling settings a caller may set; each unset one leaves the provider's default. */
struct llm_params {
	double temperature;
	double top_p;
	int has_temperature;              /* whether temperature is set */
	int has_top_p;
	long long max_tokens;             /* 0: not set */
	int max_completion_tokens;        /* OpenAI: send it under that newer name */
	struct json_object *stop;         /* a string or an array of strings, or NULL */
	/*
	 * OpenAI's other request fields, checked at the boundary, as an object
	 * (borrowed; NULL for none): seed, presence_penalty, frequency_penalty,
	 * logit_bias, user, response_format, parallel_tool_calls. The openai
	 * provider sends them as they are; Anthropic translates what it can and
	 * refuses what would change the answer's meaning.
	 */
	struct json_object *openai_extra;
};

#define PROVIDER_TOOL_CALLS_MAX 64    /* tool calls in one answer */

/*
 * One tool call the model asked for, OpenAI-shaped: `arguments` is JSON text
 * (as the model wrote it; "" reads as {}).
 */
struct llm_tool_call {
	struct buf id;
	struct buf name;
	struct buf arguments;
};

/*
 * A request. `messages` is an OpenAI-shaped array: {role, content} with the
 * system prompt first (if any), then the history, then the new messages;
 * assistant messages may carry `tool_calls` and `tool` messages answer them
 * by `tool_call_id` (all borrowed). When `on_delta` is set the reply is streamed: it is called with
 * each piece of text as it comes and returns -1 to abandon the call (the
 * client is gone). `cancelled` (may be NULL) is polled while waiting.
 * `deadline_ms` (CLOCK_MONOTONIC milliseconds, 0 for none) bounds the whole
 * call, retries included.
 */
struct llm_request {
	struct json_object *messages;
	struct json_object *tools;        /* OpenAI-shaped tool definitions, or NULL */
	struct json_object *tool_choice;  /* OpenAI-shaped ("auto", {"type":"function"...}), or NULL */
	struct llm_params params;         /* sampling settings the caller set */
	const char *model;                /* NULL: the provider's default model */
	const char *session_id;
	int turn;                         /* the turn being answered (1, 2, ...) */
	long long deadline_ms;
	int (*on_delta)(void *ctx, const char *text, size_t len);
	int (*cancelled)(void *ctx);
	void *ctx;
	const struct trace_turn *trace;   /* each provider call is a generation span; may be NULL */
	int agents;                       /* MCP agents are configured (the offline /tool rule) */
};

/* The result; the caller owns it: provider_result_free. */
struct llm_result {
	struct buf text;                  /* the whole reply */
	struct llm_tool_call *tool_calls; /* the calls the model asked for, in order */
	size_t ntool_calls;
	char finish_reason[24];           /* OpenAI's: stop, length, tool_calls, content_filter */
	int refusal;                      /* `text` is the model's refusal (OpenAI's message.refusal,
	                                     delta.refusal), not an answer: the OpenAI format
	                                     answers it as such */
	long long input_tokens;
	long long output_tokens;
	const char *provider;             /* static name */
	char model[128];
	char error[256];                  /* why, when not PROVIDER_OK */
	int attempts;                     /* upstream calls made */
	int streamed;                     /* deltas already went to the client */
	int fallbacks;                    /* providers tried after the first */
	long last_status;                 /* the last non-2xx upstream status, 0 if none */
	long long provider_ms;            /* time spent in provider calls */
};

void provider_result_free(struct llm_result *r);

/*
 * Tool call number `index` (0-based) of `res`, created empty with those
 * before it if needed: streamed fragments are joined by index. NULL past
 * PROVIDER_TOOL_CALLS_MAX or out of memory.
 */
struct llm_tool_call *provider_tool_call(struct llm_result *res, size_t index);

/* Forgets the tool calls of `res` (a retry starts clean). */
void provider_tool_calls_clear(struct llm_result *res);

/*
 * The tool calls of `res` as OpenAI's `tool_calls` array
 * [{id, type: "function", function: {name, arguments}}]; NULL when there are
 * none (or out of memory: then *oom is set). Caller puts.
 */
struct json_object *provider_tool_calls_json(const struct llm_result *res, int *oom);

#define PROVIDER_CHAIN_MAX 8        /* providers in the chain */
#define PROVIDER_NAME_MAX 16        /* bytes of a provider's name, with its NUL */

/*
 * The chain: VALERIE_LLM_PROVIDER then each of VALERIE_LLM_FALLBACKS, without
 * repeats, into `chain`. Returns how many.
 */
size_t provider_chain(const struct conf *conf,
    char chain[PROVIDER_CHAIN_MAX][PROVIDER_NAME_MAX]);

/* The default model of provider `name`: OPENAI_MODEL, ANTHROPIC_MODEL, or "offline". */
const char *provider_default_model(const struct conf *conf, const char *name);

/*
 * Answers `req` with VALERIE_LLM_PROVIDER, then each of VALERIE_LLM_FALLBACKS
 * in order when a provider fails or its circuit (in `circuits`, shared by
 * the pool; NULL: no breakers) is open. Never falls back once text reached
 * the client. Uses this thread's HTTP handle `http` for network providers.
 * A provider that has no form for the request (PROVIDER_UNSUPPORTED:
 * Anthropic and audio) is passed over, uncalled and its circuit untouched;
 * the offline provider does not stand in for it unless a provider failed.
 * PROVIDER_UNAVAILABLE when every circuit was open; PROVIDER_REJECTED when the
 * request cannot be expressed or no provider could take it.
 */
enum provider_status provider_complete(const struct conf *conf, struct httpc *http,
    struct circuits *circuits, const struct llm_request *req, struct llm_result *res);

/* Registers the provider metrics of the chain at 0, so panels show 0, not "no data". */
void provider_metrics_init(const struct conf *conf);

/* Refreshes the gauges computed at scrape time (circuit states). */
void provider_metrics_scrape(const struct conf *conf, struct circuits *circuits);

/* The circuit state of provider `name` now ("closed", "half_open", "open"). */
const char *provider_circuit_state(const struct conf *conf, struct circuits *circuits,
    const char *name);

/* provider_offline.c: deterministic, no network; says plainly it is not a model. */
enum provider_status provider_offline_complete(const struct conf *conf,
    const struct llm_request *req, struct llm_result *res);

/* provider_openai.c: OpenAI chat completions and every compatible server. */
enum provider_status provider_openai_complete(const struct conf *conf, struct httpc *http,
    const struct llm_request *req, struct llm_result *res);

/* The request body a call with `model` sends (for tests too). Caller frees. NULL on OOM. */
char *provider_openai_body(const char *model, const struct llm_request *req);

/*
 * provider_anthropic.c: the Anthropic Messages API. `body` is what
 * provider_anthropic_body made of `req` for the model the call uses
 * (req->model, else ANTHROPIC_MODEL); the call frees it.
 */
enum provider_status provider_anthropic_complete(const struct conf *conf, struct httpc *http,
    const struct llm_request *req, char *body, struct llm_result *res);

/*
 * The request body an Anthropic call with `model` sends, translated from the
 * OpenAI-shaped request (for tests too): into *out (caller frees). PROVIDER_OK,
 * PROVIDER_REJECTED with `err` (the request cannot be expressed),
 * PROVIDER_UNSUPPORTED with `err` (the new message carries what the Messages
 * API has no form for: audio, a file named by an OpenAI file_id; the chain
 * passes over Anthropic, see provider_complete), or PROVIDER_NOMEM.
 */
enum provider_status provider_anthropic_body(const char *model, const struct llm_request *req,
    char **out, char *err, size_t errlen);

/* What an image part's URL is (provider_image_url). */
enum provider_image {
	PROVIDER_IMAGE_BAD = 0,
	PROVIDER_IMAGE_HTTP,   /* http:// or https:// */
	PROVIDER_IMAGE_DATA    /* data:image/<type>;base64,<data> */
};

#define PROVIDER_IMAGE_TYPE_MAX 16   /* "image/jpeg" and the like, with its NUL */

/*
 * What the URL of an image part ({type: "image_url", image_url: {url}}) is:
 * an http(s) URL of visible ASCII, or a data URL of a PNG, JPEG, GIF or WebP
 * image in well-formed base64. For a data URL, `media` (may be NULL) gets its
 * media type (image/jpg spelled image/jpeg) and *data (may be NULL) the
 * offset of the base64 text. Anything else is PROVIDER_IMAGE_BAD.
 */
enum provider_image provider_image_url(const char *url, size_t len,
    char media[PROVIDER_IMAGE_TYPE_MAX], size_t *data);

/*
 * Whether `s` (`len` bytes) is a data URL of a PDF, the one kind of file an
 * OpenAI file part ({type: "file", file: {file_data}}) carries inline:
 * data:application/pdf;base64,<well-formed base64>. *data (may be NULL) gets
 * the offset of the base64 text. 1 if it is, else 0.
 */
int provider_file_data(const char *s, size_t len, size_t *data);

/* Whether `s` (`len` bytes, at least 1) is well-formed base64 (groups of four, padded). */
int provider_base64(const char *s, size_t len);

/* The kinds of non-text content parts, to count them (provider_content_text). */
enum provider_media {
	PROVIDER_MEDIA_IMAGE = 0,   /* {type: "image_url"} */
	PROVIDER_MEDIA_FILE,        /* {type: "file"} */
	PROVIDER_MEDIA_AUDIO,       /* {type: "input_audio"} */
	PROVIDER_MEDIA_KINDS
};

/*
 * The text of an OpenAI-shaped message content (a string, or parts whose
 * text parts are joined by `sep`; null or absent is empty), appended to
 * `out`; media[kind] (media may be NULL) counts its image, file and audio
 * parts, which have no text. Returns 0, or -1 when the content is something
 * else or has a part of another kind.
 */
int provider_content_text(struct json_object *content, const char *sep, struct buf *out,
    size_t media[PROVIDER_MEDIA_KINDS]);

/* --- shared by the network providers (provider.c) --- */

/* What one attempt of a call came to. */
enum provider_attempt {
	ATTEMPT_DONE,        /* success, or a failure not worth retrying (status says) */
	ATTEMPT_RETRY        /* 429, 5xx, timeout, connection error before any delta */
};

/* Milliseconds left before the deadline (a large number when there is none). */
long long provider_time_left(const struct llm_request *req);

/*
 * Waits before retry number `attempt` (0 for the first retry): exponential
 * backoff from 250 ms capped at 8 s with full jitter, at least `retry_after_ms`
 * (-1: none). Returns 0, or -1 if the wait would pass the deadline or the
 * client went away (then nothing more should be tried).
 */
int provider_backoff(const struct llm_request *req, int attempt, long long retry_after_ms);

/* Sleeps `ms` in short steps; -1 as soon as the caller's client is gone. */
int provider_sleep(const struct llm_request *req, long long ms);

/* Monotonic milliseconds. */
long long provider_now_ms(void);

/* What an error the upstream sent inside a stream says of trying again. */
enum provider_error_kind {
	PROVIDER_ERR_RETRYABLE = 0,   /* overloaded, rate limited, a server fault, or unsaid */
	PROVIDER_ERR_FINAL,           /* a wrong key, no permission or credit, unknown: no retry */
	PROVIDER_ERR_REJECTED         /* the request itself was refused: no retry, 400 */
};

/*
 * The kind of an upstream error object {type?, code?} (OpenAI's or
 * Anthropic's): by its type, else by its code (a name, or an HTTP status as
 * some compatible servers send). One that names neither is retryable.
 */
enum provider_error_kind provider_error_kind(struct json_object *err);

/*
 * One streamed attempt as a wire format's event handler sees it. `done` is set
 * by the handler when the stream's clean end arrives ([DONE], message_stop);
 * `failed` with `why` when the upstream sent an error or garbage, and
 * `error_kind` when it was an error event (garbage stays retryable).
 */
struct provider_stream {
	const struct llm_request *req;
	struct llm_result *res;
	int done;
	int failed;
	int client_gone;
	enum provider_error_kind error_kind;
	long long input_parts[3];   /* Anthropic's input counts so far (provider_anthropic.c) */
	int start_input;            /* Anthropic: the last call's arguments came whole in its
	                               content_block_start; an input_json_delta replaces them */
	/* OpenAI: the call each streamed tool_calls[].index fills, plus 1 (0: not seen yet) */
	unsigned char tool_slot[PROVIDER_TOOL_CALLS_MAX];
	char why[200];
};

/*
 * Hands a piece of streamed text to the client (req->on_delta) and keeps it in
 * res->text (a refusal's text when res->refusal is set first). Returns 0, or
 * -1 when the client is gone (stop the stream).
 */
int provider_stream_text(struct provider_stream *s, const char *text, size_t len);

/* What makes one network provider's wire format; static tables in each provider. */
struct provider_wire {
	const char *name;         /* "openai": res->provider and the start of error texts */
	const char *stream_end;   /* the clean end of a stream, for error texts: "[DONE]" */
	/* One SSE event of a 2xx stream: 0 to go on, non-zero to stop (failed or client gone). */
	int (*on_event)(struct provider_stream *s, const char *event, const char *data,
	    size_t len);
	/* A whole 2xx body: fills res (text, usage, model); PROVIDER_OK or an error in res->error. */
	enum provider_status (*read_whole)(const char *body, size_t len, struct llm_result *res);
	/* The reason in a non-2xx body, one short line into `out`; -1 when it has none. */
	int (*error_text)(const char *body, size_t len, char *out, size_t outlen);
};

/* One call's settings (borrowed): the request and the provider's timeouts and retries. */
struct provider_call {
	const char *url;
	const char *const *headers;   /* NULL-terminated "Name: value" lines */
	const char *body;
	long long timeout_s;          /* <P>_TIMEOUT: one attempt in all */
	long long connect_timeout_ms;
	long long first_token_timeout_ms;
	long long max_retries;
};

/*
 * Makes the call over `http` with retries: 429, 408, 5xx (529 included),
 * timeouts, connection errors and a stream that failed before any delta went
 * out (unless its error event says retrying cannot help) are retried up to max_retries times with provider_backoff; nothing is
 * retried once text reached the client, nor after a 2xx body that is garbage
 * or too large. Fills `res` (res->attempts counts upstream calls).
 */
enum provider_status provider_http_complete(struct httpc *http, const struct provider_wire *w,
    const struct provider_call *call, const struct llm_request *req, struct llm_result *res);

/* Parses `len` bytes as JSON (default nesting cap); NULL if they are not JSON. Caller puts. */
struct json_object *provider_parse_json(const char *text, size_t len);

/* `base` without trailing slashes, then `path`, into out. Returns 0, or -1 if it does not fit. */
int provider_url(char *out, size_t outlen, const char *base, const char *path);

#endif
