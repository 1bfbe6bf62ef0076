/* httpc: outgoing HTTP(S) calls over libcurl with reuse, timeouts, caps and cancellation. */
#include "config.h"

#include "httpc.h"
#include "http1.h"
#include "vtime.h"

#include <curl/curl.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* Connections the built-in client keeps per handle, to as many host:port pairs. */
#define HTTPC_KEPT_MAX 4
/* A kept connection idle longer than this is checked (one recv) before it is used. */
#define HTTPC_KEPT_CHECK_MS 1000
/* ...and one idle longer than this is closed, not used: libcurl's CURLOPT_MAXAGE_CONN default. */
#define HTTPC_KEPT_MAX_AGE_MS 118000
/* Bytes read from the upstream at a time, on the caller's stack. */
#define HTTPC_READ_BYTES 16384

/* A connection of the built-in client, idle between two calls. */
struct kept {
	int fd;                     /* -1: a free slot */
	long long idle_since_ms;
	char host[HTTP1_HOST_MAX];
	char port[6];
};

struct httpc {
	CURLM *multi;    /* drives `easy`, and holds its connections between calls */
	CURL *easy;
	int was_post;    /* the last call set CURLOPT_POST */
	int was_custom;  /* the last call set CURLOPT_CUSTOMREQUEST */
	CURLU *url;      /* the last URL, parsed */
	char *url_text;  /* ...and as it was given */
	struct curl_slist *headers;   /* the last call's header lines, kept for the next */
	struct kept kept[HTTPC_KEPT_MAX];   /* the built-in client's connections */
	struct buf head;            /* its request head, built anew per call in this memory */
};

/*
 * NOTE: how often a call asks whether its client has gone (a poll(2) on the
 * FastCGI connection), and so the longest a call sleeps in curl_multi_poll
 * while the upstream is silent. Asking at every wake-up cost about ten
 * syscalls per completion. curl_easy_perform sleeps up to a second at a
 * time, which made the first-byte timeout, a client leaving and the stop
 * deadline up to a second late: httpc_perform runs libcurl's multi loop
 * itself (what curl_easy_perform does inside, with its own sleep).
 */
#define HTTPC_CANCEL_CHECK_MS 200

/* Per call state shared with libcurl's callbacks. */
struct call {
	const struct httpc_request *req;
	struct httpc_response *resp;
	long long start_ms;
	long long cancel_checked_ms;   /* when `cancelled` was last asked */
	enum httpc_result why;   /* set by a callback that stopped the transfer */
	int stopped;
};

/*
 * NOTE: one certificate store for the whole process. Each libcurl handle that
 * loads the CA bundle itself holds ~0.9 MB of certificates (PROTOCOLS.md);
 * with a thousand threads that is a gigabyte. We tell libcurl to load none
 * (CAINFO and CAPATH NULL) and hand every TLS context this store instead, so
 * verification stays on and the certificates exist once.
 */
static X509_STORE *ca_store;

/*
 * NOTE: without CURLOPT_PROXY libcurl reads the proxy variables of the
 * environment (http_proxy, https_proxy, all_proxy, no_proxy...) with getenv
 * at every transfer. They do not change while we run, so we look once: when
 * none is set, every handle is told "no proxy" (CURLOPT_PROXY "", and an
 * empty CURLOPT_NOPROXY, without which it still reads no_proxy and NO_PROXY)
 * and skips the look-ups; when one is, libcurl keeps its usual behaviour.
 */
static int proxy_from_env;

/*
 * NOTE: plain http:// calls (vLLM, Ollama, llama.cpp or LiteLLM on a private
 * network, MCP agents, an OTLP collector) go over Valerie's own HTTP/1.1
 * client unless VALERIE_HTTP_CLIENT=libcurl: libcurl's share of a completion
 * was half of its instructions and three of its system calls (bench/README.md,
 * "A client of our own for plain HTTP"). HTTPS, proxies and any URL out of
 * the ordinary stay with libcurl.
 */
static int builtin_enabled = 1;

void
httpc_set_builtin(int on)
{
	builtin_enabled = on;
}

static int
any_proxy_env(void)
{
	static const char *const names[] = {
		"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", NULL
	};
	size_t i;

	for (i = 0; names[i] != NULL; i++)
		if (getenv(names[i]) != NULL && getenv(names[i])[0] != '\0')
			return 1;
	return 0;
}

static CURLcode
ssl_ctx_setup(CURL *curl, void *ssl_ctx, void *arg)
{
	(void)curl;
	(void)arg;
	if (ca_store == NULL)
		return CURLE_SSL_CACERT_BADFILE;
	SSL_CTX_set1_cert_store(ssl_ctx, ca_store);
	return CURLE_OK;
}

