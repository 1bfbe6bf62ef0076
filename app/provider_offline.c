/* provider_offline: the built-in responder: deterministic, no network, not a language model. */
#include "config.h"

#include "conf.h"
#include "provider.h"
#include "utf8.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OFFLINE_QUOTE_MAX 80    /* bytes of a message quoted back */

/* Appends `s` quoted and shortened to OFFLINE_QUOTE_MAX bytes on a character boundary. */
static void
quote(struct buf *b, const char *s, size_t len)
{
	size_t n = utf8_prefix(s, len, OFFLINE_QUOTE_MAX);

	buf_puts(b, "\"");
	buf_append(b, s, n);
	buf_puts(b, n < len ? "...\"" : "\"");
}

static const char *
field(struct json_object *msg, const char *key, size_t *len)
{
	struct json_object *v;

	if (!json_object_object_get_ex(msg, key, &v) || !json_object_is_type(v, json_type_string)) {
		*len = 0;
		return "";
	}
	*len = (size_t)json_object_get_string_len(v);
	return json_object_get_string(v);
}

/*
 * The text of message `m`: its content, or the text of its parts joined as
 * they are into `tmp` (then media, which may be NULL, counts its other parts).
 */
static const char *
message_text(struct json_object *m, struct buf *tmp, size_t *len,
    size_t media[PROVIDER_MEDIA_KINDS])
{
	struct json_object *v;

	if (!json_object_object_get_ex(m, "content", &v) || !json_object_is_type(v, json_type_array))
		return field(m, "content", len);
	buf_reset(tmp, 4096);
	(void)provider_content_text(v, "", tmp, media);
	*len = tmp->len;
	return tmp->data != NULL ? tmp->data : "";
}

/*
 * What the last user message carried besides text, as " with 2 images,
 * 1 file and 1 audio clip, which it cannot see"; nothing when it had none.
 */
static void
attachments(struct buf *out, const size_t media[PROVIDER_MEDIA_KINDS])
{
	static const char *const names[PROVIDER_MEDIA_KINDS][2] = {
		{"image", "images"}, {"file", "files"}, {"audio clip", "audio clips"}
	};
	size_t k, kinds = 0, said = 0;

	for (k = 0; k < PROVIDER_MEDIA_KINDS; k++)
		kinds += media[k] > 0;
	if (kinds == 0)
		return;
	buf_puts(out, " with ");
	for (k = 0; k < PROVIDER_MEDIA_KINDS; k++) {
		if (media[k] == 0)
			continue;
		if (said > 0)
			buf_puts(out, said + 1 == kinds ? " and " : ", ");
		buf_printf(out, "%zu %s", media[k], names[k][media[k] != 1]);
		said++;
	}
	buf_puts(out, ", which it cannot see");
}

/*
 * The reply: says what it is, repeats the new message, and shows the
 * conversation's memory by quoting the first and the previous user messages.
 */
static void
compose(const struct llm_request *req, struct buf *out, long long *input_chars)
{
	size_t n = json_object_array_length(req->messages), i, len, users = 0;
	size_t media[PROVIDER_MEDIA_KINDS] = {0};
	/* The persona, the first, the one before the last and the last user message. */
	size_t pick[4] = {n, n, n, n};
	const char *text[4];
	size_t tlen[4];
	struct buf tmp[4] = {{0}}, scratch = {0};
	struct json_object *m;

	*input_chars = 0;
	for (i = 0; i < n; i++) {
		const char *role;

		m = json_object_array_get_idx(req->messages, i);
		role = field(m, "role", &len);
		(void)message_text(m, &scratch, &len, NULL);
		*input_chars += (long long)len;
		if (strcmp(role, "system") == 0 && pick[0] == n) {
			pick[0] = i;
		} else if (strcmp(role, "user") == 0) {
			if (users == 0)
				pick[1] = i;
			pick[2] = pick[3];
			pick[3] = i;
			users++;
		}
	}
	for (i = 0; i < 4; i++) {
		text[i] = "";
		tlen[i] = 0;
		if (pick[i] < n)
			text[i] = message_text(json_object_array_get_idx(req->messages, pick[i]), &tmp[i],
			    &tlen[i], i == 3 ? media : NULL);
	}
	buf_puts(out, "[offline] This is Valerie's built-in offline responder, not a language "
	    "model. You said: ");
	quote(out, text[3], tlen[3]);
	attachments(out, media);
	buf_printf(out, ". This is turn %d of this conversation", req->turn);
	if (users > 1) {
		buf_puts(out, "; it began with ");
		quote(out, text[1], tlen[1]);
		if (users > 2) {
			buf_puts(out, " and just before this you said ");
			quote(out, text[2], tlen[2]);
		}
	} else if (req->turn > 1) {
		buf_puts(out, "; earlier turns are outside the history window");
	}
	buf_puts(out, ".");
	if (pick[0] < n && tlen[0] > 0) {
		buf_puts(out, " Persona: ");
		quote(out, text[0], tlen[0]);
		buf_puts(out, ".");
	}
	buf_puts(out, " Set VALERIE_LLM_PROVIDER to openai or anthropic for real answers.");
	for (i = 0; i < 4; i++)
		buf_free(&tmp[i]);
	buf_free(&scratch);
}

