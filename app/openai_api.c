/* openai_api: POST /v1/chat/completions and GET /v1/models, OpenAI-compatible, with server-kept sessions. */
#include "config.h"

#include "chat.h"
#include "conf.h"
#include "handler.h"
#include "jsonbody.h"
#include "jsoncheck.h"
#include "provider.h"
#include "utf8.h"
#include "vtime.h"

#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OAI_MESSAGES_MAX 1000   /* messages in one request */
#define OAI_TOOLS_MAX 128       /* tool definitions in one request */
#define OAI_TOOL_NAME_MAX 64    /* OpenAI's limit on a tool's name */
#define OAI_MAX_TOKENS 1000000  /* max_tokens beyond any model's */
#define OAI_MEDIA_MAX 100       /* image, file and audio parts in one request (Anthropic's
                                   limit of images) */
#define OAI_IMAGE_URL_MAX 8192  /* an http(s) image URL; a data URL is bounded by the body */
#define OAI_FILE_ID_MAX 256     /* a file part's file_id */
#define OAI_FILENAME_MAX 255    /* a file part's filename */
#define JSON_PLAIN (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* The OpenAI stream's own state. */
struct oai_state {
	char id[80];
	long long created;
	const char *model;
	int include_usage;
	int sent_role;
};

static int
chunk(struct handler_ctx *ctx, struct json_object *doc)
{
	struct buf b = {0};
	int rc;

	buf_printf(&b, "data: %s\n\n", json_object_to_json_string_ext(doc, JSON_PLAIN));
	rc = b.oom ? -1 : http_stream_write(ctx->resp, b.data, b.len);
	buf_free(&b);
	return rc;
}

/* A chunk object with one choice whose delta is `delta` (owned) and finish reason. */
static struct json_object *
chunk_doc(const struct oai_state *st, const char *model, struct json_object *delta,
    const char *finish)
{
	struct json_object *doc = json_object_new_object(), *choices, *c;

	if (doc == NULL) {
		json_object_put(delta);
		return NULL;
	}
	json_object_object_add(doc, "id", json_object_new_string(st->id));
	json_object_object_add(doc, "object", json_object_new_string("chat.completion.chunk"));
	json_object_object_add(doc, "created", json_object_new_int64(st->created));
	json_object_object_add(doc, "model", json_object_new_string(model));
	choices = json_object_new_array();
	json_object_object_add(doc, "choices", choices);
	if (delta != NULL) {
		c = json_object_new_object();
		json_object_object_add(c, "index", json_object_new_int(0));
		json_object_object_add(c, "delta", delta);
		json_object_object_add(c, "finish_reason",
		    finish != NULL ? json_object_new_string(finish) : NULL);
		json_object_array_add(choices, c);
	}
	return doc;
}

static void
oai_begin(struct handler_ctx *ctx, void *p)
{
	(void)p;
	chat_stream_begin(ctx);
}

/*
 * One chunk of the answer's text under `key`: "content", or "refusal" for a
 * refusal (then the first chunk says content null, as OpenAI's do).
 */
static int
oai_piece(struct handler_ctx *ctx, struct oai_state *st, const char *model, const char *key,
    const char *text, size_t len)
{
	struct json_object *delta = json_object_new_object(), *doc;
	int rc;

	if (delta == NULL)
		return -1;
	if (!st->sent_role) {
		json_object_object_add(delta, "role", json_object_new_string("assistant"));
		if (strcmp(key, "content") != 0)
			json_object_object_add(delta, "content", NULL);
		st->sent_role = 1;
	}
	json_object_object_add(delta, key, json_object_new_string_len(text, (int)len));
	/* NOTE: the model serving now (a fallback may serve), as the last chunks say. */
	doc = chunk_doc(st, model != NULL && *model ? model : st->model, delta, NULL);
	if (doc == NULL)
		return -1;
	rc = chunk(ctx, doc);
	json_object_put(doc);
	return rc;
}

static int
oai_delta(struct handler_ctx *ctx, void *p, const char *model, const char *text, size_t len)
{
	return oai_piece(ctx, p, model, "content", text, len);
}

/* A piece of a refusal (structured outputs): delta.refusal, as OpenAI streams it. */
static int
oai_refusal(struct handler_ctx *ctx, void *p, const char *model, const char *text, size_t len)
{
	return oai_piece(ctx, p, model, "refusal", text, len);
}

static struct json_object *
usage_doc(const struct chat_answer *a)
{
	struct json_object *u = json_object_new_object();

	if (u == NULL)
		return NULL;
	json_object_object_add(u, "prompt_tokens", json_object_new_int64(a->input_tokens));
	json_object_object_add(u, "completion_tokens", json_object_new_int64(a->output_tokens));
	json_object_object_add(u, "total_tokens",
	    json_object_new_int64(a->input_tokens + a->output_tokens));
	return u;
}

/*
 * The answer's tool calls as one chunk: each call whole, with its index, as
 * the first fragment of a streamed call looks (clients join by index).
 */
static int
stream_tool_calls(struct handler_ctx *ctx, struct oai_state *st, const struct chat_answer *a)
{
	struct json_object *delta = json_object_new_object(), *calls = json_object_new_array();
	struct json_object *c, *doc;
	size_t i;
	int rc;

	if (delta == NULL || calls == NULL) {
		json_object_put(delta);
		json_object_put(calls);
		return -1;
	}
	if (!st->sent_role) {
		json_object_object_add(delta, "role", json_object_new_string("assistant"));
		json_object_object_add(delta, "content", NULL);
		st->sent_role = 1;
	}
	for (i = 0; i < json_object_array_length(a->tool_calls); i++) {
		if ((c = json_object_new_object()) == NULL)
			break;
		json_object_object_add(c, "index", json_object_new_int((int)i));
		json_object_object_foreach(json_object_array_get_idx(a->tool_calls, i), k, v)
			json_object_object_add(c, k, json_object_get(v));
		json_object_array_add(calls, c);
	}
	json_object_object_add(delta, "tool_calls", calls);
	if ((doc = chunk_doc(st, a->model, delta, NULL)) == NULL)
		return -1;
	rc = chunk(ctx, doc);
	json_object_put(doc);
	return rc;
}

/*
 * The chat.completion document, written as text: building it as a json-c
 * tree and serialising that was a tenth of the worker's instructions per
 * completion (callgrind). Same keys, same order.
 */
