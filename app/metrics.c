/* metrics: Prometheus metrics shared by every worker process of the pool (a mapped file). */
#include "config.h"

#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define METRICS_MAGIC 0x56414c4d45545233ULL   /* "VALMETR3": a new layout, a new magic */
#define METRICS_READ_SPINS 64     /* a histogram read tried again at once, yielding... */
#define METRICS_READ_NAPS 1000    /* ...then after 1 ms naps: about 1 s for a dead observer */

enum kind { K_COUNTER = 1, K_GAUGE, K_HISTOGRAM };

/* The metrics we expose, in exposition order; anything else is not rendered. */
static const struct {
	const char *name;
	enum kind kind;
	const char *help;
} known[] = {
	{"valerie_build_info", K_GAUGE, "Build information (always 1)."},
	{"valerie_workers", K_GAUGE, "Worker processes alive in the pool."},
	{"valerie_inflight_requests", K_GAUGE, "Requests being handled by the pool now."},
	{"valerie_http_requests_total", K_COUNTER, "HTTP requests answered, by route template, method and status code."},
	{"valerie_http_request_duration_seconds", K_HISTOGRAM, "Time to answer an HTTP request, by route template."},
	{"valerie_llm_requests_total", K_COUNTER, "Calls to LLM providers by outcome (ok, error, timeout, rate_limited, circuit_open)."},
	{"valerie_llm_request_duration_seconds", K_HISTOGRAM, "Duration of LLM provider calls, retries included."},
	{"valerie_llm_time_to_first_token_seconds", K_HISTOGRAM, "Time from the call to the first streamed token."},
	{"valerie_llm_tokens_total", K_COUNTER, "Tokens by direction (input, output)."},
	{"valerie_llm_retries_total", K_COUNTER, "Upstream calls made again after a failure."},
	{"valerie_llm_fallbacks_total", K_COUNTER, "Turns answered by a fallback provider."},
	{"valerie_provider_up", K_GAUGE, "Whether the provider's last call succeeded (1) or failed (0)."},
	{"valerie_agent_calls_total", K_COUNTER, "Tool calls to MCP agents by outcome (ok, error, timeout, circuit_open, unavailable)."},
	{"valerie_agent_call_duration_seconds", K_HISTOGRAM, "Duration of tool calls to MCP agents, retries included."},
	{"valerie_circuit_state", K_GAUGE, "Circuit breaker state: 0 closed, 1 half-open, 2 open."},
	{"valerie_store_up", K_GAUGE, "Whether the session store answered its last operation (1) or not (0); a full store answers (it refuses writes, reads work): see valerie_store_full."},
	{"valerie_store_full", K_GAUGE, "Whether the session store refused the last turn's append for lack of room (1: LMDB map full, VALERIE_LMDB_MAP_MB; Redis at maxmemory) or stored it (0)."},
	{"valerie_store_errors_total", K_COUNTER, "Session store operations that failed, by operation."},
	{"valerie_store_op_duration_seconds", K_HISTOGRAM, "Duration of session store operations, by operation."},
	{"valerie_overhead_seconds", K_HISTOGRAM, "Time of a chat turn spent outside the providers and agents (the gateway's own cost)."},
	{"valerie_ratelimit_rejections_total", K_COUNTER, "Requests refused by the rate limit (429), by scope: principal or client address."},
	{"valerie_sessions_active", K_GAUGE, "Sessions alive in the store (not expired), counted at scrape time."},
	{"valerie_business_context_requests_total", K_COUNTER, "Business context lookups by result: hit (cache), fetched, error (the fetch failed; the turn went on without it), error_cached (a recent failure remembered, not fetched)."},
	{"valerie_trace_spans_total", K_COUNTER, "Trace spans by outcome: exported, dropped (queue full), failed (the collector refused or was unreachable)."},
};

#define NKNOWN (sizeof(known) / sizeof(known[0]))

/* Upper bounds; 10 s is the latency alert's threshold. */
static const double bounds[METRICS_BUCKETS] = {
	0.0005, 0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120
};

