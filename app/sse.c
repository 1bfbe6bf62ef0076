/* sse: an incremental Server-Sent Events parser for upstream streams (no I/O). */
#include "config.h"

#include "sse.h"

#include <string.h>

void
sse_init(struct sse_parser *p, sse_event_fn fn, void *ctx)
{
	memset(p, 0, sizeof(*p));
	p->fn = fn;
	p->ctx = ctx;
}

void
sse_free(struct sse_parser *p)
{
	if (p == NULL)
		return;
	buf_free(&p->line);
	buf_free(&p->data);
}

static int
dispatch(struct sse_parser *p)
{
	int rc = 0;

	/* WHATWG: the last event id is set at each dispatch, even of an event without data. */
	memcpy(p->last_id, p->id, strlen(p->id) + 1);
	if (p->has_data) {
		if (p->data.oom)
			return -1;
		rc = p->fn(p->ctx, p->event[0] ? p->event : "message",
		    p->data.data ? p->data.data : "", p->data.len);
	}
	buf_reset(&p->data, 65536);
	p->event[0] = '\0';
	p->has_data = 0;
	return rc;
}

/* A `retry:` value: ASCII digits only, else ignored (WHATWG); capped at a day. */
static void
retry(struct sse_parser *p, const char *v, size_t n)
{
	long ms = 0;
	size_t i;

	if (n == 0)
		return;
	for (i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return;
		if (ms < 86400000L)
			ms = ms * 10 + (v[i] - '0');
	}
	p->retry_ms = ms < 86400000L ? ms : 86400000L;
	p->has_retry = 1;
}

/* Handles one complete line (without its end). */
static int
line(struct sse_parser *p, const char *s, size_t n)
{
	const char *colon, *value;
	size_t flen, vlen;

	if (n == 0)
		return dispatch(p);
	if (s[0] == ':')
		return 0;
	colon = memchr(s, ':', n);
	flen = colon ? (size_t)(colon - s) : n;
	value = colon ? colon + 1 : s + n;
	vlen = colon ? n - flen - 1 : 0;
	if (vlen > 0 && *value == ' ') {
		value++;
		vlen--;
	}
	if (flen == 4 && memcmp(s, "data", 4) == 0) {
		if (p->has_data)
			buf_append(&p->data, "\n", 1);
		buf_append(&p->data, value, vlen);
		p->has_data = 1;
		if (p->data.oom || p->data.len > SSE_EVENT_MAX)
			return -1;
	} else if (flen == 2 && memcmp(s, "id", 2) == 0) {
		/* NOTE: an id too long to keep whole is none: a cut one would name another event. */
		if (memchr(value, '\0', vlen) == NULL) {
			if (vlen > SSE_ID_MAX)
				vlen = 0;
			memcpy(p->id, value, vlen);
			p->id[vlen] = '\0';
		}
	} else if (flen == 5 && memcmp(s, "retry", 5) == 0) {
		retry(p, value, vlen);
	} else if (flen == 5 && memcmp(s, "event", 5) == 0) {
		if (vlen >= sizeof(p->event))
			vlen = sizeof(p->event) - 1;
		memcpy(p->event, value, vlen);
		p->event[vlen] = '\0';
	}
	return 0;
}

int
sse_feed(struct sse_parser *p, const char *bytes, size_t len)
{
	static const unsigned char bom[3] = {0xef, 0xbb, 0xbf};
	size_t i = 0, start;
	int rc;

	/* A UTF-8 BOM may open the stream, split across feeds like anything else. */
	while (!p->bom_done && i < len) {
		if ((unsigned char)bytes[i] == bom[p->bom_pos]) {
			i++;
			if (++p->bom_pos == 3)
				p->bom_done = 1;
		} else {
			/* Not a BOM after all: the bytes taken for one were data. */
			buf_append(&p->line, bom, p->bom_pos);
			p->bom_done = 1;
		}
	}
	if (p->pending_cr && i < len) {
		p->pending_cr = 0;
		if (bytes[i] == '\n')
			i++;
	}
	while (i < len) {
		start = i;
		while (i < len && bytes[i] != '\n' && bytes[i] != '\r')
			i++;
		if (i == len) {
			buf_append(&p->line, bytes + start, len - start);
			if (p->line.oom || p->line.len > (p->line_max > 0 ? p->line_max :
			    SSE_LINE_MAX))
				return -1;
			break;
		}
		if (p->line.len > 0) {
			buf_append(&p->line, bytes + start, i - start);
			if (p->line.oom)
				return -1;
			rc = line(p, p->line.data, p->line.len);
			buf_reset(&p->line, 65536);
		} else {
			rc = line(p, bytes + start, i - start);
		}
		if (bytes[i] == '\r') {
			if (i + 1 < len) {
				if (bytes[i + 1] == '\n')
					i++;
			} else {
				p->pending_cr = 1;
			}
		}
		i++;
		if (rc != 0)
			return rc;
	}
	return 0;
}
