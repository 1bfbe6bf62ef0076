/* metrics: Prometheus metrics shared by every worker process of the pool (a mapped file). */
#ifndef VALERIE_METRICS_H
#define VALERIE_METRICS_H

#include <stddef.h>

#include "buf.h"

#define METRICS_SERIES_MAX 2048      /* series of the whole pool */
#define METRICS_NAME_MAX 63
#define METRICS_LABELS_MAX 191       /* the label text: route="/x",code="200" */
#define METRICS_BUCKETS 13           /* histogram buckets before +Inf */
#define METRICS_PROCS_MAX 256        /* worker processes tracked */

/*
 * NOTE: why shared memory. A scrape is answered by whichever worker nginx
 * picks, so every worker must see the pool's totals; a file mapped
 * MAP_SHARED by all of them, updated with lock-free atomics, gives that with
 * no I/O on the request path, and the numbers outlive a worker that dies
 * (counters do not go backwards when multiwatch replaces it). Series are
 * created under a file lock, then found without locks.
 */

/*
 * Maps (creating if needed) the metrics file at `path` for this process and
 * registers the process (for valerie_workers and the in-flight gauge).
 * Call once before threads start. Returns 0, or -1 with `err` filled.
 */
int metrics_open(const char *path, char *err, size_t errlen);
void metrics_close(void);

/* Label text is preformatted, e.g. `route="/health",method="GET",code="200"`, or "". */
void metrics_counter_add(const char *name, const char *labels, double v);
void metrics_gauge_set(const char *name, const char *labels, double v);
/* Adds `v` to a gauge; with 0, creates the series at 0 and leaves an existing one as it is. */
void metrics_gauge_add(const char *name, const char *labels, double v);
/*
 * A gauge an earlier pool wrote (the file outlives the pool: metrics.c,
 * struct table) is not rendered until this pool writes it. This keeps an
 * existing one with its value, as if written now; it creates nothing.
 */
void metrics_gauge_keep(const char *name, const char *labels);
void metrics_observe(const char *name, const char *labels, double seconds);
/*
 * The pool's value of a gauge (or counter) into *v: 0, or -1 when the series
 * does not exist (never created, or the metrics are not mapped). Creates nothing.
 */
int metrics_gauge_get(const char *name, const char *labels, double *v);

/*
 * A series looked up once and updated many times, for the request path: a
 * lookup by name hashes and compares the name and the label text. NULL when
 * the table is full or unmapped; the update functions accept NULL. Borrowed
 * from the mapped file: valid until metrics_close (series are never removed).
 */
struct metrics_series;
struct metrics_series *metrics_counter(const char *name, const char *labels);
struct metrics_series *metrics_histogram(const char *name, const char *labels);
struct metrics_series *metrics_gauge(const char *name, const char *labels);
void metrics_series_add(struct metrics_series *s, double v);
void metrics_series_set(struct metrics_series *s, double v);
void metrics_series_observe(struct metrics_series *s, double seconds);

/*
 * Changes at every metrics_open and metrics_close. A cache of series kept
 * past one request (by a thread, not by a handle that app_destroy frees)
 * holds the epoch it was filled in and looks its series up again when the
 * epoch has changed.
 */
unsigned long metrics_epoch(void);

/* This process's requests in flight (summed over live processes at scrape). */
void metrics_inflight_add(int delta);

/*
 * Escapes a label value into `out` (backslash, quote, newline), truncating
 * on a character boundary (never half an escape or a UTF-8 character).
 */
void metrics_label_value(const char *in, char *out, size_t outlen);

/*
 * Writes `name="value"` pairs joined by commas into `out`, from name, value,
 * ..., NULL; values already escaped (metrics_label_value). What does not fit
 * in `outlen` is left out a whole pair at a time (that pair and those after
 * it), so the text is always a valid label set. NOTE: no printf: a
 * completion builds six label sets, and glibc's printf costs about 1,000
 * instructions a call (bench/README.md).
 */
void metrics_labels(char *out, size_t outlen, ...) __attribute__((sentinel));

/*
 * Appends the exposition (Prometheus text format 0.0.4) of every known
 * metric: HELP, TYPE, then each series; valerie_workers and
 * valerie_inflight_requests are computed from the live processes.
 */
void metrics_render(struct buf *out);

#endif
