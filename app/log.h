/* log: one JSON object a line on stderr, filtered by level. */
#ifndef VALERIE_LOG_H
#define VALERIE_LOG_H

#include <stddef.h>

struct json_object;

enum log_level {
	LOG_LVL_DEBUG = 0,
	LOG_LVL_INFO,
	LOG_LVL_WARNING,
	LOG_LVL_ERROR
};

/* Parses "debug", "info", "warning"/"warn", "error" (any case); -1 if unknown. */
int log_level_parse(const char *s);

/* Sets the lowest level written (process-wide; call before threads start). */
void log_set_level(enum log_level level);

/* Sends lines to `fd` instead of stderr (tests). */
void log_set_fd(int fd);

int log_enabled(enum log_level level);

/*
 * Writes {"time","level","msg","pid", ...fields} as one line with one write(2),
 * so lines of concurrent threads and processes never interleave. `fields` is
 * borrowed and may be NULL. Never logs secrets: callers pass none.
 */
void log_emit(enum log_level level, const char *msg, struct json_object *fields);

/* The fields of the per-request access line. Borrowed strings, never NULL. */
struct log_access_fields {
	const char *request_id;
	const char *method;
	const char *route;
	int status;
	double duration_ms;
	const char *remote_addr;
	size_t bytes;
	int client_gone;
};

/*
 * Writes the access line {"time","level","msg":"request","pid","request_id",
 * "method","route","status","duration_ms","remote_addr","bytes"
 * [,"client_gone"]} with one write(2), formatted without allocating.
 */
void log_access(enum log_level level, const struct log_access_fields *f);

/* log_emit with a formatted message and no fields. */
void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
