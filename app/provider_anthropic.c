/* provider_anthropic: the Anthropic Messages API over libcurl, whole or streamed. */
#include "config.h"

#include "conf.h"
#include "provider.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ANTHROPIC_URL_MAX 1024
#define ANTHROPIC_KEY_HEADER_MAX 600
#define ANTHROPIC_VERSION "2023-06-01"
#define ANTHROPIC_MAX_TOKENS 4096   /* required by the API; the most an answer may take */
#define JSON_PLAIN (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* The string member `key` of `o` (borrowed), or NULL if absent or not a string. */
static const char *
get_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/*
 * Takes the token counts of a `usage` object. Each count is cumulative (a
 * later message_delta repeats and updates it), so each replaces the last;
 * never added. A count left out or null (unknown) keeps the last one.
 * NOTE: input_tokens leaves out the cached prompt, so the input is the sum
 * of the three input counts, kept apart in `in` (input, cache creation,
 * cache read; zeroed by the caller for each answer).
 */
static void
take_usage(struct json_object *usage, long long in[3], struct llm_result *res)
{
	static const char *const keys[3] = {"input_tokens", "cache_creation_input_tokens",
		"cache_read_input_tokens"};
	struct json_object *v;
	int i, seen = 0;

	if (usage == NULL || !json_object_is_type(usage, json_type_object))
		return;
	for (i = 0; i < 3; i++) {
		if (json_object_object_get_ex(usage, keys[i], &v) &&
		    json_object_is_type(v, json_type_int)) {
			in[i] = json_object_get_int64(v);
			seen = 1;
		}
	}
	if (seen)
		res->input_tokens = in[0] + in[1] + in[2];
	if (json_object_object_get_ex(usage, "output_tokens", &v) &&
	    json_object_is_type(v, json_type_int))
		res->output_tokens = json_object_get_int64(v);
}

static void
take_model(struct json_object *msg, struct llm_result *res)
{
	const char *m = get_str(msg, "model");

	if (m != NULL)
		snprintf(res->model, sizeof(res->model), "%s", m);
}

/* "type: message" of an Anthropic error object {"type", "message"}; -1 if it is not one. */
static int
error_line(struct json_object *err, char *out, size_t outlen)
{
	const char *type = get_str(err, "type"), *msg = get_str(err, "message");

	if (type == NULL && msg == NULL)
		return -1;
	if (type != NULL && msg != NULL)
		snprintf(out, outlen, "%.40s: %.140s", type, msg);
	else
		snprintf(out, outlen, "%.160s", type != NULL ? type : msg);
	return 0;
}

/* The reason in an error body {"type": "error", "error": {"type", "message"}}. */
static int
error_text(const char *body, size_t len, char *out, size_t outlen)
{
	struct json_object *doc = provider_parse_json(body, len), *e;
	int rc = -1;

	if (doc != NULL && json_object_object_get_ex(doc, "error", &e))
		rc = error_line(e, out, outlen);
	json_object_put(doc);
	return rc;
}

/*
 * OpenAI's finish_reason for an Anthropic stop_reason: an answer cut off by
 * max_tokens or by the context window is "length", so a client knows it is
 * not whole; end_turn, stop_sequence, pause_turn and unknown ones "stop".
 */
static void
take_stop_reason(const char *reason, struct llm_result *res)
{
	const char *f = "stop";

	if (reason == NULL)
		return;
	if (strcmp(reason, "tool_use") == 0)
		f = "tool_calls";
	else if (strcmp(reason, "max_tokens") == 0 ||
	    strcmp(reason, "model_context_window_exceeded") == 0)
		f = "length";
	else if (strcmp(reason, "refusal") == 0)
		f = "content_filter";
	snprintf(res->finish_reason, sizeof(res->finish_reason), "%s", f);
}

/*
 * Starts a tool call from a tool_use block {id, name, input}: `input` becomes
 * the arguments' JSON text, in a stream (`whole` 0) only when it is not the
 * empty object Anthropic starts every streamed block with (some compatible
 * proxies send the whole input there and no input_json_delta). Returns the
 * call, or NULL (too many, out of memory, not a tool_use).
 */
static struct llm_tool_call *
start_tool_call(struct json_object *block, struct llm_result *res, int whole)
{
	struct llm_tool_call *tc;
	struct json_object *input;
	const char *id = get_str(block, "id"), *name = get_str(block, "name");

	if (id == NULL || name == NULL || (tc = provider_tool_call(res, res->ntool_calls)) == NULL)
		return NULL;
	buf_puts(&tc->id, id);
	buf_puts(&tc->name, name);
	if (json_object_object_get_ex(block, "input", &input) && (whole ||
	    (json_object_is_type(input, json_type_object) &&
	    json_object_object_length(input) > 0)))
		buf_puts(&tc->arguments, json_object_to_json_string_ext(input, JSON_PLAIN));
	return tc;
}

/*
 * One event of a stream. The text comes in content_block_delta events of type
 * text_delta; message_start brings the model and the input tokens,
 * message_delta the output tokens and the stop reason; a tool_use block
 * (content_block_start) starts a tool call whose input arrives as
 * input_json_delta fragments, joined (or whole in the start, from some
 * compatible proxies); message_stop is the only clean end. An
 * `error` event (overloaded_error...) fails the call; ping and unknown events
 * are ignored, whatever their data.
 */
