/* mcp: a Model Context Protocol client over Streamable HTTP (protocol 2025-06-18 and 2025-11-25). */
#ifndef VALERIE_MCP_H
#define VALERIE_MCP_H

#include <stddef.h>

#include "buf.h"
#include "sse.h"

#define MCP_PROTOCOL_LATEST "2025-11-25"   /* offered at initialize */
#define MCP_PROTOCOL_OLDER "2025-06-18"    /* also accepted in the answer */
#define MCP_RESPONSE_MAX (4 * 1024 * 1024) /* one answer, JSON or the whole SSE stream */
#define MCP_SESSION_ID_MAX 255             /* longest Mcp-Session-Id kept */
#define MCP_TOOLS_MAX 512                  /* tools kept from one server */
#define MCP_LIST_PAGES_MAX 64              /* tools/list pages followed */
#define MCP_TOOL_NAME_MAX 128              /* the spec's limit on a tool name */
#define MCP_SERVER_REQUESTS_MAX 16         /* server requests answered in one answer stream */
#define MCP_REPLY_TIMEOUT_MS 5000          /* at most, to POST the reply to one of them */
#define MCP_RESUMES_MAX 32                 /* reconnections to one answer's event stream */
#define MCP_RESUME_WAIT_MS 1000            /* before one, when the server sent no `retry:` */
#define MCP_RESUME_MIN_WAIT_MS 50          /* at least, whatever `retry:` said */

struct httpc;
struct json_object;

/*
 * One MCP server as seen by this process: its URL, and the session (id and
 * negotiated protocol version) every thread shares under a mutex. Opaque.
 */
struct mcp_client;

enum mcp_status {
	MCP_OK = 0,
	MCP_UNREACHABLE,  /* could not connect or resolve: nothing reached the server */
	MCP_TIMEOUT,
	MCP_CANCELLED,    /* the caller's client went away */
	MCP_HTTP,         /* a non-2xx answer (err->http_status) */
	MCP_PROTOCOL,     /* the answer is not the JSON-RPC answer expected */
	MCP_RPC,          /* a JSON-RPC error answer (err->rpc_code) */
	MCP_TOO_LARGE,    /* the answer is larger than the client's cap */
	MCP_BROKEN,       /* the connection broke after the request went out */
	MCP_NOMEM
};

/* How long one call may take and how to notice the caller left (all borrowed). */
struct mcp_opts {
	long long timeout_ms;            /* each HTTP exchange in all (connect included) */
	long long deadline_ms;           /* CLOCK_MONOTONIC ms bounding everything; 0: none */
	int (*cancelled)(void *ctx);     /* polled while waiting; may be NULL */
	void *ctx;
};

/* Why a call failed. `sent`: the request itself may have reached the server. */
struct mcp_error {
	long http_status;                /* the last HTTP status, 0 if none */
	long long rpc_code;              /* with MCP_RPC */
	int sent;
	char text[256];                  /* one line */
};

/*
 * A client of the server at `url` (copied), answers capped at `max_bytes`
 * (0: MCP_RESPONSE_MAX). No I/O happens until the first call. NULL on OOM.
 */
struct mcp_client *mcp_client_new(const char *url, size_t max_bytes);

/* Frees the client (no thread may be using it). Accepts NULL. */
void mcp_client_free(struct mcp_client *c);

/*
 * Sends JSON-RPC request `method` with `params` (borrowed; NULL: none) and
 * waits for its answer, JSON or SSE (a priming event, notifications and
 * other messages before it are skipped; the answer is the one whose id
 * matches). Initializes the session first when there is none
 * (`initialize`, then `notifications/initialized`), and once more when the
 * server says it forgot the session (404, or the 400 some servers send).
 * On MCP_OK *result is the JSON-RPC `result` (caller puts); otherwise `err`
 * says why. Thread-safe; `http` is the calling thread's handle.
 */
enum mcp_status mcp_request(struct mcp_client *c, struct httpc *http, const struct mcp_opts *o,
    const char *method, struct json_object *params, struct json_object **result,
    struct mcp_error *err);

/*
 * Every tool of the server (`tools/list`, following nextCursor), as an array
 * of the tool objects the server sent, each with a valid `name` (1 to
 * MCP_TOOL_NAME_MAX bytes, no NUL); others are dropped. Caller puts *tools.
 */
enum mcp_status mcp_list_tools(struct mcp_client *c, struct httpc *http, const struct mcp_opts *o,
    struct json_object **tools, struct mcp_error *err);

/* A tool's answer: its content's text joined by newlines; the caller frees it. */
struct mcp_tool_result {
	struct buf text;
	int is_error;                    /* the result said isError: true */
};

/*
 * Calls tool `name` with `arguments` (borrowed JSON object; NULL: {}). A
 * result with isError is MCP_OK with out->is_error set; a JSON-RPC error is
 * MCP_RPC with its message in err->text. Free `out` with
 * mcp_tool_result_free whatever the status.
 */
enum mcp_status mcp_call_tool(struct mcp_client *c, struct httpc *http, const struct mcp_opts *o,
    const char *name, struct json_object *arguments, struct mcp_tool_result *out,
    struct mcp_error *err);

void mcp_tool_result_free(struct mcp_tool_result *r);

/*
 * A tools/call `result` (borrowed) as the model gets it: the text of each
 * content item joined by newlines (text, embedded text resources, a mention
 * of images, audio, blobs and links), else structuredContent as JSON; and
 * isError. MCP_PROTOCOL when `result` is not an object, MCP_NOMEM. Free
 * `out` with mcp_tool_result_free whatever the status.
 */
