/* fuzz_sse: the SSE parser on any bytes, in one piece and byte by byte: same events, no crash. */
#include "config.h"

#include "sse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
record(void *ctx, const char *event, const char *data, size_t len)
{
	struct buf *log = ctx;

	buf_printf(log, "%zu:%s:", strlen(event), event);
	buf_append(log, data, len);
	buf_puts(log, "\n");
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sse_parser a, b;
	struct buf la = {0}, lb = {0};
	int ra, rb = 0;
	size_t i;

	sse_init(&a, record, &la);
	sse_init(&b, record, &lb);
	ra = sse_feed(&a, (const char *)data, size);
	for (i = 0; i < size && rb == 0; i++)
		rb = sse_feed(&b, (const char *)data + i, 1);
	if (ra == 0 && rb == 0 && (la.len != lb.len || (la.len && memcmp(la.data, lb.data, la.len))))
		abort();
	sse_free(&a);
	sse_free(&b);
	buf_free(&la);
	buf_free(&lb);
	return 0;
}
