/*
 * test_log: every line log_emit and log_access write is one valid JSON object
 * in valid UTF-8, whatever its fields hold; log_access keeps UTF-8 text as it
 * is (not each byte as a Latin-1 character) and replaces what is not UTF-8;
 * a line of any length goes out in one write.
 */
#include "config.h"

#include "check.h"
#include "log.h"
#include "utf8.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Logs `msg` with the field "error" = value (len bytes); returns the line written (caller frees). */
static char *
emit(const char *msg, const char *value, size_t len)
{
	struct json_object *f = json_object_new_object();
	char *line = calloc(1, 65536);
	int fds[2];
	ssize_t n;

	if (line == NULL || pipe(fds) != 0)
		abort();
	json_object_object_add(f, "error", json_object_new_string_len(value, (int)len));
	log_set_fd(fds[1]);
	log_emit(LOG_LVL_WARNING, msg, f);
	log_set_fd(2);
	close(fds[1]);
	n = read(fds[0], line, 65535);
	close(fds[0]);
	json_object_put(f);
	line[n > 0 ? n : 0] = '\0';
	return line;
}

/* Whether `line` is one JSON object in valid UTF-8, ending in a newline; its "error" into out. */
static int
valid_line(const char *line, char *out, size_t outlen)
{
	size_t len = strlen(line);
	struct json_object *doc, *v;
	int ok;

	if (len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len - 1) != NULL ||
	    !utf8_valid(line, len))
		return 0;
	doc = json_tokener_parse(line);
	ok = doc != NULL && json_object_is_type(doc, json_type_object) &&
	    json_object_object_get_ex(doc, "error", &v);
	if (ok)
		snprintf(out, outlen, "%s", json_object_get_string(v));
	json_object_put(doc);
	return ok;
}

/* The access line of a request whose id and address are `id` and `addr`; caller frees. */
static char *
access_line(const char *id, const char *addr)
{
	struct log_access_fields f;
	char *line = calloc(1, 4096);
	int fds[2];
	ssize_t n;

	if (line == NULL || pipe(fds) != 0)
		abort();
	memset(&f, 0, sizeof(f));
	f.request_id = id;
	f.method = "GET";
	f.route = "/health";
	f.status = 200;
	f.remote_addr = addr;
	log_set_fd(fds[1]);
	log_access(LOG_LVL_INFO, &f);
	log_set_fd(2);
	close(fds[1]);
	n = read(fds[0], line, 4095);
	close(fds[0]);
	line[n > 0 ? n : 0] = '\0';
	return line;
}

/* The access line's string field `key` into out; 0 unless the line is one valid JSON object. */
static int
access_field(const char *line, const char *key, char *out, size_t outlen)
{
	size_t len = strlen(line);
	struct json_object *doc, *v;
	int ok;

	if (len == 0 || line[len - 1] != '\n' || !utf8_valid(line, len))
		return 0;
	doc = json_tokener_parse(line);
	ok = doc != NULL && json_object_object_get_ex(doc, key, &v) &&
	    json_object_is_type(v, json_type_string);
	if (ok)
		snprintf(out, outlen, "%s", json_object_get_string(v));
	json_object_put(doc);
	return ok;
}

static void
test_access_utf8(void)
{
	char got[512], *line, longid[1200];

	/* UTF-8 passes through: "é", "€", an emoji; quotes, controls and DEL escaped. */
	line = access_line("caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80 \"q\\\x01\x7f", "::1");
	CHECK(access_field(line, "request_id", got, sizeof(got)));
	CHECK_STR(got, "caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80 \"q\\\x01\x7f");
	CHECK(strstr(line, "caf\xc3\xa9-") != NULL);
	free(line);

	/* Not UTF-8 (Latin-1, a cut character, a lone continuation, an overlong): U+FFFD each. */
	line = access_line("a\xe9" "b\xe2\x82" "c\x80" "d\xc0\xaf", "x");
	CHECK(access_field(line, "request_id", got, sizeof(got)));
	CHECK_STR(got, "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd" "c\xef\xbf\xbd"
	    "d\xef\xbf\xbd\xef\xbf\xbd");
	free(line);

	/* A field too long for the line is cut on a character boundary, the line still JSON. */
	memset(longid, 0, sizeof(longid));
	for (size_t i = 0; i + 2 < sizeof(longid); i += 2)
		memcpy(longid + i, "\xc3\xa9", 2);
	line = access_line(longid, "::1");
	CHECK(access_field(line, "remote_addr", got, sizeof(got)));
	CHECK(access_field(line, "request_id", got, sizeof(got)));
	free(line);
}

/*
 * A line longer than log_emit's stack buffer (a long upstream error, a tool's
 * message) still goes out in one write: two writes (the text, then its
 * newline) let another thread's line land between them, and the shipper then
 * reads "{...}{...}" as one broken line. A SOCK_SEQPACKET socket keeps each
 * write a message of its own, so the first one read must be the whole line.
 */
static void
test_long_line_one_write(void)
{
	struct json_object *f = json_object_new_object(), *doc;
	char value[5000], *msg = malloc(65536);
	int sv[2];
	ssize_t n;

	memset(value, 'x', sizeof(value));
	if (f == NULL || msg == NULL || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0)
		abort();
	json_object_object_add(f, "error", json_object_new_string_len(value, (int)sizeof(value)));
	log_set_fd(sv[0]);
	log_emit(LOG_LVL_WARNING, "long", f);
	log_set_fd(2);
	n = recv(sv[1], msg, 65535, MSG_DONTWAIT);
	CHECK(n > (ssize_t)sizeof(value) && msg[n - 1] == '\n');
	if (n > 0) {
		msg[n] = '\0';
		doc = json_tokener_parse(msg);
		CHECK(doc != NULL);
		json_object_put(doc);
	}
	close(sv[0]);
	close(sv[1]);
	json_object_put(f);
	free(msg);
}

int
main(void)
{
	char got[256], *line;

	log_set_level(LOG_LVL_DEBUG);

	line = emit("plain", "caf\xc3\xa9 \"quoted\" \n\t\x01", 19);
	CHECK(valid_line(line, got, sizeof(got)));
	CHECK_STR(got, "caf\xc3\xa9 \"quoted\" \n\t\x01");
	free(line);

	/* An upstream's message cut at a byte count, in the middle of an "é". */
	line = emit("cut", "Error de autenticaci\xc3", 21);
	CHECK(valid_line(line, got, sizeof(got)));
	CHECK_STR(got, "Error de autenticaci\xef\xbf\xbd");
	free(line);

	/* Bytes that are no UTF-8 at all (Latin-1, a lone continuation, an overlong). */
	line = emit("latin1", "a\xe9" "b\x80" "c\xc0\xaf", 7);
	CHECK(valid_line(line, got, sizeof(got)));
	CHECK_STR(got, "a\xef\xbf\xbd" "b\xef\xbf\xbd" "c\xef\xbf\xbd\xef\xbf\xbd");
	free(line);

	test_access_utf8();
	test_long_line_one_write();

	return check_done("test_log");
}
