/*
 * test_provider_body: the request bodies the network providers send, built in-process from
 * hand-made llm_requests and compared field by field: provider_anthropic_body (system and
 * merge rules, tool_use/tool_result blocks, tools, tool_choice, sampling settings, what is
 * refused), provider_openai_body (passed through, and byte for byte what the json-c object
 * it once built would have written), OpenAI's other fields in each, and
 * the tool call list of a result (provider_tool_call, provider_tool_calls_json,
 * provider_result_free).
 *
 * JSON in this file is written with single quotes, turned into double quotes by J(): none
 * of the texts has an apostrophe.
 */
#include "config.h"

#include "check.h"
#include "provider.h"

#include <json-c/json.h>
#include <stdlib.h>

#define MODEL "claude-test"

/* `text` with ' turned into ", parsed. Caller puts. */
static struct json_object *
J(const char *text)
{
	char *s = strdup(text), *p;
	struct json_object *o;

	if (s == NULL)
		abort();
	for (p = s; *p != '\0'; p++)
		if (*p == '\'')
			*p = '"';
	o = json_tokener_parse(s);
	if (o == NULL) {
		fprintf(stderr, "test_provider_body: bad JSON in the test: %s\n", text);
		abort();
	}
	free(s);
	return o;
}

/*
 * The member at `path` of `doc` (borrowed): keys and array indexes separated by dots,
 * "messages.0.content.1.input"; "" is `doc` itself. NULL when absent (or JSON null).
 */
static struct json_object *
at(struct json_object *doc, const char *path)
{
	char key[128];
	const char *dot;
	size_t n;
	char *end;
	long idx;

	while (doc != NULL && *path != '\0') {
		dot = strchr(path, '.');
		n = dot != NULL ? (size_t)(dot - path) : strlen(path);
		if (n >= sizeof(key))
			return NULL;
		memcpy(key, path, n);
		key[n] = '\0';
		if (json_object_is_type(doc, json_type_array)) {
			idx = strtol(key, &end, 10);
			if (*end != '\0' || idx < 0 || (size_t)idx >= json_object_array_length(doc))
				return NULL;
			doc = json_object_array_get_idx(doc, (size_t)idx);
		} else if (!json_object_object_get_ex(doc, key, &doc)) {
			return NULL;
		}
		path += n + (dot != NULL);
	}
	return doc;
}

static int
has(struct json_object *doc, const char *path)
{
	struct json_object *parent = doc, *v;
	const char *last = strrchr(path, '.');
	char head[256];

	if (last != NULL) {
		snprintf(head, sizeof(head), "%.*s", (int)(last - path), path);
		parent = at(doc, head);
		last++;
	} else {
		last = path;
	}
	return parent != NULL && json_object_is_type(parent, json_type_object) &&
	    json_object_object_get_ex(parent, last, &v);
}

static const char *
str_at(struct json_object *doc, const char *path)
{
	struct json_object *v = at(doc, path);

	return v != NULL && json_object_is_type(v, json_type_string) ? json_object_get_string(v) :
	    NULL;
}

static const char *
show(struct json_object *o)
{
	return o != NULL ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN) : "(absent)";
}

/* Whether the member at `path` equals the JSON `want` (single-quoted), whatever the key order. */
static int
json_is(struct json_object *doc, const char *path, const char *want)
{
	struct json_object *w = J(want);
	int eq = json_object_equal(at(doc, path), w);

	json_object_put(w);
	return eq;
}

#define CHECK_JSON(doc, path, want) do { \
	if (!json_is((doc), (path), (want))) { \
		fprintf(stderr, "%s:%d: %s is %s, want %s\n", __FILE__, __LINE__, (path), \
		    show(at((doc), (path))), (want)); \
		check_failures++; \
	} \
} while (0)

#define CHECK_ABSENT(doc, path) do { \
	if (has((doc), (path))) { \
		fprintf(stderr, "%s:%d: %s is %s, want it absent\n", __FILE__, __LINE__, (path), \
		    show(at((doc), (path)))); \
		check_failures++; \
	} \
} while (0)

/*
 * The tool_use_id of the first tool_result in the Anthropic `messages` of `doc` that does
 * not answer a tool_use of the message just before it (Anthropic refuses such a body:
 * "unexpected `tool_use_id` found in `tool_result` blocks"); NULL when there is none.
 */
static const char *
orphan_result(struct json_object *doc)
{
	struct json_object *msgs = at(doc, "messages"), *prev = NULL, *content, *b, *u;
	const char *id, *t;
	size_t i, j, k;
	int found;

	for (i = 0; msgs != NULL && i < json_object_array_length(msgs); i++) {
		content = at(json_object_array_get_idx(msgs, i), "content");
		for (j = 0; content != NULL && json_object_is_type(content, json_type_array) &&
		    j < json_object_array_length(content); j++) {
			b = json_object_array_get_idx(content, j);
			if ((t = str_at(b, "type")) == NULL || strcmp(t, "tool_result") != 0)
				continue;
			id = str_at(b, "tool_use_id");
			found = 0;
			for (k = 0; id != NULL && prev != NULL &&
			    json_object_is_type(prev, json_type_array) &&
			    k < json_object_array_length(prev); k++) {
				u = json_object_array_get_idx(prev, k);
				if ((t = str_at(u, "type")) != NULL && strcmp(t, "tool_use") == 0 &&
				    str_at(u, "id") != NULL && strcmp(str_at(u, "id"), id) == 0)
					found = 1;
			}
			if (!found)
				return id != NULL ? id : "(no id)";
		}
		prev = content;
	}
	return NULL;
}

static int
dummy_delta(void *ctx, const char *text, size_t len)
{
	(void)ctx;
	(void)text;
	(void)len;
	return 0;
}

/* A request over `messages` (owned by the caller), nothing else set. */
static void
request(struct llm_request *req, struct json_object *messages)
{
	memset(req, 0, sizeof(*req));
	req->messages = messages;
}

/*
 * provider_anthropic_body of `req`: the parsed body (caller puts) or NULL, with the status
 * in *st and the error text in err. Checks that *out is set exactly when it is OK.
 */
static struct json_object *
anthropic(const struct llm_request *req, enum provider_status *st, char *err, size_t errlen)
{
	char *body = (char *)"not touched";
	struct json_object *doc = NULL;

	err[0] = '\0';
	*st = provider_anthropic_body(MODEL, req, &body, err, errlen);
	if (*st == PROVIDER_OK) {
		CHECK(body != NULL);
		if (body != NULL && (doc = json_tokener_parse(body)) == NULL)
			fprintf(stderr, "the body is not JSON: %s\n", body);
		CHECK(doc != NULL);
		free(body);
	} else {
		CHECK(body == NULL);
	}
	return doc;
}

/* The Anthropic body for `messages` (single-quoted JSON) alone; must be OK. Caller puts. */
static struct json_object *
anthropic_msgs(const char *messages)
{
	struct llm_request req;
	enum provider_status st;
	char err[256];
	struct json_object *doc;

	request(&req, J(messages));
	doc = anthropic(&req, &st, err, sizeof(err));
	if (st != PROVIDER_OK)
		fprintf(stderr, "messages %s: status %d (%s), want OK\n", messages, (int)st, err);
	CHECK_INT(st, PROVIDER_OK);
	json_object_put(req.messages);
	return doc;
}

/*
 * `messages` (and `tools`, `choice`, may be NULL) must be refused with status `want`
 * and an error naming `why`.
 */
