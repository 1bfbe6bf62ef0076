/* log: one JSON object a line on stderr, filtered by level. */
#include "config.h"

#include "log.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
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
	{
		/* NOTE: one write per line keeps lines whole across threads. */
		char stackline[2048];
		if (len + 1 <= sizeof(stackline)) {
			memcpy(stackline, text, len);
			stackline[len] = '\n';
			write_all(stackline, len + 1);
		} else {
			write_all(text, len);
			write_all("\n", 1);
		}
	}
	json_object_put(line);
	return;
oom:
	len = (size_t)snprintf(fallback, sizeof(fallback),
	    "{\"time\":\"%s\",\"level\":\"error\",\"msg\":\"out of memory while logging\"}\n",
	    when);
	write_all(fallback, len < sizeof(fallback) ? len : sizeof(fallback) - 1);
}

/* Appends `s` as a JSON string (quoted); bytes outside printable ASCII are \u00XX. */
static size_t
json_str(char *out, size_t room, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;

	if (room < 3)
		return 0;
	out[n++] = '"';
	for (; *s && n + 8 < room; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			out[n++] = '\\';
			out[n++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			memcpy(out + n, "\\u00", 4);
			out[n + 4] = hex[c >> 4];
			out[n + 5] = hex[c & 15];
			n += 6;
		} else {
			out[n++] = (char)c;
		}
	}
	out[n++] = '"';
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

void
log_access(enum log_level level, const struct log_access_fields *f)
{
	static int pid;
	struct timespec ts;
	char line[1024];
	size_t n, room = sizeof(line) - 64;

	if (!log_enabled(level))
		return;
	if (pid == 0)
		pid = (int)getpid();
	clock_gettime(CLOCK_REALTIME, &ts);
	/* NOTE: hand-formatted: this line is written for every request (bench/README.md). */
	n = (size_t)snprintf(line, room, "{\"time\":\"%s%03ldZ\",\"level\":\"%s\",\"msg\":\"request\","
	    "\"pid\":%d,\"request_id\":", second_prefix(ts.tv_sec), ts.tv_nsec / 1000000,
	    level_names[level], pid);
	n += json_str(line + n, room - n, f->request_id);
	memcpy(line + n, ",\"method\":", 10);
	n += 10;
	n += json_str(line + n, room - n, f->method);
	memcpy(line + n, ",\"route\":", 9);
	n += 9;
	n += json_str(line + n, room - n, f->route);
	n += (size_t)snprintf(line + n, room - n, ",\"status\":%d,\"duration_ms\":%.3f,"
	    "\"remote_addr\":", f->status, f->duration_ms);
	n += json_str(line + n, room - n, f->remote_addr);
	n += (size_t)snprintf(line + n, sizeof(line) - n, ",\"bytes\":%zu%s}\n", f->bytes,
	    f->client_gone ? ",\"client_gone\":true" : "");
	write_all(line, n < sizeof(line) ? n : sizeof(line) - 1);
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
