/* test_sse: the upstream SSE parser: any split of the bytes gives the same events. */
#include "config.h"

#include "check.h"
#include "sse.h"

struct seen {
	struct buf log;
	int stop_at;
	int n;
};

static int
on_event(void *ctx, const char *event, const char *data, size_t len)
{
	struct seen *s = ctx;

	buf_printf(&s->log, "[%s|%.*s]", event, (int)len, data);
	s->n++;
	return s->stop_at && s->n == s->stop_at ? 7 : 0;
}

/* Feeds `text` in pieces of `step` bytes and returns the event log (static copy). */
static const char *
parse(const char *text, size_t step)
{
	static char out[4096];
	struct sse_parser p;
	struct seen s = {{0}, 0, 0};
	size_t i, len = strlen(text), n;

	sse_init(&p, on_event, &s);
	for (i = 0; i < len; i += n) {
		n = len - i < step ? len - i : step;
		if (sse_feed(&p, text + i, n) != 0)
			break;
	}
	snprintf(out, sizeof(out), "%s", s.log.data ? s.log.data : "");
	buf_free(&s.log);
	sse_free(&p);
	return out;
}

int
main(void)
{
	const char *stream =
	    "\xef\xbb\xbf: a comment\n"
	    "data: {\"a\":1}\n\n"
	    "event: message_start\r\ndata: x\r\ndata: y\r\n\r\n"
	    "id: 3\rretry: 10\rdata:no-space\r\r"
	    "event: ping\nunknown: field\ndata\n\n"
	    "data: [DONE]\n\n"
	    "data: pending without blank line";
	const char *want = "[message|{\"a\":1}][message_start|x\ny][message|no-space]"
	    "[ping|][message|[DONE]]";
	size_t step;
	struct sse_parser p;
	struct seen s = {{0}, 2, 0};

	for (step = 1; step <= strlen(stream); step++) {
		const char *got = parse(stream, step);

		if (strcmp(got, want) != 0) {
			fprintf(stderr, "step %zu: %s\n", step, got);
			CHECK_STR(got, want);
			break;
		}
	}
	/* A BOM split across feeds is still dropped; a false start of one is data. */
	CHECK_STR(parse("\xef\xbb\xbf" "data:m\r\n\r\n", 1), "[message|m]");
	CHECK_STR(parse("\xef\xbb" "data: x\n\n", 1), "");
	/* An event without data is not dispatched; the name resets after each event. */
	CHECK_STR(parse("event: x\n\ndata: 1\n\n", 3), "[message|1]");
	/* The callback's non-zero value stops parsing and is returned. */
	sse_init(&p, on_event, &s);
	CHECK_INT(sse_feed(&p, "data: 1\n\ndata: 2\n\ndata: 3\n\n", 27), 7);
	CHECK_INT(s.n, 2);
	sse_free(&p);
	buf_free(&s.log);
	return check_done("test_sse");
}
