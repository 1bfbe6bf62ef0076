/* test_trace: the trace exporter against a small OTLP collector on loopback, in this program. */
#include "config.h"

#include "app/conf.h"
#include "app/log.h"
#include "app/metrics.h"
#include "app/trace.h"
#include "check.h"
#include "fakeenv.h"
#include "tmpdir.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SPANS_MANY 1000   /* queued at once: several export batches (256 each) */

/*
 * The collector: a listening socket and a thread per connection. Every
 * POST's body is appended to `bodies` (each ended by a newline) and its
 * spans counted; the first POST is answered only after `hold_ms`.
 */
static struct {
	int fd;
	unsigned short port;
	pthread_mutex_t mu;
	char *bodies;
	size_t len;
	size_t spans, posts;
	int hold_ms;
	atomic_int stop;
} col = {.fd = -1, .mu = PTHREAD_MUTEX_INITIALIZER};

static void
sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static size_t
count_of(const char *hay, size_t len, const char *needle)
{
	size_t n = 0, nl = strlen(needle);
	const char *p = hay, *end = hay + len, *q;

	while ((q = memmem(p, (size_t)(end - p), needle, nl)) != NULL) {
		n++;
		p = q + nl;
	}
	return n;
}

static int
send_all(int fd, const char *s)
{
	size_t len = strlen(s), off = 0;
	ssize_t w;

	while (off < len) {
		w = write(fd, s + off, len - off);
		if (w <= 0)
			return -1;
		off += (size_t)w;
	}
	return 0;
}

/* Serves the requests of one connection until the peer closes it. */
static void *
conn_main(void *arg)
{
	int fd = (int)(intptr_t)arg, first;
	char *in = NULL, *end, *cl, *tmp;
	size_t have = 0, cap = 0, head, body;
	ssize_t r;

	for (;;) {
		while ((end = have > 0 ? memmem(in, have, "\r\n\r\n", 4) : NULL) == NULL) {
			if (have + 65536 > cap) {
				cap = (have + 65536) * 2;
				if ((tmp = realloc(in, cap + 1)) == NULL)
					goto out;
				in = tmp;
			}
			if ((r = read(fd, in + have, cap - have)) <= 0)
				goto out;
			have += (size_t)r;
		}
		head = (size_t)(end - in) + 4;
		in[head - 1] = '\0';
		cl = strcasestr(in, "\r\ncontent-length:");
		body = cl != NULL ? strtoul(cl + 17, NULL, 10) : 0;
		if (strcasestr(in, "\r\nexpect: 100-continue") != NULL && have == head &&
		    send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n") != 0)
			goto out;
		while (have < head + body) {
			if (head + body > cap) {
				cap = head + body;
				if ((tmp = realloc(in, cap + 1)) == NULL)
					goto out;
				in = tmp;
			}
			if ((r = read(fd, in + have, cap - have)) <= 0)
				goto out;
			have += (size_t)r;
		}
		pthread_mutex_lock(&col.mu);
		if ((tmp = realloc(col.bodies, col.len + body + 2)) != NULL) {
			col.bodies = tmp;
			memcpy(col.bodies + col.len, in + head, body);
			col.len += body;
			col.bodies[col.len++] = '\n';
			col.bodies[col.len] = '\0';
		}
		col.spans += count_of(in + head, body, "\"spanId\"");
		first = col.posts++ == 0;
		pthread_mutex_unlock(&col.mu);
		if (first && col.hold_ms > 0)
			sleep_ms(col.hold_ms);
		if (send_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
		    "Content-Length: 2\r\n\r\n{}") != 0)
			goto out;
		memmove(in, in + head + body, have - head - body);
		have -= head + body;
	}
out:
	free(in);
	close(fd);
	return NULL;
}

static void *
accept_main(void *arg)
{
	struct pollfd p = {.fd = col.fd, .events = POLLIN};
	pthread_t t;
	int c;

	(void)arg;
	while (!atomic_load(&col.stop)) {
		if (poll(&p, 1, 100) <= 0)
			continue;
		if ((c = accept(col.fd, NULL, NULL)) < 0)
			continue;
		if (pthread_create(&t, NULL, conn_main, (void *)(intptr_t)c) != 0)
			close(c);
		else
			pthread_detach(t);
	}
	return NULL;
}

static int
collector_start(pthread_t *t)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	col.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (col.fd < 0 || bind(col.fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    listen(col.fd, 16) != 0 || getsockname(col.fd, (struct sockaddr *)&a, &alen) != 0)
		return -1;
	col.port = ntohs(a.sin_port);
	return pthread_create(t, NULL, accept_main, NULL) == 0 ? 0 : -1;
}

