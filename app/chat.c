/* chat: one chat turn (POST /api/v1/chat and /api/agent/chat): validate, load, answer, store. */
#include "config.h"

#include "agent_loop.h"
#include "app.h"
#include "bizctx.h"
#include "chat.h"
#include "conf.h"
#include "handler.h"
#include "jsonbody.h"
#include "log.h"
#include "metrics.h"
#include "provider.h"
#include "store.h"
#include "trace.h"
#include "utf8.h"
#include "vtime.h"

#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#define CHAT_PERSONA_FIELD_MAX 500   /* characters of one persona field */
#define CHAT_IDEM_COMPARE_MAX 256    /* request messages a replay compares with its turn */

/* The scoped key (principal \x1f key) must be one every store takes. */
_Static_assert(STORE_ID_MAX + 1 + CHAT_IDEM_KEY_MAX <= STORE_IDEM_MAX,
    "a caller-scoped Idempotency-Key must fit STORE_IDEM_MAX");

#define JSON_PLAIN (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

int
chat_session_id_valid(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > STORE_ID_MAX || strlen(s) != len)
		return 0;
	/* NOTE: "." and ".." are path steps: nginx resolves them, so no URL reaches them. */
	if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return 0;
	for (i = 0; i < len; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    ch == '_' || ch == '.' || ch == ':' || ch == '-'))
			return 0;
	}
	return 1;
}

/* One turn in progress: what the provider callbacks need. */
struct turn_state {
	struct handler_ctx *ctx;
	const struct chat_turn_input *in;
	const struct llm_result *res;   /* the model serving now is in res->model */
	int stopping;                   /* cancelled because the process stops */
};

/* What a valid chat body holds. Borrowed from the parsed body. */
struct chat_input {
	const char *message;
	size_t message_len;
	const char *session_id;
	int stream;
	struct json_object *persona;   /* the "config" object, or NULL */
	char idem_key[CHAT_IDEM_KEY_MAX + STORE_ID_MAX + 2]; /* principal \x1f key, or "" */
};

static const char *const persona_fields[] = {
	"nombre_bot", "id_empresa", "rol_bot", "tipo_bot", "objetivo_principal", NULL
};

/* Validates the body's fields; fills `in`, or `resp` with a 400 and returns -1. */
static int
read_input(struct handler_ctx *ctx, struct json_object *body, struct chat_input *in)
{
	struct json_object *v;
	const char *key;
	char msg[160];
	size_t len, i;

	memset(in, 0, sizeof(*in));
	if (jsonbody_field(body, "message", JB_STRING, &v, ctx->resp) != 0)
		return -1;
	if (v == NULL) {
		http_response_error(ctx->resp, 400, "invalid_field", "field \"message\" is required");
		return -1;
	}
	in->message = json_object_get_string(v);
	in->message_len = (size_t)json_object_get_string_len(v);
	for (i = 0; i < in->message_len && strchr(" \t\r\n", in->message[i]) != NULL; i++)
		;
	if (i == in->message_len) {
		http_response_error(ctx->resp, 400, "invalid_field", "field \"message\" is empty");
		return -1;
	}
	if ((long long)utf8_count(in->message, in->message_len) > ctx->conf->max_message_chars) {
		snprintf(msg, sizeof(msg), "field \"message\" is longer than %lld characters",
		    ctx->conf->max_message_chars);
		http_response_error(ctx->resp, 400, "message_too_long", msg);
		return -1;
	}

	if (jsonbody_field(body, "session_id", JB_STRING, &v, ctx->resp) != 0)
		return -1;
	if (v == NULL) {
		http_response_error(ctx->resp, 400, "invalid_field", "field \"session_id\" is required");
		return -1;
	}
	in->session_id = json_object_get_string(v);
	if (!chat_session_id_valid(in->session_id, (size_t)json_object_get_string_len(v))) {
		http_response_error(ctx->resp, 400, "invalid_session_id",
		    "field \"session_id\" must be 1 to 128 characters of A-Z a-z 0-9 _ . : -");
		return -1;
	}

	if (jsonbody_field(body, "stream", JB_BOOL, &v, ctx->resp) != 0)
		return -1;
	in->stream = v != NULL && json_object_get_boolean(v);

	if (jsonbody_field(body, "config", JB_OBJECT, &in->persona, ctx->resp) != 0)
		return -1;
	for (i = 0; in->persona != NULL && persona_fields[i] != NULL; i++) {
		enum jsonbody_type t = strcmp(persona_fields[i], "id_empresa") == 0 ?
		    JB_STRING_OR_INT : JB_STRING;

		if (jsonbody_field(in->persona, persona_fields[i], t, &v, ctx->resp) != 0)
			return -1;
		if (v != NULL && json_object_is_type(v, json_type_string) &&
		    utf8_count(json_object_get_string(v), (size_t)json_object_get_string_len(v)) >
		    CHAT_PERSONA_FIELD_MAX) {
			snprintf(msg, sizeof(msg), "field \"config.%s\" is longer than %d characters",
			    persona_fields[i], CHAT_PERSONA_FIELD_MAX);
			http_response_error(ctx->resp, 400, "invalid_field", msg);
			return -1;
		}
	}

	key = http_request_header(ctx->req, "idempotency-key");
	if (key != NULL) {
		len = strlen(key);
		for (i = 0; i < len && key[i] > 0x20 && key[i] < 0x7f; i++)
			;
		if (len == 0 || len > CHAT_IDEM_KEY_MAX || i != len) {
			http_response_error(ctx->resp, 400, "invalid_idempotency_key",
			    "Idempotency-Key must be 1 to 200 visible ASCII characters");
			return -1;
		}
		snprintf(in->idem_key, sizeof(in->idem_key), "%s\x1f%s", ctx->principal, key);
	}
	return 0;
}

