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
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define ML_MAX_CONNECTIONS 32          /* open at once; MHD refuses more at accept */
#define ML_IDLE_TIMEOUT_S 5            /* a connection silent this long is closed */
#define ML_CONN_MEMORY (32 * 1024)     /* per connection: request line and headers */
#define ML_STACK_BYTES (256 * 1024)    /* the listener's thread and the scrape thread */

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
 * answered through the app's pipeline (the same handler, and the same
 * counting and access log, as GET /metrics through nginx).
 *
 * NOTE: /metrics is answered by a second thread, never the polling one. A
 * scrape pings and counts the session store, which can take a store's whole
 * command timeout (and more) when it is unreachable; done in the polling
 * thread, it held up every other connection, /health/live among them, and
 * a liveness probe with a short timeout restarted the replica because a
 * dependency was down. So a scrape's connection is suspended
 * (MHD_suspend_connection), its request queued for the scrape thread, and
 * the connection resumed with the answer; meanwhile the polling thread goes
 * on answering /health/live (a constant) and the rest at once. Scrapes are
 * answered one after another, as before. Each thread has its own app_worker
 * and response, which only it touches.
 *
 * NOTE: requests MHD rejects before our handler never get our JSON: a
 * garbled request line just closes the connection, and headers over
 * ML_CONN_MEMORY get MHD's own small HTML 431 (0.9.75 has no hook for its
 * error pages). Only a broken client sees those; Prometheus never does.
 */
/*
 * One GET or HEAD /metrics, from the polling thread (which suspended its
 * connection) to the scrape thread, and back with the answer once it resumes
 * the connection. Freed by whoever holds it last: on_request after queueing
 * the answer, or on_completed when MHD ends the connection first.
 */
struct ml_scrape {
	struct ml_scrape *next;
	struct MHD_Connection *conn;
	int head;
	char addr[INET6_ADDRSTRLEN];
	struct MHD_Response *answer;   /* NULL: none (out of memory, stopping): close */
	unsigned int status;
};

struct metrics_listener {
	struct MHD_Daemon *daemon;
	struct app_worker *aw;         /* the polling thread's */
	struct http_transport ops;
	struct http_response resp;     /* the polling thread's */
	char start_error[192];         /* MHD's message while starting */
	atomic_int started;            /* set once MHD_start_daemon returned */

