/*
 * test_httpc: one libcurl handle serves calls of different methods in turn
 * (the options a call sets must not leak into the next) and keeps its
 * connection; a call whose client left stops although the question is asked
 * only every 200 ms, and asked every 200 ms while the upstream is silent
 * (libcurl's own loop slept a second at a time); a proxy from the environment is still honoured; a URL
 * that cannot be parsed is refused with an error that does not quote it (it
 * may hold a password or a token, and the error is logged); the header lines
 * a handle keeps from call to call are each call's own.
 * Against a small HTTP/1.1 server on a loopback port in a thread of this test,
 * and a second one (struct raw) for bodies of any size and answers cut short.
 * Every test runs twice: plain http:// over the built-in client, then over
 * libcurl (VALERIE_HTTP_CLIENT=libcurl); the built-in client's own cases (a
 * kept connection the upstream closed, chunked answers, Connection: close,
 * a refused connection, garbage, a body to the close cut by a reset, a 200
 * head before the body was read, the retry's connect timeout) run on both
 * too, as the two must agree.
 */
#include "config.h"

#include "../../app/httpc.h"
#include "../../app/vtime.h"
#include "check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define SEEN_MAX 16

/* What the server saw: one line per request, "METHOD target body-length", and its X-Tag. */
struct server {
	int fd;
	int port;
	int delay_ms;              /* before each answer */
	pthread_mutex_t lock;
	char seen[SEEN_MAX][160];
	char tags[SEEN_MAX][32];   /* the X-Tag header's values, joined by "|"; "" without one */
	int nseen;
	int connections;
	int mode;                  /* how it answers: an ANSWER_* */
	int closed;                /* connections it closed itself */
};

enum {
	ANSWER_PLAIN = 0,    /* Content-Length, the connection kept */
	ANSWER_CHUNKED,      /* the same body in three chunks, with an extension and a trailer */
	ANSWER_CLOSE,        /* Connection: close, then closes */
	ANSWER_DROP,         /* answers as ANSWER_PLAIN, then closes without saying so */
	ANSWER_GARBAGE,      /* an HTML page without a status line */
	ANSWER_EARLY         /* 413 and a close as soon as the head came, the body never read */
};