/*
 * The test rule of BRIEF section 13: a last user message `/tool <agent>.<tool>
 * [json-args]` is answered with a call of that tool (arguments {} by
 * default); once its result is back (a last tool message), the answer quotes
 * it. Refused, as a plain reply, with VALERIE_ENV=production or without
 * agents. Returns 1 when the rule answered.
 */
static int
tool_rule(const struct conf *conf, const struct llm_request *req, struct llm_result *res)
{
	size_t n = json_object_array_length(req->messages), len, alen;
	struct json_object *last = n > 0 ? json_object_array_get_idx(req->messages, n - 1) : NULL;
	const char *role = field(last, "role", &len), *text, *name, *args;
	struct llm_tool_call *tc;
	char id[24];

	text = field(last, "content", &len);
	if (strcmp(role, "tool") == 0) {
		buf_puts(&res->text, "[offline] The tool answered: ");
		quote(&res->text, text, len);
		buf_puts(&res->text, ".");
		return 1;
	}
	if (strcmp(role, "user") != 0 || len < 6 || strncmp(text, "/tool ", 6) != 0)
		return 0;
	if (strcmp(conf->env, "production") == 0 || !req->agents) {
		buf_puts(&res->text, strcmp(conf->env, "production") == 0 ?
		    "[offline] The /tool test rule is off with VALERIE_ENV=production." :
		    "[offline] /tool needs an agent: define one with MCP_<NAME>_URL.");
		return 1;
	}
	for (name = text + 6; *name == ' '; name++)
		;
	for (args = name; *args != '\0' && *args != ' '; args++)
		;
	if (args == name || memchr(name, '.', (size_t)(args - name)) == NULL) {
		buf_puts(&res->text, "[offline] Write /tool <agent>.<tool> [json-args].");
		return 1;
	}
	alen = (size_t)(args - name);
	while (*args == ' ')
		args++;
	if ((tc = provider_tool_call(res, 0)) == NULL)
		return -1;
	snprintf(id, sizeof(id), "call_%08x%08x", arc4random(), arc4random());
	buf_puts(&tc->id, id);
	buf_append(&tc->name, name, alen);
	buf_puts(&tc->arguments, *args != '\0' ? args : "{}");
	snprintf(res->finish_reason, sizeof(res->finish_reason), "tool_calls");
	return 1;
}

enum provider_status
provider_offline_complete(const struct conf *conf, const struct llm_request *req,
    struct llm_result *res)
{
	long long input_chars;
	const char *p, *end, *word_end;
	int rule;

	res->provider = "offline";
	snprintf(res->model, sizeof(res->model), "offline");
	rule = tool_rule(conf, req, res);
	if (rule < 0)
		return PROVIDER_NOMEM;
	if (rule > 0) {
		res->input_tokens = 1;
		res->output_tokens = 1;
		if (req->on_delta != NULL && res->text.len > 0 &&
		    req->on_delta(req->ctx, res->text.data, res->text.len) != 0)
			return PROVIDER_CANCELLED;
		return PROVIDER_OK;
	}
	compose(req, &res->text, &input_chars);
	if (res->text.oom)
		return PROVIDER_NOMEM;
	res->input_tokens = input_chars / 4 + 1;
	res->output_tokens = 0;
	if (provider_sleep(req, conf->offline_delay_ms) != 0)
		return PROVIDER_CANCELLED;
	/* One token a word, with the spaces that follow it. */
	p = res->text.data;
	end = p + res->text.len;
	while (p < end) {
		word_end = p;
		while (word_end < end && *word_end != ' ')
			word_end++;
		while (word_end < end && *word_end == ' ')
			word_end++;
		res->output_tokens++;
		if (req->on_delta != NULL) {
			if (p != res->text.data && provider_sleep(req, conf->offline_token_ms) != 0)
				return PROVIDER_CANCELLED;
			if (req->on_delta(req->ctx, p, (size_t)(word_end - p)) != 0)
				return PROVIDER_CANCELLED;
		}
		p = word_end;
	}
	return PROVIDER_OK;
}
