/* store_redis: the session store on Redis through hiredis: one lazy connection per thread, Lua appends. */
#include "config.h"

#include "conf.h"
#include "hex.h"
#include "store.h"
#include "store_impl.h"
#include "store_redis.h"
#include "vtime.h"

#include <hiredis/hiredis.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

/*
 * Keys, all of one session in one Redis Cluster slot through the {sid} hash tag:
 *   valerie:{<sid>}:meta   hash: owner, created_ms, updated_ms, turns (the last number)
 *   valerie:{<sid>}:turns  list: turn N's JSON text at index N-1
 *   valerie:{<sid>}:idem   hash: idempotency key -> turn number
 * The three keys share one expiry, slid by every append. Idempotency records
 * live in one hash rather than a key each so that sliding and deleting them
 * costs the same whatever the session's age.
 *   valerie:sessions       sorted set: sid by expiry (ms), for valerie_sessions_active;
 *                          its own slot, written after the append (never in the script,
 *                          which must keep to one slot), pruned when counted
 *   valerie:cache:<key>    string: store_cache_put's value, with its TTL (SET ... EX)
 *   valerie:rl:{<hash>}    hash: a rate-limit bucket (ratelimit.c names it, bucket_lua fills it)
 * store_redis.h's STORE_REDIS_KEY_PREFIX is what they share: redis_dump.c exports by it.
 */
#define INDEX_KEY STORE_REDIS_KEY_PREFIX "sessions"
#define CACHE_PREFIX STORE_REDIS_KEY_PREFIX "cache:"
#define KEY_PREFIX STORE_REDIS_KEY_PREFIX "{"
#define KEY_SIZE (sizeof(KEY_PREFIX) + STORE_ID_MAX + sizeof("}:turns"))

#define URL_VAR "VALERIE_SESSION_REDIS_URL"
#define URL_FORMS "redis://[[user]:password@]host[:port][/db] or " \
	"unix://[[user]:password@]/path/to/socket[?db=N]"

#define STORE_REDIS_PORT 6379
#define STORE_REDIS_CONNECT_TIMEOUT_MS 500     /* TCP or unix connect */
#define STORE_REDIS_COMMAND_TIMEOUT_MS 2000    /* one command: send and whole reply */
#define STORE_REDIS_BACKOFF_MIN_MS 100         /* first wait after a failure */
#define STORE_REDIS_BACKOFF_MAX_MS 2000        /* the wait doubles up to this */
#define STORE_REDIS_PRUNE_MS 1000              /* index pruned by a connection at most this often */
#define STORE_REDIS_HOST_MAX 255
#define STORE_REDIS_SECRET_MAX 256             /* user names and passwords, decoded */
#define STORE_REDIS_DB_MAX 1000000
#define STORE_REDIS_LOAD_CHUNK 16              /* turns a windowed load fetches at a time */
#define STORE_REDIS_ERR_MAX 256

/*
 * The largest reply read from Redis, protocol framing included; a bigger one
 * is refused (STORE_CORRUPT: retrying cannot help) and the connection dropped
 * unread. A turn must leave room for the rest of a load reply so that the
 * newest turn, which every load returns, stays readable. Tests build this file
 * with a smaller cap.
 */
#ifndef STORE_REDIS_REPLY_MAX
#define STORE_REDIS_REPLY_MAX (64 * 1024 * 1024)
#endif
#define STORE_REDIS_TURN_MAX (STORE_REDIS_REPLY_MAX - 4096)

#define STR_(x) #x
#define STR(x) STR_(x)

/* Error replies our scripts raise for stored data that breaks the model. */
#define CORRUPT_TAG "VALERIE_CORRUPT"

/*
 * KEYS: meta, turns, idem. ARGV: owner, now_ms, ttl_ms, messages_json[, idem_key].
 * Returns the new turn, minus the recorded turn when idem_key is already
 * recorded (nothing is written then: STORE_EXISTS), or 0 when the session
 * belongs to another owner (nothing written: NOT_FOUND). Checks before writing (a failed
 * script is not rolled back). A session whose meta is gone starts afresh even if an
 * evicted or half-expired list remains; so does one whose list is gone while its meta
 * remains (evicted under a volatile-* maxmemory-policy, or expiring a moment before
 * it), keeping its owner: that was a 500 at every turn until the meta expired.
 *
 * NOTE: the first write must be HSET. Redis at maxmemory refuses a script's
 * first write if it is a command that may grow memory (HSET, RPUSH), and
 * lets every later one through so as not to stop a script half-way; a DEL
 * first (not such a command) would let a new session's turn past maxmemory,
 * and a Redis without eviction would grow without bound.
 */
static const char append_lua[] =
	"local m = redis.call('HMGET', KEYS[1], 'turns', 'owner')\n"
	"local cur = tonumber(m[1] or '0')\n"
	"if cur == nil then\n"
	"  return redis.error_reply('" CORRUPT_TAG " turn counter is not a number')\n"
	"end\n"
	"if cur > 0 and m[2] ~= ARGV[1] then return 0 end\n"
	"local len = redis.call('LLEN', KEYS[2])\n"
	"if len == 0 then cur = 0 end\n"
	"if cur == 0 then\n"
	"  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'created_ms', ARGV[2])\n"
	"  redis.call('DEL', KEYS[2], KEYS[3])\n"
	"elseif len ~= cur then\n"
	"  return redis.error_reply('" CORRUPT_TAG " ' .. len .. ' turns stored, ' .. cur .. ' counted')\n"
	"end\n"
	"if cur > 0 and #ARGV >= 5 then\n"
	"  local prev = redis.call('HGET', KEYS[3], ARGV[5])\n"
	"  if prev then return -tonumber(prev) end\n"
	"end\n"
	"local n = cur + 1\n"
	"redis.call('HSET', KEYS[1], 'turns', n, 'updated_ms', ARGV[2])\n"
	"redis.call('RPUSH', KEYS[2], '{\"turn\":' .. n .. ',\"messages\":' .. ARGV[4] .. '}')\n"
	"if #ARGV >= 5 then\n"
	"  redis.call('HSET', KEYS[3], ARGV[5], n)\n"
	"end\n"
	"redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
	"redis.call('PEXPIRE', KEYS[2], ARGV[3])\n"
	"redis.call('PEXPIRE', KEYS[3], ARGV[3])\n"
	"return n\n";

/*
 * KEYS: meta, turns. ARGV: max_turns (0: all), max_chars (0: no limit),
 * before (0: none; else only turns numbered below it). Returns nil for no
 * session, else {owner, created_ms, updated_ms, turns, oldest turn text,
 * ..., newest}. Walks back from the newest turn (below `before`) with
 * negative LRANGE indices, a chunk at a time when characters bound the
 * window, so the work depends on the window, not on the session's length.
 * A turn counts its length plus one (its comma or bracket), as store_lmdb.c counts.
 * A meta whose list is gone (evicted, or expiring a moment before the meta) is no
 * session, as append_lua takes it.
 */
