/* bigturn: a turn's messages JSON of TURN_BYTES of content, to fill an LMDB map in tests. */
#ifndef VALERIE_BIGTURN_H
#define VALERIE_BIGTURN_H

#include <stdlib.h>
#include <string.h>

#define TURN_BYTES (64 * 1024)   /* one turn's content: a 16 MB map holds ~200 */

/* [{"role":"user","content":"<TURN_BYTES of fill>"}], malloc'ed (caller frees); NULL on OOM. */
static char *
big_turn(char fill)
{
	static const char head[] = "[{\"role\":\"user\",\"content\":\"";
	char *s = malloc(sizeof(head) + TURN_BYTES + 4);

	if (s == NULL)
		return NULL;
	memcpy(s, head, sizeof(head) - 1);
	memset(s + sizeof(head) - 1, fill, TURN_BYTES);
	memcpy(s + sizeof(head) - 1 + TURN_BYTES, "\"}]", 4);
	return s;
}

#endif
