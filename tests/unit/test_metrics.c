/*
 * test_metrics: the exposition of app/metrics.c: a histogram read while it is
 * observed shows each observation whole or not at all (its buckets, _sum and
 * _count agree: _sum used to lead _count by the observations made while the
 * scrape read it), and an observer that died half-way holds the scrape up
 * once, not at every scrape; a worker's slot whose PID now belongs to another
 * process (started at another time) is not counted alive; a series kept by
 * its handle, and the epoch that says when to look it up again; gauges an
 * earlier pool left in the file are not rendered by a new one.
 */
#include "config.h"

#include "buf.h"
#include "check.h"
#include "metrics.h"
#include "tmpdir.h"
#include "utf8.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROGRESS_WANT 2000     /* renders that must each see new observations */
#define RENDERS_MAX 400000     /* renders at most (a bound on count, not on time) */
#define PACE 2000              /* an observer's own work between observations (loop turns) */

static atomic_int stop;

/* Observes its value (1 s or 4 s) until stop, with work of its own in between. */
static void *
observer(void *arg)
{
	struct metrics_series *s = metrics_histogram("valerie_overhead_seconds", "");
	double v = *(const double *)arg;
	volatile unsigned int work;
	unsigned int i;

	while (!atomic_load(&stop)) {
		metrics_series_observe(s, v);
		for (i = 0, work = 0; i < PACE; i++)
			work += i;
	}
	return NULL;
}

/*
 * Whether the histogram's lines in `text` show whole observations: buckets
 * never decrease with `le`, +Inf equals _count, and with observations of 1 s
 * and 4 s only, nothing is at or below 0.5, the 1 s ones are the le="2.5"
 * bucket, every one is in le="5", and _sum is exactly 1 x ones + 4 x fours.
 * Sets *count to _count.
 */