static int
on_event(struct provider_stream *s, const char *event, const char *data, size_t len)
{
	struct json_object *doc, *msg, *delta, *v;
	struct llm_tool_call *tc;
	const char *type = event, *t;
	char line[180];
	int rc = 0;

	if (strcmp(event, "message") == 0)
		type = NULL;   /* no event name: the data's type says */
	else if (strcmp(type, "message_start") != 0 && strcmp(type, "content_block_delta") != 0 &&
	    strcmp(type, "content_block_start") != 0 &&
	    strcmp(type, "message_delta") != 0 && strcmp(type, "message_stop") != 0 &&
	    strcmp(type, "error") != 0)
		return 0;
	doc = provider_parse_json(data, len);
	if (doc == NULL) {
		snprintf(s->why, sizeof(s->why), "the upstream stream sent an event that is not JSON");
		s->failed = 1;
		return 1;
	}
	if (type == NULL && (type = get_str(doc, "type")) == NULL)
		type = "";
	if (strcmp(type, "message_start") == 0) {
		if (json_object_object_get_ex(doc, "message", &msg)) {
			take_model(msg, s->res);
			if (json_object_object_get_ex(msg, "usage", &v))
				take_usage(v, s->input_parts, s->res);
		}
	} else if (strcmp(type, "content_block_start") == 0) {
		s->start_input = 0;
		if (json_object_object_get_ex(doc, "content_block", &v) &&
		    (t = get_str(v, "type")) != NULL && strcmp(t, "tool_use") == 0) {
			if ((tc = start_tool_call(v, s->res, 0)) == NULL) {
				snprintf(s->why, sizeof(s->why), "the upstream stream sent a malformed "
				    "tool_use block (or more than %d)", PROVIDER_TOOL_CALLS_MAX);
				s->failed = 1;
				rc = 1;
			} else {
				s->start_input = tc->arguments.len > 0;
			}
		}
	} else if (strcmp(type, "content_block_delta") == 0) {
		if (!json_object_object_get_ex(doc, "delta", &delta) ||
		    (t = get_str(delta, "type")) == NULL)
			;
		else if (strcmp(t, "text_delta") == 0) {
			if (json_object_object_get_ex(delta, "text", &v) &&
			    json_object_is_type(v, json_type_string) &&
			    provider_stream_text(s, json_object_get_string(v),
			    (size_t)json_object_get_string_len(v)) != 0)
				rc = 1;
		} else if (strcmp(t, "input_json_delta") == 0) {
			/* NOTE: blocks stream one after the other: the fragment is the last call's. */
			if (s->res->ntool_calls == 0 || (t = get_str(delta, "partial_json")) == NULL) {
				snprintf(s->why, sizeof(s->why),
				    "the upstream stream sent input_json_delta outside a tool_use block");
				s->failed = 1;
				rc = 1;
			} else {
				tc = &s->res->tool_calls[s->res->ntool_calls - 1];
				/* NOTE: fragments that follow a whole start input are the input. */
				if (s->start_input && *t != '\0') {
					buf_reset(&tc->arguments, 0);
					s->start_input = 0;
				}
				buf_puts(&tc->arguments, t);
			}
		}
	} else if (strcmp(type, "message_delta") == 0) {
		if (json_object_object_get_ex(doc, "usage", &v))
			take_usage(v, s->input_parts, s->res);
		if (json_object_object_get_ex(doc, "delta", &delta))
			take_stop_reason(get_str(delta, "stop_reason"), s->res);
	} else if (strcmp(type, "message_stop") == 0) {
		s->done = 1;
	} else if (strcmp(type, "error") == 0) {
		if (!json_object_object_get_ex(doc, "error", &v))
			v = NULL;
		if (v != NULL && error_line(v, line, sizeof(line)) == 0)
			snprintf(s->why, sizeof(s->why), "the upstream stream failed: %.170s", line);
		else
			snprintf(s->why, sizeof(s->why), "the upstream stream failed");
		s->failed = 1;
		s->error_kind = provider_error_kind(v);
		rc = 1;
	}
	json_object_put(doc);
	return rc;
}

/*
 * Reads a whole (non-streamed) answer: the text blocks of `content`, joined.
 * NOTE: an empty `content` is an answer (the model ended its turn without a
 * word, as a stream with no content block does), not an error.
 */
static enum provider_status
read_whole(const char *body, size_t len, struct llm_result *res)
{
	struct json_object *doc = provider_parse_json(body, len);
	struct json_object *content, *block, *v;
	enum provider_status st = PROVIDER_ERROR;
	const char *t;
	size_t i;
	char line[180];
	long long in[3] = {0, 0, 0};

	if (doc == NULL) {
		snprintf(res->error, sizeof(res->error), "the upstream answer is not valid JSON");
		return PROVIDER_ERROR;
	}
	if (json_object_object_get_ex(doc, "error", &v) && error_line(v, line, sizeof(line)) == 0) {
		snprintf(res->error, sizeof(res->error), "anthropic failed: %s", line);
		goto out;
	}
	if (!json_object_object_get_ex(doc, "content", &content) ||
	    !json_object_is_type(content, json_type_array)) {
		snprintf(res->error, sizeof(res->error), "the upstream answer has no content array");
		goto out;
	}
	for (i = 0; i < json_object_array_length(content); i++) {
		block = json_object_array_get_idx(content, i);
		if ((t = get_str(block, "type")) != NULL && strcmp(t, "tool_use") == 0) {
			if (start_tool_call(block, res, 1) == NULL) {
				snprintf(res->error, sizeof(res->error), "the upstream answer has a "
				    "malformed tool_use block (or more than %d)", PROVIDER_TOOL_CALLS_MAX);
				goto out;
			}
			continue;
		}
		if (t == NULL || strcmp(t, "text") != 0 ||
		    !json_object_object_get_ex(block, "text", &v) ||
		    !json_object_is_type(v, json_type_string))
			continue;
		buf_append(&res->text, json_object_get_string(v),
		    (size_t)json_object_get_string_len(v));
	}
	take_stop_reason(get_str(doc, "stop_reason"), res);
	take_model(doc, res);
	if (json_object_object_get_ex(doc, "usage", &v))
		take_usage(v, in, res);
	st = PROVIDER_OK;
out:
	json_object_put(doc);
	return st;
}