static void
write_completion(struct http_response *resp, const struct oai_state *st,
    const struct chat_answer *a)
{
	const char *calls = NULL;
	size_t calls_len = 0;
	struct buf *b;
	char d[BUF_DECIMAL_SIZE];

	if (a->tool_calls != NULL) {
		calls = json_object_to_json_string_length(a->tool_calls,
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &calls_len);
		if (calls == NULL) {
			resp->body.oom = 1;
			return;
		}
	}
	b = http_response_json_begin(resp, 200);
	buf_puts(b, "{\"id\":");
	buf_json_string(b, st->id, strlen(st->id));
	buf_puts(b, ",\"object\":\"chat.completion\",\"created\":");
	buf_puts(b, buf_decimal(d, st->created, 1));
	buf_puts(b, ",\"model\":");
	buf_json_string(b, a->model, strlen(a->model));
	buf_puts(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
	/*
	 * NOTE: OpenAI sends content null when the model only calls tools, and
	 * when it refused (structured outputs): the refusal is message.refusal,
	 * which the SDKs' parse() reads instead of parsing content.
	 */
	if ((a->reply_len == 0 && calls != NULL) || a->refusal)
		buf_puts(b, "null");
	else
		buf_json_string(b, a->reply, a->reply_len);
	if (a->refusal) {
		buf_puts(b, ",\"refusal\":");
		buf_json_string(b, a->reply, a->reply_len);
	}
	if (calls != NULL) {
		buf_puts(b, ",\"tool_calls\":");
		buf_append(b, calls, calls_len);
	}
	buf_puts(b, "},\"finish_reason\":");
	buf_json_string(b, a->finish_reason, strlen(a->finish_reason));
	/* NOTE: the numbers by buf_decimal: two buf_printf were 2,600 instructions. */
	buf_puts(b, "}],\"usage\":{\"prompt_tokens\":");
	buf_puts(b, buf_decimal(d, a->input_tokens, 1));
	buf_puts(b, ",\"completion_tokens\":");
	buf_puts(b, buf_decimal(d, a->output_tokens, 1));
	buf_puts(b, ",\"total_tokens\":");
	buf_puts(b, buf_decimal(d, a->input_tokens + a->output_tokens, 1));
	buf_puts(b, "}}");
}

static void
oai_done(struct handler_ctx *ctx, void *p, const struct chat_answer *a)
{
	struct oai_state *st = p;
	struct json_object *doc;
	char turn[16];

	if (a->session_id[0] != '\0') {
		snprintf(turn, sizeof(turn), "%d", a->turn);
		http_response_header(ctx->resp, "X-Session-Turn", turn);
	}
	if (ctx->resp->streaming) {
		if (a->tool_calls != NULL && stream_tool_calls(ctx, st, a) != 0)
			return;
		/* NOTE: an answer without a word still opens with the role, as OpenAI's do. */
		if (!st->sent_role && oai_delta(ctx, st, a->model, "", 0) != 0)
			return;
		doc = chunk_doc(st, a->model, json_object_new_object(), a->finish_reason);
		if (doc != NULL)
			chunk(ctx, doc);
		json_object_put(doc);
		if (st->include_usage) {
			doc = chunk_doc(st, a->model, NULL, NULL);
			if (doc != NULL) {
				json_object_object_add(doc, "usage", usage_doc(a));
				chunk(ctx, doc);
			}
			json_object_put(doc);
		}
		http_stream_write(ctx->resp, "data: [DONE]\n\n", 14);
		return;
	}
	write_completion(ctx->resp, st, a);
}

/*
 * Errors: our JSON error before the stream; inside a stream a chunk with an
 * `error` key, which the OpenAI SDKs raise on, and no [DONE].
 */
static void
oai_fail(struct handler_ctx *ctx, void *p, int status, const char *code, const char *message)
{
	struct json_object *doc, *err;

	(void)p;
	if (!ctx->resp->streaming) {
		http_response_error(ctx->resp, status, code, message);
		return;
	}
	doc = json_object_new_object();
	err = json_object_new_object();
	if (doc == NULL || err == NULL) {
		json_object_put(doc);
		json_object_put(err);
		return;
	}
	json_object_object_add(err, "code", json_object_new_string(code));
	json_object_object_add(err, "message", json_object_new_string(message));
	/* OpenAI's error types: a refused request is the client's to mend, not a server fault. */
	json_object_object_add(err, "type", json_object_new_string(status == 429 ?
	    "rate_limit_error" : status >= 400 && status < 500 ? "invalid_request_error" :
	    "server_error"));
	json_object_object_add(doc, "error", err);
	chunk(ctx, doc);
	json_object_put(doc);
}

static const struct chat_format oai_format = {
	oai_begin, oai_delta, oai_done, oai_fail, oai_refusal
};

/* Whether `model` is the default model of a provider in the chain. */
static int
chain_default(const struct conf *c, const char *model)
{
	char chain[PROVIDER_CHAIN_MAX][PROVIDER_NAME_MAX];
	size_t k, n = provider_chain(c, chain);

	for (k = 0; k < n; k++)
		if (strcmp(provider_default_model(c, chain[k]), model) == 0)
			return 1;
	return 0;
}

/*
 * Whether `model` may be asked for: any, unless VALERIE_MODELS lists some;
 * then those and the chain's default models.
 */
static int
model_allowed(const struct conf *conf, const char *model)
{
	const char *p = conf->models, *comma;
	size_t len, n = strlen(model);

	if (p == NULL || *p == '\0')
		return 1;
	while (p != NULL) {
		comma = strchr(p, ',');
		len = comma ? (size_t)(comma - p) : strlen(p);
		if (len == n && memcmp(p, model, n) == 0)
			return 1;
		p = comma ? comma + 1 : NULL;
	}
	/* What GET /v1/models lists may be asked for: the chain's default models too. */
	return chain_default(conf, model);
}

/* A 400 invalid_field with a formatted message. Returns -1. */
static int
bad_field(struct handler_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
bad_field(struct handler_ctx *ctx, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	http_response_error(ctx->resp, 400, "invalid_field", msg);
	return -1;
}

/* Whether `s` is a tool name OpenAI accepts: 1 to 64 of [A-Za-z0-9_-]. */
static int
tool_name_valid(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
			return 0;
	return i > 0 && i <= OAI_TOOL_NAME_MAX;
}

/* The string member `key` of `o`, or NULL when absent or not a string. */
static const char *
member_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/*
 * Data URL `v` (checked: it has a comma) with what comes before its comma in
 * lower case, as providers, the fake upstreams of the tests and trace.c
 * match it: `v` itself when it is already. Caller puts; NULL out of memory.
 */
static struct json_object *
data_url_lower(struct json_object *v)
{
	const char *s = json_object_get_string(v), *comma = strchr(s, ',');
	size_t k, n = comma != NULL ? (size_t)(comma - s) : 0;
	int len = json_object_get_string_len(v);
	struct json_object *out;
	char *copy;

	for (k = 0; k < n && !(s[k] >= 'A' && s[k] <= 'Z'); k++)
		;
	if (k == n)
		return json_object_get(v);
	if ((copy = malloc((size_t)len)) == NULL)
		return NULL;
	memcpy(copy, s, (size_t)len);
	for (; k < n; k++)
		if (copy[k] >= 'A' && copy[k] <= 'Z')
			copy[k] = (char)(copy[k] - 'A' + 'a');
	out = json_object_new_string_len(copy, len);
	free(copy);
	return out;
}

/*
 * A new part {type: `type`, `type`: {}}, *inner being that inner object, for
 * its members. Caller puts. NULL out of memory, with resp marked.
 */
static struct json_object *
part_new(struct handler_ctx *ctx, const char *type, struct json_object **inner)
{
	struct json_object *out = json_object_new_object();

	*inner = json_object_new_object();
	if (out == NULL || *inner == NULL) {
		json_object_put(out);
		json_object_put(*inner);
		ctx->resp->body.oom = 1;
		return NULL;
	}
	json_object_object_add(out, "type", json_object_new_string(type));
	json_object_object_add(out, type, *inner);
	return out;
}

/*
 * One image part {type: "image_url", image_url: {url, detail?}} of
 * messages[i].content[j], checked and rebuilt with only those members. NULL
 * with resp filled.
 */
static struct json_object *
image_part(struct handler_ctx *ctx, struct json_object *part, size_t i, size_t j)
{
	struct json_object *iu = NULL, *url, *out, *inner, *v;
	const char *detail;
	enum provider_image kind;

	if (!json_object_object_get_ex(part, "image_url", &iu) ||
	    !json_object_is_type(iu, json_type_object) ||
	    !json_object_object_get_ex(iu, "url", &url) ||
	    !json_object_is_type(url, json_type_string)) {
		bad_field(ctx, "messages[%zu].content[%zu] needs an \"image_url\" object with a "
		    "string \"url\"", i, j);
		return NULL;
	}
	kind = provider_image_url(json_object_get_string(url),
	    (size_t)json_object_get_string_len(url), NULL, NULL);
	if (kind == PROVIDER_IMAGE_BAD || (kind == PROVIDER_IMAGE_HTTP &&
	    json_object_get_string_len(url) > OAI_IMAGE_URL_MAX)) {
		bad_field(ctx, "messages[%zu].content[%zu].image_url.url must be an http(s) URL of at "
		    "most %d bytes or a data:image/(png|jpeg|gif|webp);base64 URL", i, j,
		    OAI_IMAGE_URL_MAX);
		return NULL;
	}
	detail = member_str(iu, "detail");
	if (json_object_object_get_ex(iu, "detail", NULL) && (detail == NULL ||
	    (strcmp(detail, "auto") != 0 && strcmp(detail, "low") != 0 &&
	    strcmp(detail, "high") != 0))) {
		bad_field(ctx, "messages[%zu].content[%zu].image_url.detail must be \"auto\", "
		    "\"low\" or \"high\"", i, j);
		return NULL;
	}
	if ((out = part_new(ctx, "image_url", &inner)) == NULL)
		return NULL;
	if ((v = kind == PROVIDER_IMAGE_DATA ? data_url_lower(url) : json_object_get(url)) == NULL) {
		json_object_put(out);
		ctx->resp->body.oom = 1;
		return NULL;
	}
	json_object_object_add(inner, "url", v);
	if (detail != NULL)
		json_object_object_add(inner, "detail", json_object_new_string(detail));
	return out;
}

/*
 * Whether `v` is a string of 1..max bytes, none below `low` nor DEL: 0x21
 * for visible ASCII and UTF-8, 0x20 to allow spaces too. UTF-8 itself was
 * checked with the body.
 */
static int
plain_string(struct json_object *v, int max, unsigned char low)
{
	const unsigned char *s;
	int i, n;

	if (!json_object_is_type(v, json_type_string))
		return 0;
	s = (const unsigned char *)json_object_get_string(v);
	n = json_object_get_string_len(v);
	if (n < 1 || n > max)
		return 0;
	for (i = 0; i < n; i++)
		if (s[i] < low || s[i] == 0x7f)
			return 0;
	return 1;
}

/*
 * One file part {type: "file", file: {file_data | file_id, filename?}} of
 * messages[i].content[j]: a PDF as a base64 data URL, or the id of a file
 * uploaded to the provider, rebuilt with only those members. NULL with resp
 * filled.
 */
static struct json_object *
file_part(struct handler_ctx *ctx, struct json_object *part, size_t i, size_t j)
{
	struct json_object *f = NULL, *data = NULL, *id = NULL, *name = NULL, *out, *inner;

	if (!json_object_object_get_ex(part, "file", &f) ||
	    !json_object_is_type(f, json_type_object)) {
		bad_field(ctx, "messages[%zu].content[%zu] needs a \"file\" object", i, j);
		return NULL;
	}
	json_object_object_get_ex(f, "file_data", &data);
	json_object_object_get_ex(f, "file_id", &id);
	json_object_object_get_ex(f, "filename", &name);
	if ((data == NULL) == (id == NULL)) {
		bad_field(ctx, "messages[%zu].content[%zu].file needs exactly one of \"file_data\" "
		    "and \"file_id\"", i, j);
		return NULL;
	}
	if (data != NULL && (!json_object_is_type(data, json_type_string) ||
	    !provider_file_data(json_object_get_string(data),
	    (size_t)json_object_get_string_len(data), NULL))) {
		bad_field(ctx, "messages[%zu].content[%zu].file.file_data must be a "
		    "data:application/pdf;base64 URL", i, j);
		return NULL;
	}
	if (id != NULL && !plain_string(id, OAI_FILE_ID_MAX, 0x21)) {
		bad_field(ctx, "messages[%zu].content[%zu].file.file_id must be 1 to %d bytes "
		    "without spaces or control characters", i, j, OAI_FILE_ID_MAX);
		return NULL;
	}
	if (name != NULL && !plain_string(name, OAI_FILENAME_MAX, 0x20)) {
		bad_field(ctx, "messages[%zu].content[%zu].file.filename must be a string of 1 to "
		    "%d bytes without control characters", i, j, OAI_FILENAME_MAX);
		return NULL;
	}
	if ((out = part_new(ctx, "file", &inner)) == NULL)
		return NULL;
	if (name != NULL)
		json_object_object_add(inner, "filename", json_object_get(name));
	if (data == NULL) {
		json_object_object_add(inner, "file_id", json_object_get(id));
	} else if ((data = data_url_lower(data)) != NULL) {
		json_object_object_add(inner, "file_data", data);   /* a new reference */
	} else {
		json_object_put(out);
		ctx->resp->body.oom = 1;
		return NULL;
	}
	return out;
}

/*
 * One audio part {type: "input_audio", input_audio: {data, format}} of
 * messages[i].content[j]: base64 WAV or MP3, rebuilt with only those
 * members, `data` first (trace.c finds it there). NULL with resp filled.
 */
static struct json_object *
audio_part(struct handler_ctx *ctx, struct json_object *part, size_t i, size_t j)
{
	struct json_object *a = NULL, *data, *out, *inner;
	const char *format;

	if (!json_object_object_get_ex(part, "input_audio", &a) ||
	    !json_object_is_type(a, json_type_object) ||
	    !json_object_object_get_ex(a, "data", &data) ||
	    !json_object_is_type(data, json_type_string) ||
	    !provider_base64(json_object_get_string(data),
	    (size_t)json_object_get_string_len(data))) {
		bad_field(ctx, "messages[%zu].content[%zu] needs an \"input_audio\" object whose "
		    "\"data\" is base64 (raw, not a data: URL)", i, j);
		return NULL;
	}
	format = member_str(a, "format");
	if (format == NULL || (strcmp(format, "wav") != 0 && strcmp(format, "mp3") != 0)) {
		bad_field(ctx, "messages[%zu].content[%zu].input_audio.format must be \"wav\" or "
		    "\"mp3\"", i, j);
		return NULL;
	}
	if ((out = part_new(ctx, "input_audio", &inner)) == NULL)
		return NULL;
	json_object_object_add(inner, "data", json_object_get(data));
	json_object_object_add(inner, "format", json_object_new_string(format));
	return out;
}

/*
 * messages[i].content of a message of `role`: a string, or an array of
 * parts, text ({type: "text", text}) and, in a user message, images, files
 * and audio (image_part, file_part, audio_part), in an assistant message
 * refusals ({type: "refusal", refusal}, kept as text parts). Appends its text to `out`,
 * parts joined as they are (as OpenAI's models read them). When the parts
 * are more than one text or have any other part, *parts gets them rebuilt
 * with only their known members (caller puts), so that a provider is sent
 * them as they came; else NULL. *media counts the request's parts other than
 * text. Returns 0, or -1 with resp filled.
 */
static int
content_read(struct handler_ctx *ctx, struct json_object *content, size_t i, const char *role,
    struct buf *out, struct json_object **parts, size_t *media)
{
	struct json_object *part, *text, *list, *p;
	const char *type;
	size_t j, texts = 0, others = 0;

	*parts = NULL;
	if (content == NULL)
		return 0;
	if (json_object_is_type(content, json_type_string)) {
		buf_append(out, json_object_get_string(content),
		    (size_t)json_object_get_string_len(content));
		return 0;
	}
	if (!json_object_is_type(content, json_type_array))
		return bad_field(ctx, "messages[%zu].content must be a string or an array of parts",
		    i);
	if ((list = json_object_new_array()) == NULL) {
		ctx->resp->body.oom = 1;
		return -1;
	}
	for (j = 0; j < json_object_array_length(content); j++) {
		part = json_object_array_get_idx(content, j);
		if ((type = member_str(part, "type")) == NULL) {
			bad_field(ctx, "messages[%zu].content[%zu] needs a string \"type\"", i, j);
			goto fail;
		}
		if (strcmp(type, "text") == 0 ||
		    (strcmp(type, "refusal") == 0 && strcmp(role, "assistant") == 0)) {
			/*
			 * A refusal part: an earlier refusal, as OpenAI's own answer gave
			 * it (structured outputs): the assistant's text, which every
			 * provider reads.
			 */
			const char *field = strcmp(type, "text") == 0 ? "text" : "refusal";

			if (!json_object_object_get_ex(part, field, &text) ||
			    !json_object_is_type(text, json_type_string)) {
				bad_field(ctx, "messages[%zu].content[%zu] needs a string \"%s\"", i, j,
				    field);
				goto fail;
			}
			buf_append(out, json_object_get_string(text),
			    (size_t)json_object_get_string_len(text));
			if ((p = json_object_new_object()) == NULL)
				goto oom;
			json_object_object_add(p, "type", json_object_new_string("text"));
			json_object_object_add(p, "text", json_object_get(text));
			texts++;
		} else if (strcmp(type, "image_url") == 0 || strcmp(type, "file") == 0 ||
		    strcmp(type, "input_audio") == 0) {
			if (strcmp(role, "user") != 0) {
				bad_field(ctx, "messages[%zu] (role %.20s) cannot carry images, files or "
				    "audio: only user messages can", i, role);
				goto fail;
			}
			if (++*media > OAI_MEDIA_MAX) {
				bad_field(ctx, "a request can carry at most %d images, files and audio "
				    "parts", OAI_MEDIA_MAX);
				goto fail;
			}
			p = strcmp(type, "image_url") == 0 ? image_part(ctx, part, i, j) :
			    strcmp(type, "file") == 0 ? file_part(ctx, part, i, j) :
			    audio_part(ctx, part, i, j);
			if (p == NULL)
				goto fail;
			others++;
		} else {
			bad_field(ctx, "messages[%zu].content[%zu] is of type \"%.30s\": only \"text\", "
			    "in user messages \"image_url\", \"file\" and \"input_audio\", in "
			    "assistant messages \"refusal\"", i, j, type);
			goto fail;
		}
		if (json_object_array_add(list, p) != 0) {
			json_object_put(p);
			goto oom;
		}
	}
	if (others > 0 || texts > 1)
		*parts = list;
	else
		json_object_put(list);
	return 0;
oom:
	ctx->resp->body.oom = 1;
fail:
	json_object_put(list);
	return -1;
}

/* Checks `tools`: [{type: "function", function: {name, description?, parameters?}}]. */
static int
check_tools(struct handler_ctx *ctx, struct json_object *tools)
{
	struct json_object *t, *fn, *v;
	const char *type, *name;
	size_t i, n;

	if (!json_object_is_type(tools, json_type_array) ||
	    (n = json_object_array_length(tools)) > OAI_TOOLS_MAX)
		return bad_field(ctx, "field \"tools\" must be an array of at most %d tools",
		    OAI_TOOLS_MAX);
	for (i = 0; i < n; i++) {
		t = json_object_array_get_idx(tools, i);
		type = member_str(t, "type");
		if (type == NULL || strcmp(type, "function") != 0 ||
		    !json_object_object_get_ex(t, "function", &fn) ||
		    !json_object_is_type(fn, json_type_object))
			return bad_field(ctx, "tools[%zu] must be {\"type\": \"function\", "
			    "\"function\": {...}}", i);
		name = member_str(fn, "name");
		if (name == NULL || !tool_name_valid(name))
			return bad_field(ctx, "tools[%zu].function.name must be 1 to %d characters of "
			    "A-Z a-z 0-9 _ -", i, OAI_TOOL_NAME_MAX);
		if (json_object_object_get_ex(fn, "description", &v) && v != NULL &&
		    !json_object_is_type(v, json_type_string))
			return bad_field(ctx, "tools[%zu].function.description must be a string", i);
		if (json_object_object_get_ex(fn, "parameters", &v) && v != NULL &&
		    !json_object_is_type(v, json_type_object))
			return bad_field(ctx, "tools[%zu].function.parameters must be a JSON Schema "
			    "object", i);
	}
	return 0;
}

/* Checks `tool_choice`: "none", "auto", "required" or {type: "function", function: {name}}. */
static int
check_tool_choice(struct handler_ctx *ctx, struct json_object *choice, int has_tools)
{
	struct json_object *fn;
	const char *s;

	if (json_object_is_type(choice, json_type_string)) {
		s = json_object_get_string(choice);
		if (strcmp(s, "none") == 0 || strcmp(s, "auto") == 0 || strcmp(s, "required") == 0)
			return has_tools || strcmp(s, "none") == 0 ? 0 :
			    bad_field(ctx, "field \"tool_choice\" needs \"tools\"");
	} else if ((s = member_str(choice, "type")) != NULL && strcmp(s, "function") == 0 &&
	    json_object_object_get_ex(choice, "function", &fn) && member_str(fn, "name") != NULL) {
		return has_tools ? 0 : bad_field(ctx, "field \"tool_choice\" needs \"tools\"");
	}
	return bad_field(ctx, "field \"tool_choice\" must be \"none\", \"auto\", \"required\" or "
	    "{\"type\": \"function\", \"function\": {\"name\": ...}}");
}

/*
 * The request body with a 64-bit mask of its member names, each name's bit
 * chosen by its length and its first and last bytes: a clear bit says the
 * name is absent. The handler asks for some thirty names, most of them
 * absent, and json_object_object_get_ex (hashing the name, probing json-c's
 * table) for each was about 4,500 instructions of a completion.
 */
struct body {
	struct json_object *obj;
	unsigned long long names;
};

static unsigned int
name_bit(const char *name, size_t len)
{
	/* NOTE: any mix works; this one keeps "model" and "messages" apart from the rest. */
	return (unsigned int)(len * 11 + (unsigned char)name[0] * 4 +
	    (unsigned char)name[len > 0 ? len - 1 : 0] * 7) & 63;
}

static void
body_init(struct body *b, struct json_object *obj)
{
	b->obj = obj;
	b->names = 0;
	json_object_object_foreach(obj, k, v) {
		(void)v;
		b->names |= 1ULL << name_bit(k, strlen(k));
	}
}

/* json_object_object_get_ex(b->obj, name, v), answered at once for a name the mask rules out. */
static int
body_get(const struct body *b, const char *name, struct json_object **v)
{
	if (!(b->names & 1ULL << name_bit(name, strlen(name)))) {
		*v = NULL;
		return 0;
	}
	return json_object_object_get_ex(b->obj, name, v);
}

/* Reads a number field within [lo, hi] into *out; *set is 1 when present. */
static int
number_field(struct handler_ctx *ctx, const struct body *body, const char *name, double lo,
    double hi, double *out, int *set)
{
	struct json_object *v;
	double d;

	*set = 0;
	if (!body_get(body, name, &v) || v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
		return bad_field(ctx, "field \"%s\" must be a number", name);
	d = json_object_get_double(v);
	if (!(d >= lo && d <= hi))
		return bad_field(ctx, "field \"%s\" must be from %g to %g", name, lo, hi);
	*out = d;
	*set = 1;
	return 0;
}

/* A check of one of OpenAI's other fields (`v` not null): 0, or -1 with resp filled. */
typedef int (*extra_check)(struct handler_ctx *ctx, const char *name, struct json_object *v);

/* An integer passed on as it is: one json-c holds exactly (jsoncheck_int), not a saturated one. */
static int
extra_int(struct handler_ctx *ctx, const char *name, struct json_object *v)
{
	long long n;

	return jsoncheck_int(v, &n) == 0 ? 0 :
	    bad_field(ctx, "field \"%s\" must be an integer from -%lld to %lld", name,
	    (long long)JSONCHECK_INT_MAX, (long long)JSONCHECK_INT_MAX);
}

static int
extra_bool(struct handler_ctx *ctx, const char *name, struct json_object *v)
{
	return json_object_is_type(v, json_type_boolean) ? 0 :
	    bad_field(ctx, "field \"%s\" must be true or false", name);
}

static int
extra_string(struct handler_ctx *ctx, const char *name, struct json_object *v)
{
	return json_object_is_type(v, json_type_string) ? 0 :
	    bad_field(ctx, "field \"%s\" must be a string", name);
}

/* presence_penalty, frequency_penalty: -2 to 2. */
static int
extra_penalty(struct handler_ctx *ctx, const char *name, struct json_object *v)
{
	double d = json_object_get_double(v);

	if ((!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int)) ||
	    !(d >= -2 && d <= 2))
		return bad_field(ctx, "field \"%s\" must be a number from -2 to 2", name);
	return 0;
}

/* logit_bias: {"token id": -100 to 100, ...}. */
static int
extra_logit_bias(struct handler_ctx *ctx, const char *name, struct json_object *v)
{
	double d;

	if (!json_object_is_type(v, json_type_object))
		goto bad;
	json_object_object_foreach(v, k, b) {
		(void)k;
		d = json_object_get_double(b);
		if ((!json_object_is_type(b, json_type_double) &&
		    !json_object_is_type(b, json_type_int)) || !(d >= -100 && d <= 100))
			goto bad;
	}
	return 0;
bad:
	return bad_field(ctx, "field \"%s\" must map token ids to numbers from -100 to 100",
	    name);
}

/*
 * response_format: {type: "text"}, {type: "json_object"}, or {type:
 * "json_schema", json_schema: {name, ...}}.
 */
static int
extra_response_format(struct handler_ctx *ctx, const char *name, struct json_object *v)
{
	struct json_object *schema;
	const char *type = member_str(v, "type");

	if (type != NULL && (strcmp(type, "text") == 0 || strcmp(type, "json_object") == 0))
		return 0;
	if (type != NULL && strcmp(type, "json_schema") == 0 &&
	    json_object_object_get_ex(v, "json_schema", &schema) &&
	    member_str(schema, "name") != NULL)
		return 0;
	return bad_field(ctx, "field \"%s\" must be {\"type\": \"text\"}, {\"type\": "
	    "\"json_object\"} or {\"type\": \"json_schema\", \"json_schema\": {\"name\": ...}}",
	    name);
}

/*
 * metadata: at most 16 string values, keys up to 64 characters, values up to
 * 512, as OpenAI counts them (characters, not bytes: the body is valid UTF-8).
 */
static int
extra_metadata(struct handler_ctx *ctx, const char *name, struct json_object *v)
{
	if (!json_object_is_type(v, json_type_object) || json_object_object_length(v) > 16)
		goto bad;
	json_object_object_foreach(v, k, m) {
		if (utf8_count(k, strlen(k)) > 64 || !json_object_is_type(m, json_type_string) ||
		    utf8_count(json_object_get_string(m),
		    (size_t)json_object_get_string_len(m)) > 512)
			goto bad;
	}
	return 0;
bad:
	return bad_field(ctx, "field \"%s\" must map at most 16 keys (up to 64 characters) "
	    "to strings (up to 512 characters)", name);
}

/*
 * OpenAI's other fields Valerie passes on (llm_params.openai_extra), each
 * with its check. NOTE: a field not here is dropped, so one that changes
 * what an answer means (logprobs) is refused in read_params instead.
 */
static const struct {
	const char *name;
	extra_check check;
} extra_fields[] = {
	{"seed", extra_int},
	{"presence_penalty", extra_penalty},
	{"frequency_penalty", extra_penalty},
	{"logit_bias", extra_logit_bias},
	{"user", extra_string},
	{"response_format", extra_response_format},
	{"parallel_tool_calls", extra_bool},
	{"reasoning_effort", extra_string},
	{"verbosity", extra_string},
	{"service_tier", extra_string},
	{"store", extra_bool},
	{"metadata", extra_metadata},
	{"safety_identifier", extra_string},
	{"prompt_cache_key", extra_string},
};

/*
 * The fields of extra_fields present in `body`, checked, into *out (caller
 * puts; NULL when there are none). parallel_tool_calls only goes with tools,
 * as OpenAI refuses it without. Returns 0, or -1 with resp filled.
 */
static int
read_extra(struct handler_ctx *ctx, const struct body *body, int has_tools,
    struct json_object **out)
{
	struct json_object *v;
	size_t i;

	*out = NULL;
	for (i = 0; i < sizeof(extra_fields) / sizeof(extra_fields[0]); i++) {
		if (!body_get(body, extra_fields[i].name, &v) || v == NULL)
			continue;
		if (extra_fields[i].check(ctx, extra_fields[i].name, v) != 0) {
			json_object_put(*out);
			*out = NULL;
			return -1;
		}
		if (!has_tools && strcmp(extra_fields[i].name, "parallel_tool_calls") == 0)
			continue;
		if (*out == NULL && (*out = json_object_new_object()) == NULL) {
			ctx->resp->body.oom = 1;
			return -1;
		}
		json_object_object_add(*out, extra_fields[i].name, json_object_get(v));
	}
	return 0;
}

/*
 * Reads temperature, top_p, max_tokens (or max_completion_tokens), stop, n,
 * logprobs (refused: answers carry none) and the extra fields.
 */
static int
read_params(struct handler_ctx *ctx, const struct body *body, int has_tools,
    struct llm_params *p)
{
	static const char *const max_names[] = {"max_completion_tokens", "max_tokens"};
	struct json_object *v;
	size_t i;

	memset(p, 0, sizeof(*p));
	if (number_field(ctx, body, "temperature", 0, 2, &p->temperature, &p->has_temperature) ||
	    number_field(ctx, body, "top_p", 0, 1, &p->top_p, &p->has_top_p))
		return -1;
	for (i = 0; i < 2; i++) {
		if (!body_get(body, max_names[i], &v) || v == NULL)
			continue;
		if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 1 ||
		    json_object_get_int64(v) > OAI_MAX_TOKENS)
			return bad_field(ctx, "field \"%s\" must be an integer from 1 to %d",
			    max_names[i], OAI_MAX_TOKENS);
		if (p->max_tokens == 0) {
			p->max_tokens = json_object_get_int64(v);
			p->max_completion_tokens = i == 0;
		}
	}
	if (body_get(body, "stop", &v) && v != NULL) {
		if (json_object_is_type(v, json_type_array)) {
			for (i = 0; i < json_object_array_length(v); i++)
				if (!json_object_is_type(json_object_array_get_idx(v, i),
				    json_type_string))
					break;
		}
		if (!(json_object_is_type(v, json_type_string) ||
		    (json_object_is_type(v, json_type_array) && i == json_object_array_length(v) &&
		    i >= 1 && i <= 4)))
			return bad_field(ctx, "field \"stop\" must be a string or an array of 1 to 4 "
			    "strings");
		p->stop = v;
	}
	if (body_get(body, "n", &v) && v != NULL &&
	    (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) != 1))
		return bad_field(ctx, "field \"n\": only one choice (n = 1) is supported");
	if ((body_get(body, "logprobs", &v) && json_object_get_boolean(v)) ||
	    (body_get(body, "top_logprobs", &v) && v != NULL))
		return bad_field(ctx, "field \"logprobs\": log probabilities are not supported");
	return read_extra(ctx, body, has_tools, &p->openai_extra);
}