static void
serve_conn(struct server *s, int c)
{
	char buf[8192];
	size_t have = 0;
	ssize_t n;

	for (;;) {
		char *end, *cl, *tag, method[16], target[120];
		size_t head, body = 0, tlen;
		int mode;

		while ((end = memmem(buf, have, "\r\n\r\n", 4)) == NULL) {
			if (have == sizeof(buf))
				return;
			n = read(c, buf + have, sizeof(buf) - have);
			if (n <= 0)
				return;
			have += (size_t)n;
		}
		head = (size_t)(end - buf) + 4;
		buf[head - 1] = '\0';
		cl = strcasestr(buf, "\r\ncontent-length:");
		if (cl != NULL)
			body = strtoul(cl + 17, NULL, 10);
		if (sscanf(buf, "%15s %119s", method, target) != 2)
			return;
		pthread_mutex_lock(&s->lock);
		mode = s->mode;
		pthread_mutex_unlock(&s->lock);
		if (mode == ANSWER_EARLY) {
			static const char early_body[] = "{\"error\":\"too big\"}";
			char early[256];

			snprintf(early, sizeof(early), "HTTP/1.1 413 Payload Too Large\r\n"
			    "Content-Type: application/json\r\nConnection: close\r\n"
			    "Content-Length: %zu\r\n\r\n%s", strlen(early_body), early_body);
			pthread_mutex_lock(&s->lock);
			if (s->nseen < SEEN_MAX)
				snprintf(s->seen[s->nseen++], sizeof(s->seen[0]), "%s %s early", method, target);
			pthread_mutex_unlock(&s->lock);
			if (write(c, early, strlen(early)) < 0)
				return;
			shutdown(c, SHUT_RDWR);
			pthread_mutex_lock(&s->lock);
			s->closed++;
			pthread_mutex_unlock(&s->lock);
			return;
		}
		while (have < head + body) {
			n = read(c, buf + have, sizeof(buf) - have);
			if (n <= 0)
				return;
			have += (size_t)n;
		}
		pthread_mutex_lock(&s->lock);
		if (s->nseen < SEEN_MAX) {
			s->tags[s->nseen][0] = '\0';
			for (tag = buf; (tag = strcasestr(tag, "\r\nx-tag: ")) != NULL; tag += 9) {
				tlen = strcspn(tag + 9, "\r");
				snprintf(s->tags[s->nseen] + strlen(s->tags[s->nseen]),
				    sizeof(s->tags[0]) - strlen(s->tags[s->nseen]), "%s%.*s",
				    s->tags[s->nseen][0] ? "|" : "", (int)tlen, tag + 9);
			}
			snprintf(s->seen[s->nseen++], sizeof(s->seen[0]), "%s %s %zu", method, target, body);
		}
		mode = s->mode;
		pthread_mutex_unlock(&s->lock);
		memmove(buf, buf + head + body, have - head - body);
		have -= head + body;
		if (s->delay_ms > 0)
			usleep((useconds_t)s->delay_ms * 1000);
		{
			static const char plain[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			    "Content-Length: 11\r\n\r\n{\"ok\":true}";
			static const char chunked[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			    "Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\n{\"o\r\n7\r\nk\":true\r\n"
			    "1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n";
			static const char close_it[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			    "Connection: close\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
			static const char garbage[] = "<html><body>Bad Gateway</body></html>\r\n";
			const char *a = mode == ANSWER_CHUNKED ? chunked : mode == ANSWER_CLOSE ?
			    close_it : mode == ANSWER_GARBAGE ? garbage : plain;

			if (write(c, a, strlen(a)) < 0)
				return;
			if (mode == ANSWER_CLOSE || mode == ANSWER_DROP || mode == ANSWER_GARBAGE) {
				shutdown(c, SHUT_RDWR);   /* server_main closes it */
				pthread_mutex_lock(&s->lock);
				s->closed++;
				pthread_mutex_unlock(&s->lock);
				return;
			}
		}
	}
}

static void *
server_main(void *p)
{
	struct server *s = p;
	int c;

	while ((c = accept(s->fd, NULL, NULL)) >= 0) {
		pthread_mutex_lock(&s->lock);
		s->connections++;
		pthread_mutex_unlock(&s->lock);
		serve_conn(s, c);
		close(c);
	}
	return NULL;
}

static int
server_start(struct server *s, pthread_t *tid)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    listen(s->fd, 16) != 0 || getsockname(s->fd, (struct sockaddr *)&a, &len) != 0)
		return -1;
	s->port = ntohs(a.sin_port);
	pthread_mutex_init(&s->lock, NULL);
	return pthread_create(tid, NULL, server_main, s);
}

static enum httpc_result
call(struct httpc *h, const char *method, const char *url, const char *body,
    struct httpc_response *resp)
{
	static const char *const headers[] = {"Content-Type: application/json", NULL};
	struct httpc_request r;
	char err[256];

	memset(&r, 0, sizeof(r));
	r.method = method;
	r.url = url;
	r.headers = headers;
	r.body = body;
	r.body_len = body != NULL ? strlen(body) : 0;
	r.connect_timeout_ms = 2000;
	r.total_timeout_ms = 10000;
	r.max_bytes = 4096;
	return httpc_perform(h, &r, resp, err, sizeof(err));
}

/* Calls of every method in turn on one handle and one connection. */
static void
test_methods_in_turn(struct server *s)
{
	struct httpc *h = httpc_new();
	struct httpc_response resp;
	char url[64];
	static const char *const want[] = {
		"POST /a 9", "GET /b 0", "DELETE /c 0", "POST /d 2", "DELETE /e 0", "GET /f 0",
	};
	static const char *const order[][3] = {
		{"POST", "/a", "{\"x\":123}"}, {"GET", "/b", NULL}, {"DELETE", "/c", NULL},
		{"POST", "/d", "{}"}, {"DELETE", "/e", NULL}, {"GET", "/f", NULL},
	};
	size_t i;

	CHECK(h != NULL);
	for (i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", s->port, order[i][1]);
		CHECK_INT(call(h, order[i][0], url, order[i][2], &resp), HTTPC_OK);
		CHECK_INT(resp.status, 200);
		CHECK_STR(resp.content_type, "application/json");
		CHECK(resp.body.len == 11 && memcmp(resp.body.data, "{\"ok\":true}", 11) == 0);
		httpc_response_free(&resp);
	}
	pthread_mutex_lock(&s->lock);
	CHECK_INT(s->nseen, 6);
	for (i = 0; i < 6 && i < (size_t)s->nseen; i++)
		CHECK_STR(s->seen[i], want[i]);
	CHECK_INT(s->connections, 1);
	pthread_mutex_unlock(&s->lock);
	httpc_free(h);
}

/*
 * The handle keeps the last call's header lines and builds them again only
 * when they change: each call must still send its own, no more and no fewer.
 */
static void
test_headers_follow_call(struct server *s)
{
	static const char *const one[] = {"X-Tag: one", NULL};
	static const char *const two[] = {"X-Tag: two", "X-Tag: three", NULL};
	static const char *const two_copy[] = {"X-Tag: two", "X-Tag: three", NULL};
	static const char *const shorter[] = {"X-Tag: two", NULL};
	static const char *const none[] = {NULL};
	const char *const *order[] = {one, one, two, two_copy, shorter, none, NULL, one};
	static const char *const want[] = {"one", "one", "two|three", "two|three", "two", "", "",
	    "one"};
	struct httpc *h = httpc_new();
	struct httpc_request r;
	struct httpc_response resp;
	char url[64], err[256];
	size_t i;
	int from;

	CHECK(h != NULL);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/tags", s->port);
	pthread_mutex_lock(&s->lock);
	from = s->nseen;
	pthread_mutex_unlock(&s->lock);
	for (i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		memset(&r, 0, sizeof(r));
		r.method = "GET";
		r.url = url;
		r.headers = order[i];
		r.connect_timeout_ms = 2000;
		r.total_timeout_ms = 10000;
		r.max_bytes = 4096;
		CHECK_INT(httpc_perform(h, &r, &resp, err, sizeof(err)), HTTPC_OK);
		httpc_response_free(&resp);
	}
	pthread_mutex_lock(&s->lock);
	CHECK_INT(s->nseen - from, 8);
	for (i = 0; i < 8 && from + (int)i < s->nseen; i++)
		CHECK_STR(s->tags[from + (int)i], want[i]);
	pthread_mutex_unlock(&s->lock);
	httpc_free(h);
}

/* Forgets what the server saw and sets how it answers next. */
static void
server_reset(struct server *s, int mode)
{
	pthread_mutex_lock(&s->lock);
	s->nseen = 0;
	s->connections = 0;
	s->closed = 0;
	s->mode = mode;
	pthread_mutex_unlock(&s->lock);
}

/* Waits (up to 5 s) until the server has closed `n` connections itself. */
static void
wait_closed(struct server *s, int n)
{
	int i, got = 0;

	for (i = 0; i < 500 && got < n; i++) {
		pthread_mutex_lock(&s->lock);
		got = s->closed;
		pthread_mutex_unlock(&s->lock);
		if (got < n)
			usleep(10000);
	}
	CHECK(got >= n);
}

/* `n` calls on one handle, each answered 200 {"ok":true}. */
static void
calls_ok(struct server *s, struct httpc *h, int n)
{
	struct httpc_response resp;
	char url[64];
	int i;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/x", s->port);
	for (i = 0; i < n; i++) {
		CHECK_INT(call(h, "POST", url, "{}", &resp), HTTPC_OK);
		CHECK_INT(resp.status, 200);
		CHECK(resp.body.len == 11 && memcmp(resp.body.data, "{\"ok\":true}", 11) == 0);
		httpc_response_free(&resp);
		if (s->mode == ANSWER_DROP)
			wait_closed(s, i + 1);
	}
}

/*
 * Three calls on one handle to a server answering in `mode`: each answered,
 * each request seen once, over `conns` connections.
 */
static void
three_calls(struct server *s, int mode, int conns)
{
	struct httpc *h = httpc_new();

	server_reset(s, mode);
	calls_ok(s, h, 3);
	pthread_mutex_lock(&s->lock);
	CHECK_INT(s->nseen, 3);
	CHECK_INT(s->connections, conns);
	pthread_mutex_unlock(&s->lock);
	httpc_free(h);
}

/*
 * A kept connection the upstream closed while it was idle (uvicorn does so
 * after 5 s): the next call goes out once on a new connection and succeeds;
 * the upstream sees each request once.
 */
static void
test_kept_connection_closed(struct server *s)
{
	three_calls(s, ANSWER_DROP, 3);
}

/* Chunked answers (an extension, a trailer) read whole, the connection kept. */
static void
test_chunked(struct server *s)
{
	three_calls(s, ANSWER_CHUNKED, 1);
}

/* Connection: close is honoured: a new connection per call, each request sent once. */
static void
test_connection_close(struct server *s)
{
	three_calls(s, ANSWER_CLOSE, 3);
}

/* An HTML page instead of an HTTP answer: a broken call, not a 200, sent once. */
static void
test_garbage(struct server *s)
{
	struct httpc *h = httpc_new();
	struct httpc_response resp;
	char url[64];

	server_reset(s, ANSWER_GARBAGE);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/x", s->port);
	CHECK_INT(call(h, "POST", url, "{}", &resp), HTTPC_BROKEN);
	CHECK(resp.status != 200);
	httpc_response_free(&resp);
	wait_closed(s, 1);
	pthread_mutex_lock(&s->lock);
	CHECK_INT(s->nseen, 1);
	pthread_mutex_unlock(&s->lock);
	httpc_free(h);
}

/*
 * An answer over the cap stops the call (HTTPC_TOO_LARGE) and closes its
 * connection: the next call opens another.
 */
static void
test_too_large(struct server *s)
{
	struct httpc *h = httpc_new();
	struct httpc_request r;
	struct httpc_response resp;
	char url[64], err[256];

	server_reset(s, ANSWER_PLAIN);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/big", s->port);
	memset(&r, 0, sizeof(r));
	r.method = "GET";
	r.url = url;
	r.total_timeout_ms = 10000;
	r.max_bytes = 5;
	CHECK_INT(httpc_perform(h, &r, &resp, err, sizeof(err)), HTTPC_TOO_LARGE);
	CHECK(err[0] != '\0');
	httpc_response_free(&resp);
	calls_ok(s, h, 1);
	pthread_mutex_lock(&s->lock);
	CHECK_INT(s->connections, 2);
	pthread_mutex_unlock(&s->lock);
	httpc_free(h);
}

/*
 * A server that answers 413 as soon as it has the head of an 8 MB POST and
 * closes, never reading the body: the client gets the 413 and its body (a
 * send that breaks turns to reading what came), not a broken call; the
 * request is not sent again.
 */
static void
test_early_answer(struct server *s)
{
	struct httpc *h = httpc_new();
	struct httpc_request r;
	struct httpc_response resp;
	char url[64], err[256];
	size_t big = 8u << 20;
	char *body = malloc(big);

	CHECK(h != NULL && body != NULL);
	if (h == NULL || body == NULL) {
		free(body);
		httpc_free(h);
		return;
	}
	memset(body, 'x', big);
	server_reset(s, ANSWER_EARLY);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/upload", s->port);
	memset(&r, 0, sizeof(r));
	r.method = "POST";
	r.url = url;
	r.body = body;
	r.body_len = big;
	r.connect_timeout_ms = 2000;
	r.total_timeout_ms = 10000;
	r.max_bytes = 4096;
	CHECK_INT(httpc_perform(h, &r, &resp, err, sizeof(err)), HTTPC_OK);
	CHECK_INT(resp.status, 413);
	CHECK(resp.body.len == 19 && memcmp(resp.body.data, "{\"error\":\"too big\"}", 19) == 0);
	httpc_response_free(&resp);
	pthread_mutex_lock(&s->lock);
	CHECK_INT(s->nseen, 1);
	pthread_mutex_unlock(&s->lock);
	free(body);
	httpc_free(h);
}

/*
 * A host name, not an address: looked up (getaddrinfo_a for the built-in
 * client), each address tried in turn (localhost may name ::1 first, where
 * nobody listens), and the connection kept for the next call.
 */
static void
test_by_name(struct server *s)
{
	struct httpc *h = httpc_new();
	struct httpc_response resp;
	char url[64];
	int i;

	server_reset(s, ANSWER_PLAIN);
	snprintf(url, sizeof(url), "http://localhost:%d/v1/named", s->port);
	for (i = 0; i < 2; i++) {
		CHECK_INT(call(h, "GET", url, NULL, &resp), HTTPC_OK);
		CHECK_INT(resp.status, 200);
		httpc_response_free(&resp);
	}
	pthread_mutex_lock(&s->lock);
	CHECK_INT(s->nseen, 2);
	CHECK_INT(s->connections, 1);
	pthread_mutex_unlock(&s->lock);
	httpc_free(h);
}

/* Nobody listening: HTTPC_CONNECT (the request never left), with a reason. */
static void
test_refused(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	struct httpc *h = httpc_new();
	struct httpc_response resp;
	char url[64];
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/x", ntohs(a.sin_port));
	close(fd);   /* bound, never listening, now closed: refused */
	CHECK_INT(call(h, "POST", url, "{}", &resp), HTTPC_CONNECT);
	CHECK_INT(resp.status, 0);
	httpc_response_free(&resp);
	httpc_free(h);
}

static int cancel_asks;
static long long cancel_from_ms;

static int
cancel_after_300ms(void *p)
{
	(void)p;
	cancel_asks++;
	return vtime_mono_ms() - cancel_from_ms >= 300;
}

/*
 * A slow answer (3 s) and a client that leaves after 300 ms: the call stops
 * before the answer comes (HTTPC_CANCELLED, not HTTPC_OK), so the throttled
 * question is still asked again while the call waits.
 */
static void
test_cancel(struct server *s)
{
	struct httpc *h = httpc_new();
	struct httpc_request r;
	struct httpc_response resp;
	char url[64], err[256];
	long long took;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/slow", s->port);
	memset(&r, 0, sizeof(r));
	r.method = "POST";
	r.url = url;
	r.body = "{}";
	r.body_len = 2;
	r.total_timeout_ms = 10000;
	r.cancelled = cancel_after_300ms;
	s->delay_ms = 3000;
	cancel_from_ms = vtime_mono_ms();
	CHECK_INT(httpc_perform(h, &r, &resp, err, sizeof(err)), HTTPC_CANCELLED);
	took = vtime_mono_ms() - cancel_from_ms;
	CHECK(took >= 300);    /* it waited for the client to leave... */
	CHECK(cancel_asks >= 2);   /* ...asking again after its first "no" */
	httpc_response_free(&resp);
	httpc_free(h);
	s->delay_ms = 0;
}

static int
never_cancelled(void *p)
{
	(void)p;
	cancel_asks++;
	return 0;
}

/*
 * A silent upstream (5 s) and a first-byte timeout of 1.5 s: the call ends
 * with HTTPC_FIRST_BYTE_TIMEOUT, having asked about its client about every
 * 200 ms meanwhile (seven times). curl_easy_perform woke once a second, so
 * it asked three times and noticed the timeout up to a second late. Counted, not
 * timed: a host that stalls can only make it ask less.
 */
static void
test_silent_upstream(struct server *s)
{
	struct httpc *h = httpc_new();
	struct httpc_request r;
	struct httpc_response resp;
	char url[64], err[256];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/silent", s->port);
	memset(&r, 0, sizeof(r));
	r.method = "POST";
	r.url = url;
	r.body = "{}";
	r.body_len = 2;
	r.first_byte_timeout_ms = 1500;
	r.total_timeout_ms = 10000;
	r.cancelled = never_cancelled;
	s->delay_ms = 5000;
	cancel_asks = 0;
	CHECK_INT(httpc_perform(h, &r, &resp, err, sizeof(err)), HTTPC_FIRST_BYTE_TIMEOUT);
	fprintf(stderr, "asked %d times in 1.5 s of silence\n", cancel_asks);
	CHECK(cancel_asks >= 5);
	httpc_response_free(&resp);
	httpc_free(h);
}

/*
 * With http_proxy set when the process starts, calls go through the proxy
 * (the request line names the whole URL). In a child, since the environment
 * is read once by httpc_global_init.
 */
static void
test_proxy_from_env(void)
{
	struct server proxy;
	pthread_t tid;
	pid_t pid;
	int status;

	pid = fork();
	if (pid == 0) {
		struct httpc *h;
		struct httpc_response resp;
		char env[64], err[128];

		memset(&proxy, 0, sizeof(proxy));
		if (server_start(&proxy, &tid) != 0)
			_exit(2);
		snprintf(env, sizeof(env), "http://127.0.0.1:%d", proxy.port);
		setenv("http_proxy", env, 1);
		if (httpc_global_init(NULL, err, sizeof(err)) != 0)
			_exit(3);
		h = httpc_new();
		if (call(h, "GET", "http://origin.invalid:8080/via", NULL, &resp) != HTTPC_OK ||
		    resp.status != 200)
			_exit(4);
		httpc_response_free(&resp);
		httpc_free(h);
		pthread_mutex_lock(&proxy.lock);
		if (proxy.nseen != 1 || strcmp(proxy.seen[0], "GET http://origin.invalid:8080/via 0") != 0) {
			fprintf(stderr, "the proxy saw %d request(s): %s\n", proxy.nseen,
			    proxy.nseen > 0 ? proxy.seen[0] : "");
			_exit(5);
		}
		_exit(0);
	}
	CHECK(pid > 0);
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status));
	CHECK_INT(WEXITSTATUS(status), 0);
}

