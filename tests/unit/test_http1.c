/*
 * test_http1: the plain HTTP/1.1 client's text layer: which URLs it takes and
 * how it splits them, the exact request head it writes, and how it frames an
 * answer (Content-Length, chunked, to the close, interim 1xx, limits, broken
 * framing). Every answer is also fed one byte at a time and in every split in
 * two, and must read the same: a socket hands bytes over in any pieces.
 */
#include "config.h"

#include "check.h"
#include "http1.h"

#include <stdlib.h>
#include <string.h>

/* ---- URLs ---- */

static void
url_ok(int line, const char *url, const char *host, const char *port, const char *authority,
    const char *target)
{
	struct http1_url u;

	memset(&u, 0x5a, sizeof(u));
	if (http1_url_parse(url, &u) != 0) {
		fprintf(stderr, "%s:%d: http1_url_parse(\"%s\") declined it\n", __FILE__, line, url);
		check_failures++;
		return;
	}
	CHECK_STR(u.host, host);
	CHECK_STR(u.port, port);
	CHECK_STR(u.authority, authority);
	CHECK_STR(u.target, target);
	if (target != NULL && u.target != NULL && (u.target < url || u.target >= url + strlen(url)))
		fprintf(stderr, "%s:%d: target does not point into the URL\n", __FILE__, line), check_failures++;
}

static void
url_no(int line, const char *url)
{
	struct http1_url u;

	if (http1_url_parse(url, &u) != -1) {
		fprintf(stderr, "%s:%d: http1_url_parse(\"%s\") took it\n", __FILE__, line, url);
		check_failures++;
	}
}

#define URL_OK(url, host, port, authority, target) url_ok(__LINE__, url, host, port, authority, target)
#define URL_NO(url) url_no(__LINE__, url)

static void
test_url(void)
{
	char host[300], url[400], authority[310];

	URL_OK("http://h", "h", "80", "h", NULL);
	URL_OK("http://h/", "h", "80", "h", "/");
	URL_OK("http://h:8080/v1?x=1", "h", "8080", "h:8080", "/v1?x=1");
	URL_OK("HTTP://H/", "H", "80", "H", "/");
	URL_OK("hTtP://Ollama.Local:11434/api/chat", "Ollama.Local", "11434", "Ollama.Local:11434",
	    "/api/chat");
	URL_OK("http://[::1]:9/p", "::1", "9", "[::1]:9", "/p");
	URL_OK("http://[::1]/", "::1", "80", "[::1]", "/");
	URL_OK("http://[::1]", "::1", "80", "[::1]", NULL);
	URL_OK("http://[::ffff:127.0.0.1]:8000/v1", "::ffff:127.0.0.1", "8000", "[::ffff:127.0.0.1]:8000",
	    "/v1");
	URL_OK("http://[FE80::A:1]:1/", "FE80::A:1", "1", "[FE80::A:1]:1", "/");
	URL_OK("http://h?q", "h", "80", "h", "?q");
	URL_OK("http://h:8080?q=1", "h", "8080", "h:8080", "?q=1");
	URL_OK("http://h:80/x", "h", "80", "h", "/x");
	URL_OK("http://[::1]:80/x", "::1", "80", "[::1]", "/x");
	URL_OK("http://h:00080/", "h", "80", "h", "/");
	URL_OK("http://h:08080/", "h", "8080", "h:8080", "/");
	URL_OK("http://h:1", "h", "1", "h:1", NULL);
	URL_OK("http://h:65535/", "h", "65535", "h:65535", "/");
	URL_OK("http://127.0.0.1:11434/api/chat", "127.0.0.1", "11434", "127.0.0.1:11434", "/api/chat");
	URL_OK("http://vllm_1.internal-net.:8000/v1/chat/completions", "vllm_1.internal-net.", "8000",
	    "vllm_1.internal-net.:8000", "/v1/chat/completions");
	URL_OK("http://h/a?x=/../y&z=/./", "h", "80", "h", "/a?x=/../y&z=/./");
	URL_OK("http://h//a//b", "h", "80", "h", "//a//b");
	URL_OK("http://h/%2e%2e/x", "h", "80", "h", "/%2e%2e/x");
	URL_OK("http://h/a.b/c..d/e.", "h", "80", "h", "/a.b/c..d/e.");

	/* The longest host there is room for, and one more. */
	memset(host, 'a', 255);
	host[255] = '\0';
	snprintf(url, sizeof(url), "http://%s:65535/x", host);
	snprintf(authority, sizeof(authority), "%s:65535", host);
	URL_OK(url, host, "65535", authority, "/x");
	host[255] = 'a';
	host[256] = '\0';
	snprintf(url, sizeof(url), "http://%s/x", host);
	URL_NO(url);

	URL_NO("https://h/");
	URL_NO("ftp://h/");
	URL_NO("http:/h/");
	URL_NO("http//h/");
	URL_NO("http://");
	URL_NO("http:///x");
	URL_NO("http://:8080/");
	URL_NO("http://?q");
	URL_NO("http://user:pass@h/");
	URL_NO("http://user@h/");
	URL_NO("http://h:pass@h/");
	URL_NO("http://h:0/");
	URL_NO("http://h:00/");
	URL_NO("http://h:65536/");
	URL_NO("http://h:99999/");
	URL_NO("http://h:123456/");
	URL_NO("http://h:000080/");
	URL_NO("http://h:");
	URL_NO("http://h:/");
	URL_NO("http://h:8a/");
	URL_NO("http://h:-1/");
	URL_NO("http://h:+80/");
	URL_NO("http://h:80:80/");
	URL_NO("http://h /x");
	URL_NO("http://h/a b");
	URL_NO("http://h/a\tb");
	URL_NO("http://h/a\x7f");
	URL_NO("http://h/\xc3\xa9t\xc3\xa9");
	URL_NO("http://h\xc3\xa9/");
	URL_NO("http://h/a\x01");
	URL_NO("http://h/#frag");
	URL_NO("http://h/a?b#c");
	URL_NO("http://h#");
	URL_NO("http://h/./x");
	URL_NO("http://h/a/../b");
	URL_NO("http://h/..");
	URL_NO("http://h/.");
	URL_NO("http://h/a/.");
	URL_NO("http://h/a/..?x");
	URL_NO("http://h\\x/");
	URL_NO("http://h;x/");
	URL_NO("http://h%2e/");
	URL_NO("http://[::1/");
	URL_NO("http://[::1");
	URL_NO("http://[]/");
	URL_NO("http://[::1]x/");
	URL_NO("http://[::1]:/");
	URL_NO("http://[fe80::1%25eth0]/");
	URL_NO("http://::1/");
	/* Brackets hold an IPv6 literal, never a name or an IPv4 address (a DNS look-up of "beef"). */
	URL_NO("http://[beef]/");
	URL_NO("http://[1.2.3.4]/");
	URL_NO("http://[:::]/");
	URL_NO("http://[::1::2]/");
	URL_NO("http://[1:2:3:4:5:6:7:8:9]/");
	URL_NO("");
}