/*
 * The system prompt from the persona (seed 001's fields); empty without a
 * persona, so the provider's own default applies.
 */
static void
system_prompt(struct json_object *persona, struct buf *out)
{
	struct json_object *v;
	const char *name = "Valerie", *role = NULL, *kind = NULL, *goal = NULL, *company = NULL;

	if (persona == NULL)
		return;
	{
		if (json_object_object_get_ex(persona, "nombre_bot", &v) && v != NULL)
			name = json_object_get_string(v);
		if (json_object_object_get_ex(persona, "rol_bot", &v) && v != NULL)
			role = json_object_get_string(v);
		if (json_object_object_get_ex(persona, "tipo_bot", &v) && v != NULL)
			kind = json_object_get_string(v);
		if (json_object_object_get_ex(persona, "objetivo_principal", &v) && v != NULL)
			goal = json_object_get_string(v);
		if (json_object_object_get_ex(persona, "id_empresa", &v) && v != NULL)
			company = json_object_get_string(v);
	}
	buf_printf(out, "You are %s", name);
	if (role != NULL)
		buf_printf(out, ", %s", role);
	if (kind != NULL)
		buf_printf(out, " (%s assistant)", kind);
	if (company != NULL)
		buf_printf(out, " for company %s", company);
	buf_puts(out, ".");
	if (goal != NULL)
		buf_printf(out, " Your main goal: %s.", goal);
}

struct json_object *
chat_message_new(const char *role, const char *content, size_t len)
{
	struct json_object *m = json_object_new_object();

	if (m == NULL)
		return NULL;
	json_object_object_add(m, "role", json_object_new_string(role));
	json_object_object_add(m, "content", json_object_new_string_len(content, (int)len));
	return m;
}

/*
 * A message for the provider from a stored (or new) one: its role and
 * content, its tool_calls or tool_call_id, and its name; NULL for a message of another
 * role. A message with `parts` (chat.h) has them as its content for a
 * provider; `stored` keeps both, as a turn stores them. Caller puts.
 */
static struct json_object *
provider_message(struct json_object *m, int stored)
{
	struct json_object *role, *content, *v, *out, *parts = NULL;
	const char *r;

	if (!json_object_object_get_ex(m, "role", &role) ||
	    !json_object_is_type(role, json_type_string))
		return NULL;
	r = json_object_get_string(role);
	if (strcmp(r, "user") != 0 && strcmp(r, "assistant") != 0 && strcmp(r, "tool") != 0)
		return NULL;
	if (!json_object_object_get_ex(m, "content", &content))
		content = NULL;
	json_object_object_get_ex(m, "parts", &parts);
	if ((out = json_object_new_object()) == NULL)
		return NULL;
	json_object_object_add(out, "role", json_object_get(role));
	json_object_object_add(out, "content",
	    json_object_get(parts != NULL && !stored ? parts : content));
	if (parts != NULL && stored)
		json_object_object_add(out, "parts", json_object_get(parts));
	if (json_object_object_get_ex(m, "tool_calls", &v) && v != NULL)
		json_object_object_add(out, "tool_calls", json_object_get(v));
	if (json_object_object_get_ex(m, "tool_call_id", &v) && v != NULL)
		json_object_object_add(out, "tool_call_id", json_object_get(v));
	if (json_object_object_get_ex(m, "name", &v) && v != NULL)
		json_object_object_add(out, "name", json_object_get(v));
	return out;
}

/*
 * A new message (of any role) as a provider reads it: itself, or with
 * `parts` a copy whose content they are. Caller puts; NULL out of memory.
 */
static struct json_object *
provider_view(struct json_object *m)
{
	struct json_object *parts, *out;

	if (!json_object_object_get_ex(m, "parts", &parts) || parts == NULL)
		return json_object_get(m);
	if ((out = json_object_new_object()) == NULL)
		return NULL;
	json_object_object_foreach(m, key, val) {
		if (strcmp(key, "parts") != 0)
			json_object_object_add(out, key,
			    json_object_get(strcmp(key, "content") == 0 ? parts : val));
	}
	return out;
}

/* Appends the user, assistant and tool messages of the stored turns to `list`. */
static void
history_messages(struct json_object *list, struct json_object *turns)
{
	struct json_object *msgs, *m;
	size_t i, j;

	for (i = 0; turns != NULL && i < json_object_array_length(turns); i++) {
		if (!json_object_object_get_ex(json_object_array_get_idx(turns, i), "messages", &msgs))
			continue;
		for (j = 0; j < json_object_array_length(msgs); j++)
			if ((m = provider_message(json_object_array_get_idx(msgs, j), 0)) != NULL)
				json_object_array_add(list, m);
	}
}