/*
 * Checks an assistant message's tool_calls [{id, type: "function",
 * function: {name, arguments}}] and returns a clean copy (caller puts), or
 * NULL with resp filled (or out of memory: then resp says so).
 */
static struct json_object *
copy_tool_calls(struct handler_ctx *ctx, struct json_object *calls, size_t i)
{
	struct json_object *out, *c, *fn, *oc, *ofn;
	const char *id, *name, *args, *type;
	size_t j;

	if (!json_object_is_type(calls, json_type_array) ||
	    json_object_array_length(calls) > PROVIDER_TOOL_CALLS_MAX) {
		bad_field(ctx, "messages[%zu].tool_calls must be an array of at most %d calls", i,
		    PROVIDER_TOOL_CALLS_MAX);
		return NULL;
	}
	if ((out = json_object_new_array()) == NULL)
		goto oom;
	for (j = 0; j < json_object_array_length(calls); j++) {
		c = json_object_array_get_idx(calls, j);
		fn = NULL;
		json_object_object_get_ex(c, "function", &fn);
		id = member_str(c, "id");
		type = member_str(c, "type");
		name = member_str(fn, "name");
		args = member_str(fn, "arguments");
		if (id == NULL || *id == '\0' || (type != NULL && strcmp(type, "function") != 0) ||
		    name == NULL || args == NULL) {
			json_object_put(out);
			bad_field(ctx, "messages[%zu].tool_calls[%zu] needs an \"id\" and a \"function\" "
			    "with a \"name\" and \"arguments\" (a string)", i, j);
			return NULL;
		}
		oc = json_object_new_object();
		ofn = json_object_new_object();
		if (oc == NULL || ofn == NULL || json_object_array_add(out, oc) != 0) {
			json_object_put(oc);
			json_object_put(ofn);
			json_object_put(out);
			goto oom;
		}
		json_object_object_add(oc, "id", json_object_new_string(id));
		json_object_object_add(oc, "type", json_object_new_string("function"));
		json_object_object_add(ofn, "name", json_object_new_string(name));
		json_object_object_add(ofn, "arguments", json_object_new_string(args));
		json_object_object_add(oc, "function", ofn);
	}
	return out;
oom:
	ctx->resp->body.oom = 1;
	return NULL;
}

