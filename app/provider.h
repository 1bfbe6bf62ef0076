/* provider: one call to a language model, whole or streamed, whatever the wire format behind it. */
#ifndef VALERIE_PROVIDER_H
#define VALERIE_PROVIDER_H

#include <stddef.h>

#include "buf.h"

struct conf;
struct json_object;

enum provider_status {
	PROVIDER_OK = 0,
	PROVIDER_CANCELLED,   /* the caller's client went away */
	PROVIDER_ERROR,       /* the upstream failed: 502 */
	PROVIDER_TIMEOUT,     /* 504 */
	PROVIDER_NOMEM
};

/*
 * A request. `messages` is an OpenAI-shaped array of {role, content}: the
 * system prompt first, then the history, then the new user message
 * (borrowed). When `on_delta` is set the reply is streamed: it is called with
 * each piece of text as it comes and returns -1 to abandon the call (the
 * client is gone). `cancelled` (may be NULL) is polled while waiting.
 */
struct llm_request {
	struct json_object *messages;
	const char *session_id;
	int turn;                         /* the turn being answered (1, 2, ...) */
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
};

void provider_result_free(struct llm_result *r);

/*
 * Answers `req` with the configured provider (VALERIE_LLM_PROVIDER). Today
 * only the built-in offline provider exists; the others answer
 * PROVIDER_ERROR saying so until their clients land.
 */
enum provider_status provider_complete(const struct conf *conf, const struct llm_request *req,
    struct llm_result *res);

/* provider_offline.c: deterministic, no network; says plainly it is not a model. */
enum provider_status provider_offline_complete(const struct conf *conf,
    const struct llm_request *req, struct llm_result *res);

#endif
