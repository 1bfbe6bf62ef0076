/* transport: translates between a libfcgi request and the app's request/response. */
#include "config.h"

#include "transport.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#define TRANSPORT_SCRATCH_KEEP 65536
#define TRANSPORT_BODY_KEEP 262144

/* The status line and headers in one write (one FastCGI record for most answers). */
static int
fc_write_head(void *ctx, const struct http_response *resp)
{
	struct transport *t = ctx;
	char head[HTTP_MAX_RESP_HEADERS * 260 + 128];
	size_t i;
	int n;

	n = snprintf(head, sizeof(head), "Status: %d %s\r\n", resp->status,
	    http_status_text(resp->status));
	for (i = 0; i < resp->nheaders; i++)
		n += snprintf(head + n, sizeof(head) - (size_t)n, "%s: %s\r\n", resp->headers[i].name,
		    resp->headers[i].value);
	if (resp->streaming)
		n += snprintf(head + n, sizeof(head) - (size_t)n, "X-Accel-Buffering: no\r\n\r\n");
	else
		n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Length: %zu\r\n\r\n",
		    resp->body.len);
	if (n <= 0 || (size_t)n >= sizeof(head))
		return -1;
	return FCGX_PutStr(head, n, t->fcgi->out) == n ? 0 : -1;
}

static int
fc_write_body(void *ctx, const char *data, size_t len)
{
	struct transport *t = ctx;
	size_t done = 0;
	int n, chunk;

	while (done < len) {
		chunk = len - done > 65536 ? 65536 : (int)(len - done);
		n = FCGX_PutStr(data + done, chunk, t->fcgi->out);
		if (n != chunk)
			return -1;
		done += (size_t)chunk;
	}
	return 0;
}

static int
fc_flush(void *ctx)
{
	struct transport *t = ctx;

	return FCGX_FFlush(t->fcgi->out) < 0 ? -1 : 0;
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
transport_init(struct transport *t, FCGX_Request *fcgi, long long max_body, int tcp)
{
	memset(t, 0, sizeof(*t));
	t->fcgi = fcgi;
	t->max_body = max_body;
	t->tcp = tcp;
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
read_body(struct transport *t, struct http_request *req)
{
	const char *cl = FCGX_GetParam("CONTENT_LENGTH", t->fcgi->envp);
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

int
transport_read(struct transport *t, struct http_request *req)
{
	char **envp = t->fcgi->envp, *p;
	const char *uri, *raw, *q, *eq;
	size_t need, i, plen, n = 0;

	memset(req, 0, sizeof(*req));
	buf_reset(&t->scratch, TRANSPORT_SCRATCH_KEEP);
	buf_reset(&t->body, TRANSPORT_BODY_KEEP);

	/*
	 * NOTE: route on DOCUMENT_URI, the path as nginx normalised it (decoded,
	 * slashes merged) and matched its locations on, so nginx's access rules
	 * and our routes see the same path. REQUEST_URI is the fallback for
	 * other front ends.
	 */
	raw = FCGX_GetParam("REQUEST_URI", envp);
	uri = FCGX_GetParam("DOCUMENT_URI", envp);
	if (uri == NULL)
		uri = raw != NULL ? raw : "";
	q = uri == raw ? strchr(uri, '?') : NULL;
	plen = q ? (size_t)(q - uri) : strlen(uri);

	/* One reservation so pointers into scratch never move. */
	need = plen + 1;
	for (i = 0; envp[i] != NULL; i++)
		if (strncmp(envp[i], "HTTP_", 5) == 0)
			need += strlen(envp[i]) + 1;
	if (buf_reserve(&t->scratch, need) != 0)
		return -1;
	p = t->scratch.data;
	memcpy(p, uri, plen);
	p[plen] = '\0';
	req->path = p;
	p += plen + 1;

	for (i = 0; envp[i] != NULL; i++) {
		if (strncmp(envp[i], "HTTP_", 5) != 0 || (eq = strchr(envp[i], '=')) == NULL)
			continue;
		if (n == HTTP_MAX_HEADERS) {
			req->nheaders_dropped = 1;
			break;
		}
		t->headers[n].name = p;
		for (q = envp[i] + 5; q < eq; q++)
			*p++ = *q == '_' ? '-' : (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q);
		*p++ = '\0';
		t->headers[n].value = eq + 1;
		n++;
	}
	t->scratch.len = (size_t)(p - t->scratch.data);
	req->headers = t->headers;
	req->nheaders = n;

	req->method = FCGX_GetParam("REQUEST_METHOD", envp);
	req->query = FCGX_GetParam("QUERY_STRING", envp);
	if (req->query == NULL)
		req->query = raw != NULL && (q = strchr(raw, '?')) != NULL ? q + 1 : "";
	req->remote_addr = FCGX_GetParam("REMOTE_ADDR", envp);
	req->request_id = FCGX_GetParam("REQUEST_ID", envp);
	req->content_type = FCGX_GetParam("CONTENT_TYPE", envp);
	if (req->remote_addr == NULL)
		req->remote_addr = "";
	if (req->request_id == NULL)
		req->request_id = "";
	req->head = req->method != NULL && strcmp(req->method, "HEAD") == 0;
	read_body(t, req);
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
