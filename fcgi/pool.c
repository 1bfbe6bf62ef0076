/* pool: the worker's threads, each looping on FCGX_Accept_r, and graceful shutdown. */
#include "config.h"

#include "acceptor.h"
#include "metrics_listener.h"
#include "pool.h"
#include "transport.h"

#include "app/app.h"
#include "app/conf.h"
#include "app/log.h"

#include <errno.h>
#include <fcgiapp.h>
#include <json-c/json.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define POOL_STACK_BYTES (256 * 1024) /* per thread; json-c and curl fit well within */
/*
 * Before the drain limit: answers still being written are cut (transport_cut)
 * this long before it, so that their threads unwind and the worker stops
 * cleanly. After the turns were told to end (app_set_draining: at least
 * 1.5 s before the limit, at once with a limit of 1 s), so that their last
 * events reach the clients that read.
 */
#define POOL_CUT_MARGIN_MS 500

struct pool;

struct worker_thread {
	pthread_t tid;
	struct pool *pool;
	struct app_worker *aw;
	FCGX_Request fcgi;
	struct transport tr;
	struct http_response resp;
	int started;
};

struct pool {
	struct app *app;
	const struct conf *conf;
	atomic_int stopping;
	pthread_mutex_t lock;
	pthread_cond_t done;
	int running;                  /* threads not yet finished */
	struct acceptor acc;          /* fd 0, as spawn-fcgi hands it over */
};

static void
serve_one(struct worker_thread *wt)
{
	struct http_request req;

	/*
	 * NOTE: libfcgi's ReadParams takes a read error or the peer's close
	 * between two params for the end of the params, and FCGX_Accept_r then
	 * returns the request with its params cut short. Nobody is left to read
	 * an answer to it (or the peer is broken): it gets none.
	 */
	if (FCGX_GetError(wt->fcgi.in) != 0)
		return;
	http_response_reset(&wt->resp);
	if (transport_read(&wt->tr, &req) != 0) {
		memset(&req, 0, sizeof(req));
		req.method = "GET";
		req.path = "/";
		http_response_error(&wt->resp, 500, "internal_error", "out of memory");
		transport_send(&wt->tr, &req, &wt->resp);
		transport_end(&wt->tr);
		return;
	}
	app_handle(wt->aw, &req, &wt->resp);
	transport_send(&wt->tr, &req, &wt->resp);
	transport_end(&wt->tr);
}

/*
 * TCP pools: ends the thread's last request (as FCGX_Accept_r would) and
 * hands libfcgi a new connection from acceptor_accept, unless the web server
 * kept the last one open (FCGI_KEEP_CONN). Returns 0, or -errno as
 * FCGX_Accept_r does (-EAGAIN: nothing yet, look at the stop flag).
 * NOTE: libfcgi accepts only when the request has no connection (ipcFd < 0,
 * a field of FCGX_Request's public layout, which libfcgi 2.4's ABI fixes),
 * and FCGX_Accept_r first finishes the last request, closing its connection
 * unless keepConnection: set so that it keeps ours. The BEGIN_REQUEST record
 * then sets keepConnection to what the web server asks.
 */
static int
tcp_connection(struct worker_thread *wt)
{
	int fd;

	FCGX_Finish_r(&wt->fcgi);
	if (wt->fcgi.ipcFd >= 0)
		return 0;
	fd = acceptor_accept(&wt->pool->acc);
	if (fd < 0)
		return -errno;
	wt->fcgi.ipcFd = fd;
	wt->fcgi.keepConnection = 1;
	return 0;
}