static const struct provider_wire anthropic_wire = {
	"anthropic", "message_stop", on_event, read_whole, error_text
};

/*
 * The message being built: consecutive OpenAI messages of one Anthropic role
 * merge into it. Its text, the blocks of a user's images and documents with
 * the text before each, and its other blocks (tool_use for the assistant,
 * tool_result for the user).
 */
struct pending {
	const char *role;   /* "user", "assistant", or NULL before the first */
	struct buf text;
	struct json_object *media;     /* text, image and document blocks before `text`, in order */
	struct json_object *blocks;
	struct json_object *ids;       /* the ids of its tool_use blocks (a set) */
	struct json_object *answerable; /* the tool_use ids of the last assistant message sent */
};

static struct json_object *
text_block(const struct buf *text)
{
	struct json_object *b = json_object_new_object();

	if (b == NULL)
		return NULL;
	json_object_object_add(b, "type", json_object_new_string("text"));
	json_object_object_add(b, "text", json_object_new_string_len(text->data, (int)text->len));
	return b;
}

/*
 * Adds the pending message to `list` and empties it, unless it is empty, or
 * an assistant message with nothing before it (Anthropic wants the user
 * first). Plain text stays a string; with blocks the content is an array:
 * tool_result blocks first in a user message (as Anthropic requires), the
 * text first in an assistant's. Returns 0, or -1 when memory ran out.
 */
static int
flush(struct json_object *list, struct pending *p)
{
	struct json_object *m = NULL, *content = NULL, *tb = NULL;
	size_t nblocks = p->blocks != NULL ? json_object_array_length(p->blocks) : 0, i;
	size_t nmedia = p->media != NULL ? json_object_array_length(p->media) : 0;
	int rc = -1, sent = 0;

	if (p->text.oom)
		goto out;
	if (p->role == NULL || (p->text.len == 0 && nblocks == 0 && nmedia == 0) ||
	    (json_object_array_length(list) == 0 && strcmp(p->role, "assistant") == 0)) {
		rc = 0;
		goto out;
	}
	if (nblocks == 0 && nmedia == 0) {
		content = json_object_new_string_len(p->text.data, (int)p->text.len);
	} else {
		content = json_object_new_array();
		if (content == NULL || (p->text.len > 0 && (tb = text_block(&p->text)) == NULL))
			goto out;
		if (tb != NULL && strcmp(p->role, "assistant") == 0) {
			json_object_array_add(content, tb);
			tb = NULL;
		}
		for (i = 0; i < nblocks; i++)
			json_object_array_add(content,
			    json_object_get(json_object_array_get_idx(p->blocks, i)));
		for (i = 0; i < nmedia; i++)
			json_object_array_add(content,
			    json_object_get(json_object_array_get_idx(p->media, i)));
		if (tb != NULL) {
			json_object_array_add(content, tb);
			tb = NULL;
		}
	}
	m = json_object_new_object();
	if (m == NULL || content == NULL)
		goto out;
	json_object_object_add(m, "role", json_object_new_string(p->role));
	json_object_object_add(m, "content", content);
	content = NULL;
	if (json_object_array_add(list, m) != 0)
		goto out;
	m = NULL;
	rc = 0;
	sent = 1;
out:
	/*
	 * A tool_result must answer a tool_use of the message just before: only
	 * an assistant message that was sent makes its calls answerable.
	 */
	if (rc == 0 && p->role != NULL && strcmp(p->role, "assistant") == 0) {
		json_object_put(p->answerable);
		p->answerable = sent && p->ids != NULL ? json_object_get(p->ids) : NULL;
	}
	json_object_put(tb);
	json_object_put(content);
	json_object_put(m);
	json_object_put(p->blocks);
	json_object_put(p->media);
	json_object_put(p->ids);
	p->blocks = NULL;
	p->media = NULL;
	p->ids = NULL;
	buf_reset(&p->text, 4096);
	return rc;
}

/*
 * Adds block `b` (owned; NULL is a failed allocation) to *list, made on first
 * use: the pending message's blocks or media. Returns 0, or -1 out of memory.
 */
static int
pending_add(struct json_object **list, struct json_object *b)
{
	if (b == NULL)
		return -1;
	if (*list == NULL && (*list = json_object_new_array()) == NULL) {
		json_object_put(b);
		return -1;
	}
	if (json_object_array_add(*list, b) != 0) {
		json_object_put(b);
		return -1;
	}
	return 0;
}

/*
 * A new block {type: `type`, source: {}}, *src being the source, for its
 * members. Caller puts. NULL out of memory.
 */
static struct json_object *
source_block(const char *type, struct json_object **src)
{
	struct json_object *b = json_object_new_object();

	*src = json_object_new_object();
	if (b == NULL || *src == NULL) {
		json_object_put(b);
		json_object_put(*src);
		return NULL;
	}
	json_object_object_add(b, "type", json_object_new_string(type));
	json_object_object_add(b, "source", *src);
	return b;
}

/*
 * An image part ({type: "image_url", image_url: {url}}) as an image block:
 * {type: "image", source: {type: "base64", media_type, data}} for a data
 * URL, {type: "url", url} for an http(s) one. NULL with `err` filled when
 * the URL is neither, or out of memory (`err` empty).
 */