/* The error of a URL libcurl cannot parse names no part of it. */
static void
test_bad_url_error(void)
{
	static const char *const urls[] = {
		"http://user:s3cret-pass@[::1/v1/traces",
		"http://collector:4318/v1/traces?token=t0k-secret&x=\x01 bad",
		"http://user:s3cret-pass@host:99999999/x?token=t0k-secret",
	};
	struct httpc *h = httpc_new();
	struct httpc_request r;
	struct httpc_response resp;
	char err[256];
	size_t i;

	for (i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		memset(&r, 0, sizeof(r));
		r.method = "GET";
		r.url = urls[i];
		r.total_timeout_ms = 1000;
		CHECK_INT(httpc_perform(h, &r, &resp, err, sizeof(err)), HTTPC_BROKEN);
		CHECK(err[0] != '\0');
		CHECK(strstr(err, "s3cret") == NULL);
		CHECK(strstr(err, "t0k") == NULL);
		CHECK(strstr(err, "user") == NULL);
		httpc_response_free(&resp);
	}
	httpc_free(h);
}

/*
 * A second server, for framings and timings the first does not write: it
 * reads each request whole (a body of any size, counted and dropped) and
 * answers by its mode, one connection at a time.
 */
struct raw {
	int fd;
	int port;
	int mode;                  /* a RAW_* */
	pthread_mutex_t lock;
	int requests;              /* read whole since raw_reset */
	int connections;
};