static void *
thread_main(void *arg)
{
	struct worker_thread *wt = arg;
	struct pool *p = wt->pool;
	int rc;

	while (!atomic_load(&p->stopping)) {
		rc = p->acc.tcp ? tcp_connection(wt) : 0;
		if (rc == 0) {
			rc = FCGX_Accept_r(&wt->fcgi);
			/*
			 * A TCP connection that carried no whole request: libfcgi closed
			 * it and its own accept, on no socket, failed at once (EBADF).
			 */
			if (rc < 0 && p->acc.tcp)
				rc = -EAGAIN;
		}
		if (rc < 0) {
			if (atomic_load(&p->stopping))
				break;
			if (rc == -EAGAIN || rc == -EWOULDBLOCK || rc == -EINTR)
				continue;
			log_msg(LOG_LVL_ERROR, "accept failed: %s", strerror(-rc));
			usleep(100 * 1000); /* do not spin on a broken socket */
			continue;
		}
		serve_one(wt);
	}
	FCGX_Finish_r(&wt->fcgi);
	pthread_mutex_lock(&p->lock);
	p->running--;
	pthread_cond_signal(&p->done);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/*
 * Waits for a stop signal; the other threads never see signals.
 * NOTE: multiwatch stops its children with SIGUSR1. Its -s option is broken in
 * Debian 12's multiwatch 1.0.0 (it sends the table index, so "-s TERM" sends
 * SIGQUIT and "-s USR1" SIGILL): we run it without -s and treat SIGUSR1,
 * SIGTERM, SIGINT and SIGQUIT alike as "drain and exit".
 */
static void
wait_for_stop(const sigset_t *set)
{
	int sig;

	for (;;) {
		if (sigwait(set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			log_msg(LOG_LVL_INFO, "SIGHUP ignored (restart the pool to reload)");
			continue;
		}
		log_msg(LOG_LVL_INFO, "signal %d: draining requests in flight", sig);
		return;
	}
}

/* `ms` after `start` (CLOCK_REALTIME, as pthread_cond_timedwait wants it). */
static struct timespec
after_ms(const struct timespec *start, long long ms)
{
	struct timespec t = *start;

	t.tv_sec += (time_t)(ms / 1000);
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

/* Waits until every thread finished, or the deadline; returns 0 if all did. */
static int
wait_for_threads(struct pool *p, const struct timespec *deadline)
{
	int rc = 0;

	pthread_mutex_lock(&p->lock);
	while (p->running > 0 && rc == 0)
		rc = pthread_cond_timedwait(&p->done, &p->lock, deadline);
	rc = p->running > 0 ? -1 : 0;
	pthread_mutex_unlock(&p->lock);
	return rc;
}

int
pool_run(struct app *app, const struct conf *conf)
{
	struct worker_thread *threads;
	struct metrics_listener *ml = NULL;
	struct pool p;
	char err[256];
	pthread_attr_t attr;
	sigset_t set;
	struct sigaction sa;
	struct timespec drain_start, cut_at, limit_at;
	long long limit_ms = conf->shutdown_timeout * 1000;
	int n = (int)conf->threads, i, rc = 0, started = 0;

	memset(&p, 0, sizeof(p));
	p.app = app;
	p.conf = conf;
	atomic_init(&p.stopping, 0);
	pthread_mutex_init(&p.lock, NULL);
	pthread_cond_init(&p.done, NULL);

	if (acceptor_open(&p.acc, 0, getenv("FCGI_WEB_SERVER_ADDRS"), err, sizeof(err)) !=
	    ACCEPTOR_OK) {
		log_msg(LOG_LVL_ERROR, "%s", err);
		return 1;
	}
	if (p.acc.tcp && p.acc.naddrs == 0)
		log_msg(LOG_LVL_WARNING, "FastCGI on a TCP socket without "
		    "FCGI_WEB_SERVER_ADDRS: any host that reaches the port can send requests");

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGQUIT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	if (FCGX_Init() != 0) {
		log_msg(LOG_LVL_ERROR, "FCGX_Init failed");
		return 1;
	}
	/*
	 * The metrics port starts after the signals are blocked (its thread
	 * inherits the mask) and before the FastCGI threads, so a port that
	 * cannot be had stops the worker before it takes any request.
	 */
	if (conf->metrics_port > 0 && (ml = metrics_listener_start(app, conf, err,
	    sizeof(err))) == NULL) {
		log_msg(LOG_LVL_ERROR, "cannot start: %s", err);
		return 1;
	}
	threads = calloc((size_t)n, sizeof(*threads));
	if (threads == NULL) {
		log_msg(LOG_LVL_ERROR, "out of memory for %d threads", n);
		metrics_listener_stop(ml);
		return 1;
	}
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, POOL_STACK_BYTES);
	for (i = 0; i < n; i++) {
		struct worker_thread *wt = &threads[i];

		wt->pool = &p;
		wt->aw = app_worker_new(app);
		/*
		 * NOTE: on TCP, libfcgi must never accept (tcp_connection does): with
		 * no listening socket (-1) its accept, tried after a connection that
		 * carried no request, fails at once instead of taking a connection.
		 */
		if (wt->aw == NULL || FCGX_InitRequest(&wt->fcgi, p.acc.tcp ? -1 : 0, 0) != 0)
			break;
		transport_init(&wt->tr, &wt->fcgi, conf->max_body_bytes, conf->turn_timeout);
		http_response_init(&wt->resp, &wt->tr.ops);
		pthread_mutex_lock(&p.lock);
		p.running++;
		pthread_mutex_unlock(&p.lock);
		if (pthread_create(&wt->tid, &attr, thread_main, wt) != 0) {
			pthread_mutex_lock(&p.lock);
			p.running--;
			pthread_mutex_unlock(&p.lock);
			break;
		}
		wt->started = 1;
		started++;
	}
	pthread_attr_destroy(&attr);
	if (started < n) {
		log_msg(LOG_LVL_ERROR, "could only start %d of %d threads", started, n);
		rc = 1;
	} else {
		struct json_object *f = json_object_new_object();

		if (f != NULL) {
			json_object_object_add(f, "threads", json_object_new_int(n));
			json_object_object_add(f, "version", json_object_new_string(PACKAGE_VERSION));
			if (ml != NULL)
				json_object_object_add(f, "metrics_port",
				    json_object_new_int64(conf->metrics_port));
		}
		log_emit(LOG_LVL_INFO, "worker ready", f);
		json_object_put(f);
		wait_for_stop(&set);
	}

	app_set_draining(app);
	atomic_store(&p.stopping, 1);
	FCGX_ShutdownPending();
	/*
	 * NOTE: a write blocked on a client that does not read keeps the send
	 * timeout it started with (turn timeout + 5 s), which may end after the
	 * drain limit: such answers are cut shortly before it, not waited for.
	 */
	clock_gettime(CLOCK_REALTIME, &drain_start);
	cut_at = after_ms(&drain_start, limit_ms > POOL_CUT_MARGIN_MS ?
	    limit_ms - POOL_CUT_MARGIN_MS : 0);
	limit_at = after_ms(&drain_start, limit_ms);
	if (wait_for_threads(&p, &cut_at) != 0)
		for (i = 0; i < n; i++)
			(void)transport_cut(&threads[i].tr);   /* logs each answer it cuts */
	if (wait_for_threads(&p, &limit_at) != 0) {
		log_msg(LOG_LVL_ERROR, "requests still in flight after %llds; exiting anyway",
		    conf->shutdown_timeout);
		/* NOTE: threads still run; freeing their state would race them. */
		_exit(1);
	}
	/*
	 * NOTE: the metrics port keeps answering while requests drain (a long
	 * drain stays visible to Prometheus; the totals are the pool's, so a
	 * draining process answers them as well as any) and closes only now,
	 * before the app state it reads is freed.
	 */
	metrics_listener_stop(ml);
	for (i = 0; i < n; i++) {
		if (threads[i].started)
			pthread_join(threads[i].tid, NULL);
		transport_free(&threads[i].tr);
		http_response_free(&threads[i].resp);
		app_worker_free(threads[i].aw);
	}
	free(threads);
	pthread_mutex_destroy(&p.lock);
	pthread_cond_destroy(&p.done);
	log_msg(LOG_LVL_INFO, "worker stopped");
	return rc;
}
