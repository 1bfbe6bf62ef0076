/* metrics_listener: the pool's metrics over plain HTTP on the replica's own port. */
#include "config.h"

#include "metrics_listener.h"

#include "app/app.h"
#include "app/conf.h"
#include "app/http.h"
#include "app/log.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define ML_MAX_CONNECTIONS 32          /* open at once; MHD refuses more at accept */
#define ML_IDLE_TIMEOUT_S 5            /* a connection silent this long is closed */
#define ML_CONN_MEMORY (32 * 1024)     /* per connection: request line and headers */
#define ML_STACK_BYTES (256 * 1024)    /* the listener's one thread */

/*
 * NOTE: why every process of the pool listens on the same port. spawn-fcgi
 * hands the pool one FastCGI socket, but nothing hands over an HTTP one, so
 * each worker binds the port itself with SO_REUSEPORT (MHD's
 * MHD_OPTION_LISTENING_ADDRESS_REUSE): the kernel spreads new connections
 * over the processes, and a process that dies (or ends its drain) simply
 * leaves the group while the others keep answering. Any process may answer because the
 * metrics are the pool's: every worker adds to the same mapped file
 * (app/metrics.h), so each renders the same totals. Linux lets only sockets
 * of the same user join a SO_REUSEPORT group, so another user's program
 * cannot take over the port's scrapes.
 *
 * NOTE: one thread, event-driven (MHD's internal polling thread with epoll).
 * A client that connects and sends nothing holds a connection slot, never a
 * thread: other scrapes are served meanwhile, and the slot is freed after
 * ML_IDLE_TIMEOUT_S; at most ML_MAX_CONNECTIONS slots exist. Requests are
 * answered in that thread through the app's pipeline (the same handler, and
 * the same counting and access log, as GET /metrics through nginx), with the
 * listener's own app_worker and response, which only that thread touches.
 *
 * NOTE: requests MHD rejects before our handler never get our JSON: a
 * garbled request line just closes the connection, and headers over
 * ML_CONN_MEMORY get MHD's own small HTML 431 (0.9.75 has no hook for its
 * error pages). Only a broken client sees those; Prometheus never does.
 */
struct metrics_listener {
	struct MHD_Daemon *daemon;
	struct app_worker *aw;
	struct http_transport ops;
	struct http_response resp;
	char start_error[192];         /* MHD's message while starting */
	atomic_int started;            /* set once MHD_start_daemon returned */
};

/* The paths this port serves; all the others are 404 here. */
static const char *const served[] = {"/metrics", "/health/live", NULL};

/*
 * The transport the app's response would stream through. Nothing served here
 * streams; should a handler try, its writes fail as if the client had left.
 */
static int
ml_write_head(void *ctx, const struct http_response *resp)
{
	(void)ctx;
	(void)resp;
	return -1;
}

static int
ml_write_body(void *ctx, const char *data, size_t len)
{
	(void)ctx;
	(void)data;
	(void)len;
	return -1;
}

static int
ml_flush(void *ctx)
{
	(void)ctx;
	return -1;
}

static int
ml_client_gone(void *ctx)
{
	(void)ctx;
	return 0;
}

/* MHD's error messages: kept while starting (for the caller), logged after. */
static void
ml_log(void *cls, const char *fmt, va_list ap)
{
	struct metrics_listener *l = cls;
	char msg[256];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	if (!atomic_load(&l->started))
		snprintf(l->start_error, sizeof(l->start_error), "%s", msg);
	else
		log_msg(LOG_LVL_WARNING, "metrics port: %s", msg);
}

static int
is_served(const char *path)
{
	size_t i;

	for (i = 0; served[i] != NULL; i++)
		if (strcmp(path, served[i]) == 0)
			return 1;
	return 0;
}

/* The peer's address as text, for the access log; "" when unknown. */
static void
peer_address(struct MHD_Connection *conn, char *out, size_t outlen)
{
	const union MHD_ConnectionInfo *ci;
	const struct sockaddr *sa;

	out[0] = '\0';
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci == NULL || (sa = ci->client_addr) == NULL)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
		    out, (socklen_t)outlen);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
		    out, (socklen_t)outlen);
}

/* Queues `resp` (status, headers, body copied) on the connection. */
static enum MHD_Result
send_response(struct MHD_Connection *conn, const struct http_response *resp)
{
	static char empty[1];
	struct MHD_Response *r;
	enum MHD_Result rc;
	size_t i, len = resp->body.oom ? 0 : resp->body.len;
	unsigned int status = resp->body.oom ? 500 : (unsigned int)resp->status;

	r = MHD_create_response_from_buffer(len, len > 0 ? resp->body.data : empty,
	    MHD_RESPMEM_MUST_COPY);
	if (r == NULL)
		return MHD_NO; /* out of memory: MHD closes the connection */
	for (i = 0; i < resp->nheaders; i++)
		if (MHD_add_response_header(r, resp->headers[i].name,
		    resp->headers[i].value) != MHD_YES) {
			MHD_destroy_response(r);
			return MHD_NO;
		}
	rc = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return rc;
}

