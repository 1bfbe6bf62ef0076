/* pool: the worker's threads, each looping on FCGX_Accept_r, and graceful shutdown. */
#include "config.h"

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
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define POOL_STACK_BYTES (256 * 1024) /* per thread; json-c and curl fit well within */
#define POOL_ACCEPT_WAKE_MS 250       /* how often an idle thread looks at the stop flag */

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
	int tcp;
};

/*
 * NOTE: shutdown without signals to worker threads. The listening socket gets
 * a receive timeout, which Linux applies to accept(2): an idle thread's
 * accept returns EAGAIN every POOL_ACCEPT_WAKE_MS, libfcgi returns an error,
 * and the thread looks at the stop flag. accept() keeps its wake-one
 * semantics (no thundering herd), and a thread busy with a request is never
 * interrupted, so requests in flight finish. Accepted TCP sockets inherit the
 * timeout and get it cleared; accepted unix sockets do not inherit it.
 */
static int
listen_setup(int *tcp)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	struct timeval tv = {0, POOL_ACCEPT_WAKE_MS * 1000};

	if (getsockname(0, (struct sockaddr *)&ss, &len) != 0)
		return -1;
	*tcp = ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
	return setsockopt(0, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static void
clear_timeout(int fd)
{
	struct timeval tv = {0, 0};

	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static void
serve_one(struct worker_thread *wt)
{
	struct http_request req;

	http_response_reset(&wt->resp);
	if (wt->pool->tcp)
		clear_timeout(wt->fcgi.ipcFd);
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

static void *
thread_main(void *arg)
{
	struct worker_thread *wt = arg;
	struct pool *p = wt->pool;
	int rc;

	while (!atomic_load(&p->stopping)) {
		rc = FCGX_Accept_r(&wt->fcgi);
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

/* Waits until every thread finished, or the deadline; returns 0 if all did. */
static int
wait_for_threads(struct pool *p, long long seconds)
{
	struct timespec deadline;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += (time_t)seconds;
	pthread_mutex_lock(&p->lock);
	while (p->running > 0 && rc == 0)
		rc = pthread_cond_timedwait(&p->done, &p->lock, &deadline);
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
	int n = (int)conf->threads, i, rc = 0, started = 0;

	memset(&p, 0, sizeof(p));
	p.app = app;
	p.conf = conf;
	atomic_init(&p.stopping, 0);
	pthread_mutex_init(&p.lock, NULL);
	pthread_cond_init(&p.done, NULL);

	if (listen_setup(&p.tcp) != 0) {
		log_msg(LOG_LVL_ERROR, "file descriptor 0 is not a listening socket: start "
		    "the worker with spawn-fcgi (see scripts/run-local.sh)");
		return 1;
	}
	if (p.tcp && getenv("FCGI_WEB_SERVER_ADDRS") == NULL)
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
		if (wt->aw == NULL || FCGX_InitRequest(&wt->fcgi, 0, 0) != 0)
			break;
		transport_init(&wt->tr, &wt->fcgi, conf->max_body_bytes, p.tcp);
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
	if (wait_for_threads(&p, conf->shutdown_timeout) != 0) {
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