static void
refused_as(enum provider_status want, const char *messages, const char *tools,
    const char *choice, const char *why)
{
	struct llm_request req;
	enum provider_status st;
	char err[256];
	struct json_object *doc;

	request(&req, J(messages));
	req.tools = tools != NULL ? J(tools) : NULL;
	req.tool_choice = choice != NULL ? J(choice) : NULL;
	doc = anthropic(&req, &st, err, sizeof(err));
	if (st != want)
		fprintf(stderr, "messages %s tools %s tool_choice %s: status %d, want %d\n",
		    messages, tools ? tools : "-", choice ? choice : "-", (int)st, (int)want);
	CHECK_INT(st, want);
	CHECK(doc == NULL);
	CHECK(err[0] != '\0');
	CHECK_CONTAINS(err, why);
	json_object_put(doc);
	json_object_put(req.messages);
	json_object_put(req.tools);
	json_object_put(req.tool_choice);
}

/* Refused: the request cannot be expressed (400, the chain ends). */
static void
anthropic_refused(const char *messages, const char *tools, const char *choice, const char *why)
{
	refused_as(PROVIDER_REJECTED, messages, tools, choice, why);
}

/* Unsupported: the Messages API has no form for it, another provider may take it. */
static void
anthropic_unsupported(const char *messages, const char *why)
{
	refused_as(PROVIDER_UNSUPPORTED, messages, NULL, NULL, why);
}

static void
test_anthropic_merge(void)
{
	struct json_object *d;

	/* The plain case: model, max_tokens, one user message as a string; no extras. */
	d = anthropic_msgs("[{'role':'user','content':'hi'}]");
	CHECK_STR(str_at(d, "model"), MODEL);
	CHECK_JSON(d, "messages", "[{'role':'user','content':'hi'}]");
	CHECK_ABSENT(d, "system");
	CHECK_ABSENT(d, "tools");
	CHECK_ABSENT(d, "tool_choice");
	CHECK_ABSENT(d, "temperature");
	CHECK_ABSENT(d, "top_p");
	CHECK_ABSENT(d, "stop_sequences");
	CHECK_ABSENT(d, "stream");
	json_object_put(d);

	/* System and developer messages, wherever they are, go to `system`, blank-line joined. */
	d = anthropic_msgs("[{'role':'system','content':'Be brief.'},"
	    "{'role':'developer','content':'Answer in French.'},"
	    "{'role':'user','content':'hi'},"
	    "{'role':'system','content':'Late rule.'}]");
	CHECK_STR(str_at(d, "system"), "Be brief.\n\nAnswer in French.\n\nLate rule.");
	CHECK_JSON(d, "messages", "[{'role':'user','content':'hi'}]");
	json_object_put(d);

	/* An empty system message adds no blank line. */
	d = anthropic_msgs("[{'role':'system','content':''},{'role':'system','content':'One.'},"
	    "{'role':'user','content':'hi'}]");
	CHECK_STR(str_at(d, "system"), "One.");
	json_object_put(d);

	/* Consecutive user messages merge, then consecutive assistant ones: roles alternate. */
	d = anthropic_msgs("[{'role':'user','content':'a'},{'role':'user','content':'b'},"
	    "{'role':'assistant','content':'c'},{'role':'assistant','content':'d'},"
	    "{'role':'user','content':'e'}]");
	CHECK_JSON(d, "messages", "[{'role':'user','content':'a\\n\\nb'},"
	    "{'role':'assistant','content':'c\\n\\nd'},{'role':'user','content':'e'}]");
	json_object_put(d);

	/* Empty messages (content '', null, absent) are dropped. */
	d = anthropic_msgs("[{'role':'user','content':''},{'role':'user','content':'a'},"
	    "{'role':'user','content':null},{'role':'user'},{'role':'assistant','content':'b'},"
	    "{'role':'user','content':'c'}]");
	CHECK_JSON(d, "messages", "[{'role':'user','content':'a'},"
	    "{'role':'assistant','content':'b'},{'role':'user','content':'c'}]");
	json_object_put(d);

	/*
	 * An empty assistant message between two user messages is dropped, and the user
	 * messages around it are consecutive: they must merge, or the body has two user
	 * messages in a row (what the merging is there to prevent).
	 */
	d = anthropic_msgs("[{'role':'user','content':'a'},{'role':'assistant','content':''},"
	    "{'role':'user','content':'b'}]");
	CHECK_JSON(d, "messages", "[{'role':'user','content':'a\\n\\nb'}]");
	json_object_put(d);
	d = anthropic_msgs("[{'role':'user','content':'a'},"
	    "{'role':'assistant','content':null,'tool_calls':[]},{'role':'user','content':'b'}]");
	CHECK_JSON(d, "messages", "[{'role':'user','content':'a\\n\\nb'}]");
	json_object_put(d);

	/* A leading assistant message is dropped (Anthropic wants the user first). */
	d = anthropic_msgs("[{'role':'system','content':'S'},{'role':'assistant','content':'Hello!'},"
	    "{'role':'assistant','content':'Anyone?'},{'role':'user','content':'hi'}]");
	CHECK_STR(str_at(d, "system"), "S");
	CHECK_JSON(d, "messages", "[{'role':'user','content':'hi'}]");
	json_object_put(d);

	/* Content as an array of text parts: the texts joined by a blank line. */
	d = anthropic_msgs("[{'role':'user','content':[{'type':'text','text':'one'},"
	    "{'type':'text','text':'two'}]},{'role':'user','content':'three'}]");
	CHECK_JSON(d, "messages", "[{'role':'user','content':'one\\n\\ntwo\\n\\nthree'}]");
	json_object_put(d);
	d = anthropic_msgs("[{'role':'system','content':[{'type':'text','text':'S1'},"
	    "{'type':'text','text':'S2'}]},{'role':'user','content':'hi'}]");
	CHECK_STR(str_at(d, "system"), "S1\n\nS2");
	json_object_put(d);

	/* What cannot be sent: refused with a reason, no body. */
	anthropic_refused("[]", NULL, NULL, "no user message");
	anthropic_refused("[{'role':'system','content':'only a system prompt'}]", NULL, NULL,
	    "no user message");
	anthropic_refused("[{'role':'assistant','content':'only me'}]", NULL, NULL,
	    "no user message");
	anthropic_refused("[{'role':'user','content':''}]", NULL, NULL, "no user message");
	anthropic_refused("[{'role':'user','content':'hi'},{'content':'no role'}]", NULL, NULL,
	    "messages[1]");
	anthropic_refused("[{'role':'user','content':'hi'},{'role':'wizard','content':'x'}]", NULL,
	    NULL, "wizard");
	anthropic_refused("[{'role':'function','name':'f','content':'x'}]", NULL, NULL, "function");
	anthropic_refused("[{'role':'user','content':42}]", NULL, NULL, "messages[0]");
	anthropic_refused("[{'role':'user','content':[{'type':'image_url','image_url':{'url':'x'}}]}]",
	    NULL, NULL, "messages[0]");
	anthropic_refused("{'role':'user','content':'not a list'}", NULL, NULL, "not a list");
}