static const char load_lua[] =
	"local m = redis.call('HMGET', KEYS[1], 'owner', 'created_ms', 'updated_ms', 'turns')\n"
	"if not m[4] then return false end\n"
	"local n = tonumber(m[4])\n"
	"local len = redis.call('LLEN', KEYS[2])\n"
	"if len == 0 and n ~= nil and n > 0 then return false end\n"
	"if n == nil or len ~= n then\n"
	"  return redis.error_reply('" CORRUPT_TAG " ' .. len .. ' turns stored, ' .. tostring(m[4]) .. ' counted')\n"
	"end\n"
	"local maxt = tonumber(ARGV[1])\n"
	"local maxc = tonumber(ARGV[2])\n"
	"local before = tonumber(ARGV[3])\n"
	"local skip = 0\n"
	"if before > 0 and before - 1 < n then skip = n - (before - 1) end\n"
	"local want = n - skip\n"
	"if maxt > 0 and maxt < want then want = maxt end\n"
	"local chunk = want\n"
	"if maxc > 0 and chunk > " STR(STORE_REDIS_LOAD_CHUNK) " then\n"
	"  chunk = " STR(STORE_REDIS_LOAD_CHUNK) "\n"
	"end\n"
	"local picked, got, used, full = {}, 0, 0, false\n"
	"while got < want and not full do\n"
	"  local k = math.min(chunk, want - got)\n"
	"  local part = redis.call('LRANGE', KEYS[2], -(skip + got + k), -(skip + got + 1))\n"
	"  if #part == 0 then break end\n"
	"  for i = #part, 1, -1 do\n"
	"    local add = #part[i] + 1\n"
	"    if maxc > 0 and got > 0 and used + add > maxc then full = true break end\n"
	"    used = used + add\n"
	"    got = got + 1\n"
	"    picked[got] = part[i]\n"
	"  end\n"
	"end\n"
	"local out = {m[1], m[2], m[3], m[4]}\n"
	"for i = got, 1, -1 do out[#out + 1] = picked[i] end\n"
	"return out\n";

/*
 * A token bucket (the rate limit). KEYS: the bucket. ARGV: capacity, tokens
 * per millisecond. On the Redis server's clock, so every host shares one
 * time. Returns {1 if a token was taken else 0, the tokens left as text}.
 */
static const char bucket_lua[] =
	"local cap = tonumber(ARGV[1])\n"
	"local per_ms = tonumber(ARGV[2])\n"
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local b = redis.call('HMGET', KEYS[1], 'v', 't')\n"
	"local tokens, last = tonumber(b[1]), tonumber(b[2])\n"
	"if tokens == nil or last == nil then tokens, last = cap, now end\n"
	"if now > last then tokens = math.min(cap, tokens + (now - last) * per_ms) end\n"
	"local allowed = 0\n"
	"if tokens >= 1 then tokens = tokens - 1 allowed = 1 end\n"
	"redis.call('HSET', KEYS[1], 'v', tostring(tokens), 't', now)\n"
	"redis.call('PEXPIRE', KEYS[1], math.ceil((cap - tokens) / per_ms) + 1000)\n"
	"return {allowed, tostring(tokens)}\n";

/*
 * KEYS: meta, turns, idem. ARGV: idem_key. The turn recorded for idem_key, or nil
 * when there is none, or when the session is no session as load_lua and append_lua
 * take it (its meta gone, or its list gone under a counted meta): its next turn
 * starts it afresh and drops its idempotency keys, and a retry with one of them is
 * that next turn. NOTE: a key found whose turn is gone was a 503 "retry with the same
 * Idempotency-Key" at every retry, until the keys expired.
 */
static const char idem_lua[] =
	"local t = redis.call('HGET', KEYS[3], ARGV[1])\n"
	"if not t then return false end\n"
	"if not redis.call('HGET', KEYS[1], 'turns') then return false end\n"
	"if redis.call('LLEN', KEYS[2]) == 0 then return false end\n"
	"return t\n";

enum script { SCRIPT_APPEND, SCRIPT_LOAD, SCRIPT_BUCKET, SCRIPT_IDEM, SCRIPT_COUNT };

static const char *const script_text[SCRIPT_COUNT] = {append_lua, load_lua, bucket_lua,
	idem_lua};

/* Per process: where Redis is and how to log in. Read-only after open. */
struct redis_store {
	const struct conf *conf;                   /* borrowed */
	int unix_socket;
	char host[STORE_REDIS_HOST_MAX + 1];
	int port;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char user[STORE_REDIS_SECRET_MAX + 1];
	char password[STORE_REDIS_SECRET_MAX + 1];
	int db;
	char where[STORE_REDIS_HOST_MAX + 160];    /* for error texts: no secret */
};

/* Per thread: one hiredis connection, made on first use, remade after errors. */
struct redis_conn {
	struct redis_store *st;
	redisContext *ctx;                         /* NULL when not connected */
	unsigned long connects;                    /* connections made (WAIT's scope is one) */
	long long retry_at_ms;                     /* monotonic: no connect before */
	int backoff_ms;                            /* the next wait after a failure */
	char reason[STORE_REDIS_ERR_MAX];          /* why the last connection failed */
	char sha[SCRIPT_COUNT][41];                /* "" until SCRIPT LOAD answered */
	long long prune_at_ms;                     /* monotonic: no index prune before */
	char err[STORE_REDIS_ERR_MAX];
};

static struct timeval
ms_timeval(long long ms)
{
	struct timeval tv;

	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	return tv;
}

/* Replaces every occurrence of `secret` in the string `s` (of `size` bytes) by "[redacted]". */
static void
scrub(char *s, size_t size, const char *secret)
{
	static const char mark[] = "[redacted]";
	size_t slen = strlen(secret), mlen = sizeof(mark) - 1, off, tail;
	char *p = s;

	if (slen == 0)
		return;
	while ((p = strstr(p, secret)) != NULL) {
		off = (size_t)(p - s);
		if (off + mlen >= size) {
			*p = '\0';
			break;
		}
		tail = strlen(p + slen) + 1;
		if (off + mlen + tail > size)
			tail = size - off - mlen;
		memmove(p + mlen, p + slen, tail);
		memcpy(p, mark, mlen);
		s[size - 1] = '\0';
		p += mlen;
	}
}

