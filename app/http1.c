/* http1: the text of a plain HTTP/1.1 call: URL, request head, the answer's framing. */
#include "config.h"

#include "http1.h"
#include "hex.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

/* The reader's states. S_STATUS is 0, so a zeroed parser starts there. */
enum {
	S_STATUS = 0,     /* a status line (blank lines before it are skipped) */
	S_HEADERS,
	S_BODY_LENGTH,    /* `left` bytes of a Content-Length body */
	S_BODY_CLOSE,     /* the body runs to the close */
	S_CHUNK_SIZE,
	S_CHUNK_DATA,     /* `left` bytes of the chunk */
	S_CHUNK_END,      /* the empty line after a chunk's data */
	S_TRAILERS,
	S_DONE,
	S_ERROR
};

/* Transfer-Encoding, as far as framing goes. */
enum { TE_NONE = 0, TE_CHUNKED, TE_OTHER };

/* Longest chunk-size line (with its extensions) read before giving up. */
#define CHUNK_LINE_MAX 4096

static int
host_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    c == '.' || c == '-' || c == '_';
}

static int
ipv6_char(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
	    c == ':' || c == '.';
}

int
http1_url_parse(const char *url, struct http1_url *u)
{
	const char *p, *host, *host_end, *end, *q;
	size_t hlen, alen;
	unsigned long port = 80;

	if (strncasecmp(url, "http://", 7) != 0)
		return -1;
	p = url + 7;
	if (*p == '[') {
		host = ++p;
		while (ipv6_char(*p))
			p++;
		if (*p != ']' || p == host)
			return -1;
		host_end = p++;
		{
			/* An IPv6 address, never a name looked up as one ("[beef]") or an IPv4 one. */
			char lit[INET6_ADDRSTRLEN];
			struct in6_addr a6;

			if ((size_t)(host_end - host) >= sizeof(lit))
				return -1;
			memcpy(lit, host, (size_t)(host_end - host));
			lit[host_end - host] = '\0';
			if (inet_pton(AF_INET6, lit, &a6) != 1)
				return -1;
		}
	} else {
		host = p;
		while (host_char(*p))
			p++;
		host_end = p;
		if (host_end == host)
			return -1;
	}
	if (*p == ':') {
		const char *digits = ++p;

		port = 0;
		while (*p >= '0' && *p <= '9' && p - digits < 5)
			port = port * 10 + (unsigned long)(*p++ - '0');
		if (p == digits || port == 0 || port > 65535)
			return -1;
	}
	if (*p != '\0' && *p != '/' && *p != '?')
		return -1;   /* a user:password@, a sixth port digit, a space... */
	end = p;
	/* The path and query: printable ASCII, no fragment, no dot segment (libcurl would remove it). */
	for (q = p; *q != '\0'; q++)
		if (*q <= ' ' || *q >= 0x7f || *q == '#')
			return -1;
	for (q = p; *q != '\0' && *q != '?'; q++)
		if (q[0] == '/' && q[1] == '.')
			return -1;
	hlen = (size_t)(host_end - host);
	/* The Host header: the host as the URL spells it, and the port unless it is 80 (libcurl's way). */
	alen = (size_t)((url[7] == '[' ? host_end + 1 : host_end) - (url + 7));
	if (hlen >= sizeof(u->host) || alen + 6 >= sizeof(u->authority))
		return -1;
	memcpy(u->host, host, hlen);
	u->host[hlen] = '\0';
	{
		char d[BUF_DECIMAL_SIZE];
		const char *ps = buf_decimal(d, (long long)port, 1);

		buf_strcpy(u->port, sizeof(u->port), ps);
		memcpy(u->authority, url + 7, alen);
		u->authority[alen] = '\0';
		if (port != 80) {
			u->authority[alen] = ':';
			buf_strcpy(u->authority + alen + 1, sizeof(u->authority) - alen - 1, ps);
		}
	}
	u->target = *end != '\0' ? end : NULL;
	return 0;
}

/* Whether the header line `line` is named `name` (given with its colon, in lower case). */
static int
named(const char *line, const char *name)
{
	return strncasecmp(line, name, strlen(name)) == 0;
}

/* What becomes of a caller's header line: libcurl's rules, and never a CR or LF. */
enum {
	LINE_SEND,        /* "Name: value": sent as it is */
	LINE_EMPTY,       /* "Name;": sent as "Name:", libcurl's way to send an empty value */
	LINE_REMOVE,      /* "Name:" with no value: left out, and Valerie's own of that name too */
	LINE_DROP         /* no header at all, or one that would end early: left out, as if not given */
};