static int
consistent(const char *text, double *count)
{
	const char *p = text;
	double v, prev = -1, inf = -1, half = -1, ones = -1, five = -1, sum = -1;
	char name[128];

	*count = -1;
	while ((p = strstr(p, "valerie_overhead_seconds_")) != NULL) {
		if (sscanf(p, "%127s %lf", name, &v) != 2)
			return 0;
		if (strncmp(name, "valerie_overhead_seconds_bucket", 31) == 0) {
			if (v < prev)
				return 0;
			prev = v;
			if (strstr(name, "+Inf") != NULL)
				inf = v;
			else if (strstr(name, "le=\"0.5\"") != NULL)
				half = v;
			else if (strstr(name, "le=\"2.5\"") != NULL)
				ones = v;
			else if (strstr(name, "le=\"5\"") != NULL)
				five = v;
		} else if (strcmp(name, "valerie_overhead_seconds_count") == 0) {
			*count = v;
		} else if (strcmp(name, "valerie_overhead_seconds_sum") == 0) {
			sum = v;
		}
		p = strchr(p, '\n');
		if (p == NULL)
			break;
	}
	return inf >= 0 && inf == *count && prev == inf && half == 0 && five == inf &&
	    ones >= 0 && sum == ones + 4 * (inf - ones);
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

/* The value of the line starting with `prefix` in a render; -1 if absent. */
static double
rendered(const char *prefix)
{
	struct buf out;
	char want[200];
	const char *p;
	double v = -1;

	buf_init(&out);
	metrics_render(&out);
	snprintf(want, sizeof(want), "\n%s ", prefix);
	if (!out.oom && (p = strstr(out.data, want)) != NULL)
		v = strtod(p + strlen(want), NULL);
	buf_free(&out);
	return v;
}

/*
 * An observer killed after it began an observation (begun counted, never
 * count): the series' words are found in the mapped file after its label
 * text (labels[192], then value, count, begun, stuck), and begun raised by
 * one as that observer left it. The next scrape waits for it (about a
 * second), then shows the observations made whole and remembers the gap
 * (stuck 1), so that later scrapes, observations going on, need not wait.
 */
static void
test_dead_observer(const char *path)
{
	static const char labels[] = "agent=\"dead-observer\"";
	struct metrics_series *s = metrics_histogram("valerie_agent_call_duration_seconds", labels);
	unsigned long long words[4], one;
	char probe[sizeof(labels)];
	off_t at = 0, i;
	int fd = open(path, O_RDWR);

	CHECK(s != NULL && fd >= 0);
	if (s == NULL || fd < 0)
		return;
	for (i = 0; i < 3; i++)
		metrics_series_observe(s, 2);
	for (i = 0; i < 4 << 20 && at == 0; i += 8)
		if (pread(fd, probe, sizeof(probe), i) == (ssize_t)sizeof(probe) &&
		    memcmp(probe, labels, sizeof(probe)) == 0)
			at = i + 192;
	CHECK(at != 0 && pread(fd, words, sizeof(words), at) == (ssize_t)sizeof(words));
	/* value (6.0), count, begun, stuck: the layout this test assumes. */
	CHECK(words[1] == 3 && words[2] == 3 && words[3] == 0);
	if (at == 0 || words[1] != 3 || words[2] != 3) {
		close(fd);
		return;
	}
	one = 4;
	CHECK(pwrite(fd, &one, 8, at + 16) == 8);
	CHECK(rendered("valerie_agent_call_duration_seconds_count{agent=\"dead-observer\"}") == 3);
	CHECK(pread(fd, words, sizeof(words), at) == (ssize_t)sizeof(words) && words[3] == 1);
	metrics_series_observe(s, 2);
	CHECK(rendered("valerie_agent_call_duration_seconds_count{agent=\"dead-observer\"}") == 4);
	CHECK(rendered("valerie_agent_call_duration_seconds_sum{agent=\"dead-observer\"}") == 8);
	CHECK(rendered("valerie_agent_call_duration_seconds_bucket{agent=\"dead-observer\","
	    "le=\"2.5\"}") == 4);
	CHECK(pread(fd, words, sizeof(words), at) == (ssize_t)sizeof(words) && words[3] == 1);
	close(fd);
}

/*
 * A series kept past a request (provider.c keeps the LLM series per thread):
 * a gauge set through its handle renders its value, and the epoch that says
 * when such a handle must be looked up again changes at close and at open.
 */
static void
test_kept_series(const char *path)
{
	struct metrics_series *g = metrics_gauge("valerie_provider_up", "provider=\"kept\"");
	unsigned long e = metrics_epoch();
	char err[256];

	CHECK(g != NULL);
	CHECK(metrics_gauge("valerie_provider_up", "provider=\"kept\"") == g);
	metrics_series_set(g, 1);
	metrics_series_set(g, 0);
	CHECK(rendered("valerie_provider_up{provider=\"kept\"}") == 0);
	metrics_series_set(g, 1);
	CHECK(rendered("valerie_provider_up{provider=\"kept\"}") == 1);
	metrics_close();
	CHECK(metrics_epoch() != e);
	e = metrics_epoch();
	CHECK(metrics_open(path, err, sizeof(err)) == 0);
	CHECK(metrics_epoch() != e);
}

/* Whether a render holds `text` anywhere. */
static int
render_has(const char *text)
{
	struct buf out;
	int has;

	buf_init(&out);
	metrics_render(&out);
	has = !out.oom && strstr(out.data, text) != NULL;
	buf_free(&out);
	return has;
}

/*
 * Values no long long holds (NaN, the infinities, beyond 9.2e18) render
 * without the undefined cast, NaN and the infinities as the exposition
 * format spells them; integers as integers, the rest as %.9g.
 */
static void
test_number_edges(void)
{
	static const struct {
		const char *labels;
		double v;
		const char *line;
	} cases[] = {
		{"provider=\"num-nan\"", NAN, "valerie_provider_up{provider=\"num-nan\"} NaN\n"},
		{"provider=\"num-inf\"", INFINITY, "valerie_provider_up{provider=\"num-inf\"} +Inf\n"},
		{"provider=\"num-ninf\"", -INFINITY,
		    "valerie_provider_up{provider=\"num-ninf\"} -Inf\n"},
		{"provider=\"num-big\"", 1e19, "valerie_provider_up{provider=\"num-big\"} 1e+19\n"},
		{"provider=\"num-nbig\"", -9.3e18,
		    "valerie_provider_up{provider=\"num-nbig\"} -9.3e+18\n"},
		{"provider=\"num-int\"", 42, "valerie_provider_up{provider=\"num-int\"} 42\n"},
		{"provider=\"num-frac\"", 0.25, "valerie_provider_up{provider=\"num-frac\"} 0.25\n"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		metrics_gauge_set("valerie_provider_up", cases[i].labels, cases[i].v);
		if (!render_has(cases[i].line)) {
			fprintf(stderr, "render lacks %s", cases[i].line);
			CHECK(0);
		}
	}
}

/*
 * A label set that does not fit leaves out whole pairs, never half of one:
 * an unclosed quote (or a value cut after its escaping backslash) would make
 * the whole scrape unparseable.
 */
static void
test_labels_truncated(void)
{
	char small[12], l[40], esc[7];

	metrics_labels(l, sizeof(l), "provider", "openai", "model", "gpt-4o", (char *)NULL);
	CHECK_STR(l, "provider=\"openai\",model=\"gpt-4o\"");
	metrics_labels(small, sizeof(small), "provider", "openai", (char *)NULL);
	CHECK_STR(small, "");
	metrics_labels(small, sizeof(small), "ab", "c", "de", "f", (char *)NULL);
	CHECK_STR(small, "ab=\"c\"");
	/* Exactly full: 11 bytes and the NUL. */
	metrics_labels(small, sizeof(small), "a", "b", "c", "d", (char *)NULL);
	CHECK_STR(small, "a=\"b\",c=\"d\"");
	/* A pair that does not fit ends the set, even if a later one would. */
	metrics_labels(small, sizeof(small), "a", "b", "long", "value", "c", "d", (char *)NULL);
	CHECK_STR(small, "a=\"b\"");
	/* An escaped value is never cut after its backslash. */
	metrics_labels(esc, sizeof(esc), "q", "a\\\"", (char *)NULL);
	CHECK_STR(esc, "");
	metrics_labels(l, sizeof(l), "q", "a\\\"", (char *)NULL);
	CHECK_STR(l, "q=\"a\\\"\"");
}

/*
 * A label value cut to its buffer ends on a character boundary: never half
 * of a UTF-8 character (Prometheus refuses a scrape with invalid UTF-8 in a
 * label value) nor half of an escape. Every cut is a prefix of the whole.
 */
static void
test_label_value_utf8(void)
{
	static const char mixed[] = "caf\xc3\xa9 \"\xe2\x82\xac\" \xf0\x9f\x98\x80\\\n\xe6\x97\xa5";
	char out[64], whole[64];
	size_t size, len, slashes;

	metrics_label_value("abcd\xe2\x82\xac", out, 8);
	CHECK_STR(out, "abcd\xe2\x82\xac");
	metrics_label_value("abcd\xf0\x9f\x98\x80", out, 8);
	CHECK_STR(out, "abcd");
	metrics_label_value("abc\xc3\xa9", out, 5);
	CHECK_STR(out, "ab");
	metrics_label_value(mixed, whole, sizeof(whole));
	CHECK_STR(whole, "caf\xc3\xa9 \\\"\xe2\x82\xac\\\" \xf0\x9f\x98\x80\\\\\\n\xe6\x97\xa5");
	for (size = 1; size <= sizeof(whole); size++) {
		metrics_label_value(mixed, out, size);
		len = strlen(out);
		for (slashes = 0; slashes < len && out[len - 1 - slashes] == '\\'; slashes++)
			;
		if (len >= size || !utf8_valid(out, len) || strncmp(out, whole, len) != 0 ||
		    slashes % 2 != 0) {
			fprintf(stderr, "label value cut to %zu bytes: \"%s\"\n", size, out);
			CHECK(0);
		}
	}
}

/*
 * The mapped file outlives the pool (it sits in VALERIE_DATA_DIR next to the
 * sessions): a gauge says how things are now, so one that a stopped pool left
 * (the old version's build_info after an upgrade, a provider or agent since
 * taken out of the configuration) must not show once a new pool starts, while
 * counters go on. A worker replaced while others of its pool live (multiwatch)
 * is not a new pool: every gauge stays. A gauge the new pool keeps on purpose
 * (metrics_gauge_keep: a provider's last outcome) shows again, and keep
 * creates nothing.
 */
static void
test_stale_gauges(const char *path, const char *self_exe)
{
	char err[256];
	int status, ready[2];
	pid_t child;

	metrics_gauge_set("valerie_build_info", "version=\"0.0.1-old\"", 1);
	metrics_gauge_set("valerie_provider_up", "provider=\"gone\"", 0);
	metrics_gauge_set("valerie_provider_up", "provider=\"kept\"", 0);
	metrics_gauge_set("valerie_circuit_state", "target=\"agent:gone\"", 2);
	metrics_counter_add("valerie_agent_calls_total", "agent=\"gone\",outcome=\"ok\"", 3);

	/* Another worker of the pool lives while this one is replaced: nothing is stale. */
	CHECK(pipe(ready) == 0);
	child = fork();
	if (child == 0) {
		char fdtext[16];

		/* NOTE: a new program, as multiwatch starts one: a forked copy would share our slot. */
		snprintf(fdtext, sizeof(fdtext), "%d", ready[1]);
		execl(self_exe, self_exe, "--hold", path, fdtext, (char *)NULL);
		_exit(1);
	}
	CHECK(child > 0);
	{
		char c;

		CHECK(read(ready[0], &c, 1) == 1);
	}
	metrics_close();
	CHECK(metrics_open(path, err, sizeof(err)) == 0);
	CHECK(render_has("valerie_build_info{version=\"0.0.1-old\"} 1\n"));
	CHECK(render_has("valerie_circuit_state{target=\"agent:gone\"} 2\n"));
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	close(ready[0]);
	close(ready[1]);

	/* The whole pool stopped, a new one starts (an upgrade, a new configuration). */
	metrics_close();
	CHECK(metrics_open(path, err, sizeof(err)) == 0);
	metrics_gauge_set("valerie_build_info", "version=\"0.0.2-new\"", 1);
	CHECK(render_has("valerie_build_info{version=\"0.0.2-new\"} 1\n"));
	CHECK(!render_has("version=\"0.0.1-old\""));
	CHECK(!render_has("provider=\"gone\""));
	CHECK(!render_has("target=\"agent:gone\""));
	CHECK(render_has("valerie_agent_calls_total{agent=\"gone\",outcome=\"ok\"} 3\n"));

	metrics_gauge_keep("valerie_provider_up", "provider=\"kept\"");
	metrics_gauge_keep("valerie_provider_up", "provider=\"never\"");
	CHECK(render_has("valerie_provider_up{provider=\"kept\"} 0\n"));
	CHECK(!render_has("provider=\"never\""));

}

/* `--hold PATH FD`: a worker of the pool (test_stale_gauges): registers, says so on FD, waits. */
static int
hold(const char *path, const char *fdtext)
{
	char err[256];

	if (metrics_open(path, err, sizeof(err)) != 0)
		return 1;
	if (write((int)strtol(fdtext, NULL, 10), "x", 1) != 1)
		return 1;
	pause();
	return 0;
}

int
main(int argc, char **argv)
{
	static const double values[2] = {1, 4};
	char path[PATH_MAX + 32], err[256];
	pthread_t th[2];
	struct buf out;
	double count, last = 0;
	int i, bad = 0, renders = 0, progress = 0;

	if (argc == 4 && strcmp(argv[1], "--hold") == 0)
		return hold(argv[2], argv[3]);
	snprintf(path, sizeof(path), "%s/valerie.metrics", tmpdir_make("valerie-metrics-"));
	if (metrics_open(path, err, sizeof(err)) != 0) {
		fprintf(stderr, "metrics_open: %s\n", err);
		return 1;
	}
	test_reused_pid(path);
	test_dead_observer(path);
	test_kept_series(path);
	test_stale_gauges(path, argv[0]);
	test_number_edges();
	test_labels_truncated();
	test_label_value_utf8();
	CHECK(metrics_histogram("valerie_overhead_seconds", "") != NULL);
	for (i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, observer, (void *)&values[i]);
	buf_init(&out);
	/* Renders while both threads observe, until enough renders met new observations. */
	for (; progress < PROGRESS_WANT && renders < RENDERS_MAX; renders++) {
		buf_reset(&out, 1 << 20);
		metrics_render(&out);
		if (out.oom)
			continue;
		if (!consistent(out.data, &count)) {
			if (bad++ == 0)
				fprintf(stderr, "first inconsistent render:\n%s\n",
				    strstr(out.data, "valerie_overhead_seconds_bucket"));
		}
		progress += count != last;
		last = count;
	}
	atomic_store(&stop, 1);
	for (i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	printf("%d renders, %d of them after new observations, %d inconsistent\n", renders,
	    progress, bad);
	CHECK_INT(bad, 0);
	CHECK(progress >= PROGRESS_WANT);
	buf_free(&out);
	metrics_close();
	return check_done("test_metrics");
}