static struct json_object *
image_block(struct json_object *part, size_t i, char *err, size_t errlen)
{
	struct json_object *b, *src, *iu = NULL, *u;
	char media[PROVIDER_IMAGE_TYPE_MAX];
	const char *url;
	size_t data, len;
	enum provider_image kind;

	json_object_object_get_ex(part, "image_url", &iu);
	if (!json_object_object_get_ex(iu, "url", &u) || !json_object_is_type(u, json_type_string)) {
		snprintf(err, errlen, "anthropic: an image of messages[%zu] has no url", i);
		return NULL;
	}
	url = json_object_get_string(u);
	len = (size_t)json_object_get_string_len(u);
	if ((kind = provider_image_url(url, len, media, &data)) == PROVIDER_IMAGE_BAD) {
		snprintf(err, errlen, "anthropic: an image of messages[%zu] is neither an http(s) "
		    "URL nor a base64 PNG, JPEG, GIF or WebP", i);
		return NULL;
	}
	if ((b = source_block("image", &src)) == NULL) {
		err[0] = '\0';
		return NULL;
	}
	if (kind == PROVIDER_IMAGE_DATA) {
		json_object_object_add(src, "type", json_object_new_string("base64"));
		json_object_object_add(src, "media_type", json_object_new_string(media));
		json_object_object_add(src, "data",
		    json_object_new_string_len(url + data, (int)(len - data)));
	} else {
		json_object_object_add(src, "type", json_object_new_string("url"));
		json_object_object_add(src, "url", json_object_new_string_len(url, (int)len));
	}
	return b;
}

/*
 * A file part ({type: "file", file: {file_data, filename?}}) as a document
 * block: {type: "document", source: {type: "base64", media_type:
 * "application/pdf", data}, title: filename}. Caller puts. NULL with `err`
 * filled, or out of memory (`err` empty).
 */
static struct json_object *
document_block(struct json_object *part, size_t i, char *err, size_t errlen)
{
	struct json_object *f = NULL, *fd, *b, *src;
	const char *name;
	size_t data;

	json_object_object_get_ex(part, "file", &f);
	if (!json_object_object_get_ex(f, "file_data", &fd) ||
	    !json_object_is_type(fd, json_type_string) ||
	    !provider_file_data(json_object_get_string(fd), (size_t)json_object_get_string_len(fd),
	    &data)) {
		snprintf(err, errlen, "anthropic: a file of messages[%zu] is not a base64 PDF data "
		    "URL", i);
		return NULL;
	}
	if ((b = source_block("document", &src)) == NULL) {
		err[0] = '\0';
		return NULL;
	}
	json_object_object_add(src, "type", json_object_new_string("base64"));
	json_object_object_add(src, "media_type", json_object_new_string("application/pdf"));
	json_object_object_add(src, "data", json_object_new_string_len(
	    json_object_get_string(fd) + data, json_object_get_string_len(fd) - (int)data));
	if ((name = get_str(f, "filename")) != NULL && *name != '\0')
		json_object_object_add(b, "title", json_object_new_string(name));
	return b;
}

/*
 * A user message's parts (text, images and files) into the pending message,
 * in their order: the text so far becomes a text block before each image or
 * document. What the Messages API has no form for, audio and a file named by
 * an OpenAI file_id, is refused in the new messages (`now`: the client asks
 * about it) and becomes a note in the history, so that a session that once
 * had one still goes on with Anthropic.
 */
static enum provider_status
user_parts(struct json_object *parts, size_t i, int now, struct pending *p, char *err,
    size_t errlen)
{
	struct json_object *part, *v, *f;
	const char *type, *note;
	size_t j;

	for (j = 0; j < json_object_array_length(parts); j++) {
		part = json_object_array_get_idx(parts, j);
		type = get_str(part, "type");
		note = NULL;
		if (type != NULL && strcmp(type, "input_audio") == 0)
			note = now ? "anthropic: the new message carries audio, which the Messages API "
			    "does not take" : "[an audio clip sent earlier, which this model cannot hear]";
		else if (type != NULL && strcmp(type, "file") == 0 &&
		    (!json_object_object_get_ex(part, "file", &f) ||
		    !json_object_object_get_ex(f, "file_data", NULL)))
			note = now ? "anthropic: the new message names a file by file_id, which only "
			    "OpenAI can read: send it as file_data" : "[a file sent earlier as an OpenAI "
			    "file_id, which this model cannot read]";
		if (note != NULL && now) {
			snprintf(err, errlen, "%s", note);
			return PROVIDER_UNSUPPORTED;
		}
		if (note != NULL) {
			if (p->text.len > 0)
				buf_puts(&p->text, "\n\n");
			buf_puts(&p->text, note);
		} else if (type != NULL && (strcmp(type, "image_url") == 0 ||
		    strcmp(type, "file") == 0)) {
			if (p->text.len > 0) {
				if (pending_add(&p->media, text_block(&p->text)) != 0)
					return PROVIDER_NOMEM;
				buf_reset(&p->text, 4096);
			}
			v = strcmp(type, "file") != 0 ? image_block(part, i, err, errlen) :
			    document_block(part, i, err, errlen);
			if (v == NULL)
				return err[0] != '\0' ? PROVIDER_REJECTED : PROVIDER_NOMEM;
			if (pending_add(&p->media, v) != 0)
				return PROVIDER_NOMEM;
		} else if (json_object_object_get_ex(part, "text", &v) &&
		    json_object_is_type(v, json_type_string) && json_object_get_string_len(v) > 0) {
			if (p->text.len > 0)
				buf_puts(&p->text, "\n\n");
			buf_append(&p->text, json_object_get_string(v),
			    (size_t)json_object_get_string_len(v));
		}
	}
	return p->text.oom ? PROVIDER_NOMEM : PROVIDER_OK;
}

/*
 * An assistant message's tool_calls as tool_use blocks: {id, name, input},
 * input being the arguments parsed (they must be a JSON object; "" is {}).
 */
