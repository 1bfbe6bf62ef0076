/* transport: translates between a libfcgi request and the app's request/response. */
#include "config.h"

#include "buf.h"
#include "transport.h"

#include "app/log.h"
#include "app/vtime.h"

#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#define TRANSPORT_SCRATCH_KEEP 65536
#define TRANSPORT_BODY_KEEP 262144

#define TRANSPORT_WRITE_MARGIN_MS 5000  /* past the turn: its last events, a store write */
#define TRANSPORT_UNTIMED_BYTES 65536   /* a plain answer this small fits an empty socket */
#define TRANSPORT_REARM_MS 1000         /* how far past the deadline a write may block */
#define TRANSPORT_LATE_US 1000          /* past it: how long a write may wait for room */
#define TRANSPORT_TIMED_CHUNK 8192      /* about libfcgi's buffer: a socket write per gate */

/*
 * NOTE: the write deadline. A client that reads an answer just fast enough
 * for nginx (send_timeout is per write, not per answer) would hold the thread
 * as long as it liked, and while a write blocks inside a provider's on_data
 * callback libcurl's own timeouts cannot fire. So every answer that may fill
 * the socket (a stream, or a body over TRANSPORT_UNTIMED_BYTES; nginx reads
 * the other locations' answers whole into its buffers) is timed: before a
 * write, SO_SNDTIMEO is set to the time left until the request's start plus
 * VALERIE_TURN_TIMEOUT plus TRANSPORT_WRITE_MARGIN_MS. A write blocked that
 * long fails (EAGAIN), and the answer ends as for a client that went away.
 * The timeout is set again only when it is TRANSPORT_REARM_MS stale (a
 * clock read per write, a setsockopt a second at most), so a write may block
 * up to that much past the deadline. Past the deadline writes go on while
 * the client keeps up (a turn that ended on time keeps its last events), and
 * one that would wait longer than TRANSPORT_LATE_US fails. Small plain
 * answers, most requests, cost nothing.
 */

