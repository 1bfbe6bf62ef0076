/*
 * http1: the text of a plain HTTP/1.1 call, without sockets: which URLs
 * Valerie's own client takes, the request head it writes, and the framing of
 * the answer it reads (status, headers, Content-Length, chunked, to the close).
 */
#ifndef VALERIE_HTTP1_H
#define VALERIE_HTTP1_H

#include <stddef.h>

#include "buf.h"

#define HTTP1_HOST_MAX 256
#define HTTP1_LINE_MAX 1024          /* bytes of a status or header line kept; longer ones are read and dropped */
#define HTTP1_HEAD_MAX (256 * 1024)  /* header bytes of one answer, interim 1xx answers included */

/* A URL split for a plain call. */
struct http1_url {
	char host[HTTP1_HOST_MAX];            /* a name, an IPv4 literal, or an IPv6 literal without its brackets */
	char port[6];                         /* decimal; "80" when the URL names none */
	char authority[HTTP1_HOST_MAX + 8];   /* the Host header's value, as the URL spells it */
	const char *target;                   /* path and query ("?q" for http://h?q), in the URL; NULL: none */
};

/*
 * 0 when `url` is a URL the plain client takes: scheme http, a host of
 * letters, digits, '.', '-' and '_' or a bracketed IPv6 address, an optional
 * port 1 to 65535, and a path and query of printable ASCII without a dot
 * segment or fragment. -1 for anything else (https, a user:password@, a
 * space, a non-ASCII byte...): libcurl takes those, with its own rules.
 */
int http1_url_parse(const char *url, struct http1_url *u);

/*
 * Writes the request head to `b` (emptied first), as libcurl writes it:
 * "METHOD target HTTP/1.1" (the target always starting with '/'), Host,
 * "Accept: * / *", the caller's header lines (NULL-terminated), then for a
 * body Content-Length and libcurl's default Content-Type. libcurl's rules
 * for the caller's lines: "Name: value" is sent; "Name;" is sent as "Name:";
 * "Name:" with no value is left out; a line with no name or no colon is left
 * out; and each of these but the last takes the place of Valerie's own Host,
 * Accept, Content-Length or Content-Type of that name. A line holding CR or
 * LF is left out as if not given. `b->oom` says whether it fit in memory.
 */
void http1_request_head(struct buf *b, const char *method, const struct http1_url *u,
    const char *const *headers, int with_body, size_t body_len);

/* What http1_feed and http1_eof say. */
enum http1_status {
	HTTP1_MORE = 0,   /* the answer goes on: read more */
	HTTP1_DONE,       /* the answer ended */
	HTTP1_STOPPED,    /* on_body asked to stop */
	HTTP1_ERROR       /* not an HTTP/1.x answer, or broken framing: `error` says how */
};

/* Reads one answer (after any interim 1xx ones). Zero-initialise, then set the callbacks. */
struct http1_parser {
	/* Each status and header line as it came, without its line end (trailers are not passed). */
	void (*on_line)(void *ctx, const char *line, size_t len);
	/* Body bytes of the final answer, de-chunked; non-zero stops (HTTP1_STOPPED). */
	int (*on_body)(void *ctx, const char *data, size_t len);
	void *ctx;
	const char *error;       /* set with HTTP1_ERROR */

	/* the reader's own state */
	int state;
	int status;              /* of the answer being read */
	int close;               /* the connection ends with this answer */
	int chunked;
	int has_length;
	int skipping;            /* dropping the rest of a line longer than HTTP1_LINE_MAX */
	unsigned long long left; /* body bytes left: of the Content-Length, or of the chunk */
	size_t head_bytes;
	size_t line_len;
	char line[HTTP1_LINE_MAX];
};

/*
 * Reads `n` bytes of the answer. `*used` gets how many were read: less than
 * `n` only when it returns HTTP1_DONE (bytes after the answer: the connection
 * cannot be used again) or HTTP1_STOPPED/HTTP1_ERROR.
 */
enum http1_status http1_feed(struct http1_parser *p, const char *data, size_t n, size_t *used);

/* The upstream closed the connection: HTTP1_DONE when that ends the answer (a body read to the close), else HTTP1_ERROR. */
enum http1_status http1_eof(struct http1_parser *p);

/* Whether the connection may carry another call once the answer is done. */
int http1_keep_alive(const struct http1_parser *p);

/* Whether any byte of an answer arrived. */
int http1_started(const struct http1_parser *p);

#endif
