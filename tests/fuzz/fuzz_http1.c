/*
 * fuzz_http1: the plain client's answer reader on any bytes, whole, one byte
 * at a time and in pieces the input's first byte chooses: the same status,
 * lines, body and keep-alive each way, and no crash. The same bytes as a URL
 * (then NUL-separated header lines): split as http1.h says, and a request
 * head whose every line is a header line.
 */
#include "config.h"

#include "http1.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct got {
	struct buf lines;
	struct buf body;
	size_t stop_at;          /* on_body says stop once the body holds this many bytes (0: never) */
	enum http1_status st;
	size_t used;
	int keep;
	const char *error;
};

static void
on_line(void *ctx, const char *line, size_t len)
{
	struct got *g = ctx;

	if (len == 0 || memchr(line, '\n', len) != NULL)
		abort();   /* a line is never empty (the head's end is no line) and never holds its LF */
	buf_append(&g->lines, line, len);
	buf_puts(&g->lines, "\n");
}

static int
on_body(void *ctx, const char *data, size_t len)
{
	struct got *g = ctx;

	if (len == 0)
		abort();
	buf_append(&g->body, data, len);
	return g->stop_at > 0 && g->body.len >= g->stop_at;
}

/* The next piece's size: 1 byte, then doubling up to 2^(mode & 7), round and round. */
static size_t
piece(unsigned mode, size_t k)
{
	unsigned top = (mode & 7) + 1;

	return (size_t)1 << (k % top);
}

/* Reads in[0..n): whole (mode 0), one byte at a time (1), or in pieces (2). */
static void
read_answer(const uint8_t *in, size_t n, int how, unsigned mode, struct got *g)
{
	struct http1_parser p;
	size_t at = 0, len, used, k = 0;

	memset(&p, 0, sizeof(p));
	p.on_line = on_line;
	p.on_body = on_body;
	p.ctx = g;
	g->st = HTTP1_MORE;
	do {
		len = how == 0 ? n - at : how == 1 ? 1 : piece(mode, k++);
		if (len > n - at)
			len = n - at;
		g->st = http1_feed(&p, (const char *)in + at, len, &used);
		if (used > len || (g->st == HTTP1_MORE && used != len))
			abort();
		g->used += used;
		at += len;
	} while (g->st == HTTP1_MORE && at < n);
	if (g->st == HTTP1_MORE) {
		g->st = http1_eof(&p);
		if (g->st != HTTP1_DONE && g->st != HTTP1_ERROR)
			abort();
	}
	g->keep = http1_keep_alive(&p);
	g->error = p.error;
	if ((g->st == HTTP1_ERROR) != (g->error != NULL))
		abort();
	if (g->keep && g->st != HTTP1_DONE)
		abort();
	if (n > 0 && !http1_started(&p))
		abort();
	/* Over is over: no more bytes are taken (after a stop, the caller may read on). */
	if (g->st != HTTP1_STOPPED &&
	    (http1_feed(&p, "HTTP/1.1 200 OK\r\n\r\n", 19, &used) != g->st || used != 0))
		abort();
}

static int
same_buf(const struct buf *a, const struct buf *b)
{
	return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static void
same_got(const struct got *a, const struct got *b)
{
	if (a->st != b->st || !same_buf(&a->lines, &b->lines))
		abort();
	if (a->st == HTTP1_STOPPED) {
		/* Where it stops depends on the pieces on_body was handed. */
		if (b->body.len < b->stop_at)
			abort();
		return;
	}
	if (!same_buf(&a->body, &b->body) || a->keep != b->keep || strcmp(a->error ? a->error : "",
	    b->error ? b->error : "") != 0)
		abort();
	if (a->st != HTTP1_ERROR && a->used != b->used)
		abort();
}

static void
fuzz_answer(const uint8_t *in, size_t n, unsigned mode)
{
	struct got g[3];
	int i;

	memset(g, 0, sizeof(g));
	for (i = 0; i < 3; i++) {
		g[i].stop_at = mode & 0x80 ? (mode >> 3 & 0xf) + 1 : 0;
		read_answer(in, n, i, mode, &g[i]);
	}
	same_got(&g[0], &g[1]);
	same_got(&g[0], &g[2]);
	for (i = 0; i < 3; i++) {
		buf_free(&g[i].lines);
		buf_free(&g[i].body);
	}
}

static int
digits(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

/* The request head, line by line: a request line, then header lines, then the blank line. */
static void
check_head(const struct buf *b, const char *method, const struct http1_url *u)
{
	const char *p = b->data, *end = b->data + b->len, *eol;
	size_t ml = strlen(method);
	int first = 1;

	if (b->oom)
		return;
	if (b->len < 4 || memcmp(end - 4, "\r\n\r\n", 4) != 0)
		abort();
	while (p < end) {
		eol = memchr(p, '\r', (size_t)(end - p));
		if (eol == NULL || eol + 1 >= end || eol[1] != '\n' || memchr(p, '\n', (size_t)(eol - p)))
			abort();   /* every line ends in CRLF, and holds no other CR or LF */
		if (first) {
			if ((size_t)(eol - p) < ml + 11 || memcmp(p, method, ml) != 0 || p[ml] != ' ' ||
			    p[ml + 1] != '/' || memcmp(eol - 9, " HTTP/1.1", 9) != 0)
				abort();
			if (memchr(p + ml + 1, ' ', (size_t)(eol - 9 - (p + ml + 1))) != NULL)
				abort();   /* a target never holds a space */
			first = 0;
		} else if (eol == p) {
			if (eol + 2 != end)
				abort();   /* the blank line ends the head */
		} else if (memchr(p, ':', (size_t)(eol - p)) == NULL || *p == ':') {
			abort();   /* a header line has a name and a colon */
		}
		p = eol + 2;
	}
}

static void
fuzz_url(const uint8_t *data, size_t size)
{
	static const char *const methods[] = {"POST", "GET", "DELETE"};
	const char *headers[9];
	struct http1_url u;
	struct buf b = {0};
	char *s, *url;
	size_t i, n = 0, hlen;

	s = malloc(size + 1);
	if (s == NULL)
		return;
	memcpy(s, data, size);
	s[size] = '\0';
	url = s;
	/* NUL-separated header lines after the URL. */
	for (i = strlen(url) + 1; i < size && n < 8; i += strlen(s + i) + 1)
		headers[n++] = s + i;
	headers[n] = NULL;
	if (http1_url_parse(url, &u) == 0) {
		hlen = strlen(u.host);
		if (hlen == 0 || hlen >= sizeof(u.host) || !digits(u.port) || strlen(u.port) > 5 ||
		    strtol(u.port, NULL, 10) < 1 || strtol(u.port, NULL, 10) > 65535 || u.port[0] == '0')
			abort();
		if (u.authority[0] == '[' ? strncmp(u.authority + 1, u.host, hlen) != 0 ||
		    u.authority[hlen + 1] != ']' : strncmp(u.authority, u.host, hlen) != 0)
			abort();
		if (u.target != NULL && ((u.target[0] != '/' && u.target[0] != '?') ||
		    u.target < url || u.target >= url + strlen(url) || strchr(u.target, '#') != NULL))
			abort();
		for (i = 0; i < 3; i++) {
			http1_request_head(&b, methods[i], &u, n > 0 ? headers : NULL, i == 0, size);
			check_head(&b, methods[i], &u);
		}
	}
	buf_free(&b);
	free(s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	fuzz_answer(data + 1, size - 1, data[0]);
	fuzz_url(data, size);
	fuzz_url(data + 1, size - 1);
	return 0;
}