enum {
	RAW_RESET_MIDWAY = 0,   /* 200, the body to the close: part of it, then a reset */
	RAW_HEAD_FIRST,         /* a 200 chunked head once the request's head came; the body's size when it came */
	RAW_SLOW_SILENCE        /* the second: 1.5 s of silence, then a close without an answer; the others 200 */
};

static const char raw_ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    "Content-Length: 11\r\n\r\n{\"ok\":true}";

static int
raw_write(int c, const char *text)
{
	return write(c, text, strlen(text)) == (ssize_t)strlen(text) ? 0 : -1;
}

/* Serves one connection; returns 1 when it closed `c` itself (a reset), else 0. */
static int
raw_conn(struct raw *s, int c)
{
	char buf[65536];
	size_t have = 0, head, body, got;
	ssize_t n;

	for (;;) {
		char *end, *cl;
		int nth, mode;

		while ((end = memmem(buf, have, "\r\n\r\n", 4)) == NULL) {
			if (have + 1 >= sizeof(buf))
				return 0;
			n = read(c, buf + have, sizeof(buf) - 1 - have);
			if (n <= 0)
				return 0;
			have += (size_t)n;
		}
		head = (size_t)(end - buf) + 4;
		buf[head - 1] = '\0';
		cl = strcasestr(buf, "\r\ncontent-length:");
		body = cl != NULL ? strtoul(cl + 17, NULL, 10) : 0;
		pthread_mutex_lock(&s->lock);
		mode = s->mode;
		pthread_mutex_unlock(&s->lock);
		if (mode == RAW_HEAD_FIRST) {
			if (raw_write(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
			    "Transfer-Encoding: chunked\r\n\r\n") != 0)
				return 0;
			usleep(100000);   /* the client's sends block meanwhile */
		}
		got = have - head < body ? have - head : body;
		memmove(buf, buf + head + got, have - head - got);
		have -= head + got;
		while (got < body) {
			n = read(c, buf, body - got < sizeof(buf) ? body - got : sizeof(buf));
			if (n <= 0)
				return 0;
			got += (size_t)n;
		}
		pthread_mutex_lock(&s->lock);
		nth = ++s->requests;
		pthread_mutex_unlock(&s->lock);
		if (mode == RAW_RESET_MIDWAY) {
			struct linger lg = {1, 0};

			raw_write(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nthe first half");
			usleep(50000);
			setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			close(c);   /* with a linger of 0: a reset, not a FIN */
			return 1;
		}
		if (mode == RAW_HEAD_FIRST) {
			char ev[64];

			snprintf(ev, sizeof(ev), "data: %zu\n\n", body);
			snprintf(buf, sizeof(buf), "%zx\r\n%s\r\n0\r\n\r\n", strlen(ev), ev);
			if (raw_write(c, buf) != 0)
				return 0;
			have = 0;
			continue;
		}
		if (mode == RAW_SLOW_SILENCE && nth == 2) {
			usleep(1500000);
			return 0;
		}
		if (raw_write(c, raw_ok) != 0)
			return 0;
	}
}

static void *
raw_main(void *p)
{
	struct raw *s = p;
	int c;

	while ((c = accept(s->fd, NULL, NULL)) >= 0) {
		pthread_mutex_lock(&s->lock);
		s->connections++;
		pthread_mutex_unlock(&s->lock);
		if (!raw_conn(s, c))
			close(c);
	}
	return NULL;
}

static int
raw_start(struct raw *s, pthread_t *tid)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);

	memset(s, 0, sizeof(*s));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    listen(s->fd, 16) != 0 || getsockname(s->fd, (struct sockaddr *)&a, &len) != 0)
		return -1;
	s->port = ntohs(a.sin_port);
	pthread_mutex_init(&s->lock, NULL);
	return pthread_create(tid, NULL, raw_main, s);
}