static enum provider_status
tool_use_blocks(struct json_object *calls, size_t i, struct pending *p, char *err,
    size_t errlen)
{
	struct json_object *c, *fn, *input, *b;
	const char *id, *name, *args;
	size_t j;

	if (!json_object_is_type(calls, json_type_array)) {
		snprintf(err, errlen, "anthropic: messages[%zu].tool_calls is not a list", i);
		return PROVIDER_REJECTED;
	}
	for (j = 0; j < json_object_array_length(calls); j++) {
		c = json_object_array_get_idx(calls, j);
		id = get_str(c, "id");
		fn = NULL;
		json_object_object_get_ex(c, "function", &fn);
		name = get_str(fn, "name");
		args = get_str(fn, "arguments");
		if (id == NULL || name == NULL) {
			snprintf(err, errlen, "anthropic: messages[%zu].tool_calls[%zu] needs an id and "
			    "a function name", i, j);
			return PROVIDER_REJECTED;
		}
		if (args == NULL || *args == '\0')
			input = json_object_new_object();
		else if ((input = provider_parse_json(args, strlen(args))) == NULL ||
		    !json_object_is_type(input, json_type_object)) {
			json_object_put(input);
			snprintf(err, errlen, "anthropic: the arguments of messages[%zu].tool_calls[%zu] "
			    "are not a JSON object", i, j);
			return PROVIDER_REJECTED;
		}
		b = json_object_new_object();
		if (b == NULL || input == NULL) {
			json_object_put(b);
			json_object_put(input);
			return PROVIDER_NOMEM;
		}
		if (p->ids == NULL && (p->ids = json_object_new_object()) == NULL) {
			json_object_put(b);
			json_object_put(input);
			return PROVIDER_NOMEM;
		}
		json_object_object_add(p->ids, id, NULL);
		json_object_object_add(b, "type", json_object_new_string("tool_use"));
		json_object_object_add(b, "id", json_object_new_string(id));
		json_object_object_add(b, "name", json_object_new_string(name));
		json_object_object_add(b, "input", input);
		if (pending_add(&p->blocks, b) != 0)
			return PROVIDER_NOMEM;
	}
	return PROVIDER_OK;
}

/* A tool message as a tool_result block {tool_use_id, content}. */
static enum provider_status
tool_result_block(struct json_object *m, const struct buf *text, size_t i, struct pending *p,
    char *err, size_t errlen)
{
	const char *id = get_str(m, "tool_call_id");
	struct json_object *b;

	if (id == NULL) {
		snprintf(err, errlen, "anthropic: messages[%zu] (a tool result) has no tool_call_id",
		    i);
		return PROVIDER_REJECTED;
	}
	/* NOTE: a result whose call was not sent (a leading assistant message goes) goes too. */
	if (p->answerable == NULL || !json_object_object_get_ex(p->answerable, id, NULL))
		return PROVIDER_OK;
	if ((b = json_object_new_object()) == NULL)
		return PROVIDER_NOMEM;
	json_object_object_add(b, "type", json_object_new_string("tool_result"));
	json_object_object_add(b, "tool_use_id", json_object_new_string(id));
	if (text->len > 0)
		json_object_object_add(b, "content",
		    json_object_new_string_len(text->data, (int)text->len));
	return pending_add(&p->blocks, b) != 0 ? PROVIDER_NOMEM : PROVIDER_OK;
}

/*
 * Translates the OpenAI-shaped messages `in` into the body's `system` and
 * `messages`: system (and developer) messages go to `system`, joined by a
 * blank line; an assistant's tool_calls become tool_use blocks and tool
 * messages tool_result blocks of a user message; consecutive messages of one
 * role merge (text joined by a blank line), so roles alternate; empty ones
 * and a leading assistant message are dropped. Returns PROVIDER_OK,
 * PROVIDER_REJECTED with `err` filled (the request cannot be expressed), or
 * PROVIDER_NOMEM.
 */
