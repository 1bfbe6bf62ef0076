/* utf8: validation, counting and safe truncation of UTF-8 text. */
#ifndef VALERIE_UTF8_H
#define VALERIE_UTF8_H

#include <stddef.h>

struct buf;

/* The length (1 to 4) of the well-formed character at the start of s[0..len); 0 if ill-formed or empty. */
size_t utf8_char(const char *s, size_t len);

/* Whether s[0..len) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
int utf8_valid(const char *s, size_t len);

/*
 * Appends s[0..len) to `out`, each byte that is not part of a well-formed
 * character replaced by `replacement` (e.g. "\\ufffd" inside JSON text).
 */
void utf8_repair(struct buf *out, const char *s, size_t len, const char *replacement);

/*
 * Replaces, in place, each byte of the NUL-terminated `s` that is not part of
 * a well-formed character with '?': for texts cut at a byte count (an
 * upstream's error message in a fixed buffer) before they go out as JSON.
 */
void utf8_scrub(char *s);

/* Number of code points in well-formed UTF-8. */
size_t utf8_count(const char *s, size_t len);

/* The longest prefix of at most `max` bytes that ends on a character boundary. */
size_t utf8_prefix(const char *s, size_t len, size_t max);

#endif
