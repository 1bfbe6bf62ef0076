/* chat: the chat turn engine, the native chat routes, and what the OpenAI-compatible routes reuse. */
#ifndef VALERIE_CHAT_H
#define VALERIE_CHAT_H

#include <stddef.h>

#include "provider.h"
#include "store.h"

#define CHAT_IDEM_KEY_MAX 200        /* Idempotency-Key header length */

struct handler_ctx;
struct json_object;

/* Whether s (of length len) is 1..128 characters of [A-Za-z0-9_.:-], no NUL, not "." or "..". */
int chat_session_id_valid(const char *s, size_t len);

/*
 * The rule for a client that resends its copy of the conversation with a
 * session id: everything up to its last assistant message is history, the
 * new messages are those after it. The index in `msgs` of the first new one
 * (0 when there is no assistant message). chat_run sends and stores from
 * there once the session has turns; the OpenAI route checks the length of
 * the user text from there; an Idempotency-Key replay compares from there.
 */
size_t chat_new_from(struct json_object *msgs);

/* A turn's answer, whatever the format it is sent in. Borrowed fields. */
struct chat_answer {
	const char *session_id;   /* "" when stateless */
	int turn;                 /* 0 when stateless */
	const char *reply;
	size_t reply_len;
	long long input_tokens;
	long long output_tokens;
	const char *provider;
	const char *model;
	struct json_object *tool_calls;  /* OpenAI-shaped, or NULL when the model called none */
	const char *finish_reason;       /* stop, length, tool_calls, content_filter */
	int refusal;                     /* `reply` is the model's refusal (llm_result.refusal) */
};

/*
 * How a turn is answered: `begin` sends the head of a stream, `delta` one
 * piece of text from `model` (the one serving now; -1 when the client is gone), `done` the whole answer (as a
 * JSON document, or the stream's last events), `fail` an error (a JSON
 * error before the stream began, an error event after). `state` is the
 * format's own (fmt_state). `refusal` (may be NULL: `delta` then) sends a
 * piece of a refusal (llm_result.refusal) instead of `delta`.
 */
struct chat_format {
	void (*begin)(struct handler_ctx *ctx, void *state);
	int (*delta)(struct handler_ctx *ctx, void *state, const char *model, const char *text,
	    size_t len);
	void (*done)(struct handler_ctx *ctx, void *state, const struct chat_answer *a);
	void (*fail)(struct handler_ctx *ctx, void *state, int status, const char *code,
	    const char *message);
	int (*refusal)(struct handler_ctx *ctx, void *state, const char *model, const char *text,
	    size_t len);
};

/* One turn to run. All borrowed. */
struct chat_turn_input {
	const char *session_id;            /* NULL: stateless, nothing loaded or stored */
	const char *system;                /* system prompt, "" for none */
	struct json_object *new_messages;  /* sent after the history and stored as the turn's:
	                                      OpenAI-shaped user, assistant and tool messages;
	                                      "content" is text, and a message sent as parts
	                                      (images, several texts) keeps them in "parts",
	                                      which providers get as its content */
	struct json_object *tools;         /* OpenAI-shaped tool definitions, or NULL */
	struct json_object *tool_choice;   /* or NULL */
	struct llm_params params;          /* sampling settings the caller set */
	const char *model;                 /* NULL: the provider's default */
	int agents;                        /* offer the MCP agents' tools and run the calls */
	int stream;
	long long deadline_ms;             /* the turn's end (vtime_mono_ms clock) when work before
	                                      chat_run counts against VALERIE_TURN_TIMEOUT; 0: from now */
	char idem_key[CHAT_IDEM_KEY_MAX + STORE_ID_MAX + 2]; /* principal \x1f key, or "" */
	const struct chat_format *fmt;
	void *fmt_state;
};

/*
 * Runs a turn: replays an Idempotency-Key already answered; loads the
 * session's history window (checking its owner); calls the providers; stores
 * the turn (a 200 is always stored); answers through in->fmt.
 */
void chat_run(struct handler_ctx *ctx, const struct chat_turn_input *in);

/* {"role", "content"} (content of `len` bytes). Caller puts. NULL on OOM. */
struct json_object *chat_message_new(const char *role, const char *content, size_t len);

/* The native answer document of BRIEF section 13. Caller puts. */
struct json_object *chat_answer_doc(const struct chat_answer *a, const char *request_id);

/*
 * A write the store refused for lack of room (STORE_FULL): 507 Insufficient
 * Storage, code store_full. Not a 503: the store is up (reads work) and a
 * retry soon fails the same way until an operator makes room.
 */
#define CHAT_STORE_FULL_STATUS 507
#define CHAT_STORE_FULL_MESSAGE "the session store is full: this turn was not stored"
#define CHAT_STORE_UNREPLICATED_MESSAGE "the turn was written, but the session store's " \
	"replicas did not confirm it in time; send it again with the same Idempotency-Key to " \
	"get the stored answer"

/*
 * Logs a failed store operation `op` (with the store's reason, never the
 * session's content) and answers it: 500 store_corrupt, 507 store_full, or
 * 503 store_unavailable saying `unavailable`, or out of memory.
 */
void chat_store_error(struct handler_ctx *ctx, enum store_status s, const char *op,
    const char *unavailable);

/*
 * Adds the business context of `company` (a JSON string or integer, borrowed;
 * NULL: none) to the system prompt `system`, fetched before `deadline_ms`
 * (bizctx.h). Nothing when there is none or it cannot be had: a turn never
 * fails for it.
 */
void chat_business_context(struct handler_ctx *ctx, struct json_object *company,
    long long deadline_ms, struct buf *system);

/* Sends the head of an SSE response (text/event-stream, no cache). */
void chat_stream_begin(struct handler_ctx *ctx);

#endif