static void
raw_reset(struct raw *s, int mode)
{
	pthread_mutex_lock(&s->lock);
	s->mode = mode;
	s->requests = 0;
	s->connections = 0;
	pthread_mutex_unlock(&s->lock);
}

/*
 * A body that runs to the close, cut by a reset: the answer did not come
 * whole (HTTPC_BROKEN, as libcurl's receive error), not a short 200 read as
 * whole. Only an orderly close ends such a body.
 */
static void
test_reset_midway(struct raw *s)
{
	struct httpc *h = httpc_new();
	struct httpc_response resp;
	char url[64];

	raw_reset(s, RAW_RESET_MIDWAY);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/cut", s->port);
	CHECK_INT(call(h, "GET", url, NULL, &resp), HTTPC_BROKEN);
	httpc_response_free(&resp);
	httpc_free(h);
}

static int
collect(void *ctx, const char *data, size_t len)
{
	buf_append(ctx, data, len);
	return 0;
}

/*
 * An 8 MB POST to a server that sends its 200 head before it reads the body
 * (and the event that ends the answer after): the body keeps going while the
 * answer starts, as with libcurl, which stops sending only for a final
 * answer of 300 or more.
 */
static void
test_head_before_body(struct raw *s)
{
	struct httpc *h = httpc_new();
	struct httpc_request r;
	struct httpc_response resp;
	struct buf got;
	char url[64], err[256];
	size_t big = 8u << 20;
	char *body = malloc(big);

	buf_init(&got);
	CHECK(h != NULL && body != NULL);
	if (h == NULL || body == NULL) {
		free(body);
		httpc_free(h);
		return;
	}
	memset(body, 'x', big);
	raw_reset(s, RAW_HEAD_FIRST);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/upload", s->port);
	memset(&r, 0, sizeof(r));
	r.method = "POST";
	r.url = url;
	r.body = body;
	r.body_len = big;
	r.connect_timeout_ms = 2000;
	r.total_timeout_ms = 4000;
	r.max_bytes = 4096;
	r.on_data = collect;
	r.ctx = &got;
	CHECK_INT(httpc_perform(h, &r, &resp, err, sizeof(err)), HTTPC_OK);
	CHECK_INT(resp.status, 200);
	CHECK(got.len == 15 && memcmp(got.data, "data: 8388608\n\n", 15) == 0);
	httpc_response_free(&resp);
	buf_free(&got);
	free(body);
	httpc_free(h);
}

