/* chat: the chat turn routes and the session id rule they share. */
#ifndef VALERIE_CHAT_H
#define VALERIE_CHAT_H

#include <stddef.h>

/* Whether s (of length len) is 1..128 characters of [A-Za-z0-9_.:-] with no NUL. */
int chat_session_id_valid(const char *s, size_t len);

#endif