/* The kind of the caller's line `h`; `*name_len` gets the length of its name. */
static int
line_kind(const char *h, size_t *name_len)
{
	const char *c = strchr(h, ':');
	size_t n = strlen(h);

	*name_len = 0;
	/* NOTE: a CR or LF would end the line early and start another: a header injected through a value. */
	if (strpbrk(h, "\r\n") != NULL)
		return LINE_DROP;
	if (c == NULL) {
		/* libcurl sends "Name;" only when its first ';' ends it. */
		if (n < 2 || strchr(h, ';') != h + n - 1)
			return LINE_DROP;
		*name_len = n - 1;
		return LINE_EMPTY;
	}
	if (c == h)
		return LINE_DROP;   /* no name: libcurl leaves it out */
	*name_len = (size_t)(c - h);
	for (c++; *c == ' ' || *c == '\t' || *c == '\v' || *c == '\f'; c++)
		;
	return *c == '\0' ? LINE_REMOVE : LINE_SEND;
}

/* Whether the name h[0..len) is `name` (case-insensitive). */
static int
name_is(const char *h, size_t len, const char *name)
{
	return len == strlen(name) && strncasecmp(h, name, len) == 0;
}

void
http1_request_head(struct buf *b, const char *method, const struct http1_url *u,
    const char *const *headers, int with_body, size_t body_len)
{
	int own_host = 0, own_accept = 0, own_length = 0, own_type = 0, kind;
	size_t i, nl;

	/* Only a line that is sent, or that removes Valerie's own, takes the place of Valerie's. */
	for (i = 0; headers != NULL && headers[i] != NULL; i++) {
		const char *h = headers[i];

		if (line_kind(h, &nl) == LINE_DROP)
			continue;
		own_host |= name_is(h, nl, "host");
		own_accept |= name_is(h, nl, "accept");
		own_length |= name_is(h, nl, "content-length");
		own_type |= name_is(h, nl, "content-type");
	}
	buf_reset(b, 65536);
	buf_puts(b, method);
	buf_puts(b, " ");
	/* The origin-form target starts with '/', also for a URL with a query and no path. */
	if (u->target == NULL || u->target[0] != '/')
		buf_puts(b, "/");
	if (u->target != NULL)
		buf_puts(b, u->target);
	buf_puts(b, " HTTP/1.1\r\n");
	if (!own_host) {
		buf_puts(b, "Host: ");
		buf_puts(b, u->authority);
		buf_puts(b, "\r\n");
	}
	if (!own_accept)
		buf_puts(b, "Accept: */*\r\n");
	for (i = 0; headers != NULL && headers[i] != NULL; i++) {
		const char *h = headers[i];

		kind = line_kind(h, &nl);
		if (kind == LINE_EMPTY) {
			buf_append(b, h, nl);
			buf_puts(b, ":\r\n");
		} else if (kind == LINE_SEND) {
			buf_puts(b, h);
			buf_puts(b, "\r\n");
		}
	}
	if (with_body) {
		char d[BUF_DECIMAL_SIZE];

		if (!own_length) {
			buf_puts(b, "Content-Length: ");
			buf_puts(b, buf_decimal(d, (long long)body_len, 1));
			buf_puts(b, "\r\n");
		}
		if (!own_type)
			buf_puts(b, "Content-Type: application/x-www-form-urlencoded\r\n");
	}
	buf_puts(b, "\r\n");
}

static enum http1_status
fail(struct http1_parser *p, const char *why)
{
	p->state = S_ERROR;
	p->error = why;
	return HTTP1_ERROR;
}

/* The value of a header line after its colon, trimmed; `len` gets its length. */
static const char *
header_value(const char *line, size_t n, size_t *len)
{
	const char *c = memchr(line, ':', n), *end = line + n;

	if (c == NULL)
		return NULL;
	for (c++; c < end && (*c == ' ' || *c == '\t'); c++)
		;
	while (end > c && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*len = (size_t)(end - c);
	return c;
}

/* Whether the comma-separated list v[0..n) holds `token` (case-insensitive). */
static int
has_token(const char *v, size_t n, const char *token)
{
	size_t tl = strlen(token), i = 0, s, e;

	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		s = i;
		while (i < n && v[i] != ',')
			i++;
		e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
			return 1;
	}
	return 0;
}

/* Whether the last coding of the list v[0..n) is `token`. */
static int
last_token_is(const char *v, size_t n, const char *token)
{
	size_t tl = strlen(token), e = n, s;

	while (e > 0 && (v[e - 1] == ' ' || v[e - 1] == '\t' || v[e - 1] == ','))
		e--;
	s = e;
	while (s > 0 && v[s - 1] != ',' && v[s - 1] != ' ' && v[s - 1] != '\t')
		s--;
	return e - s == tl && strncasecmp(v + s, token, tl) == 0;
}