int
httpc_global_init(const char *ca_file, char *err, size_t errlen)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "libcurl could not be initialised");
		return -1;
	}
	if (ca_store != NULL)
		return 0;
	proxy_from_env = any_proxy_env();
	ca_store = X509_STORE_new();
	if (ca_store == NULL) {
		snprintf(err, errlen, "out of memory for the CA store");
		return -1;
	}
	if (ca_file != NULL ? X509_STORE_load_file(ca_store, ca_file) != 1 :
	    X509_STORE_set_default_paths(ca_store) != 1) {
		snprintf(err, errlen, "VALERIE_CA_BUNDLE: cannot load CA certificates from %s",
		    ca_file != NULL ? ca_file : "the system default");
		X509_STORE_free(ca_store);
		ca_store = NULL;
		return -1;
	}
	return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg);
static size_t on_header(char *data, size_t size, size_t nmemb, void *arg);

/*
 * The options every call shares, set once per handle: httpc_perform sets
 * only what changes from call to call (a curl_easy_reset plus twenty
 * setopt calls per completion showed up in the profile).
 */
static void
set_constant_options(CURL *e)
{
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, NULL);
	curl_easy_setopt(e, CURLOPT_CAINFO, NULL);
	curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
	curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_setup);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	if (!proxy_from_env) {
		curl_easy_setopt(e, CURLOPT_PROXY, "");
		curl_easy_setopt(e, CURLOPT_NOPROXY, "");
	}
}

struct httpc *
httpc_new(void)
{
	struct httpc *h = calloc(1, sizeof(*h));
	size_t i;

	if (h == NULL)
		return NULL;
	for (i = 0; i < HTTPC_KEPT_MAX; i++)
		h->kept[i].fd = -1;
	h->multi = curl_multi_init();
	h->easy = curl_easy_init();
	if (h->multi == NULL || h->easy == NULL) {
		curl_easy_cleanup(h->easy);
		curl_multi_cleanup(h->multi);
		free(h);
		return NULL;
	}
	set_constant_options(h->easy);
	return h;
}

void
httpc_free(struct httpc *h)
{
	size_t i;

	if (h == NULL)
		return;
	curl_easy_cleanup(h->easy);
	curl_multi_cleanup(h->multi);   /* closes the connections it kept */
	curl_url_cleanup(h->url);
	free(h->url_text);
	curl_slist_free_all(h->headers);
	for (i = 0; i < HTTPC_KEPT_MAX; i++)
		if (h->kept[i].fd >= 0)
			close(h->kept[i].fd);
	buf_free(&h->head);
	free(h);
}

void
httpc_response_free(struct httpc_response *resp)
{
	if (resp != NULL)
		buf_free(&resp->body);
}

static void
stop(struct call *c, enum httpc_result why)
{
	if (!c->stopped) {
		c->stopped = 1;
		c->why = why;
	}
}

static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct call *c = arg;
	struct httpc_response *r = c->resp;
	size_t n = size * nmemb;
	int ok = r->status >= 200 && r->status < 300;

	r->bytes += n;
	if (ok && c->req->on_data != NULL) {
		if (c->req->max_bytes > 0 && r->bytes > c->req->max_bytes) {
			stop(c, HTTPC_TOO_LARGE);
			return 0;
		}
		if (c->req->on_data(c->req->ctx, data, n) != 0) {
			stop(c, HTTPC_ABORTED);
			return 0;
		}
		return n;
	}
	if (!ok) {
		/* Keep the start of an error body for the message; drop the rest. */
		if (r->body.len < HTTPC_ERROR_BODY_MAX)
			buf_append(&r->body, data,
			    n < HTTPC_ERROR_BODY_MAX - r->body.len ? n : HTTPC_ERROR_BODY_MAX - r->body.len);
		return n;
	}
	if (c->req->max_bytes > 0 && r->body.len + n > c->req->max_bytes) {
		stop(c, HTTPC_TOO_LARGE);
		return 0;
	}
	buf_append(&r->body, data, n);
	if (r->body.oom) {
		stop(c, HTTPC_NOMEM);
		return 0;
	}
	return n;
}

/* The longest wait a Retry-After is taken at: longer asks read as this (no call fits in it). */
#define HTTPC_RETRY_AFTER_MAX_MS (86400000LL * 1000)