static enum provider_status
translate(struct json_object *in, struct json_object *doc, char *err, size_t errlen)
{
	struct json_object *list = NULL, *m, *content, *system, *calls;
	struct buf sys, piece;
	struct pending p;
	const char *role, *as;
	enum provider_status st = PROVIDER_REJECTED;
	size_t i, media[PROVIDER_MEDIA_KINDS], others, from;

	buf_init(&sys);
	buf_init(&piece);
	memset(&p, 0, sizeof(p));
	buf_init(&p.text);
	if (!json_object_is_type(in, json_type_array)) {
		snprintf(err, errlen, "anthropic: the messages are not a list");
		goto out;
	}
	list = json_object_new_array();
	if (list == NULL) {
		st = PROVIDER_NOMEM;
		goto out;
	}
	/*
	 * The new messages: the run of user messages that ends with the last one,
	 * and what follows it (the assistant's tool calls and their results in an
	 * agent's steps or a client's tool loop, a prefill).
	 */
	from = json_object_array_length(in);
	for (i = 0; i < json_object_array_length(in); i++)
		if ((role = get_str(json_object_array_get_idx(in, i), "role")) != NULL &&
		    strcmp(role, "user") == 0 && (i == 0 || (as = get_str(
		    json_object_array_get_idx(in, i - 1), "role")) == NULL ||
		    strcmp(as, "user") != 0))
			from = i;
	for (i = 0; i < json_object_array_length(in); i++) {
		m = json_object_array_get_idx(in, i);
		role = get_str(m, "role");
		content = NULL;
		json_object_object_get_ex(m, "content", &content);
		buf_reset(&piece, 4096);
		memset(media, 0, sizeof(media));
		if (role == NULL || provider_content_text(content, "\n\n", &piece, media) != 0) {
			snprintf(err, errlen, "anthropic: messages[%zu] has no role or no text content",
			    i);
			goto out;
		}
		others = media[PROVIDER_MEDIA_IMAGE] + media[PROVIDER_MEDIA_FILE] +
		    media[PROVIDER_MEDIA_AUDIO];
		if (others > 0 && strcmp(role, "user") != 0) {
			snprintf(err, errlen, "anthropic: messages[%zu] carries images or files, which "
			    "only user messages can", i);
			goto out;
		}
		if (piece.oom) {
			st = PROVIDER_NOMEM;
			goto out;
		}
		if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
			if (sys.len > 0 && piece.len > 0)
				buf_puts(&sys, "\n\n");
			buf_append(&sys, piece.data, piece.len);
			continue;
		}
		if (strcmp(role, "user") == 0 || strcmp(role, "tool") == 0)
			as = "user";
		else if (strcmp(role, "assistant") == 0)
			as = "assistant";
		else {
			snprintf(err, errlen, "anthropic: messages of role %.20s cannot be sent", role);
			goto out;
		}
		calls = NULL;
		if (strcmp(role, "assistant") == 0)
			json_object_object_get_ex(m, "tool_calls", &calls);
		/*
		 * A message that adds nothing (empty, no calls) must not split the
		 * messages around it: they merge as if it were not there.
		 */
		if (piece.len == 0 && others == 0 && strcmp(role, "tool") != 0 && (calls == NULL ||
		    (json_object_is_type(calls, json_type_array) &&
		    json_object_array_length(calls) == 0)))
			continue;
		if (p.role != NULL && strcmp(p.role, as) != 0 && flush(list, &p) != 0) {
			st = PROVIDER_NOMEM;
			goto out;
		}
		p.role = as;
		if (strcmp(role, "tool") == 0) {
			st = tool_result_block(m, &piece, i, &p, err, errlen);
			if (st != PROVIDER_OK)
				goto out;
			st = PROVIDER_REJECTED;
			continue;
		}
		if (others > 0) {
			st = user_parts(content, i, i >= from, &p, err, errlen);
			if (st != PROVIDER_OK)
				goto out;
			st = PROVIDER_REJECTED;
		} else if (piece.len > 0) {
			if (p.text.len > 0)
				buf_puts(&p.text, "\n\n");
			buf_append(&p.text, piece.data, piece.len);
		}
		if (calls != NULL) {
			st = tool_use_blocks(calls, i, &p, err, errlen);
			if (st != PROVIDER_OK)
				goto out;
			st = PROVIDER_REJECTED;
		}
	}
	if (flush(list, &p) != 0 || sys.oom) {
		st = PROVIDER_NOMEM;
		goto out;
	}
	if (json_object_array_length(list) == 0) {
		snprintf(err, errlen, "anthropic: there is no user message to send");
		goto out;
	}
	if (sys.len > 0) {
		if ((system = json_object_new_string_len(sys.data, (int)sys.len)) == NULL) {
			st = PROVIDER_NOMEM;
			goto out;
		}
		json_object_object_add(doc, "system", system);
	}
	json_object_object_add(doc, "messages", list);
	list = NULL;
	st = PROVIDER_OK;
out:
	json_object_put(list);
	json_object_put(p.blocks);
	json_object_put(p.media);
	json_object_put(p.ids);
	json_object_put(p.answerable);
	buf_free(&p.text);
	buf_free(&piece);
	buf_free(&sys);
	return st;
}

/*
 * OpenAI tool definitions {type: "function", function: {name, description?,
 * parameters?}} as Anthropic's {name, description?, input_schema}.
 */
static enum provider_status
translate_tools(struct json_object *tools, struct json_object *doc, char *err, size_t errlen)
{
	struct json_object *list, *t, *fn, *v, *out;
	const char *name;
	size_t i;

	if (!json_object_is_type(tools, json_type_array)) {
		snprintf(err, errlen, "anthropic: tools is not a list");
		return PROVIDER_REJECTED;
	}
	if ((list = json_object_new_array()) == NULL)
		return PROVIDER_NOMEM;
	for (i = 0; i < json_object_array_length(tools); i++) {
		t = json_object_array_get_idx(tools, i);
		fn = NULL;
		json_object_object_get_ex(t, "function", &fn);
		if ((name = get_str(fn, "name")) == NULL) {
			json_object_put(list);
			snprintf(err, errlen, "anthropic: tools[%zu] has no function name", i);
			return PROVIDER_REJECTED;
		}
		if ((out = json_object_new_object()) == NULL || json_object_array_add(list, out) != 0) {
			json_object_put(out);
			json_object_put(list);
			return PROVIDER_NOMEM;
		}
		json_object_object_add(out, "name", json_object_new_string(name));
		if (json_object_object_get_ex(fn, "description", &v) && v != NULL)
			json_object_object_add(out, "description", json_object_get(v));
		if (json_object_object_get_ex(fn, "parameters", &v) && v != NULL)
			json_object_object_add(out, "input_schema", json_object_get(v));
		else
			json_object_object_add(out, "input_schema",
			    json_tokener_parse("{\"type\":\"object\",\"properties\":{}}"));
	}
	json_object_object_add(doc, "tools", list);
	return PROVIDER_OK;
}

/*
 * OpenAI's tool_choice as Anthropic's: "auto" {type: auto}, "required"
 * {type: any}, "none" {type: none}, {type: function, function: {name}}
 * {type: tool, name}.
 */
static enum provider_status
translate_tool_choice(struct json_object *choice, struct json_object *doc, char *err,
    size_t errlen)
{
	struct json_object *out, *fn = NULL;
	const char *s = json_object_is_type(choice, json_type_string) ?
	    json_object_get_string(choice) : NULL, *name = NULL;

	if (s == NULL) {
		json_object_object_get_ex(choice, "function", &fn);
		name = get_str(fn, "name");
	}
	if ((s == NULL && name == NULL) || (s != NULL && strcmp(s, "auto") != 0 &&
	    strcmp(s, "required") != 0 && strcmp(s, "none") != 0)) {
		snprintf(err, errlen, "anthropic: tool_choice must be auto, required, none or a "
		    "function");
		return PROVIDER_REJECTED;
	}
	if ((out = json_object_new_object()) == NULL)
		return PROVIDER_NOMEM;
	json_object_object_add(out, "type", json_object_new_string(s == NULL ? "tool" :
	    strcmp(s, "required") == 0 ? "any" : s));
	if (name != NULL)
		json_object_object_add(out, "name", json_object_new_string(name));
	json_object_object_add(doc, "tool_choice", out);
	return PROVIDER_OK;
}

