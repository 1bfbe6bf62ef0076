/* test_metrics: the exposition of app/metrics.c: a histogram read while it is observed stays consistent. */
#include "config.h"

#include "buf.h"
#include "check.h"
#include "metrics.h"
#include "tmpdir.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