/*
 * Whether message `m` of role `role` is already what new_message would make
 * of it: {"role", "content"} in that order and nothing else, the role one
 * kept as it is (not developer, not tool, no NUL in it) and the content a
 * string.
 */
static int
clean_message(struct json_object *m, const char *role)
{
	int n = 0;

	if (json_object_object_length(m) != 2 || strcmp(role, "developer") == 0 ||
	    strcmp(role, "tool") == 0)
		return 0;
	json_object_object_foreach(m, k, v) {
		if (strcmp(k, n == 0 ? "role" : "content") != 0 ||
		    (n == 0 && (size_t)json_object_get_string_len(v) != strlen(role)) ||
		    (n == 1 && !json_object_is_type(v, json_type_string)))
			return 0;
		n++;
	}
	return 1;
}

/*
 * The clean message for the provider and the store: role, content (null for
 * an assistant that only calls tools), tool_calls, tool_call_id, name. Caller puts.
 * NULL with resp filled.
 */
static struct json_object *
new_message(struct handler_ctx *ctx, struct json_object *m, const char *role, size_t i,
    const struct buf *text, struct json_object *parts)
{
	struct json_object *out, *calls = NULL, *v;
	const char *id = NULL, *name;

	/*
	 * NOTE: the usual message is clean already: it is kept (a reference)
	 * rather than made again, which cost about 3,000 instructions of a
	 * completion; the same bytes go to the provider and the store.
	 */
	if (parts == NULL && clean_message(m, role))
		return json_object_get(m);
	if (strcmp(role, "tool") == 0) {
		id = member_str(m, "tool_call_id");
		if (id == NULL || *id == '\0') {
			bad_field(ctx, "messages[%zu] (role tool) needs a \"tool_call_id\"", i);
			return NULL;
		}
	}
	if (strcmp(role, "assistant") == 0 && json_object_object_get_ex(m, "tool_calls", &v) &&
	    v != NULL && (calls = copy_tool_calls(ctx, v, i)) == NULL)
		return NULL;
	if (calls != NULL && json_object_array_length(calls) == 0) {
		json_object_put(calls);
		calls = NULL;
	}
	out = chat_message_new(strcmp(role, "developer") == 0 ? "system" : role,
	    text->data ? text->data : "", text->len);
	if (out == NULL) {
		json_object_put(calls);
		ctx->resp->body.oom = 1;
		return NULL;
	}
	if (calls != NULL) {
		if (text->len == 0)
			json_object_object_add(out, "content", NULL);
		json_object_object_add(out, "tool_calls", calls);
	}
	if (id != NULL)
		json_object_object_add(out, "tool_call_id", json_object_new_string(id));
	/* The parts as sent; "content" keeps their text (chat.h). */
	if (parts != NULL)
		json_object_object_add(out, "parts", json_object_get(parts));
	/* The speaker's name (several people in one chat): OpenAI reads it, Anthropic cannot. */
	if ((name = member_str(m, "name")) != NULL && *name != '\0')
		json_object_object_add(out, "name", json_object_new_string(name));
	return out;
}