/* Sets the socket's send timeout: `ms` from now, TRANSPORT_LATE_US when 0 or less. */
static void
send_timeout(int fd, long long ms)
{
	struct timeval tv;

	if (ms > 0) {
		tv.tv_sec = (time_t)(ms / 1000);
		tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	} else {
		tv.tv_sec = 0;
		tv.tv_usec = TRANSPORT_LATE_US;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/*
 * Before a write of a timed answer: keeps the send timeout at the time left.
 * Returns 0 to write, -1 once the deadline has cut the answer.
 */
static int
write_gate(struct transport *t)
{
	long long now;

	if (!t->timed)
		return 0;
	if (t->expired)
		return -1;
	if (t->late)
		return 0;
	now = vtime_mono_ms();
	if (t->armed_ms == 0 || now - t->armed_ms >= TRANSPORT_REARM_MS) {
		send_timeout(t->fcgi->ipcFd, t->deadline_ms - now);
		t->armed_ms = now;
		t->late = now >= t->deadline_ms;
	}
	return 0;
}

/*
 * After a write failed: when it timed out, the client is not reading. The
 * connection is shut down, so the end of the answer fails at once rather than
 * wait again, and the peer sees the answer cut; one line says why.
 */
static void
write_failed(struct transport *t)
{
	struct json_object *f;
	int e = FCGX_GetError(t->fcgi->out);

	if (!t->timed || t->expired || (e != EAGAIN && e != EWOULDBLOCK))
		return;
	t->expired = 1;
	(void)shutdown(t->fcgi->ipcFd, SHUT_RDWR);
	f = json_object_new_object();
	if (f != NULL) {
		json_object_object_add(f, "request_id", json_object_new_string(t->request_id));
		json_object_object_add(f, "write_deadline_s",
		    json_object_new_double((double)t->write_budget_ms / 1000.0));
	}
	log_emit(LOG_LVL_WARNING, "the client stopped reading its answer: the write deadline "
	    "(VALERIE_TURN_TIMEOUT and a margin) passed, connection closed", f);
	json_object_put(f);
}

/*
 * Publishes (fd) or withdraws (-1) the connection of a timed answer for
 * transport_cut. Only timed answers (streams, large bodies) pay the lock:
 * small answers cannot block, so a drain never needs to cut them.
 */
static void
cut_watch(struct transport *t, int fd)
{
	pthread_mutex_lock(&t->cut_lock);
	t->cut_fd = fd;
	pthread_mutex_unlock(&t->cut_lock);
}

int
transport_cut(struct transport *t)
{
	struct json_object *f;
	int cut = 0;

	if (t->fcgi == NULL)
		return 0;
	pthread_mutex_lock(&t->cut_lock);
	if (t->cut_fd >= 0) {
		(void)shutdown(t->cut_fd, SHUT_RDWR);
		cut = 1;
		f = json_object_new_object();
		if (f != NULL)
			json_object_object_add(f, "request_id",
			    json_object_new_string(t->request_id));
		log_emit(LOG_LVL_WARNING, "worker stopping: an answer still being written (its "
		    "client is not reading it) was cut at the drain limit "
		    "(VALERIE_SHUTDOWN_TIMEOUT), connection closed", f);
		json_object_put(f);
	}
	pthread_mutex_unlock(&t->cut_lock);
	return cut;
}

/* Appends `s` (n bytes) at *pos if it fits before `end`; -1 when it does not. */
static int
put(char **pos, const char *end, const char *s, size_t n)
{
	if ((size_t)(end - *pos) < n)
		return -1;
	memcpy(*pos, s, n);
	*pos += n;
	return 0;
}

/* Appends a non-negative number in decimal. */
static int
put_num(char **pos, const char *end, long long v)
{
	char d[BUF_DECIMAL_SIZE];
	const char *s = buf_decimal(d, v, 1);

	return put(pos, end, s, (size_t)(d + BUF_DECIMAL_SIZE - 1 - s));
}

/*
 * The status line and headers in one write (one FastCGI record for most
 * answers), assembled without printf: this runs for every request.
 */
static int
fc_write_head(void *ctx, const struct http_response *resp)
{
	struct transport *t = ctx;
	char head[HTTP_MAX_RESP_HEADERS * 260 + 128], *p = head;
	const char *end = head + sizeof(head), *reason = http_status_text(resp->status);
	size_t i;
	int bad;

	bad = put(&p, end, "Status: ", 8) | put_num(&p, end, resp->status) |
	    put(&p, end, " ", 1) | put(&p, end, reason, strlen(reason)) | put(&p, end, "\r\n", 2);
	for (i = 0; i < resp->nheaders; i++)
		bad |= put(&p, end, resp->headers[i].name, strlen(resp->headers[i].name)) |
		    put(&p, end, ": ", 2) |
		    put(&p, end, resp->headers[i].value, strlen(resp->headers[i].value)) |
		    put(&p, end, "\r\n", 2);
	if (resp->streaming)
		bad |= put(&p, end, "X-Accel-Buffering: no\r\n\r\n", 25);
	else
		bad |= put(&p, end, "Content-Length: ", 16) |
		    put_num(&p, end, (long long)resp->body.len) | put(&p, end, "\r\n\r\n", 4);
	if (bad)
		return -1;
	t->timed = resp->streaming || resp->body.len > TRANSPORT_UNTIMED_BYTES;
	if (t->timed)
		cut_watch(t, t->fcgi->ipcFd);
	if (write_gate(t) != 0)
		return -1;
	if (FCGX_PutStr(head, (int)(p - head), t->fcgi->out) != (int)(p - head)) {
		write_failed(t);
		return -1;
	}
	return 0;
}

static int
fc_write_body(void *ctx, const char *data, size_t len)
{
	struct transport *t = ctx;
	size_t done = 0;
	int n, chunk;

	while (done < len) {
		chunk = t->timed ? TRANSPORT_TIMED_CHUNK : 65536;
		if (len - done < (size_t)chunk)
			chunk = (int)(len - done);
		if (write_gate(t) != 0)
			return -1;
		n = FCGX_PutStr(data + done, chunk, t->fcgi->out);
		if (n != chunk) {
			write_failed(t);
			return -1;
		}
		done += (size_t)chunk;
	}
	return 0;
}

static int
fc_flush(void *ctx)
{
	struct transport *t = ctx;

	if (write_gate(t) != 0)
		return -1;
	if (FCGX_FFlush(t->fcgi->out) < 0) {
		write_failed(t);
		return -1;
	}
	return 0;
}

/*
 * NOTE: nginx closes its FastCGI connection when the client goes away (with
 * fastcgi_ignore_client_abort off, the default), so a hang-up on our side of
 * the socket means nobody will read the answer.
 */
static int
fc_client_gone(void *ctx)
{
	struct transport *t = ctx;
	struct pollfd p;

	p.fd = t->fcgi->ipcFd;
	p.events = POLLRDHUP;
	p.revents = 0;
	if (p.fd < 0)
		return 1;
	if (poll(&p, 1, 0) <= 0)
		return 0;
	return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

void
transport_init(struct transport *t, FCGX_Request *fcgi, long long max_body,
    long long turn_timeout_s)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->cut_lock, NULL);
	t->cut_fd = -1;
	t->fcgi = fcgi;
	t->max_body = max_body;
	t->write_budget_ms = turn_timeout_s * 1000 + TRANSPORT_WRITE_MARGIN_MS;
	t->request_id = "";
	t->ops.write_head = fc_write_head;
	t->ops.write_body = fc_write_body;
	t->ops.flush = fc_flush;
	t->ops.client_gone = fc_client_gone;
	t->ops.ctx = t;
}

void
transport_free(struct transport *t)
{
	buf_free(&t->scratch);
	buf_free(&t->body);
	if (t->fcgi != NULL)
		pthread_mutex_destroy(&t->cut_lock);
}

/* Strict non-negative decimal; -1 if malformed. */
static long long
parse_length(const char *s)
{
	long long v = 0;

	if (*s == '\0')
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (0x7fffffffffffffffLL - 9) / 10)
			return -1;
		v = v * 10 + (*s - '0');
	}
	return v;
}

