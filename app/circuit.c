/* circuit: circuit breakers whose state every worker process of the host sees (shared memory). */
#include "config.h"

#include "circuit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CIRCUITS_MAGIC 0x56414c4349524331ULL   /* "VALCIRC1" */

/*
 * NOTE: lives in a MAP_SHARED file mapping. Only lock-free atomics are used
 * on it (always lock-free for int and long long on x86-64 and arm64), which
 * work across processes; names are written once, under the file lock, before
 * `used` publishes the slot.
 */
struct circuit {
	atomic_int used;
	atomic_int state;
	atomic_int failures;
	atomic_llong opened_ms;
	atomic_llong probe_ms;
	char name[CIRCUIT_NAME_MAX + 1];
};

/*
 * NOTE: the times are CLOCK_MONOTONIC, which starts again at each boot, and
 * the file lives on in VALERIE_DATA_DIR: a circuit open at a reboot would
 * read as opened in the future and stay open for as long as the last
 * uptime. The table carries the boot it was written in and is reset in
 * another.
 */
struct table {
	unsigned long long magic;
	unsigned int size;
	char boot_id[40];
	struct circuit c[CIRCUIT_MAX];
};

struct circuits {
	int fd;
	struct table *t;
	pthread_mutex_t lock;   /* flock does not exclude this process's other threads */
};

static const char *boot_id_file = "/proc/sys/kernel/random/boot_id";

void
circuits_set_boot_id_file(const char *path)
{
	boot_id_file = path;
}

/* This boot's id ("" when it cannot be read: then the table is never reset for it). */
static void
read_boot_id(char out[40])
{
	FILE *f = fopen(boot_id_file, "re");

	memset(out, 0, 40);
	if (f == NULL)
		return;
	if (fgets(out, 40, f) == NULL)
		out[0] = '\0';
	out[strcspn(out, "\n")] = '\0';
	fclose(f);
}

long long
circuit_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct circuits *
circuits_open(const char *path, char *err, size_t errlen)
{
	struct circuits *cs = calloc(1, sizeof(*cs));
	char boot[40];
	struct stat sb;

	if (cs == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&cs->lock, NULL);
	cs->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (cs->fd < 0) {
		snprintf(err, errlen, "VALERIE_DATA_DIR: cannot open %s: %s", path, strerror(errno));
		free(cs);
		return NULL;
	}
	/* The first process sizes and stamps the table; a stale layout is reset. */
	flock(cs->fd, LOCK_EX);
	if (fstat(cs->fd, &sb) != 0 || (size_t)sb.st_size != sizeof(struct table)) {
		if (ftruncate(cs->fd, 0) != 0 || ftruncate(cs->fd, sizeof(struct table)) != 0) {
			snprintf(err, errlen, "cannot size %s: %s", path, strerror(errno));
			goto fail;
		}
	}
	cs->t = mmap(NULL, sizeof(struct table), PROT_READ | PROT_WRITE, MAP_SHARED, cs->fd, 0);
	if (cs->t == MAP_FAILED) {
		snprintf(err, errlen, "cannot map %s: %s", path, strerror(errno));
		cs->t = NULL;
		goto fail;
	}
	read_boot_id(boot);
	if (cs->t->magic != CIRCUITS_MAGIC || cs->t->size != sizeof(struct table) ||
	    memcmp(cs->t->boot_id, boot, sizeof(boot)) != 0) {
		memset(cs->t, 0, sizeof(struct table));
		cs->t->size = sizeof(struct table);
		memcpy(cs->t->boot_id, boot, sizeof(boot));
		cs->t->magic = CIRCUITS_MAGIC;
	}
	flock(cs->fd, LOCK_UN);
	return cs;
fail:
	flock(cs->fd, LOCK_UN);
	close(cs->fd);
	free(cs);
	return NULL;
}

void
circuits_close(struct circuits *cs)
{
	if (cs == NULL)
		return;
	if (cs->t != NULL)
		munmap(cs->t, sizeof(struct table));
	close(cs->fd);
	pthread_mutex_destroy(&cs->lock);
	free(cs);
}

static struct circuit *
find(struct circuits *cs, const char *name)
{
	int i;

	for (i = 0; i < CIRCUIT_MAX; i++)
		if (atomic_load(&cs->t->c[i].used) && strcmp(cs->t->c[i].name, name) == 0)
			return &cs->t->c[i];
	return NULL;
}

struct circuit *
circuits_get(struct circuits *cs, const char *name)
{
	struct circuit *c;
	int i;

	if (strlen(name) > CIRCUIT_NAME_MAX)
		return NULL;
	c = find(cs, name);
	if (c != NULL)
		return c;
	pthread_mutex_lock(&cs->lock);
	flock(cs->fd, LOCK_EX);
	c = find(cs, name);
	for (i = 0; c == NULL && i < CIRCUIT_MAX; i++) {
		if (atomic_load(&cs->t->c[i].used))
			continue;
		c = &cs->t->c[i];
		snprintf(c->name, sizeof(c->name), "%s", name);
		atomic_store(&c->state, CIRCUIT_CLOSED);
		atomic_store(&c->failures, 0);
		atomic_store(&c->used, 1);
	}
	flock(cs->fd, LOCK_UN);
	pthread_mutex_unlock(&cs->lock);
	return c;
}

int
circuit_allow(struct circuit *c, long long now_ms, long long reset_ms)
{
	int st = atomic_load(&c->state);
	long long since, opened;

	if (st == CIRCUIT_CLOSED)
		return 1;
	/*
	 * One compare-and-swap on probe_ms decides who probes, open or half-open.
	 * NOTE: switching the state first and stamping the probe after let a
	 * caller in between see half-open with the last probe's old stamp, and
	 * probe too.
	 */
	since = atomic_load(&c->probe_ms);
	if (st == CIRCUIT_OPEN) {
		opened = atomic_load(&c->opened_ms);
		/* A probe stamped after the opening is this period's: taken. */
		if (now_ms - opened < reset_ms || since > opened)
			return 0;
		if (!atomic_compare_exchange_strong(&c->probe_ms, &since, now_ms))
			return 0;
		atomic_store(&c->state, CIRCUIT_HALF_OPEN);
		return 1;
	}
	if (now_ms - since < reset_ms)
		return 0;
	/* The probe is overdue (its process died?): one caller probes again. */
	return atomic_compare_exchange_strong(&c->probe_ms, &since, now_ms);
}

void
circuit_success(struct circuit *c)
{
	atomic_store(&c->failures, 0);
	atomic_store(&c->state, CIRCUIT_CLOSED);
}

void
circuit_failure(struct circuit *c, long long now_ms, int threshold)
{
	int st = atomic_load(&c->state);

	if (st == CIRCUIT_HALF_OPEN) {
		atomic_store(&c->opened_ms, now_ms);
		atomic_store(&c->state, CIRCUIT_OPEN);
		return;
	}
	if (atomic_fetch_add(&c->failures, 1) + 1 >= threshold && st == CIRCUIT_CLOSED) {
		atomic_store(&c->opened_ms, now_ms);
		atomic_store(&c->state, CIRCUIT_OPEN);
	}
}

enum circuit_state
circuit_state_now(const struct circuit *c, long long now_ms, long long reset_ms)
{
	int st = atomic_load(&c->state);

	if (st == CIRCUIT_OPEN && now_ms - atomic_load(&c->opened_ms) >= reset_ms)
		return CIRCUIT_HALF_OPEN;
	return (enum circuit_state)st;
}

const char *
circuit_name(const struct circuit *c)
{
	return c->name;
}
