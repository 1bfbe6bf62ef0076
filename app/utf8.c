/* utf8: validation, counting and safe truncation of UTF-8 text. */
#include "config.h"

#include "utf8.h"

#include "buf.h"

#include <string.h>

/* The length (1 to 4) of the well-formed character at s, before e; 0 if ill-formed. */
static size_t
seq_len(const unsigned char *s, const unsigned char *e)
{
	unsigned int c = *s, min;
	int n, i;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 1;
		min = 0x80;
		c &= 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 2;
		min = 0x800;
		c &= 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 3;
		min = 0x10000;
		c &= 0x07;
	} else {
		return 0;
	}
	if (e - s <= n)
		return 0;
	for (i = 1; i <= n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	return (size_t)n + 1;
}

size_t
utf8_char(const char *s, size_t len)
{
	return len == 0 ? 0 : seq_len((const unsigned char *)s, (const unsigned char *)s + len);
}

int
utf8_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str, *e = s + len;
	size_t n;

	for (; s < e; s += n) {
		/* NOTE: ASCII, most of any text here, without a call per byte. */
		if (*s < 0x80) {
			n = 1;
			continue;
		}
		if ((n = seq_len(s, e)) == 0)
			return 0;
	}
	return 1;
}

void
utf8_repair(struct buf *out, const char *str, size_t len, const char *replacement)
{
	const unsigned char *s = (const unsigned char *)str, *e = s + len, *run = s;
	size_t n;

	while (s < e) {
		if ((n = seq_len(s, e)) > 0) {
			s += n;
			continue;
		}
		buf_append(out, run, (size_t)(s - run));
		buf_puts(out, replacement);
		run = ++s;
	}
	buf_append(out, run, (size_t)(s - run));
}

void
utf8_scrub(char *str)
{
	unsigned char *s = (unsigned char *)str, *e = s + strlen(str);
	size_t n;

	while (s < e) {
		if ((n = seq_len(s, e)) > 0)
			s += n;
		else
			*s++ = '?';
	}
}

size_t
utf8_count(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i, n = 0;

	for (i = 0; i < len; i++)
		if ((s[i] & 0xc0) != 0x80)
			n++;
	return n;
}

size_t
utf8_prefix(const char *str, size_t len, size_t max)
{
	const unsigned char *s = (const unsigned char *)str;

	if (len <= max)
		return len;
	while (max > 0 && (s[max] & 0xc0) == 0x80)
		max--;
	return max;
}