/* Sets the connection's error text; the password never survives into it. */
static void set_err(struct redis_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
set_err(struct redis_conn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	scrub(c->err, sizeof(c->err), c->st->password);
}

/*
 * Closes the connection. With `backoff`, the next connect waits for the current
 * backoff, which then doubles up to its cap; without, the next call reconnects
 * at once (the server closed an idle connection, or a reply was refused).
 */
static void
conn_drop(struct redis_conn *c, int backoff)
{
	redisFree(c->ctx);
	c->ctx = NULL;
	if (backoff) {
		snprintf(c->reason, sizeof(c->reason), "%s", c->err);
		c->retry_at_ms = vtime_mono_ms() + c->backoff_ms;
		c->backoff_ms = c->backoff_ms * 2 > STORE_REDIS_BACKOFF_MAX_MS ?
		    STORE_REDIS_BACKOFF_MAX_MS : c->backoff_ms * 2;
	}
}

/* --- the URL ------------------------------------------------------------------ */

/* Strict decimal s[0..n): optional '-' when min < 0, digits only, in [min, max]; 0 or -1. */
static int
parse_dec(const char *s, size_t n, long long min, long long max, long long *out)
{
	long long v = 0;
	size_t i = 0;
	int neg = 0;

	if (n > 0 && s[0] == '-' && min < 0) {
		neg = 1;
		i = 1;
	}
	if (n == i || n - i > 18)
		return -1;
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (neg)
		v = -v;
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/*
 * Percent-decodes s[0..n) into out (NUL-terminated); 0 or -1. Refuses the
 * characters that end a URL's user part (so that what conf_to_json redacts is
 * exactly the password) and encoded NULs.
 */
static int
pct_decode(const char *s, size_t n, char *out, size_t outsize)
{
	size_t i, o = 0;
	int hi, lo;
	char ch;

	for (i = 0; i < n; i++) {
		ch = s[i];
		if (strchr("/?#@[] ", ch) != NULL)
			return -1;
		if (ch == '%') {
			if (i + 2 >= n)
				return -1;
			hi = hex_digit(s[i + 1]);
			lo = hex_digit(s[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			ch = (char)(hi * 16 + lo);
			i += 2;
		}
		if (o + 1 >= outsize)
			return -1;
		out[o++] = ch;
	}
	out[o] = '\0';
	return 0;
}

/* "[user]:password" (percent-encoded) into the store. */
static int
parse_userinfo(struct redis_store *st, const char *s, size_t n, char *why, size_t whylen)
{
	const char *colon = memchr(s, ':', n);

	if (colon == NULL) {
		snprintf(why, whylen, "the part before '@' must be :password or user:password");
		return -1;
	}
	if (pct_decode(s, (size_t)(colon - s), st->user, sizeof(st->user)) != 0 ||
	    pct_decode(colon + 1, n - (size_t)(colon + 1 - s), st->password,
	    sizeof(st->password)) != 0) {
		snprintf(why, whylen, "bad user or password: at most %d characters, with "
		    "/ ? # @ [ ] and spaces percent-encoded", STORE_REDIS_SECRET_MAX);
		return -1;
	}
	if (st->password[0] == '\0') {
		snprintf(why, whylen, "the password is empty");
		return -1;
	}
	return 0;
}

/* "host[:port]" or "[v6]:port" into the store. */
static int
parse_hostport(struct redis_store *st, const char *s, size_t n, char *why, size_t whylen)
{
	const char *end = s + n, *host, *rest, *close;
	const char *allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_";
	size_t hlen, i;
	long long port = STORE_REDIS_PORT;

	if (n > 0 && s[0] == '[') {
		close = memchr(s, ']', n);
		if (close == NULL) {
			snprintf(why, whylen, "an IPv6 host needs its closing ']'");
			return -1;
		}
		host = s + 1;
		hlen = (size_t)(close - host);
		rest = close + 1;
		allowed = "0123456789abcdefABCDEF:.";
	} else {
		host = s;
		rest = memchr(s, ':', n);
		if (rest == NULL)
			rest = end;
		hlen = (size_t)(rest - host);
	}
	if (hlen == 0 || hlen > STORE_REDIS_HOST_MAX) {
		snprintf(why, whylen, "the host is missing or longer than %d characters",
		    STORE_REDIS_HOST_MAX);
		return -1;
	}
	for (i = 0; i < hlen; i++)
		if (strchr(allowed, host[i]) == NULL || host[i] == '\0') {
			snprintf(why, whylen, "the host has a character hosts do not have");
			return -1;
		}
	if (rest < end && (*rest != ':' ||
	    parse_dec(rest + 1, (size_t)(end - rest - 1), 1, 65535, &port) != 0)) {
		snprintf(why, whylen, "the port must be a number from 1 to 65535");
		return -1;
	}
	memcpy(st->host, host, hlen);
	st->host[hlen] = '\0';
	st->port = (int)port;
	if (s[0] == '[')
		snprintf(st->where, sizeof(st->where), "[%s]:%d", st->host, st->port);
	else
		snprintf(st->where, sizeof(st->where), "%s:%d", st->host, st->port);
	return 0;
}

static int
parse_db(struct redis_store *st, const char *s, size_t n, char *why, size_t whylen)
{
	long long db;

	if (parse_dec(s, n, 0, STORE_REDIS_DB_MAX, &db) != 0) {
		snprintf(why, whylen, "the database must be a number from 0 to %d",
		    STORE_REDIS_DB_MAX);
		return -1;
	}
	st->db = (int)db;
	return 0;
}

/*
 * Parses the URL into the store; 0, or -1 with `why` filled. `why` never
 * quotes the URL: any part of it may be a password in the wrong place.
 */
static int
parse_url(struct redis_store *st, const char *url, char *why, size_t whylen)
{
	const char *p, *end, *at;
	size_t plen;

	if (strncmp(url, "redis://", 8) == 0) {
		p = url + 8;
		end = p + strcspn(p, "/?#");
		if (*end == '?' || *end == '#') {
			snprintf(why, whylen, "a redis:// URL takes no query or fragment (the "
			    "database goes in the path)");
			return -1;
		}
		at = memchr(p, '@', (size_t)(end - p));
		if (at != NULL) {
			if (parse_userinfo(st, p, (size_t)(at - p), why, whylen) != 0)
				return -1;
			p = at + 1;
		}
		if (parse_hostport(st, p, (size_t)(end - p), why, whylen) != 0)
			return -1;
		if (*end == '/' && end[1] != '\0' &&
		    parse_db(st, end + 1, strlen(end + 1), why, whylen) != 0)
			return -1;
		return 0;
	}
	if (strncmp(url, "unix://", 7) == 0) {
		p = url + 7;
		if (*p != '/') {
			at = strchr(p, '@');
			if (at == NULL || at[1] != '/') {
				snprintf(why, whylen, "a unix:// URL names an absolute path: "
				    "unix:///path/to/socket");
				return -1;
			}
			if (parse_userinfo(st, p, (size_t)(at - p), why, whylen) != 0)
				return -1;
			p = at + 1;
		}
		end = p + strcspn(p, "?#");
		plen = (size_t)(end - p);
		if (plen < 2 || plen >= sizeof(st->path)) {
			snprintf(why, whylen, "the socket path must be 2 to %zu characters",
			    sizeof(st->path) - 1);
			return -1;
		}
		if (*end != '\0' && strncmp(end, "?db=", 4) != 0) {
			snprintf(why, whylen, "the only query a unix:// URL takes is ?db=N");
			return -1;
		}
		if (*end == '?' && parse_db(st, end + 4, strlen(end + 4), why, whylen) != 0)
			return -1;
		memcpy(st->path, p, plen);
		st->path[plen] = '\0';
		st->unix_socket = 1;
		snprintf(st->where, sizeof(st->where), "unix:%s", st->path);
		return 0;
	}
	snprintf(why, whylen, "the scheme must be redis:// or unix://");
	return -1;
}

/* --- talking to Redis -------------------------------------------------------- */

/* Waits until fd is ready for `events` or the deadline passes: 0 ready, -1 timed out. */
static int
wait_fd(int fd, short events, long long deadline)
{
	struct pollfd p;
	long long left;
	int rc;

	for (;;) {
		left = deadline - vtime_mono_ms();
		if (left <= 0)
			return -1;
		p.fd = fd;
		p.events = events;
		p.revents = 0;
		rc = poll(&p, 1, (int)left);
		if (rc > 0)
			return 0;
		if (rc == 0)
			return -1;
		if (errno != EINTR)
			return 0;   /* let the read or write report it */
	}
}

/*
 * redisBufferWrite without SIGPIPE: hiredis writes with write(2), which raises
 * SIGPIPE on a connection the server closed. NOTE: the signal is blocked in
 * this thread for the write and, if the write raised it, consumed here, so the
 * store is safe in a program that does not ignore SIGPIPE.
 */
static int
write_nosigpipe(redisContext *ctx, int *done)
{
	sigset_t pipe_set, old, pending;
	struct timespec zero = {0, 0};
	int rc, was_pending;

	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	sigpending(&pending);
	was_pending = sigismember(&pending, SIGPIPE);
	rc = redisBufferWrite(ctx, done);
	if (rc != REDIS_OK && !was_pending)
		while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
			;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

/*
 * Sends one command on the connected context and reads its whole reply
 * within STORE_REDIS_COMMAND_TIMEOUT_MS, refusing replies over
 * STORE_REDIS_REPLY_MAX. OK with *out set (caller frees with
 * freeReplyObject; error replies included); else the connection is dropped:
 * UNAVAILABLE (I/O, timeout), CORRUPT (reply too large) or NOMEM.
 */
static enum store_status
exchange(struct redis_conn *c, const char *op, int argc, const char **argv,
    const size_t *argvlen, redisReply **out)
{
	redisContext *ctx = c->ctx;
	long long deadline = vtime_mono_ms() + STORE_REDIS_COMMAND_TIMEOUT_MS;
	size_t received = 0, before;
	void *reply = NULL;
	int done = 0;

	*out = NULL;
	if (redisAppendCommandArgv(ctx, argc, argv, argvlen) != REDIS_OK) {
		set_err(c, "redis %s: %s: out of memory", c->st->where, op);
		conn_drop(c, 0);
		return STORE_NOMEM;
	}
	while (!done) {
		if (wait_fd(ctx->fd, POLLOUT, deadline) != 0)
			goto timeout;
		if (write_nosigpipe(ctx, &done) != REDIS_OK)
			goto io;
	}
	for (;;) {
		if (redisGetReplyFromReader(ctx, &reply) != REDIS_OK)
			goto io;
		if (reply != NULL)
			break;
		if (wait_fd(ctx->fd, POLLIN, deadline) != 0)
			goto timeout;
		before = ctx->reader->len;
		if (redisBufferRead(ctx) != REDIS_OK)
			goto io;
		/* NOTE: a feed only appends; the reader compacts in GetReply, not here. */
		received += ctx->reader->len - before;
		if (received > STORE_REDIS_REPLY_MAX) {
			set_err(c, "redis %s: %s: reply larger than %d bytes, refused", c->st->where,
			    op, STORE_REDIS_REPLY_MAX);
			conn_drop(c, 0);
			return STORE_CORRUPT;
		}
	}
	*out = reply;
	return STORE_OK;
timeout:
	set_err(c, "redis %s: %s: no reply within %d ms", c->st->where, op,
	    STORE_REDIS_COMMAND_TIMEOUT_MS);
	conn_drop(c, 1);
	return STORE_UNAVAILABLE;
io:
	set_err(c, "redis %s: %s: %s", c->st->where, op,
	    ctx->errstr[0] ? ctx->errstr : "connection error");
	conn_drop(c, 1);
	return STORE_UNAVAILABLE;
}

/* The text of an error or status reply, for an error message. Borrowed. */
static const char *
reply_text(const redisReply *r)
{
	if (r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STATUS)
		return r->str;
	return "unexpected reply";
}

/* True when the reply is the status `text` (OK, PONG). */
static int
is_status(const redisReply *r, const char *text)
{
	return r->type == REDIS_REPLY_STATUS && strcmp(r->str, text) == 0;
}

/*
 * Logs in and selects the database on a fresh connection; OK, or UNAVAILABLE
 * with the error set (the caller drops the connection).
 */
static enum store_status
handshake(struct redis_conn *c)
{
	struct redis_store *st = c->st;
	const char *argv[3];
	size_t lens[3];
	char db[16];
	redisReply *r = NULL;
	enum store_status s = STORE_OK;
	int argc = 0, i;

	if (st->password[0] != '\0') {
		argv[argc++] = "AUTH";
		if (st->user[0] != '\0')
			argv[argc++] = st->user;
		argv[argc++] = st->password;
		for (i = 0; i < argc; i++)
			lens[i] = strlen(argv[i]);
		s = exchange(c, "AUTH", argc, argv, lens, &r);
		if (s != STORE_OK)
			goto out;
		if (!is_status(r, "OK")) {
			set_err(c, "redis %s: AUTH refused: %.160s", st->where, reply_text(r));
			s = STORE_UNAVAILABLE;
			goto out;
		}
		freeReplyObject(r);
		r = NULL;
	}
	if (st->db != 0) {
		snprintf(db, sizeof(db), "%d", st->db);
		argv[0] = "SELECT";
		argv[1] = db;
		lens[0] = 6;
		lens[1] = strlen(db);
		s = exchange(c, "SELECT", 2, argv, lens, &r);
		if (s != STORE_OK)
			goto out;
		if (!is_status(r, "OK")) {
			set_err(c, "redis %s: SELECT %d refused: %.160s", st->where, st->db,
			    reply_text(r));
			s = STORE_UNAVAILABLE;
		}
	}
out:
	freeReplyObject(r);
	return s;
}

/*
 * True when an idle connection can no longer be used: the server closed it (a
 * restart), reset it, or sent bytes nobody asked for. Costs one poll(2).
 */
static int
idle_broken(const redisContext *ctx)
{
	struct pollfd p = {ctx->fd, POLLIN, 0};

	if (ctx->err != 0)
		return 1;
	return poll(&p, 1, 0) > 0;
}

/*
 * Makes sure the connection is up: reuses it, or connects (within
 * STORE_REDIS_CONNECT_TIMEOUT_MS), logs in and selects the database. While
 * backing off after a failure it does not touch the network and answers
 * UNAVAILABLE at once, saying why the last attempt failed.
 */
static enum store_status
ensure(struct redis_conn *c)
{
	struct redis_store *st = c->st;
	struct timeval tv = ms_timeval(STORE_REDIS_CONNECT_TIMEOUT_MS);
	long long now;
	enum store_status s;

	if (c->ctx != NULL) {
		if (!idle_broken(c->ctx))
			return STORE_OK;
		conn_drop(c, 0);
	}
	now = vtime_mono_ms();
	if (now < c->retry_at_ms) {
		set_err(c, "%s (next attempt in %lld ms)", c->reason, c->retry_at_ms - now);
		return STORE_UNAVAILABLE;
	}
	c->connects++;
	c->ctx = st->unix_socket ? redisConnectUnixWithTimeout(st->path, tv) :
	    redisConnectWithTimeout(st->host, st->port, tv);
	if (c->ctx == NULL) {
		set_err(c, "redis %s: out of memory", st->where);
		return STORE_NOMEM;
	}
	if (c->ctx->err != 0) {
		set_err(c, "redis %s: cannot connect: %s", st->where, c->ctx->errstr);
		conn_drop(c, 1);
		return STORE_UNAVAILABLE;
	}
	if (redisSetTimeout(c->ctx, ms_timeval(STORE_REDIS_COMMAND_TIMEOUT_MS)) != REDIS_OK) {
		set_err(c, "redis %s: cannot set timeouts: %s", st->where, c->ctx->errstr);
		conn_drop(c, 1);
		return STORE_UNAVAILABLE;
	}
	if (!st->unix_socket)
		(void)redisEnableKeepAlive(c->ctx);
	s = handshake(c);
	if (s != STORE_OK) {
		if (c->ctx != NULL)
			conn_drop(c, 1);
		return s;
	}
	c->backoff_ms = STORE_REDIS_BACKOFF_MIN_MS;
	c->retry_at_ms = 0;
	c->reason[0] = '\0';
	return STORE_OK;
}

/*
 * Maps a reply that is not what `op` expects to a status and sets the error.
 * Script errors tagged CORRUPT_TAG and WRONGTYPE are stored data breaking the
 * model (CORRUPT); OOM is a server at maxmemory refusing writes (FULL: it is
 * up and still reads; nothing was written, the scripts' first write being the
 * one refused); other error replies (READONLY, LOADING, NOAUTH, MOVED,
 * BUSY...) are the store being unusable now (UNAVAILABLE).
 */
static enum store_status
reply_failed(struct redis_conn *c, const char *op, const redisReply *r)
{
	if (r->type != REDIS_REPLY_ERROR) {
		set_err(c, "redis %s: %s: unexpected reply of type %d", c->st->where, op, r->type);
		return STORE_CORRUPT;
	}
	set_err(c, "redis %s: %s: %.*s", c->st->where, op, (int)r->len, r->str);
	if (strstr(r->str, CORRUPT_TAG) != NULL || strstr(r->str, "WRONGTYPE") != NULL)
		return STORE_CORRUPT;
	/* NOTE: Redis 7 replies "OOM command not allowed ..."; 6 wraps it in "ERR Error running script". */
	if (strncmp(r->str, "OOM", 3) == 0 || strstr(r->str, "OOM command not allowed") != NULL) {
		set_err(c, "redis %s: %s: the server is at maxmemory and refuses writes (raise "
		    "maxmemory; an eviction policy would drop sessions): %.*s", c->st->where, op,
		    (int)(r->len > 80 ? 80 : r->len), r->str);
		return STORE_FULL;
	}
	/* A replica after a failover, or a server that lost our login: connect afresh. */
	if (strncmp(r->str, "READONLY", 8) == 0 || strncmp(r->str, "NOAUTH", 6) == 0)
		conn_drop(c, 1);
	return STORE_UNAVAILABLE;
}

/* One command: connect if needed, send, read. See exchange() for the statuses. */
static enum store_status
command(struct redis_conn *c, const char *op, int argc, const char **argv,
    const size_t *argvlen, redisReply **out)
{
	enum store_status s = ensure(c);

	*out = NULL;
	if (s != STORE_OK)
		return s;
	return exchange(c, op, argc, argv, argvlen, out);
}

#define SCRIPT_MAX_KEYS 3   /* the most any script takes */
#define SCRIPT_MAX_ARGS 5

/*
 * Runs a script by its SHA1 (EVALSHA), loading it on this connection's first
 * use and falling back to EVAL on NOSCRIPT (a restarted or flushed server;
 * EVAL caches it again). OK with *out set, the reply possibly an error reply.
 */
static enum store_status
run_script(struct redis_conn *c, enum script which, const char *op, int nkeys,
    const char **keys, int nargs, const char **args, const size_t *arglens, redisReply **out)
{
	const char *argv[3 + SCRIPT_MAX_KEYS + SCRIPT_MAX_ARGS];
	size_t lens[3 + SCRIPT_MAX_KEYS + SCRIPT_MAX_ARGS];
	char numkeys[8];
	redisReply *r = NULL;
	enum store_status s;
	int argc = 0, i;

	if (c->sha[which][0] == '\0') {
		argv[0] = "SCRIPT";
		argv[1] = "LOAD";
		argv[2] = script_text[which];
		for (i = 0; i < 3; i++)
			lens[i] = strlen(argv[i]);
		s = command(c, "SCRIPT LOAD", 3, argv, lens, &r);
		if (s != STORE_OK)
			return s;
		if (r->type != REDIS_REPLY_STRING || r->len != 40) {
			s = reply_failed(c, "SCRIPT LOAD", r);
			freeReplyObject(r);
			return s;
		}
		memcpy(c->sha[which], r->str, 40);
		c->sha[which][40] = '\0';
		freeReplyObject(r);
	}
	snprintf(numkeys, sizeof(numkeys), "%d", nkeys);
	argv[argc++] = "EVALSHA";
	argv[argc++] = c->sha[which];
	argv[argc++] = numkeys;
	for (i = 0; i < nkeys; i++)
		argv[argc++] = keys[i];
	for (i = 0; i < 3 + nkeys; i++)
		lens[i] = strlen(argv[i]);
	for (i = 0; i < nargs; i++) {
		argv[argc] = args[i];
		lens[argc++] = arglens[i];
	}
	s = command(c, op, argc, argv, lens, out);
	if (s == STORE_OK && (*out)->type == REDIS_REPLY_ERROR &&
	    strncmp((*out)->str, "NOSCRIPT", 8) == 0) {
		freeReplyObject(*out);
		*out = NULL;
		argv[0] = "EVAL";
		argv[1] = script_text[which];
		lens[0] = 4;
		lens[1] = strlen(script_text[which]);
		s = command(c, op, argc, argv, lens, out);
	}
	return s;
}

/* --- keys and checks --------------------------------------------------------- */

/* A session id as store.h defines it: 1..STORE_ID_MAX of [A-Za-z0-9_.:-]. */
static int
valid_sid(const char *sid)
{
	size_t n;

	if (sid == NULL)
		return 0;
	n = strspn(sid, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-");
	return n >= 1 && n <= STORE_ID_MAX && sid[n] == '\0';
}

static void
make_key(char *out, const char *sid, const char *kind)
{
	snprintf(out, KEY_SIZE, KEY_PREFIX "%s}:%s", sid, kind);
}

/* Starts an operation: clears the error; NOT_FOUND for an id no session can have. */
static enum store_status
begin(struct redis_conn *c, const char *sid)
{
	c->err[0] = '\0';
	if (!valid_sid(sid)) {
		set_err(c, "invalid session id");
		return STORE_NOT_FOUND;
	}
	return STORE_OK;
}

/* A bulk string holding a decimal integer in [min, max]. */
static int
reply_int(const redisReply *r, long long min, long long max, long long *out)
{
	return r->type == REDIS_REPLY_STRING ? parse_dec(r->str, r->len, min, max, out) : -1;
}

/* --- the store_ops ------------------------------------------------------------ */

static void *
redis_open(const struct conf *conf, char *err, size_t errlen)
{
	struct redis_store *st;
	char why[192];

	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	st->conf = conf;
	if (conf->session_redis_url == NULL) {
		snprintf(why, sizeof(why), "not set");
		goto bad;
	}
	if (parse_url(st, conf->session_redis_url, why, sizeof(why)) != 0)
		goto bad;
	return st;
bad:
	snprintf(err, errlen, URL_VAR ": %s (expected " URL_FORMS ")", why);
	explicit_bzero(st, sizeof(*st));
	free(st);
	return NULL;
}

static void
redis_close(void *p)
{
	struct redis_store *st = p;

	if (st == NULL)
		return;
	explicit_bzero(st, sizeof(*st));
	free(st);
}

static void *
redis_conn_new(void *p)
{
	struct redis_conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->st = p;
	c->backoff_ms = STORE_REDIS_BACKOFF_MIN_MS;
	return c;
}

static void
redis_conn_free(void *p)
{
	struct redis_conn *c = p;

	if (c == NULL)
		return;
	redisFree(c->ctx);
	free(c);
}

static const char *
redis_conn_error(const void *p)
{
	return ((const struct redis_conn *)p)->err;
}

static enum store_status
redis_load(void *p, const char *sid, int max_turns, size_t max_chars, int before,
    struct store_session_info *info, struct buf *turns_out)
{
	struct redis_conn *c = p;
	char meta[KEY_SIZE], turns[KEY_SIZE], a_turns[24], a_chars[24], a_before[24];
	const char *keys[2] = {meta, turns}, *args[3] = {a_turns, a_chars, a_before};
	size_t lens[3], i;
	long long created, updated, count;
	redisReply *r = NULL, **e;
	enum store_status s;

	if ((s = begin(c, sid)) != STORE_OK)
		return s;
	make_key(meta, sid, "meta");
	make_key(turns, sid, "turns");
	if (max_chars > (size_t)1 << 50)
		max_chars = (size_t)1 << 50;   /* exact in Lua's doubles, and no limit in effect */
	lens[0] = (size_t)snprintf(a_turns, sizeof(a_turns), "%d", max_turns > 0 ? max_turns : 0);
	lens[1] = (size_t)snprintf(a_chars, sizeof(a_chars), "%zu", max_chars);
	lens[2] = (size_t)snprintf(a_before, sizeof(a_before), "%d", before > 0 ? before : 0);
	s = run_script(c, SCRIPT_LOAD, "load", 2, keys, 3, args, lens, &r);
	if (s != STORE_OK)
		goto out;
	if (r->type == REDIS_REPLY_NIL) {
		s = STORE_NOT_FOUND;
		goto out;
	}
	if (r->type != REDIS_REPLY_ARRAY) {
		s = reply_failed(c, "load", r);
		goto out;
	}
	e = r->element;
	if (r->elements < 4 || e[0]->type != REDIS_REPLY_STRING || e[0]->len > STORE_ID_MAX ||
	    reply_int(e[1], -(1LL << 53), 1LL << 53, &created) != 0 ||
	    reply_int(e[2], -(1LL << 53), 1LL << 53, &updated) != 0 ||
	    reply_int(e[3], 1, INT_MAX, &count) != 0 || r->elements - 4 > (size_t)count) {
		set_err(c, "redis %s: load: session %s has malformed metadata", c->st->where, sid);
		s = STORE_CORRUPT;
		goto out;
	}
	for (i = 4; i < r->elements; i++)
		if (e[i]->type != REDIS_REPLY_STRING || e[i]->len == 0 || e[i]->str[0] != '{') {
			set_err(c, "redis %s: load: session %s has a malformed turn", c->st->where,
			    sid);
			s = STORE_CORRUPT;
			goto out;
		}
	if (info != NULL) {
		memcpy(info->owner, e[0]->str, e[0]->len);
		info->owner[e[0]->len] = '\0';
		info->created_ms = created;
		info->updated_ms = updated;
		info->turns = (int)count;
	}
	if (turns_out != NULL) {
		buf_append(turns_out, "[", 1);
		for (i = 4; i < r->elements; i++) {
			if (i > 4)
				buf_append(turns_out, ",", 1);
			buf_append(turns_out, e[i]->str, e[i]->len);
		}
		buf_append(turns_out, "]", 1);
		if (turns_out->oom) {
			set_err(c, "out of memory");
			s = STORE_NOMEM;
		}
	}
out:
	freeReplyObject(r);
	return s;
}

/*
 * Records the session in the index by its expiry, and drops the entries of
 * expired sessions (at most once per STORE_REDIS_PRUNE_MS per connection).
 * The turn is stored already: a failure here only makes the gauge lag, so it
 * is logged, not returned. NOTE: the index key has no expiry of its own; a
 * pool nobody scrapes (redis_count prunes too) would otherwise keep an entry
 * for every session ever made.
 */
static void
index_session(struct redis_conn *c, const char *sid, long long now_ms, long long expires_ms)
{
	const char *argv[4];
	size_t lens[4];
	char score[24];
	redisReply *r = NULL;

	argv[0] = "ZADD";
	argv[1] = INDEX_KEY;
	argv[2] = score;
	argv[3] = sid;
	lens[0] = 4;
	lens[1] = sizeof(INDEX_KEY) - 1;
	lens[2] = (size_t)snprintf(score, sizeof(score), "%lld", expires_ms);
	lens[3] = strlen(sid);
	command(c, "index", 4, argv, lens, &r);
	freeReplyObject(r);
	r = NULL;
	if (vtime_mono_ms() < c->prune_at_ms)
		return;
	c->prune_at_ms = vtime_mono_ms() + STORE_REDIS_PRUNE_MS;
	argv[0] = "ZREMRANGEBYSCORE";
	argv[2] = "-inf";
	argv[3] = score;
	lens[0] = 16;
	lens[2] = 4;
	lens[3] = (size_t)snprintf(score, sizeof(score), "%lld", now_ms);
	command(c, "index", 4, argv, lens, &r);
	freeReplyObject(r);
}

/*
 * After an append: WAIT until VALERIE_SESSION_REDIS_MIN_REPLICAS replicas
 * have every write of this connection, for at most
 * VALERIE_SESSION_REDIS_REPLICA_TIMEOUT_MS. OK, UNREPLICATED when fewer
 * confirmed in time (turn `turn` is on the primary all the same), or the
 * command's failure. NOTE: WAIT makes a failover lose fewer acknowledged
 * turns, not none: a replica that confirmed may still not be the one
 * promoted (Redis' own documentation says as much).
 */
static enum store_status
wait_replicas(struct redis_conn *c, int turn, unsigned long connects)
{
	const struct conf *conf = c->st->conf;
	const char *argv[3];
	size_t lens[3];
	char want[24], ms[24];
	redisReply *r = NULL;
	enum store_status s;

	/* WAIT counts this connection's writes: on a new one it would confirm nothing. */
	if (c->ctx == NULL || c->connects != connects) {
		set_err(c, "redis %s: append: turn %d is on the primary, but the connection was "
		    "lost before its replicas could be asked", c->st->where, turn);
		return STORE_UNREPLICATED;
	}
	argv[0] = "WAIT";
	argv[1] = want;
	argv[2] = ms;
	lens[0] = 4;
	lens[1] = (size_t)snprintf(want, sizeof(want), "%lld", conf->session_redis_min_replicas);
	lens[2] = (size_t)snprintf(ms, sizeof(ms), "%lld", conf->session_redis_replica_timeout_ms);
	s = command(c, "wait", 3, argv, lens, &r);
	if (s != STORE_OK)
		return s;
	if (r->type != REDIS_REPLY_INTEGER) {
		s = reply_failed(c, "wait", r);
	} else if (r->integer < conf->session_redis_min_replicas) {
		set_err(c, "redis %s: append: turn %d is on the primary, but %lld of the %lld "
		    "replicas VALERIE_SESSION_REDIS_MIN_REPLICAS asks for confirmed it within %lld ms",
		    c->st->where, turn, r->integer, conf->session_redis_min_replicas,
		    conf->session_redis_replica_timeout_ms);
		s = STORE_UNREPLICATED;
	}
	freeReplyObject(r);
	return s;
}

static enum store_status
redis_append(void *p, const char *sid, const char *owner, const char *idem_key,
    const char *messages_json, long long now_ms, int *turn_out)
{
	struct redis_conn *c = p;
	char meta[KEY_SIZE], turns[KEY_SIZE], idem[KEY_SIZE], a_now[24], a_ttl[24];
	const char *keys[3] = {meta, turns, idem};
	const char *args[5];
	size_t lens[5];
	long long ttl_ms, now;
	redisReply *r = NULL;
	struct timespec ts;
	enum store_status s;
	unsigned long connects;

	if ((s = begin(c, sid)) != STORE_OK)
		return s;
	if (owner == NULL)
		owner = "";
	if (strlen(owner) > STORE_ID_MAX || (idem_key != NULL &&
	    (idem_key[0] == '\0' || strlen(idem_key) > STORE_IDEM_MAX))) {
		set_err(c, "append: owner or idempotency key of a length the store does not keep");
		return STORE_CORRUPT;
	}
	lens[3] = strlen(messages_json);
	if (lens[3] > STORE_REDIS_TURN_MAX) {
		set_err(c, "append: a turn of %zu bytes is over the store's %d-byte cap", lens[3],
		    STORE_REDIS_TURN_MAX);
		return STORE_CORRUPT;
	}
	/* NOTE: read at every write: the TTL may change while the store is open. */
	ttl_ms = c->st->conf->session_ttl > 0 ? c->st->conf->session_ttl * 1000 : 1000;
	make_key(meta, sid, "meta");
	make_key(turns, sid, "turns");
	make_key(idem, sid, "idem");
	args[0] = owner;
	lens[0] = strlen(owner);
	args[1] = a_now;
	lens[1] = (size_t)snprintf(a_now, sizeof(a_now), "%lld", now_ms);
	args[2] = a_ttl;
	lens[2] = (size_t)snprintf(a_ttl, sizeof(a_ttl), "%lld", ttl_ms);
	args[3] = messages_json;
	args[4] = idem_key;
	lens[4] = idem_key != NULL ? strlen(idem_key) : 0;
	s = run_script(c, SCRIPT_APPEND, "append", 3, keys, idem_key != NULL ? 5 : 4, args, lens,
	    &r);
	if (s != STORE_OK)
		goto out;
	if (r->type == REDIS_REPLY_INTEGER && r->integer < 0 && r->integer >= -INT_MAX) {
		*turn_out = (int)-r->integer;
		s = STORE_EXISTS;
		goto out;
	}
	if (r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
		set_err(c, "redis %s: append: the session belongs to another owner", c->st->where);
		s = STORE_NOT_FOUND;
		goto out;
	}
	if (r->type != REDIS_REPLY_INTEGER || r->integer < 1 || r->integer > INT_MAX) {
		s = reply_failed(c, "append", r);
		goto out;
	}
	*turn_out = (int)r->integer;
	connects = c->connects;
	/* NOTE: by this host's clock, like the keys' expiry (now_ms is the turn's own time). */
	clock_gettime(CLOCK_REALTIME, &ts);
	now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	index_session(c, sid, now, now + ttl_ms);
	if (c->st->conf->session_redis_min_replicas > 0)
		s = wait_replicas(c, *turn_out, connects);
out:
	freeReplyObject(r);
	return s;
}

static enum store_status
redis_idem_find(void *p, const char *sid, const char *idem_key, int *turn_out)
{
	struct redis_conn *c = p;
	char meta[KEY_SIZE], turns[KEY_SIZE], idem[KEY_SIZE];
	const char *keys[3] = {meta, turns, idem}, *args[1] = {idem_key};
	size_t lens[1];
	long long turn;
	redisReply *r = NULL;
	enum store_status s;

	if ((s = begin(c, sid)) != STORE_OK)
		return s;
	if (idem_key == NULL || idem_key[0] == '\0' || strlen(idem_key) > STORE_IDEM_MAX)
		return STORE_NOT_FOUND;
	make_key(meta, sid, "meta");
	make_key(turns, sid, "turns");
	make_key(idem, sid, "idem");
	lens[0] = strlen(idem_key);
	s = run_script(c, SCRIPT_IDEM, "idem_find", 3, keys, 1, args, lens, &r);
	if (s != STORE_OK)
		goto out;
	if (r->type == REDIS_REPLY_NIL)
		s = STORE_NOT_FOUND;
	else if (reply_int(r, 1, INT_MAX, &turn) == 0)
		*turn_out = (int)turn;
	else
		s = reply_failed(c, "idem_find", r);
out:
	freeReplyObject(r);
	return s;
}

static enum store_status
redis_get_turn(void *p, const char *sid, int turn, struct buf *out)
{
	struct redis_conn *c = p;
	char turns[KEY_SIZE], index[16], head[32];
	const char *argv[3] = {"LINDEX", turns, index};
	size_t lens[3], hlen;
	redisReply *r = NULL;
	enum store_status s;

	if ((s = begin(c, sid)) != STORE_OK)
		return s;
	if (turn < 1)
		return STORE_NOT_FOUND;
	make_key(turns, sid, "turns");
	lens[0] = 6;
	lens[1] = strlen(turns);
	lens[2] = (size_t)snprintf(index, sizeof(index), "%d", turn - 1);
	s = command(c, "get_turn", 3, argv, lens, &r);
	if (s != STORE_OK)
		goto out;
	if (r->type == REDIS_REPLY_NIL) {
		s = STORE_NOT_FOUND;
		goto out;
	}
	if (r->type != REDIS_REPLY_STRING) {
		s = reply_failed(c, "get_turn", r);
		goto out;
	}
	hlen = (size_t)snprintf(head, sizeof(head), "{\"turn\":%d,", turn);
	if (r->len < hlen || memcmp(r->str, head, hlen) != 0) {
		set_err(c, "redis %s: get_turn: session %s has another turn at %d", c->st->where,
		    sid, turn);
		s = STORE_CORRUPT;
		goto out;
	}
	buf_append(out, r->str, r->len);
	if (out->oom) {
		set_err(c, "out of memory");
		s = STORE_NOMEM;
	}
out:
	freeReplyObject(r);
	return s;
}

static enum store_status
redis_delete(void *p, const char *sid)
{
	struct redis_conn *c = p;
	char meta[KEY_SIZE], turns[KEY_SIZE], idem[KEY_SIZE];
	/* NOTE: UNLINK, not DEL: a session of thousands of turns is freed in the background, not while Redis waits. */
	const char *argv[4] = {"UNLINK", meta, turns, idem};
	size_t lens[4];
	redisReply *r = NULL;
	enum store_status s;
	int i;

	if ((s = begin(c, sid)) != STORE_OK)
		return s;
	make_key(meta, sid, "meta");
	make_key(turns, sid, "turns");
	make_key(idem, sid, "idem");
	for (i = 0; i < 4; i++)
		lens[i] = strlen(argv[i]);
	s = command(c, "delete", 4, argv, lens, &r);
	if (s != STORE_OK)
		goto out;
	if (r->type != REDIS_REPLY_INTEGER)
		s = reply_failed(c, "delete", r);
	else if (r->integer == 0)
		s = STORE_NOT_FOUND;
	if (s == STORE_OK || s == STORE_NOT_FOUND) {
		const char *zargv[3] = {"ZREM", INDEX_KEY, sid};
		size_t zlens[3] = {4, sizeof(INDEX_KEY) - 1, strlen(sid)};
		redisReply *z = NULL;

		/* Best effort, like the ZADD: the count prunes by expiry anyway. */
		command(c, "index", 3, zargv, zlens, &z);
		freeReplyObject(z);
	}
out:
	freeReplyObject(r);
	return s;
}

static enum store_status
redis_bucket_take(void *p, const char *key, double capacity, double per_ms, int *allowed,
    double *tokens)
{
	struct redis_conn *c = p;
	char cap[32], rate[48];
	const char *keys[1] = {key};
	const char *args[2] = {cap, rate};
	size_t lens[2];
	redisReply *r = NULL;
	enum store_status s;

	c->err[0] = '\0';
	lens[0] = (size_t)snprintf(cap, sizeof(cap), "%.17g", capacity);
	lens[1] = (size_t)snprintf(rate, sizeof(rate), "%.17g", per_ms);
	s = run_script(c, SCRIPT_BUCKET, "ratelimit", 1, keys, 2, args, lens, &r);
	if (s != STORE_OK)
		goto out;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    (r->element[1]->type != REDIS_REPLY_STRING && r->element[1]->type != REDIS_REPLY_INTEGER)) {
		s = reply_failed(c, "ratelimit", r);
		goto out;
	}
	*allowed = r->element[0]->integer == 1;
	*tokens = r->element[1]->type == REDIS_REPLY_STRING ? strtod(r->element[1]->str, NULL) :
	    (double)r->element[1]->integer;
out:
	freeReplyObject(r);
	return s;
}

/* Prunes the index of expired sessions, then counts what is left. */
static enum store_status
redis_count(void *p, long long *active)
{
	struct redis_conn *c = p;
	struct timespec ts;
	char now[24];
	const char *prune[4] = {"ZREMRANGEBYSCORE", INDEX_KEY, "-inf", now};
	size_t plens[4] = {16, sizeof(INDEX_KEY) - 1, 4, 0};
	const char *card[2] = {"ZCARD", INDEX_KEY};
	size_t clens[2] = {5, sizeof(INDEX_KEY) - 1};
	redisReply *r = NULL;
	enum store_status s;

	clock_gettime(CLOCK_REALTIME, &ts);
	plens[3] = (size_t)snprintf(now, sizeof(now), "%lld",
	    (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
	c->err[0] = '\0';
	s = command(c, "count", 4, prune, plens, &r);
	if (s == STORE_OK && r->type != REDIS_REPLY_INTEGER)
		s = reply_failed(c, "count", r);
	freeReplyObject(r);
	r = NULL;
	if (s != STORE_OK)
		return s;
	s = command(c, "count", 2, card, clens, &r);
	if (s == STORE_OK && r->type != REDIS_REPLY_INTEGER)
		s = reply_failed(c, "count", r);
	else if (s == STORE_OK)
		*active = r->integer;
	freeReplyObject(r);
	return s;
}

static enum store_status
redis_cache_get(void *p, const char *key, struct buf *out)
{
	struct redis_conn *c = p;
	char k[sizeof(CACHE_PREFIX) + STORE_CACHE_KEY_MAX];
	const char *argv[2] = {"GET", k};
	size_t lens[2];
	redisReply *r = NULL;
	enum store_status s;

	c->err[0] = '\0';
	lens[0] = 3;
	lens[1] = (size_t)snprintf(k, sizeof(k), CACHE_PREFIX "%s", key);
	s = command(c, "cache_get", 2, argv, lens, &r);
	if (s != STORE_OK)
		goto out;
	if (r->type == REDIS_REPLY_NIL) {
		s = STORE_NOT_FOUND;
	} else if (r->type != REDIS_REPLY_STRING) {
		s = reply_failed(c, "cache_get", r);
	} else {
		buf_append(out, r->str, r->len);
		if (out->oom) {
			set_err(c, "out of memory");
			s = STORE_NOMEM;
		}
	}
out:
	freeReplyObject(r);
	return s;
}

static enum store_status
redis_cache_put(void *p, const char *key, const char *value, size_t len, long long ttl_s)
{
	struct redis_conn *c = p;
	char k[sizeof(CACHE_PREFIX) + STORE_CACHE_KEY_MAX], ttl[24];
	const char *argv[5] = {"SET", k, value, "EX", ttl};
	size_t lens[5];
	redisReply *r = NULL;
	enum store_status s;

	c->err[0] = '\0';
	lens[0] = 3;
	lens[1] = (size_t)snprintf(k, sizeof(k), CACHE_PREFIX "%s", key);
	lens[2] = len;
	lens[3] = 2;
	lens[4] = (size_t)snprintf(ttl, sizeof(ttl), "%lld", ttl_s);
	s = command(c, "cache_put", 5, argv, lens, &r);
	if (s == STORE_OK && !is_status(r, "OK"))
		s = reply_failed(c, "cache_put", r);
	freeReplyObject(r);
	return s;
}

static enum store_status
redis_ping(void *p)
{
	struct redis_conn *c = p;
	const char *argv[1] = {"PING"};
	size_t lens[1] = {4};
	redisReply *r = NULL;
	enum store_status s;

	c->err[0] = '\0';
	s = command(c, "PING", 1, argv, lens, &r);
	if (s == STORE_OK && !is_status(r, "PONG"))
		s = reply_failed(c, "PING", r);
	freeReplyObject(r);
	return s;
}

/* --- for operator tools ------------------------------------------------------ */

int
store_redis_url_check(const char *url, char *why, size_t whylen)
{
	struct redis_store *st = calloc(1, sizeof(*st));
	char reason[192];
	int rc;

	if (st == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	rc = parse_url(st, url, reason, sizeof(reason));
	if (rc != 0)
		snprintf(why, whylen, "%s (expected " URL_FORMS ")", reason);
	explicit_bzero(st, sizeof(*st));
	free(st);
	return rc;
}

struct redisContext *
store_redis_connect(const char *url, char *err, size_t errlen)
{
	struct redis_store *st;
	struct redis_conn *c = NULL;
	redisContext *ctx = NULL;
	char why[192];

	st = calloc(1, sizeof(*st));
	if (st == NULL || (c = redis_conn_new(st)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (parse_url(st, url, why, sizeof(why)) != 0) {
		snprintf(err, errlen, URL_VAR ": %s (expected " URL_FORMS ")", why);
		goto out;
	}
	if (ensure(c) != STORE_OK) {
		snprintf(err, errlen, "%s", c->err);
		goto out;
	}
	ctx = c->ctx;
	c->ctx = NULL;
out:
	redis_conn_free(c);
	if (st != NULL)
		explicit_bzero(st, sizeof(*st));
	free(st);
	return ctx;
}

const struct store_ops store_redis_ops = {
	"redis",
	redis_open,
	redis_close,
	redis_conn_new,
	redis_conn_free,
	redis_conn_error,
	redis_load,
	redis_append,
	redis_idem_find,
	redis_get_turn,
	redis_delete,
	redis_ping,
	redis_count,
	redis_cache_get,
	redis_cache_put,
	redis_bucket_take,
};