/* Images: OpenAI's image_url parts as Anthropic's image blocks, in their place. */
static void
test_anthropic_images(void)
{
	struct json_object *d;

	d = anthropic_msgs("[{'role':'user','content':[{'type':'text','text':'a'},"
	    "{'type':'image_url','image_url':{'url':'data:image/webp;base64,UklGRg==','detail':'low'}},"
	    "{'type':'text','text':'b'},"
	    "{'type':'image_url','image_url':{'url':'HTTPS://x.example/p.gif'}}]}]");
	CHECK_JSON(d, "messages", "[{'role':'user','content':[{'type':'text','text':'a'},"
	    "{'type':'image','source':{'type':'base64','media_type':'image/webp','data':'UklGRg=='}},"
	    "{'type':'text','text':'b'},"
	    "{'type':'image','source':{'type':'url','url':'HTTPS://x.example/p.gif'}}]}]");
	json_object_put(d);

	/* After a tool result: the result first, then the image, then the text after it. */
	d = anthropic_msgs("[{'role':'user','content':'call f'},"
	    "{'role':'assistant','content':null,'tool_calls':["
	    "{'id':'t1','type':'function','function':{'name':'f','arguments':'{}'}}]},"
	    "{'role':'tool','tool_call_id':'t1','content':'done'},"
	    "{'role':'user','content':[{'type':'image_url','image_url':"
	    "{'url':'data:image/jpg;base64,/9j/'}},{'type':'text','text':'and this?'}]}]");
	CHECK_JSON(d, "messages.2", "{'role':'user','content':["
	    "{'type':'tool_result','tool_use_id':'t1','content':'done'},"
	    "{'type':'image','source':{'type':'base64','media_type':'image/jpeg','data':'/9j/'}},"
	    "{'type':'text','text':'and this?'}]}");
	json_object_put(d);

	/* An image alone is a message; text parts around no image stay one text. */
	d = anthropic_msgs("[{'role':'user','content':[{'type':'image_url','image_url':"
	    "{'url':'http://x.example/a.png'}}]}]");
	CHECK_JSON(d, "messages", "[{'role':'user','content':["
	    "{'type':'image','source':{'type':'url','url':'http://x.example/a.png'}}]}]");
	json_object_put(d);

	anthropic_refused("[{'role':'user','content':[{'type':'image_url','image_url':"
	    "{'url':'data:image/bmp;base64,Qk0='}}]}]", NULL, NULL, "messages[0]");
	anthropic_refused("[{'role':'user','content':[{'type':'image_url','image_url':"
	    "{'url':'data:image/png;base64,abc'}}]}]", NULL, NULL, "messages[0]");
	anthropic_refused("[{'role':'user','content':[{'type':'image_url','image_url':{}}]}]",
	    NULL, NULL, "no url");
	anthropic_refused("[{'role':'user','content':'hi'},{'role':'assistant','content':["
	    "{'type':'image_url','image_url':{'url':'http://x.example/a.png'}}]}]", NULL, NULL,
	    "only user messages");
}

/* provider_image_url: what an image part's URL is. */
static void
test_image_url(void)
{
	static const struct {
		const char *url;
		enum provider_image kind;
		const char *media;
	} cases[] = {
		{"https://a.example/x.png", PROVIDER_IMAGE_HTTP, NULL},
		{"http://a.example/x.png?q=1#f", PROVIDER_IMAGE_HTTP, NULL},
		{"https://", PROVIDER_IMAGE_BAD, NULL},
		{"https://a.example/x y", PROVIDER_IMAGE_BAD, NULL},
		{"https://a.example/\x7f", PROVIDER_IMAGE_BAD, NULL},
		{"ftp://a.example/x.png", PROVIDER_IMAGE_BAD, NULL},
		{"file:///etc/passwd", PROVIDER_IMAGE_BAD, NULL},
		{"data:image/png;base64,iVBORw==", PROVIDER_IMAGE_DATA, "image/png"},
		{"data:image/PNG;BASE64,iVBORw==", PROVIDER_IMAGE_DATA, "image/png"},
		{"data:image/jpg;base64,/9j/", PROVIDER_IMAGE_DATA, "image/jpeg"},
		{"data:image/jpeg;base64,/9j/4A==", PROVIDER_IMAGE_DATA, "image/jpeg"},
		{"data:image/gif;base64,R0lGODlh", PROVIDER_IMAGE_DATA, "image/gif"},
		{"data:image/webp;base64,UklGRg==", PROVIDER_IMAGE_DATA, "image/webp"},
		{"data:image/webp;base64,UklGR===", PROVIDER_IMAGE_BAD, NULL},
		{"data:image/webp;base64,Uk=lGRg=", PROVIDER_IMAGE_BAD, NULL},
		{"data:image/png;base64,", PROVIDER_IMAGE_BAD, NULL},
		{"data:image/png;base64,abc", PROVIDER_IMAGE_BAD, NULL},
		{"data:image/png;base64,ab c", PROVIDER_IMAGE_BAD, NULL},
		{"data:image/png,iVBORw==", PROVIDER_IMAGE_BAD, NULL},
		{"data:image/pngx;base64,iVBORw==", PROVIDER_IMAGE_BAD, NULL},
		{"data:image/svg+xml;base64,PHN2Zz4=", PROVIDER_IMAGE_BAD, NULL},
		{"data:text/plain;base64,aGk=", PROVIDER_IMAGE_BAD, NULL},
		{"data:image/png;base64", PROVIDER_IMAGE_BAD, NULL},
		{"", PROVIDER_IMAGE_BAD, NULL},
	};
	char media[PROVIDER_IMAGE_TYPE_MAX];
	size_t i, data;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *u = cases[i].url;

		media[0] = '\0';
		data = 0;
		CHECK_INT(provider_image_url(u, strlen(u), media, &data), cases[i].kind);
		if (cases[i].media != NULL) {
			CHECK_STR(media, cases[i].media);
			CHECK(data == (size_t)(strchr(u, ',') + 1 - u));
		}
	}
}

/* Files and audio: a PDF becomes a document block in order; what Anthropic cannot take is refused. */
static void
test_anthropic_files(void)
{
	struct json_object *d;

	d = anthropic_msgs("[{'role':'user','content':[{'type':'text','text':'read'},"
	    "{'type':'file','file':{'filename':'q3 report.pdf','file_data':"
	    "'data:application/pdf;base64,JVBERi0='}},{'type':'text','text':'and'},"
	    "{'type':'file','file':{'file_data':'DATA:application/PDF;base64,JVBE'}},"
	    "{'type':'image_url','image_url':{'url':'http://x.example/a.png'}}]}]");
	CHECK_JSON(d, "messages", "[{'role':'user','content':[{'type':'text','text':'read'},"
	    "{'type':'document','source':{'type':'base64','media_type':'application/pdf',"
	    "'data':'JVBERi0='},'title':'q3 report.pdf'},{'type':'text','text':'and'},"
	    "{'type':'document','source':{'type':'base64','media_type':'application/pdf',"
	    "'data':'JVBE'}},"
	    "{'type':'image','source':{'type':'url','url':'http://x.example/a.png'}}]}]");
	json_object_put(d);

	/* In the history (before the last assistant message) they become notes, in order. */
	d = anthropic_msgs("[{'role':'user','content':[{'type':'text','text':'keep'},"
	    "{'type':'input_audio','input_audio':{'data':'UklG','format':'wav'}},"
	    "{'type':'file','file':{'file_id':'file-1'}}]},{'role':'assistant','content':'ok'},"
	    "{'role':'user','content':'and now?'}]");
	CHECK_JSON(d, "messages.0", "{'role':'user','content':'keep\\n\\n[an audio clip sent "
	    "earlier, which this model cannot hear]\\n\\n[a file sent earlier as an OpenAI "
	    "file_id, which this model cannot read]'}");
	json_object_put(d);

	anthropic_unsupported("[{'role':'user','content':[{'type':'file','file':{'file_id':'file-1'}}]}]",
	    "file_id");
	anthropic_unsupported("[{'role':'user','content':'a'},{'role':'assistant','content':'b'},"
	    "{'role':'user','content':[{'type':'input_audio','input_audio':{'data':'UklG',"
	    "'format':'mp3'}}]}]", "new message carries audio");
	/*
	 * The new message stays new through an agent's or a client's tool steps and a
	 * prefill: its audio is not turned into a note there.
	 */
	anthropic_unsupported("[{'role':'user','content':[{'type':'text','text':'hear'},"
	    "{'type':'input_audio','input_audio':{'data':'UklG','format':'wav'}}]},"
	    "{'role':'assistant','content':null,'tool_calls':[{'id':'call_1','type':'function',"
	    "'function':{'name':'f','arguments':'{}'}}]},"
	    "{'role':'tool','tool_call_id':'call_1','content':'done'}]", "audio");
	anthropic_unsupported("[{'role':'user','content':'a'},{'role':'user','content':["
	    "{'type':'input_audio','input_audio':{'data':'UklG','format':'wav'}}]},"
	    "{'role':'assistant','content':'Transcript:'}]", "audio");
	anthropic_refused("[{'role':'user','content':[{'type':'file','file':"
	    "{'file_data':'data:image/png;base64,iVBORw=='}}]}]", NULL, NULL, "PDF");
	anthropic_unsupported("[{'role':'user','content':[{'type':'text','text':'hear'},"
	    "{'type':'input_audio','input_audio':{'data':'UklGRg==','format':'wav'}}]}]", "audio");
	anthropic_refused("[{'role':'user','content':'hi'},{'role':'assistant','content':["
	    "{'type':'file','file':{'file_data':'data:application/pdf;base64,JVBE'}}]}]", NULL, NULL,
	    "only user messages");
}

