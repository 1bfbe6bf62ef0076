/*
 * httpc: outgoing HTTP(S) calls with reuse, timeouts, caps and cancellation:
 * plain http:// over Valerie's own HTTP/1.1 client (http1.h), the rest over
 * libcurl.
 */
#ifndef VALERIE_HTTPC_H
#define VALERIE_HTTPC_H

#include <stddef.h>

#include "buf.h"

#define HTTPC_ERROR_BODY_MAX 65536   /* bytes of a non-2xx body kept for the message */

struct httpc;   /* per thread: kept connections (the built-in client's and libcurl's), reused */

/*
 * Once per process, before any thread starts: initialises libcurl and loads
 * the CA certificates trusted for upstream HTTPS, from `ca_file` or (NULL)
 * the system default, into one store every connection shares. Returns 0, or
 * -1 with `err` filled.
 */
int httpc_global_init(const char *ca_file, char *err, size_t errlen);

/*
 * Whether plain http:// calls take the built-in client (1, the default) or
 * libcurl (0: VALERIE_HTTP_CLIENT=libcurl). Set before any call.
 */
void httpc_set_builtin(int on);

struct httpc *httpc_new(void);
void httpc_free(struct httpc *h);

/*
 * One call. `headers` is a NULL-terminated list of "Name: value" lines.
 * Timeouts are in milliseconds (0: none): connect, first byte of the body,
 * total. A 2xx body goes to `on_data` as it arrives when set (return
 * non-zero to stop: HTTPC_ABORTED), else into the response's `body` up to
 * `max_bytes` (then HTTPC_TOO_LARGE). `cancelled` is polled about every
 * 200 ms while the call waits; when it says so the call is abandoned (HTTPC_CANCELLED) and
 * the connection closed, so the upstream sees the client leave. `on_header`
 * (may be NULL) sees each response header as it arrives, the name in lower
 * case and the value trimmed (a header line longer than 255 bytes is skipped).
 */
struct httpc_request {
	const char *method;            /* "POST", "GET", or another method without a body ("DELETE") */
	const char *url;
	const char *const *headers;
	const char *body;
	size_t body_len;
	long connect_timeout_ms;
	long first_byte_timeout_ms;
	long total_timeout_ms;
	size_t max_bytes;
	int (*on_data)(void *ctx, const char *data, size_t len);
	int (*cancelled)(void *ctx);
	void (*on_header)(void *ctx, const char *name, const char *value);
	void *ctx;
};

/* The answer; the caller owns it: httpc_response_free. */
struct httpc_response {
	long status;                   /* 0 when no HTTP answer arrived */
	struct buf body;               /* non-streamed body, or a non-2xx body (capped) */
	long long retry_after_ms;      /* from Retry-After / retry-after-ms, -1 if none */
	char content_type[96];
	size_t bytes;                  /* body bytes received */
};

enum httpc_result {
	HTTPC_OK = 0,            /* an HTTP answer arrived (any status) and was read whole */
	HTTPC_CONNECT,           /* could not connect: the request never reached the upstream */
	HTTPC_FIRST_BYTE_TIMEOUT,
	HTTPC_TIMEOUT,           /* total timeout */
	HTTPC_CANCELLED,
	HTTPC_TOO_LARGE,
	HTTPC_ABORTED,           /* on_data asked to stop */
	HTTPC_BROKEN,            /* the connection broke or closed early, or TLS failed */
	HTTPC_NOMEM
};

/* Performs the call; `err` gets a one-line reason when not HTTPC_OK, never the URL (it may hold credentials). */
enum httpc_result httpc_perform(struct httpc *h, const struct httpc_request *req,
    struct httpc_response *resp, char *err, size_t errlen);

void httpc_response_free(struct httpc_response *resp);

const char *httpc_result_text(enum httpc_result r);

#endif
