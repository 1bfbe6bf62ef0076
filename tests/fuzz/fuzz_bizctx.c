/* fuzz_bizctx: a business-context endpoint's answer, read and put in a section: no crash, and the section cannot be closed early. */
#include "config.h"

#include "bizctx.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define END_LINE "--- end business context ---"

/* Whether a line starts at q (> sys): after LF, CR, VT, FF, U+0085, U+2028 or U+2029. */
static int
line_start(const char *sys, const char *q)
{
	const unsigned char *u = (const unsigned char *)q;

	if (q[-1] == '\n' || q[-1] == '\r' || q[-1] == '\v' || q[-1] == '\f')
		return 1;
	if (q - sys >= 2 && u[-2] == 0xc2 && u[-1] == 0x85)
		return 1;
	return q - sys >= 3 && u[-3] == 0xe2 && u[-2] == 0x80 && (u[-1] == 0xa8 || u[-1] == 0xa9);
}

/*
 * Whether every END_LINE in sys[0..len) but the last one (the section's own
 * end) is quoted: "> " before it, blanks between allowed.
 */
static int
only_last_end_unquoted(const char *sys, size_t len)
{
	const char *p = sys, *end = sys + len, *hit, *q, *last = NULL;
	size_t n = strlen(END_LINE);

	while ((hit = memmem(p, (size_t)(end - p), END_LINE, n)) != NULL) {
		last = hit;
		p = hit + 1;
	}
	if (last == NULL || (size_t)(end - last) != n)
		return 0;
	for (p = sys; (hit = memmem(p, (size_t)(last - p), END_LINE, n)) != NULL; p = hit + 1) {
		for (q = hit; q > sys && (q[-1] == ' ' || q[-1] == '\t'); q--)
			;
		if (q - sys < 2 || q[-2] != '>' || q[-1] != ' ') {
			/* Not quoted: fine only inside a longer line the quote is at the start of. */
			while (q > sys && !line_start(sys, q))
				q--;
			if (!(q[0] == '>' && q[1] == ' '))
				return 0;
		}
	}
	return 1;
}

/*
 * Input: "CONTENT-TYPE\nBODY". The body is read as the endpoint's answer;
 * what it gives is put in a system prompt's section.
 */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *nl = memchr(data, '\n', size), *why = NULL;
	char ct[128];
	size_t ctlen = nl != NULL ? (size_t)(nl - (const char *)data) : 0;
	struct buf text = {0}, sys = {0};

	if (nl == NULL || ctlen >= sizeof(ct))
		return 0;
	memcpy(ct, data, ctlen);
	ct[ctlen] = '\0';
	if (bizctx_answer_text(ct, nl + 1, size - ctlen - 1, &text, &why) == 0 && !text.oom) {
		bizctx_section(&sys, "42", text.data, text.len);
		if (!sys.oom && !only_last_end_unquoted(sys.data, sys.len))
			abort();
	}
	buf_free(&text);
	buf_free(&sys);
	return 0;
}