enum mcp_status mcp_tool_result_parse(struct json_object *result, struct mcp_tool_result *out,
    struct mcp_error *err);

/*
 * Whether a `notifications/tools/list_changed` was seen in an answer since
 * the last call of this function (which clears it).
 */
int mcp_take_list_changed(struct mcp_client *c);

/*
 * Ends the session, if there is one: forgets it (the next call initializes
 * anew) and sends the server HTTP DELETE with its Mcp-Session-Id, waiting at
 * most `timeout_ms` (connect included; <= 0: nothing is sent). MCP_OK also
 * when there was no session, or when the server answers 405 (it does not let
 * clients end sessions). Thread-safe; `http` is the calling thread's handle.
 */
enum mcp_status mcp_session_end(struct mcp_client *c, struct httpc *http, long long timeout_ms,
    struct mcp_error *err);

/* The negotiated protocol version and session id now, copied ("" when none). */
void mcp_session_info(struct mcp_client *c, char *version, size_t vlen, char *session,
    size_t slen);

const char *mcp_status_text(enum mcp_status s);

/* Parses `len` bytes as one JSON value (nesting capped, blanks around allowed); NULL if not. Caller puts. */
struct json_object *mcp_json_parse(const char *text, size_t len);

/*
 * Reading an answer (no I/O: the live client and tests/fuzz/fuzz_mcp.c run
 * this same code). The body of one POST is a JSON document or an SSE stream,
 * as its Content-Type says; in a stream a priming event (empty data),
 * notifications and requests from the server come before the JSON-RPC
 * response whose id is ours, and only that response counts. A request from
 * the server in a stream is owed a reply (the server may wait for it before
 * it answers ours): `replies` collects them for the caller to POST. A
 * stream that ends without the answer after an event with an id may be
 * resumed (2025-11-25): the caller reconnects with GET and Last-Event-ID
 * (sse.last_id) after sse.retry_ms, and feeds the new stream to the same
 * reader after mcp_reader_restart. Plain data:
 * mcp_reader_init, mcp_reader_feed as bytes arrive, mcp_reader_finish,
 * mcp_reader_free.
 */
struct mcp_reader {
	long long want_id;           /* the id of our request; 0 for a notification */
	int mode;                    /* 0: nothing yet, 1: JSON body, 2: SSE */
	int failed;                  /* an SSE line or event over its cap, or out of memory */
	int list_changed;            /* a notifications/tools/list_changed went by */
	struct buf body;             /* the JSON body so far */
	struct sse_parser sse;
	struct json_object *answer;  /* the JSON-RPC response whose id matches */
	/*
	 * Replies owed to the server's requests, in order (NULL: none yet): an
	 * empty result to `ping`, error -32601 to anything else (sampling,
	 * elicitation, roots: capabilities Valerie does not declare). At most
	 * MCP_SERVER_REQUESTS_MAX; requests without a usable id get none.
	 */
	struct json_object *replies;
};

void mcp_reader_init(struct mcp_reader *r, long long want_id);

/*
 * Feeds `len` bytes of the body (any split). `content_type` (NULL: JSON) is
 * looked at by the first call only: text/event-stream is read as SSE,
 * anything else as one JSON document. Returns 0 to go on, 1 once the answer
 * has been found (nothing after it concerns the request), -1 when the
 * reader failed (r->failed; mcp_reader_finish says why).
 */
int mcp_reader_feed(struct mcp_reader *r, const char *content_type, const char *data, size_t len);

/*
 * The outcome once the body has ended (or the reader stopped): MCP_OK with
 * *result the response's `result` (caller puts; JSON null when the server
 * sent null), MCP_RPC with the error's code and message in `err`,
 * MCP_PROTOCOL when no response to our id came (or an SSE line was too
 * long), MCP_NOMEM. Sets err->text, err->rpc_code only.
 */
enum mcp_status mcp_reader_finish(struct mcp_reader *r, struct json_object **result,
    struct mcp_error *err);

/*
 * Whether the stream read so far ended without the answer in a way a
 * reconnection may mend: SSE, nothing failed, and an event with a usable id
 * (printable ASCII, to go back in a header) came.
 */
int mcp_reader_resumable(const struct mcp_reader *r);

/*
 * Readies the reader for the resumed stream: a line or event the old one cut
 * short is dropped; the last event id, `retry:`, what was found and the
 * replies owed stay.
 */
void mcp_reader_restart(struct mcp_reader *r);

/* Frees what the reader holds (not the struct). Accepts a zeroed reader. */
void mcp_reader_free(struct mcp_reader *r);

/*
 * One whole answer body at once: mcp_reader_feed of all `len` bytes (none
 * when `len` is 0, as over HTTP), then mcp_reader_finish. *list_changed (may be NULL) says whether a
 * tools/list_changed notification was in it. The caller caps `len`.
 */
enum mcp_status mcp_parse_answer(const char *content_type, const char *body, size_t len,
    long long want_id, struct json_object **result, int *list_changed, struct mcp_error *err);

/*
 * A tools/list `result` (borrowed): appends its tools with a valid name to
 * the array `all` (up to MCP_TOOLS_MAX in all, others dropped) and points
 * *next at its nextCursor string (borrowed from `result`; NULL when none,
 * or empty). MCP_PROTOCOL when there is no tools array, MCP_NOMEM.
 */
enum mcp_status mcp_tools_page(struct json_object *result, struct json_object *all,
    struct json_object **next, struct mcp_error *err);

#endif
