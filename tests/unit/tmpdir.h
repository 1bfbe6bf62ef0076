/* tmpdir: one temp directory for a test program, removed with all in it when the program exits. */
#ifndef VALERIE_TMPDIR_H
#define VALERIE_TMPDIR_H

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir_path[PATH_MAX];
static pid_t tmpdir_owner;

static int
tmpdir_remove_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	if (remove(path) != 0)
		fprintf(stderr, "tmpdir: cannot remove %s: %s\n", path, strerror(errno));
	return 0;
}

/*
 * tmpdir_remove: removes the directory tmpdir_make made and everything under it
 * (children first, symlinks not followed). VALERIE_KEEP_TMP=1 keeps it and says where.
 * NOTE: does nothing in a forked child, whose exit must not take its parent's files.
 */
static void
tmpdir_remove(void)
{
	const char *keep = getenv("VALERIE_KEEP_TMP");

	if (tmpdir_path[0] == '\0' || getpid() != tmpdir_owner)
		return;
	if (keep != NULL && strcmp(keep, "1") == 0)
		fprintf(stderr, "(test files kept in %s)\n", tmpdir_path);
	else
		nftw(tmpdir_path, tmpdir_remove_one, 16, FTW_DEPTH | FTW_PHYS);
	tmpdir_path[0] = '\0';
}

/*
 * tmpdir_make: makes a fresh directory "$TMPDIR/<prefix>-XXXXXX" (/tmp when TMPDIR is
 * unset or empty) that is removed, with all in it, when the program exits through exit()
 * or a return from main, whether its checks passed or not. One per program. Returns the
 * path (static storage, borrowed), or NULL with errno set.
 * NOTE: a crash (a signal, a sanitizer's abort, _exit) skips the removal; the caller of
 * the program can point TMPDIR into a directory it removes itself (run-fuzz.sh does).
 */
static const char *
tmpdir_make(const char *prefix)
{
	const char *base = getenv("TMPDIR");
	int n;

	if (tmpdir_path[0] != '\0') {
		errno = EEXIST;
		return NULL;
	}
	if (base == NULL || *base == '\0')
		base = "/tmp";
	n = snprintf(tmpdir_path, sizeof(tmpdir_path), "%s/%s-XXXXXX", base, prefix);
	if (n < 0 || (size_t)n >= sizeof(tmpdir_path)) {
		tmpdir_path[0] = '\0';
		errno = ENAMETOOLONG;
		return NULL;
	}
	if (mkdtemp(tmpdir_path) == NULL) {
		tmpdir_path[0] = '\0';
		return NULL;
	}
	tmpdir_owner = getpid();
	if (atexit(tmpdir_remove) != 0) {
		tmpdir_remove();
		errno = ENOMEM;
		return NULL;
	}
	return tmpdir_path;
}

#endif
