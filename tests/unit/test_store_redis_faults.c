/*
 * test_store_redis_faults: the Redis store under faults, driven by
 * tests/integration/test_store_redis.py, which starts, stops, pauses and restarts
 * redis-server around it. Not a test on its own (not in TESTS).
 *
 *   test_store_redis_faults open   opens the store the environment names and makes a
 *                                  connection (which must not touch the network); prints
 *                                  "open ok <ms>" or "open failed: <err>"
 *   test_store_redis_faults repl   one store and ONE connection for the whole run; reads
 *                                  commands on stdin, one a line, and answers each with
 *                                  one line "<status>\t<ms>\t<result>\t<error>"
 *
 * Commands: ping | append SID IDEM|- BYTES | load SID MAX_TURNS MAX_CHARS |
 * get SID N | idem SID KEY | delete SID | quit.
 * NOTE: built with app/store_redis.c compiled in and a small STORE_REDIS_REPLY_MAX
 * (Makefile.am), so that the reply cap can be reached with small data. SIGPIPE is
 * left at its default: a store that wrote to a dead socket unguarded would kill it.
 */
#include "config.h"

#include "buf.h"
#include "conf.h"
#include "store.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LINE_MAX_BYTES 1024
#define APPEND_MAX_BYTES (64 * 1024 * 1024)

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static long long
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *
env_get(const char *name, void *ctx)
{
	(void)ctx;
	return getenv(name);
}

/* Strict non-negative decimal; -1 when it is not one. */
static long long
number(const char *s)
{
	char *end;
	long long v;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	v = strtoll(s, &end, 10);
	return *end == '\0' ? v : -1;
}

static int
turn_of(struct json_object *turns, size_t i)
{
	struct json_object *n;

	return json_object_object_get_ex(json_object_array_get_idx(turns, i), "turn", &n) ?
	    json_object_get_int(n) : -1;
}

/* Appends a description of a loaded window: its turn numbers, in order. */
static void
describe_load(const struct store_session_info *info, const struct buf *b, struct buf *out)
{
	struct json_object *turns = b->len ? json_tokener_parse(b->data) : NULL;
	size_t i, n;

	n = turns != NULL && json_object_is_type(turns, json_type_array) ?
	    json_object_array_length(turns) : 0;
	buf_printf(out, "turns=%d owner=%s created=%lld updated=%lld bytes=%zu json=%s list=",
	    info->turns, info->owner, info->created_ms, info->updated_ms, b->len,
	    turns != NULL ? "ok" : "bad");
	for (i = 0; i < n; i++)
		buf_printf(out, "%s%d", i ? "," : "", turn_of(turns, i));
	json_object_put(turns);
}

/* Runs one command line; writes the answer line to stdout. */
static void
run(struct store_conn *c, char *line)
{
	char *argv[5] = {0}, *save = NULL, *tok;
	struct store_session_info info;
	struct buf b = {0}, res = {0};
	enum store_status s = STORE_OK;
	double t0;
	int argc = 0, turn = 0;
	long long n, m;

	for (tok = strtok_r(line, " \t\r\n", &save); tok != NULL && argc < 5;
	    tok = strtok_r(NULL, " \t\r\n", &save))
		argv[argc++] = tok;
	if (argc == 0)
		return;
	memset(&info, 0, sizeof(info));
	t0 = now_ms();
	if (strcmp(argv[0], "ping") == 0) {
		s = store_ping(c);
	} else if (strcmp(argv[0], "append") == 0 && argc == 4 &&
	    (n = number(argv[3])) >= 0 && n <= APPEND_MAX_BYTES) {
		struct buf msg = {0};

		buf_puts(&msg, "[{\"role\":\"user\",\"content\":\"");
		while (n-- > 0)
			buf_append(&msg, "x", 1);
		buf_puts(&msg, "\"}]");
		if (msg.oom) {
			printf("usage\t0\t-\tout of memory\n");
			buf_free(&msg);
			return;
		}
		t0 = now_ms();
		s = store_append(c, argv[1], "owner-1", strcmp(argv[2], "-") ? argv[2] : NULL,
		    msg.data, wall_ms(), &turn);
		buf_free(&msg);
		if (s == STORE_OK)
			buf_printf(&res, "turn=%d", turn);
	} else if (strcmp(argv[0], "load") == 0 && argc == 4 && (n = number(argv[2])) >= 0 &&
	    (m = number(argv[3])) >= 0) {
		s = store_load(c, argv[1], (int)n, (size_t)m, &info, &b);
		if (s == STORE_OK)
			describe_load(&info, &b, &res);
	} else if (strcmp(argv[0], "get") == 0 && argc == 3 && (n = number(argv[2])) >= 0) {
		s = store_get_turn(c, argv[1], (int)n, &b);
		if (s == STORE_OK)
			buf_printf(&res, "bytes=%zu head=%.24s", b.len, b.data);
	} else if (strcmp(argv[0], "idem") == 0 && argc == 3) {
		s = store_idem_find(c, argv[1], argv[2], &turn);
		if (s == STORE_OK)
			buf_printf(&res, "turn=%d", turn);
	} else if (strcmp(argv[0], "delete") == 0 && argc == 2) {
		s = store_delete(c, argv[1]);
	} else {
		printf("usage\t0\t-\tunknown command or arguments\n");
		return;
	}
	printf("%s\t%.1f\t%s\t%s\n", store_status_text(s), now_ms() - t0,
	    res.len && !res.oom ? res.data : "-", store_conn_error(c));
	buf_free(&b);
	buf_free(&res);
}

int
main(int argc, char **argv)
{
	struct conf conf;
	struct store *st = NULL;
	struct store_conn *c = NULL;
	char err[512], line[LINE_MAX_BYTES];
	double t0;
	int rc = 1;

	if (argc != 2 || (strcmp(argv[1], "open") != 0 && strcmp(argv[1], "repl") != 0)) {
		fprintf(stderr, "usage: %s open|repl\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (conf_load(&conf, env_get, NULL, err, sizeof(err)) != CONF_OK) {
		printf("open failed: %s\n", err);
		return strcmp(argv[1], "open") == 0 ? 0 : 1;
	}
	t0 = now_ms();
	st = store_open(&conf, err, sizeof(err));
	if (st == NULL) {
		printf("open failed: %s\n", err);
		return strcmp(argv[1], "open") == 0 ? 0 : 1;
	}
	c = store_conn_new(st);
	if (c == NULL) {
		printf("open failed: no connection\n");
		goto out;
	}
	if (strcmp(argv[1], "open") == 0) {
		printf("open ok %.1f %s\n", now_ms() - t0, store_kind(st));
		rc = 0;
		goto out;
	}
	printf("ready\n");
	while (fgets(line, sizeof(line), stdin) != NULL) {
		if (strncmp(line, "quit", 4) == 0)
			break;
		run(c, line);
	}
	rc = 0;
out:
	store_conn_free(c);
	store_close(st);
	return rc;
}