static void
read_body(struct transport *t, struct http_request *req, const char *cl)
{
	long long len;
	int n;

	req->body = "";
	req->body_len = 0;
	if (cl == NULL || *cl == '\0')
		return;
	len = parse_length(cl);
	if (len < 0) {
		req->body_error = HTTP_BODY_BAD_LENGTH;
		return;
	}
	if (len > t->max_body) {
		req->body_error = HTTP_BODY_TOO_LARGE;
		return;
	}
	if (len == 0)
		return;
	if (buf_reserve(&t->body, (size_t)len) != 0) {
		req->body_error = HTTP_BODY_READ_FAILED;
		return;
	}
	n = FCGX_GetStr(t->body.data, (int)len, t->fcgi->in);
	if (n != (int)len) {
		req->body_error = HTTP_BODY_READ_FAILED;
		return;
	}
	t->body.len = (size_t)len;
	t->body.data[len] = '\0';
	req->body = t->body.data;
	req->body_len = (size_t)len;
}

/*
 * NOTE: libfcgi ends a connection with shutdown(), then polls and reads until
 * nginx has closed its end, so that input left unread cannot turn the close
 * into a reset. That wait wakes the thread a second time per request, on the
 * cores nginx and the client are using (bench/README.md). Once the input has
 * been read to its end record nothing more can arrive, and the plain close()
 * that FCGX_Detach asks of FCGX_Finish_r is just as clean. The end record
 * follows the body in nginx's write, so reading it costs no wait; a peer that
 * sends it late has its answer already and holds only this thread.
 */
void
transport_end(struct transport *t)
{
	FCGX_Stream *in = t->fcgi->in;
	struct timeval none = {0, 0};

	/* The answer and the end-request record go out first, as FCGX_Finish_r sends them. */
	(void)FCGX_FClose(t->fcgi->err);
	(void)write_gate(t);
	if (FCGX_FClose(t->fcgi->out) != 0)
		write_failed(t);
	/* A connection the web server keeps (FCGI_KEEP_CONN) starts its next answer untimed. */
	if (t->armed_ms != 0 && !t->expired && t->fcgi->keepConnection)
		(void)setsockopt(t->fcgi->ipcFd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof(none));
	/* The answer is out (or cut): a drain has nothing left to cut here. */
	if (t->cut_fd >= 0)
		cut_watch(t, -1);
	if (in != NULL && (FCGX_HasSeenEOF(in) || FCGX_GetChar(in) == EOF) &&
	    FCGX_GetError(in) == 0)
		(void)FCGX_Detach(t->fcgi);
	else
		(void)FCGX_Attach(t->fcgi);
}

/* An HTTP_<NAME> param: "HTTP_NAME=value", its '=' at `eq`. */
struct header_param {
	const char *kv, *eq;
};

/* The params the app needs, found in one pass over the environment. */
struct params {
	const char *request_uri, *document_uri, *method, *query, *remote_addr, *request_id;
	const char *content_type, *content_length;
	size_t nheaders;                   /* up to HTTP_MAX_HEADERS + 1: one more is a 431 */
	size_t header_bytes;               /* their names, NUL-terminated, in scratch */
	struct header_param headers[HTTP_MAX_HEADERS + 1];
};

/* Matches `name=` at the start of `kv`; returns the value or NULL. */
static const char *
param(const char *kv, const char *name, size_t n)
{
	return strncmp(kv, name, n) == 0 && kv[n] == '=' ? kv + n + 1 : NULL;
}

/*
 * NOTE: one pass with a switch on the first letter instead of one
 * FCGX_GetParam (a linear strncmp scan) per name, and the HTTP_ params
 * remembered so that transport_read does not scan again: this runs for
 * every request (bench/README.md).
 */
