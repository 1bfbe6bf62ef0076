/* redis_dump: Valerie's Redis keys to a file and back (DUMP and RESTORE over the network). */
#ifndef VALERIE_REDIS_DUMP_H
#define VALERIE_REDIS_DUMP_H

#include <stdio.h>

enum redis_dump_status {
	REDIS_DUMP_OK = 0,
	REDIS_DUMP_UNAVAILABLE,   /* cannot connect, lost the connection, or a command refused */
	REDIS_DUMP_BADFILE,       /* not an export, truncated, or a record out of bounds */
	REDIS_DUMP_IO,            /* reading or writing the file failed */
	REDIS_DUMP_NOMEM
};

/* What one export or import did. Plain data. */
struct redis_dump_stats {
	long long keys;       /* records written (export) or keys restored (import) */
	long long vanished;   /* export: keys SCAN listed that expired or went before DUMP */
};

/*
 * Writes every key of the Redis at `url` (VALERIE_SESSION_REDIS_URL) whose
 * name starts with STORE_REDIS_KEY_PREFIX to `out` (borrowed, left open; the
 * caller closes it and checks the close), in the format redis_dump.c
 * describes: the key, the milliseconds it has left (0: no expiry) and DUMP's
 * serialized value. NOTE: SCAN walks a live server, so the export is not one
 * instant: a key written meanwhile may or may not be in it, and a key may
 * appear twice (the import then restores it twice, harmlessly). On error
 * `err` says why and `out` holds a file without its end marker, which the
 * import refuses.
 */
enum redis_dump_status redis_dump_export(const char *url, FILE *out,
    struct redis_dump_stats *stats, char *err, size_t errlen);

/*
 * Reads an export from `in` (borrowed) and restores each key into the Redis
 * at `url` with RESTORE key ttl payload REPLACE: a key of the file replaces
 * the key of that name, keys not in the file are left alone, a key gets the
 * time it had left when exported. Refuses keys outside STORE_REDIS_KEY_PREFIX.
 * Streams: on a truncated or damaged file, the keys before the damage are
 * restored already (stats->keys says how many) and BADFILE is returned.
 */
enum redis_dump_status redis_dump_import(const char *url, FILE *in,
    struct redis_dump_stats *stats, char *err, size_t errlen);

#endif