static enum http1_status
status_line(struct http1_parser *p, const char *l, size_t n)
{
	int code;

	if (n < 12 || memcmp(l, "HTTP/1.", 7) != 0 || l[7] < '0' || l[7] > '9' || l[8] != ' ' ||
	    l[9] < '1' || l[9] > '9' || l[10] < '0' || l[10] > '9' || l[11] < '0' || l[11] > '9' ||
	    (n > 12 && l[12] != ' '))
		return fail(p, "the upstream's answer is not HTTP/1.x");
	code = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
	p->status = code;
	p->close = l[7] == '0';   /* HTTP/1.0: the connection ends with the answer */
	p->chunked = TE_NONE;
	p->has_length = 0;
	p->left = 0;
	p->state = S_HEADERS;
	if (p->on_line != NULL)
		p->on_line(p->ctx, l, n);
	return HTTP1_MORE;
}

static enum http1_status
header_line(struct http1_parser *p, const char *l, size_t n)
{
	const char *v;
	size_t vn, i;
	unsigned long long x = 0;

	if (n == 0) {
		/* The head's end. */
		if (p->status == 101)
			return fail(p, "the upstream switched protocols");
		if (p->status < 200) {
			p->state = S_STATUS;   /* an interim answer (100 Continue, 103): the real one follows */
			return HTTP1_MORE;
		}
		/*
		 * Chunked and a Content-Length: chunked frames the body (RFC 9112,
		 * 6.3), but whoever sent both may frame it otherwise: the
		 * connection is not used again.
		 */
		if (p->chunked == TE_CHUNKED && p->has_length)
			p->close = 1;
		if (p->status == 204 || p->status == 304)
			p->state = S_DONE;
		else if (p->chunked == TE_CHUNKED)
			p->state = S_CHUNK_SIZE;
		else if (p->chunked == TE_OTHER || !p->has_length) {
			p->state = S_BODY_CLOSE;
			p->close = 1;
		} else
			p->state = p->left > 0 ? S_BODY_LENGTH : S_DONE;
		return p->state == S_DONE ? HTTP1_DONE : HTTP1_MORE;
	}
	if (l[0] == ' ' || l[0] == '\t')
		return HTTP1_MORE;   /* an obsolete folded line: no header Valerie reads is folded */
	if (p->skipping) {
		/* Too long to keep: harmless unless it frames the body. */
		if (named(l, "content-length") || named(l, "transfer-encoding"))
			return fail(p, "an answer header that frames the body is too long");
		return HTTP1_MORE;
	}
	if (p->on_line != NULL)
		p->on_line(p->ctx, l, n);
	v = header_value(l, n, &vn);
	if (v == NULL)
		return HTTP1_MORE;
	if (named(l, "content-length:") || named(l, "content-length ")) {
		if (vn == 0 || vn > 18)
			return fail(p, "the answer's Content-Length is not a number");
		for (i = 0; i < vn; i++) {
			if (v[i] < '0' || v[i] > '9')
				return fail(p, "the answer's Content-Length is not a number");
			x = x * 10 + (unsigned long long)(v[i] - '0');
		}
		if (p->has_length && x != p->left)
			return fail(p, "the answer has two different Content-Lengths");
		p->has_length = 1;
		p->left = x;
	} else if (named(l, "transfer-encoding:") || named(l, "transfer-encoding ")) {
		p->chunked = last_token_is(v, vn, "chunked") ? TE_CHUNKED : TE_OTHER;
	} else if (named(l, "connection:") || named(l, "connection ")) {
		if (has_token(v, vn, "close"))
			p->close = 1;
	}
	return HTTP1_MORE;
}

static enum http1_status
chunk_size_line(struct http1_parser *p, const char *l, size_t n)
{
	unsigned long long x = 0;
	size_t i = 0;
	int d;

	while (i < n && (d = hex_digit((unsigned char)l[i])) >= 0) {
		if (x >> 58)
			return fail(p, "a chunk of the answer is too large");
		x = x * 16 + (unsigned long long)d;
		i++;
	}
	if (i == 0)
		return fail(p, "the answer's chunked framing is broken");
	while (i < n && (l[i] == ' ' || l[i] == '\t'))
		i++;
	if (i < n && l[i] != ';')
		return fail(p, "the answer's chunked framing is broken");
	/*
	 * NOTE: a line longer than the part kept must show where its size ends
	 * (its ';') in that part: else "000...0005" would read as the last chunk.
	 */
	if (i == n && p->skipping)
		return fail(p, "the answer's chunked framing is broken");
	if (x == 0) {
		p->state = S_TRAILERS;
	} else {
		p->left = x;
		p->state = S_CHUNK_DATA;
	}
	return HTTP1_MORE;
}

