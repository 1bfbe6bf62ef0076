/* provider: one call to a language model, whole or streamed, whatever the wire format behind it. */
#ifndef VALERIE_PROVIDER_H
#define VALERIE_PROVIDER_H

#include <stddef.h>

#include "buf.h"

#define PROVIDER_RESPONSE_MAX (8 * 1024 * 1024)   /* a whole (non-streamed) answer */
#define PROVIDER_STREAM_MAX (16 * 1024 * 1024)    /* all the bytes of one stream */

struct conf;
struct httpc;
struct json_object;

enum provider_status {
	PROVIDER_OK = 0,
	PROVIDER_CANCELLED,   /* the caller's client went away */
	PROVIDER_ERROR,       /* the upstream failed or answered garbage: 502 */
	PROVIDER_TIMEOUT,     /* 504 */
	PROVIDER_NOMEM
};

/*
 * A request. `messages` is an OpenAI-shaped array of {role, content}: the
 * system prompt first (if any), then the history, then the new user message
 * (borrowed). When `on_delta` is set the reply is streamed: it is called with
 * each piece of text as it comes and returns -1 to abandon the call (the
 * client is gone). `cancelled` (may be NULL) is polled while waiting.
 * `deadline_ms` (CLOCK_MONOTONIC milliseconds, 0 for none) bounds the whole
 * call, retries included.
 */
struct llm_request {
	struct json_object *messages;
	const char *model;                /* NULL: the provider's default model */
	const char *session_id;
	int turn;                         /* the turn being answered (1, 2, ...) */
	long long deadline_ms;
	int (*on_delta)(void *ctx, const char *text, size_t len);
	int (*cancelled)(void *ctx);
	void *ctx;
};

/* The result; the caller owns it: provider_result_free. */
struct llm_result {
	struct buf text;                  /* the whole reply */
	long long input_tokens;
	long long output_tokens;
	const char *provider;             /* static name */
	char model[128];
	char error[256];                  /* why, when not PROVIDER_OK */
	int attempts;                     /* upstream calls made */
	int streamed;                     /* deltas already went to the client */
};

void provider_result_free(struct llm_result *r);

/*
 * Answers `req` with the configured provider (VALERIE_LLM_PROVIDER), using
 * this thread's HTTP handle `http` for network providers.
 */
enum provider_status provider_complete(const struct conf *conf, struct httpc *http,
    const struct llm_request *req, struct llm_result *res);

/* provider_offline.c: deterministic, no network; says plainly it is not a model. */
enum provider_status provider_offline_complete(const struct conf *conf,
    const struct llm_request *req, struct llm_result *res);

/* provider_openai.c: OpenAI chat completions and every compatible server. */
enum provider_status provider_openai_complete(const struct conf *conf, struct httpc *http,
    const struct llm_request *req, struct llm_result *res);

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

/* Monotonic milliseconds. */
long long provider_now_ms(void);

#endif
