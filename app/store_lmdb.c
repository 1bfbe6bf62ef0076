/* store_lmdb: the embedded session store, one LMDB environment shared by every worker of a host. */
#include "config.h"

#include "conf.h"
#include "log.h"
#include "store_impl.h"
#include "vtime.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define LMDB_READER_MARGIN 64   /* reader slots beyond threads x workers */
#define LMDB_SWEEP_MAX 16       /* expired sessions removed per append, at most */
#define LMDB_RECLAIM_MAX 1024   /* expired sessions removed when the map is full, at most */
#define LMDB_KEY_MAX 511        /* LMDB's default maximum key size */
#define LMDB_DBS 6              /* named databases: see the layout below */
#define META_VERSION 1

_Static_assert(STORE_ID_MAX + 1 + STORE_IDEM_MAX <= LMDB_KEY_MAX,
    "an idempotency record's key (sid \\0 key) must fit LMDB's key size");

/*
 * Layout, six named databases in one environment:
 *   meta    sid                      -> struct meta_rec (binary, versioned)
 *   turns   sid '\0' turn (u32 BE)   -> {"turn":N,"messages":[...]}
 *   idem    sid '\0' key             -> turn (u32 BE)
 *   expiry  expires_ms (u64 BE) sid  -> "" (the sweep walks it from the front)
 *   cache   key                      -> expires_ms (u64 BE) value
 *   cache_expiry  expires_ms (u64 BE) key -> "" (swept like expiry, at cache puts)
 * Every write is one write transaction: LMDB serialises writers across the
 * processes of the host, so turn numbers cannot collide or skip.
 */
struct lmdb_store {
	const struct conf *conf;
	MDB_env *env;
	MDB_dbi meta, turns, idem, expiry, cache, cache_expiry;
	pthread_rwlock_t map;    /* shared by every use of the map, exclusive to remap it */
	unsigned int map_gen;    /* remaps so far (under `map`) */
	int map_err;             /* a remap that failed: the map is gone (under `map`) */
	pthread_t syncer;        /* VALERIE_LMDB_SYNC periodic or intact: flushes every second */
	int syncing;
	pthread_mutex_t lock;
	pthread_cond_t stop;
	int stopping;
};

#define LMDB_SYNC_INTERVAL_S 1

/*
 * NOTE: with VALERIE_LMDB_SYNC=periodic commits do not wait for the disk
 * (MDB_NOSYNC); this thread flushes once a second, so a host crash can lose
 * the last second of turns, as Redis's default appendfsync everysec can, and
 * (LMDB's documentation) corrupt the file where the filesystem does not keep
 * the order of writes. A crash of the process loses nothing (the pages are in
 * the OS). `full` syncs every commit: durable and intact after any crash, but
 * two flushes per turn (pages, then the meta page) serialised across the
 * host. `intact` (MDB_NOMETASYNC) flushes a commit's pages and leaves its meta
 * page to the next commit or to this thread: intact after any crash, which
 * may undo the last commit (a second of them at most while idle), one flush
 * per turn.
 */
static void *
sync_loop(void *p)
{
	struct lmdb_store *st = p;
	struct timespec ts;

	pthread_mutex_lock(&st->lock);
	while (!st->stopping) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += LMDB_SYNC_INTERVAL_S;
		pthread_cond_timedwait(&st->stop, &st->lock, &ts);
		pthread_mutex_unlock(&st->lock);
		/* NOTE: mdb_env_sync reads the meta pages, which live in the map. */
		pthread_rwlock_rdlock(&st->map);
		if (st->map_err == 0)
			mdb_env_sync(st->env, 1);
		pthread_rwlock_unlock(&st->map);
		pthread_mutex_lock(&st->lock);
	}
	pthread_mutex_unlock(&st->lock);
	return NULL;
}

struct lmdb_conn {
	struct lmdb_store *st;
	char err[160];
};

struct meta_rec {
	uint8_t version;
	int64_t created_ms, updated_ms, expires_ms;
	int32_t turns;
	char owner[STORE_ID_MAX + 1];
};

/*
 * Records why `what` failed and maps LMDB's code: a full map is the store
 * refusing new data (FULL: it still reads), ENOMEM is NOMEM, the rest
 * UNAVAILABLE.
 */
static enum store_status
fail(struct lmdb_conn *c, int rc, const char *what)
{
	snprintf(c->err, sizeof(c->err), "lmdb %s: %s", what,
	    rc == MDB_MAP_FULL ? "the store is full (raise VALERIE_LMDB_MAP_MB)" : mdb_strerror(rc));
	if (rc == MDB_MAP_FULL)
		return STORE_FULL;
	return rc == ENOMEM ? STORE_NOMEM : STORE_UNAVAILABLE;
}