void
openai_chat_completions(struct handler_ctx *ctx)
{
	struct json_object *v, *messages, *m, *role, *content, *news = NULL, *nm;
	struct json_object *parts = NULL;
	struct body body;
	struct chat_turn_input t;
	struct oai_state st;
	struct buf system = {0}, user = {0}, text = {0};
	const char *sid = http_request_header(ctx->req, "x-session-id"), *key, *r;
	char msg[160];
	size_t i, n, from, results = 0, media = 0, before, new_media = 0;

	body.obj = jsonbody_parse(ctx->req, ctx->resp, (int)ctx->conf->json_max_depth);
	if (body.obj == NULL)
		return;
	body_init(&body, body.obj);
	memset(&t, 0, sizeof(t));
	memset(&st, 0, sizeof(st));
	if (jsonbody_field(body.obj, "model", JB_STRING, &v, ctx->resp) != 0)
		goto out;
	if (v != NULL && !model_allowed(ctx->conf, json_object_get_string(v))) {
		snprintf(msg, sizeof(msg), "model \"%.60s\" is not in VALERIE_MODELS",
		    json_object_get_string(v));
		http_response_error(ctx->resp, 400, "model_not_allowed", msg);
		goto out;
	}
	t.model = v != NULL && json_object_get_string_len(v) > 0 ? json_object_get_string(v) : NULL;
	if (!body_get(&body, "stream", &v))
		v = NULL;
	else if (jsonbody_field(body.obj, "stream", JB_BOOL, &v, ctx->resp) != 0)
		goto out;
	t.stream = v != NULL && json_object_get_boolean(v);
	if (body_get(&body, "stream_options", &v) && v != NULL &&
	    json_object_is_type(v, json_type_object) &&
	    json_object_object_get_ex(v, "include_usage", &v) && json_object_get_boolean(v))
		st.include_usage = 1;
	/*
	 * NOTE: OpenAI's legacy function calling (`functions`, `function_call`,
	 * role "function") is refused, never dropped: the model would not be
	 * offered the functions. Nor is it translated to tools: a client that
	 * sends it reads the answer's message.function_call, not tool_calls,
	 * so a translated request would fail it as silently.
	 */
	if ((body_get(&body, "functions", &v) && v != NULL) ||
	    (body_get(&body, "function_call", &v) && v != NULL)) {
		bad_field(ctx, "fields \"functions\" and \"function_call\" (OpenAI's deprecated "
		    "function calling) are not supported: send \"tools\" and \"tool_choice\"");
		goto out;
	}
	if (body_get(&body, "tools", &v) && v != NULL) {
		if (check_tools(ctx, v) != 0)
			goto out;
		if (json_object_array_length(v) > 0)
			t.tools = v;
	}
	if (body_get(&body, "tool_choice", &v) && v != NULL) {
		if (check_tool_choice(ctx, v, t.tools != NULL) != 0)
			goto out;
		/* NOTE: "none" without tools says nothing, and providers refuse it. */
		if (t.tools != NULL)
			t.tool_choice = v;
	}
	if (read_params(ctx, &body, t.tools != NULL, &t.params) != 0)
		goto out;
	if (!body_get(&body, "messages", &messages) ||
	    !json_object_is_type(messages, json_type_array) ||
	    (n = json_object_array_length(messages)) == 0 || n > OAI_MESSAGES_MAX) {
		http_response_error(ctx->resp, 400, "invalid_field",
		    "field \"messages\" must be a non-empty array of messages");
		goto out;
	}
	if (sid != NULL && !chat_session_id_valid(sid, strlen(sid))) {
		http_response_error(ctx->resp, 400, "invalid_session_id",
		    "X-Session-Id must be 1 to 128 characters of A-Z a-z 0-9 _ . : -");
		goto out;
	}
	news = json_object_new_array();
	if (news == NULL)
		goto oom;
	/*
	 * With X-Session-Id the server keeps the conversation: system messages
	 * become the system prompt, the others follow the stored history and are
	 * stored as the turn. Without it every message is sent.
	 */
	/* With a session id, the new user text is what follows the history (chat.h). */
	from = sid != NULL ? chat_new_from(messages) : 0;
	for (i = 0; i < n; i++) {
		m = json_object_array_get_idx(messages, i);
		if (!json_object_is_type(m, json_type_object) ||
		    !json_object_object_get_ex(m, "role", &role) ||
		    !json_object_is_type(role, json_type_string)) {
			snprintf(msg, sizeof(msg), "messages[%zu] needs a string \"role\"", i);
			http_response_error(ctx->resp, 400, "invalid_field", msg);
			goto out;
		}
		r = json_object_get_string(role);
		if (strcmp(r, "function") == 0 || (json_object_object_get_ex(m, "function_call", &v) &&
		    v != NULL)) {
			bad_field(ctx, "messages[%zu]: role \"function\" and \"function_call\" (OpenAI's "
			    "deprecated function calling) are not supported: use \"tool_calls\" and "
			    "role \"tool\"", i);
			goto out;
		}
		if (strcmp(r, "system") != 0 && strcmp(r, "developer") != 0 &&
		    strcmp(r, "user") != 0 && strcmp(r, "assistant") != 0 && strcmp(r, "tool") != 0) {
			snprintf(msg, sizeof(msg), "messages[%zu].role \"%.20s\" is not supported", i, r);
			http_response_error(ctx->resp, 400, "invalid_field", msg);
			goto out;
		}
		json_object_object_get_ex(m, "content", &content);
		buf_reset(&text, 65536);
		json_object_put(parts);
		before = media;
		if (content_read(ctx, content, i, r, &text, &parts, &media) != 0)
			goto out;
		if (sid != NULL && (strcmp(r, "system") == 0 || strcmp(r, "developer") == 0)) {
			if (system.len > 0)
				buf_puts(&system, "\n\n");
			buf_append(&system, text.data ? text.data : "", text.len);
			continue;
		}
		if (strcmp(r, "user") == 0 && i >= from) {
			if (user.len > 0)
				buf_puts(&user, "\n\n");
			buf_append(&user, text.data ? text.data : "", text.len);
		}
		results += strcmp(r, "tool") == 0 && i >= from;
		new_media += i >= from ? media - before : 0;
		if ((nm = new_message(ctx, m, r, i, &text, parts)) == NULL)
			goto out;
		json_object_array_add(news, nm);
	}
	if (system.oom || user.oom || text.oom)
		goto oom;
	if (sid != NULL && user.len == 0 && results == 0 && new_media == 0) {
		http_response_error(ctx->resp, 400, "invalid_field",
		    "with X-Session-Id, send the new user message (or tool results) in \"messages\"");
		goto out;
	}
	if ((long long)utf8_count(user.data ? user.data : "", user.len) >
	    ctx->conf->max_message_chars) {
		snprintf(msg, sizeof(msg), "the user message is longer than %lld characters",
		    ctx->conf->max_message_chars);
		http_response_error(ctx->resp, 400, "message_too_long", msg);
		goto out;
	}
	key = http_request_header(ctx->req, "idempotency-key");
	if (key != NULL && sid != NULL) {
		for (i = 0; key[i] > 0x20 && key[i] < 0x7f; i++)
			;
		if (i == 0 || key[i] != '\0' || i > CHAT_IDEM_KEY_MAX) {
			http_response_error(ctx->resp, 400, "invalid_idempotency_key",
			    "Idempotency-Key must be 1 to 200 visible ASCII characters");
			goto out;
		}
		snprintf(t.idem_key, sizeof(t.idem_key), "%s\x1f%s", ctx->principal, key);
	}
	/* "chatcmpl-%.64s", without printf. */
	r = ctx->req->request_id[0] ? ctx->req->request_id : "valerie";
	i = strnlen(r, 64);
	memcpy(st.id, "chatcmpl-", 9);
	memcpy(st.id + 9, r, i);
	st.id[9 + i] = '\0';
	st.created = vtime_now_ms() / 1000;
	st.model = t.model != NULL ? t.model :
	    provider_default_model(ctx->conf, ctx->conf->llm_provider);
	/*
	 * No persona here: only a caller bound to a company gets its business
	 * context, as a system prompt ahead of the caller's own messages.
	 */
	if (ctx->company != NULL && ctx->company[0] != '\0') {
		struct json_object *company = json_object_new_string(ctx->company);

		if (company == NULL)
			goto oom;
		t.deadline_ms = vtime_mono_ms() + ctx->conf->turn_timeout * 1000;
		chat_business_context(ctx, company, t.deadline_ms, &system);
		json_object_put(company);
		if (system.oom)
			goto oom;
	}
	t.session_id = sid;
	t.system = system.data != NULL ? system.data : "";
	t.new_messages = news;
	t.fmt = &oai_format;
	t.fmt_state = &st;
	chat_run(ctx, &t);
	goto out;
oom:
	ctx->resp->body.oom = 1;
out:
	json_object_put(t.params.openai_extra);
	json_object_put(parts);
	json_object_put(news);
	json_object_put(body.obj);
	buf_free(&system);
	buf_free(&user);
	buf_free(&text);
}

