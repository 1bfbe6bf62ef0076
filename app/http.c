/* http: the request/response model the application works on, free of any transport. */
#include "config.h"

#include "hex.h"
#include "http.h"

#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define HTTP_BODY_KEEP 65536 /* body memory kept between requests */

void
http_response_init(struct http_response *resp, const struct http_transport *t)
{
	memset(resp, 0, sizeof(*resp));
	buf_init(&resp->body);
	resp->status = 200;
	resp->transport = t;
}

/*
 * NOTE: field by field, not a memset of the whole struct: the header slots
 * are 4 KB, and nothing reads a slot at or beyond `nheaders`. This runs for
 * every request (bench/README.md).
 */
void
http_response_reset(struct http_response *resp)
{
	buf_reset(&resp->body, HTTP_BODY_KEEP);
	resp->status = 200;
	resp->nheaders = 0;
	resp->streaming = 0;
	resp->aborted = 0;
	resp->bytes_sent = 0;
}

void
http_response_free(struct http_response *resp)
{
	if (resp == NULL)
		return;
	buf_free(&resp->body);
}

static int
header_text_ok(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n >= max)
		return 0;
	return strpbrk(s, "\r\n") == NULL;
}

int
http_response_header(struct http_response *resp, const char *name, const char *value)
{
	struct http_resp_header *h = NULL;
	size_t i;

	if (!header_text_ok(name, sizeof(h->name)) || strlen(value) >= sizeof(h->value) ||
	    strpbrk(value, "\r\n") != NULL)
		return -1;
	for (i = 0; i < resp->nheaders; i++) {
		if (strcasecmp(resp->headers[i].name, name) == 0) {
			h = &resp->headers[i];
			break;
		}
	}
	if (h == NULL) {
		if (resp->nheaders == HTTP_MAX_RESP_HEADERS)
			return -1;
		h = &resp->headers[resp->nheaders++];
	}
	/* Lengths were checked above: plain copies (this runs several times a request). */
	memcpy(h->name, name, strlen(name) + 1);
	memcpy(h->value, value, strlen(value) + 1);
	return 0;
}

const char *
http_response_get_header(const struct http_response *resp, const char *name)
{
	size_t i;

	for (i = 0; i < resp->nheaders; i++)
		if (strcasecmp(resp->headers[i].name, name) == 0)
			return resp->headers[i].value;
	return NULL;
}

void
http_response_json(struct http_response *resp, int status, struct json_object *obj)
{
	const char *text;
	size_t len;

	text = json_object_to_json_string_length(obj,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	buf_reset(&resp->body, HTTP_BODY_KEEP);
	resp->status = status;
	http_response_header(resp, "Content-Type", "application/json");
	if (text == NULL) {
		resp->body.oom = 1;
		return;
	}
	buf_append(&resp->body, text, len);
}

struct buf *
http_response_json_begin(struct http_response *resp, int status)
{
	buf_reset(&resp->body, HTTP_BODY_KEEP);
	resp->status = status;
	http_response_header(resp, "Content-Type", "application/json");
	return &resp->body;
}

void
http_response_error(struct http_response *resp, int status, const char *code,
    const char *message)
{
	struct json_object *doc, *err;

	doc = json_object_new_object();
	err = json_object_new_object();
	if (doc == NULL || err == NULL) {
		json_object_put(doc);
		json_object_put(err);
		resp->status = status;
		buf_reset(&resp->body, HTTP_BODY_KEEP);
		resp->body.oom = 1;
		return;
	}
	json_object_object_add(err, "code", json_object_new_string(code));
	json_object_object_add(err, "message", json_object_new_string(message));
	json_object_object_add(doc, "error", err);
	http_response_json(resp, status, doc);
	json_object_put(doc);
}

int
http_stream_begin(struct http_response *resp)
{
	const struct http_transport *t = resp->transport;

	if (resp->streaming)
		return resp->aborted ? -1 : 0;
	resp->streaming = 1;
	if (t == NULL || t->write_head(t->ctx, resp) != 0 || t->flush(t->ctx) != 0) {
		resp->aborted = 1;
		return -1;
	}
	return 0;
}

int
http_stream_write(struct http_response *resp, const char *data, size_t len)
{
	const struct http_transport *t = resp->transport;

	if (!resp->streaming && http_stream_begin(resp) != 0)
		return -1;
	if (resp->aborted)
		return -1;
	if (t->write_body(t->ctx, data, len) != 0 || t->flush(t->ctx) != 0) {
		resp->aborted = 1;
		return -1;
	}
	resp->bytes_sent += len;
	return 0;
}

int
http_client_gone(struct http_response *resp)
{
	const struct http_transport *t = resp->transport;

	if (resp->aborted)
		return 1;
	if (t != NULL && t->client_gone != NULL && t->client_gone(t->ctx)) {
		resp->aborted = 1;
		return 1;
	}
	return 0;
}

const char *
http_request_header(const struct http_request *req, const char *name)
{
	size_t i;

	for (i = 0; i < req->nheaders; i++)
		if (strcmp(req->headers[i].name, name) == 0)
			return req->headers[i].value;
	return NULL;
}

int
http_query_next(const char **q, struct http_query_param *p)
{
	const char *s = *q, *amp, *eq;

	while (*s == '&')
		s++;
	if (*s == '\0') {
		*q = s;
		return 0;
	}
	amp = strchr(s, '&');
	if (amp == NULL)
		amp = s + strlen(s);
	eq = memchr(s, '=', (size_t)(amp - s));
	p->name = s;
	p->name_len = eq != NULL ? (size_t)(eq - s) : (size_t)(amp - s);
	p->value = eq != NULL ? eq + 1 : amp;
	p->value_len = (size_t)(amp - p->value);
	*q = amp;
	return 1;
}

enum http_decode_result
http_query_decode(const char *s, size_t len, char *out, size_t outlen)
{
	size_t i, n = 0;
	int hi, lo;
	char ch;

	if (outlen == 0)
		return HTTP_DECODE_TOO_LONG;
	for (i = 0; i < len; i++) {
		ch = s[i];
		if (ch == '+') {
			ch = ' ';
		} else if (ch == '%') {
			if (len - i < 3 || (hi = hex_digit(s[i + 1])) < 0 ||
			    (lo = hex_digit(s[i + 2])) < 0 || (hi == 0 && lo == 0))
				return HTTP_DECODE_BAD;
			ch = (char)(hi << 4 | lo);
			i += 2;
		}
		if (n + 1 >= outlen)
			return HTTP_DECODE_TOO_LONG;
		out[n++] = ch;
	}
	out[n] = '\0';
	return HTTP_DECODE_OK;
}

const char *
http_status_text(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Content Too Large";
	case 415: return "Unsupported Media Type";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 507: return "Insufficient Storage";
	default: return "Unknown";
	}
}