/*
 * OpenAI's other fields (llm_params.openai_extra) in Anthropic's terms:
 * `user` (or its successor safety_identifier) as metadata.user_id,
 * parallel_tool_calls false as the tool choice's disable_parallel_tool_use
 * (the choice "auto" when none was given). A JSON response_format and
 * logit_bias have no equivalent and would change what the answer means:
 * refused. seed, the penalties, reasoning_effort and verbosity only tune
 * the answer; store, metadata, service_tier and prompt_cache_key are
 * OpenAI's bookkeeping: all dropped.
 */
static enum provider_status
translate_extra(struct json_object *extra, struct json_object *doc, char *err, size_t errlen)
{
	struct json_object *v, *o, *choice;
	const char *s;

	if (extra == NULL)
		return PROVIDER_OK;
	if (json_object_object_get_ex(extra, "response_format", &v) &&
	    (s = get_str(v, "type")) != NULL && strcmp(s, "text") != 0) {
		snprintf(err, errlen, "anthropic: response_format %.20s cannot be expressed (the "
		    "Messages API has no JSON mode)", s);
		return PROVIDER_REJECTED;
	}
	if (json_object_object_get_ex(extra, "logit_bias", &v) &&
	    json_object_is_type(v, json_type_object) && json_object_object_length(v) > 0) {
		snprintf(err, errlen, "anthropic: logit_bias cannot be expressed");
		return PROVIDER_REJECTED;
	}
	if ((s = get_str(extra, "user")) != NULL ||
	    (s = get_str(extra, "safety_identifier")) != NULL) {
		if ((o = json_object_new_object()) == NULL)
			return PROVIDER_NOMEM;
		json_object_object_add(o, "user_id", json_object_new_string(s));
		json_object_object_add(doc, "metadata", o);
	}
	if (json_object_object_get_ex(extra, "parallel_tool_calls", &v) &&
	    !json_object_get_boolean(v) && json_object_object_get_ex(doc, "tools", NULL)) {
		if (!json_object_object_get_ex(doc, "tool_choice", &choice)) {
			if ((choice = json_object_new_object()) == NULL)
				return PROVIDER_NOMEM;
			json_object_object_add(choice, "type", json_object_new_string("auto"));
			json_object_object_add(doc, "tool_choice", choice);
		}
		/* NOTE: a choice of none takes no such flag: it calls nothing anyway. */
		if ((s = get_str(choice, "type")) != NULL && strcmp(s, "none") != 0)
			json_object_object_add(choice, "disable_parallel_tool_use",
			    json_object_new_boolean(1));
	}
	return PROVIDER_OK;
}

/*
 * Whether OpenAI's `stop` (a string or an array of strings) has one that
 * Anthropic refuses: empty or only whitespace ("stop_sequences: each stop
 * sequence must contain non-whitespace"). OpenAI takes them ("\n" is a
 * common stop).
 */
static int
blank_stop(struct json_object *stop)
{
	struct json_object *v;
	const char *s;
	size_t i, n = json_object_is_type(stop, json_type_array) ?
	    json_object_array_length(stop) : 1;

	for (i = 0; i < n; i++) {
		v = json_object_is_type(stop, json_type_array) ?
		    json_object_array_get_idx(stop, i) : stop;
		if (!json_object_is_type(v, json_type_string))
			continue;
		for (s = json_object_get_string(v); *s == ' ' || *s == '\t' || *s == '\n' ||
		    *s == '\r' || *s == '\f' || *s == '\v'; s++)
			;
		if (*s == '\0')
			return 1;
	}
	return 0;
}

/*
 * Anthropic refuses a request whose messages hold tool_use or tool_result
 * blocks but that defines no tools ("Requests which include tool_use or
 * tool_result blocks must define tools"): a later turn of a session that
 * called tools, sent without them. The names the history calls become tools
 * with an open object schema, and the tool choice none, so nothing is
 * called. Returns 0, or -1 out of memory.
 */
static int
history_tools(struct json_object *doc)
{
	struct json_object *msgs, *content, *b, *tools = NULL, *seen = NULL, *t, *choice;
	const char *type, *name;
	size_t i, j;

	if (json_object_object_get_ex(doc, "tools", NULL) ||
	    !json_object_object_get_ex(doc, "messages", &msgs))
		return 0;
	for (i = 0; i < json_object_array_length(msgs); i++) {
		if (!json_object_object_get_ex(json_object_array_get_idx(msgs, i), "content",
		    &content) || !json_object_is_type(content, json_type_array))
			continue;
		for (j = 0; j < json_object_array_length(content); j++) {
			b = json_object_array_get_idx(content, j);
			if ((type = get_str(b, "type")) == NULL || strcmp(type, "tool_use") != 0 ||
			    (name = get_str(b, "name")) == NULL)
				continue;
			if (seen == NULL && ((seen = json_object_new_object()) == NULL ||
			    (tools = json_object_new_array()) == NULL))
				goto oom;
			if (json_object_object_get_ex(seen, name, NULL))
				continue;
			json_object_object_add(seen, name, NULL);
			if ((t = json_object_new_object()) == NULL ||
			    json_object_array_add(tools, t) != 0) {
				json_object_put(t);
				goto oom;
			}
			json_object_object_add(t, "name", json_object_new_string(name));
			json_object_object_add(t, "input_schema",
			    json_tokener_parse("{\"type\":\"object\"}"));
		}
	}
	json_object_put(seen);
	if (tools == NULL)
		return 0;
	if ((choice = json_object_new_object()) == NULL) {
		json_object_put(tools);
		return -1;
	}
	json_object_object_add(choice, "type", json_object_new_string("none"));
	json_object_object_add(doc, "tools", tools);
	json_object_object_add(doc, "tool_choice", choice);
	return 0;
oom:
	json_object_put(seen);
	json_object_put(tools);
	return -1;
}