/*
 * Adds model id[0..len) to `list` unless it is there. Returns 0, or -1 when
 * out of memory.
 */
static int
add_model(struct json_object *list, const char *id, size_t len, const char *owner)
{
	struct json_object *m, *v, *idv, *ov;
	size_t i;

	for (i = 0; i < json_object_array_length(list); i++) {
		if (json_object_object_get_ex(json_object_array_get_idx(list, i), "id", &v) &&
		    (size_t)json_object_get_string_len(v) == len &&
		    memcmp(json_object_get_string(v), id, len) == 0)
			return 0;
	}
	m = json_object_new_object();
	idv = json_object_new_string_len(id, (int)len);
	ov = json_object_new_string(owner);
	if (m == NULL || idv == NULL || ov == NULL) {
		json_object_put(m);
		json_object_put(idv);
		json_object_put(ov);
		return -1;
	}
	json_object_object_add(m, "id", idv);
	json_object_object_add(m, "object", json_object_new_string("model"));
	json_object_object_add(m, "created", json_object_new_int64(0));
	json_object_object_add(m, "owned_by", ov);
	if (json_object_array_add(list, m) != 0) {
		json_object_put(m);
		return -1;
	}
	return 0;
}

/*
 * The models Valerie knows: the default model of each provider in the chain,
 * then the VALERIE_MODELS allowlist, as OpenAI model objects. NULL when out
 * of memory.
 */
