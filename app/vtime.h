/* vtime: wall-clock and monotonic time in milliseconds, and the ISO 8601 form. */
#ifndef VALERIE_VTIME_H
#define VALERIE_VTIME_H

#include <stddef.h>

/* Unix time in milliseconds. */
long long vtime_now_ms(void);

/* CLOCK_MONOTONIC in milliseconds: for durations and deadlines. */
long long vtime_mono_ms(void);

/* Writes "2026-11-22T01:02:03.456Z" (24 bytes and a NUL) into out[32]. */
void vtime_iso(long long ms, char out[32]);

#endif
