/* redis_dump: Valerie's Redis keys to a file and back (DUMP and RESTORE over the network). */
#include "config.h"

#include "redis_dump.h"
#include "store_redis.h"

#include <hiredis/hiredis.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/*
 * The file. All integers are unsigned and big-endian.
 *
 *   "valerie-redis-keys 1\n"   the header line: the format's name and version
 *   then one record a key:
 *     u32  key length, 1..REDIS_DUMP_KEY_MAX
 *     ...  the key's bytes (it starts with STORE_REDIS_KEY_PREFIX)
 *     u64  the milliseconds the key had left at export (PTTL); 0: no expiry
 *     u32  payload length, 1..REDIS_DUMP_PAYLOAD_MAX
 *     ...  the payload: DUMP's serialized value (Redis's own format, with its
 *          RDB version and CRC64: RESTORE checks both)
 *   then the end:
 *     u32  0 (no record has an empty key)
 *     u64  the number of records before it
 *
 * Nothing follows the end. A file that stops before its end is truncated: the
 * export writes the end only after its last record, so an export that failed
 * or was cut short never passes for a whole one.
 */
#define REDIS_DUMP_HEADER "valerie-redis-keys 1\n"
#define REDIS_DUMP_MATCH STORE_REDIS_KEY_PREFIX "*"
#define REDIS_DUMP_SCAN_COUNT "500"                       /* keys SCAN looks at a step */
#define REDIS_DUMP_KEY_MAX 4096                           /* Valerie's keys are < 400 bytes */
#define REDIS_DUMP_PAYLOAD_MAX (512U * 1024 * 1024)       /* Redis's proto-max-bulk-len */
#define REDIS_DUMP_TTL_MAX (100LL * 366 * 24 * 3600 * 1000) /* a century, in ms */

