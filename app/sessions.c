/* sessions: read and forget a session (GET/DELETE /api/v1/sessions/{id}, POST /memory/clear/{id}). */
#include "config.h"

#include "chat.h"
#include "handler.h"
#include "log.h"
#include "store.h"
#include "vtime.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SESSION_PAGE_MAX 1000   /* turns one GET may ask for with ?limit */

#define STR_(x) #x
#define STR(x) STR_(x)

/* The router copies a {param} of up to ROUTER_PARAM_MAX bytes; longer ones arrive as "". */
_Static_assert(STORE_ID_MAX <= ROUTER_PARAM_MAX, "a valid session id must fit the router's param");

/*
 * Checks the {id} of the path; fills a 400 and returns -1 when it is not a
 * session id (including "", what the router gives for an over-long segment).
 */
static int
check_id(struct handler_ctx *ctx)
{
	if (chat_session_id_valid(ctx->param, strlen(ctx->param)))
		return 0;
	http_response_error(ctx->resp, 400, "invalid_session_id",
	    "a session id is 1 to 128 characters of A-Z a-z 0-9 _ . : -");
	return -1;
}

static void
store_failed(struct handler_ctx *ctx, enum store_status s, const char *op)
{
	chat_store_error(ctx, s, op, "the session store is unavailable");
}

/* A page of a session: the newest `limit` turns (0: all) before turn `before` (0: none). */
struct page {
	long long limit, before;
};

/*
 * Reads ?limit=N (1..SESSION_PAGE_MAX) and ?before=T (1..INT_MAX) from the
 * query, names and values percent-decoded (http_query_decode); other
 * parameters are ignored. Of one given twice each must be valid and the
 * last counts. Fills a 400 and returns -1 for a bad value or a malformed
 * escape in one. With `before` and no `limit`, the page is SESSION_PAGE_MAX
 * turns.
 */
static int
read_page(struct handler_ctx *ctx, struct page *pg)
{
	const char *q = ctx->req->query != NULL ? ctx->req->query : "";
	struct http_query_param p;
	char name[8], value[24], msg[160], *end;
	long long v, max;
	int is_limit;

	pg->limit = pg->before = 0;
	while (http_query_next(&q, &p)) {
		/* A name that does not decode, or is longer than ours, is none of ours. */
		if (http_query_decode(p.name, p.name_len, name, sizeof(name)) != HTTP_DECODE_OK)
			continue;
		is_limit = strcmp(name, "limit") == 0;
		if (!is_limit && strcmp(name, "before") != 0)
			continue;
		switch (http_query_decode(p.value, p.value_len, value, sizeof(value))) {
		case HTTP_DECODE_OK:
			break;
		case HTTP_DECODE_BAD:
			snprintf(msg, sizeof(msg), "query parameter \"%s\" has a malformed percent escape "
			    "(%%XX with two hex digits, not %%00)", name);
			http_response_error(ctx->resp, 400, "invalid_query", msg);
			return -1;
		case HTTP_DECODE_TOO_LONG:
		default:
			goto bad;
		}
		max = is_limit ? SESSION_PAGE_MAX : INT_MAX;
		if (value[0] < '0' || value[0] > '9')
			goto bad;
		errno = 0;
		v = strtoll(value, &end, 10);
		if (errno != 0 || *end != '\0' || v < 1 || v > max)
			goto bad;
		if (is_limit)
			pg->limit = v;
		else
			pg->before = v;
	}
	if (pg->before > 0 && pg->limit == 0)
		pg->limit = SESSION_PAGE_MAX;
	return 0;
bad:
	http_response_error(ctx->resp, 400, "invalid_query", "limit is 1 to "
	    STR(SESSION_PAGE_MAX) " turns and before a turn number (1 or more)");
	return -1;
}

/*
 * Loads the page of the session as a JSON array of turns, oldest first, and
 * checks the session is the caller's; 0, or a response filled.
 */
static int
load_own(struct handler_ctx *ctx, const struct page *pg, struct store_session_info *info,
    struct buf *turns)
{
	enum store_status s;