/* provider_file_data and provider_base64. */
static void
test_file_data(void)
{
	static const struct {
		const char *s;
		int ok;
	} cases[] = {
		{"data:application/pdf;base64,JVBERi0xLjc=", 1},
		{"Data:Application/PDF;Base64,JVBE", 1},
		{"data:application/pdf;base64,", 0},
		{"data:application/pdf;base64,JVB", 0},
		{"data:application/pdf;base64,JV=E", 0},
		{"data:application/pdf,JVBE", 0},
		{"data:application/x-pdf;base64,JVBE", 0},
		{"data:image/png;base64,iVBORw==", 0},
		{"https://x.example/a.pdf", 0},
		{"", 0},
	};
	size_t i, data;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		data = 0;
		CHECK_INT(provider_file_data(cases[i].s, strlen(cases[i].s), &data), cases[i].ok);
		if (cases[i].ok)
			CHECK(data == (size_t)(strchr(cases[i].s, ',') + 1 - cases[i].s));
	}
	CHECK_INT(provider_base64("UklGRg==", 8), 1);
	CHECK_INT(provider_base64("UklGR===", 8), 0);
	CHECK_INT(provider_base64("UklG", 4), 1);
	CHECK_INT(provider_base64("Ukl", 3), 0);
	CHECK_INT(provider_base64("Uk\nG", 4), 0);
	CHECK_INT(provider_base64("", 0), 0);
}

static void
test_anthropic_tool_blocks(void)
{
	struct json_object *d;

	/* An assistant's tool calls (content null): tool_use blocks, input parsed. */
	d = anthropic_msgs("[{'role':'user','content':'weather?'},"
	    "{'role':'assistant','content':null,'tool_calls':["
	    "{'id':'call_1','type':'function','function':{'name':'get_weather',"
	    "'arguments':'{\\'city\\':\\'Paris\\',\\'days\\':[1,2]}'}},"
	    "{'id':'call_2','type':'function','function':{'name':'get_time','arguments':''}}]},"
	    "{'role':'tool','tool_call_id':'call_1','content':'sunny'},"
	    "{'role':'tool','tool_call_id':'call_2','content':'noon'}]");
	CHECK_JSON(d, "messages", "[{'role':'user','content':'weather?'},"
	    "{'role':'assistant','content':["
	    "{'type':'tool_use','id':'call_1','name':'get_weather','input':{'city':'Paris','days':[1,2]}},"
	    "{'type':'tool_use','id':'call_2','name':'get_time','input':{}}]},"
	    "{'role':'user','content':["
	    "{'type':'tool_result','tool_use_id':'call_1','content':'sunny'},"
	    "{'type':'tool_result','tool_use_id':'call_2','content':'noon'}]}]");
	CHECK(orphan_result(d) == NULL);
	json_object_put(d);

	/* Text and calls: the text block first; a following user text comes after the results. */
	d = anthropic_msgs("[{'role':'user','content':'call f'},"
	    "{'role':'assistant','content':'Let me look.','tool_calls':["
	    "{'id':'t1','type':'function','function':{'name':'f','arguments':'{}'}}]},"
	    "{'role':'tool','tool_call_id':'t1','content':[{'type':'text','text':'42'}]},"
	    "{'role':'user','content':'and then?'}]");
	CHECK_JSON(d, "messages.1", "{'role':'assistant','content':["
	    "{'type':'text','text':'Let me look.'},"
	    "{'type':'tool_use','id':'t1','name':'f','input':{}}]}");
	CHECK_JSON(d, "messages.2", "{'role':'user','content':["
	    "{'type':'tool_result','tool_use_id':'t1','content':'42'},"
	    "{'type':'text','text':'and then?'}]}");
	CHECK_INT(json_object_array_length(at(d, "messages")), 3);
	json_object_put(d);

	/* Consecutive assistant messages merge: both texts first, then every tool_use. */
	d = anthropic_msgs("[{'role':'user','content':'go'},"
	    "{'role':'assistant','content':'First.','tool_calls':["
	    "{'id':'a','type':'function','function':{'name':'f','arguments':'{\\'n\\':1}'}}]},"
	    "{'role':'assistant','content':'Second.','tool_calls':["
	    "{'id':'b','type':'function','function':{'name':'g','arguments':'{\\'n\\':2}'}}]},"
	    "{'role':'tool','tool_call_id':'a','content':'A'},"
	    "{'role':'tool','tool_call_id':'b','content':'B'}]");
	CHECK_JSON(d, "messages.1", "{'role':'assistant','content':["
	    "{'type':'text','text':'First.\\n\\nSecond.'},"
	    "{'type':'tool_use','id':'a','name':'f','input':{'n':1}},"
	    "{'type':'tool_use','id':'b','name':'g','input':{'n':2}}]}");
	CHECK_JSON(d, "messages.2.content", "[{'type':'tool_result','tool_use_id':'a','content':'A'},"
	    "{'type':'tool_result','tool_use_id':'b','content':'B'}]");
	json_object_put(d);

	/* tool_calls null or absent on an assistant message: a plain text message. */
	d = anthropic_msgs("[{'role':'user','content':'x'},"
	    "{'role':'assistant','content':'y','tool_calls':null},{'role':'user','content':'z'}]");
	CHECK_JSON(d, "messages", "[{'role':'user','content':'x'},"
	    "{'role':'assistant','content':'y'},{'role':'user','content':'z'}]");
	json_object_put(d);

	/* A tool result with empty content: a tool_result block all the same, no content. */
	d = anthropic_msgs("[{'role':'user','content':'call f'},"
	    "{'role':'assistant','content':null,'tool_calls':["
	    "{'id':'t1','type':'function','function':{'name':'f','arguments':'{}'}}]},"
	    "{'role':'tool','tool_call_id':'t1','content':''}]");
	CHECK_JSON(d, "messages.2", "{'role':'user','content':["
	    "{'type':'tool_result','tool_use_id':'t1'}]}");
	json_object_put(d);

	/*
	 * A leading assistant message is dropped; when it called tools, the results of those
	 * calls must not stay behind as tool_result blocks answering nothing (Anthropic
	 * refuses the body; the same messages are fine for OpenAI).
	 */
	d = anthropic_msgs("[{'role':'system','content':'S'},"
	    "{'role':'assistant','content':null,'tool_calls':["
	    "{'id':'c0','type':'function','function':{'name':'f','arguments':'{}'}}]},"
	    "{'role':'tool','tool_call_id':'c0','content':'r'},{'role':'user','content':'x'}]");
	CHECK(at(d, "messages.0") != NULL);
	CHECK_STR(str_at(d, "messages.0.role"), "user");
	CHECK(orphan_result(d) == NULL);
	CHECK_JSON(d, "messages", "[{'role':'user','content':'x'}]");
	json_object_put(d);

	/* Arguments that are not a JSON object, calls without id or name, results without id. */
#define CALL(args) "[{'role':'user','content':'u'},{'role':'assistant','content':null," \
	"'tool_calls':[{'id':'c1','type':'function','function':{'name':'f','arguments':" args \
	"}}]},{'role':'tool','tool_call_id':'c1','content':'r'}]"
	anthropic_refused(CALL("'[1]'"), NULL, NULL, "not a JSON object");
	anthropic_refused(CALL("'nope'"), NULL, NULL, "not a JSON object");
	anthropic_refused(CALL("'42'"), NULL, NULL, "not a JSON object");
	anthropic_refused(CALL("'{\\'a\\':'"), NULL, NULL, "not a JSON object");
#undef CALL
	anthropic_refused("[{'role':'user','content':'u'},{'role':'assistant','content':null,"
	    "'tool_calls':[{'type':'function','function':{'name':'f','arguments':'{}'}}]}]",
	    NULL, NULL, "id");
	anthropic_refused("[{'role':'user','content':'u'},{'role':'assistant','content':null,"
	    "'tool_calls':[{'id':'c1','type':'function','function':{'arguments':'{}'}}]}]",
	    NULL, NULL, "name");
	anthropic_refused("[{'role':'user','content':'u'},{'role':'assistant','content':null,"
	    "'tool_calls':{'id':'c1'}}]", NULL, NULL, "tool_calls");
	anthropic_refused("[{'role':'user','content':'u'},{'role':'assistant','content':null,"
	    "'tool_calls':[{'id':'c1','type':'function','function':{'name':'f','arguments':'{}'}}]},"
	    "{'role':'tool','content':'r'}]", NULL, NULL, "tool_call_id");
}