/*
 * The milliseconds a Retry-After value asks for: delay-seconds, or an
 * HTTP-date in any of the three forms RFC 9110 says a recipient reads
 * (IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", RFC 850, asctime; proxies
 * and CDNs in front of an API send them), read by libcurl's curl_getdate.
 * A date already past reads 0, a wait beyond HTTPC_RETRY_AFTER_MAX_MS reads
 * that. -1 when it is neither.
 */
static long long
retry_after_value(const char *v)
{
	char *num;
	long long x;
	time_t when;

	x = strtoll(v, &num, 10);
	if (num != v && *num == '\0') {
		if (x < 0)
			return -1;
		return x < HTTPC_RETRY_AFTER_MAX_MS / 1000 ? x * 1000 : HTTPC_RETRY_AFTER_MAX_MS;
	}
	if (num != v)
		return -1;   /* "120s", "5 minutes": neither form */
	when = curl_getdate(v, NULL);
	if (when == (time_t)-1)
		return -1;
	x = (long long)when * 1000 - vtime_now_ms();
	return x < 0 ? 0 : x < HTTPC_RETRY_AFTER_MAX_MS ? x : HTTPC_RETRY_AFTER_MAX_MS;
}

/* Parses Retry-After (seconds or an HTTP-date) and retry-after-ms. */
static size_t
on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct call *c = arg;
	size_t n = size * nmemb, i;
	char line[256], *v, *end;
	long long x;

	if (n >= sizeof(line))
		return n;
	memcpy(line, data, n);
	line[n] = '\0';
	while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n'))
		line[--n] = '\0';
	if (strncmp(line, "HTTP/", 5) == 0) {
		/* A new response (after a 100 Continue): forget the last; the body callback needs the status. */
		c->resp->retry_after_ms = -1;
		c->resp->content_type[0] = '\0';
		v = strchr(line, ' ');
		x = v != NULL ? strtoll(v + 1, &end, 10) : 0;
		c->resp->status = x >= 100 && x <= 999 ? (long)x : 0;
		return size * nmemb;
	}
	v = strchr(line, ':');
	if (v == NULL)
		return size * nmemb;
	*v++ = '\0';
	while (*v == ' ' || *v == '\t')
		v++;
	for (i = 0; line[i]; i++)
		line[i] = (char)(line[i] >= 'A' && line[i] <= 'Z' ? line[i] + 32 : line[i]);
	if (strcmp(line, "retry-after") == 0) {
		x = retry_after_value(v);
		if (x >= 0 && c->resp->retry_after_ms < 0)
			c->resp->retry_after_ms = x;
	} else if (strcmp(line, "retry-after-ms") == 0) {
		x = strtoll(v, &end, 10);
		if (end != v && *end == '\0' && x >= 0 && x < 86400000LL)
			c->resp->retry_after_ms = x;
	} else if (strcmp(line, "content-type") == 0) {
		buf_strcpy(c->resp->content_type, sizeof(c->resp->content_type), v);
	}
	if (c->req->on_header != NULL)
		c->req->on_header(c->req->ctx, line, v);
	return size * nmemb;
}

/*
 * Between two turns of the multi loop: whether the call must stop now (the
 * client left, or nothing of the body came before the first-byte timeout),
 * and how long it may sleep before asking again.
 */
static int
must_stop(struct call *c, long long now, long *sleep_ms)
{
	long long left;

	*sleep_ms = c->req->cancelled != NULL ? HTTPC_CANCEL_CHECK_MS : 1000;
	if (c->req->cancelled != NULL && now - c->cancel_checked_ms >= HTTPC_CANCEL_CHECK_MS) {
		c->cancel_checked_ms = now;
		if (c->req->cancelled(c->req->ctx)) {
			stop(c, HTTPC_CANCELLED);
			return 1;
		}
	}
	if (c->req->first_byte_timeout_ms > 0 && c->resp->bytes == 0) {
		left = c->start_ms + c->req->first_byte_timeout_ms - now;
		if (left < 0) {
			stop(c, HTTPC_FIRST_BYTE_TIMEOUT);
			return 1;
		}
		if (left + 1 < *sleep_ms)
			*sleep_ms = (long)left + 1;
	}
	return 0;
}

/*
 * curl_easy_perform's loop, with our own checks between turns. libcurl's own
 * timeouts (connect, total) still wake curl_multi_poll in time. A call we
 * stop is removed while in flight, which makes libcurl close its connection:
 * the upstream sees the client leave. Returns libcurl's result of the
 * transfer (CURLE_OK for one we stopped; `c->stopped` says so).
 */