/* ---- the request head ---- */

static void
head_is(int line, const char *url, const char *method, const char *const *headers, int with_body,
    size_t body_len, const char *want)
{
	struct http1_url u;
	struct buf b = {0};

	if (http1_url_parse(url, &u) != 0) {
		fprintf(stderr, "%s:%d: %s declined\n", __FILE__, line, url);
		check_failures++;
		return;
	}
	/* Something in the buffer first: the head replaces it. */
	buf_puts(&b, "left over from the last call");
	http1_request_head(&b, method, &u, headers, with_body, body_len);
	CHECK(!b.oom);
	if (b.len != strlen(want) || memcmp(b.data, want, b.len) != 0) {
		fprintf(stderr, "%s:%d: the head is\n%.*s\nwant\n%s\n", __FILE__, line, (int)b.len,
		    b.data, want);
		check_failures++;
	}
	buf_free(&b);
}

#define HEAD_IS(url, method, headers, with_body, len, want) \
	head_is(__LINE__, url, method, headers, with_body, len, want)

static void
test_head(void)
{
	static const char *const none[] = {NULL};
	static const char *const provider[] = {
		"Authorization: Bearer sk-1", "Content-Type: application/json", NULL
	};
	static const char *const own[] = {
		"accept: text/event-stream", "HOST: other.example", "Content-Length: 7", NULL
	};
	static const char *const removed[] = {"Expect:", "X-Blank:  \t", "Accept:", NULL};
	static const char *const semicolon[] = {"X-Empty;", "X-Two: 2", NULL};
	static const char *const injected[] = {
		"X-A: a\r\nX-Injected: 1", "X-B: b\n", "X-C: c\r", "X-D: \r\n", "X-Ok: yes", NULL
	};
	static const char *const hidden_host[] = {"Host: evil\r\nX-Evil: 1", NULL};
	static const char *const hidden_length[] = {"Content-Length: 1\r\n\r\nGET /x HTTP/1.1", NULL};
	static const char *const hidden_accept[] = {"Accept: a\nX: y", "Content-Type: t\rX: y", NULL};
	static const char *const host_semicolon[] = {"Host;", NULL};
	static const char *const type_semicolon[] = {"content-type;", NULL};
	static const char *const session[] = {"Mcp-Session-Id: s1", NULL};
	static const char *const not_headers[] = {
		"no colon here", ": no name", "X-Spaced; ", "X; y", ";", "Ok: 1", NULL
	};
	static const char *const lookalikes[] = {
		"Accept-Encoding: identity", "Hostname: x", "Content-Length-Extra: 1",
		"Content-Typed: 1", NULL
	};

	HEAD_IS("http://h:8080/v1/chat", "POST", NULL, 1, 5,
	    "POST /v1/chat HTTP/1.1\r\nHost: h:8080\r\nAccept: */*\r\n"
	    "Content-Length: 5\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n");
	HEAD_IS("http://h:8080/v1/chat", "POST", provider, 1, 12345,
	    "POST /v1/chat HTTP/1.1\r\nHost: h:8080\r\nAccept: */*\r\n"
	    "Authorization: Bearer sk-1\r\nContent-Type: application/json\r\n"
	    "Content-Length: 12345\r\n\r\n");
	HEAD_IS("http://h/", "POST", none, 1, 0,
	    "POST / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n"
	    "Content-Length: 0\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n");
	HEAD_IS("http://h", "GET", NULL, 0, 0, "GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n");
	HEAD_IS("http://[::1]:9/p?x=1", "GET", provider, 0, 99,
	    "GET /p?x=1 HTTP/1.1\r\nHost: [::1]:9\r\nAccept: */*\r\n"
	    "Authorization: Bearer sk-1\r\nContent-Type: application/json\r\n\r\n");
	HEAD_IS("http://h:80/mcp", "DELETE", session, 0, 0,
	    "DELETE /mcp HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nMcp-Session-Id: s1\r\n\r\n");
	/* A query without a path: the request target still starts with "/" (origin-form). */
	HEAD_IS("http://h?q", "GET", NULL, 0, 0, "GET /?q HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n");
	HEAD_IS("http://h:81?q=/x", "GET", NULL, 0, 0,
	    "GET /?q=/x HTTP/1.1\r\nHost: h:81\r\nAccept: */*\r\n\r\n");
	/* The caller's Accept, Host and Content-Length replace Valerie's, whatever their case. */
	HEAD_IS("http://h/", "POST", own, 1, 5,
	    "POST / HTTP/1.1\r\naccept: text/event-stream\r\nHOST: other.example\r\nContent-Length: 7\r\n"
	    "Content-Type: application/x-www-form-urlencoded\r\n\r\n");
	/* "Name:" with no value: left out, and Valerie's own of that name too. */
	HEAD_IS("http://h/", "GET", removed, 0, 0, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
	/* "Name;": sent with an empty value. */
	HEAD_IS("http://h/", "GET", semicolon, 0, 0,
	    "GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Empty:\r\nX-Two: 2\r\n\r\n");
	/* A line holding CR or LF is never sent... */
	HEAD_IS("http://h/", "GET", injected, 0, 0,
	    "GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Ok: yes\r\n\r\n");
	/* ...and, not sent, it does not take the place of Valerie's own Host, Accept, Content-Length. */
	HEAD_IS("http://h/", "GET", hidden_host, 0, 0, "GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n");
	HEAD_IS("http://h/", "POST", hidden_length, 1, 3,
	    "POST / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n"
	    "Content-Length: 3\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n");
	HEAD_IS("http://h/", "POST", hidden_accept, 1, 3,
	    "POST / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n"
	    "Content-Length: 3\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n");
	/* "Host;" and "Content-Type;" are the caller's own (libcurl's rule): never two of them. */
	HEAD_IS("http://h/", "GET", host_semicolon, 0, 0, "GET / HTTP/1.1\r\nAccept: */*\r\nHost:\r\n\r\n");
	HEAD_IS("http://h/", "POST", type_semicolon, 1, 2,
	    "POST / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\ncontent-type:\r\nContent-Length: 2\r\n\r\n");
	/* Lines that are no header (no name, no colon) are left out, as libcurl leaves them out. */
	HEAD_IS("http://h/", "GET", not_headers, 0, 0,
	    "GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nOk: 1\r\n\r\n");
	/* A name that only starts like Host or Accept is someone else's. */
	HEAD_IS("http://h/", "POST", lookalikes, 1, 1,
	    "POST / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nAccept-Encoding: identity\r\nHostname: x\r\n"
	    "Content-Length-Extra: 1\r\nContent-Typed: 1\r\nContent-Length: 1\r\n"
	    "Content-Type: application/x-www-form-urlencoded\r\n\r\n");
}

/* ---- the answer ---- */

/* What reading one answer gave. */
struct got {
	struct buf lines;       /* each on_line, followed by "\n" */
	struct buf body;
	size_t stop_at;         /* on_body says stop once the body holds this many bytes (0: never) */
	enum http1_status st;   /* the last word: http1_feed's, or http1_eof's after MORE */
	size_t used;            /* bytes the parser took, in all */
	int keep;
	int started;
	const char *error;
};

static void
on_line(void *ctx, const char *line, size_t len)
{
	struct got *g = ctx;

	buf_append(&g->lines, line, len);
	buf_puts(&g->lines, "\n");
}

static int
on_body(void *ctx, const char *data, size_t len)
{
	struct got *g = ctx;

	if (len == 0)
		buf_puts(&g->lines, "(an empty on_body call)\n");
	buf_append(&g->body, data, len);
	return g->stop_at > 0 && g->body.len >= g->stop_at;
}

/*
 * Reads in[0..n) cut at cuts[0..ncuts) (ascending), then, if the answer is
 * not over and `eof`, the close. The result in *g (caller frees its bufs).
 */
static void
read_answer(const char *in, size_t n, const size_t *cuts, size_t ncuts, int eof, struct got *g)
{
	struct http1_parser p;
	size_t at = 0, k, end, used;

	memset(&p, 0, sizeof(p));
	p.on_line = on_line;
	p.on_body = on_body;
	p.ctx = g;
	g->st = HTTP1_MORE;
	g->used = 0;
	for (k = 0; k <= ncuts && g->st == HTTP1_MORE; k++) {
		end = k < ncuts ? cuts[k] : n;
		g->st = http1_feed(&p, in + at, end - at, &used);
		if (used > end - at || (g->st == HTTP1_MORE && used != end - at)) {
			buf_puts(&g->lines, "(used is wrong)\n");
			g->st = HTTP1_ERROR;
		}
		g->used += used;
		at = end;
	}
	if (g->st == HTTP1_MORE && eof)
		g->st = http1_eof(&p);
	g->keep = http1_keep_alive(&p);
	g->started = http1_started(&p);
	g->error = p.error;
	if ((g->st == HTTP1_ERROR) != (p.error != NULL))
		buf_puts(&g->lines, "(error and status disagree)\n");
}

static int
same_got(const struct got *a, const struct got *b)
{
	/*
	 * Where on_body says stop depends on the pieces it was handed: then
	 * only the head and the stop itself are the same, and the body so far
	 * reached the mark.
	 */
	if (a->st == HTTP1_STOPPED)
		return b->st == HTTP1_STOPPED && b->body.len >= b->stop_at && a->lines.len == b->lines.len &&
		    memcmp(a->lines.data, b->lines.data, a->lines.len) == 0;
	return a->st == b->st && (a->st == HTTP1_ERROR || a->used == b->used) && a->keep == b->keep &&
	    a->started == b->started &&
	    a->lines.len == b->lines.len && (a->lines.len == 0 ||
	    memcmp(a->lines.data, b->lines.data, a->lines.len) == 0) &&
	    a->body.len == b->body.len && (a->body.len == 0 ||
	    memcmp(a->body.data, b->body.data, a->body.len) == 0) &&
	    (a->error == NULL ? b->error == NULL : b->error != NULL && strcmp(a->error, b->error) == 0);
}

static void
got_free(struct got *g)
{
	buf_free(&g->lines);
	buf_free(&g->body);
}

static const char *const status_names[] = {"MORE", "DONE", "STOPPED", "ERROR"};

/* What an answer must read as, in one piece and in every other. */
struct want {
	enum http1_status st;
	const char *body;       /* NULL: don't look */
	const char *lines;      /* NULL: don't look */
	long used;              /* -1: all of it (not looked at with HTTP1_ERROR: no use is made of it) */
	int keep;
	const char *error;      /* a part of the message, with HTTP1_ERROR */
	size_t stop_at;
	int eof;                /* close after the bytes when the answer is not over */
};

static void
answer_is(int line, const char *in, size_t n, const struct want *w)
{
	struct got whole = {0}, part;
	size_t cut, *cuts, k, step;
	int bad = 0;

	whole.stop_at = w->stop_at;
	read_answer(in, n, NULL, 0, w->eof, &whole);
	if (whole.st != w->st) {
		fprintf(stderr, "%s:%d: status %s (%s), want %s\n", __FILE__, line,
		    status_names[whole.st], whole.error ? whole.error : "", status_names[w->st]);
		bad++;
	}
	if (w->body != NULL && (whole.body.len != strlen(w->body) ||
	    memcmp(whole.body.data ? whole.body.data : "", w->body, whole.body.len) != 0)) {
		fprintf(stderr, "%s:%d: body \"%.*s\", want \"%s\"\n", __FILE__, line,
		    (int)whole.body.len, whole.body.data ? whole.body.data : "", w->body);
		bad++;
	}
	if (w->lines != NULL && (whole.lines.len != strlen(w->lines) ||
	    memcmp(whole.lines.data ? whole.lines.data : "", w->lines, whole.lines.len) != 0)) {
		fprintf(stderr, "%s:%d: lines\n%.*s\nwant\n%s\n", __FILE__, line,
		    (int)whole.lines.len, whole.lines.data ? whole.lines.data : "", w->lines);
		bad++;
	}
	if (w->st != HTTP1_ERROR && whole.used != (w->used < 0 ? n : (size_t)w->used)) {
		fprintf(stderr, "%s:%d: used %zu, want %ld\n", __FILE__, line, whole.used, w->used);
		bad++;
	}
	if (whole.keep != w->keep) {
		fprintf(stderr, "%s:%d: keep-alive %d, want %d\n", __FILE__, line, whole.keep, w->keep);
		bad++;
	}
	if (w->st == HTTP1_ERROR && (whole.error == NULL ||
	    (w->error != NULL && strstr(whole.error, w->error) == NULL))) {
		fprintf(stderr, "%s:%d: error \"%s\", want one with \"%s\"\n", __FILE__, line,
		    whole.error ? whole.error : "(none)", w->error ? w->error : "");
		bad++;
	}
	if (w->st != HTTP1_ERROR && whole.error != NULL) {
		fprintf(stderr, "%s:%d: error \"%s\" without HTTP1_ERROR\n", __FILE__, line, whole.error);
		bad++;
	}
	if (n > 0 && !whole.started) {
		fprintf(stderr, "%s:%d: bytes came but http1_started says none did\n", __FILE__, line);
		bad++;
	}

	/* One byte at a time. */
	cuts = calloc(n + 1, sizeof(*cuts));
	if (cuts == NULL)
		abort();
	for (k = 0; k + 1 < n; k++)
		cuts[k] = k + 1;
	memset(&part, 0, sizeof(part));
	part.stop_at = w->stop_at;
	read_answer(in, n, cuts, n > 0 ? n - 1 : 0, w->eof, &part);
	if (!same_got(&whole, &part)) {
		fprintf(stderr, "%s:%d: one byte at a time reads otherwise: %s used %zu, body %zu bytes, "
		    "lines\n%.*s\n", __FILE__, line, status_names[part.st], part.used, part.body.len,
		    (int)part.lines.len, part.lines.data ? part.lines.data : "");
		bad++;
	}
	got_free(&part);

	/* Every split in two (a sample of them for a long answer), and an empty piece first. */
	step = n > 4096 ? n / 1024 + 1 : 1;
	for (cut = 0; cut <= n && !bad; cut += step) {
		memset(&part, 0, sizeof(part));
		part.stop_at = w->stop_at;
		read_answer(in, n, &cut, 1, w->eof, &part);
		if (!same_got(&whole, &part)) {
			fprintf(stderr, "%s:%d: cut at %zu reads otherwise: %s used %zu, body \"%.*s\", "
			    "lines\n%.*s\n", __FILE__, line, cut, status_names[part.st], part.used,
			    (int)part.body.len, part.body.data ? part.body.data : "",
			    (int)part.lines.len, part.lines.data ? part.lines.data : "");
			bad++;
		}
		got_free(&part);
	}
	free(cuts);
	got_free(&whole);
	check_failures += bad;
}

#define ANSWER(in, ...) do { \
	const char *in_ = (in); \
	answer_is(__LINE__, in_, strlen(in_), &(const struct want){__VA_ARGS__}); \
} while (0)

