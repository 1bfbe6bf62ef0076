/*
 * fcgi-relay: the floor of a FastCGI gateway, for bench/provider.sh.
 *
 * A single-threaded FCGX_Accept_r loop that relays every request to one HTTP
 * upstream (127.0.0.1:BENCH_UPSTREAM_PORT, the bench's mock) over one kept
 * connection, and answers with the upstream's body. It sends a fixed request
 * (POST BENCH_UPSTREAM_PATH with the client's body), reads the answer by its
 * Content-Length, and does nothing else: no parsing of the client's JSON, no
 * auth, no limits, no metrics, no logs, no libcurl. nginx in front of it and
 * it in front of the mock is the same chain of processes as nginx, Valerie's
 * worker and the provider, so the latency it adds over calling the mock
 * directly is what that chain costs on the host before any gateway work.
 *
 * Like Valerie's worker it reads the request to its end record and then
 * closes the FastCGI connection at once (FCGX_Detach), without libfcgi's
 * shutdown-and-wait. An upstream error answers 502 and drops the connection.
 *
 * Started by scripts/valerie-pool.sh like the worker (spawn-fcgi binds the
 * socket as fd 0, multiwatch forks the copies), so it accepts `check-config`
 * and exits 0. Built by bench/provider.sh into its run dir:
 *   cc -O2 -Wall -o RUN/fcgi-relay bench/fcgi-relay.c -lfcgi
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <fcgiapp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define RELAY_BODY_MAX 65536
#define RELAY_ANSWER_MAX 65536

static char body[RELAY_BODY_MAX];
static char out[RELAY_BODY_MAX + 1024];
static char answer[RELAY_ANSWER_MAX];

static int
upstream_connect(int port)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	if (fd < 0)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static int
write_all(int fd, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/*
 * Sends the request and reads one answer with a Content-Length. Returns the
 * body's length (its start in *start), or -1 when the connection failed or
 * the answer is not one we can read.
 */
static long
exchange(int fd, const char *req, size_t reqlen, const char **start)
{
	size_t have = 0;
	long clen = -1;
	char *hend = NULL, *p;
	ssize_t r;

	if (write_all(fd, req, reqlen) != 0)
		return -1;
	for (;;) {
		if (have == sizeof(answer))
			return -1;
		r = read(fd, answer + have, sizeof(answer) - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		have += (size_t)r;
		if (hend == NULL) {
			answer[have < sizeof(answer) ? have : sizeof(answer) - 1] = '\0';
			if ((hend = strstr(answer, "\r\n\r\n")) == NULL)
				continue;
			if (strncmp(answer, "HTTP/1.1 200", 12) != 0)
				return -1;
			for (p = answer; p < hend; p++)
				if (strncasecmp(p, "\r\ncontent-length:", 17) == 0) {
					clen = strtol(p + 17, NULL, 10);
					break;
				}
			if (clen < 0 || clen > (long)sizeof(answer))
				return -1;
		}
		if (have >= (size_t)(hend + 4 - answer) + (size_t)clen) {
			*start = hend + 4;
			return clen;
		}
	}
}

int
main(int argc, char **argv)
{
	const char *ps = getenv("BENCH_UPSTREAM_PORT"), *path = getenv("BENCH_UPSTREAM_PATH");
	static const char bad[] = "Status: 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
	FCGX_Request req;
	const char *start;
	long port = ps != NULL ? strtol(ps, NULL, 10) : 0, n;
	int up = -1, got, len;

	if (argc > 1 && strcmp(argv[1], "check-config") == 0)
		return port > 0 && port < 65536 ? 0 : 78;
	if (port <= 0 || port > 65535) {
		fprintf(stderr, "fcgi-relay: set BENCH_UPSTREAM_PORT to the upstream's port\n");
		return 78;
	}
	if (path == NULL)
		path = "/v1/chat/completions";
	if (FCGX_Init() != 0 || FCGX_InitRequest(&req, 0, 0) != 0) {
		fprintf(stderr, "fcgi-relay: libfcgi initialisation failed\n");
		return 1;
	}
	while (FCGX_Accept_r(&req) >= 0) {
		got = FCGX_GetStr(body, (int)sizeof(body), req.in);
		len = snprintf(out, sizeof(out), "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		    "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, got);
		memcpy(out + len, body, (size_t)got);
		if (up < 0)
			up = upstream_connect((int)port);
		n = up >= 0 ? exchange(up, out, (size_t)len + (size_t)got, &start) : -1;
		if (n < 0 && up >= 0) {
			/* The kept connection may have been closed by the upstream: once more. */
			close(up);
			up = upstream_connect((int)port);
			n = up >= 0 ? exchange(up, out, (size_t)len + (size_t)got, &start) : -1;
		}
		if (n < 0) {
			if (up >= 0)
				close(up);
			up = -1;
			FCGX_PutStr(bad, (int)sizeof(bad) - 1, req.out);
		} else {
			len = snprintf(out, sizeof(out), "Status: 200 OK\r\nContent-Type: "
			    "application/json\r\nContent-Length: %ld\r\n\r\n", n);
			FCGX_PutStr(out, len, req.out);
			FCGX_PutStr(start, (int)n, req.out);
		}
		/* The answer and the end-request record in one go, as Valerie's transport_end. */
		FCGX_FClose(req.err);
		FCGX_FClose(req.out);
		if (FCGX_GetChar(req.in) == EOF && FCGX_GetError(req.in) == 0)
			FCGX_Detach(&req);
	}
	FCGX_Finish_r(&req);
	return 0;
}