/*
 * Transactions: each begins with txn_begin and ends with txn_commit or
 * txn_abort, and holds the map lock shared in between.
 *
 * NOTE: a process sharing the environment with a larger map (another pool with
 * a higher VALERIE_LMDB_MAP_MB on the same VALERIE_DATA_DIR, or a rolling
 * change of it) can grow the data beyond this process's map. mdb_txn_begin
 * then fails with MDB_MAP_RESIZED, and keeps failing, until this process
 * adopts the size with mdb_env_set_mapsize(env, 0). That unmaps the file and
 * maps it again, which LMDB allows only while no transaction of this process
 * is active (it does not check): the pages and meta pages of a transaction in
 * another thread would be unmapped under it. Hence the lock, held shared by
 * every transaction (and the syncer's mdb_env_sync, which reads the meta
 * pages) and exclusive by the remap. A thread never holds two transactions at
 * once, so it never takes the shared lock twice (with a writer waiting, a
 * second shared lock would wait for the writer, which waits for the first).
 */

/*
 * Adopts the map size another process grew the environment to, with the map
 * lock held exclusive. `gen` is the map generation the caller's failed begin
 * saw: if another thread has remapped since, there is nothing to do. Returns
 * 0 or LMDB's code; a remap that fails leaves no map, and every transaction
 * after it fails with the same code.
 */
static int
map_adopt(struct lmdb_store *st, unsigned int gen)
{
	MDB_envinfo before, after;
	int rc;

	pthread_rwlock_wrlock(&st->map);
	rc = st->map_err;
	if (rc != 0 || gen != st->map_gen)
		goto out;
	mdb_env_info(st->env, &before);
	rc = mdb_env_set_mapsize(st->env, 0);
	st->map_gen++;
	if (rc != 0) {
		st->map_err = rc;
		log_msg(LOG_LVL_ERROR, "lmdb: cannot map the store another process grew: %s "
		    "(restart the worker)", mdb_strerror(rc));
		goto out;
	}
	mdb_env_info(st->env, &after);
	log_msg(LOG_LVL_WARNING, "lmdb: another process grew the store beyond this one's map: "
	    "map adopted, %zu MB (was %zu MB, VALERIE_LMDB_MAP_MB=%lld)", after.me_mapsize >> 20,
	    before.me_mapsize >> 20, st->conf->lmdb_map_mb);
out:
	pthread_rwlock_unlock(&st->map);
	return rc;
}

/*
 * One mdb_txn_begin with the map lock held shared, kept on success. `gen` gets
 * the map generation it saw.
 */
static int
begin_once(struct lmdb_store *st, unsigned int flags, MDB_txn **txn, unsigned int *gen)
{
	int rc;

	pthread_rwlock_rdlock(&st->map);
	*gen = st->map_gen;
	rc = st->map_err != 0 ? st->map_err : mdb_txn_begin(st->env, NULL, flags, txn);
	if (rc != 0)
		pthread_rwlock_unlock(&st->map);
	return rc;
}

/*
 * mdb_txn_begin with the map lock held shared on success (txn_commit or
 * txn_abort releases it). On MDB_MAP_RESIZED adopts the new map size and
 * tries once more. Returns LMDB's code.
 */
static int
txn_begin(struct lmdb_store *st, unsigned int flags, MDB_txn **txn)
{
	unsigned int gen;
	int rc = begin_once(st, flags, txn, &gen);

	if (rc == MDB_MAP_RESIZED && (rc = map_adopt(st, gen)) == 0)
		rc = begin_once(st, flags, txn, &gen);
	return rc;
}

/* mdb_txn_commit, then releases the map lock. Returns LMDB's code. */
static int
txn_commit(struct lmdb_store *st, MDB_txn *txn)
{
	int rc = mdb_txn_commit(txn);

	pthread_rwlock_unlock(&st->map);
	return rc;
}

/* mdb_txn_abort, then releases the map lock. */
static void
txn_abort(struct lmdb_store *st, MDB_txn *txn)
{
	mdb_txn_abort(txn);
	pthread_rwlock_unlock(&st->map);
}

static void
put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t
get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void
put_u64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--) {
		p[i] = (unsigned char)v;
		v >>= 8;
	}
}

static uint64_t
get_u64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* sid '\0' turn: the key of a turn. Returns its length. */
static size_t
turn_key(unsigned char *k, const char *sid, uint32_t turn)
{
	size_t n = strlen(sid);

	memcpy(k, sid, n);
	k[n] = '\0';
	put_u32(k + n + 1, turn);
	return n + 5;
}

/* expires (u64 BE) sid: the key of an expiry entry. */
static size_t
expiry_key(unsigned char *k, long long expires_ms, const char *sid)
{
	size_t n = strlen(sid);

	put_u64(k, (uint64_t)expires_ms);
	memcpy(k + 8, sid, n);
	return n + 8;
}

