/*
 * pairlat: latency of two HTTP targets measured in pairs, for bench/provider.sh.
 *
 * One keep-alive connection per target, one request in flight at a time. Each
 * pass sends the same POST to target A and to target B, in an order drawn at
 * random per pass, so both see the same moments of the host: a stall of the
 * machine (frequent on a shared VM) falls on either target with the same odds
 * per unit of time, instead of on whichever ran during that ten-second window,
 * as when two wrk runs alternate.
 *
 * A request's latency is from the first byte written to the last byte of the
 * answer read (what wrk reports). A reconnect (nginx closes a keep-alive
 * connection after keepalive_requests) is made before the clock starts. An
 * answer that is not 200, a cut connection or a malformed answer counts as an
 * error and its pass is dropped.
 *
 * Usage: pairlat SECONDS MAX_PASSES BODY PORT_A PATH_A PORT_B PATH_B
 * (whole seconds; 127.0.0.1; Content-Type: application/json; Authorization: Bearer sk-test).
 * Prints one line:
 *   RESULT passes=N errors=N a_p50_ms=.. a_p90_ms=.. a_p99_ms=.. a_p999_ms=..
 *          b_p50_ms=.. ... added_p50_ms=.. added_p99_ms=..
 * where added_pX is b_pX - a_pX. Exit 1 on bad usage or when no pass succeeded.
 *
 * Built by bench/provider.sh into its run dir:
 *   cc -O2 -Wall -o RUN/pairlat bench/pairlat.c
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAIRLAT_ANSWER_MAX (256 * 1024)	/* larger answers are an error */
#define PAIRLAT_REQUEST_MAX 8192

struct target {
	int port;
	int fd;			/* -1 when not connected */
	char request[PAIRLAT_REQUEST_MAX];
	size_t request_len;
	double *ms;		/* latencies of the successful passes */
};

static char answer[PAIRLAT_ANSWER_MAX];

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Connects t to 127.0.0.1:port with TCP_NODELAY. Returns 0 or -1. */
static int
target_connect(struct target *t)
{
	struct sockaddr_in sa;
	int one = 1;

	t->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (t->fd < 0)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)t->port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(t->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
		close(t->fd);
		t->fd = -1;
		return -1;
	}
	return 0;
}

static void
target_close(struct target *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
}

/*
 * Returns the length of a complete chunked body at b (n bytes), 0 when more
 * bytes are needed, -1 when malformed. Chunk extensions and trailers are not
 * expected from nginx and are refused.
 */
static long
chunked_length(const char *b, size_t n)
{
	size_t at = 0;

	for (;;) {
		size_t size = 0, digits = 0;

		while (at < n && digits < 8) {
			char c = b[at];
			int v = c >= '0' && c <= '9' ? c - '0' :
			    c >= 'a' && c <= 'f' ? c - 'a' + 10 :
			    c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
			if (v < 0)
				break;
			size = size * 16 + (size_t)v;
			digits++;
			at++;
		}
		if (at + 2 > n)
			return 0;
		if (digits == 0 || b[at] != '\r' || b[at + 1] != '\n')
			return -1;
		at += 2;
		if (size > PAIRLAT_ANSWER_MAX)
			return -1;
		if (at + size + 2 > n)
			return 0;
		if (b[at + size] != '\r' || b[at + size + 1] != '\n')
			return -1;
		at += size + 2;
		if (size == 0)
			return (long)at;
	}
}

/*
 * Sends t's request and reads one whole answer. Returns its latency in ms,
 * -1 on an error (the connection is closed then), and sets *again when the
 * connection broke before any byte of an answer (a keep-alive connection the
 * server had closed: the caller may retry once on a new one).
 */
static double
target_call(struct target *t, int *again)
{
	size_t have = 0, head = 0, body = 0;
	int chunked = 0, keep = 1, status = 0;
	double start;

	*again = 0;
	if (t->fd < 0 && target_connect(t) != 0)
		return -1;
	start = now_ms();
	if (send(t->fd, t->request, t->request_len, MSG_NOSIGNAL) !=
	    (ssize_t)t->request_len)
		goto broken;
	for (;;) {
		ssize_t r = recv(t->fd, answer + have, sizeof(answer) - 1 - have, 0);

		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			goto broken;
		}
		have += (size_t)r;
		answer[have] = '\0';
		if (head == 0) {
			char *end = strstr(answer, "\r\n\r\n"), *line;

			if (end == NULL) {
				if (have == sizeof(answer) - 1)
					goto fail;
				continue;
			}
			head = (size_t)(end - answer) + 4;
			if (sscanf(answer, "HTTP/1.1 %d", &status) != 1)
				goto fail;
			for (line = strstr(answer, "\r\n"); line != NULL && line < end;
			    line = strstr(line + 2, "\r\n")) {
				const char *h = line + 2;

				if (strncasecmp(h, "content-length:", 15) == 0)
					body = strtoul(h + 15, NULL, 10);
				else if (strncasecmp(h, "transfer-encoding:", 18) == 0)
					chunked = 1;
				else if (strncasecmp(h, "connection: close", 17) == 0)
					keep = 0;
			}
		}
		if (chunked) {
			long n = chunked_length(answer + head, have - head);

			if (n < 0)
				goto fail;
			if (n > 0)
				break;
		} else if (have >= head + body) {
			break;
		}
		if (have == sizeof(answer) - 1)
			goto fail;
	}
	{
		double ms = now_ms() - start;

		if (!keep)
			target_close(t);
		return status == 200 ? ms : -1;
	}
