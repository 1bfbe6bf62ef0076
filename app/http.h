/* http: the request/response model the application works on, free of any transport. */
#ifndef VALERIE_HTTP_H
#define VALERIE_HTTP_H

#include <stddef.h>

#include "buf.h"

#define HTTP_MAX_HEADERS 64       /* request headers kept; more is a 431 */
#define HTTP_MAX_RESP_HEADERS 16  /* response headers a handler may set */

struct json_object;

/* One request header: name in lower case with dashes ("x-api-key"). Borrowed. */
struct http_header {
	const char *name;
	const char *value;
};

/* What the transport found while reading the body. */
enum http_body_error {
	HTTP_BODY_OK = 0,
	HTTP_BODY_TOO_LARGE,    /* over the configured limit: 413 */
	HTTP_BODY_BAD_LENGTH,   /* Content-Length is not a number: 400 */
	HTTP_BODY_READ_FAILED   /* shorter than announced, or a read error: 400 */
};

/*
 * A request as the transport hands it over. Every pointer is borrowed from the
 * transport and valid until the response is finished; `body` is not
 * NUL-terminated. `path` has no query string; `query` may be "".
 */
struct http_request {
	const char *method;
	const char *path;
	const char *query;
	const char *remote_addr;
	const char *request_id;   /* nginx's $request_id, or "" */
	const char *content_type; /* or NULL */
	const struct http_header *headers;
	size_t nheaders;
	const char *body;
	size_t body_len;
	enum http_body_error body_error;
	int nheaders_dropped;     /* more than HTTP_MAX_HEADERS arrived */
	int head;                 /* a HEAD request: answer as GET without a body */
};

struct http_response;

/*
 * What a transport provides to send a response. `write_head` sends the status
 * line and headers; `write_body` sends bytes; `flush` pushes them to the client
 * now; `client_gone` says whether the client has gone away (non-blocking).
 * Each returns 0 on success, -1 when the client is gone or the write failed.
 */
struct http_transport {
	int (*write_head)(void *ctx, const struct http_response *resp);
	int (*write_body)(void *ctx, const char *data, size_t len);
	int (*flush)(void *ctx);
	int (*client_gone)(void *ctx);
	void *ctx;
};

struct http_resp_header {
	char name[48];
	char value[208];
};

/*
 * A response being built. A handler either fills `status`, headers and `body`
 * and returns (the transport sends it), or calls http_stream_begin and writes
 * part by part. Plain data; http_response_init/http_response_free.
 * NOTE: http_response_reset clears the fields one by one: a new field needs
 * its line there.
 */
struct http_response {
	int status;
	struct http_resp_header headers[HTTP_MAX_RESP_HEADERS];
	size_t nheaders;
	struct buf body;
	const struct http_transport *transport; /* borrowed */
	int streaming;      /* head already sent */
	int aborted;        /* the client went away or a write failed */
	size_t bytes_sent;  /* body bytes written while streaming */
};

void http_response_init(struct http_response *resp, const struct http_transport *t);

/* Clears status, headers and body for reuse, keeping small allocations. */
void http_response_reset(struct http_response *resp);
void http_response_free(struct http_response *resp);

/*
 * Sets (or replaces) a response header. Names and values longer than the fixed
 * slots, or containing CR/LF, are refused: returns -1 and sets nothing.
 */
int http_response_header(struct http_response *resp, const char *name, const char *value);
const char *http_response_get_header(const struct http_response *resp, const char *name);

/* Serialises `obj` as the body with status and JSON content type. Borrows `obj`. */
void http_response_json(struct http_response *resp, int status, struct json_object *obj);

/*
 * Like http_response_json for a body the caller writes as JSON text itself
 * (buf_json_string for its strings): sets the status and Content-Type,
 * empties the body and returns it to append to.
 */
struct buf *http_response_json_begin(struct http_response *resp, int status);

/*
 * The error document {"error":{"code","message"}} with the given status.
 * Replaces any body already built.
 */
void http_response_error(struct http_response *resp, int status, const char *code,
    const char *message);

/* Sends the head now (status and headers) and switches to streaming. */
int http_stream_begin(struct http_response *resp);

/* Writes and flushes a chunk of a streamed body; -1 once the client is gone. */
int http_stream_write(struct http_response *resp, const char *data, size_t len);

/* Whether the client has gone away (cheap; checks the transport). */
int http_client_gone(struct http_response *resp);

/* The first value of a request header (name in lower case), or NULL. Borrowed. */
const char *http_request_header(const struct http_request *req, const char *name);

/*
 * One parameter of a query string as it stands in the URL, not decoded:
 * `name` and `value` point into the query (borrowed); `value_len` is 0 for
 * "name=" and for a bare "name".
 */
struct http_query_param {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

/*
 * Walks a query string ("a=1&b=2", without the '?'): reads the parameter at
 * *q into *p and moves *q past it; empty ones ("&&") are skipped. Returns 1,
 * or 0 when no parameter is left. Decode the name and value with
 * http_query_decode before comparing or using them.
 */
int http_query_next(const char **q, struct http_query_param *p);

enum http_decode_result {
	HTTP_DECODE_OK = 0,
	HTTP_DECODE_BAD,      /* a '%' not followed by two hex digits, or %00 */
	HTTP_DECODE_TOO_LONG  /* the decoded text does not fit the buffer */
};

/*
 * Decodes s[0..len), a query parameter's name or value, into `out` (outlen
 * bytes, NUL-terminated): "%XX" escapes (either case of hex digit) become
 * their byte and '+' a space, as browsers and curl encode a query.
 */
enum http_decode_result http_query_decode(const char *s, size_t len, char *out,
    size_t outlen);

/* The standard reason phrase of a status code, "Unknown" for others. */
const char *http_status_text(int status);

#endif