/* The Anthropic body of one user message with `tools` and `choice` (either may be NULL). */
static struct json_object *
anthropic_tools(const char *tools, const char *choice)
{
	struct llm_request req;
	enum provider_status st;
	char err[256];
	struct json_object *doc;

	request(&req, J("[{'role':'user','content':'hi'}]"));
	req.tools = tools != NULL ? J(tools) : NULL;
	req.tool_choice = choice != NULL ? J(choice) : NULL;
	doc = anthropic(&req, &st, err, sizeof(err));
	if (st != PROVIDER_OK)
		fprintf(stderr, "tools %s tool_choice %s: status %d (%s), want OK\n",
		    tools ? tools : "-", choice ? choice : "-", (int)st, err);
	CHECK_INT(st, PROVIDER_OK);
	json_object_put(req.messages);
	json_object_put(req.tools);
	json_object_put(req.tool_choice);
	return doc;
}

static void
test_anthropic_tools(void)
{
	struct json_object *d;
	const char *one = "[{'type':'function','function':{'name':'f'}}]";
	const char *hi = "[{'role':'user','content':'hi'}]";

	d = anthropic_tools("[{'type':'function','function':{'name':'get_weather',"
	    "'description':'The weather in a city.','parameters':{'type':'object',"
	    "'properties':{'city':{'type':'string'}},'required':['city']}}},"
	    "{'type':'function','function':{'name':'get_time'}},"
	    "{'type':'function','function':{'name':'noop','parameters':null}}]", NULL);
	CHECK_JSON(d, "tools", "[{'name':'get_weather','description':'The weather in a city.',"
	    "'input_schema':{'type':'object','properties':{'city':{'type':'string'}},"
	    "'required':['city']}},"
	    "{'name':'get_time','input_schema':{'type':'object','properties':{}}},"
	    "{'name':'noop','input_schema':{'type':'object','properties':{}}}]");
	CHECK_ABSENT(d, "tool_choice");
	json_object_put(d);

	d = anthropic_tools(one, "'auto'");
	CHECK_JSON(d, "tool_choice", "{'type':'auto'}");
	json_object_put(d);
	d = anthropic_tools(one, "'required'");
	CHECK_JSON(d, "tool_choice", "{'type':'any'}");
	json_object_put(d);
	d = anthropic_tools(one, "'none'");
	CHECK_JSON(d, "tool_choice", "{'type':'none'}");
	json_object_put(d);
	d = anthropic_tools(one, "{'type':'function','function':{'name':'f'}}");
	CHECK_JSON(d, "tool_choice", "{'type':'tool','name':'f'}");
	json_object_put(d);

	anthropic_refused(hi, one, "'sometimes'", "tool_choice");
	anthropic_refused(hi, one, "{'type':'function'}", "tool_choice");
	anthropic_refused(hi, one, "{'type':'function','function':{'name':7}}", "tool_choice");
	anthropic_refused(hi, one, "42", "tool_choice");
	anthropic_refused(hi, "[{'type':'function','function':{'description':'no name'}}]", NULL,
	    "tools[0]");
	anthropic_refused(hi, "[{'type':'function'}]", NULL, "tools[0]");
	anthropic_refused(hi, "{'type':'function','function':{'name':'f'}}", NULL, "tools");
}

static void
test_anthropic_params(void)
{
	struct llm_request req;
	enum provider_status st;
	char err[256];
	struct json_object *d;

	/* Nothing set: max_tokens 4096 (required by the API), no sampling fields, no stream. */
	request(&req, J("[{'role':'user','content':'hi'}]"));
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_INT(st, PROVIDER_OK);
	CHECK_JSON(d, "max_tokens", "4096");
	CHECK_ABSENT(d, "temperature");
	CHECK_ABSENT(d, "top_p");
	CHECK_ABSENT(d, "stop_sequences");
	CHECK_ABSENT(d, "stop");
	CHECK_ABSENT(d, "stream");
	json_object_put(d);

	/* Values set but their has_* flags clear: still absent. */
	req.params.temperature = 0.5;
	req.params.top_p = 0.25;
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_ABSENT(d, "temperature");
	CHECK_ABSENT(d, "top_p");
	json_object_put(d);

	/* Everything set; a stop string becomes a one-element stop_sequences. */
	req.params.has_temperature = 1;
	req.params.has_top_p = 1;
	req.params.max_tokens = 123;
	req.params.stop = J("'END'");
	req.on_delta = dummy_delta;
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_INT(st, PROVIDER_OK);
	CHECK_JSON(d, "max_tokens", "123");
	/*
	 * Both temperature and top_p: temperature alone, as the newer models refuse
	 * the two together (400 "temperature and top_p cannot both be specified").
	 */
	CHECK_JSON(d, "temperature", "0.5");
	CHECK_ABSENT(d, "top_p");
	CHECK_JSON(d, "stop_sequences", "['END']");
	CHECK_ABSENT(d, "stop");
	CHECK_JSON(d, "stream", "true");
	CHECK_ABSENT(d, "stream_options");
	json_object_put(d);
	json_object_put(req.params.stop);

	/* Temperature 0 is a setting, not "unset"; a stop array goes as it is. */
	req.params.temperature = 0;
	req.params.has_top_p = 0;
	req.params.max_completion_tokens = 1;   /* OpenAI's name; Anthropic has one */
	req.params.stop = J("['a','b c']");
	req.on_delta = NULL;
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_JSON(d, "temperature", "0.0");
	CHECK_ABSENT(d, "top_p");
	CHECK_JSON(d, "max_tokens", "123");
	CHECK_ABSENT(d, "max_completion_tokens");
	CHECK_JSON(d, "stop_sequences", "['a','b c']");
	CHECK_ABSENT(d, "stream");
	json_object_put(d);
	json_object_put(req.params.stop);

	/*
	 * Anthropic refuses an empty or whitespace-only stop sequence (400 "each stop
	 * sequence must contain non-whitespace"), which OpenAI takes (stop "\n" is a
	 * common one): no form for it, so another provider may serve it. A stop
	 * with whitespace around other text goes as it is.
	 */
	{
		static const char *const bad[] = {"'\\n'", "['END','\\n\\n']", "' \\t'", "['']"};
		size_t i;

		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			req.params.stop = J(bad[i]);
			d = anthropic(&req, &st, err, sizeof(err));
			if (st != PROVIDER_UNSUPPORTED)
				fprintf(stderr, "stop %s: status %d, want UNSUPPORTED\n", bad[i],
				    (int)st);
			CHECK_INT(st, PROVIDER_UNSUPPORTED);
			CHECK(d == NULL);
			CHECK_CONTAINS(err, "stop");
			json_object_put(d);
			json_object_put(req.params.stop);
		}
		req.params.stop = J("['\\nHuman:',' END ']");
		d = anthropic(&req, &st, err, sizeof(err));
		CHECK_INT(st, PROVIDER_OK);
		CHECK_JSON(d, "stop_sequences", "['\\nHuman:',' END ']");
		json_object_put(d);
		json_object_put(req.params.stop);
	}

	/* OpenAI's temperature goes to 2, Anthropic's to 1: above 1 it is 1; 1 stays 1. */
	req.params.stop = NULL;
	req.params.temperature = 1.7;
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_INT(st, PROVIDER_OK);
	CHECK_JSON(d, "temperature", "1.0");
	json_object_put(d);
	req.params.temperature = 1;
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_JSON(d, "temperature", "1.0");
	json_object_put(d);

	/* top_p alone goes as it is. */
	req.params.has_temperature = 0;
	req.params.has_top_p = 1;
	req.params.top_p = 0.9;
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_INT(st, PROVIDER_OK);
	CHECK_ABSENT(d, "temperature");
	CHECK_JSON(d, "top_p", "0.9");
	json_object_put(d);
	json_object_put(req.messages);
}