broken:
	*again = have == 0;
fail:
	target_close(t);
	return -1;
}

/* argv number in [min, max], or -1 when it is not one (no sign games, no trailing text). */
static long
arg_long(const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return -1;
	return v;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The p-th percentile (0..100) of n sorted values, nearest rank. */
static double
percentile(const double *v, size_t n, double p)
{
	size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);

	if (rank == 0)
		rank = 1;
	return v[rank > n ? n - 1 : rank - 1];
}

int
main(int argc, char **argv)
{
	static const double ps[] = { 50, 90, 99, 99.9 };
	static const char *names[] = { "p50", "p90", "p99", "p999" };
	struct target t[2];
	double seconds, end, pa[4], pb[4];
	long max_passes;
	size_t passes = 0, errors = 0, i;
	uint64_t rnd = 0x9e3779b97f4a7c15ULL;
	const char *body;

	if (argc != 8) {
		fprintf(stderr, "usage: pairlat SECONDS MAX_PASSES BODY PORT_A PATH_A PORT_B PATH_B\n");
		return 1;
	}
	seconds = (double)arg_long(argv[1], 1, 86400);
	max_passes = arg_long(argv[2], 1, 100000000);
	body = argv[3];
	if (seconds <= 0 || max_passes <= 0 || strlen(body) > PAIRLAT_REQUEST_MAX / 2) {
		fprintf(stderr, "pairlat: SECONDS 1..86400, MAX_PASSES 1..100000000, BODY up to %d bytes\n",
		    PAIRLAT_REQUEST_MAX / 2);
		return 1;
	}
	for (i = 0; i < 2; i++) {
		int n;

		t[i].port = (int)arg_long(argv[4 + 2 * i], 1, 65535);
		t[i].fd = -1;
		if (t[i].port < 0) {
			fprintf(stderr, "pairlat: a port is 1..65535: %s\n", argv[4 + 2 * i]);
			return 1;
		}
		n = snprintf(t[i].request, sizeof(t[i].request),
		    "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		    "Content-Type: application/json\r\nAuthorization: Bearer sk-test\r\n"
		    "Content-Length: %zu\r\n\r\n%s", argv[5 + 2 * i], strlen(body), body);
		if (n < 0 || (size_t)n >= sizeof(t[i].request))
			return 1;
		t[i].request_len = (size_t)n;
		t[i].ms = malloc((size_t)max_passes * sizeof(double));
		if (t[i].ms == NULL)
			return 1;
	}
	end = now_ms() + seconds * 1e3;
	while ((long)passes < max_passes && now_ms() < end) {
		double ms[2];
		int first, k, again, ok = 1;

		rnd ^= rnd << 13;
		rnd ^= rnd >> 7;
		rnd ^= rnd << 17;
		first = (int)(rnd & 1);
		for (k = 0; k < 2; k++) {
			struct target *x = &t[k ^ first];

			ms[k ^ first] = target_call(x, &again);
			if (ms[k ^ first] < 0 && again)
				ms[k ^ first] = target_call(x, &again);
			if (ms[k ^ first] < 0)
				ok = 0;
		}
		if (!ok) {
			errors++;
			continue;
		}
		t[0].ms[passes] = ms[0];
		t[1].ms[passes] = ms[1];
		passes++;
	}
	if (passes == 0) {
		fprintf(stderr, "pairlat: no pass succeeded (%zu errors)\n", errors);
		return 1;
	}
	qsort(t[0].ms, passes, sizeof(double), cmp_double);
	qsort(t[1].ms, passes, sizeof(double), cmp_double);
	printf("RESULT passes=%zu errors=%zu", passes, errors);
	for (i = 0; i < 4; i++) {
		pa[i] = percentile(t[0].ms, passes, ps[i]);
		pb[i] = percentile(t[1].ms, passes, ps[i]);
		printf(" a_%s_ms=%.3f b_%s_ms=%.3f", names[i], pa[i], names[i], pb[i]);
	}
	printf(" added_p50_ms=%.3f added_p90_ms=%.3f added_p99_ms=%.3f\n",
	    pb[0] - pa[0], pb[1] - pa[1], pb[2] - pa[2]);
	for (i = 0; i < 2; i++) {
		target_close(&t[i]);
		free(t[i].ms);
	}
	return 0;
}
