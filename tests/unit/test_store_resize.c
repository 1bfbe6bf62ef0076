/*
 * test_store_resize: another process grows the shared LMDB environment beyond
 * this process's map, as a pool with a larger VALERIE_LMDB_MAP_MB on the same
 * VALERIE_DATA_DIR does. This process's store adopts the larger map (LMDB's
 * MDB_MAP_RESIZED) and goes on reading and writing without a restart, while
 * threads of its own are in transactions all along, and logs what it did.
 * The other process is this program run again with --grow DIR.
 */
#include "config.h"

#include "bigturn.h"
#include "check.h"
#include "conf.h"
#include "log.h"
#include "store.h"
#include "tmpdir.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAP_MB "16"             /* this process's map: the smallest VALERIE_LMDB_MAP_MB */
#define GROW_MAP_MB "64"        /* the other process's */
#define GROW_TURNS 400          /* turns of TURN_BYTES it writes: ~26 MB, past 16 MB */
#define READERS 4               /* threads reading through the resize */
#define OPS_AFTER 50            /* operations each reader does once the map has grown */
#define WAIT_S 30               /* how long the readers get for them */

struct reader {
	pthread_t tid;
	struct store *st;
	pthread_mutex_t *lock;      /* guards the counts and `grown`/`stop` below */
	const int *grown, *stop;
	int ops, ops_after, failures;
	char first_error[200];
};

static const char *
real_get(const char *name, void *ctx)
{
	(void)ctx;
	return getenv(name);
}

/* Opens the LMDB store in `dir` with a map of `map_mb`; NULL (said on stderr) if it fails. */
static struct store *
open_store(const char *dir, const char *map_mb, struct conf *conf)
{
	struct store *st;
	char err[256];

	if (setenv("VALERIE_DATA_DIR", dir, 1) != 0 || setenv("VALERIE_LMDB_MAP_MB", map_mb, 1) != 0 ||
	    setenv("VALERIE_SESSION_STORE", "lmdb", 1) != 0)
		return NULL;
	if (conf_load(conf, real_get, NULL, err, sizeof(err)) != CONF_OK) {
		fprintf(stderr, "config: %s\n", err);
		return NULL;
	}
	st = store_open(conf, err, sizeof(err));
	if (st == NULL)
		fprintf(stderr, "store_open: %s\n", err);
	return st;
}

/* The other process: opens `dir` with the larger map and writes past the smaller one. */
static int
grow(const char *dir)
{
	struct conf conf;
	struct store *st = open_store(dir, GROW_MAP_MB, &conf);
	struct store_conn *c = st != NULL ? store_conn_new(st) : NULL;
	char *turn = big_turn('g'), id[64];
	enum store_status s = STORE_OK;
	int i, t;

	if (c == NULL || turn == NULL)
		return 1;
	for (i = 0; i < GROW_TURNS && s == STORE_OK; i++) {
		snprintf(id, sizeof(id), "grow.%d", i);
		s = store_append(c, id, "bob", NULL, turn, 1000, &t);
	}
	if (s != STORE_OK)
		fprintf(stderr, "grow: append %d: %s\n", i, store_conn_error(c));
	free(turn);
	store_conn_free(c);
	store_close(st);
	return s == STORE_OK ? 0 : 1;
}

/* Reads in a loop (load, cache, count, ping) until told to stop; counts what failed. */
static void *
reader_main(void *arg)
{
	struct reader *r = arg;
	struct store_conn *c = store_conn_new(r->st);
	struct store_session_info info;
	struct buf b = {0};
	enum store_status s[4];
	long long active;
	int i, bad, stop = 0;

	if (c == NULL)
		return NULL;
	while (!stop) {
		buf_reset(&b, 0);
		s[0] = store_load(c, "before", 0, 0, &info, &b);
		buf_reset(&b, 0);
		s[1] = store_cache_get(c, "absent", &b);
		s[2] = store_count(c, &active);
		s[3] = store_ping(c);
		bad = s[0] != STORE_OK || s[1] != STORE_NOT_FOUND || s[2] != STORE_OK ||
		    s[3] != STORE_OK;
		pthread_mutex_lock(r->lock);
		r->ops++;
		if (*r->grown)
			r->ops_after++;
		if (bad && r->failures++ == 0)
			for (i = 0; i < 4; i++)
				if (s[i] != STORE_OK && s[i] != STORE_NOT_FOUND)
					snprintf(r->first_error, sizeof(r->first_error), "%s",
					    store_conn_error(c));
		stop = *r->stop;
		pthread_mutex_unlock(r->lock);
	}
	buf_free(&b);
	store_conn_free(c);
	return NULL;
}