static struct json_object *
models_list(const struct conf *c)
{
	struct json_object *list = json_object_new_array();
	char chain[PROVIDER_CHAIN_MAX][PROVIDER_NAME_MAX];
	const char *p, *comma, *m;
	size_t len, k, n = provider_chain(c, chain);
	int rc = 0;

	if (list == NULL)
		return NULL;
	for (k = 0; k < n; k++) {
		m = provider_default_model(c, chain[k]);
		rc |= add_model(list, m, strlen(m), strcmp(chain[k], "offline") == 0 ? "valerie" :
		    chain[k]);
	}
	/* NOTE: an allowed id is whole, however long: model_allowed compares it whole. */
	for (p = c->models; p != NULL && *p != '\0'; p = comma ? comma + 1 : NULL) {
		comma = strchr(p, ',');
		len = comma ? (size_t)(comma - p) : strlen(p);
		rc |= add_model(list, p, len, "valerie");
	}
	if (rc != 0) {
		/* Not a shorter list: GET /v1/models/{id} would say 404 for a model served. */
		json_object_put(list);
		return NULL;
	}
	return list;
}

/* GET /v1/models: every model models_list names. */
void
openai_models(struct handler_ctx *ctx)
{
	struct json_object *doc = json_object_new_object(), *list = models_list(ctx->conf);

	if (doc == NULL || list == NULL) {
		json_object_put(doc);
		json_object_put(list);
		ctx->resp->body.oom = 1;
		return;
	}
	json_object_object_add(doc, "object", json_object_new_string("list"));
	json_object_object_add(doc, "data", list);
	http_response_json(ctx->resp, 200, doc);
	json_object_put(doc);
}

