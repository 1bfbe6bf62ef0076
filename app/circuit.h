/* circuit: circuit breakers whose state every worker process of the host sees (shared memory). */
#ifndef VALERIE_CIRCUIT_H
#define VALERIE_CIRCUIT_H

#include <stddef.h>

#define CIRCUIT_MAX 64          /* breakers per pool: providers and agents */
#define CIRCUIT_NAME_MAX 63     /* "provider:openai", "agent:reserva" */

enum circuit_state {
	CIRCUIT_CLOSED = 0,
	CIRCUIT_HALF_OPEN = 1,
	CIRCUIT_OPEN = 2
};

struct circuits;   /* the mapped table, per process */
struct circuit;    /* one breaker, in shared memory */

/*
 * Maps (creating if needed) the breaker table in `path`, a file every worker
 * process of the pool opens: its state is shared through MAP_SHARED memory
 * with lock-free atomics, so a circuit one process opens is open for all.
 * NULL with `err` filled on failure.
 */
struct circuits *circuits_open(const char *path, char *err, size_t errlen);
void circuits_close(struct circuits *cs);

/* For tests: the file holding this boot's id (/proc/sys/kernel/random/boot_id). */
void circuits_set_boot_id_file(const char *path);

/*
 * The breaker named `name`, created closed if new (creation is serialised
 * across processes with a file lock). NULL when the table is full.
 */
struct circuit *circuits_get(struct circuits *cs, const char *name);

/*
 * Whether a call may go out now. Closed: yes. Open: no, until `reset_ms`
 * passed since it opened; then exactly one caller gets yes (the half-open
 * probe). Half-open: no, unless the probe has been out longer than
 * `reset_ms` (it died), then one new probe.
 */
int circuit_allow(struct circuit *c, long long now_ms, long long reset_ms);

/* A call succeeded: the circuit closes and the failure count resets. */
void circuit_success(struct circuit *c);

/* A call failed: a probe's failure reopens; `threshold` failures in a row open. */
void circuit_failure(struct circuit *c, long long now_ms, int threshold);

/* The state now (an open circuit whose reset time passed reads half-open). */
enum circuit_state circuit_state_now(const struct circuit *c, long long now_ms, long long reset_ms);

const char *circuit_name(const struct circuit *c);

/* Monotonic milliseconds, comparable across the processes of one host. */
long long circuit_now_ms(void);

#endif