/*
 * A kept connection the upstream closes without an answer after 1.5 s (a
 * worker that died on it): the request goes out again on a new connection,
 * which has a connect timeout (1 s) of its own, as with libcurl, not what
 * was left of it since the call began.
 */
static void
test_retry_connects_in_time(struct raw *s, const char *host)
{
	struct httpc *h = httpc_new();
	struct httpc_request r;
	struct httpc_response resp;
	char url[64], err[256];
	int i;

	raw_reset(s, RAW_SLOW_SILENCE);
	snprintf(url, sizeof(url), "http://%s:%d/v1/x", host, s->port);
	for (i = 0; i < 2; i++) {
		memset(&r, 0, sizeof(r));
		r.method = "POST";
		r.url = url;
		r.body = "{}";
		r.body_len = 2;
		r.connect_timeout_ms = 1000;
		r.total_timeout_ms = 10000;
		r.max_bytes = 4096;
		CHECK_INT(httpc_perform(h, &r, &resp, err, sizeof(err)), HTTPC_OK);
		if (err[0] != '\0')
			fprintf(stderr, "call %d: %s\n", i, err);
		CHECK_INT(resp.status, 200);
		httpc_response_free(&resp);
	}
	pthread_mutex_lock(&s->lock);
	CHECK_INT(s->requests, 3);
	CHECK_INT(s->connections, 2);
	pthread_mutex_unlock(&s->lock);
	httpc_free(h);
}

