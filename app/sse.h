/* sse: an incremental Server-Sent Events parser for upstream streams (no I/O). */
#ifndef VALERIE_SSE_H
#define VALERIE_SSE_H

#include <stddef.h>

#include "buf.h"

#define SSE_LINE_MAX (1024 * 1024)   /* longest line accepted */
#define SSE_EVENT_MAX (4 * 1024 * 1024) /* largest event data accepted */
#define SSE_ID_MAX 255                  /* longest event id kept (a longer one: none) */

/*
 * Called once per dispatched event: `event` is the event name ("message" when
 * none was given), `data` the data lines joined with '\n' (NUL-terminated,
 * `len` bytes). Returns 0 to go on, non-zero to stop parsing (sse_feed then
 * returns that value).
 */
typedef int (*sse_event_fn)(void *ctx, const char *event, const char *data, size_t len);

/* Parser state: zero it (or sse_init), feed bytes, free with sse_free. */
struct sse_parser {
	struct buf line;
	struct buf data;
	char event[64];
	int has_data;
	int bom_pos;        /* BOM bytes seen at the start */
	int bom_done;
	int pending_cr;
	size_t line_max;    /* longest line accepted; 0: SSE_LINE_MAX */
	char id[SSE_ID_MAX + 1];      /* the last event ID buffer (an `id:` seen) */
	char last_id[SSE_ID_MAX + 1]; /* the id of the last event dispatched ("" none) */
	long retry_ms;      /* the last valid `retry:`, with has_retry */
	int has_retry;
	sse_event_fn fn;
	void *ctx;
};

void sse_init(struct sse_parser *p, sse_event_fn fn, void *ctx);
void sse_free(struct sse_parser *p);

/*
 * Feeds `len` bytes (any split: lines and events may span calls). Handles
 * CR, LF and CRLF line ends, comments, `event:`, `data:`, ignores unknown
 * fields, per the WHATWG rules; `id:` and `retry:` are only noted (last_id
 * as each event is dispatched, empty data or not; retry_ms), for a reader
 * that reconnects. Returns 0, the callback's
 * non-zero value, or -1 when a line or an event exceeds its cap or memory ran
 * out. An event not yet ended by a blank line stays pending.
 */
int sse_feed(struct sse_parser *p, const char *bytes, size_t len);

#endif
