/* memtransport: an in-memory transport for unit tests, recording what a client would receive. */
#ifndef VALERIE_MEMTRANSPORT_H
#define VALERIE_MEMTRANSPORT_H

#include "buf.h"
#include "http.h"

#include <stdio.h>
#include <string.h>

struct memtransport {
	struct http_transport ops;
	struct buf wire;   /* head and streamed body as sent */
	int flushes;
	int gone;          /* simulate a client that went away */
};

static int
mt_head(void *ctx, const struct http_response *resp)
{
	struct memtransport *m = ctx;
	size_t i;

	if (m->gone)
		return -1;
	buf_printf(&m->wire, "Status: %d\r\n", resp->status);
	for (i = 0; i < resp->nheaders; i++)
		buf_printf(&m->wire, "%s: %s\r\n", resp->headers[i].name, resp->headers[i].value);
	buf_puts(&m->wire, "\r\n");
	return 0;
}

static int
mt_body(void *ctx, const char *data, size_t len)
{
	struct memtransport *m = ctx;

	if (m->gone)
		return -1;
	buf_append(&m->wire, data, len);
	return 0;
}

static int
mt_flush(void *ctx)
{
	struct memtransport *m = ctx;

	m->flushes++;
	return m->gone ? -1 : 0;
}

static int
mt_gone(void *ctx)
{
	return ((struct memtransport *)ctx)->gone;
}

static inline void
memtransport_init(struct memtransport *m)
{
	memset(m, 0, sizeof(*m));
	m->ops.write_head = mt_head;
	m->ops.write_body = mt_body;
	m->ops.flush = mt_flush;
	m->ops.client_gone = mt_gone;
	m->ops.ctx = m;
}

#endif