#define OK200 "HTTP/1.1 200 OK\r\n"

static void
test_lengths(void)
{
	ANSWER(OK200 "Content-Type: application/json\r\nContent-Length: 5\r\n\r\nhello",
	    .st = HTTP1_DONE, .body = "hello",
	    .lines = "HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: 5\n",
	    .used = -1, .keep = 1);
	ANSWER(OK200 "content-length:5\r\n\r\nhello", .st = HTTP1_DONE, .body = "hello", .used = -1,
	    .keep = 1);
	ANSWER(OK200 "CONTENT-LENGTH: \t 5 \t\r\n\r\nhello", .st = HTTP1_DONE, .body = "hello",
	    .used = -1, .keep = 1);
	ANSWER(OK200 "Content-Length: 0\r\n\r\n", .st = HTTP1_DONE, .body = "", .used = -1, .keep = 1);
	ANSWER(OK200 "Content-Length: 000000000000000003\r\n\r\nabc", .st = HTTP1_DONE, .body = "abc",
	    .used = -1, .keep = 1);
	/* Two equal Content-Lengths are one. */
	ANSWER(OK200 "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", .st = HTTP1_DONE, .body = "abc",
	    .used = -1, .keep = 1);
	/* Bytes after the answer are not read: the connection cannot be used again. */
	ANSWER(OK200 "Content-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n", .st = HTTP1_DONE, .body = "ok",
	    .used = (long)strlen(OK200 "Content-Length: 2\r\n\r\nok"), .keep = 1);
	ANSWER(OK200 "Content-Length: 0\r\n\r\n\r\n", .st = HTTP1_DONE, .body = "",
	    .used = (long)strlen(OK200 "Content-Length: 0\r\n\r\n"), .keep = 1);
	/* A body the close ends. */
	ANSWER(OK200 "Content-Type: text/plain\r\n\r\nsome body\r\n\r\nmore", .st = HTTP1_DONE,
	    .body = "some body\r\n\r\nmore", .used = -1, .keep = 0, .eof = 1);
	ANSWER(OK200 "\r\n", .st = HTTP1_DONE, .body = "", .used = -1, .keep = 0, .eof = 1);
	ANSWER(OK200 "Content-Type: text/plain\r\n\r\nsome body", .st = HTTP1_MORE, .body = "some body",
	    .used = -1, .keep = 0);
	/* HTTP/1.0 and Connection: close end the connection with the answer. */
	ANSWER("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", .st = HTTP1_DONE, .body = "ok", .used = -1,
	    .keep = 0);
	ANSWER("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
	    .st = HTTP1_DONE, .body = "ok", .used = -1, .keep = 0);
	ANSWER("HTTP/1.0 200 OK\r\n\r\nto the end", .st = HTTP1_DONE, .body = "to the end", .used = -1,
	    .keep = 0, .eof = 1);
	ANSWER(OK200 "Connection: close\r\nContent-Length: 2\r\n\r\nok", .st = HTTP1_DONE, .body = "ok",
	    .used = -1, .keep = 0);
	ANSWER(OK200 "connection: Keep-Alive, CLOSE\r\nContent-Length: 2\r\n\r\nok", .st = HTTP1_DONE,
	    .body = "ok", .used = -1, .keep = 0);
	ANSWER(OK200 "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok",
	    .st = HTTP1_DONE, .body = "ok", .used = -1, .keep = 1);
	ANSWER(OK200 "Connection: closed, x-close\r\nContent-Length: 2\r\n\r\nok", .st = HTTP1_DONE,
	    .body = "ok", .used = -1, .keep = 1);
	/* 204 and 304 have no body, whatever their Content-Length says. */
	ANSWER("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", .st = HTTP1_DONE, .body = "",
	    .used = -1, .keep = 1);
	ANSWER("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", .st = HTTP1_DONE, .body = "",
	    .used = -1, .keep = 1);
	ANSWER("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1", .st = HTTP1_DONE,
	    .body = "", .used = (long)strlen("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
	    .keep = 1);
	ANSWER("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", .st = HTTP1_DONE, .used = -1,
	    .keep = 0);
	/* Errors carry their body like any answer. */
	ANSWER("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 4\r\n\r\nslow",
	    .st = HTTP1_DONE, .body = "slow",
	    .lines = "HTTP/1.1 429 Too Many Requests\nRetry-After: 2\nContent-Length: 4\n",
	    .used = -1, .keep = 1);
	/* Lines that end in a bare LF; blank lines before the status line; no reason phrase. */
	ANSWER("HTTP/1.1 200 OK\nContent-Length: 2\n\nok", .st = HTTP1_DONE, .body = "ok",
	    .lines = "HTTP/1.1 200 OK\nContent-Length: 2\n", .used = -1, .keep = 1);
	ANSWER("\r\n\nHTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", .st = HTTP1_DONE, .body = "ok",
	    .lines = "HTTP/1.1 200\nContent-Length: 2\n", .used = -1, .keep = 1);
	ANSWER("HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok", .st = HTTP1_DONE, .body = "ok",
	    .used = -1, .keep = 1);
	/* An obsolete folded line is dropped, not taken as a header of its own. */
	ANSWER(OK200 "X-A: a\r\n Content-Length: 99\r\nContent-Length: 2\r\n\r\nok", .st = HTTP1_DONE,
	    .body = "ok", .lines = "HTTP/1.1 200 OK\nX-A: a\nContent-Length: 2\n", .used = -1, .keep = 1);
	/* A line without a colon is passed on and otherwise ignored. */
	ANSWER(OK200 "no colon\r\nContent-Length: 2\r\n\r\nok", .st = HTTP1_DONE, .body = "ok",
	    .used = -1, .keep = 1);
	/* on_body asking to stop: what it was handed counts as read. */
	ANSWER(OK200 "Content-Length: 10\r\n\r\n0123456789", .st = HTTP1_STOPPED, .stop_at = 1,
	    .body = "0123456789", .used = -1, .keep = 0);
	ANSWER(OK200 "Content-Length: 10\r\n\r\n0123456789", .st = HTTP1_STOPPED, .stop_at = 10,
	    .body = "0123456789", .used = -1, .keep = 0);
	ANSWER(OK200 "\r\n0123456789", .st = HTTP1_STOPPED, .stop_at = 1, .body = "0123456789",
	    .used = -1, .keep = 0, .eof = 1);
}

static void
test_chunked(void)
{
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n"
	    "5;name=val\r\nhello\r\n6 ; a=\"b;c\" ;x\r\n world\r\nA\r\n0123456789\r\n"
	    "0;last\r\nX-Trailer: t\r\nY: 2\r\n\r\n",
	    .st = HTTP1_DONE, .body = "hello world0123456789",
	    .lines = "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n", .used = -1, .keep = 1);
	ANSWER(OK200 "transfer-encoding: Chunked\r\n\r\n1\r\na\r\n00000\r\n\r\n", .st = HTTP1_DONE,
	    .body = "a", .used = -1, .keep = 1);
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", .st = HTTP1_DONE, .body = "",
	    .used = -1, .keep = 1);
	ANSWER(OK200 "Transfer-Encoding: chunked\n\nf\nabcdefghijklmno\n0\n\n", .st = HTTP1_DONE,
	    .body = "abcdefghijklmno", .used = -1, .keep = 1);
	/* An SSE stream as vLLM, Ollama and Node send it, and what follows it. */
	ANSWER(OK200 "content-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
	    "f\r\ndata: {\"a\":1}\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\nHTTP/1.1 200",
	    .st = HTTP1_DONE, .body = "data: {\"a\":1}\n\ndata: [DONE]\n\n",
	    .used = (long)strlen(OK200 "content-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
	    "f\r\ndata: {\"a\":1}\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"), .keep = 1);
	/* Chunked wins over a Content-Length; such an answer does not leave its connection for another. */
	ANSWER(OK200 "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	    .st = HTTP1_DONE, .body = "hello", .used = -1, .keep = 0);
	ANSWER(OK200 "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	    .st = HTTP1_DONE, .body = "hello", .used = -1, .keep = 0);
	/* chunked last: the framing; another coding last: the body runs to the close. */
	ANSWER(OK200 "Transfer-Encoding: gzip, chunked\r\n\r\n2\r\nzz\r\n0\r\n\r\n", .st = HTTP1_DONE,
	    .body = "zz", .used = -1, .keep = 1);
	ANSWER(OK200 "Transfer-Encoding: chunked, gzip\r\n\r\n2\r\nzz\r\n0\r\n\r\n", .st = HTTP1_DONE,
	    .body = "2\r\nzz\r\n0\r\n\r\n", .used = -1, .keep = 0, .eof = 1);
	ANSWER(OK200 "Transfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nzzzz", .st = HTTP1_DONE,
	    .body = "zzzz", .used = -1, .keep = 0, .eof = 1);
	/* A chunk extension longer than a kept line is fine; one longer than a chunk line may be is not. */
	{
		struct buf b = {0};

		buf_puts(&b, OK200 "Transfer-Encoding: chunked\r\n\r\n3;");
		while (b.len < 3000)
			buf_puts(&b, "ext=value;");
		buf_puts(&b, "\r\nabc\r\n0\r\n\r\n");
		ANSWER(b.data, .st = HTTP1_DONE, .body = "abc", .used = -1, .keep = 1);
		buf_reset(&b, 0);
		buf_puts(&b, OK200 "Transfer-Encoding: chunked\r\n\r\n3;");
		while (b.len < 5000)
			buf_puts(&b, "ext=value;");
		buf_puts(&b, "\r\nabc\r\n0\r\n\r\n");
		ANSWER(b.data, .st = HTTP1_ERROR, .body = "", .used = -1, .keep = 0, .error = "chunked");
		/* A size whose digits run past the kept part of the line is not read short. */
		buf_reset(&b, 0);
		buf_puts(&b, OK200 "Transfer-Encoding: chunked\r\n\r\n");
		while (b.len < 2000)
			buf_puts(&b, "0");
		buf_puts(&b, "5\r\nhello\r\n0\r\n\r\n");
		ANSWER(b.data, .st = HTTP1_ERROR, .body = "", .keep = 0, .error = "chunk",
		    .used = (long)b.len - (long)strlen("hello\r\n0\r\n\r\n"));
		buf_free(&b);
	}
	/* Sizes too large for 64 bits, and one just below. */
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", .st = HTTP1_ERROR,
	    .error = "too large", .body = "", .used = -1, .keep = 0);
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n", .st = HTTP1_ERROR,
	    .error = "too large", .body = "", .used = -1, .keep = 0);
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFF\r\nabc", .st = HTTP1_ERROR,
	    .error = "before the answer's end", .body = "abc", .used = -1, .keep = 0, .eof = 1);
	/* Broken framing. */
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n", .st = HTTP1_ERROR,
	    .error = "does not end", .body = "hello", .used = -1, .keep = 0);
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello0\r\n\r\n", .st = HTTP1_ERROR,
	    .error = "does not end", .body = "hello", .used = -1, .keep = 0);
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\nzz\r\n", .st = HTTP1_ERROR, .error = "chunked",
	    .body = "", .used = -1, .keep = 0);
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n\r\n", .st = HTTP1_ERROR, .error = "chunked",
	    .body = "", .used = -1, .keep = 0);
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n", .st = HTTP1_ERROR,
	    .error = "chunked", .body = "", .used = -1, .keep = 0);
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n-5\r\n", .st = HTTP1_ERROR, .error = "chunked",
	    .body = "", .used = -1, .keep = 0);
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n", .st = HTTP1_ERROR,
	    .error = "chunked", .body = "", .used = -1, .keep = 0);
	/* Cut short anywhere: an error, with a message. */
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n5\r\nhel", .st = HTTP1_ERROR,
	    .error = "before the answer's end", .body = "hel", .used = -1, .keep = 0, .eof = 1);
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello", .st = HTTP1_ERROR,
	    .error = "before the answer's end", .body = "hello", .used = -1, .keep = 0, .eof = 1);
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", .st = HTTP1_ERROR,
	    .error = "before the answer's end", .body = "hello", .used = -1, .keep = 0, .eof = 1);
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n", .st = HTTP1_ERROR,
	    .error = "before the answer's end", .body = "hello", .used = -1, .keep = 0, .eof = 1);
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n", .st = HTTP1_ERROR,
	    .error = "before the answer's end", .body = "hello", .used = -1, .keep = 0, .eof = 1);
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n", .st = HTTP1_ERROR,
	    .error = "before the answer's end", .body = "", .used = -1, .keep = 0, .eof = 1);
	/* Stopped in the middle of a chunk. */
	ANSWER(OK200 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n",
	    .st = HTTP1_STOPPED, .stop_at = 7, .body = "helloworld",
	    .used = (long)strlen(OK200 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld"),
	    .keep = 0);
}