enum provider_status
provider_anthropic_body(const char *model, const struct llm_request *req, char **out, char *err,
    size_t errlen)
{
	struct json_object *doc = json_object_new_object(), *stop;
	const struct llm_params *pa = &req->params;
	enum provider_status st;

	*out = NULL;
	if (doc == NULL)
		return PROVIDER_NOMEM;
	json_object_object_add(doc, "model", json_object_new_string(model));
	json_object_object_add(doc, "max_tokens", json_object_new_int64(pa->max_tokens > 0 ?
	    pa->max_tokens : ANTHROPIC_MAX_TOKENS));
	st = translate(req->messages, doc, err, errlen);
	if (st == PROVIDER_OK && req->tools != NULL)
		st = translate_tools(req->tools, doc, err, errlen);
	if (st == PROVIDER_OK && req->tool_choice != NULL)
		st = translate_tool_choice(req->tool_choice, doc, err, errlen);
	if (st == PROVIDER_OK)
		st = translate_extra(pa->openai_extra, doc, err, errlen);
	if (st == PROVIDER_OK && history_tools(doc) != 0)
		st = PROVIDER_NOMEM;
	if (st != PROVIDER_OK)
		goto out;
	/*
	 * NOTE: dropping such a stop would change the answer (it ends at the first
	 * newline): no form for it here, another provider of the chain may serve it.
	 */
	if (pa->stop != NULL && blank_stop(pa->stop)) {
		snprintf(err, errlen, "anthropic: a stop sequence that is empty or only whitespace "
		    "(such as \"\\n\") cannot be sent: the Messages API refuses it");
		st = PROVIDER_UNSUPPORTED;
		goto out;
	}
	/*
	 * OpenAI's temperature goes to 2, Anthropic's to 1: above it, the most
	 * random Anthropic allows (it only tunes sampling, as seed does).
	 * NOTE: with both set, temperature alone goes: the newer models (Sonnet
	 * 4.5, Haiku 4.5, Opus 4.1 and later) answer 400 "temperature and top_p
	 * cannot both be specified", OpenAI clients often send both (top_p 1,
	 * which changes nothing, is a common default), and Anthropic advises
	 * tuning one of them only.
	 */
	if (pa->has_temperature)
		json_object_object_add(doc, "temperature",
		    json_object_new_double(pa->temperature > 1 ? 1 : pa->temperature));
	else if (pa->has_top_p)
		json_object_object_add(doc, "top_p", json_object_new_double(pa->top_p));
	if (pa->stop != NULL) {
		if (json_object_is_type(pa->stop, json_type_array))
			stop = json_object_get(pa->stop);
		else if ((stop = json_object_new_array()) != NULL)
			json_object_array_add(stop, json_object_get(pa->stop));
		json_object_object_add(doc, "stop_sequences", stop);
	}
	if (req->on_delta != NULL)
		json_object_object_add(doc, "stream", json_object_new_boolean(1));
	*out = strdup(json_object_to_json_string_ext(doc, JSON_PLAIN));
	if (*out == NULL)
		st = PROVIDER_NOMEM;
out:
	json_object_put(doc);
	return st;
}

enum provider_status
provider_anthropic_complete(const struct conf *conf, struct httpc *http,
    const struct llm_request *req, char *body, struct llm_result *res)
{
	char url[ANTHROPIC_URL_MAX], key[ANTHROPIC_KEY_HEADER_MAX];
	const char *headers[6];
	const char *model = req->model != NULL ? req->model : conf->anthropic_model;
	struct provider_call call;
	enum provider_status st;
	size_t n = 0;
	int klen;

	key[0] = '\0';
	res->provider = "anthropic";
	snprintf(res->model, sizeof(res->model), "%s", model);
	if (provider_url(url, sizeof(url), conf->anthropic_base_url, "/v1/messages") != 0) {
		snprintf(res->error, sizeof(res->error), "ANTHROPIC_BASE_URL is too long");
		free(body);
		return PROVIDER_ERROR;
	}
	headers[n++] = "Content-Type: application/json";
	headers[n++] = req->on_delta != NULL ? "Accept: text/event-stream" : "Accept: application/json";
	headers[n++] = "anthropic-version: " ANTHROPIC_VERSION;
	if (conf->anthropic_api_key != NULL) {
		klen = snprintf(key, sizeof(key), "x-api-key: %s", conf->anthropic_api_key);
		if (klen < 0 || (size_t)klen >= sizeof(key)) {
			snprintf(res->error, sizeof(res->error), "the Anthropic API key is too long");
			st = PROVIDER_ERROR;
			goto out;
		}
		headers[n++] = key;
	}
	headers[n] = NULL;
	memset(&call, 0, sizeof(call));
	call.url = url;
	call.headers = headers;
	call.body = body;
	call.timeout_s = conf->anthropic_timeout;
	call.connect_timeout_ms = conf->anthropic_connect_timeout_ms;
	call.first_token_timeout_ms = conf->anthropic_first_token_timeout_ms;
	call.max_retries = conf->anthropic_max_retries;
	st = provider_http_complete(http, &anthropic_wire, &call, req, res);
out:
	free(body);
	explicit_bzero(key, sizeof(key));
	return st;
}