	s = pg->before > 0 ?
	    store_load_before(ctx->store, ctx->param, (int)pg->limit, (int)pg->before, info, turns) :
	    store_load(ctx->store, ctx->param, (int)pg->limit, 0, info, turns);
	if (s == STORE_OK && strcmp(info->owner, ctx->principal) != 0 && !ctx->admin)
		s = STORE_NOT_FOUND;
	if (s == STORE_OK)
		return 0;
	if (s == STORE_NOT_FOUND)
		http_response_error(ctx->resp, 404, "session_not_found", "no such session");
	else
		store_failed(ctx, s, "load");
	return -1;
}

void
session_get(struct handler_ctx *ctx)
{
	struct store_session_info info;
	struct json_object *turns = NULL, *doc = NULL, *out, *msgs, *m;
	struct buf text = {0};
	struct page pg;
	char ts[32];
	size_t i, j;

	if (check_id(ctx) != 0 || read_page(ctx, &pg) != 0 || load_own(ctx, &pg, &info, &text) != 0)
		goto done;
	turns = json_tokener_parse(text.data);
	doc = json_object_new_object();
	out = json_object_new_array();
	if (turns == NULL || doc == NULL || out == NULL) {
		json_object_put(out);
		if (turns == NULL)
			store_failed(ctx, STORE_CORRUPT, "load");
		else
			ctx->resp->body.oom = 1;
		goto done;
	}
	/* Flatten the turns: each message carries the number of its turn. */
	for (i = 0; i < json_object_array_length(turns); i++) {
		struct json_object *t = json_object_array_get_idx(turns, i), *n;

		if (!json_object_object_get_ex(t, "turn", &n) ||
		    !json_object_object_get_ex(t, "messages", &msgs))
			continue;
		for (j = 0; j < json_object_array_length(msgs); j++) {
			struct json_object *copy = json_object_new_object();

			m = json_object_array_get_idx(msgs, j);
			if (copy == NULL)
				continue;
			json_object_object_add(copy, "turn", json_object_get(n));
			json_object_object_foreach(m, key, val) {
				if (strcmp(key, "turn") != 0)
					json_object_object_add(copy, key, json_object_get(val));
			}
			json_object_array_add(out, copy);
		}
	}
	json_object_object_add(doc, "session_id", json_object_new_string(ctx->param));
	json_object_object_add(doc, "owner", json_object_new_string(info.owner));
	vtime_iso(info.created_ms, ts);
	json_object_object_add(doc, "created_at", json_object_new_string(ts));
	vtime_iso(info.updated_ms, ts);
	json_object_object_add(doc, "updated_at", json_object_new_string(ts));
	json_object_object_add(doc, "turns", json_object_new_int(info.turns));
	json_object_object_add(doc, "messages", out);
	http_response_json(ctx->resp, 200, doc);
done:
	json_object_put(doc);
	json_object_put(turns);
	buf_free(&text);
}

static void
forget(struct handler_ctx *ctx, const char *status)
{
	struct store_session_info info;
	struct json_object *doc;
	struct buf text = {0};
	enum store_status s;

	if (check_id(ctx) != 0)
		return;
	/* NOTE: reads only the newest turn: enough to learn the owner. */
	s = store_load(ctx->store, ctx->param, 1, 0, &info, &text);
	buf_free(&text);
	if (s == STORE_OK && strcmp(info.owner, ctx->principal) != 0 && !ctx->admin)
		s = STORE_NOT_FOUND;
	if (s == STORE_OK)
		s = store_delete(ctx->store, ctx->param);
	if (s == STORE_NOT_FOUND) {
		http_response_error(ctx->resp, 404, "session_not_found", "no such session");
		return;
	}
	if (s != STORE_OK) {
		store_failed(ctx, s, "delete");
		return;
	}
	doc = json_object_new_object();
	if (doc == NULL) {
		ctx->resp->body.oom = 1;
		return;
	}
	json_object_object_add(doc, "session_id", json_object_new_string(ctx->param));
	json_object_object_add(doc, "deleted", json_object_new_boolean(1));
	json_object_object_add(doc, "status", json_object_new_string(status));
	http_response_json(ctx->resp, 200, doc);
	json_object_put(doc);
}

void
session_delete(struct handler_ctx *ctx)
{
	forget(ctx, "deleted");
}

void
session_clear(struct handler_ctx *ctx)
{
	forget(ctx, "cleared");
}