static void
test_interim(void)
{
	ANSWER("HTTP/1.1 100 Continue\r\n\r\n"
	    "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
	    OK200 "Content-Length: 2\r\n\r\nok",
	    .st = HTTP1_DONE, .body = "ok",
	    .lines = "HTTP/1.1 100 Continue\nHTTP/1.1 103 Early Hints\nLink: </style.css>; rel=preload\n"
	    "HTTP/1.1 200 OK\nContent-Length: 2\n", .used = -1, .keep = 1);
	/* What an interim answer says of the connection or its length is not the final one's. */
	ANSWER("HTTP/1.1 100 Continue\r\nConnection: close\r\nContent-Length: 9\r\n\r\n"
	    OK200 "Content-Length: 2\r\n\r\nok", .st = HTTP1_DONE, .body = "ok", .used = -1, .keep = 1);
	ANSWER("HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
	    OK200 "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", .st = HTTP1_DONE,
	    .body = "ok", .used = -1, .keep = 1);
	ANSWER("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", .st = HTTP1_ERROR,
	    .error = "switched", .body = "", .used = -1, .keep = 0);
	ANSWER("HTTP/1.1 100 Continue\r\n\r\n", .st = HTTP1_ERROR, .error = "closed", .body = "",
	    .used = -1, .keep = 0, .eof = 1);
	ANSWER("HTTP/1.1 100 Continue\r\n\r\n", .st = HTTP1_MORE, .body = "", .used = -1, .keep = 0);
}

