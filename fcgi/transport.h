/* transport: translates between a libfcgi request and the app's request/response. */
#ifndef VALERIE_TRANSPORT_H
#define VALERIE_TRANSPORT_H

#include <fcgiapp.h>
#include <pthread.h>

#include "app/buf.h"
#include "app/http.h"

/*
 * Per-thread transport state, reused request after request: transport_init,
 * then transport_free when the thread ends. Only transport_cut may be called
 * from another thread.
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
	/*
	 * For transport_cut: the connection of a timed answer while it is under
	 * way, -1 otherwise. Set and cleared by the thread under cut_lock, so
	 * that another thread shuts it down only while it is still open.
	 */
	pthread_mutex_t cut_lock;
	int cut_fd;
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
 * Called by another thread when the worker stops (the drain limit is near):
 * shuts down the connection of the timed answer `t` is writing, if any, so
 * that a write blocked on a client that does not read fails now rather than
 * at its own deadline, and logs one line. Returns 1 if it cut one, else 0.
 * NOTE: the kernel reads SO_SNDTIMEO when a write begins, so a shorter
 * timeout set now would not reach a write already blocked; shutdown() wakes it.
 */
int transport_cut(struct transport *t);

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
