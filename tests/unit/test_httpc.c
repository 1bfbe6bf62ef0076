/*
 * test_httpc: one libcurl handle serves calls of different methods in turn
 * (the options a call sets must not leak into the next) and keeps its
 * connection; a call whose client left stops although the question is asked
 * only every 200 ms, and asked every 200 ms while the upstream is silent
 * (libcurl's own loop slept a second at a time); a proxy from the environment is still honoured; a URL
 * that cannot be parsed is refused with an error that does not quote it (it
 * may hold a password or a token, and the error is logged); the header lines
 * a handle keeps from call to call are each call's own.
 * Against a small HTTP/1.1 server on a loopback port in a thread of this test.
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
		pthread_mutex_unlock(&s->lock);
		memmove(buf, buf + head + body, have - head - body);
		have -= head + body;
		if (s->delay_ms > 0)
			usleep((useconds_t)s->delay_ms * 1000);
		{
			static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			    "Content-Length: 11\r\n\r\n{\"ok\":true}";

			if (write(c, answer, sizeof(answer) - 1) < 0)
				return;
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

int
main(void)
{
	struct server s;
	pthread_t tid;
	char err[256];

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
	memset(&s, 0, sizeof(s));
	if (server_start(&s, &tid) != 0) {
		perror("server");
		return 1;
	}
	test_methods_in_turn(&s);
	test_headers_follow_call(&s);
	test_cancel(&s);
	test_bad_url_error();
	test_silent_upstream(&s);
	shutdown(s.fd, SHUT_RDWR);
	close(s.fd);
	return check_done("test_httpc");
}