static CURLcode
run(struct httpc *h, struct call *c)
{
	CURLcode rc = CURLE_OK;
	CURLMcode mc;
	CURLMsg *msg;
	int running = 1, left;
	long sleep_ms;

	if ((mc = curl_multi_add_handle(h->multi, h->easy)) != CURLM_OK)
		return mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_FAILED_INIT;
	for (;;) {
		mc = curl_multi_perform(h->multi, &running);
		if (mc != CURLM_OK) {
			rc = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_FAILED_INIT;
			break;
		}
		if (running == 0 || must_stop(c, vtime_mono_ms(), &sleep_ms))
			break;
		mc = curl_multi_poll(h->multi, NULL, 0, (int)sleep_ms, NULL);
		if (mc != CURLM_OK) {
			rc = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_FAILED_INIT;
			break;
		}
	}
	while ((msg = curl_multi_info_read(h->multi, &left)) != NULL)
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == h->easy)
			rc = msg->data.result;
	curl_multi_remove_handle(h->multi, h->easy);
	return rc;
}

/* ---- the built-in client, for plain http:// ---- */

/*
 * Milliseconds left at `now` before the call's total timeout or `deadline`
 * (monotonic ms, 0: none), whichever comes first; `none` when neither is set.
 */
static long long
time_left(const struct call *c, long long deadline, long long now, long long none)
{
	long long left = deadline > 0 ? deadline - now : none;

	if (c->req->total_timeout_ms > 0 && c->start_ms + c->req->total_timeout_ms - now < left)
		left = c->start_ms + c->req->total_timeout_ms - now;
	return left;
}

/* Whether the call's total timeout has passed at `now`. */
static int
total_over(const struct call *c, long long now)
{
	return time_left(c, 0, now, 1) <= 0;
}

/*
 * Waits until `fd` is ready for `events`, asking between turns what
 * must_stop asks. `deadline` (monotonic ms, 0: none) bounds a connect.
 * HTTPC_OK when ready (`*revents`, if not NULL, says for what); HTTPC_TIMEOUT
 * past the deadline or the call's total timeout; else the reason the call
 * stopped (c->stopped is set then).
 */
static enum httpc_result
wait_fd(struct call *c, int fd, short events, long long deadline, short *revents)
{
	struct pollfd pfd;
	long long now, left;
	long sleep_ms;
	int n;

	for (;;) {
		now = vtime_mono_ms();
		if (must_stop(c, now, &sleep_ms))
			return c->why;
		left = time_left(c, deadline, now, sleep_ms);
		if (left <= 0)
			return HTTPC_TIMEOUT;
		if (left < sleep_ms)
			sleep_ms = (long)left;
		pfd.fd = fd;
		pfd.events = events;
		pfd.revents = 0;
		n = poll(&pfd, 1, (int)sleep_ms);
		if (n > 0) {
			if (revents != NULL)
				*revents = pfd.revents;
			return HTTPC_OK;
		}
		if (n < 0 && errno != EINTR) {
			stop(c, HTTPC_BROKEN);
			return HTTPC_BROKEN;
		}
	}
}

/* A host name being looked up (getaddrinfo_a); freed by whoever sees it end. */
struct lookup {
	struct gaicb cb;
	struct addrinfo hints;
	char host[HTTP1_HOST_MAX];
	char port[6];
	struct lookup *next;    /* on the list of the given-up ones */
};

/*
 * NOTE: a look-up given up (its call timed out or its client left) that glibc
 * could not cancel still writes to its gaicb: it waits here until it ends and
 * is freed by a later look-up. Only a resolver that hangs puts one here.
 */
static pthread_mutex_t orphans_lock = PTHREAD_MUTEX_INITIALIZER;
static struct lookup *orphans;

static void
lookup_free(struct lookup *l)
{
	if (l->cb.ar_result != NULL)
		freeaddrinfo(l->cb.ar_result);
	free(l);
}

static void
orphans_reap(void)
{
	struct lookup **pp, *l;

	pthread_mutex_lock(&orphans_lock);
	for (pp = &orphans; (l = *pp) != NULL;) {
		if (gai_error(&l->cb) != EAI_INPROGRESS) {
			*pp = l->next;
			lookup_free(l);
		} else {
			pp = &l->next;
		}
	}
	pthread_mutex_unlock(&orphans_lock);
}

/*
 * The addresses of u's host: an IP literal at once; a name with
 * getaddrinfo_a, so that the connect deadline, the total timeout and the
 * client leaving bound the wait as libcurl's threaded resolver bounds it.
 */
