/* buf: a growable byte buffer with a sticky out-of-memory flag. */
#ifndef VALERIE_BUF_H
#define VALERIE_BUF_H

#include <stdarg.h>
#include <stddef.h>

/*
 * A byte buffer. Plain data: zero-initialise it (or buf_init) and free it with
 * buf_free. After a failed allocation `oom` stays set, every later append is a
 * no-op, and the caller checks `oom` once at the end instead of after every call.
 * `data` is always NUL-terminated when `len > 0` and `oom` is clear.
 */
struct buf {
	char *data;
	size_t len;
	size_t cap;
	int oom;
};

void buf_init(struct buf *b);

/* Releases the memory and zeroes the buffer. Accepts NULL. */
void buf_free(struct buf *b);

/* Empties the buffer, keeping its memory unless it grew beyond `keep` bytes. */
void buf_reset(struct buf *b, size_t keep);

/* Ensures room for `extra` more bytes plus a NUL; returns 0, or -1 (and sets oom). */
int buf_reserve(struct buf *b, size_t extra);

void buf_append(struct buf *b, const void *data, size_t len);
void buf_puts(struct buf *b, const char *s);

/* printf-style append, bounded by available memory. */
void buf_printf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/*
 * Appends s[0..len) as a JSON string with its quotes: `"` and `\` escaped,
 * control characters as \n, \t... or \u00XX, every other byte as it is
 * (the caller hands valid UTF-8). For answers written without building a
 * json-c tree first.
 */
void buf_json_string(struct buf *b, const char *s, size_t len);

/*
 * Copies the string src into dst[0..size) as snprintf(dst, size, "%s", src)
 * does (size > 0: at most size - 1 bytes, NUL-terminated), without printf,
 * whose ~800 instructions a call added up on the completion path. Returns
 * strlen(src): size or more says it was cut.
 */
size_t buf_strcpy(char *dst, size_t size, const char *src);

/* Room buf_decimal needs: a sign, 20 digits of a 64-bit value and the NUL. */
#define BUF_DECIMAL_SIZE 24

/*
 * Writes v in decimal into d, zero-padded to at least `width` digits (at most
 * 20), with a leading '-' when negative, and NUL-terminated. The text ends at
 * the end of d; returns its first character (inside d, borrowed). Without
 * printf: the answer headers and the access line use it on every request.
 */
const char *buf_decimal(char d[BUF_DECIMAL_SIZE], long long v, int width);

#endif
