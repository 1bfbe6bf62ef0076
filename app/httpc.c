/* httpc: outgoing HTTP(S) calls over libcurl with reuse, timeouts, caps and cancellation. */
#include "config.h"

#include "httpc.h"
#include "vtime.h"

#include <curl/curl.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct httpc {
	CURLM *multi;    /* drives `easy`, and holds its connections between calls */
	CURL *easy;
	int was_post;    /* the last call set CURLOPT_POST */
	int was_custom;  /* the last call set CURLOPT_CUSTOMREQUEST */
	CURLU *url;      /* the last URL, parsed */
	char *url_text;  /* ...and as it was given */
	struct curl_slist *headers;   /* the last call's header lines, kept for the next */
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

	if (h == NULL)
		return NULL;
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
	if (h == NULL)
		return;
	curl_easy_cleanup(h->easy);
	curl_multi_cleanup(h->multi);   /* closes the connections it kept */
	curl_url_cleanup(h->url);
	free(h->url_text);
	curl_slist_free_all(h->headers);
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
