/* utf8: validation, counting and safe truncation of UTF-8 text. */
#ifndef VALERIE_UTF8_H
#define VALERIE_UTF8_H

#include <stddef.h>

/* Whether s[0..len) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
int utf8_valid(const char *s, size_t len);

/* Number of code points in well-formed UTF-8. */
size_t utf8_count(const char *s, size_t len);

/* The longest prefix of at most `max` bytes that ends on a character boundary. */
size_t utf8_prefix(const char *s, size_t len, size_t max);

#endif