/*
 * A history with tool calls sent without tools (a later turn of a session that called
 * them): Anthropic refuses tool blocks without tools, so the names called are offered with
 * an open schema and the choice none. With tools given, they are left as they are.
 */
static void
test_anthropic_history_tools(void)
{
	const char *msgs = "[{'role':'user','content':'weather?'},"
	    "{'role':'assistant','content':null,'tool_calls':["
	    "{'id':'c1','type':'function','function':{'name':'get_weather','arguments':'{}'}},"
	    "{'id':'c2','type':'function','function':{'name':'get_weather','arguments':'{}'}}]},"
	    "{'role':'tool','tool_call_id':'c1','content':'sunny'},"
	    "{'role':'tool','tool_call_id':'c2','content':'rain'},"
	    "{'role':'assistant','content':'Sunny, then rain.','tool_calls':["
	    "{'id':'c3','type':'function','function':{'name':'get_time','arguments':'{}'}}]},"
	    "{'role':'tool','tool_call_id':'c3','content':'noon'},"
	    "{'role':'user','content':'thanks'}]";
	struct llm_request req;
	enum provider_status st;
	char err[256];
	struct json_object *d;

	d = anthropic_msgs(msgs);
	CHECK_JSON(d, "tools", "[{'name':'get_weather','input_schema':{'type':'object'}},"
	    "{'name':'get_time','input_schema':{'type':'object'}}]");
	CHECK_JSON(d, "tool_choice", "{'type':'none'}");
	CHECK_JSON(d, "messages.1.content.0.name", "'get_weather'");
	json_object_put(d);

	/* A tool_choice sent without tools does not survive: nothing may be called. */
	request(&req, J(msgs));
	req.tool_choice = J("'auto'");
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_INT(st, PROVIDER_OK);
	CHECK_JSON(d, "tool_choice", "{'type':'none'}");
	json_object_put(d);
	json_object_put(req.tool_choice);

	/* Tools given: the client's, untouched. */
	req.tool_choice = NULL;
	req.tools = J("[{'type':'function','function':{'name':'other'}}]");
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_INT(st, PROVIDER_OK);
	CHECK_INT(json_object_array_length(at(d, "tools")), 1);
	CHECK_JSON(d, "tools.0.name", "'other'");
	CHECK_ABSENT(d, "tool_choice");
	json_object_put(d);
	json_object_put(req.tools);
	json_object_put(req.messages);

	/* No tool calls in the history: no tools. */
	d = anthropic_msgs("[{'role':'user','content':'hi'}]");
	CHECK_ABSENT(d, "tools");
	CHECK_ABSENT(d, "tool_choice");
	json_object_put(d);
}

#define JSON_PLAIN (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/*
 * The body as provider_openai_body built it before it wrote text: a json-c
 * object, serialised. Caller frees.
 */
static char *
openai_body_json_c(const char *model, const struct llm_request *req)
{
	struct json_object *doc = json_object_new_object(), *opts;
	char *text;

	json_object_object_add(doc, "model", json_object_new_string(model));
	json_object_object_add(doc, "messages", json_object_get(req->messages));
	if (req->tools != NULL)
		json_object_object_add(doc, "tools", json_object_get(req->tools));
	if (req->tool_choice != NULL)
		json_object_object_add(doc, "tool_choice", json_object_get(req->tool_choice));
	if (req->params.has_temperature)
		json_object_object_add(doc, "temperature",
		    json_object_new_double(req->params.temperature));
	if (req->params.has_top_p)
		json_object_object_add(doc, "top_p", json_object_new_double(req->params.top_p));
	if (req->params.max_tokens > 0)
		json_object_object_add(doc, req->params.max_completion_tokens ?
		    "max_completion_tokens" : "max_tokens",
		    json_object_new_int64(req->params.max_tokens));
	if (req->params.stop != NULL)
		json_object_object_add(doc, "stop", json_object_get(req->params.stop));
	if (req->params.openai_extra != NULL) {
		json_object_object_foreach(req->params.openai_extra, k, v)
			json_object_object_add(doc, k, json_object_get(v));
	}
	if (req->on_delta != NULL) {
		json_object_object_add(doc, "stream", json_object_new_boolean(1));
		opts = json_object_new_object();
		json_object_object_add(opts, "include_usage", json_object_new_boolean(1));
		json_object_object_add(doc, "stream_options", opts);
	}
	text = strdup(json_object_to_json_string_ext(doc, JSON_PLAIN));
	json_object_put(doc);
	return text;
}

/* provider_openai_body of `req` (checked against openai_body_json_c), parsed. Caller puts. */
static struct json_object *
openai(const struct llm_request *req, const char *model)
{
	char *body = provider_openai_body(model, req), *ref = openai_body_json_c(model, req);
	struct json_object *doc;

	CHECK(body != NULL);
	CHECK_STR(body, ref);
	free(ref);
	if (body == NULL)
		return NULL;
	doc = json_tokener_parse(body);
	if (doc == NULL)
		fprintf(stderr, "the body is not JSON: %s\n", body);
	CHECK(doc != NULL);
	free(body);
	return doc;
}