static void
scan_params(char **envp, struct params *pa)
{
	const char *kv, *v, *eq;
	size_t i;

	pa->request_uri = pa->document_uri = pa->method = pa->query = NULL;
	pa->remote_addr = pa->request_id = pa->content_type = pa->content_length = NULL;
	pa->nheaders = 0;
	pa->header_bytes = 0;
	for (i = 0; (kv = envp[i]) != NULL; i++) {
		switch (kv[0]) {
		case 'H':
			if (kv[1] != 'T' || strncmp(kv, "HTTP_", 5) != 0 ||
			    pa->nheaders > HTTP_MAX_HEADERS || (eq = strchr(kv, '=')) == NULL)
				break;
			pa->headers[pa->nheaders].kv = kv;
			pa->headers[pa->nheaders].eq = eq;
			pa->nheaders++;
			pa->header_bytes += (size_t)(eq - kv) - 5 + 1;
			break;
		case 'R':
			if ((v = param(kv, "REQUEST_URI", 11)) != NULL)
				pa->request_uri = v;
			else if ((v = param(kv, "REQUEST_METHOD", 14)) != NULL)
				pa->method = v;
			else if ((v = param(kv, "REMOTE_ADDR", 11)) != NULL)
				pa->remote_addr = v;
			else if ((v = param(kv, "REQUEST_ID", 10)) != NULL)
				pa->request_id = v;
			break;
		case 'D':
			if ((v = param(kv, "DOCUMENT_URI", 12)) != NULL)
				pa->document_uri = v;
			break;
		case 'Q':
			if ((v = param(kv, "QUERY_STRING", 12)) != NULL)
				pa->query = v;
			break;
		case 'C':
			if ((v = param(kv, "CONTENT_TYPE", 12)) != NULL)
				pa->content_type = v;
			else if ((v = param(kv, "CONTENT_LENGTH", 14)) != NULL)
				pa->content_length = v;
			break;
		default:
			break;
		}
	}
}

int
transport_read(struct transport *t, struct http_request *req)
{
	char **envp = t->fcgi->envp, *p;
	const char *uri, *raw, *q, *eq;
	struct params pa;
	size_t need, i, plen, n;

	memset(req, 0, sizeof(*req));
	t->deadline_ms = vtime_mono_ms() + t->write_budget_ms;
	t->armed_ms = 0;
	t->timed = t->late = t->expired = 0;
	t->request_id = "";
	buf_reset(&t->scratch, TRANSPORT_SCRATCH_KEEP);
	buf_reset(&t->body, TRANSPORT_BODY_KEEP);
	scan_params(envp, &pa);

	/*
	 * NOTE: route on DOCUMENT_URI, the path as nginx normalised it (decoded,
	 * slashes merged) and matched its locations on, so nginx's access rules
	 * and our routes see the same path. REQUEST_URI is the fallback for
	 * other front ends.
	 */
	raw = pa.request_uri;
	uri = pa.document_uri;
	if (uri == NULL)
		uri = raw != NULL ? raw : "";
	q = uri == raw ? strchr(uri, '?') : NULL;
	plen = q ? (size_t)(q - uri) : strlen(uri);

	/* One reservation so pointers into scratch never move. */
	need = plen + 1 + pa.header_bytes;
	if (buf_reserve(&t->scratch, need) != 0)
		return -1;
	p = t->scratch.data;
	memcpy(p, uri, plen);
	p[plen] = '\0';
	req->path = p;
	p += plen + 1;

	n = pa.nheaders;
	if (n > HTTP_MAX_HEADERS) {
		req->nheaders_dropped = 1;
		n = HTTP_MAX_HEADERS;
	}
	for (i = 0; i < n; i++) {
		eq = pa.headers[i].eq;
		t->headers[i].name = p;
		for (q = pa.headers[i].kv + 5; q < eq; q++)
			*p++ = *q == '_' ? '-' : (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q);
		*p++ = '\0';
		t->headers[i].value = eq + 1;
	}
	t->scratch.len = (size_t)(p - t->scratch.data);
	req->headers = t->headers;
	req->nheaders = n;

	req->method = pa.method;
	req->query = pa.query;
	if (req->query == NULL)
		req->query = raw != NULL && (q = strchr(raw, '?')) != NULL ? q + 1 : "";
	req->remote_addr = pa.remote_addr != NULL ? pa.remote_addr : "";
	req->request_id = pa.request_id != NULL ? pa.request_id : "";
	t->request_id = req->request_id;
	req->content_type = pa.content_type;
	req->head = req->method != NULL && strcmp(req->method, "HEAD") == 0;
	read_body(t, req, pa.content_length);
	return 0;
}

void
transport_send(struct transport *t, const struct http_request *req,
    struct http_response *resp)
{
	if (resp->streaming || resp->aborted)
		return;
	if (fc_write_head(t, resp) != 0)
		goto gone;
	if (!req->head && resp->body.len > 0 &&
	    fc_write_body(t, resp->body.data, resp->body.len) != 0)
		goto gone;
	return;
gone:
	resp->aborted = 1;
}
