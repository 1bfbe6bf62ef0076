/* log: one JSON object a line on stderr, filtered by level. */
#include "config.h"

#include "buf.h"
#include "log.h"
#include "utf8.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_LVL_INFO;
static int log_fd = 2;

static const char *const level_names[] = {"debug", "info", "warning", "error"};

int
log_level_parse(const char *s)
{
	int i;

	if (s == NULL)
		return -1;
	if (strcasecmp(s, "warn") == 0)
		return LOG_LVL_WARNING;
	for (i = 0; i <= LOG_LVL_ERROR; i++)
		if (strcasecmp(s, level_names[i]) == 0)
			return i;
	return -1;
}

void
log_set_level(enum log_level level)
{
	min_level = level;
}

void
log_set_fd(int fd)
{
	log_fd = fd;
}

int
log_enabled(enum log_level level)
{
	return level >= min_level;
}

static void
write_all(const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(log_fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

void
log_emit(enum log_level level, const char *msg, struct json_object *fields)
{
	struct json_object *line;
	struct timespec ts;
	struct tm tm;
	char when[96], fallback[256];
	const char *text;
	size_t len;

	if (!log_enabled(level))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	    tm.tm_sec, ts.tv_nsec / 1000000);

	line = json_object_new_object();
	if (line == NULL)
		goto oom;
	json_object_object_add(line, "time", json_object_new_string(when));
	json_object_object_add(line, "level", json_object_new_string(level_names[level]));
	json_object_object_add(line, "msg", json_object_new_string(msg));
	json_object_object_add(line, "pid", json_object_new_int((int)getpid()));
	if (fields != NULL) {
		json_object_object_foreach(fields, key, val)
			json_object_object_add(line, key, json_object_get(val));
	}
	text = json_object_to_json_string_length(line,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	if (text == NULL) {
		json_object_put(line);
		goto oom;
	}
	/*
	 * NOTE: json-c copies bytes from 0x80 as they are, so a field holding
	 * ill-formed UTF-8 (an upstream's message cut at a byte count) would make
	 * a line no JSON parser accepts; such bytes can only sit inside strings,
	 * where \ufffd stands in for them.
	 */
	if (!utf8_valid(text, len)) {
		struct buf fixed;

		buf_init(&fixed);
		utf8_repair(&fixed, text, len, "\\ufffd");
		buf_puts(&fixed, "\n");
		if (!fixed.oom)
			write_all(fixed.data, fixed.len);
		buf_free(&fixed);
		json_object_put(line);
		if (fixed.oom)
			goto oom;
		return;
	}
	{
		/*
		 * NOTE: one write per line keeps lines whole across threads: a
		 * longer line is copied whole too (its text, then a separate
		 * newline, let another thread's line land in between).
		 */
		char stackline[2048], *whole = stackline;

		if (len + 1 > sizeof(stackline) && (whole = malloc(len + 1)) == NULL) {
			json_object_put(line);
			goto oom;
		}
		memcpy(whole, text, len);
		whole[len] = '\n';
		write_all(whole, len + 1);
		if (whole != stackline)
			free(whole);
	}
	json_object_put(line);
	return;
oom:
	len = (size_t)snprintf(fallback, sizeof(fallback),
	    "{\"time\":\"%s\",\"level\":\"error\",\"msg\":\"out of memory while logging\"}\n",
	    when);
	write_all(fallback, len < sizeof(fallback) ? len : sizeof(fallback) - 1);
}

/* ASCII a JSON string needs escaped: controls, '"', '\\' and DEL (bytes from 0x80 are looked at as UTF-8). */
#define LOG_FIELD_MAX 160   /* bytes of one string field of the access line, escapes included */

static const unsigned char json_escape[256] = {
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

/*
 * Appends `s` as a JSON string (quoted) at line+n, at most LOG_FIELD_MAX
 * bytes and bounded by room, cut between characters. Well-formed UTF-8 is
 * copied as it is; each byte that is not is written \ufffd; other bytes
 * below 0x20, '"', '\\' and DEL are escaped. Returns the new length.
 */
static size_t
json_str(char *line, size_t n, size_t room, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;
	size_t limit = room - n > LOG_FIELD_MAX ? n + LOG_FIELD_MAX : room, len;

	if (room - n < 3)
		return n;
	line[n++] = '"';
	/* NOTE: one pass writes at most 6 bytes; 8 keeps room for it and the closing quote. */
	while (*u && n + 8 < limit) {
		if (*u >= 0x80) {
			len = utf8_char((const char *)u, strnlen((const char *)u, 4));
			if (len > 0) {
				memcpy(line + n, u, len);
				n += len;
				u += len;
			} else {
				memcpy(line + n, "\\ufffd", 6);
				n += 6;
				u++;
			}
		} else if (!json_escape[*u]) {
			line[n++] = (char)*u++;
		} else if (*u == '"' || *u == '\\') {
			line[n++] = '\\';
			line[n++] = (char)*u++;
		} else {
			memcpy(line + n, "\\u00", 4);
			line[n + 4] = hex[*u >> 4];
			line[n + 5] = hex[*u & 15];
			n += 6;
			u++;
		}
	}
	line[n++] = '"';
	return n;
}

/* "2026-11-22T01:02:03." for the current second, formatted once a second per thread. */
static const char *
second_prefix(time_t sec)
{
	static __thread time_t cached = -1;
	static __thread char text[32];
	struct tm tm;

	if (sec != cached) {
		gmtime_r(&sec, &tm);
		snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.",
		    (tm.tm_year + 1900) % 10000, (tm.tm_mon + 1) % 100, tm.tm_mday % 100,
		    tm.tm_hour % 100, tm.tm_min % 100, tm.tm_sec % 100);
		cached = sec;
	}
	return text;
}

/* Appends `len` bytes of `s` (no escaping) at line+n, bounded by room. */
static size_t
put(char *line, size_t n, size_t room, const char *s, size_t len)
{
	if (len > room - n)
		len = room - n;
	memcpy(line + n, s, len);
	return n + len;
}

/* put() of a string literal: its length is known at compile time. */
#define LIT(line, n, room, s) put((line), (n), (room), (s), sizeof(s) - 1)

/* Appends a decimal number of at least `width` digits at line+n, bounded by room. */
static size_t
num(char *line, size_t n, size_t room, unsigned long long v, int width)
{
	char d[BUF_DECIMAL_SIZE];
	const char *s = buf_decimal(d, v > LLONG_MAX ? LLONG_MAX : (long long)v, width);
	size_t len = (size_t)(d + BUF_DECIMAL_SIZE - 1 - s);

	/* NOTE: all digits or none: a number cut short would still parse, wrongly. */
	return len > room - n ? n : put(line, n, room, s, len);
}

void
log_access(enum log_level level, const struct log_access_fields *f)
{
	static int pid;
	struct timespec ts;
	char line[1024];
	size_t n = 0, room = sizeof(line) - 64;
	unsigned long long us;

	if (!log_enabled(level))
		return;
	if (pid == 0)
		pid = (int)getpid();
	clock_gettime(CLOCK_REALTIME, &ts);
	/*
	 * NOTE: assembled by hand, no printf, literals copied with their
	 * compile-time length: this line is written for every request.
	 */
	n = LIT(line, n, room, "{\"time\":\"");
	n = put(line, n, room, second_prefix(ts.tv_sec), 20);
	n = num(line, n, room, (unsigned long long)(ts.tv_nsec / 1000000), 3);
	if (level == LOG_LVL_INFO)
		n = LIT(line, n, room, "Z\",\"level\":\"info\",\"msg\":\"request\",\"pid\":");
	else if (level == LOG_LVL_ERROR)
		n = LIT(line, n, room, "Z\",\"level\":\"error\",\"msg\":\"request\",\"pid\":");
	else {
		n = LIT(line, n, room, "Z\",\"level\":\"");
		n = put(line, n, room, level_names[level], strlen(level_names[level]));
		n = LIT(line, n, room, "\",\"msg\":\"request\",\"pid\":");
	}
	n = num(line, n, room, (unsigned long long)pid, 1);
	n = LIT(line, n, room, ",\"request_id\":");
	n = json_str(line, n, room, f->request_id);
	n = LIT(line, n, room, ",\"method\":");
	n = json_str(line, n, room, f->method);
	n = LIT(line, n, room, ",\"route\":");
	n = json_str(line, n, room, f->route);
	n = LIT(line, n, room, ",\"status\":");
	n = num(line, n, room, (unsigned long long)(f->status > 0 ? f->status : 0), 1);
	us = f->duration_ms > 0 ? (unsigned long long)(f->duration_ms * 1000.0 + 0.5) : 0;
	n = LIT(line, n, room, ",\"duration_ms\":");
	n = num(line, n, room, us / 1000, 1);
	n = LIT(line, n, room, ".");
	n = num(line, n, room, us % 1000, 3);
	n = LIT(line, n, room, ",\"remote_addr\":");
	n = json_str(line, n, room, f->remote_addr);
	n = LIT(line, n, room, ",\"bytes\":");
	n = num(line, n, room, (unsigned long long)f->bytes, 1);
	room = sizeof(line);
	if (f->client_gone)
		n = LIT(line, n, room, ",\"client_gone\":true");
	n = LIT(line, n, room, "}\n");
	write_all(line, n);
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (!log_enabled(level))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_emit(level, msg, NULL);
}