/*
 * GET /v1/models/{model} (the SDKs' models.retrieve): the model object when
 * GET /v1/models lists it, else 404 model_not_found, as OpenAI answers. An id
 * may hold slashes ("meta-llama/Llama-3.1-8B", as vLLM names models).
 */
void
openai_model_get(struct handler_ctx *ctx)
{
	struct json_object *list = models_list(ctx->conf), *m, *id;
	char msg[ROUTER_PARAM_MAX + 64];
	size_t i;

	if (list == NULL) {
		ctx->resp->body.oom = 1;
		return;
	}
	for (i = 0; i < json_object_array_length(list); i++) {
		m = json_object_array_get_idx(list, i);
		if (ctx->param[0] != '\0' && json_object_object_get_ex(m, "id", &id) &&
		    strcmp(json_object_get_string(id), ctx->param) == 0) {
			http_response_json(ctx->resp, 200, m);
			json_object_put(list);
			return;
		}
	}
	json_object_put(list);
	/* ctx->param is "" for an id over ROUTER_PARAM_MAX bytes: no model id is that long here. */
	snprintf(msg, sizeof(msg), "The model %s%s%s does not exist or is not served here (GET "
	    "/v1/models lists the models)", ctx->param[0] != '\0' ? "'" : "",
	    ctx->param[0] != '\0' ? ctx->param : "asked for", ctx->param[0] != '\0' ? "'" : "");
	utf8_scrub(msg);   /* nginx decodes %FF in the path: the id may be any bytes */
	http_response_error(ctx->resp, 404, "model_not_found", msg);
}