static int
meta_read(MDB_txn *txn, struct lmdb_store *st, const char *sid, struct meta_rec *m)
{
	MDB_val k = {strlen(sid), (void *)sid}, v;
	int rc = mdb_get(txn, st->meta, &k, &v);

	if (rc != 0)
		return rc;
	if (v.mv_size != sizeof(*m))
		return MDB_CORRUPTED;
	memcpy(m, v.mv_data, sizeof(*m));
	if (m->version != META_VERSION)
		return MDB_CORRUPTED;
	m->owner[STORE_ID_MAX] = '\0';
	return 0;
}

/* Deletes every entry of `dbi` whose key starts with sid '\0'. */
static int
delete_prefix(MDB_txn *txn, MDB_dbi dbi, const char *sid)
{
	size_t n = strlen(sid) + 1;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;

	rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc != 0)
		return rc;
	for (;;) {
		k.mv_size = n;
		k.mv_data = (void *)sid;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (rc != 0 || k.mv_size < n || memcmp(k.mv_data, sid, n) != 0)
			break;
		rc = mdb_cursor_del(cur, 0);
		if (rc != 0)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Removes a whole session inside `txn`; `m` is its meta record. */
static int
drop_session(MDB_txn *txn, struct lmdb_store *st, const char *sid, const struct meta_rec *m)
{
	unsigned char ek[8 + STORE_ID_MAX];
	MDB_val k = {strlen(sid), (void *)sid}, e;
	int rc;

	e.mv_size = expiry_key(ek, m->expires_ms, sid);
	e.mv_data = ek;
	rc = mdb_del(txn, st->expiry, &e, NULL);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return rc;
	rc = mdb_del(txn, st->meta, &k, NULL);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return rc;
	rc = delete_prefix(txn, st->turns, sid);
	if (rc == 0)
		rc = delete_prefix(txn, st->idem, sid);
	return rc;
}

/* Removes up to `max` sessions whose expiry has passed. */
static int
sweep(MDB_txn *txn, struct lmdb_store *st, long long now, int max)
{
	char sid[STORE_ID_MAX + 1];
	struct meta_rec m;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, n = 0;

	rc = mdb_cursor_open(txn, st->expiry, &cur);
	if (rc != 0)
		return rc;
	while (n < max && (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
		if (k.mv_size < 9 || k.mv_size > 8 + STORE_ID_MAX ||
		    (long long)get_u64(k.mv_data) > now)
			break;
		memcpy(sid, (char *)k.mv_data + 8, k.mv_size - 8);
		sid[k.mv_size - 8] = '\0';
		rc = mdb_cursor_del(cur, 0);
		if (rc != 0)
			break;
		if (meta_read(txn, st, sid, &m) == 0 && m.expires_ms <= now) {
			rc = drop_session(txn, st, sid, &m);
			if (rc != 0)
				break;
		}
		n++;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int cache_sweep(MDB_txn *txn, struct lmdb_store *st, long long now, int max);

/*
 * One write transaction that sweeps up to `max` expired sessions (or cache
 * entries, with `cache`); how many went, or -1.
 */
static int
sweep_commit(struct lmdb_store *st, long long now, int max, int cache)
{
	MDB_dbi dbi = cache ? st->cache : st->meta;
	MDB_stat before, after;
	MDB_txn *txn;

	if (txn_begin(st, 0, &txn) != 0)
		return -1;
	if (mdb_stat(txn, dbi, &before) != 0 ||
	    (cache ? cache_sweep(txn, st, now, max) : sweep(txn, st, now, max)) != 0 ||
	    mdb_stat(txn, dbi, &after) != 0) {
		txn_abort(st, txn);
		return -1;
	}
	if (txn_commit(st, txn) != 0)
		return -1;
	return (int)(before.ms_entries - after.ms_entries);
}

/*
 * For an append that found the map full: removes up to LMDB_RECLAIM_MAX
 * expired sessions and as many expired cache entries, LMDB_SWEEP_MAX per
 * transaction, then commits one more small write. Returns how many went.
 *
 * NOTE: two traps make this necessary. The sweeps run inside the writes'
 * own transactions, after their puts, so a full map fails those first and
 * expired entries would never make room. And LMDB reuses the pages a
 * transaction freed only two commits later (it keeps the last two
 * snapshots), while failed appends commit nothing: without further commits
 * the freed pages would stay out of reach.
 */
static int
reclaim(struct lmdb_store *st, long long now)
{
	static const unsigned char mark[1] = {0};   /* no idem key is this short */
	MDB_val k = {sizeof(mark), (void *)mark}, v = {0, (void *)""};
	MDB_txn *txn;
	int n, total = 0, cache, done;

	for (cache = 0; cache <= 1; cache++)
		for (done = 0; done < LMDB_RECLAIM_MAX &&
		    (n = sweep_commit(st, now, LMDB_SWEEP_MAX, cache)) > 0; done += n)
			total += n;
	if (total == 0 || txn_begin(st, 0, &txn) != 0)
		return total;
	if (mdb_put(txn, st->idem, &k, &v, 0) != 0 || mdb_del(txn, st->idem, &k, NULL) != 0) {
		txn_abort(st, txn);
		return total;
	}
	txn_commit(st, txn);
	return total;
}

/*
 * Initialises the map lock. NOTE: glibc's rwlocks prefer readers by default,
 * and the transactions of a busy pool's threads overlap: a remap could wait
 * as long as they keep coming. Preferring the writer makes new transactions
 * wait for it instead, for as long as the transactions already begun take.
 */
static int
map_lock_init(pthread_rwlock_t *lock)
{
	pthread_rwlockattr_t attr;
	int rc;

	if ((rc = pthread_rwlockattr_init(&attr)) != 0)
		return rc;
#ifdef __GLIBC__
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
	rc = pthread_rwlock_init(lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	return rc;
}

static void *
lmdb_open(const struct conf *conf, char *err, size_t errlen)
{
	struct lmdb_store *st;
	MDB_txn *txn = NULL;
	unsigned int readers;
	int rc, dead = 0;

	if (mkdir(conf->data_dir, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "VALERIE_DATA_DIR: cannot create %s: %s", conf->data_dir,
		    strerror(errno));
		return NULL;
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	st->conf = conf;
	if ((rc = map_lock_init(&st->map)) != 0) {
		snprintf(err, errlen, "lmdb: cannot make a lock: %s", strerror(rc));
		free(st);
		return NULL;
	}
	readers = (unsigned int)(conf->threads * conf->workers) + LMDB_READER_MARGIN;
	if ((rc = mdb_env_create(&st->env)) != 0 ||
	    (rc = mdb_env_set_maxreaders(st->env, readers)) != 0 ||
	    (rc = mdb_env_set_maxdbs(st->env, LMDB_DBS)) != 0 ||
	    (rc = mdb_env_set_mapsize(st->env, (size_t)conf->lmdb_map_mb << 20)) != 0)
		goto fail;
	/*
	 * NOTE: MDB_NOTLS ties reader slots to transactions, not threads, so a
	 * pool of threads does not pin a slot each forever.
	 */
	rc = mdb_env_open(st->env, conf->data_dir,
	    MDB_NOTLS | (strcmp(conf->lmdb_sync, "periodic") == 0 ? MDB_NOSYNC :
	    strcmp(conf->lmdb_sync, "intact") == 0 ? MDB_NOMETASYNC : 0), 0600);
	if (rc != 0)
		goto fail;
	/* Readers left by killed processes hold old pages until cleared. */
	mdb_reader_check(st->env, &dead);
	if ((rc = txn_begin(st, 0, &txn)) != 0 ||
	    (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &st->meta)) != 0 ||
	    (rc = mdb_dbi_open(txn, "turns", MDB_CREATE, &st->turns)) != 0 ||
	    (rc = mdb_dbi_open(txn, "idem", MDB_CREATE, &st->idem)) != 0 ||
	    (rc = mdb_dbi_open(txn, "expiry", MDB_CREATE, &st->expiry)) != 0 ||
	    (rc = mdb_dbi_open(txn, "cache", MDB_CREATE, &st->cache)) != 0 ||
	    (rc = mdb_dbi_open(txn, "cache_expiry", MDB_CREATE, &st->cache_expiry)) != 0)
		goto fail;
	rc = txn_commit(st, txn);
	txn = NULL;
	if (rc != 0)
		goto fail;
	pthread_mutex_init(&st->lock, NULL);
	pthread_cond_init(&st->stop, NULL);
	if (strcmp(conf->lmdb_sync, "full") != 0) {
		pthread_attr_t attr;

		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 64 * 1024);
		st->syncing = pthread_create(&st->syncer, &attr, sync_loop, st) == 0;
		pthread_attr_destroy(&attr);
	}
	return st;
fail:
	snprintf(err, errlen, "VALERIE_DATA_DIR: cannot open the LMDB store in %s: %s",
	    conf->data_dir, mdb_strerror(rc));
	if (txn != NULL)
		txn_abort(st, txn);
	if (st->env != NULL)
		mdb_env_close(st->env);
	pthread_rwlock_destroy(&st->map);
	free(st);
	return NULL;
}

static void
lmdb_close(void *p)
{
	struct lmdb_store *st = p;

	if (st == NULL)
		return;
	if (st->syncing) {
		pthread_mutex_lock(&st->lock);
		st->stopping = 1;
		pthread_cond_signal(&st->stop);
		pthread_mutex_unlock(&st->lock);
		pthread_join(st->syncer, NULL);
	}
	if (st->map_err == 0)
		mdb_env_sync(st->env, 1);
	pthread_mutex_destroy(&st->lock);
	pthread_cond_destroy(&st->stop);
	pthread_rwlock_destroy(&st->map);
	mdb_env_close(st->env);
	free(st);
}

static void *
lmdb_conn_new(void *p)
{
	struct lmdb_conn *c = calloc(1, sizeof(*c));

	if (c != NULL)
		c->st = p;
	return c;
}

static void
lmdb_conn_free(void *p)
{
	free(p);
}

static const char *
lmdb_conn_error(const void *p)
{
	return ((const struct lmdb_conn *)p)->err;
}

/* Reads the live meta record of `sid`; NOT_FOUND when absent or expired. */
static enum store_status
live_meta(struct lmdb_conn *c, MDB_txn *txn, const char *sid, struct meta_rec *m)
{
	int rc = meta_read(txn, c->st, sid, m);

	if (rc == MDB_NOTFOUND)
		return STORE_NOT_FOUND;
	if (rc == MDB_CORRUPTED) {
		snprintf(c->err, sizeof(c->err), "lmdb: corrupt session record for a session");
		return STORE_CORRUPT;
	}
	if (rc != 0)
		return fail(c, rc, "read");
	if (m->expires_ms <= vtime_now_ms())
		return STORE_NOT_FOUND;
	return STORE_OK;
}

static enum store_status
lmdb_load(void *p, const char *sid, int max_turns, size_t max_chars, int before,
    struct store_session_info *info, struct buf *out)
{
	struct lmdb_conn *c = p;
	struct meta_rec m;
	unsigned char key[LMDB_KEY_MAX];
	MDB_val *vals = NULL;
	MDB_txn *txn;
	enum store_status s;
	size_t total = 0;
	int rc, n = 0, first, last, t;

	rc = txn_begin(c->st, MDB_RDONLY, &txn);
	if (rc != 0)
		return fail(c, rc, "begin");
	s = live_meta(c, txn, sid, &m);
	if (s != STORE_OK)
		goto out;
	memset(info, 0, sizeof(*info));
	memcpy(info->owner, m.owner, sizeof(info->owner));
	info->created_ms = m.created_ms;
	info->updated_ms = m.updated_ms;
	info->turns = m.turns;
	last = before > 0 && before - 1 < m.turns ? before - 1 : m.turns;
	first = max_turns > 0 && last - max_turns + 1 > 1 ? last - max_turns + 1 : 1;
	vals = calloc((size_t)(last - first + 1 > 0 ? last - first + 1 : 1), sizeof(*vals));
	if (vals == NULL) {
		s = STORE_NOMEM;
		goto out;
	}
	/* Newest first, stopping at the window; each value lives until the txn ends. */
	for (t = last; t >= first; t--) {
		MDB_val k = {turn_key(key, sid, (uint32_t)t), key}, v;

		rc = mdb_get(txn, c->st->turns, &k, &v);
		if (rc != 0) {
			s = rc == MDB_NOTFOUND ? STORE_CORRUPT : fail(c, rc, "read");
			if (rc == MDB_NOTFOUND)
				snprintf(c->err, sizeof(c->err), "lmdb: turn %d of a session is missing", t);
			goto out;
		}
		if (max_chars > 0 && n > 0 && total + v.mv_size + 1 > max_chars)
			break;
		total += v.mv_size + 1;
		vals[n++] = v;
	}
	buf_puts(out, "[");
	for (t = n - 1; t >= 0; t--) {
		buf_append(out, vals[t].mv_data, vals[t].mv_size);
		if (t > 0)
			buf_puts(out, ",");
	}
	buf_puts(out, "]");
	s = out->oom ? STORE_NOMEM : STORE_OK;
out:
	free(vals);
	txn_abort(c->st, txn);
	return s;
}

static enum store_status
lmdb_append(void *p, const char *sid, const char *owner, const char *idem_key,
    const char *messages_json, long long now_ms, int *turn_out)
{
	struct lmdb_conn *c = p;
	struct lmdb_store *st = c->st;
	struct meta_rec m;
	unsigned char key[LMDB_KEY_MAX], ek[8 + STORE_ID_MAX], tb[4];
	long long now = vtime_now_ms();
	struct buf text = {0};
	MDB_txn *txn;
	MDB_val k, v;
	size_t sidlen = strlen(sid);
	int rc, reclaimed = 0;

	if (sidlen == 0 || sidlen > STORE_ID_MAX || strlen(owner) > STORE_ID_MAX ||
	    (idem_key != NULL && sidlen + 1 + strlen(idem_key) > LMDB_KEY_MAX)) {
		snprintf(c->err, sizeof(c->err), "lmdb: key too long");
		return STORE_UNAVAILABLE;
	}
again:
	rc = txn_begin(st, 0, &txn);
	if (rc != 0)
		return fail(c, rc, "begin");
	rc = meta_read(txn, st, sid, &m);
	if (rc == 0 && m.expires_ms > now && strcmp(m.owner, owner) != 0) {
		/* Before the idempotency key: nothing of another's session is told. */
		txn_abort(st, txn);
		snprintf(c->err, sizeof(c->err), "lmdb: the session belongs to another owner");
		return STORE_NOT_FOUND;
	}
	if (rc == 0 && m.expires_ms > now && idem_key != NULL) {
		/* A retry racing the first request: the key decides, inside the lock. */
		memcpy(key, sid, sidlen + 1);
		memcpy(key + sidlen + 1, idem_key, strlen(idem_key));
		k.mv_size = sidlen + 1 + strlen(idem_key);
		k.mv_data = key;
		if (mdb_get(txn, st->idem, &k, &v) == 0 && v.mv_size == 4) {
			*turn_out = (int)get_u32(v.mv_data);
			txn_abort(st, txn);
			return STORE_EXISTS;
		}
	}
	if (rc == 0 && m.expires_ms <= now) {
		rc = drop_session(txn, st, sid, &m);
		if (rc != 0)
			goto fail;
		rc = MDB_NOTFOUND;
	}
	if (rc == MDB_NOTFOUND) {
		memset(&m, 0, sizeof(m));
		m.version = META_VERSION;
		m.created_ms = now_ms;
		snprintf(m.owner, sizeof(m.owner), "%s", owner);
	} else if (rc != 0) {
		goto fail;
	} else {
		/* The old expiry entry goes; the new one is written below. */
		k.mv_size = expiry_key(ek, m.expires_ms, sid);
		k.mv_data = ek;
		rc = mdb_del(txn, st->expiry, &k, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND)
			goto fail;
	}
	m.turns++;
	m.updated_ms = now_ms;
	m.expires_ms = now + st->conf->session_ttl * 1000;

	buf_printf(&text, "{\"turn\":%d,\"messages\":%s}", (int)m.turns, messages_json);
	if (text.oom) {
		rc = ENOMEM;
		goto fail;
	}
	k.mv_size = turn_key(key, sid, (uint32_t)m.turns);
	k.mv_data = key;
	v.mv_size = text.len;
	v.mv_data = text.data;
	if ((rc = mdb_put(txn, st->turns, &k, &v, 0)) != 0)
		goto fail;
	k.mv_size = sidlen;
	k.mv_data = (void *)sid;
	v.mv_size = sizeof(m);
	v.mv_data = &m;
	if ((rc = mdb_put(txn, st->meta, &k, &v, 0)) != 0)
		goto fail;
	k.mv_size = expiry_key(ek, m.expires_ms, sid);
	k.mv_data = ek;
	v.mv_size = 0;
	v.mv_data = "";
	if ((rc = mdb_put(txn, st->expiry, &k, &v, 0)) != 0)
		goto fail;
	if (idem_key != NULL) {
		memcpy(key, sid, sidlen + 1);
		memcpy(key + sidlen + 1, idem_key, strlen(idem_key));
		k.mv_size = sidlen + 1 + strlen(idem_key);
		k.mv_data = key;
		put_u32(tb, (uint32_t)m.turns);
		v.mv_size = 4;
		v.mv_data = tb;
		if ((rc = mdb_put(txn, st->idem, &k, &v, 0)) != 0)
			goto fail;
	}
	if ((rc = sweep(txn, st, now, LMDB_SWEEP_MAX)) != 0)
		goto fail;
	rc = txn_commit(st, txn);
	txn = NULL;
	if (rc != 0)
		goto fail;
	buf_free(&text);
	*turn_out = m.turns;
	return STORE_OK;
fail:
	if (txn != NULL)
		txn_abort(st, txn);
	buf_free(&text);
	/* NOTE: pages freed in a transaction are reused only by later ones: sweep, then retry. */
	if (rc == MDB_MAP_FULL && !reclaimed && reclaim(st, now) > 0) {
		reclaimed = 1;
		goto again;
	}
	return fail(c, rc, "write");
}

static enum store_status
lmdb_idem_find(void *p, const char *sid, const char *idem_key, int *turn_out)
{
	struct lmdb_conn *c = p;
	unsigned char key[LMDB_KEY_MAX];
	struct meta_rec m;
	size_t sidlen = strlen(sid), klen = strlen(idem_key);
	MDB_txn *txn;
	MDB_val k, v;
	enum store_status s;
	int rc;

	if (sidlen + 1 + klen > LMDB_KEY_MAX)
		return STORE_NOT_FOUND;
	rc = txn_begin(c->st, MDB_RDONLY, &txn);
	if (rc != 0)
		return fail(c, rc, "begin");
	s = live_meta(c, txn, sid, &m);
	if (s == STORE_OK) {
		memcpy(key, sid, sidlen + 1);
		memcpy(key + sidlen + 1, idem_key, klen);
		k.mv_size = sidlen + 1 + klen;
		k.mv_data = key;
		rc = mdb_get(txn, c->st->idem, &k, &v);
		if (rc == MDB_NOTFOUND || (rc == 0 && v.mv_size != 4))
			s = STORE_NOT_FOUND;
		else if (rc != 0)
			s = fail(c, rc, "read");
		else
			*turn_out = (int)get_u32(v.mv_data);
	}
	txn_abort(c->st, txn);
	return s;
}

static enum store_status
lmdb_get_turn(void *p, const char *sid, int turn, struct buf *out)
{
	struct lmdb_conn *c = p;
	unsigned char key[LMDB_KEY_MAX];
	struct meta_rec m;
	MDB_txn *txn;
	MDB_val k, v;
	enum store_status s;
	int rc;

	if (turn < 1)
		return STORE_NOT_FOUND;
	rc = txn_begin(c->st, MDB_RDONLY, &txn);
	if (rc != 0)
		return fail(c, rc, "begin");
	s = live_meta(c, txn, sid, &m);
	if (s == STORE_OK) {
		k.mv_size = turn_key(key, sid, (uint32_t)turn);
		k.mv_data = key;
		rc = mdb_get(txn, c->st->turns, &k, &v);
		if (rc == MDB_NOTFOUND) {
			s = STORE_NOT_FOUND;
		} else if (rc != 0) {
			s = fail(c, rc, "read");
		} else {
			buf_append(out, v.mv_data, v.mv_size);
			s = out->oom ? STORE_NOMEM : STORE_OK;
		}
	}
	txn_abort(c->st, txn);
	return s;
}

static enum store_status
lmdb_delete(void *p, const char *sid)
{
	struct lmdb_conn *c = p;
	struct meta_rec m;
	MDB_txn *txn;
	int rc, expired;

	rc = txn_begin(c->st, 0, &txn);
	if (rc != 0)
		return fail(c, rc, "begin");
	rc = meta_read(txn, c->st, sid, &m);
	if (rc == MDB_NOTFOUND) {
		txn_abort(c->st, txn);
		return STORE_NOT_FOUND;
	}
	if (rc == 0)
		rc = drop_session(txn, c->st, sid, &m);
	if (rc != 0) {
		txn_abort(c->st, txn);
		return fail(c, rc, "delete");
	}
	expired = m.expires_ms <= vtime_now_ms();
	rc = txn_commit(c->st, txn);
	if (rc != 0)
		return fail(c, rc, "commit");
	return expired ? STORE_NOT_FOUND : STORE_OK;
}

static enum store_status
lmdb_ping(void *p)
{
	struct lmdb_conn *c = p;
	MDB_txn *txn;
	MDB_stat stat;
	int rc;

	rc = txn_begin(c->st, MDB_RDONLY, &txn);
	if (rc != 0)
		return fail(c, rc, "begin");
	rc = mdb_stat(txn, c->st->meta, &stat);
	txn_abort(c->st, txn);
	return rc == 0 ? STORE_OK : fail(c, rc, "stat");
}

/* Records in `meta` less those whose expiry has passed (the sweep's backlog). */
static enum store_status
lmdb_count(void *p, long long *active)
{
	struct lmdb_conn *c = p;
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_stat stat;
	MDB_val k, v;
	long long now = vtime_now_ms(), expired = 0, when;
	const unsigned char *kb;
	int rc, i;

	rc = txn_begin(c->st, MDB_RDONLY, &txn);
	if (rc != 0)
		return fail(c, rc, "begin");
	rc = mdb_stat(txn, c->st->meta, &stat);
	if (rc == 0)
		rc = mdb_cursor_open(txn, c->st->expiry, &cur);
	if (rc != 0) {
		txn_abort(c->st, txn);
		return fail(c, rc, "count");
	}
	/* The expiry index is ordered by time: the expired entries come first. */
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size < 8)
			break;
		kb = k.mv_data;
		for (when = 0, i = 0; i < 8; i++)
			when = (when << 8) | kb[i];
		if (when > now)
			break;
		expired++;
	}
	mdb_cursor_close(cur);
	txn_abort(c->st, txn);
	*active = (long long)stat.ms_entries - expired;
	if (*active < 0)
		*active = 0;
	return STORE_OK;
}

/* --- the cache ----------------------------------------------------------------- */

/* Removes up to `max` cache entries whose expiry has passed. */
static int
cache_sweep(MDB_txn *txn, struct lmdb_store *st, long long now, int max)
{
	MDB_cursor *cur;
	MDB_val k, v, ck, cv;
	unsigned char key[STORE_CACHE_KEY_MAX];
	size_t klen;
	int rc, n = 0;

	rc = mdb_cursor_open(txn, st->cache_expiry, &cur);
	if (rc != 0)
		return rc;
	while (n < max && (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
		if (k.mv_size < 9 || k.mv_size > 8 + STORE_CACHE_KEY_MAX ||
		    (long long)get_u64(k.mv_data) > now)
			break;
		klen = k.mv_size - 8;
		memcpy(key, (unsigned char *)k.mv_data + 8, klen);
		rc = mdb_cursor_del(cur, 0);
		if (rc != 0)
			break;
		/* NOTE: a put replaces the index entry too; check the value's own expiry anyway. */
		ck.mv_size = klen;
		ck.mv_data = key;
		rc = mdb_get(txn, st->cache, &ck, &cv);
		if (rc == 0 && (cv.mv_size < 8 || (long long)get_u64(cv.mv_data) <= now))
			rc = mdb_del(txn, st->cache, &ck, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND)
			break;
		rc = 0;
		n++;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static enum store_status
lmdb_cache_get(void *p, const char *key, struct buf *out)
{
	struct lmdb_conn *c = p;
	MDB_val k = {strlen(key), (void *)key}, v;
	MDB_txn *txn;
	enum store_status s;
	int rc;

	c->err[0] = '\0';
	rc = txn_begin(c->st, MDB_RDONLY, &txn);
	if (rc != 0)
		return fail(c, rc, "begin");
	rc = mdb_get(txn, c->st->cache, &k, &v);
	if (rc == MDB_NOTFOUND) {
		s = STORE_NOT_FOUND;
	} else if (rc != 0) {
		s = fail(c, rc, "read");
	} else if (v.mv_size < 8) {
		snprintf(c->err, sizeof(c->err), "lmdb: corrupt cache record");
		s = STORE_CORRUPT;
	} else if ((long long)get_u64(v.mv_data) <= vtime_now_ms()) {
		s = STORE_NOT_FOUND;
	} else {
		buf_append(out, (const char *)v.mv_data + 8, v.mv_size - 8);
		s = out->oom ? STORE_NOMEM : STORE_OK;
	}
	txn_abort(c->st, txn);
	return s;
}

static enum store_status
lmdb_cache_put(void *p, const char *key, const char *value, size_t len, long long ttl_s)
{
	struct lmdb_conn *c = p;
	struct lmdb_store *st = c->st;
	unsigned char ek[8 + STORE_CACHE_KEY_MAX];
	long long now = vtime_now_ms(), expires = now + ttl_s * 1000;
	size_t klen = strlen(key);
	MDB_val k = {klen, (void *)key}, v, e;
	MDB_txn *txn;
	int rc;

	c->err[0] = '\0';
	rc = txn_begin(st, 0, &txn);
	if (rc != 0)
		return fail(c, rc, "begin");
	/* The older value's index entry goes: the sweep finds each key once. */
	rc = mdb_get(txn, st->cache, &k, &v);
	if (rc == 0 && v.mv_size >= 8) {
		memcpy(ek, v.mv_data, 8);
		memcpy(ek + 8, key, klen);
		e.mv_size = 8 + klen;
		e.mv_data = ek;
		rc = mdb_del(txn, st->cache_expiry, &e, NULL);
	}
	if (rc != 0 && rc != MDB_NOTFOUND)
		goto fail;
	/* MDB_RESERVE: the expiry and the value written in place, no copy of the value. */
	v.mv_size = 8 + len;
	if ((rc = mdb_put(txn, st->cache, &k, &v, MDB_RESERVE)) != 0)
		goto fail;
	put_u64(v.mv_data, (uint64_t)expires);
	if (len > 0)
		memcpy((unsigned char *)v.mv_data + 8, value, len);
	put_u64(ek, (uint64_t)expires);
	memcpy(ek + 8, key, klen);
	e.mv_size = 8 + klen;
	e.mv_data = ek;
	v.mv_size = 0;
	v.mv_data = "";
	if ((rc = mdb_put(txn, st->cache_expiry, &e, &v, 0)) != 0)
		goto fail;
	if ((rc = cache_sweep(txn, st, now, LMDB_SWEEP_MAX)) != 0)
		goto fail;
	rc = txn_commit(st, txn);
	return rc == 0 ? STORE_OK : fail(c, rc, "commit");
fail:
	txn_abort(st, txn);
	return fail(c, rc, "cache write");
}

const struct store_ops store_lmdb_ops = {
	"lmdb",
	lmdb_open,
	lmdb_close,
	lmdb_conn_new,
	lmdb_conn_free,
	lmdb_conn_error,
	lmdb_load,
	lmdb_append,
	lmdb_idem_find,
	lmdb_get_turn,
	lmdb_delete,
	lmdb_ping,
	lmdb_count,
	lmdb_cache_get,
	lmdb_cache_put,
	NULL,       /* buckets: the shared table of ratelimit.c, not a commit per request */
};