static void
test_openai(void)
{
	const char *msgs = "[{'role':'system','content':'S'},{'role':'developer','content':'D'},"
	    "{'role':'user','content':[{'type':'text','text':'a'},{'type':'text','text':'b'}]},"
	    "{'role':'user','content':'again'},{'role':'assistant','content':''},"
	    "{'role':'assistant','content':null,'tool_calls':[{'id':'call_1','type':'function',"
	    "'function':{'name':'f','arguments':'{\\'x\\':1}'}}]},"
	    "{'role':'tool','tool_call_id':'call_1','content':'r'},{'role':'user','content':'u'}]";
	const char *tools = "[{'type':'function','function':{'name':'f','description':'F',"
	    "'parameters':{'type':'object','properties':{'x':{'type':'integer'}}},'strict':true}}]";
	struct llm_request req;
	struct json_object *d, *keys;

	/* Nothing set: model and messages only, the messages exactly as given. */
	request(&req, J(msgs));
	d = openai(&req, "gpt-test");
	CHECK_STR(str_at(d, "model"), "gpt-test");
	CHECK_JSON(d, "messages", msgs);
	keys = J("{}");
	json_object_object_add(keys, "model", json_object_get(at(d, "model")));
	json_object_object_add(keys, "messages", json_object_get(at(d, "messages")));
	CHECK(json_object_equal(d, keys));
	if (!json_object_equal(d, keys))
		fprintf(stderr, "openai body with nothing set: %s\n", show(d));
	json_object_put(keys);
	json_object_put(d);

	/* Everything set: tools and tool_choice untouched, max_tokens by its old name. */
	req.tools = J(tools);
	req.tool_choice = J("{'type':'function','function':{'name':'f'}}");
	req.params.temperature = 0.7;
	req.params.has_temperature = 1;
	req.params.top_p = 0.9;
	req.params.has_top_p = 1;
	req.params.max_tokens = 77;
	req.params.stop = J("['x','y']");
	d = openai(&req, "gpt-test");
	CHECK_JSON(d, "messages", msgs);
	CHECK_JSON(d, "tools", tools);
	CHECK_JSON(d, "tool_choice", "{'type':'function','function':{'name':'f'}}");
	CHECK_JSON(d, "temperature", "0.7");
	CHECK_JSON(d, "top_p", "0.9");
	CHECK_JSON(d, "max_tokens", "77");
	CHECK_ABSENT(d, "max_completion_tokens");
	CHECK_JSON(d, "stop", "['x','y']");
	CHECK_ABSENT(d, "stream");
	CHECK_ABSENT(d, "stream_options");
	json_object_put(d);
	json_object_put(req.tool_choice);
	json_object_put(req.params.stop);

	/* max_completion_tokens by the flag; a string tool_choice and stop; streamed. */
	req.tool_choice = J("'required'");
	req.params.stop = J("'END'");
	req.params.max_completion_tokens = 1;
	req.params.has_temperature = 0;
	req.params.temperature = 0;
	req.params.has_top_p = 0;
	req.on_delta = dummy_delta;
	d = openai(&req, "gpt-4o-mini");
	CHECK_STR(str_at(d, "model"), "gpt-4o-mini");
	CHECK_JSON(d, "tool_choice", "'required'");
	CHECK_JSON(d, "max_completion_tokens", "77");
	CHECK_ABSENT(d, "max_tokens");
	CHECK_ABSENT(d, "temperature");
	CHECK_ABSENT(d, "top_p");
	CHECK_JSON(d, "stop", "'END'");
	CHECK_JSON(d, "stream", "true");
	CHECK_JSON(d, "stream_options", "{'include_usage':true}");
	json_object_put(d);

	/* Bytes that need escaping, in the model and in the messages and fields. */
	{
		struct llm_request odd;
		struct json_object *od;

		request(&odd, json_tokener_parse("[{\"role\":\"user\",\"content\":"
		    "\"q\\\"b\\\\s/\\n\\r\\t\\b\\f\\u0001\\u001f\\u007f \\u00e9\\ud83d\\ude00\"}]"));
		odd.params.openai_extra = json_tokener_parse("{\"user\":\"a/b\\u0002\","
		    "\"presence_penalty\":0.50,\"seed\":-3,\"metadata\":{\"k\\\"\":\"\\u00e9\"}}");
		odd.params.has_temperature = 1;
		odd.params.temperature = 0.1 + 0.2;
		odd.params.has_top_p = 1;
		odd.params.top_p = 1;
		od = openai(&odd, "m\"o\\d/e\x01l\x7f\xc3\xa9");
		CHECK(od != NULL);
		json_object_put(od);
		json_object_put(odd.messages);
		json_object_put(odd.params.openai_extra);
	}

	/* A temperature of 0 is sent; no max tokens when 0. */
	req.params.has_temperature = 1;
	req.params.max_tokens = 0;
	d = openai(&req, "gpt-test");
	CHECK_JSON(d, "temperature", "0.0");
	CHECK_ABSENT(d, "max_tokens");
	CHECK_ABSENT(d, "max_completion_tokens");
	json_object_put(d);

	json_object_put(req.tools);
	json_object_put(req.tool_choice);
	json_object_put(req.params.stop);
	json_object_put(req.messages);
}

/*
 * OpenAI's other fields (llm_params.openai_extra): the openai body carries them as they
 * are; the Anthropic body translates user and parallel_tool_calls, drops seed and the
 * penalties, and refuses a JSON response_format and logit_bias.
 */
static void
test_extra(void)
{
	const char *tools = "[{'type':'function','function':{'name':'f'}}]";
	struct llm_request req;
	enum provider_status st;
	char err[256];
	struct json_object *d;

	request(&req, J("[{'role':'user','content':'hi'}]"));
	req.params.openai_extra = J("{'seed':7,'presence_penalty':0.5,'frequency_penalty':-1,"
	    "'user':'u-1','logit_bias':{'50256':-100},'parallel_tool_calls':false,"
	    "'response_format':{'type':'json_schema','json_schema':{'name':'x','schema':{}}},"
	    "'reasoning_effort':'low','verbosity':'high','service_tier':'flex','store':true,"
	    "'metadata':{'team':'a'},'safety_identifier':'s-1','prompt_cache_key':'k'}");
	d = openai(&req, "gpt-test");
	CHECK_JSON(d, "reasoning_effort", "'low'");
	CHECK_JSON(d, "verbosity", "'high'");
	CHECK_JSON(d, "service_tier", "'flex'");
	CHECK_JSON(d, "store", "true");
	CHECK_JSON(d, "metadata", "{'team':'a'}");
	CHECK_JSON(d, "safety_identifier", "'s-1'");
	CHECK_JSON(d, "prompt_cache_key", "'k'");
	CHECK_JSON(d, "seed", "7");
	CHECK_JSON(d, "presence_penalty", "0.5");
	CHECK_JSON(d, "frequency_penalty", "-1");
	CHECK_JSON(d, "user", "'u-1'");
	CHECK_JSON(d, "logit_bias", "{'50256':-100}");
	CHECK_JSON(d, "parallel_tool_calls", "false");
	CHECK_JSON(d, "response_format",
	    "{'type':'json_schema','json_schema':{'name':'x','schema':{}}}");
	json_object_put(d);

	/* Anthropic: a JSON response_format, then logit_bias, cannot be expressed. */
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_INT(st, PROVIDER_REJECTED);
	CHECK_CONTAINS(err, "response_format");
	json_object_put(d);
	json_object_object_add(req.params.openai_extra, "response_format",
	    J("{'type':'json_object'}"));
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_INT(st, PROVIDER_REJECTED);
	CHECK_CONTAINS(err, "json_object");
	json_object_put(d);
	json_object_object_add(req.params.openai_extra, "response_format", J("{'type':'text'}"));
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_INT(st, PROVIDER_REJECTED);
	CHECK_CONTAINS(err, "logit_bias");
	json_object_put(d);

	/* Without them: user as metadata.user_id, no parallel calls, the rest dropped. */
	json_object_object_del(req.params.openai_extra, "logit_bias");
	req.tools = J(tools);
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_INT(st, PROVIDER_OK);
	CHECK_JSON(d, "metadata", "{'user_id':'u-1'}");
	CHECK_JSON(d, "tool_choice", "{'type':'auto','disable_parallel_tool_use':true}");
	CHECK_ABSENT(d, "seed");
	CHECK_ABSENT(d, "presence_penalty");
	CHECK_ABSENT(d, "frequency_penalty");
	CHECK_ABSENT(d, "user");
	CHECK_ABSENT(d, "response_format");
	CHECK_ABSENT(d, "parallel_tool_calls");
	CHECK_ABSENT(d, "reasoning_effort");
	CHECK_ABSENT(d, "verbosity");
	CHECK_ABSENT(d, "service_tier");
	CHECK_ABSENT(d, "store");
	CHECK_ABSENT(d, "safety_identifier");
	CHECK_ABSENT(d, "prompt_cache_key");
	json_object_put(d);

	/* Without user, safety_identifier (its successor at OpenAI) is the user_id. */
	json_object_object_del(req.params.openai_extra, "user");
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_JSON(d, "metadata", "{'user_id':'s-1'}");
	json_object_put(d);
	req.tool_choice = J("'required'");
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_JSON(d, "tool_choice", "{'type':'any','disable_parallel_tool_use':true}");
	json_object_put(d);
	json_object_put(req.tool_choice);
	req.tool_choice = J("'none'");
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_JSON(d, "tool_choice", "{'type':'none'}");
	json_object_put(d);

	/* Parallel calls allowed: Anthropic's default, nothing to say. */
	json_object_object_add(req.params.openai_extra, "parallel_tool_calls",
	    json_object_new_boolean(1));
	json_object_put(req.tool_choice);
	req.tool_choice = NULL;
	d = anthropic(&req, &st, err, sizeof(err));
	CHECK_ABSENT(d, "tool_choice");
	json_object_put(d);

	json_object_put(req.tools);
	json_object_put(req.params.openai_extra);
	json_object_put(req.messages);
}