/* Forgets what the collector received. */
static void
collector_reset(int hold_ms)
{
	pthread_mutex_lock(&col.mu);
	free(col.bodies);
	col.bodies = NULL;
	col.len = col.spans = col.posts = 0;
	col.hold_ms = hold_ms;
	pthread_mutex_unlock(&col.mu);
}

/* Starts the exporter towards the collector, with a queue of `queue` spans. */
static int
start(struct conf *conf, const char *queue)
{
	char url[64], err[256];
	const char *env[] = {"OPENAI_API_KEY", "sk-testsecret123456",
		"OTEL_EXPORTER_OTLP_ENDPOINT", url, "VALERIE_TRACE_QUEUE_SIZE", queue, NULL, NULL};

	snprintf(url, sizeof(url), "http://127.0.0.1:%u", (unsigned)col.port);
	if (conf_load(conf, fake_get, env, err, sizeof(err)) != CONF_OK) {
		fprintf(stderr, "conf_load: %s\n", err);
		return -1;
	}
	if (trace_start(conf, err, sizeof(err)) != 0) {
		fprintf(stderr, "trace_start: %s\n", err);
		return -1;
	}
	return 0;
}

static double
spans_counted(const char *outcome)
{
	char labels[64];
	double v = -1;

	snprintf(labels, sizeof(labels), "outcome=\"%s\"", outcome);
	if (metrics_gauge_get("valerie_trace_spans_total", labels, &v) != 0)
		return -1;
	return v;
}

/*
 * Trace-level attributes that are empty are left out: Langfuse would record
 * a user (or a session) whose id is "".
 */
static void
test_empty_ids_left_out(void)
{
	struct conf conf;
	struct trace_turn t;

	collector_reset(0);
	if (start(&conf, "64") != 0) {
		CHECK(0);
		return;
	}
	trace_turn_begin(&t, NULL, "/api/v1/chat", "", "");
	CHECK(t.on);
	trace_turn_end(&t, 200, NULL, NULL, NULL, 0);
	trace_turn_begin(&t, NULL, "/v1/chat/completions", NULL, NULL);
	trace_turn_end(&t, 200, NULL, NULL, NULL, 0);
	trace_turn_begin(&t, NULL, "/api/v1/chat", "sess-1", "user-1");
	trace_turn_end(&t, 200, NULL, NULL, NULL, 0);
	trace_stop();
	pthread_mutex_lock(&col.mu);
	CHECK_INT(col.spans, 3);
	CHECK(col.bodies != NULL);
	if (col.bodies != NULL) {
		/* Only the third turn's span names a user and a session. */
		CHECK_INT(count_of(col.bodies, col.len, "\"key\":\"user.id\""), 1);
		CHECK_INT(count_of(col.bodies, col.len, "\"key\":\"session.id\""), 1);
		CHECK_CONTAINS(col.bodies, "\"key\":\"user.id\",\"value\":{\"stringValue\":\"user-1\"}");
		CHECK(strstr(col.bodies, "\"stringValue\":\"\"") == NULL);
	}
	pthread_mutex_unlock(&col.mu);
}

/*
 * Spans queued when the worker stops are all exported (within the stop's
 * limit), not just one batch: the first export is held by the collector
 * while more than three batches queue up, and the stop comes at once.
 */
static void
test_stop_exports_all_queued(void)
{
	struct conf conf;
	struct trace_turn t;
	double dropped0 = spans_counted("dropped"), exported0 = spans_counted("exported");
	int i;

	collector_reset(500);
	if (start(&conf, "4096") != 0) {
		CHECK(0);
		return;
	}
	for (i = 0; i < SPANS_MANY; i++) {
		trace_turn_begin(&t, NULL, "/api/v1/chat", "sess-many", "user-many");
		trace_turn_end(&t, 200, NULL, NULL, NULL, 0);
	}
	trace_stop();
	pthread_mutex_lock(&col.mu);
	CHECK_INT(col.spans, SPANS_MANY);
	CHECK(col.posts >= 4);
	pthread_mutex_unlock(&col.mu);
	CHECK_INT(spans_counted("exported") - exported0, SPANS_MANY);
	CHECK_INT(spans_counted("dropped") - dropped0, 0);
}

int
main(void)
{
	const char *dir = tmpdir_make("valerie-trace");
	char path[PATH_MAX + 32], err[256];
	pthread_t acceptor;
	int devnull = open("/dev/null", O_WRONLY);

	log_set_fd(devnull);
	if (dir == NULL || collector_start(&acceptor) != 0) {
		fprintf(stderr, "test_trace: cannot set up\n");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/metrics", dir);
	CHECK(metrics_open(path, err, sizeof(err)) == 0);
	test_empty_ids_left_out();
	test_stop_exports_all_queued();
	metrics_close();
	atomic_store(&col.stop, 1);
	pthread_join(acceptor, NULL);
	close(col.fd);
	close(devnull);
	free(col.bodies);
	return check_done("test_trace");
}