	/* The scrape thread and its queue; `lock` guards the queue and `closing`. */
	pthread_t scraper;
	int scraper_started;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct ml_scrape *queue, *queue_tail;
	int closing;                   /* stopping: nothing more is queued */
	struct app_worker *scrape_aw;  /* the scrape thread's */
	struct http_response scrape_resp;
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

/*
 * MHD's copy of `resp` (status in *status, headers, body copied); caller
 * destroys it. NULL when out of memory. Touches no connection, so either
 * thread may call it.
 */
static struct MHD_Response *
build_response(const struct http_response *resp, unsigned int *status)
{
	static char empty[1];
	struct MHD_Response *r;
	size_t i, len = resp->body.oom ? 0 : resp->body.len;

	*status = resp->body.oom ? 500 : (unsigned int)resp->status;
	r = MHD_create_response_from_buffer(len, len > 0 ? resp->body.data : empty,
	    MHD_RESPMEM_MUST_COPY);
	if (r == NULL)
		return NULL;
	for (i = 0; i < resp->nheaders; i++)
		if (MHD_add_response_header(r, resp->headers[i].name,
		    resp->headers[i].value) != MHD_YES) {
			MHD_destroy_response(r);
			return NULL;
		}
	return r;
}

/* Queues `resp` on the connection; MHD_NO (MHD closes it) when out of memory. */
static enum MHD_Result
send_response(struct MHD_Connection *conn, const struct http_response *resp)
{
	struct MHD_Response *r;
	enum MHD_Result rc;
	unsigned int status;

	r = build_response(resp, &status);
	if (r == NULL)
		return MHD_NO;
	rc = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return rc;
}

/* The app's answer to a synthesized GET or HEAD of `path` into `resp`. */
static void
handle(struct app_worker *aw, struct http_response *resp, const char *path, int head,
    const char *addr)
{
	struct http_request req;

	/*
	 * NOTE: a synthesized request, so the app answers exactly as it does
	 * through nginx. `path` is MHD's path without the query, already
	 * matched against our own list.
	 */
	memset(&req, 0, sizeof(req));
	req.method = head ? "HEAD" : "GET";
	req.path = path;
	req.query = "";
	req.remote_addr = addr;
	req.request_id = "";
	req.body = "";
	req.head = head;
	app_handle(aw, &req, resp);
}

/*
 * The scrape thread: answers the queued scrapes in order, each into its
 * job, and resumes the job's connection (after which the polling thread owns
 * the job again). Once `closing` is set it answers none of the rest (their
 * connections are resumed without an answer, so MHD closes them) and ends.
 */
static void *
scrape_main(void *arg)
{
	struct metrics_listener *l = arg;
	struct ml_scrape *job;
	int closing;

	for (;;) {
		pthread_mutex_lock(&l->lock);
		while (l->queue == NULL && !l->closing)
			pthread_cond_wait(&l->wake, &l->lock);
		job = l->queue;
		closing = l->closing;
		if (job != NULL && (l->queue = job->next) == NULL)
			l->queue_tail = NULL;
		pthread_mutex_unlock(&l->lock);
		if (job == NULL)
			return NULL;
		if (!closing) {
			http_response_reset(&l->scrape_resp);
			handle(l->scrape_aw, &l->scrape_resp, "/metrics", job->head, job->addr);
			job->answer = build_response(&l->scrape_resp, &job->status);
		}
		MHD_resume_connection(job->conn);
	}
}

/*
 * Hands the scrape on `conn` to the scrape thread: suspends the connection
 * and queues the job, which *con_cls then points to. MHD_NO when stopping or
 * out of memory (MHD closes the connection).
 */
static enum MHD_Result
queue_scrape(struct metrics_listener *l, struct MHD_Connection *conn, int head,
    void **con_cls)
{
	struct ml_scrape *job = calloc(1, sizeof(*job));

	if (job == NULL)
		return MHD_NO;
	job->conn = conn;
	job->head = head;
	peer_address(conn, job->addr, sizeof(job->addr));
	pthread_mutex_lock(&l->lock);
	if (l->closing) {
		pthread_mutex_unlock(&l->lock);
		free(job);
		return MHD_NO;
	}
	/* NOTE: suspended before the scrape thread can see the job (and resume it). */
	MHD_suspend_connection(conn);
	if (l->queue_tail != NULL)
		l->queue_tail->next = job;
	else
		l->queue = job;
	l->queue_tail = job;
	*con_cls = job;
	pthread_cond_signal(&l->wake);
	pthread_mutex_unlock(&l->lock);
	return MHD_YES;
}

/* MHD ended a connection: frees a scrape job it still points to. */
static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct ml_scrape *job = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (job == NULL)
		return;
	if (job->answer != NULL)
		MHD_destroy_response(job->answer);
	free(job);
	*con_cls = NULL;
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
	struct ml_scrape *job = *con_cls;
	char addr[INET6_ADDRSTRLEN];
	int head = strcmp(method, "HEAD") == 0;
	enum MHD_Result rc;

	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	if (job != NULL) {
		/* Called again once the scrape thread resumed the connection. */
		*con_cls = NULL;
		rc = job->answer != NULL ? MHD_queue_response(conn, job->status, job->answer) :
		    MHD_NO;
		if (job->answer != NULL)
			MHD_destroy_response(job->answer);
		free(job);
		return rc;
	}
	http_response_reset(&l->resp);
	if (!is_served(url)) {
		http_response_error(&l->resp, 404, "not_found",
		    "this port serves GET /metrics and GET /health/live");
	} else if (!head && strcmp(method, "GET") != 0) {
		http_response_error(&l->resp, 405, "method_not_allowed",
		    "this port accepts GET and HEAD");
		http_response_header(&l->resp, "Allow", "GET, HEAD");
	} else if (strcmp(url, "/metrics") == 0) {
		return queue_scrape(l, conn, head, con_cls);
	} else {
		peer_address(conn, addr, sizeof(addr));
		handle(l->aw, &l->resp, url, head, addr);
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
	unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG |
	    MHD_ALLOW_SUSPEND_RESUME;
	pthread_attr_t attr;
	int ipv6, rc;

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
	http_response_init(&l->scrape_resp, &l->ops);
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->wake, NULL);
	l->aw = app_worker_new(app);
	l->scrape_aw = app_worker_new(app);
	if (l->aw == NULL || l->scrape_aw == NULL) {
		snprintf(err, errlen, "out of memory");
		metrics_listener_stop(l);
		return NULL;
	}
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, ML_STACK_BYTES);
	rc = pthread_create(&l->scraper, &attr, scrape_main, l);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		snprintf(err, errlen, "cannot start the metrics port's scrape thread: %s",
		    strerror(rc));
		metrics_listener_stop(l);
		return NULL;
	}
	l->scraper_started = 1;
	l->daemon = MHD_start_daemon(flags, (uint16_t)conf->metrics_port, NULL, NULL,
	    on_request, l,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	    MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned int)ML_MAX_CONNECTIONS,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)ML_IDLE_TIMEOUT_S,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)ML_CONN_MEMORY,
	    MHD_OPTION_THREAD_STACK_SIZE, (size_t)ML_STACK_BYTES,
	    MHD_OPTION_EXTERNAL_LOGGER, ml_log, l,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, l,
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
	/*
	 * NOTE: the scrape thread ends first (finishing the scrape it is on,
	 * resuming the queued ones unanswered), and no connection is suspended
	 * after `closing`: MHD must not stop with one still suspended.
	 */
	pthread_mutex_lock(&l->lock);
	l->closing = 1;
	pthread_cond_signal(&l->wake);
	pthread_mutex_unlock(&l->lock);
	if (l->scraper_started)
		pthread_join(l->scraper, NULL);
	if (l->daemon != NULL)
		MHD_stop_daemon(l->daemon);
	app_worker_free(l->aw);
	app_worker_free(l->scrape_aw);
	http_response_free(&l->resp);
	http_response_free(&l->scrape_resp);
	pthread_cond_destroy(&l->wake);
	pthread_mutex_destroy(&l->lock);
	free(l);
}