static const char *
str_member(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/*
 * Keeps tool calls and their results in pairs, as every provider requires: a
 * history window can begin after the call a result answers, and a client
 * may never have sent the result of a call. Drops the results whose call is
 * not in the list and the calls no result answers (and an assistant message
 * left with neither text nor calls). Returns 0, or -1 out of memory.
 */
static int
pair_tool_calls(struct json_object *list)
{
	struct json_object *answered = NULL, *kept = NULL, *out = NULL;
	struct json_object *m, *calls, *keep, *c, *content, *copy;
	const char *role, *id;
	size_t i, j, nkeep;
	int rc = -1;

	/*
	 * NOTE: the usual list has no tool message and no call: nothing to pair,
	 * and the two lookup tables and the copy below cost about 4,000
	 * instructions of a completion (bench/instructions.sh).
	 */
	for (i = 0; i < json_object_array_length(list); i++) {
		m = json_object_array_get_idx(list, i);
		if ((role = str_member(m, "role")) != NULL && (strcmp(role, "tool") == 0 ||
		    (strcmp(role, "assistant") == 0 &&
		    json_object_object_get_ex(m, "tool_calls", &calls) &&
		    json_object_is_type(calls, json_type_array))))
			break;
	}
	if (i == json_object_array_length(list))
		return 0;
	answered = json_object_new_object();
	kept = json_object_new_object();
	out = json_object_new_array();
	if (answered == NULL || kept == NULL || out == NULL)
		goto done;
	for (i = 0; i < json_object_array_length(list); i++) {
		m = json_object_array_get_idx(list, i);
		if ((role = str_member(m, "role")) != NULL && strcmp(role, "tool") == 0 &&
		    (id = str_member(m, "tool_call_id")) != NULL)
			json_object_object_add(answered, id, NULL);
	}
	for (i = 0; i < json_object_array_length(list); i++) {
		m = json_object_array_get_idx(list, i);
		role = str_member(m, "role");
		if (role != NULL && strcmp(role, "tool") == 0) {
			id = str_member(m, "tool_call_id");
			if (id == NULL || !json_object_object_get_ex(kept, id, NULL))
				continue;
		} else if (role != NULL && strcmp(role, "assistant") == 0 &&
		    json_object_object_get_ex(m, "tool_calls", &calls) &&
		    json_object_is_type(calls, json_type_array)) {
			if ((keep = json_object_new_array()) == NULL)
				goto done;
			for (j = 0; j < json_object_array_length(calls); j++) {
				c = json_object_array_get_idx(calls, j);
				if ((id = str_member(c, "id")) == NULL ||
				    !json_object_object_get_ex(answered, id, NULL))
					continue;
				json_object_object_add(kept, id, NULL);
				json_object_array_add(keep, json_object_get(c));
			}
			nkeep = json_object_array_length(keep);
			if (nkeep == json_object_array_length(calls)) {
				json_object_put(keep);
			} else {
				/* A copy without the unanswered calls: `m` may be the caller's. */
				if ((copy = json_object_new_object()) == NULL) {
					json_object_put(keep);
					goto done;
				}
				json_object_object_foreach(m, key, val) {
					if (strcmp(key, "tool_calls") != 0)
						json_object_object_add(copy, key, json_object_get(val));
				}
				if (nkeep > 0)
					json_object_object_add(copy, "tool_calls", keep);
				else
					json_object_put(keep);
				if (nkeep == 0 &&
				    (!json_object_object_get_ex(copy, "content", &content) ||
				    !json_object_is_type(content, json_type_string) ||
				    json_object_get_string_len(content) == 0)) {
					json_object_put(copy);
					continue;
				}
				json_object_array_add(out, copy);
				continue;
			}
		}
		json_object_array_add(out, json_object_get(m));
	}
	/* Replace the list's contents with the kept messages. */
	json_object_array_del_idx(list, 0, json_object_array_length(list));
	for (i = 0; i < json_object_array_length(out); i++)
		json_object_array_add(list, json_object_get(json_object_array_get_idx(out, i)));
	rc = 0;
done:
	json_object_put(answered);
	json_object_put(kept);
	json_object_put(out);
	return rc;
}

/* The provider's messages: system, the history window, then the turn's new messages. */
static struct json_object *
provider_messages(const struct chat_turn_input *in, struct json_object *turns)
{
	struct json_object *list = json_object_new_array(), *m;
	size_t i;

	if (list == NULL)
		return NULL;
	if (in->system != NULL && *in->system != '\0')
		json_object_array_add(list, chat_message_new("system", in->system, strlen(in->system)));
	history_messages(list, turns);
	for (i = 0; i < json_object_array_length(in->new_messages); i++) {
		if ((m = provider_view(json_object_array_get_idx(in->new_messages, i))) == NULL) {
			json_object_put(list);
			return NULL;
		}
		json_object_array_add(list, m);
	}
	if (pair_tool_calls(list) != 0) {
		json_object_put(list);
		return NULL;
	}
	return list;
}

struct json_object *
chat_answer_doc(const struct chat_answer *a, const char *request_id)
{
	struct json_object *doc = json_object_new_object(), *usage = json_object_new_object();

	if (doc == NULL || usage == NULL) {
		json_object_put(doc);
		json_object_put(usage);
		return NULL;
	}
	json_object_object_add(doc, "reply", json_object_new_string_len(a->reply, (int)a->reply_len));
	json_object_object_add(doc, "session_id", json_object_new_string(a->session_id));
	json_object_object_add(doc, "turn", json_object_new_int(a->turn));
	json_object_object_add(usage, "input_tokens", json_object_new_int64(a->input_tokens));
	json_object_object_add(usage, "output_tokens", json_object_new_int64(a->output_tokens));
	json_object_object_add(doc, "usage", usage);
	json_object_object_add(doc, "provider", json_object_new_string(a->provider));
	json_object_object_add(doc, "model", json_object_new_string(a->model));
	json_object_object_add(doc, "request_id", json_object_new_string(request_id));
	if (a->tool_calls != NULL)
		json_object_object_add(doc, "tool_calls", json_object_get(a->tool_calls));
	return doc;
}

/*
 * The messages of the turn to store: the turn's new messages (each with its
 * time) and the assistant's answer, with its tool calls. Caller frees.
 */
static char *
turn_messages(const struct chat_turn_input *in, const struct llm_result *res,
    struct json_object *tool_calls, struct json_object *steps, long long t_user,
    long long t_reply, const char *request_id)
{
	struct json_object *list = json_object_new_array(), *m, *a, *usage;
	char ts[32];
	char *text = NULL;
	size_t i;

	if (list == NULL)
		return NULL;
	vtime_iso(t_user, ts);
	for (i = 0; i < json_object_array_length(in->new_messages); i++) {
		m = provider_message(json_object_array_get_idx(in->new_messages, i), 1);
		if (m == NULL)
			continue;
		json_object_object_add(m, "ts", json_object_new_string(ts));
		if (json_object_array_add(list, m) != 0) {
			json_object_put(m);
			goto out;
		}
	}
	/* The agent steps: the model's tool calls and the results, as they happened. */
	vtime_iso(t_reply, ts);
	for (i = 0; steps != NULL && i < json_object_array_length(steps); i++) {
		m = json_object_new_object();
		if (m == NULL || json_object_array_add(list, m) != 0) {
			json_object_put(m);
			goto out;
		}
		json_object_object_foreach(json_object_array_get_idx(steps, i), key, val)
			json_object_object_add(m, key, json_object_get(val));
		json_object_object_add(m, "ts", json_object_new_string(ts));
	}
	a = chat_message_new("assistant", res->text.data, res->text.len);
	usage = json_object_new_object();
	if (a == NULL || usage == NULL || json_object_array_add(list, a) != 0) {
		json_object_put(a);
		json_object_put(usage);
		goto out;
	}
	if (tool_calls != NULL) {
		/* As OpenAI sends it: content null when the model only calls tools. */
		if (res->text.len == 0)
			json_object_object_add(a, "content", NULL);
		json_object_object_add(a, "tool_calls", json_object_get(tool_calls));
	}
	vtime_iso(t_reply, ts);
	json_object_object_add(a, "ts", json_object_new_string(ts));
	json_object_object_add(usage, "input_tokens", json_object_new_int64(res->input_tokens));
	json_object_object_add(usage, "output_tokens", json_object_new_int64(res->output_tokens));
	json_object_object_add(a, "usage", usage);
	json_object_object_add(a, "provider", json_object_new_string(res->provider));
	json_object_object_add(a, "model", json_object_new_string(res->model));
	json_object_object_add(a, "request_id", json_object_new_string(request_id));
	text = strdup(json_object_to_json_string_ext(list, JSON_PLAIN));
out:
	json_object_put(list);
	return text;
}

/* --- streaming ------------------------------------------------------------ */

static int
sse_event(struct http_response *resp, const char *event, struct json_object *data)
{
	struct buf b = {0};
	int rc;

	buf_printf(&b, "event: %s\ndata: %s\n\n", event,
	    json_object_to_json_string_ext(data, JSON_PLAIN));
	rc = b.oom ? -1 : http_stream_write(resp, b.data, b.len);
	buf_free(&b);
	return rc;
}

static int
sse_error(struct http_response *resp, const char *code, const char *message)
{
	struct json_object *doc = json_object_new_object(), *err = json_object_new_object();
	int rc = -1;

	if (doc != NULL && err != NULL) {
		json_object_object_add(err, "code", json_object_new_string(code));
		json_object_object_add(err, "message", json_object_new_string(message));
		json_object_object_add(doc, "error", err);
		err = NULL;
		rc = sse_event(resp, "error", doc);
	}
	json_object_put(err);
	json_object_put(doc);
	return rc;
}

static int
is_cancelled(void *p)
{
	struct turn_state *t = p;

	if (app_stop_due()) {
		t->stopping = 1;
		return 1;
	}
	return http_client_gone(t->ctx->resp);
}

static int
on_delta(void *p, const char *text, size_t len)
{
	struct turn_state *t = p;
	int rc = t->res->refusal && t->in->fmt->refusal != NULL ?
	    t->in->fmt->refusal(t->ctx, t->in->fmt_state, t->res->model, text, len) :
	    t->in->fmt->delta(t->ctx, t->in->fmt_state, t->res->model, text, len);

	/* NOTE: a delta not written to a client still there ran out of memory. */
	if (rc != 0 && !t->ctx->resp->aborted)
		t->ctx->resp->body.oom = 1;
	return rc;
}

void
chat_stream_begin(struct handler_ctx *ctx)
{
	http_response_header(ctx->resp, "Content-Type", "text/event-stream");
	http_response_header(ctx->resp, "Cache-Control", "no-cache");
	http_stream_begin(ctx->resp);
}

/* --- the native format: the answer document, SSE delta / done / error --- */

static void
native_begin(struct handler_ctx *ctx, void *state)
{
	(void)state;
	chat_stream_begin(ctx);
}

static int
native_delta(struct handler_ctx *ctx, void *state, const char *model, const char *text,
    size_t len)
{
	struct json_object *d = json_object_new_object();
	int rc;

	(void)state;
	(void)model;
	if (d == NULL)
		return -1;
	json_object_object_add(d, "text", json_object_new_string_len(text, (int)len));
	rc = sse_event(ctx->resp, "delta", d);
	json_object_put(d);
	return rc;
}

static void
native_done(struct handler_ctx *ctx, void *state, const struct chat_answer *a)
{
	struct json_object *doc = chat_answer_doc(a, ctx->req->request_id);

	(void)state;
	if (doc == NULL) {
		ctx->resp->body.oom = 1;
		return;
	}
	if (ctx->resp->streaming)
		sse_event(ctx->resp, "done", doc);
	else
		http_response_json(ctx->resp, 200, doc);
	json_object_put(doc);
}

static void
native_fail(struct handler_ctx *ctx, void *state, int status, const char *code,
    const char *message)
{
	(void)state;
	if (ctx->resp->streaming)
		sse_error(ctx->resp, code, message);
	else
		http_response_error(ctx->resp, status, code, message);
}

static const struct chat_format native_format = {
	native_begin, native_delta, native_done, native_fail, NULL   /* a refusal is the reply */
};

/* --- the turn ------------------------------------------------------------- */

void
chat_store_error(struct handler_ctx *ctx, enum store_status s, const char *op,
    const char *unavailable)
{
	struct json_object *f = json_object_new_object();

	if (f != NULL) {
		json_object_object_add(f, "request_id", json_object_new_string(ctx->req->request_id));
		json_object_object_add(f, "op", json_object_new_string(op));
		json_object_object_add(f, "error", json_object_new_string(store_conn_error(ctx->store)));
	}
	log_emit(LOG_LVL_ERROR, s == STORE_FULL ? "session store full: write refused" :
	    s == STORE_UNREPLICATED ? "session store replicas did not confirm a turn" :
	    "session store failed", f);
	json_object_put(f);
	if (s == STORE_NOMEM)
		ctx->resp->body.oom = 1;
	else if (s == STORE_CORRUPT)
		http_response_error(ctx->resp, 500, "store_corrupt",
		    "the stored session could not be read");
	else if (s == STORE_FULL)
		http_response_error(ctx->resp, CHAT_STORE_FULL_STATUS, "store_full",
		    strcmp(op, "append") == 0 ? CHAT_STORE_FULL_MESSAGE :
		    "the session store is full");
	else if (s == STORE_UNREPLICATED)
		http_response_error(ctx->resp, 503, "store_unreplicated",
		    CHAT_STORE_UNREPLICATED_MESSAGE);
	else
		http_response_error(ctx->resp, 503, "store_unavailable", unavailable);
}

static void
store_error(struct handler_ctx *ctx, enum store_status s, const char *op)
{
	chat_store_error(ctx, s, op, "the session store is unavailable: the turn may not have "
	    "been stored; retry with the same Idempotency-Key");
}

/* The role of a message if it is one a turn stores (user, assistant, tool), else NULL. */
static const char *
stored_role(struct json_object *m)
{
	const char *r = str_member(m, "role");

	if (r == NULL || (strcmp(r, "user") != 0 && strcmp(r, "assistant") != 0 &&
	    strcmp(r, "tool") != 0))
		return NULL;
	return r;
}

/* Whether messages a and b have the same role, content and parts. */
static int
same_message(struct json_object *a, struct json_object *b)
{
	struct json_object *ca = NULL, *cb = NULL, *pa = NULL, *pb = NULL;

	json_object_object_get_ex(a, "content", &ca);
	json_object_object_get_ex(b, "content", &cb);
	json_object_object_get_ex(a, "parts", &pa);
	json_object_object_get_ex(b, "parts", &pb);
	return strcmp(stored_role(a), stored_role(b)) == 0 && json_object_equal(ca, cb) &&
	    json_object_equal(pa, pb);
}

/*
 * Whether a stored turn's messages (`stored`) answered the request's new
 * messages (`news`): the messages the turn kept from its request (those
 * before its first assistant message) equal, by role and content, the
 * request's messages from the start, or those after its last assistant
 * message (a client that resends its copy of the history). NOTE: the persona
 * and parameters are not stored, so they are not compared.
 */
static int
same_request(struct json_object *news, struct json_object *stored)
{
	struct json_object *req[CHAT_IDEM_COMPARE_MAX];
	size_t n = 0, k, i, from = 0, nnews = json_object_array_length(news);
	size_t end = chat_new_from(news);
	const char *r;

	/* req: the messages a turn stores; from: where those after the history start. */
	for (i = 0; i < nnews; i++) {
		struct json_object *m = json_object_array_get_idx(news, i);

		if (i == end)
			from = n;
		if ((r = stored_role(m)) == NULL)
			continue;
		if (n == CHAT_IDEM_COMPARE_MAX)
			return 1;   /* too long to compare here: trust the key */
		req[n++] = m;
	}
	if (end == nnews)
		from = n;
	for (k = 0; k < json_object_array_length(stored); k++) {
		r = stored_role(json_object_array_get_idx(stored, k));
		if (r == NULL || strcmp(r, "assistant") == 0)
			break;
	}
	if (k == 0)
		return 1;
	/* The tail after the last assistant message, as a session with turns stores it... */
	if (from > 0 && from + k == n) {
		for (i = 0; i < k && same_message(req[from + i], json_object_array_get_idx(stored, i));
		    i++)
			;
		if (i == k)
			return 1;
	}
	/* ... or the request from its start, as a new session stores it. */
	if (k > n)
		return 0;
	for (i = 0; i < k && same_message(req[i], json_object_array_get_idx(stored, i)); i++)
		;
	return i == k;
}

/*
 * Answers with turn `turn` of the session as stored (an idempotent replay):
 * the same answer, whole or as one delta and the end of the stream.
 */
static void
replay_turn(struct handler_ctx *ctx, const struct chat_turn_input *in, int turn)
{
	struct json_object *turn_obj = NULL, *msgs, *m, *role, *v, *usage;
	struct chat_answer a;
	struct buf text = {0};
	enum store_status s;
	size_t i;

	memset(&a, 0, sizeof(a));
	a.session_id = in->session_id;
	a.turn = turn;
	a.reply = a.provider = a.model = "";
	a.finish_reason = "stop";
	s = store_get_turn(ctx->store, in->session_id, turn, &text);
	if (s != STORE_OK) {
		store_error(ctx, s, "idempotency");
		goto out;
	}
	turn_obj = json_tokener_parse(text.data);
	if (turn_obj == NULL || !json_object_object_get_ex(turn_obj, "messages", &msgs) ||
	    !json_object_is_type(msgs, json_type_array)) {
		store_error(ctx, STORE_CORRUPT, "idempotency");
		goto out;
	}
	if (!same_request(in->new_messages, msgs)) {
		in->fmt->fail(ctx, in->fmt_state, 422, "idempotency_key_reused", "this "
		    "Idempotency-Key was used on this session for a different message: use a new key");
		goto out;
	}
	for (i = 0; i < json_object_array_length(msgs); i++) {
		m = json_object_array_get_idx(msgs, i);
		if (!json_object_object_get_ex(m, "role", &role) ||
		    strcmp(json_object_get_string(role), "assistant") != 0)
			continue;
		if (json_object_object_get_ex(m, "content", &v) &&
		    json_object_is_type(v, json_type_string)) {
			a.reply = json_object_get_string(v);
			a.reply_len = (size_t)json_object_get_string_len(v);
		}
		if (json_object_object_get_ex(m, "provider", &v))
			a.provider = json_object_get_string(v);
		if (json_object_object_get_ex(m, "model", &v))
			a.model = json_object_get_string(v);
		/* The last assistant message is the answer: its calls, or none. */
		a.tool_calls = NULL;
		a.finish_reason = "stop";
		if (json_object_object_get_ex(m, "tool_calls", &v) &&
		    json_object_is_type(v, json_type_array)) {
			a.tool_calls = v;
			a.finish_reason = "tool_calls";
		}
		if (json_object_object_get_ex(m, "usage", &usage)) {
			if (json_object_object_get_ex(usage, "input_tokens", &v))
				a.input_tokens = json_object_get_int64(v);
			if (json_object_object_get_ex(usage, "output_tokens", &v))
				a.output_tokens = json_object_get_int64(v);
		}
	}
	if (in->stream && !ctx->resp->streaming) {
		http_response_header(ctx->resp, "Idempotent-Replayed", "true");
		in->fmt->begin(ctx, in->fmt_state);
	} else if (!in->stream) {
		http_response_header(ctx->resp, "Idempotent-Replayed", "true");
	}
	/* NOTE: a stream that already sent this request's own deltas gets the end only. */
	if (in->stream && ctx->resp->bytes_sent == 0)
		in->fmt->delta(ctx, in->fmt_state, a.model, a.reply, a.reply_len);
	in->fmt->done(ctx, in->fmt_state, &a);
out:
	json_object_put(turn_obj);
	buf_free(&text);
}

/* Sends a reply already stored for this Idempotency-Key. Returns 1 if it did. */
static int
replay(struct handler_ctx *ctx, const struct chat_turn_input *in)
{
	enum store_status s;
	int turn = 0;

	s = store_idem_find(ctx->store, in->session_id, in->idem_key, &turn);
	if (s == STORE_NOT_FOUND)
		return 0;
	if (s != STORE_OK)
		store_error(ctx, s, "idempotency");
	else
		replay_turn(ctx, in, turn);
	return 1;
}

size_t
chat_new_from(struct json_object *msgs)
{
	size_t i, n = json_object_array_length(msgs), from = 0;
	const char *role;

	for (i = 0; i < n; i++)
		if ((role = str_member(json_object_array_get_idx(msgs, i), "role")) != NULL &&
		    strcmp(role, "assistant") == 0)
			from = i + 1;
	return from;
}

/*
 * The messages of `news` after its last assistant message, in a new array
 * (caller puts), for a session that already has turns: a client that keeps
 * its own copy of the conversation (most SDK loops) sends it whole even with
 * a session id, and all of it up to the last answer is stored already.
 * NULL when `news` has no assistant message (*oom is 0: use it as it is) or
 * out of memory (*oom is 1).
 */
static struct json_object *
new_after_history(struct json_object *news, int *oom)
{
	struct json_object *tail;
	size_t i, n = json_object_array_length(news), from = chat_new_from(news);

	*oom = 0;
	if (from == 0)
		return NULL;
	if ((tail = json_object_new_array()) == NULL) {
		*oom = 1;
		return NULL;
	}
	for (i = from; i < n; i++)
		json_object_array_add(tail, json_object_get(json_object_array_get_idx(news, i)));
	return tail;
}

void
chat_run(struct handler_ctx *ctx, const struct chat_turn_input *in)
{
	struct json_object *turns = NULL, *messages = NULL, *tool_calls = NULL, *tail = NULL;
	struct chat_turn_input trimmed;
	struct store_session_info info;
	struct turn_state ts;
	struct llm_request lreq;
	struct llm_result res;
	struct chat_answer a;
	struct buf window = {0};
	enum store_status s;
	enum provider_status ps;
	long long t_user = vtime_now_ms(), overhead_ms;
	char *stored = NULL;
	const char *terr = NULL;   /* why the turn failed, for its trace */
	struct trace_turn tt;
	struct agent_turn at;
	int turn = 0, oom = 0, told = 0;   /* told: the stream's error event was sent */

	memset(&res, 0, sizeof(res));
	memset(&at, 0, sizeof(at));
	memset(&info, 0, sizeof(info));
	trace_turn_begin(&tt, http_request_header(ctx->req, "traceparent"), ctx->req->path,
	    in->session_id, ctx->principal);
	if (tt.on)
		http_response_header(ctx->resp, "X-Trace-Id", tt.trace_id);
	if (in->session_id != NULL && in->idem_key[0] != '\0' && replay(ctx, in))
		goto out;
	if (in->session_id != NULL) {
		s = store_load(ctx->store, in->session_id, (int)ctx->conf->history_turns,
		    (size_t)ctx->conf->history_chars, &info, &window);
		if (s == STORE_OK) {
			if (strcmp(info.owner, ctx->principal) != 0 && !ctx->admin) {
				in->fmt->fail(ctx, in->fmt_state, 404, "session_not_found", "no such session");
				goto out;
			}
			turns = json_tokener_parse(window.data);
			if (turns == NULL) {
				store_error(ctx, STORE_CORRUPT, "load");
				goto out;
			}
		} else if (s != STORE_NOT_FOUND) {
			store_error(ctx, s, "load");
			goto out;
		}
	}
	if (info.turns > 0 && (tail = new_after_history(in->new_messages, &oom)) != NULL) {
		if (json_object_array_length(tail) == 0) {
			in->fmt->fail(ctx, in->fmt_state, 400, "invalid_field", "with a session id, "
			    "the messages after the last assistant message are the new ones: there "
			    "are none");
			goto out;
		}
		trimmed = *in;
		trimmed.new_messages = tail;
		in = &trimmed;
	} else if (oom) {
		ctx->resp->body.oom = 1;
		goto out;
	}
	messages = provider_messages(in, turns);
	if (messages == NULL) {
		ctx->resp->body.oom = 1;
		goto out;
	}
	ts.ctx = ctx;
	ts.in = in;
	ts.res = &res;
	ts.stopping = 0;
	memset(&lreq, 0, sizeof(lreq));
	lreq.messages = messages;
	lreq.tools = in->tools;
	lreq.tool_choice = in->tool_choice;
	lreq.params = in->params;
	lreq.model = in->model;
	lreq.session_id = in->session_id;
	lreq.turn = info.turns + 1;
	lreq.cancelled = is_cancelled;
	lreq.ctx = &ts;
	lreq.trace = &tt;
	/* NOTE: provider_now_ms and vtime_mono_ms read the same clock. */
	lreq.deadline_ms = in->deadline_ms > 0 ? in->deadline_ms :
	    provider_now_ms() + ctx->conf->turn_timeout * 1000;
	if (in->stream) {
		in->fmt->begin(ctx, in->fmt_state);
		lreq.on_delta = on_delta;
	}
	ps = agent_loop_complete(ctx, in->agents,
	    in->idem_key[0] != '\0' ? in->idem_key : NULL, &lreq, &res, &at);
	if (ps != PROVIDER_OK) {
		const char *code = ps == PROVIDER_TIMEOUT ? "provider_timeout" :
		    ps == PROVIDER_UNAVAILABLE ? "provider_unavailable" :
		    ps == PROVIDER_REJECTED ? "provider_rejected_request" : "provider_error";
		int status = ps == PROVIDER_TIMEOUT ? 504 : ps == PROVIDER_UNAVAILABLE ? 503 :
		    ps == PROVIDER_REJECTED ? 400 : 502;

		/* NOTE: an upstream's message cut at a byte count may end mid-character. */
		utf8_scrub(res.error);
		terr = res.error[0] != '\0' ? res.error : code;
		if (ps == PROVIDER_CANCELLED && ts.stopping) {
			/* Not stored: the client may send it again, to a process that stays. */
			log_msg(LOG_LVL_WARNING, "stopping: turn still in flight ended with 503");
			terr = "the server stopped before the turn ended";
			if (!ctx->resp->streaming)
				http_response_header(ctx->resp, "Retry-After", "1");
			in->fmt->fail(ctx, in->fmt_state, 503, "shutting_down", "the server is "
			    "restarting and this turn did not end in time: it was not stored; send "
			    "it again");
			goto out;
		}
		if (ps == PROVIDER_CANCELLED && !ctx->resp->body.oom) {
			log_msg(LOG_LVL_INFO, "client went away; turn abandoned");
			terr = "the client went away";
			goto out;
		}
		if (ps == PROVIDER_NOMEM || ps == PROVIDER_CANCELLED) {
			ctx->resp->body.oom = 1;
			goto out;
		}
		in->fmt->fail(ctx, in->fmt_state, status, code, res.error);
		goto out;
	}

	tool_calls = provider_tool_calls_json(&res, &oom);
	if (oom) {
		ctx->resp->body.oom = 1;
		goto out;
	}
	if (in->session_id != NULL) {
		stored = turn_messages(in, &res, tool_calls, at.steps, t_user, vtime_now_ms(),
		    ctx->req->request_id);
		if (stored == NULL) {
			ctx->resp->body.oom = 1;
			goto out;
		}
		/*
		 * The owner the load saw (an admin may add to another's session),
		 * else the caller's: a session someone else made while this turn
		 * ran is theirs, and the store refuses the turn (NOT_FOUND).
		 */
		s = store_append(ctx->store, in->session_id,
		    info.turns > 0 ? info.owner : ctx->principal,
		    in->idem_key[0] ? in->idem_key : NULL, stored, t_user, &turn);
		if (s == STORE_EXISTS) {
			/* A retry with the same key won the race: answer what it stored. */
			replay_turn(ctx, in, turn);
			goto out;
		}
		if (s == STORE_NOT_FOUND) {
			log_msg(LOG_LVL_WARNING, "turn not stored: another caller made the session "
			    "while it ran");
			terr = "the session was made by another caller: the turn was not stored";
			in->fmt->fail(ctx, in->fmt_state, 404, "session_not_found", "no such session");
			told = 1;
			goto out;
		}
		if (s != STORE_OK) {
			terr = s == STORE_FULL ? "the session store is full: the turn was not stored" :
			    s == STORE_UNREPLICATED ? "the session store's replicas did not confirm "
			    "the turn" : "the session store failed: the turn was not stored";
			store_error(ctx, s, "append");
			if (ctx->resp->streaming && s == STORE_FULL) {
				in->fmt->fail(ctx, in->fmt_state, CHAT_STORE_FULL_STATUS, "store_full",
				    CHAT_STORE_FULL_MESSAGE);
				told = 1;
			} else if (ctx->resp->streaming && s == STORE_UNREPLICATED) {
				in->fmt->fail(ctx, in->fmt_state, 503, "store_unreplicated",
				    CHAT_STORE_UNREPLICATED_MESSAGE);
				told = 1;
			} else if (ctx->resp->streaming) {
				in->fmt->fail(ctx, in->fmt_state, 503, "store_unavailable",
				    "the session store failed: this turn was not stored");
				told = 1;
			}
			goto out;
		}
	}
	memset(&a, 0, sizeof(a));
	a.session_id = in->session_id != NULL ? in->session_id : "";
	a.turn = turn;
	a.reply = res.text.data != NULL ? res.text.data : "";
	a.reply_len = res.text.len;
	a.input_tokens = res.input_tokens;
	a.output_tokens = res.output_tokens;
	a.provider = res.provider;
	a.model = res.model;
	a.tool_calls = at.calls != NULL && json_object_array_length(at.calls) > 0 ? at.calls :
	    tool_calls;
	a.finish_reason = res.finish_reason[0] != '\0' ? res.finish_reason : "stop";
	a.refusal = res.refusal;
	in->fmt->done(ctx, in->fmt_state, &a);
	/*
	 * The gateway's own cost: the turn minus the time in providers and agents
	 * (NOTE: never below 0, the parts being rounded to milliseconds).
	 */
	overhead_ms = vtime_now_ms() - t_user - res.provider_ms - at.agent_ms;
	metrics_observe("valerie_overhead_seconds", "",
	    (double)(overhead_ms > 0 ? overhead_ms : 0) / 1000.0);
out:
	/*
	 * NOTE: out of memory once the stream started: too late for the 500 of
	 * fix_oom, so the stream ends with an error event, never a clean or
	 * silent end.
	 */
	if (ctx->resp->body.oom && ctx->resp->streaming && !ctx->resp->aborted && !told) {
		terr = "out of memory";
		in->fmt->fail(ctx, in->fmt_state, 500, "internal_error", "out of memory");
	}
	if (tt.on) {
		if (terr == NULL && ctx->resp->status >= 400)
			terr = ctx->resp->status >= 500 ? "the turn failed" : "the turn was refused";
		trace_turn_end(&tt, ctx->resp->status > 0 ? ctx->resp->status : 200, terr,
		    json_object_to_json_string_ext(in->new_messages, JSON_PLAIN),
		    res.text.data, res.text.len);
	}
	free(stored);
	agent_turn_free(&at);
	json_object_put(tool_calls);
	json_object_put(messages);
	json_object_put(turns);
	json_object_put(tail);
	provider_result_free(&res);
	buf_free(&window);
}

/*
 * A caller bound to a company (the token's company_id, the API key's company)
 * speaks for that company only: a persona naming another is refused (403);
 * one naming none is given the caller's.
 */
static int
bind_company(struct handler_ctx *ctx, struct chat_input *in)
{
	struct json_object *v;
	const char *named;

	if (ctx->company == NULL || ctx->company[0] == '\0' || in->persona == NULL)
		return 0;
	if (json_object_object_get_ex(in->persona, "id_empresa", &v) && v != NULL) {
		named = json_object_get_string(v);
		if (named == NULL || strcmp(named, ctx->company) != 0) {
			http_response_error(ctx->resp, 403, "company_mismatch",
			    "the persona names a company this caller may not speak for");
			return -1;
		}
		return 0;
	}
	json_object_object_add(in->persona, "id_empresa", json_object_new_string(ctx->company));
	return 0;
}

void
chat_business_context(struct handler_ctx *ctx, struct json_object *company,
    long long deadline_ms, struct buf *system)
{
	struct buf text = {0};
	enum bizctx_result r;

	r = bizctx_get(ctx, company, deadline_ms, &text);
	if (r == BIZCTX_HIT || r == BIZCTX_FETCHED)
		bizctx_section(system, json_object_get_string(company), text.data, text.len);
	if (text.oom)
		system->oom = 1;
	buf_free(&text);
}

/*
 * The company whose business context a native turn gets: the persona's
 * id_empresa (bind_company has made it the caller's, if bound), else the
 * company the caller is bound to. Borrowed from the persona or *own (which
 * the caller puts); NULL for none.
 */
static struct json_object *
turn_company(struct handler_ctx *ctx, const struct chat_input *in, struct json_object **own)
{
	struct json_object *v;

	*own = NULL;
	if (in->persona != NULL && json_object_object_get_ex(in->persona, "id_empresa", &v) &&
	    v != NULL)
		return v;
	if (ctx->company != NULL && ctx->company[0] != '\0')
		*own = json_object_new_string(ctx->company);
	return *own;
}

/* POST /api/v1/chat and /api/agent/chat: the native body and answer. */
static void
chat_turn(struct handler_ctx *ctx)
{
	struct json_object *body, *new_messages = NULL, *own = NULL;
	struct chat_input in;
	struct chat_turn_input t;
	struct buf system = {0};
	long long deadline = vtime_mono_ms() + ctx->conf->turn_timeout * 1000;

	body = jsonbody_parse(ctx->req, ctx->resp, (int)ctx->conf->json_max_depth);
	if (body == NULL)
		return;
	if (read_input(ctx, body, &in) != 0)
		goto out;
	if (bind_company(ctx, &in) != 0)
		goto out;
	system_prompt(in.persona, &system);
	chat_business_context(ctx, turn_company(ctx, &in, &own), deadline, &system);
	new_messages = json_object_new_array();
	if (system.oom || new_messages == NULL) {
		ctx->resp->body.oom = 1;
		goto out;
	}
	json_object_array_add(new_messages, chat_message_new("user", in.message, in.message_len));
	memset(&t, 0, sizeof(t));
	t.session_id = in.session_id;
	t.system = system.data != NULL ? system.data : "";
	t.new_messages = new_messages;
	t.agents = 1;
	t.stream = in.stream;
	t.deadline_ms = deadline;
	memcpy(t.idem_key, in.idem_key, sizeof(t.idem_key));
	t.fmt = &native_format;
	chat_run(ctx, &t);
out:
	json_object_put(own);
	json_object_put(new_messages);
	json_object_put(body);
	buf_free(&system);
}

void
chat_v1(struct handler_ctx *ctx)
{
	chat_turn(ctx);
}

void
chat_agent(struct handler_ctx *ctx)
{
	chat_turn(ctx);
}
