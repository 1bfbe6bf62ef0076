/*
 * test_metrics: the exposition of app/metrics.c: a histogram read while it is
 * observed stays consistent; a worker's slot whose PID now belongs to another
 * process (started at another time) is not counted alive.
 */
#include "config.h"

#include "buf.h"
#include "check.h"
#include "metrics.h"
#include "tmpdir.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TEST_SECONDS 2

static atomic_int stop;

static void *
observer(void *arg)
{
	struct metrics_series *s = arg;

	while (!atomic_load(&stop))
		metrics_series_observe(s, 0.0001);
	return NULL;
}

/*
 * Whether the histogram's lines in `text` are consistent: buckets never
 * decrease with `le`, none is above +Inf, and +Inf equals _count.
 */
static int
consistent(const char *text)
{
	const char *p = text;
	double v, prev = -1, inf = -1, count = -1;
	char name[128];

	while ((p = strstr(p, "valerie_overhead_seconds_")) != NULL) {
		if (sscanf(p, "%127s %lf", name, &v) != 2)
			return 0;
		if (strncmp(name, "valerie_overhead_seconds_bucket", 31) == 0) {
			if (v < prev)
				return 0;
			prev = v;
			if (strstr(name, "+Inf") != NULL)
				inf = v;
		} else if (strcmp(name, "valerie_overhead_seconds_count") == 0) {
			count = v;
		}
		p = strchr(p, '\n');
		if (p == NULL)
			break;
	}
	return inf >= 0 && inf == count && prev == inf;
}

/* This process's start time, field 22 of /proc/self/stat; 0 if unknown. */
static unsigned long long
self_start(void)
{
	char text[1024], *p;
	FILE *f = fopen("/proc/self/stat", "r");
	size_t n;
	int i;

	if (f == NULL)
		return 0;
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	if ((p = strrchr(text, ')')) == NULL)
		return 0;
	for (i = 3; i <= 22 && p != NULL; i++)
		p = strchr(p + 1, ' ');
	return p != NULL ? strtoull(p + 1, NULL, 10) : 0;
}

/* The value of "valerie_workers" in a render; -1 if absent. */
static int
workers_now(void)
{
	struct buf out;
	const char *p;
	int n = -1;

	buf_init(&out);
	metrics_render(&out);
	if (!out.oom && (p = strstr(out.data, "\nvalerie_workers ")) != NULL)
		n = (int)strtol(p + 17, NULL, 10);
	buf_free(&out);
	return n;
}

/*
 * A worker died and its PID went to another process (here a sleeping child):
 * the worker's slot, copied with that PID (this process's start time, not the
 * child's), must not count as a live worker. The slot is found in the mapped
 * file by this process's PID, its size by where this process's start time
 * follows it (a slot without one is the 16 bytes of pid and in-flight count).
 */
static void
test_reused_pid(const char *path)
{
	unsigned char slot[64], probe[8];
	unsigned long long start = self_start(), v;
	size_t off = 0, stride = 16, i;
	int fd = open(path, O_RDWR), me = (int)getpid(), pid, before, status;
	pid_t child;

	CHECK(fd >= 0 && start != 0);
	if (fd < 0 || start == 0)
		return;
	for (i = 8; i < 64 * 1024 && off == 0; i += 8) {
		if (pread(fd, probe, 4, (off_t)i) == 4 && memcmp(probe, &me, 4) == 0)
			off = i;
	}
	CHECK(off != 0);
	for (i = 8; i + 8 <= sizeof(slot); i += 8) {
		if (pread(fd, &v, 8, (off_t)(off + i)) == 8 && v == start) {
			stride = i + 8;
			break;
		}
	}
	before = workers_now();
	CHECK_INT(before, 1);
	/*
	 * NOTE: start times count clock ticks (10 ms): a child forked in this
	 * process's first tick would have its start time, so wait a few. A
	 * reused PID comes only after the PID space wraps, far later than that.
	 */
	usleep(50000);
	child = fork();
	if (child == 0) {
		pause();
		_exit(0);
	}
	CHECK(child > 0);
	pid = (int)child;
	if (pread(fd, slot, stride, (off_t)off) == (ssize_t)stride) {
		memcpy(slot, &pid, 4);
		CHECK(pwrite(fd, slot, stride, (off_t)(off + stride)) == (ssize_t)stride);
	}
	CHECK_INT(workers_now(), 1);
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	close(fd);
}

int
main(void)
{
	char path[PATH_MAX + 32], err[256];
	pthread_t th[2];
	struct metrics_series *s;
	struct buf out;
	time_t until;
	int i, bad = 0, renders = 0;

	snprintf(path, sizeof(path), "%s/valerie.metrics", tmpdir_make("valerie-metrics-"));
	if (metrics_open(path, err, sizeof(err)) != 0) {
		fprintf(stderr, "metrics_open: %s\n", err);
		return 1;
	}
	test_reused_pid(path);
	s = metrics_histogram("valerie_overhead_seconds", "");
	CHECK(s != NULL);
	for (i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, observer, s);
	buf_init(&out);
	for (until = time(NULL) + TEST_SECONDS; time(NULL) < until; renders++) {
		buf_reset(&out, 1 << 20);
		metrics_render(&out);
		if (!out.oom && !consistent(out.data))
			bad++;
	}
	atomic_store(&stop, 1);
	for (i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	if (bad > 0)
		fprintf(stderr, "%d of %d renders inconsistent\n", bad, renders);
	CHECK_INT(bad, 0);
	buf_free(&out);
	metrics_close();
	return check_done("test_metrics");
}