/* One whole line of a line state, its end taken off. */
static enum http1_status
line(struct http1_parser *p, const char *l, size_t n)
{
	switch (p->state) {
	case S_STATUS:
		if (n == 0 && !p->skipping)
			return HTTP1_MORE;   /* a blank line before the status line */
		if (p->skipping)
			return fail(p, "the upstream's answer is not HTTP/1.x");
		return status_line(p, l, n);
	case S_HEADERS:
		return header_line(p, l, n);
	case S_CHUNK_SIZE:
		return chunk_size_line(p, l, n);
	case S_CHUNK_END:
		if (n != 0 || p->skipping)
			return fail(p, "a chunk of the answer does not end where its size says");
		p->state = S_CHUNK_SIZE;
		return HTTP1_MORE;
	case S_TRAILERS:
		if (n == 0 && !p->skipping) {
			p->state = S_DONE;
			return HTTP1_DONE;
		}
		return HTTP1_MORE;
	default:
		return fail(p, "the answer's reader lost its place");
	}
}

static int
line_state(int s)
{
	return s == S_STATUS || s == S_HEADERS || s == S_CHUNK_SIZE || s == S_CHUNK_END ||
	    s == S_TRAILERS;
}

enum http1_status
http1_feed(struct http1_parser *p, const char *data, size_t n, size_t *used)
{
	size_t i = 0, take;
	enum http1_status st;

	*used = 0;
	if (p->state == S_DONE)
		return HTTP1_DONE;
	if (p->state == S_ERROR)
		return HTTP1_ERROR;
	while (i < n) {
		if (line_state(p->state)) {
			const char *nl = memchr(data + i, '\n', n - i);
			size_t chunk = nl != NULL ? (size_t)(nl - (data + i)) : n - i;
			size_t room = sizeof(p->line) - p->line_len;

			p->head_bytes += chunk + (nl != NULL);
			if (p->state == S_CHUNK_SIZE || p->state == S_CHUNK_END) {
				if (p->head_bytes > CHUNK_LINE_MAX)
					return fail(p, "the answer's chunked framing is broken");
			} else if (p->head_bytes > HTTP1_HEAD_MAX) {
				return fail(p, "the answer's headers are too large");
			}
			if (chunk > room) {
				p->skipping = 1;
				memcpy(p->line + p->line_len, data + i, room);
				p->line_len += room;
			} else {
				memcpy(p->line + p->line_len, data + i, chunk);
				p->line_len += chunk;
			}
			i += chunk;
			if (nl == NULL)
				break;
			i++;   /* the LF */
			{
				size_t len = p->line_len;

				if (len > 0 && p->line[len - 1] == '\r' && !p->skipping)
					len--;
				st = line(p, p->line, len);
			}
			p->line_len = 0;
			p->skipping = 0;
			if (p->state != S_STATUS && p->state != S_HEADERS && p->state != S_TRAILERS)
				p->head_bytes = 0;   /* chunk lines are bounded each on its own */
			if (st != HTTP1_MORE) {
				*used = i;
				return st;
			}
			continue;
		}
		switch (p->state) {
		case S_BODY_LENGTH:
		case S_CHUNK_DATA:
			take = n - i < p->left ? n - i : (size_t)p->left;
			p->left -= take;
			if (p->on_body != NULL && p->on_body(p->ctx, data + i, take) != 0) {
				*used = i + take;
				return HTTP1_STOPPED;
			}
			i += take;
			if (p->left == 0) {
				if (p->state == S_CHUNK_DATA) {
					p->state = S_CHUNK_END;
				} else {
					p->state = S_DONE;
					*used = i;
					return HTTP1_DONE;
				}
			}
			break;
		case S_BODY_CLOSE:
			if (p->on_body != NULL && p->on_body(p->ctx, data + i, n - i) != 0) {
				*used = n;
				return HTTP1_STOPPED;
			}
			i = n;
			break;
		default:
			*used = i;
			return fail(p, "the answer's reader lost its place");
		}
	}
	*used = i;
	return HTTP1_MORE;
}

enum http1_status
http1_eof(struct http1_parser *p)
{
	switch (p->state) {
	case S_DONE:
	case S_BODY_CLOSE:
		p->state = S_DONE;
		return HTTP1_DONE;
	case S_ERROR:
		return HTTP1_ERROR;
	case S_STATUS:
		if (!http1_started(p))
			return fail(p, "the upstream closed the connection without answering");
		/* FALLTHROUGH */
	case S_HEADERS:
		return fail(p, "the upstream closed the connection in the answer's headers");
	default:
		return fail(p, "the upstream closed the connection before the answer's end");
	}
}

int
http1_keep_alive(const struct http1_parser *p)
{
	return p->state == S_DONE && !p->close;
}

int
http1_started(const struct http1_parser *p)
{
	return p->state != S_STATUS || p->line_len > 0 || p->head_bytes > 0 || p->status != 0;
}
