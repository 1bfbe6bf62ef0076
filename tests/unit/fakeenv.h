/* fakeenv: an environment for conf_load in the unit tests, from a NULL-ended name/value list. */
#ifndef VALERIE_FAKEENV_H
#define VALERIE_FAKEENV_H

#include <string.h>

/*
 * conf_load's getter over `ctx`, a `const char *` array of name, value pairs
 * ended by NULL: {"VALERIE_AUTH", "jwt", NULL}.
 */
static inline const char *
fake_get(const char *name, void *ctx)
{
	const char *const *kv = ctx;

	for (; kv[0] != NULL; kv += 2)
		if (strcmp(kv[0], name) == 0)
			return kv[1];
	return NULL;
}

#endif