/*
 * MHD's access handler, called in the listener's thread once the request
 * line and headers are in. Every answer is queued on this first call: no
 * request here has a body worth reading (MHD closes the connection after
 * answering one that sent a body anyway).
 */
static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
    const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct metrics_listener *l = cls;
	struct http_request req;
	char addr[INET6_ADDRSTRLEN];
	int head = strcmp(method, "HEAD") == 0;

	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)con_cls;
	http_response_reset(&l->resp);
	if (!is_served(url)) {
		http_response_error(&l->resp, 404, "not_found",
		    "this port serves GET /metrics and GET /health/live");
	} else if (!head && strcmp(method, "GET") != 0) {
		http_response_error(&l->resp, 405, "method_not_allowed",
		    "this port accepts GET and HEAD");
		http_response_header(&l->resp, "Allow", "GET, HEAD");
	} else {
		/*
		 * NOTE: a synthesized request, so the app answers exactly as it
		 * does through nginx. `url` is MHD's path without the query,
		 * already matched against our own list above.
		 */
		peer_address(conn, addr, sizeof(addr));
		memset(&req, 0, sizeof(req));
		req.method = head ? "HEAD" : "GET";
		req.path = url;
		req.query = "";
		req.remote_addr = addr;
		req.request_id = "";
		req.body = "";
		req.head = head;
		app_handle(l->aw, &req, &l->resp);
	}
	return send_response(conn, &l->resp);
}

/* Fills `ss` from the configured address and port; returns its length, 0 if bad. */
static socklen_t
listen_address(const struct conf *conf, struct sockaddr_storage *ss, int *ipv6)
{
	struct sockaddr_in *in4 = (struct sockaddr_in *)(void *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)(void *)ss;

	memset(ss, 0, sizeof(*ss));
	*ipv6 = 0;
	if (inet_pton(AF_INET, conf->metrics_addr, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)conf->metrics_port);
		return sizeof(*in4);
	}
	if (inet_pton(AF_INET6, conf->metrics_addr, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)conf->metrics_port);
		*ipv6 = 1;
		return sizeof(*in6);
	}
	return 0;
}

struct metrics_listener *
metrics_listener_start(struct app *app, const struct conf *conf, char *err, size_t errlen)
{
	struct metrics_listener *l;
	struct sockaddr_storage ss;
	unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
	int ipv6;

	if (listen_address(conf, &ss, &ipv6) == 0) {
		snprintf(err, errlen, "VALERIE_METRICS_ADDR: not a numeric address: %s",
		    conf->metrics_addr);
		return NULL;
	}
	/* "::" takes IPv4 connections too, as a plain dual-stack socket would. */
	if (ipv6)
		flags |= MHD_USE_DUAL_STACK;
	l = calloc(1, sizeof(*l));
	if (l == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	atomic_init(&l->started, 0);
	l->ops.write_head = ml_write_head;
	l->ops.write_body = ml_write_body;
	l->ops.flush = ml_flush;
	l->ops.client_gone = ml_client_gone;
	l->ops.ctx = l;
	http_response_init(&l->resp, &l->ops);
	l->aw = app_worker_new(app);
	if (l->aw == NULL) {
		snprintf(err, errlen, "out of memory");
		metrics_listener_stop(l);
		return NULL;
	}
	l->daemon = MHD_start_daemon(flags, (uint16_t)conf->metrics_port, NULL, NULL,
	    on_request, l,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	    MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned int)ML_MAX_CONNECTIONS,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)ML_IDLE_TIMEOUT_S,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)ML_CONN_MEMORY,
	    MHD_OPTION_THREAD_STACK_SIZE, (size_t)ML_STACK_BYTES,
	    MHD_OPTION_EXTERNAL_LOGGER, ml_log, l,
	    MHD_OPTION_END);
	if (l->daemon == NULL) {
		snprintf(err, errlen, "VALERIE_METRICS_PORT: cannot listen on %s%s%s:%lld: %s",
		    ipv6 ? "[" : "", conf->metrics_addr, ipv6 ? "]" : "", conf->metrics_port,
		    l->start_error[0] ? l->start_error : "libmicrohttpd could not start");
		metrics_listener_stop(l);
		return NULL;
	}
	atomic_store(&l->started, 1);
	return l;
}

void
metrics_listener_stop(struct metrics_listener *l)
{
	if (l == NULL)
		return;
	if (l->daemon != NULL)
		MHD_stop_daemon(l->daemon);
	app_worker_free(l->aw);
	http_response_free(&l->resp);
	free(l);
}