static void
test_tool_calls(void)
{
	struct llm_result res;
	struct llm_tool_call *tc;
	struct json_object *list;
	int oom = 1;
	size_t i;

	memset(&res, 0, sizeof(res));
	CHECK(provider_tool_calls_json(&res, &oom) == NULL);
	CHECK_INT(oom, 0);

	/* Index 2 first: 0 and 1 are created empty before it, in order. */
	tc = provider_tool_call(&res, 2);
	CHECK(tc != NULL);
	CHECK_INT(res.ntool_calls, 3);
	CHECK(tc == &res.tool_calls[2]);
	for (i = 0; i < 3; i++) {
		CHECK_INT(res.tool_calls[i].id.len, 0);
		CHECK_INT(res.tool_calls[i].name.len, 0);
		CHECK_INT(res.tool_calls[i].arguments.len, 0);
	}
	buf_puts(&tc->id, "call_c");
	buf_puts(&tc->name, "third");
	buf_puts(&tc->arguments, "{\"k\":");
	/* Streamed fragments: the same index is the same call, arguments joined. */
	tc = provider_tool_call(&res, 0);
	CHECK(tc == &res.tool_calls[0]);
	buf_puts(&tc->id, "call_a");
	buf_puts(&tc->name, "first");
	buf_puts(&provider_tool_call(&res, 2)->arguments, "\"v\"}");
	CHECK_INT(res.ntool_calls, 3);

	list = provider_tool_calls_json(&res, &oom);
	CHECK_INT(oom, 0);
	CHECK_JSON(list, "", "[{'id':'call_a','type':'function','function':"
	    "{'name':'first','arguments':'{}'}},"
	    "{'id':'','type':'function','function':{'name':'','arguments':'{}'}},"
	    "{'id':'call_c','type':'function','function':"
	    "{'name':'third','arguments':'{\\'k\\':\\'v\\'}'}}]");
	json_object_put(list);

	/* The cap: the last index there is, then NULL past it, nothing changed. */
	tc = provider_tool_call(&res, PROVIDER_TOOL_CALLS_MAX - 1);
	CHECK(tc != NULL);
	CHECK_INT(res.ntool_calls, PROVIDER_TOOL_CALLS_MAX);
	CHECK(provider_tool_call(&res, PROVIDER_TOOL_CALLS_MAX) == NULL);
	CHECK(provider_tool_call(&res, (size_t)-1) == NULL);
	CHECK_INT(res.ntool_calls, PROVIDER_TOOL_CALLS_MAX);
	CHECK_STR(res.tool_calls[2].name.data, "third");
	list = provider_tool_calls_json(&res, &oom);
	CHECK_INT(json_object_array_length(list), PROVIDER_TOOL_CALLS_MAX);
	json_object_put(list);

	/* Clearing forgets them all; the result can take new ones. */
	provider_tool_calls_clear(&res);
	CHECK_INT(res.ntool_calls, 0);
	CHECK(res.tool_calls == NULL);
	CHECK(provider_tool_calls_json(&res, &oom) == NULL);
	CHECK_INT(oom, 0);

	/* provider_result_free frees calls and text (leaks show under ASan and valgrind). */
	buf_puts(&provider_tool_call(&res, 1)->arguments, "{}");
	buf_puts(&res.text, "some text");
	provider_result_free(&res);
	CHECK_INT(res.ntool_calls, 0);
	CHECK(res.tool_calls == NULL);
	provider_result_free(&res);     /* twice is harmless */
	provider_result_free(NULL);
}

/* The kind of an upstream error object: retried only when retrying may help. */
static void
test_error_kind(void)
{
	static const struct {
		const char *json;
		enum provider_error_kind kind;
	} cases[] = {
		{"{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}", PROVIDER_ERR_RETRYABLE},
		{"{\"type\":\"api_error\"}", PROVIDER_ERR_RETRYABLE},
		{"{\"type\":\"rate_limit_error\"}", PROVIDER_ERR_RETRYABLE},
		{"{\"type\":\"server_error\",\"code\":null}", PROVIDER_ERR_RETRYABLE},
		{"{\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}", PROVIDER_ERR_RETRYABLE},
		{"{\"message\":\"x\"}", PROVIDER_ERR_RETRYABLE},
		{"{\"message\":\"x\",\"code\":503}", PROVIDER_ERR_RETRYABLE},
		{"{\"type\":\"invalid_request_error\"}", PROVIDER_ERR_REJECTED},
		{"{\"type\":\"not_found_error\"}", PROVIDER_ERR_REJECTED},
		{"{\"message\":\"x\",\"code\":400}", PROVIDER_ERR_REJECTED},
		{"{\"type\":\"authentication_error\"}", PROVIDER_ERR_FINAL},
		{"{\"type\":\"insufficient_quota\"}", PROVIDER_ERR_FINAL},
		{"{\"message\":\"x\",\"code\":401}", PROVIDER_ERR_FINAL},
		/* vLLM and SGLang: a Python class name as the type, the HTTP status as the code */
		{"{\"object\":\"error\",\"message\":\"too long\",\"type\":\"BadRequestError\","
		    "\"param\":null,\"code\":400}", PROVIDER_ERR_REJECTED},
		{"{\"type\":\"NotFoundError\",\"code\":404}", PROVIDER_ERR_REJECTED},
		{"{\"type\":\"InternalServerError\",\"code\":500}", PROVIDER_ERR_RETRYABLE},
		{"{\"type\":\"ServiceUnavailableError\",\"code\":503}", PROVIDER_ERR_RETRYABLE},
		/* a type that is known decides, whatever the code */
		{"{\"type\":\"invalid_request_error\",\"code\":\"context_length_exceeded\"}",
		    PROVIDER_ERR_REJECTED},
		{"{\"type\":\"UnknownError\",\"code\":\"rate_limit_exceeded\"}",
		    PROVIDER_ERR_RETRYABLE},
		{"{\"type\":\"UnknownError\",\"code\":\"something\"}", PROVIDER_ERR_FINAL},
	};
	struct json_object *o;
	size_t i;

	CHECK_INT(provider_error_kind(NULL), PROVIDER_ERR_RETRYABLE);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		o = json_tokener_parse(cases[i].json);
		CHECK(o != NULL);
		CHECK_INT(provider_error_kind(o), cases[i].kind);
		json_object_put(o);
	}
}

int
main(void)
{
	test_anthropic_merge();
	test_anthropic_tool_blocks();
	test_anthropic_images();
	test_image_url();
	test_anthropic_files();
	test_file_data();
	test_anthropic_tools();
	test_anthropic_params();
	test_anthropic_history_tools();
	test_openai();
	test_extra();
	test_tool_calls();
	test_error_kind();
	return check_done("test_provider_body");
}