/*
 * NOTE: a histogram observation is several words (a bucket, the sum, the
 * count), and a scrape must see it whole or not at all: a _sum ahead of
 * _count, or a bucket ahead of +Inf, makes rate(_sum)/rate(_count) wrong. An
 * observation counts itself in `begun` first and in `count` last; a reader
 * reads `count`, the buckets and the sum, then `begun`: when begun == count,
 * no observation was under way between the two, so what it read is exactly
 * the `count` observations (every access is sequentially consistent). Else it
 * reads again. Observers never wait and pay one atomic add more than a lone
 * counter (buckets are counted per bucket, one add, where each used to add to
 * every bucket at or above it). An observer that dies half-way (SIGKILL)
 * would hold begun above count for good: a reader that has waited long
 * enough remembers that gap in `stuck` and takes it as "none under way"
 * from then on (lowering it whenever it meets a smaller one).
 */
struct metrics_series {
	atomic_int used;
	int kind;
	char name[METRICS_NAME_MAX + 1];
	char labels[METRICS_LABELS_MAX + 1];
	atomic_ullong value;                 /* double bits: counter or gauge value, histogram sum */
	atomic_ullong count;                 /* histogram: observations recorded whole */
	atomic_ullong begun;                 /* histogram: observations begun */
	atomic_ullong stuck;                 /* histogram: begun - count left by dead observers */
	atomic_ullong buckets[METRICS_BUCKETS];  /* observations per bucket, not cumulative */
	atomic_ullong pool;                  /* gauge: the pool (struct table) that last wrote it */
};

struct proc {
	atomic_int pid;
	atomic_llong inflight;
	atomic_ullong start;   /* the process's start time (proc_start), 0 if unknown */
};

/*
 * NOTE: the file outlives the pool (VALERIE_DATA_DIR keeps it, with the
 * sessions, across restarts and upgrades). Counters and histograms go on
 * from it, never backwards; a gauge says how things are now, so one that an
 * earlier pool wrote last (the old version's build_info, a provider or agent
 * since taken out of the configuration, left at 0 or "open" for good) is not
 * rendered. `pool` counts pool starts: a worker that registers while no other
 * one of the file lives starts a new pool; one that multiwatch replaces next
 * to live ones does not.
 */
struct table {
	unsigned long long magic;
	unsigned int size;
	atomic_ullong pool;
	struct proc procs[METRICS_PROCS_MAX];
	struct metrics_series s[METRICS_SERIES_MAX];
};

/*
 * NOTE: flock excludes other processes but not other threads of this one (they
 * share the open file), so creation also takes this process-local mutex.
 */
static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;
static int fd = -1;
static struct table *t;
static struct proc *me;
static atomic_ulong epoch;

static double
bits_to_double(unsigned long long b)
{
	double d;

	memcpy(&d, &b, sizeof(d));
	return d;
}

static unsigned long long
double_to_bits(double d)
{
	unsigned long long b;

	memcpy(&b, &d, sizeof(b));
	return b;
}

static void
atomic_add_double(atomic_ullong *a, double v)
{
	unsigned long long old = atomic_load(a), next;

	do
		next = double_to_bits(bits_to_double(old) + v);
	while (!atomic_compare_exchange_weak(a, &old, next));
}

/*
 * The start time of process `pid` in clock ticks since boot (field 22 of
 * /proc/PID/stat); 0 if unknown (no /proc, the process is gone).
 */