static void
test_broken(void)
{
	static const char *const not_http[] = {
		"<html><body>Bad Gateway</body></html>\r\n",
		"HTTP/2 200\r\n\r\n",
		"HTTP/2.0 200 OK\r\n\r\n",
		"HTTP/1.1 20 OK\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 099 Low\r\n\r\n",
		"HTTP/1.1 -20 OK\r\n\r\n",
		"http/1.1 200 OK\r\n\r\n",
		"HTTP/1.1  200 OK\r\n\r\n",
		"HTTP/1.x 200 OK\r\n\r\n",
		"HTTP/1.1\t200 OK\r\n\r\n",
		"ICY 200 OK\r\n\r\n",
		" HTTP/1.1 200 OK\r\n\r\n",
		"\x16\x03\x01\x02\x01\x01\x01\x01\xfc\x03\x03\n",
		"SSH-2.0-OpenSSH_9.2\r\n",
		NULL
	};
	static const char *const bad_length[] = {
		"abc", "-1", "+5", "1 2", "5,5", "5, 5", "0x10", "", " ", "1e3", "5;", "9999999999999999999",
		"5\x01", NULL
	};
	struct buf b = {0};
	size_t i;

	for (i = 0; not_http[i] != NULL; i++) {
		buf_reset(&b, 0);
		buf_puts(&b, not_http[i]);
		ANSWER(b.data, .st = HTTP1_ERROR, .error = "not HTTP/1.x", .keep = 0, .body = "");
	}
	for (i = 0; bad_length[i] != NULL; i++) {
		buf_reset(&b, 0);
		buf_printf(&b, OK200 "Content-Length: %s\r\n\r\nhello", bad_length[i]);
		ANSWER(b.data, .st = HTTP1_ERROR, .error = "Content-Length", .keep = 0, .body = "",
		    .used = (long)b.len - 7);
	}
	ANSWER(OK200 "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", .st = HTTP1_ERROR,
	    .error = "two different", .body = "", .keep = 0);
	/* Cut short: an error with a message, and whether anything came. */
	ANSWER("", .st = HTTP1_ERROR, .error = "without answering", .used = 0, .keep = 0, .eof = 1);
	ANSWER("HTTP/1.1 20", .st = HTTP1_ERROR, .error = "in the answer's headers", .used = -1, .keep = 0,
	    .eof = 1);
	ANSWER("\r\n", .st = HTTP1_ERROR, .error = "in the answer's headers", .used = -1, .keep = 0,
	    .eof = 1);
	ANSWER(OK200 "Content-Le", .st = HTTP1_ERROR, .error = "in the answer's headers", .used = -1,
	    .keep = 0, .eof = 1);
	ANSWER(OK200 "Content-Length: 10\r\n", .st = HTTP1_ERROR, .error = "in the answer's headers",
	    .used = -1, .keep = 0, .eof = 1);
	ANSWER(OK200 "Content-Length: 10\r\n\r\nabc", .st = HTTP1_ERROR, .error = "before the answer's end",
	    .body = "abc", .used = -1, .keep = 0, .eof = 1);
	buf_free(&b);
}