static enum httpc_result
resolve(struct call *c, const struct http1_url *u, long long deadline, struct addrinfo **out,
    char *err, size_t errlen)
{
	struct addrinfo hints;
	struct gaicb *list[1];
	struct lookup *l;
	struct timespec ts;
	enum httpc_result r = HTTPC_OK;
	long long now, left;
	long sleep_ms;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if (getaddrinfo(u->host, u->port, &hints, out) == 0)
		return HTTPC_OK;
	orphans_reap();
	l = calloc(1, sizeof(*l));
	if (l == NULL)
		return HTTPC_NOMEM;
	buf_strcpy(l->host, sizeof(l->host), u->host);
	buf_strcpy(l->port, sizeof(l->port), u->port);
	l->hints.ai_socktype = SOCK_STREAM;
	l->hints.ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV;
	l->cb.ar_name = l->host;
	l->cb.ar_service = l->port;
	l->cb.ar_request = &l->hints;
	list[0] = &l->cb;
	if (getaddrinfo_a(GAI_NOWAIT, list, 1, NULL) != 0) {
		free(l);
		snprintf(err, errlen, "cannot connect: the host name could not be looked up");
		return HTTPC_CONNECT;
	}
	while ((rc = gai_error(&l->cb)) == EAI_INPROGRESS) {
		now = vtime_mono_ms();
		if (must_stop(c, now, &sleep_ms)) {
			r = c->why;
			break;
		}
		left = time_left(c, deadline, now, sleep_ms);
		if (left <= 0) {
			r = HTTPC_TIMEOUT;
			snprintf(err, errlen, "the host name was not looked up in time");
			break;
		}
		if (left < sleep_ms)
			sleep_ms = (long)left;
		ts.tv_sec = sleep_ms / 1000;
		ts.tv_nsec = (sleep_ms % 1000) * 1000000L;
		gai_suspend((const struct gaicb *const *)list, 1, &ts);
	}
	if (r != HTTPC_OK) {
		if (gai_cancel(&l->cb) == EAI_NOTCANCELED) {
			pthread_mutex_lock(&orphans_lock);
			l->next = orphans;
			orphans = l;
			pthread_mutex_unlock(&orphans_lock);
		} else {
			lookup_free(l);
		}
		return r;
	}
	if (rc != 0) {
		snprintf(err, errlen, "cannot connect: the host name could not be resolved: %s",
		    gai_strerror(rc));
		lookup_free(l);
		return HTTPC_CONNECT;
	}
	*out = l->cb.ar_result;
	l->cb.ar_result = NULL;
	free(l);
	return HTTPC_OK;
}

static void
socket_options(int fd)
{
	int one = 1, idle = 60;

	/* libcurl's: no Nagle delay; TCP keep-alive probes after 60 s idle, every 60 s. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof(idle));
}

/*
 * A new connection to u, each address in turn within the connect timeout;
 * -1 with *r set. NOTE: the connect timeout counts from here, not from the
 * call's start: a kept connection that broke after the upstream held the
 * request a while is replaced with a connect timeout of its own, as libcurl
 * gives its retry one.
 */
static int
plain_connect(struct call *c, const struct http1_url *u, enum httpc_result *r, char *err,
    size_t errlen)
{
	struct addrinfo *ai = NULL, *a;
	long long deadline = c->req->connect_timeout_ms > 0 ?
	    vtime_mono_ms() + c->req->connect_timeout_ms : 0, now, until;
	socklen_t elen;
	int fd = -1, e = ECONNREFUSED, left = 0;

	if ((*r = resolve(c, u, deadline, &ai, err, errlen)) != HTTPC_OK)
		return -1;
	for (a = ai; a != NULL; a = a->ai_next)
		left++;
	for (a = ai; a != NULL; a = a->ai_next, left--) {
		fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			e = errno;
			continue;
		}
		socket_options(fd);
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			break;
		e = errno;
		if (e == EINPROGRESS) {
			/*
			 * NOTE: an address that drops packets must not take the whole connect
			 * timeout from the next: each gets its share of what is left, the last
			 * all of it (libcurl falls back alike).
			 */
			now = vtime_mono_ms();
			until = deadline > 0 && left > 1 ? now + (deadline - now) / left : deadline;
			*r = wait_fd(c, fd, POLLOUT, until, NULL);
			if (*r == HTTPC_TIMEOUT && left > 1 && !total_over(c, vtime_mono_ms())) {
				close(fd);
				fd = -1;
				e = ETIMEDOUT;
				continue;
			}
			if (*r != HTTPC_OK) {
				close(fd);
				freeaddrinfo(ai);
				if (*r == HTTPC_TIMEOUT && !total_over(c, vtime_mono_ms()))
					snprintf(err, errlen, "cannot connect within %ld ms",
					    c->req->connect_timeout_ms);
				else if (*r == HTTPC_TIMEOUT)
					snprintf(err, errlen, "the upstream call timed out after %ld ms, "
					    "still connecting", c->req->total_timeout_ms);
				return -1;
			}
			elen = sizeof(e);
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &elen) == 0 && e == 0)
				break;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		snprintf(err, errlen, "cannot connect: %s", strerror(e));
		*r = HTTPC_CONNECT;
	}
	return fd;
}