/* Writes `n` bytes of `v` big-endian into p. */
static void
put_be(unsigned char *p, uint64_t v, int n)
{
	int i;

	for (i = n - 1; i >= 0; i--) {
		p[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
}

static uint64_t
get_be(const unsigned char *p, int n)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* A key for an error message: at most 100 bytes, anything not printable as '?'. */
static void
printable(char *out, size_t outsize, const char *key, size_t len)
{
	size_t i, n = len < 100 ? len : 100;

	if (n >= outsize)
		n = outsize - 1;
	for (i = 0; i < n; i++)
		out[i] = key[i] >= 0x20 && key[i] < 0x7f ? key[i] : '?';
	out[n] = '\0';
}

/* The text of a failed command: the connection's error, or the reply's. */
static void
command_failed(char *err, size_t errlen, const redisContext *ctx, const char *op,
    const redisReply *r)
{
	if (r == NULL)
		snprintf(err, errlen, "redis: %s: %s", op, ctx->errstr[0] ? ctx->errstr :
		    "connection error");
	else if (r->type == REDIS_REPLY_ERROR)
		snprintf(err, errlen, "redis: %s: %.160s", op, r->str);
	else
		snprintf(err, errlen, "redis: %s: unexpected reply of type %d", op, r->type);
}

/* Writes one record; 0, or -1 on a write error. */
static int
write_record(FILE *out, const char *key, size_t klen, long long ttl_ms, const char *payload,
    size_t plen)
{
	unsigned char n[8];

	put_be(n, klen, 4);
	if (fwrite(n, 1, 4, out) != 4 || fwrite(key, 1, klen, out) != klen)
		return -1;
	put_be(n, (uint64_t)ttl_ms, 8);
	if (fwrite(n, 1, 8, out) != 8)
		return -1;
	put_be(n, plen, 4);
	if (fwrite(n, 1, 4, out) != 4 || fwrite(payload, 1, plen, out) != plen)
		return -1;
	return 0;
}

/*
 * Writes the record of `key` from its PTTL and DUMP replies. A key gone
 * meanwhile (PTTL -2, or DUMP nil) counts as vanished and writes nothing.
 */
static enum redis_dump_status
take_dump(const redisContext *ctx, FILE *out, const char *key, size_t klen,
    const redisReply *ttl, const redisReply *dump, struct redis_dump_stats *stats, char *err,
    size_t errlen)
{
	long long ttl_ms;

	if (ttl == NULL || ttl->type != REDIS_REPLY_INTEGER || ttl->integer < -2) {
		command_failed(err, errlen, ctx, "PTTL", ttl);
		return REDIS_DUMP_UNAVAILABLE;
	}
	if (ttl->integer == -2 || dump == NULL || dump->type == REDIS_REPLY_NIL) {
		stats->vanished++;
		return REDIS_DUMP_OK;
	}
	if (dump->type != REDIS_REPLY_STRING || dump->len == 0 ||
	    dump->len > REDIS_DUMP_PAYLOAD_MAX) {
		command_failed(err, errlen, ctx, "DUMP", dump);
		return REDIS_DUMP_UNAVAILABLE;
	}
	/* NOTE: 0 is "no expiry" in the file, as in RESTORE; a key 0 ms from expiry gets 1. */
	ttl_ms = ttl->integer == -1 ? 0 : ttl->integer == 0 ? 1 : ttl->integer;
	if (ttl_ms > REDIS_DUMP_TTL_MAX)
		ttl_ms = REDIS_DUMP_TTL_MAX;
	if (write_record(out, key, klen, ttl_ms, dump->str, dump->len) != 0) {
		snprintf(err, errlen, "writing the export: %s", strerror(errno));
		return REDIS_DUMP_IO;
	}
	stats->keys++;
	return REDIS_DUMP_OK;
}

/*
 * The part of a session's key after "valerie:{<sid>}:" ("meta", "turns",
 * "idem"; store_redis.c's layout), and the length of the key before it;
 * NULL for any other key.
 */
static const char *
session_part(const char *key, size_t len, size_t *stem)
{
	static const char prefix[] = STORE_REDIS_KEY_PREFIX "{";
	const char *close;

	if (len <= sizeof(prefix) - 1 || memcmp(key, prefix, sizeof(prefix) - 1) != 0)
		return NULL;
	close = memchr(key, '}', len);
	if (close == NULL || close == key + sizeof(prefix) - 1 || close + 2 > key + len ||
	    close[1] != ':')
		return NULL;
	*stem = (size_t)(close + 2 - key);
	return close + 2;
}

/* Whether `part` (of `len` bytes) is exactly `name`. */
static int
part_is(const char *part, size_t len, const char *name)
{
	return strlen(name) == len && memcmp(part, name, len) == 0;
}

static const char *const session_parts[] = {"meta", "turns", "idem"};
#define SESSION_PARTS (sizeof(session_parts) / sizeof(session_parts[0]))

/*
 * Exports one key SCAN listed: PTTL and DUMP in one round trip. A session's
 * keys go together, as one transaction when SCAN lists its meta: its turn
 * list and turn count must agree in the file, as store_redis.c's scripts
 * keep them (taken a moment apart under traffic, a restored session was
 * corrupt). Its list and idempotency keys listed on their own are skipped:
 * they are exported with their meta, and without one they are no session.
 */
static enum redis_dump_status
export_key(redisContext *ctx, FILE *out, const redisReply *key, struct redis_dump_stats *stats,
    char *err, size_t errlen)
{
	const char *argv[2], *part;
	size_t lens[2], stem = 0, plen, i, nkeys = 1;
	char names[SESSION_PARTS][REDIS_DUMP_KEY_MAX + 8];
	size_t nlens[SESSION_PARTS];
	redisReply *r = NULL, *exec = NULL;
	enum redis_dump_status s = REDIS_DUMP_OK;
	char shown[104];
	int group = 0;

	printable(shown, sizeof(shown), key->str, key->len);
	if (key->len == 0 || key->len > REDIS_DUMP_KEY_MAX) {
		snprintf(err, errlen, "redis: key \"%s\" of %zu bytes: over the format's %d",
		    shown, key->len, REDIS_DUMP_KEY_MAX);
		return REDIS_DUMP_UNAVAILABLE;
	}
	part = session_part(key->str, key->len, &stem);
	plen = part != NULL ? key->len - stem : 0;
	if (part != NULL && (part_is(part, plen, "turns") || part_is(part, plen, "idem")))
		return REDIS_DUMP_OK;
	memcpy(names[0], key->str, key->len);
	nlens[0] = key->len;
	if (part != NULL && part_is(part, plen, "meta")) {
		group = 1;
		nkeys = SESSION_PARTS;
		for (i = 1; i < SESSION_PARTS; i++) {
			memcpy(names[i], key->str, stem);
			nlens[i] = stem + strlen(session_parts[i]);
			memcpy(names[i] + stem, session_parts[i], strlen(session_parts[i]));
		}
	}
	argv[0] = "MULTI";
	lens[0] = 5;
	if (group && redisAppendCommandArgv(ctx, 1, argv, lens) != REDIS_OK)
		goto nomem;
	for (i = 0; i < nkeys; i++) {
		argv[1] = names[i];
		lens[1] = nlens[i];
		argv[0] = "PTTL";
		lens[0] = 4;
		if (redisAppendCommandArgv(ctx, 2, argv, lens) != REDIS_OK)
			goto nomem;
		argv[0] = "DUMP";
		if (redisAppendCommandArgv(ctx, 2, argv, lens) != REDIS_OK)
			goto nomem;
	}
	argv[0] = "EXEC";
	lens[0] = 4;
	if (group && redisAppendCommandArgv(ctx, 1, argv, lens) != REDIS_OK)
		goto nomem;
	if (!group) {
		redisReply *ttl = NULL, *dump = NULL;

		if (redisGetReply(ctx, (void **)&ttl) != REDIS_OK ||
		    redisGetReply(ctx, (void **)&dump) != REDIS_OK) {
			command_failed(err, errlen, ctx, "PTTL/DUMP", NULL);
			s = REDIS_DUMP_UNAVAILABLE;
		} else {
			s = take_dump(ctx, out, names[0], nlens[0], ttl, dump, stats, err, errlen);
		}
		freeReplyObject(ttl);
		freeReplyObject(dump);
		return s;
	}
	/* MULTI's +OK and six +QUEUED, then EXEC's array of the six replies. */
	for (i = 0; i < 1 + 2 * nkeys; i++) {
		if (redisGetReply(ctx, (void **)&r) != REDIS_OK) {
			command_failed(err, errlen, ctx, "MULTI", NULL);
			return REDIS_DUMP_UNAVAILABLE;
		}
		if (r->type == REDIS_REPLY_ERROR && s == REDIS_DUMP_OK) {
			command_failed(err, errlen, ctx, "MULTI", r);
			s = REDIS_DUMP_UNAVAILABLE;
		}
		freeReplyObject(r);
		r = NULL;
	}
	if (redisGetReply(ctx, (void **)&exec) != REDIS_OK) {
		command_failed(err, errlen, ctx, "EXEC", NULL);
		return REDIS_DUMP_UNAVAILABLE;
	}
	if (s == REDIS_DUMP_OK && (exec->type != REDIS_REPLY_ARRAY ||
	    exec->elements != 2 * nkeys)) {
		command_failed(err, errlen, ctx, "EXEC", exec);
		s = REDIS_DUMP_UNAVAILABLE;
	}
	/* A session whose meta went meanwhile is no session: nothing of it is written. */
	if (s == REDIS_DUMP_OK && exec->element[0]->type == REDIS_REPLY_INTEGER &&
	    exec->element[0]->integer == -2) {
		stats->vanished++;
		nkeys = 0;
	}
	for (i = 0; s == REDIS_DUMP_OK && i < nkeys; i++) {
		/* The list and the idempotency keys may be absent: a session of no turns. */
		if (i > 0 && exec->element[2 * i]->type == REDIS_REPLY_INTEGER &&
		    exec->element[2 * i]->integer == -2)
			continue;
		s = take_dump(ctx, out, names[i], nlens[i], exec->element[2 * i],
		    exec->element[2 * i + 1], stats, err, errlen);
	}
	freeReplyObject(exec);
	return s;
nomem:
	snprintf(err, errlen, "out of memory");
	return REDIS_DUMP_NOMEM;
}

enum redis_dump_status
redis_dump_export(const char *url, FILE *out, struct redis_dump_stats *stats, char *err,
    size_t errlen)
{
	redisContext *ctx;
	redisReply *r = NULL;
	const char *argv[6] = {"SCAN", NULL, "MATCH", REDIS_DUMP_MATCH, "COUNT",
	    REDIS_DUMP_SCAN_COUNT};
	size_t lens[6], i;
	char cursor[32] = "0";
	unsigned char end[12];
	enum redis_dump_status s = REDIS_DUMP_OK;

	memset(stats, 0, sizeof(*stats));
	ctx = store_redis_connect(url, err, errlen);
	if (ctx == NULL)
		return REDIS_DUMP_UNAVAILABLE;
	if (fwrite(REDIS_DUMP_HEADER, 1, sizeof(REDIS_DUMP_HEADER) - 1, out) !=
	    sizeof(REDIS_DUMP_HEADER) - 1)
		goto io;
	do {
		argv[1] = cursor;
		for (i = 0; i < 6; i++)
			lens[i] = strlen(argv[i]);
		r = redisCommandArgv(ctx, 6, argv, lens);
		if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    r->element[0]->type != REDIS_REPLY_STRING ||
		    r->element[0]->len >= sizeof(cursor) ||
		    r->element[1]->type != REDIS_REPLY_ARRAY) {
			command_failed(err, errlen, ctx, "SCAN", r);
			s = REDIS_DUMP_UNAVAILABLE;
			goto out;
		}
		memcpy(cursor, r->element[0]->str, r->element[0]->len);
		cursor[r->element[0]->len] = '\0';
		for (i = 0; i < r->element[1]->elements; i++) {
			if (r->element[1]->element[i]->type != REDIS_REPLY_STRING) {
				command_failed(err, errlen, ctx, "SCAN", r->element[1]->element[i]);
				s = REDIS_DUMP_UNAVAILABLE;
				goto out;
			}
			s = export_key(ctx, out, r->element[1]->element[i], stats, err, errlen);
			if (s != REDIS_DUMP_OK)
				goto out;
		}
		freeReplyObject(r);
		r = NULL;
	} while (strcmp(cursor, "0") != 0);
	put_be(end, 0, 4);
	put_be(end + 4, (uint64_t)stats->keys, 8);
	if (fwrite(end, 1, sizeof(end), out) != sizeof(end) || fflush(out) != 0 || ferror(out))
		goto io;
out:
	freeReplyObject(r);
	redisFree(ctx);
	return s;
io:
	snprintf(err, errlen, "writing the export: %s", strerror(errno));
	s = REDIS_DUMP_IO;
	goto out;
}

/* Reads exactly n bytes: 0, 1 when the file ends first, -1 on a read error. */
static int
read_exact(FILE *in, void *p, size_t n)
{
	if (n == 0 || fread(p, 1, n, in) == n)
		return 0;
	return ferror(in) ? -1 : 1;
}

/* The message of a short or failed read `what` after `keys` records. */
static enum redis_dump_status
read_failed(int rc, const char *what, long long keys, char *err, size_t errlen)
{
	if (rc < 0) {
		snprintf(err, errlen, "reading the export: %s", strerror(errno));
		return REDIS_DUMP_IO;
	}
	snprintf(err, errlen, "truncated export: it ends inside %s after %lld key(s) "
	    "(those are restored; the rest of the backup is missing)", what, keys);
	return REDIS_DUMP_BADFILE;
}

enum redis_dump_status
redis_dump_import(const char *url, FILE *in, struct redis_dump_stats *stats, char *err,
    size_t errlen)
{
	char header[sizeof(REDIS_DUMP_HEADER) - 1], key[REDIS_DUMP_KEY_MAX], shown[104];
	char ttl[24];
	unsigned char n[8];
	const char *argv[5] = {"RESTORE", key, ttl, NULL, "REPLACE"};
	size_t lens[5];
	redisContext *ctx = NULL;
	redisReply *r = NULL;
	char *payload = NULL;
	uint64_t klen, plen, ttl_ms, count;
	enum redis_dump_status s = REDIS_DUMP_OK;
	int rc;

	memset(stats, 0, sizeof(*stats));
	/* The header first: a wrong file is refused before Redis is touched. */
	rc = read_exact(in, header, sizeof(header));
	if (rc < 0)
		return read_failed(rc, "the header", 0, err, errlen);
	if (rc > 0 || memcmp(header, REDIS_DUMP_HEADER, sizeof(header)) != 0) {
		snprintf(err, errlen, "not a valerie redis-export file (no \"%.*s\" header line)",
		    (int)sizeof(header) - 1, REDIS_DUMP_HEADER);
		return REDIS_DUMP_BADFILE;
	}
	ctx = store_redis_connect(url, err, errlen);
	if (ctx == NULL)
		return REDIS_DUMP_UNAVAILABLE;
	for (;;) {
		if ((rc = read_exact(in, n, 4)) != 0) {
			s = read_failed(rc, "a record's key length (no end marker)", stats->keys,
			    err, errlen);
			goto out;
		}
		klen = get_be(n, 4);
		if (klen == 0)
			break;
		if (klen > REDIS_DUMP_KEY_MAX) {
			snprintf(err, errlen, "damaged export: record %lld has a key of %llu bytes "
			    "(at most %d)", stats->keys + 1, (unsigned long long)klen,
			    REDIS_DUMP_KEY_MAX);
			s = REDIS_DUMP_BADFILE;
			goto out;
		}
		if ((rc = read_exact(in, key, (size_t)klen)) != 0 ||
		    (rc = read_exact(in, n, 8)) != 0) {
			s = read_failed(rc, "a record's key or TTL", stats->keys, err, errlen);
			goto out;
		}
		ttl_ms = get_be(n, 8);
		printable(shown, sizeof(shown), key, (size_t)klen);
		if (klen < sizeof(STORE_REDIS_KEY_PREFIX) - 1 ||
		    memcmp(key, STORE_REDIS_KEY_PREFIX, sizeof(STORE_REDIS_KEY_PREFIX) - 1) != 0 ||
		    ttl_ms > (uint64_t)REDIS_DUMP_TTL_MAX) {
			snprintf(err, errlen, "damaged export: record %lld (key \"%s\") has a key "
			    "outside " STORE_REDIS_KEY_PREFIX "* or a TTL over a century",
			    stats->keys + 1, shown);
			s = REDIS_DUMP_BADFILE;
			goto out;
		}
		if ((rc = read_exact(in, n, 4)) != 0) {
			s = read_failed(rc, "a record's payload length", stats->keys, err, errlen);
			goto out;
		}
		plen = get_be(n, 4);
		if (plen == 0 || plen > REDIS_DUMP_PAYLOAD_MAX) {
			snprintf(err, errlen, "damaged export: record %lld (key \"%s\") has a "
			    "payload of %llu bytes", stats->keys + 1, shown, (unsigned long long)plen);
			s = REDIS_DUMP_BADFILE;
			goto out;
		}
		payload = malloc((size_t)plen);
		if (payload == NULL) {
			snprintf(err, errlen, "out of memory");
			s = REDIS_DUMP_NOMEM;
			goto out;
		}
		if ((rc = read_exact(in, payload, (size_t)plen)) != 0) {
			s = read_failed(rc, "a record's payload", stats->keys, err, errlen);
			goto out;
		}
		lens[0] = 7;
		lens[1] = (size_t)klen;
		lens[2] = (size_t)snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)ttl_ms);
		argv[3] = payload;
		lens[3] = (size_t)plen;
		lens[4] = 7;
		r = redisCommandArgv(ctx, 5, argv, lens);
		if (r == NULL || r->type != REDIS_REPLY_STATUS || strcmp(r->str, "OK") != 0) {
			size_t used;

			command_failed(err, errlen, ctx, "RESTORE", r);
			used = strlen(err);
			snprintf(err + used, errlen - used, " (key \"%s\", after %lld restored)",
			    shown, stats->keys);
			s = REDIS_DUMP_UNAVAILABLE;
			goto out;
		}
		freeReplyObject(r);
		r = NULL;
		free(payload);
		payload = NULL;
		stats->keys++;
	}
	if ((rc = read_exact(in, n, 8)) != 0) {
		s = read_failed(rc, "the end marker", stats->keys, err, errlen);
		goto out;
	}
	count = get_be(n, 8);
	if (count != (uint64_t)stats->keys || fgetc(in) != EOF) {
		snprintf(err, errlen, "damaged export: the end says %llu key(s), %lld read, or "
		    "bytes follow the end", (unsigned long long)count, stats->keys);
		s = REDIS_DUMP_BADFILE;
		goto out;
	}
	if (ferror(in)) {
		s = read_failed(-1, "the end marker", stats->keys, err, errlen);
		goto out;
	}
out:
	freeReplyObject(r);
	free(payload);
	redisFree(ctx);
	return s;
}