static void
test_limits(void)
{
	struct buf b = {0}, lines = {0};
	size_t i;

	/* A header line longer than HTTP1_LINE_MAX is dropped; the answer reads on. */
	buf_puts(&b, OK200 "X-Long: ");
	for (i = 0; i < 3 * HTTP1_LINE_MAX; i++)
		buf_puts(&b, "a");
	buf_puts(&b, "\r\nContent-Length: 2\r\n\r\nok");
	ANSWER(b.data, .st = HTTP1_DONE, .body = "ok", .lines = "HTTP/1.1 200 OK\nContent-Length: 2\n",
	    .used = -1, .keep = 1);
	/* The longest line kept whole, CR and LF aside, and one byte more. */
	buf_reset(&b, 0);
	buf_reset(&lines, 0);
	buf_puts(&b, OK200);
	buf_puts(&lines, "HTTP/1.1 200 OK\n");
	buf_puts(&b, "X-Fits: ");
	buf_puts(&lines, "X-Fits: ");
	for (i = strlen("X-Fits: "); i < HTTP1_LINE_MAX; i++) {
		buf_puts(&b, "b");
		buf_puts(&lines, "b");
	}
	buf_puts(&b, "\nX-Long: ");
	buf_puts(&lines, "\nContent-Length: 2\n");
	for (i = strlen("X-Long: "); i < HTTP1_LINE_MAX + 1; i++)
		buf_puts(&b, "c");
	buf_puts(&b, "\nContent-Length: 2\r\n\r\nok");
	ANSWER(b.data, .st = HTTP1_DONE, .body = "ok", .lines = lines.data, .used = -1, .keep = 1);
	/* ...but a line that frames the body is never dropped. */
	buf_reset(&b, 0);
	buf_puts(&b, OK200 "Content-Length: ");
	for (i = 0; i < 2 * HTTP1_LINE_MAX; i++)
		buf_puts(&b, "0");
	buf_puts(&b, "2\r\n\r\nok");
	ANSWER(b.data, .st = HTTP1_ERROR, .error = "too long", .body = "", .used = (long)b.len - 2,
	    .keep = 0);
	buf_reset(&b, 0);
	buf_puts(&b, OK200 "Transfer-Encoding: gzip");
	for (i = 0; i < HTTP1_LINE_MAX; i++)
		buf_puts(&b, " ");
	buf_puts(&b, ", chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
	ANSWER(b.data, .st = HTTP1_ERROR, .error = "too long", .body = "", .keep = 0,
	    .used = (long)b.len - (long)strlen("\r\n2\r\nok\r\n0\r\n\r\n"));
	/* A status line too long to keep. */
	buf_reset(&b, 0);
	buf_puts(&b, "HTTP/1.1 200 ");
	for (i = 0; i < HTTP1_LINE_MAX; i++)
		buf_puts(&b, "O");
	buf_puts(&b, "\r\nContent-Length: 2\r\n\r\nok");
	ANSWER(b.data, .st = HTTP1_ERROR, .error = "not HTTP/1.x", .body = "", .keep = 0,
	    .used = (long)b.len - (long)strlen("Content-Length: 2\r\n\r\nok"));
	/* The whole head, interim answers included, is bounded. */
	buf_reset(&b, 0);
	buf_puts(&b, OK200);
	while (b.len <= HTTP1_HEAD_MAX)
		buf_puts(&b, "X-Filler: 0123456789012345678901234567890123456789012345678901234567\r\n");
	buf_puts(&b, "Content-Length: 2\r\n\r\nok");
	ANSWER(b.data, .st = HTTP1_ERROR, .error = "too large", .keep = 0, .body = "");
	/* Just under the bound reads. */
	buf_reset(&b, 0);
	buf_puts(&b, "HTTP/1.1 100 Continue\r\n");
	while (b.len < HTTP1_HEAD_MAX - 200)
		buf_puts(&b, "X-Filler: 0123456789012345678901234567890123456789012345678901234567\r\n");
	buf_puts(&b, "\r\n" OK200 "Content-Length: 2\r\n\r\nok");
	ANSWER(b.data, .st = HTTP1_DONE, .keep = 1, .body = "ok", .used = -1);
	/* Trailers are bounded too. */
	buf_reset(&b, 0);
	buf_puts(&b, OK200 "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n");
	while (b.len <= HTTP1_HEAD_MAX + 1000)
		buf_puts(&b, "X-Filler: 0123456789012345678901234567890123456789012345678901234567\r\n");
	buf_puts(&b, "\r\n");
	ANSWER(b.data, .st = HTTP1_ERROR, .error = "too large", .keep = 0, .body = "ok");
	buf_free(&lines);
	buf_free(&b);
}

static void
test_api(void)
{
	struct http1_parser p;
	size_t used;
	const char *a = OK200 "Content-Length: 2\r\n\r\nok";

	memset(&p, 0, sizeof(p));
	CHECK(!http1_started(&p));
	CHECK(!http1_keep_alive(&p));
	CHECK_INT(http1_feed(&p, "", 0, &used), HTTP1_MORE);
	CHECK_INT(used, 0);
	CHECK(!http1_started(&p));
	CHECK_INT(http1_feed(&p, "\r", 1, &used), HTTP1_MORE);
	CHECK(http1_started(&p));
	/* No callbacks set: read all the same. */
	memset(&p, 0, sizeof(p));
	CHECK_INT(http1_feed(&p, a, strlen(a), &used), HTTP1_DONE);
	CHECK_INT(used, strlen(a));
	CHECK(http1_keep_alive(&p));
	/* Done stays done, and reads no more. */
	CHECK_INT(http1_feed(&p, "HTTP", 4, &used), HTTP1_DONE);
	CHECK_INT(used, 0);
	CHECK_INT(http1_eof(&p), HTTP1_DONE);
	CHECK(http1_keep_alive(&p));
	/* An error stays an error, and keeps its message. */
	memset(&p, 0, sizeof(p));
	CHECK_INT(http1_feed(&p, "junk\r\n", 6, &used), HTTP1_ERROR);
	CHECK(p.error != NULL);
	CHECK_INT(http1_feed(&p, a, strlen(a), &used), HTTP1_ERROR);
	CHECK_INT(used, 0);
	CHECK_INT(http1_eof(&p), HTTP1_ERROR);
	CHECK_CONTAINS(p.error, "not HTTP/1.x");
	CHECK(!http1_keep_alive(&p));
}

int
main(void)
{
	test_url();
	test_head();
	test_lengths();
	test_chunked();
	test_interim();
	test_broken();
	test_limits();
	test_api();
	return check_done("test_http1");
}