static unsigned long long
proc_start(int pid)
{
	char path[32], text[1024], *p;
	ssize_t n;
	int f, i;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if ((f = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	n = read(f, text, sizeof(text) - 1);
	close(f);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	/* NOTE: the command name (field 2) may hold spaces and ')': count fields after the last ')'. */
	if ((p = strrchr(text, ')')) == NULL)
		return 0;
	for (i = 3; i <= 22 && p != NULL; i++)
		p = strchr(p + 1, ' ');
	return p != NULL ? strtoull(p + 1, NULL, 10) : 0;
}

/*
 * Whether the slot's process still runs. NOTE: kill(pid, 0) alone also finds
 * another process that got a dead worker's PID; the start time recorded at
 * registration tells them apart (when /proc cannot say, kill decides).
 */
static int
alive(struct proc *pr)
{
	int pid = atomic_load(&pr->pid);
	unsigned long long start, now;

	if (pid <= 0 || (kill(pid, 0) != 0 && errno != EPERM))
		return 0;
	start = atomic_load(&pr->start);
	if (start == 0)
		return 1;
	now = proc_start(pid);
	return now == 0 || now == start;
}

int
metrics_open(const char *path, char *err, size_t errlen)
{
	struct stat sb;
	int i, pid = (int)getpid();

	atomic_fetch_add(&epoch, 1);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "VALERIE_DATA_DIR: cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	flock(fd, LOCK_EX);
	if (fstat(fd, &sb) != 0 || (size_t)sb.st_size != sizeof(struct table)) {
		if (ftruncate(fd, 0) != 0 || ftruncate(fd, sizeof(struct table)) != 0) {
			snprintf(err, errlen, "cannot size %s: %s", path, strerror(errno));
			goto fail;
		}
	}
	t = mmap(NULL, sizeof(struct table), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (t == MAP_FAILED) {
		t = NULL;
		snprintf(err, errlen, "cannot map %s: %s", path, strerror(errno));
		goto fail;
	}
	if (t->magic != METRICS_MAGIC || t->size != sizeof(struct table)) {
		memset(t, 0, sizeof(struct table));
		t->size = sizeof(struct table);
		t->magic = METRICS_MAGIC;
	}
	/* A new pool when no other process of the file lives (see struct table). */
	for (i = 0; i < METRICS_PROCS_MAX; i++) {
		int other = atomic_load(&t->procs[i].pid);

		if (other != 0 && other != pid && alive(&t->procs[i]))
			break;
	}
	if (i == METRICS_PROCS_MAX)
		atomic_fetch_add(&t->pool, 1);
	/* A slot for this process: a free one, or one whose process is gone. */
	for (i = 0; i < METRICS_PROCS_MAX && me == NULL; i++) {
		int other = atomic_load(&t->procs[i].pid);

		if (other == 0 || other == pid || !alive(&t->procs[i])) {
			me = &t->procs[i];
			atomic_store(&me->inflight, 0);
			/* NOTE: the start before the pid: a reader never pairs this pid with an old start. */
			atomic_store(&me->start, proc_start(pid));
			atomic_store(&me->pid, pid);
		}
	}
	flock(fd, LOCK_UN);
	return 0;
fail:
	flock(fd, LOCK_UN);
	close(fd);
	fd = -1;
	return -1;
}

void
metrics_close(void)
{
	atomic_fetch_add(&epoch, 1);
	if (me != NULL)
		atomic_store(&me->pid, 0);
	me = NULL;
	if (t != NULL)
		munmap(t, sizeof(struct table));
	t = NULL;
	if (fd >= 0)
		close(fd);
	fd = -1;
}

static unsigned int
hash(const char *name, const char *labels)
{
	unsigned int h = 2166136261u;

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 16777619u;
	h = (h ^ '{') * 16777619u;
	for (; *labels; labels++)
		h = (h ^ (unsigned char)*labels) * 16777619u;
	return h;
}

/*
 * The series (name, labels), created if new; NULL when the table is full or unmapped.
 * NOTE: a slot, once used, keeps its series for as long as the file is mapped:
 * nothing clears `used` or rewrites name and labels. The table is only reset by
 * metrics_open, when the file is new or not ours (wrong magic or size). That is
 * what lets callers keep the pointer (metrics_counter, metrics_histogram).
 */
static struct metrics_series *
series(const char *name, const char *labels, int kind)
{
	unsigned int h, i, n;
	struct metrics_series *s;
	int locked = 0;

	if (t == NULL || strlen(name) > METRICS_NAME_MAX || strlen(labels) > METRICS_LABELS_MAX)
		return NULL;
	h = hash(name, labels);
again:
	for (n = 0; n < METRICS_SERIES_MAX; n++) {
		i = (h + n) % METRICS_SERIES_MAX;
		s = &t->s[i];
		if (!atomic_load(&s->used)) {
			if (!locked) {
				/* Create under the locks, after looking again. */
				pthread_mutex_lock(&create_lock);
				flock(fd, LOCK_EX);
				locked = 1;
				goto again;
			}
			s->kind = kind;
			atomic_store(&s->pool, atomic_load(&t->pool));
			snprintf(s->name, sizeof(s->name), "%s", name);
			snprintf(s->labels, sizeof(s->labels), "%s", labels);
			atomic_store(&s->used, 1);
			flock(fd, LOCK_UN);
			pthread_mutex_unlock(&create_lock);
			return s;
		}
		if (strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0) {
			if (locked) {
				flock(fd, LOCK_UN);
				pthread_mutex_unlock(&create_lock);
			}
			return s;
		}
	}
	if (locked) {
		flock(fd, LOCK_UN);
		pthread_mutex_unlock(&create_lock);
	}
	return NULL;
}

struct metrics_series *
metrics_counter(const char *name, const char *labels)
{
	return series(name, labels, K_COUNTER);
}

struct metrics_series *
metrics_histogram(const char *name, const char *labels)
{
	return series(name, labels, K_HISTOGRAM);
}

struct metrics_series *
metrics_gauge(const char *name, const char *labels)
{
	return series(name, labels, K_GAUGE);
}

unsigned long
metrics_epoch(void)
{
	return atomic_load(&epoch);
}

void
metrics_series_add(struct metrics_series *s, double v)
{
	if (s != NULL)
		atomic_add_double(&s->value, v);
}

/* Marks gauge `s` as written by the current pool (see struct table). */
static void
touch(struct metrics_series *s)
{
	unsigned long long pool = atomic_load(&t->pool);

	if (atomic_load(&s->pool) != pool)
		atomic_store(&s->pool, pool);
}

void
metrics_series_set(struct metrics_series *s, double v)
{
	if (s == NULL)
		return;
	atomic_store(&s->value, double_to_bits(v));
	touch(s);
}

void
metrics_series_observe(struct metrics_series *s, double seconds)
{
	int i;

	if (s == NULL)
		return;
	for (i = 0; i < METRICS_BUCKETS && !(seconds <= bounds[i]); i++)
		;
	/* NOTE: begun first, count last: see struct metrics_series. */
	atomic_fetch_add(&s->begun, 1);
	if (i < METRICS_BUCKETS)
		atomic_fetch_add(&s->buckets[i], 1);
	atomic_add_double(&s->value, seconds);
	atomic_fetch_add(&s->count, 1);
}

void
metrics_counter_add(const char *name, const char *labels, double v)
{
	metrics_series_add(series(name, labels, K_COUNTER), v);
}

void
metrics_gauge_set(const char *name, const char *labels, double v)
{
	metrics_series_set(series(name, labels, K_GAUGE), v);
}

void
metrics_gauge_add(const char *name, const char *labels, double v)
{
	struct metrics_series *s = series(name, labels, K_GAUGE);

	if (s == NULL)
		return;
	metrics_series_add(s, v);
	touch(s);
}

void
metrics_gauge_keep(const char *name, const char *labels)
{
	struct metrics_series *s;
	unsigned int h, i, n;

	if (t == NULL)
		return;
	h = hash(name, labels);
	/* The probe of series(): a free slot ends the chain (slots are never freed). */
	for (n = 0; n < METRICS_SERIES_MAX; n++) {
		i = (h + n) % METRICS_SERIES_MAX;
		s = &t->s[i];
		if (!atomic_load(&s->used))
			return;
		if (s->kind == K_GAUGE && strcmp(s->name, name) == 0 &&
		    strcmp(s->labels, labels) == 0) {
			touch(s);
			return;
		}
	}
}

int
metrics_gauge_get(const char *name, const char *labels, double *v)
{
	struct metrics_series *s;
	unsigned int h, i, n;

	if (t == NULL)
		return -1;
	h = hash(name, labels);
	/* The probe of series(): a free slot ends the chain (slots are never freed). */
	for (n = 0; n < METRICS_SERIES_MAX; n++) {
		i = (h + n) % METRICS_SERIES_MAX;
		s = &t->s[i];
		if (!atomic_load(&s->used))
			return -1;
		if (s->kind != K_HISTOGRAM && strcmp(s->name, name) == 0 &&
		    strcmp(s->labels, labels) == 0) {
			*v = bits_to_double(atomic_load(&s->value));
			return 0;
		}
	}
	return -1;
}

void
metrics_observe(const char *name, const char *labels, double seconds)
{
	metrics_series_observe(series(name, labels, K_HISTOGRAM), seconds);
}

void
metrics_inflight_add(int delta)
{
	if (me != NULL)
		atomic_fetch_add(&me->inflight, delta);
}

/*
 * Bytes of the UTF-8 character at `p`: its lead byte's length, counting only
 * the continuation bytes present (a stray or cut sequence goes byte by byte).
 */
static size_t
char_len(const unsigned char *p)
{
	size_t want = *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3 : *p >= 0xc0 ? 2 : 1, n = 1;

	while (n < want && (p[n] & 0xc0) == 0x80)
		n++;
	return n;
}

void
metrics_label_value(const char *in, char *out, size_t outlen)
{
	const unsigned char *p = (const unsigned char *)in;
	size_t n = 0, len;

	if (outlen == 0)
		return;
	for (; *p && n + 3 < outlen; p += len) {
		len = 1;
		if (*p == '\\' || *p == '"') {
			out[n++] = '\\';
			out[n++] = (char)*p;
		} else if (*p == '\n') {
			out[n++] = '\\';
			out[n++] = 'n';
		} else {
			/* NOTE: a character whole or not at all: half of one is not UTF-8. */
			len = char_len(p);
			if (n + len >= outlen)
				break;
			memcpy(out + n, p, len);
			n += len;
		}
	}
	out[n] = '\0';
}

void
metrics_labels(char *out, size_t outlen, ...)
{
	const char *name, *value, *parts[5];
	size_t n = 0, lens[5], need, i;
	va_list ap;

	if (outlen == 0)
		return;
	va_start(ap, outlen);
	while ((name = va_arg(ap, const char *)) != NULL) {
		value = va_arg(ap, const char *);
		parts[0] = n > 0 ? "," : "";
		parts[1] = name;
		parts[2] = "=\"";
		parts[3] = value;
		parts[4] = "\"";
		for (need = 0, i = 0; i < 5; i++)
			need += lens[i] = strlen(parts[i]);
		/*
		 * NOTE: a pair is written whole or not at all, and none after
		 * it: a pair cut short (an unclosed quote, a value ending in
		 * half an escape) would make the whole scrape unparseable.
		 */
		if (need > outlen - 1 - n)
			break;
		for (i = 0; i < 5; i++) {
			memcpy(out + n, parts[i], lens[i]);
			n += lens[i];
		}
	}
	va_end(ap);
	out[n] = '\0';
}

/* A histogram as one reader saw it. */
struct histogram_read {
	unsigned long long count;
	unsigned long long buckets[METRICS_BUCKETS];   /* per bucket */
	double sum;
};

/* Between two reads of a busy histogram: yield at first, then nap 1 ms. */
static void
read_pause(int tries)
{
	struct timespec nap = {0, 1000000L};

	if (tries < METRICS_READ_SPINS)
		sched_yield();
	else
		nanosleep(&nap, NULL);
}

/*
 * Reads histogram `s` into `h` with every observation whole or absent (see
 * struct metrics_series): again while one is under way, for about a second
 * at most; past that the gap is taken for dead observers (`stuck`) and the
 * last read is kept.
 */
static void
histogram_read(struct metrics_series *s, struct histogram_read *h)
{
	unsigned long long floor = atomic_load(&s->stuck), gap, least = ULLONG_MAX;
	int b, tries;

	for (tries = 0;; tries++) {
		h->count = atomic_load(&s->count);
		for (b = 0; b < METRICS_BUCKETS; b++)
			h->buckets[b] = atomic_load(&s->buckets[b]);
		h->sum = bits_to_double(atomic_load(&s->value));
		gap = atomic_load(&s->begun) - h->count;
		if (gap <= floor) {
			/* Fewer under way than remembered: those were not dead. */
			if (gap < floor)
				(void)atomic_compare_exchange_strong(&s->stuck, &floor, gap);
			return;
		}
		least = gap < least ? gap : least;
		if (tries == METRICS_READ_SPINS + METRICS_READ_NAPS) {
			atomic_store(&s->stuck, least);
			return;
		}
		read_pause(tries);
	}
}

/*
 * A sample value: an integer as such, else %.9g; NaN and the infinities as
 * the exposition format spells them.
 * NOTE: the range is checked before the cast: converting NaN, an infinity or
 * a double beyond long long's range to long long is undefined behaviour.
 */
static void
number(struct buf *out, double v)
{
	if (isnan(v))
		buf_puts(out, "NaN");
	else if (isinf(v))
		buf_puts(out, v > 0 ? "+Inf" : "-Inf");
	else if (v < 1e15 && v > -1e15 && v == (double)(long long)v)
		buf_printf(out, "%lld", (long long)v);
	else
		buf_printf(out, "%.9g", v);
}

static void
line(struct buf *out, const char *name, const char *suffix, const char *labels,
    const char *extra, double v)
{
	int any = labels[0] || (extra && extra[0]);

	buf_printf(out, "%s%s", name, suffix);
	if (any)
		buf_printf(out, "{%s%s%s}", labels, labels[0] && extra && extra[0] ? "," : "",
		    extra ? extra : "");
	buf_puts(out, " ");
	number(out, v);
	buf_puts(out, "\n");
}

void
metrics_render(struct buf *out)
{
	const char *type;
	char le[32];
	long long inflight = 0;
	int workers = 0, i, k, b;
	unsigned long long cum;
	struct histogram_read h;

	if (t == NULL)
		return;
	for (i = 0; i < METRICS_PROCS_MAX; i++) {
		if (alive(&t->procs[i])) {
			workers++;
			inflight += atomic_load(&t->procs[i].inflight);
		}
	}
	for (k = 0; k < (int)NKNOWN; k++) {
		type = known[k].kind == K_COUNTER ? "counter" :
		    known[k].kind == K_GAUGE ? "gauge" : "histogram";
		buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", known[k].name, known[k].help,
		    known[k].name, type);
		if (strcmp(known[k].name, "valerie_workers") == 0) {
			line(out, known[k].name, "", "", NULL, workers);
			continue;
		}
		if (strcmp(known[k].name, "valerie_inflight_requests") == 0) {
			line(out, known[k].name, "", "", NULL, (double)inflight);
			continue;
		}
		for (i = 0; i < METRICS_SERIES_MAX; i++) {
			struct metrics_series *s = &t->s[i];

			if (!atomic_load(&s->used) || strcmp(s->name, known[k].name) != 0 ||
			    s->kind != (int)known[k].kind)
				continue;
			if (s->kind == K_GAUGE && atomic_load(&s->pool) != atomic_load(&t->pool))
				continue;   /* an earlier pool's: see struct table */
			if (s->kind != K_HISTOGRAM) {
				line(out, s->name, "", s->labels, NULL,
				    bits_to_double(atomic_load(&s->value)));
				continue;
			}
			/*
			 * Read whole first, formatted after. +Inf is _count, as
			 * Prometheus expects; the cap only matters after an observer
			 * died half-way (its bucket counted, never its count).
			 */
			histogram_read(s, &h);
			cum = 0;
			for (b = 0; b < METRICS_BUCKETS; b++) {
				cum += h.buckets[b];
				if (cum > h.count)
					cum = h.count;
				snprintf(le, sizeof(le), "le=\"%g\"", bounds[b]);
				line(out, s->name, "_bucket", s->labels, le, (double)cum);
			}
			line(out, s->name, "_bucket", s->labels, "le=\"+Inf\"", (double)h.count);
			line(out, s->name, "_sum", s->labels, NULL, h.sum);
			line(out, s->name, "_count", s->labels, NULL, (double)h.count);
		}
	}
}
