/* utf8: validation, counting and safe truncation of UTF-8 text. */
#include "config.h"

#include "utf8.h"

int
utf8_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str, *e = s + len;
	unsigned int c, min;
	int n, i;

	while (s < e) {
		c = *s;
		if (c < 0x80) {
			s++;
			continue;
		}
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
		s += n + 1;
	}
	return 1;
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