/* A kept connection to u's host and port, or -1. */
static int
kept_take(struct httpc *h, const struct http1_url *u)
{
	long long idle;
	ssize_t n;
	size_t i;
	char b;
	int fd;

	for (i = 0; i < HTTPC_KEPT_MAX; i++) {
		struct kept *k = &h->kept[i];

		if (k->fd < 0 || strcmp(k->port, u->port) != 0 || strcmp(k->host, u->host) != 0)
			continue;
		fd = k->fd;
		k->fd = -1;
		idle = vtime_mono_ms() - k->idle_since_ms;
		if (idle > HTTPC_KEPT_MAX_AGE_MS) {
			close(fd);
			continue;
		}
		if (idle > HTTPC_KEPT_CHECK_MS) {
			/* Closed by the upstream meanwhile (uvicorn closes after 5 s idle)? Then readable. */
			n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
			if (!(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) {
				close(fd);
				continue;
			}
		}
		return fd;
	}
	return -1;
}

/* Keeps fd for the next call to u, in a free slot or the one idle longest. */
static void
kept_put(struct httpc *h, const struct http1_url *u, int fd)
{
	struct kept *k = &h->kept[0];
	size_t i;

	for (i = 0; i < HTTPC_KEPT_MAX; i++) {
		if (h->kept[i].fd < 0) {
			k = &h->kept[i];
			break;
		}
		if (h->kept[i].idle_since_ms < k->idle_since_ms)
			k = &h->kept[i];
	}
	if (k->fd >= 0)
		close(k->fd);
	k->fd = fd;
	k->idle_since_ms = vtime_mono_ms();
	buf_strcpy(k->host, sizeof(k->host), u->host);
	buf_strcpy(k->port, sizeof(k->port), u->port);
}

static void
plain_line(void *ctx, const char *line, size_t len)
{
	on_header((char *)line, 1, len, ctx);
}

static int
plain_body(void *ctx, const char *data, size_t len)
{
	return on_body((char *)data, 1, len, ctx) != len;
}

/*
 * Sends the request on fd and reads the answer. `*keep` says whether fd can
 * carry another call; `*retry` that it broke before any byte of an answer
 * came (on a kept connection: the upstream closed it while it was idle).
 *
 * NOTE: a server may answer before it has read the whole body: with a 413 on a
 * large one or a 401, and maybe a close, or with the head of a 200 (it
 * answers as the body comes in). While sending, what arrives is read as it
 * comes, as libcurl does: a final answer of 300 or more, or a send that
 * breaks, ends the sending; a 1xx or 2xx head does not, or the upstream
 * would wait for the rest of the body and the call for its answer. A
 * connection whose request did not go whole is never kept.
 */
static enum httpc_result
exchange(struct httpc *h, struct call *c, int fd, int with_body, int *keep, int *retry,
    char *err, size_t errlen)
{
	const struct httpc_request *req = c->req;
	struct http1_parser p;
	struct iovec iov[2];
	struct msghdr m;
	char in[HTTPC_READ_BYTES];
	size_t total = h->head.len + (with_body ? req->body_len : 0), sent = 0, used, head = h->head.len;
	enum http1_status st;
	enum httpc_result r;
	int send_errno = 0, sending;
	short rev;
	ssize_t n;

	*keep = 0;
	*retry = 0;
	memset(&p, 0, sizeof(p));
	p.on_line = plain_line;
	p.on_body = plain_body;
	p.ctx = c;
	sending = sent < total;
	for (;;) {
		if (sending) {
			memset(&m, 0, sizeof(m));
			m.msg_iov = iov;
			if (sent < head) {
				iov[0].iov_base = h->head.data + sent;
				iov[0].iov_len = head - sent;
				iov[1].iov_base = (void *)req->body;
				iov[1].iov_len = total - head;
				m.msg_iovlen = total > head ? 2 : 1;
			} else {
				iov[0].iov_base = (char *)req->body + (sent - head);
				iov[0].iov_len = total - sent;
				m.msg_iovlen = 1;
			}
			n = sendmsg(fd, &m, MSG_NOSIGNAL);
			if (n > 0) {
				sent += (size_t)n;
				sending = sent < total;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
				/* The upstream went, an answer maybe on its way: read what came. */
				send_errno = n < 0 ? errno : EPIPE;
				sending = 0;
				continue;
			}
		}
		rev = 0;
		if ((r = wait_fd(c, fd, sending ? POLLIN | POLLOUT : POLLIN, 0, &rev)) != HTTPC_OK)
			return r;
		if (sending && !(rev & (POLLIN | POLLHUP | POLLERR)))
			continue;   /* room to send more, nothing to read */
		n = recv(fd, in, sizeof(in), 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
			continue;
		if (n <= 0) {
			int e = n < 0 ? errno : 0;
			enum http1_status end;

			*retry = !http1_started(&p);
			end = http1_eof(&p);
			/*
			 * NOTE: only the upstream's orderly close (a FIN) ends a body read
			 * to the close; a reset cuts it short, and what came is not the
			 * answer (libcurl: a receive error).
			 */
			if (end == HTTP1_DONE && e == 0)
				return HTTPC_OK;
			if (*retry && send_errno != 0)
				/* The upstream went before it had the whole request, and answered nothing. */
				snprintf(err, errlen, "the upstream connection broke: %s", strerror(send_errno));
			else if (end == HTTP1_DONE)
				snprintf(err, errlen, "the upstream connection broke in the answer's body: %s",
				    strerror(e));
			else if (e != 0)
				snprintf(err, errlen, "%s: %s", p.error, strerror(e));
			else
				snprintf(err, errlen, "%s", p.error);
			return HTTPC_BROKEN;
		}
		st = http1_feed(&p, in, (size_t)n, &used);
		switch (st) {
		case HTTP1_MORE:
			/* A final answer of 300 or more ends the sending; a 1xx or 2xx head does not. */
			if (sending && p.status >= 300)
				sending = 0;
			break;
		case HTTP1_DONE:
			*keep = http1_keep_alive(&p) && used == (size_t)n && sent == total;
			return HTTPC_OK;
		case HTTP1_STOPPED:
			return c->why;
		case HTTP1_ERROR:
			snprintf(err, errlen, "%s", p.error);
			return HTTPC_BROKEN;
		}
	}
}

/*
 * One call over the built-in client. A kept connection that turns out to
 * have been closed by the upstream (nothing came back) is replaced by a new
 * one once, as libcurl does: the upstream never saw that request whole.
 */
static enum httpc_result
plain_perform(struct httpc *h, struct call *c, const struct http1_url *u, char *err,
    size_t errlen)
{
	const struct httpc_request *req = c->req;
	int with_body = strcmp(req->method, "POST") == 0;
	int attempt, fd, reused, keep, retry;
	enum httpc_result r;

	http1_request_head(&h->head, req->method, u, req->headers, with_body, req->body_len);
	if (h->head.oom)
		return HTTPC_NOMEM;
	for (attempt = 0;; attempt++) {
		fd = kept_take(h, u);
		reused = fd >= 0;
		if (fd < 0 && (fd = plain_connect(c, u, &r, err, errlen)) < 0)
			break;
		r = exchange(h, c, fd, with_body, &keep, &retry, err, errlen);
		if (r == HTTPC_BROKEN && retry && reused && attempt == 0 && !c->stopped) {
			close(fd);
			err[0] = '\0';
			continue;
		}
		/* NOTE: a call stopped for any reason closes its connection: the upstream sees it go. */
		if (keep && r == HTTPC_OK && !c->stopped)
			kept_put(h, u, fd);
		else
			close(fd);
		break;
	}
	if (c->stopped) {
		snprintf(err, errlen, "%s", httpc_result_text(c->why));
		return c->why;
	}
	if (r == HTTPC_TIMEOUT && err[0] == '\0')
		snprintf(err, errlen, "the upstream call timed out after %ld ms", req->total_timeout_ms);
	if (r == HTTPC_OK)
		err[0] = '\0';
	return r;
}

/* Whether the list `l` holds exactly the lines of `headers` (NULL-terminated; NULL: none). */
static int
same_headers(const struct curl_slist *l, const char *const *headers)
{
	size_t i;

	for (i = 0; headers != NULL && headers[i] != NULL; i++, l = l->next)
		if (l == NULL || strcmp(l->data, headers[i]) != 0)
			return 0;
	return l == NULL;
}

enum httpc_result
httpc_perform(struct httpc *h, const struct httpc_request *req, struct httpc_response *resp,
    char *err, size_t errlen)
{
	struct curl_slist *hl = NULL, *tmp;
	struct call c;
	CURL *e = h->easy;
	CURLcode rc;
	size_t i;

	memset(resp, 0, sizeof(*resp));
	resp->retry_after_ms = -1;
	memset(&c, 0, sizeof(c));
	c.req = req;
	c.resp = resp;
	c.start_ms = vtime_mono_ms();
	c.cancel_checked_ms = c.start_ms;
	err[0] = '\0';

	if (builtin_enabled && !proxy_from_env) {
		struct http1_url u;

		if (http1_url_parse(req->url, &u) == 0)
			return plain_perform(h, &c, &u, err, errlen);
	}

	/*
	 * NOTE: a provider sends the same lines call after call: the list is
	 * built again only when they change (building and freeing it was about
	 * 1,500 instructions of a completion).
	 */
	if (!same_headers(h->headers, req->headers)) {
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
		curl_slist_free_all(h->headers);
		h->headers = NULL;
		for (i = 0; req->headers != NULL && req->headers[i] != NULL; i++) {
			tmp = curl_slist_append(hl, req->headers[i]);
			if (tmp == NULL) {
				curl_slist_free_all(hl);
				return HTTPC_NOMEM;
			}
			hl = tmp;
		}
		h->headers = hl;
	}
	/*
	 * Only what differs between calls; the rest was set once in httpc_new.
	 * A GET after a POST must say so, or libcurl would post again.
	 */
	if (h->url_text == NULL || strcmp(h->url_text, req->url) != 0) {
		CURLUcode uc = CURLUE_OUT_OF_MEMORY;

		curl_url_cleanup(h->url);
		free(h->url_text);
		h->url = curl_url();
		h->url_text = strdup(req->url);
		if (h->url == NULL || h->url_text == NULL ||
		    (uc = curl_url_set(h->url, CURLUPART_URL, req->url, 0)) != CURLUE_OK) {
			curl_url_cleanup(h->url);
			free(h->url_text);
			h->url = NULL;
			h->url_text = NULL;
			/* NOTE: never quote the URL: it may hold user:password@ or a ?token=, and errors are logged. */
			snprintf(err, errlen, "the URL cannot be parsed: %s", curl_url_strerror(uc));
			return HTTPC_BROKEN;
		}
	}
	curl_easy_setopt(e, CURLOPT_CURLU, h->url);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
	if (h->was_custom) {
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
		h->was_custom = 0;
	}
	if (strcmp(req->method, "POST") == 0) {
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		h->was_post = 1;
	} else {
		if (h->was_post) {
			curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
			curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
			h->was_post = 0;
		}
		if (strcmp(req->method, "GET") != 0) {
			/* DELETE and the like: a GET that names another method, without a body. */
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
			h->was_custom = 1;
		}
	}
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, req->total_timeout_ms);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &c);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, &c);

	rc = run(h, &c);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &resp->status);

	if (c.stopped) {
		/* NOTE: libcurl closes a connection whose transfer was aborted, so the upstream sees it. */
		snprintf(err, errlen, "%s", httpc_result_text(c.why));
		return c.why;
	}
	switch (rc) {
	case CURLE_OK:
		return HTTPC_OK;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		snprintf(err, errlen, "cannot connect: %s", curl_easy_strerror(rc));
		return HTTPC_CONNECT;
	case CURLE_OPERATION_TIMEDOUT:
		snprintf(err, errlen, "%s", curl_easy_strerror(rc));
		return HTTPC_TIMEOUT;
	case CURLE_OUT_OF_MEMORY:
		return HTTPC_NOMEM;
	default:
		snprintf(err, errlen, "%s", curl_easy_strerror(rc));
		return HTTPC_BROKEN;
	}
}

const char *
httpc_result_text(enum httpc_result r)
{
	switch (r) {
	case HTTPC_OK: return "ok";
	case HTTPC_CONNECT: return "cannot connect to the upstream";
	case HTTPC_FIRST_BYTE_TIMEOUT: return "the upstream sent nothing before the first-token timeout";
	case HTTPC_TIMEOUT: return "the upstream call timed out";
	case HTTPC_CANCELLED: return "the client went away";
	case HTTPC_TOO_LARGE: return "the upstream answer is larger than allowed";
	case HTTPC_ABORTED: return "stopped while streaming";
	case HTTPC_BROKEN: return "the upstream connection broke";
	case HTTPC_NOMEM: return "out of memory";
	}
	return "unknown";
}
