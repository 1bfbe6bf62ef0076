/* transport: translates between a libfcgi request and the app's request/response. */
#ifndef VALERIE_TRANSPORT_H
#define VALERIE_TRANSPORT_H

#include <fcgiapp.h>

#include "app/buf.h"
#include "app/http.h"

/*
 * Per-thread transport state, reused request after request. Plain data:
 * zero it, then transport_free when the thread ends.
 */
struct transport {
	FCGX_Request *fcgi;                /* borrowed: the thread's request */
	struct http_transport ops;         /* what the app's response writes through */
	struct http_header headers[HTTP_MAX_HEADERS];
	struct buf scratch;                /* path copy and header names */
	struct buf body;
	long long max_body;
	long long write_budget_ms;         /* VALERIE_TURN_TIMEOUT + TRANSPORT_WRITE_MARGIN_MS */
	/* The request being answered: */
	const char *request_id;            /* borrowed from libfcgi's params, for the log */
	long long deadline_ms;             /* its writes end by then (vtime_mono_ms clock) */
	long long armed_ms;                /* when SO_SNDTIMEO was last set; 0: not yet */
	int timed;                         /* its answer may fill the socket: writes are timed */
	int late;                          /* past the deadline: a write that would block fails */
	int expired;                       /* the deadline cut the answer off */
};

/*
 * Prepares `t` for the thread's FCGX_Request. The writes of each answer end
 * at most TRANSPORT_WRITE_MARGIN_MS after `turn_timeout_s` (VALERIE_TURN_TIMEOUT)
 * from the request's start, then only while the client keeps reading.
 */
void transport_init(struct transport *t, FCGX_Request *fcgi, long long max_body,
    long long turn_timeout_s);
void transport_free(struct transport *t);

/*
 * Fills `req` from the accepted FastCGI request: params, headers, body (read
 * up to the limit). Pointers in `req` stay valid until the next call or
 * FCGX_Finish_r. Returns 0, or -1 when memory ran out (then answer 500).
 */
int transport_read(struct transport *t, struct http_request *req);

/*
 * Sends a response the handler built (not streamed). HEAD gets no body.
 * A write that fails (the client went away, or the write deadline passed)
 * marks the response aborted.
 */
void transport_send(struct transport *t, const struct http_request *req,
    struct http_response *resp);

/*
 * After the response: chooses how FCGX_Finish_r will close the connection.
 * A plain close() when the request's input was read to its end record (what
 * nginx sends), libfcgi's shutdown-and-wait-for-EOF otherwise.
 */
void transport_end(struct transport *t);

#endif
