/*
 * fcgi-min: the minimal libfcgi reference of bench/run.sh.
 *
 * A single-threaded FCGX_Accept_r loop that answers every request with the
 * same fixed JSON body as Valerie's GET /health, with the same headers
 * (Status, Content-Type, Content-Length, Cache-Control). It does no routing,
 * no logging and no allocation per request: what libfcgi, the socket and
 * nginx cost, and nothing else. Valerie's /health is measured against it.
 *
 * Started exactly like the worker (scripts/valerie-pool.sh: spawn-fcgi binds
 * the socket as fd 0, multiwatch forks VALERIE_WORKERS copies), so it accepts
 * `check-config` as its first argument and exits 0, as the launcher runs that
 * first. multiwatch stops it with SIGUSR1, for which libfcgi installs a
 * handler that makes the accept loop return; SIGTERM's default action ends
 * it too.
 *
 * Built by bench/run.sh into its run dir:
 *   cc -O2 -Wall -o RUN/bin/fcgi-min bench/fcgi-min.c -lfcgi
 */
#include <fcgiapp.h>
#include <stdio.h>
#include <string.h>

#define BODY "{\"status\":\"ok\",\"service\":\"valerie\",\"version\":\"0.1.0\"}"

static const char response[] =
    "Status: 200 OK\r\n"
    "Content-Type: application/json\r\n"
    "Cache-Control: no-store\r\n"
    "Content-Length: 53\r\n"
    "\r\n"
    BODY;

/* The Content-Length above must match the body: checked at compile time. */
typedef char body_length_is_53[(sizeof(BODY) - 1 == 53) ? 1 : -1];

int
main(int argc, char **argv)
{
	FCGX_Request req;

	if (argc > 1) {
		if (strcmp(argv[1], "check-config") == 0)
			return 0;
		if (strcmp(argv[1], "serve") != 0) {
			fprintf(stderr, "usage: fcgi-min [serve|check-config]\n");
			return 2;
		}
	}
	if (FCGX_Init() != 0 || FCGX_InitRequest(&req, 0, 0) != 0) {
		fprintf(stderr, "fcgi-min: libfcgi initialisation failed\n");
		return 1;
	}
	while (FCGX_Accept_r(&req) >= 0)
		FCGX_PutStr(response, (int)sizeof(response) - 1, req.out);
	FCGX_Finish_r(&req);
	return 0;
}