/* Whether every reader has done OPS_AFTER operations since the map grew. */
static int
readers_done(struct reader *r, pthread_mutex_t *lock)
{
	int i, done = 1;

	pthread_mutex_lock(lock);
	for (i = 0; i < READERS; i++)
		if (r[i].ops_after < OPS_AFTER)
			done = 0;
	pthread_mutex_unlock(lock);
	return done;
}

int
main(int argc, char **argv)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	struct reader readers[READERS];
	struct conf conf;
	struct store *st;
	struct store_conn *c;
	struct store_session_info info;
	struct buf b = {0};
	char path[4200], logtext[8192];
	const char *dir;
	char *turn;
	int grown = 0, stop = 0, i, t, fd, status, waited;
	ssize_t n;
	pid_t pid;

	if (argc == 3 && strcmp(argv[1], "--grow") == 0)
		return grow(argv[2]);
	dir = tmpdir_make("valerie-store-resize");
	turn = big_turn('p');
	if (dir == NULL || turn == NULL)
		return 1;
	snprintf(path, sizeof(path), "%s/log", dir);
	fd = open(path, O_RDWR | O_CREAT | O_APPEND, 0600);
	if (fd < 0)
		return 1;
	log_set_fd(fd);
	st = open_store(dir, MAP_MB, &conf);
	if (st == NULL)
		return 1;
	c = store_conn_new(st);
	CHECK(c != NULL);
	CHECK_INT(store_append(c, "before", "alice", NULL, "[]", 1000, &t), STORE_OK);

	memset(readers, 0, sizeof(readers));
	for (i = 0; i < READERS; i++) {
		readers[i].st = st;
		readers[i].lock = &lock;
		readers[i].grown = &grown;
		readers[i].stop = &stop;
		CHECK_INT(pthread_create(&readers[i].tid, NULL, reader_main, &readers[i]), 0);
	}

	/* The other process: a fresh exec of this program, not a fork of its threads. */
	pid = fork();
	if (pid == 0) {
		execl("/proc/self/exe", argv[0], "--grow", dir, (char *)NULL);
		_exit(127);
	}
	CHECK(pid > 0);
	CHECK_INT(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	pthread_mutex_lock(&lock);
	grown = 1;
	pthread_mutex_unlock(&lock);
	for (waited = 0; waited < WAIT_S * 10 && !readers_done(readers, &lock); waited++)
		usleep(100 * 1000);
	pthread_mutex_lock(&lock);
	stop = 1;
	pthread_mutex_unlock(&lock);
	for (i = 0; i < READERS; i++) {
		pthread_join(readers[i].tid, NULL);
		printf("reader %d: %d operations, %d after the growth, %d failed%s%s\n", i,
		    readers[i].ops, readers[i].ops_after, readers[i].failures,
		    readers[i].failures ? ": " : "", readers[i].first_error);
		CHECK_INT(readers[i].failures, 0);
		CHECK(readers[i].ops_after >= OPS_AFTER);
	}

	/* What the other process wrote past this process's map reads, and writes go on. */
	CHECK_INT(store_load(c, "grow.0", 0, 0, &info, &b), STORE_OK);
	buf_reset(&b, 0);
	snprintf(path, sizeof(path), "grow.%d", GROW_TURNS - 1);
	CHECK_INT(store_load(c, path, 0, 0, &info, &b), STORE_OK);
	CHECK_INT(info.turns, 1);
	CHECK_INT(b.len > TURN_BYTES, 1);
	for (i = 0; i < 40; i++) {
		snprintf(path, sizeof(path), "after.%d", i);
		CHECK_INT(store_append(c, path, "alice", NULL, turn, 2000, &t), STORE_OK);
	}
	CHECK_INT(store_append(c, "before", "alice", NULL, "[]", 2000, &t), STORE_OK);
	CHECK_INT(t, 2);

	/* One line says the map was adopted, with the sizes. */
	n = pread(fd, logtext, sizeof(logtext) - 1, 0);
	logtext[n > 0 ? n : 0] = '\0';
	printf("log: %s", logtext);
	CHECK_CONTAINS(logtext, "map adopted, " GROW_MAP_MB " MB (was " MAP_MB " MB");
	CHECK_CONTAINS(logtext, "VALERIE_LMDB_MAP_MB=" MAP_MB);

	free(turn);
	buf_free(&b);
	store_conn_free(c);
	store_close(st);
	log_set_fd(2);
	close(fd);
	return check_done("test_store_resize");
}