int
main(void)
{
	struct server servers[2];
	struct raw raws[2];
	pthread_t tid;
	char err[256];
	int pass;

	unsetenv("http_proxy");
	unsetenv("https_proxy");
	unsetenv("HTTPS_PROXY");
	unsetenv("all_proxy");
	unsetenv("ALL_PROXY");
	test_proxy_from_env();
	if (httpc_global_init(NULL, err, sizeof(err)) != 0) {
		fprintf(stderr, "httpc_global_init: %s\n", err);
		return 1;
	}
	/* A server per pass: the first one may still sleep over the last test's slow answer. */
	memset(servers, 0, sizeof(servers));
	for (pass = 0; pass < 2; pass++) {
		struct server *s = &servers[pass];

		if (server_start(s, &tid) != 0) {
			perror("server");
			return 1;
		}
		if (raw_start(&raws[pass], &tid) != 0) {
			perror("raw server");
			return 1;
		}
		httpc_set_builtin(pass == 0);
		fprintf(stderr, "-- plain http:// over %s\n", pass == 0 ? "the built-in client" : "libcurl");
		server_reset(s, ANSWER_PLAIN);
		test_methods_in_turn(s);
		test_headers_follow_call(s);
		test_kept_connection_closed(s);
		test_chunked(s);
		test_connection_close(s);
		test_garbage(s);
		test_too_large(s);
		test_early_answer(s);
		test_by_name(s);
		server_reset(s, ANSWER_PLAIN);
		test_refused();
		test_cancel(s);
		test_bad_url_error();
		test_silent_upstream(s);
		test_reset_midway(&raws[pass]);
		test_head_before_body(&raws[pass]);
		test_retry_connects_in_time(&raws[pass], "127.0.0.1");
		test_retry_connects_in_time(&raws[pass], "localhost");
		shutdown(raws[pass].fd, SHUT_RDWR);
		shutdown(s->fd, SHUT_RDWR);   /* its thread ends; exit closes the socket */
	}
	return check_done("test_httpc");
}
