/*
 * test_chat: a chat turn in-process (LMDB in a temp dir, offline provider): the answer and
 * session documents, SSE events, idempotent replay, deletion, and a JSON error for every
 * kind of bad input.
 */
#include "config.h"

#include "app.h"
#include "check.h"
#include "fakeenv.h"
#include "conf.h"
#include "log.h"
#include "memtransport.h"
#include "tmpdir.h"

#include <fcntl.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <unistd.h>

static struct app_worker *w;
static struct memtransport mt;
static struct http_response resp;
static struct json_object *doc;
static const char *idem;
static const char *ctype = "application/json";

static int
run_len(const char *method, const char *path, const char *body, size_t len)
{
	struct http_header hs[2];
	struct http_request req = {0};

	req.method = method;
	req.path = path;
	req.query = "";
	req.remote_addr = "127.0.0.1";
	req.request_id = "rid-42";
	req.content_type = ctype;
	req.body = body ? body : "";
	req.body_len = len;
	if (idem != NULL) {
		hs[0].name = "idempotency-key";
		hs[0].value = idem;
		req.headers = hs;
		req.nheaders = 1;
	}
	json_object_put(doc);
	doc = NULL;
	buf_reset(&mt.wire, 0);
	http_response_reset(&resp);
	app_handle(w, &req, &resp);
	if (!resp.streaming && resp.body.len)
		doc = json_tokener_parse(resp.body.data);
	return resp.status;
}

static int
run(const char *method, const char *path, const char *body)
{
	return run_len(method, path, body, body ? strlen(body) : 0);
}

static const char *
get(const char *key)
{
	struct json_object *v;

	if (doc == NULL || !json_object_object_get_ex(doc, key, &v))
		return NULL;
	return json_object_get_string(v);
}

static const char *
err_code(void)
{
	struct json_object *e, *c;

	if (doc == NULL || !json_object_object_get_ex(doc, "error", &e) ||
	    !json_object_object_get_ex(e, "code", &c))
		return NULL;
	return json_object_get_string(c);
}

static void
bad(const char *body, int status, const char *code)
{
	int s = run("POST", "/api/v1/chat", body);

	if (s != status || err_code() == NULL || strcmp(err_code(), code) != 0)
		fprintf(stderr, "body %.60s: got %d %s, want %d %s\n", body, s,
		    err_code() ? err_code() : "(none)", status, code);
	CHECK_INT(s, status);
	CHECK_STR(err_code(), code);
}

int
main(void)
{
	const char *env[] = {"VALERIE_DATA_DIR", NULL, "VALERIE_MAX_MESSAGE_CHARS", "10",
		"VALERIE_JSON_MAX_DEPTH", "4", "VALERIE_THREADS", "2",
		"RATE_LIMIT_REQUESTS_PER_MINUTE", "1000000", "RATE_LIMIT_BURST", "1000000", NULL, NULL};
	struct conf conf;
	struct app *app;
	struct json_object *msgs, *m, *v;
	char err[256], big[300];

	if ((env[1] = tmpdir_make("valerie-chat")) == NULL)
		return 1;
	log_set_fd(open("/dev/null", O_WRONLY));
	CHECK_INT(conf_load(&conf, fake_get, env, err, sizeof(err)), CONF_OK);
	app = app_create(&conf, err, sizeof(err));
	CHECK(app != NULL);
	if (app == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	w = app_worker_new(app);
	memtransport_init(&mt);
	http_response_init(&resp, &mt.ops);

	/* A turn, then another: the answer document, turn numbers, memory. */
	CHECK_INT(run("POST", "/api/v1/chat", "{\"message\":\"hello\",\"session_id\":\"s-1\"}"), 200);
	CHECK_STR(get("session_id"), "s-1");
	CHECK_STR(get("turn"), "1");
	CHECK_STR(get("provider"), "offline");
	CHECK_STR(get("model"), "offline");
	CHECK_STR(get("request_id"), "rid-42");
	CHECK_CONTAINS(get("reply"), "not a language model");
	CHECK_CONTAINS(get("reply"), "\"hello\"");
	CHECK(doc != NULL && json_object_object_get_ex(doc, "usage", &v) &&
	    json_object_object_get_ex(v, "input_tokens", &m) &&
	    json_object_object_get_ex(v, "output_tokens", &m) && json_object_get_int(m) > 0);
	CHECK_INT(run("POST", "/api/v1/chat", "{\"message\":\"again\",\"session_id\":\"s-1\"}"), 200);
	CHECK_STR(get("turn"), "2");
	CHECK_CONTAINS(get("reply"), "began with \"hello\"");

	/* The session document. */
	CHECK_INT(run("GET", "/api/v1/sessions/s-1", NULL), 200);
	CHECK_STR(get("session_id"), "s-1");
	CHECK_STR(get("owner"), "anonymous");
	CHECK(get("created_at") != NULL && get("updated_at") != NULL);
	CHECK(doc != NULL && json_object_object_get_ex(doc, "messages", &msgs) &&
	    json_object_array_length(msgs) == 4);
	m = json_object_array_get_idx(msgs, 0);
	CHECK(json_object_object_get_ex(m, "role", &v) && !strcmp(json_object_get_string(v), "user"));
	CHECK(json_object_object_get_ex(m, "turn", &v) && json_object_get_int(v) == 1);
	CHECK(json_object_object_get_ex(m, "ts", &v));
	m = json_object_array_get_idx(msgs, 3);
	CHECK(json_object_object_get_ex(m, "role", &v) &&
	    !strcmp(json_object_get_string(v), "assistant"));
	CHECK(json_object_object_get_ex(m, "turn", &v) && json_object_get_int(v) == 2);

	/* Seed 001's body on /api/agent/chat: the persona reaches the provider. */
	CHECK_INT(run("POST", "/api/agent/chat", "{\"message\":\"Hola\",\"session_id\":\"test_deploy\","
	    "\"config\":{\"nombre_bot\":\"Test\",\"id_empresa\":1,\"rol_bot\":\"test\","
	    "\"tipo_bot\":\"test\",\"objetivo_principal\":\"test\"}}"), 200);
	CHECK_CONTAINS(get("reply"), "You are Test");

	/* Streaming: deltas, then done with the whole answer document. */
	CHECK_INT(run("POST", "/api/v1/chat",
	    "{\"message\":\"stream\",\"session_id\":\"s-2\",\"stream\":true}"), 200);
	CHECK(resp.streaming);
	CHECK_CONTAINS(mt.wire.data, "Content-Type: text/event-stream");
	CHECK_CONTAINS(mt.wire.data, "event: delta\ndata: {\"text\":\"[offline] \"}\n\n");
	CHECK_CONTAINS(mt.wire.data, "event: done\ndata: {\"reply\":\"[offline]");
	CHECK_CONTAINS(mt.wire.data, "\"turn\":1,");

	/* Idempotency: the same key answers the stored turn again. */
	idem = "key-123";
	CHECK_INT(run("POST", "/api/v1/chat", "{\"message\":\"pay\",\"session_id\":\"s-3\"}"), 200);
	CHECK_STR(get("turn"), "1");
	CHECK_INT(run("POST", "/api/v1/chat", "{\"message\":\"pay\",\"session_id\":\"s-3\"}"), 200);
	CHECK_STR(get("turn"), "1");
	CHECK_STR(http_response_get_header(&resp, "Idempotent-Replayed"), "true");
	idem = "key-124";
	CHECK_INT(run("POST", "/api/v1/chat", "{\"message\":\"pay\",\"session_id\":\"s-3\"}"), 200);
	CHECK_STR(get("turn"), "2");
	idem = "bad key";
	bad("{\"message\":\"x\",\"session_id\":\"s-3\"}", 400, "invalid_idempotency_key");
	idem = NULL;

	/* Forgetting. */
	CHECK_INT(run("DELETE", "/api/v1/sessions/s-3", NULL), 200);
	CHECK_INT(run("GET", "/api/v1/sessions/s-3", NULL), 404);
	CHECK_STR(err_code(), "session_not_found");
	CHECK_INT(run("DELETE", "/api/v1/sessions/s-3", NULL), 404);
	CHECK_INT(run("POST", "/memory/clear/s-2", NULL), 200);
	CHECK_STR(get("status"), "cleared");
	CHECK_INT(run("POST", "/memory/clear/s-2", NULL), 404);
	CHECK_INT(run("GET", "/api/v1/sessions/bad%20id", NULL), 400);
	CHECK_STR(err_code(), "invalid_session_id");

	/* Bad input: each a 4xx with a JSON error that says what is wrong. */
	bad("{\"session_id\":\"s\"}", 400, "invalid_field");
	bad("{\"message\":\"\",\"session_id\":\"s\"}", 400, "invalid_field");
	bad("{\"message\":\" \\n\\t\",\"session_id\":\"s\"}", 400, "invalid_field");
	bad("{\"message\":\"12345678901\",\"session_id\":\"s\"}", 400, "message_too_long");
	CHECK_INT(run("POST", "/api/v1/chat",
	    "{\"message\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	    "\xc3\xa9\",\"session_id\":\"s-4\"}"), 200); /* 10 characters, 20 bytes */
	bad("{\"message\":5,\"session_id\":\"s\"}", 400, "invalid_field");
	bad("{\"message\":\"x\"}", 400, "invalid_field");
	bad("{\"message\":\"x\",\"session_id\":\"\"}", 400, "invalid_session_id");
	bad("{\"message\":\"x\",\"session_id\":\"../etc\"}", 400, "invalid_session_id");
	/* "." and ".." would make sessions no URL can read or delete (nginx resolves them). */
	bad("{\"message\":\"x\",\"session_id\":\".\"}", 400, "invalid_session_id");
	bad("{\"message\":\"x\",\"session_id\":\"..\"}", 400, "invalid_session_id");
	bad("{\"message\":\"x\",\"session_id\":\"a\\u0000b\"}", 400, "invalid_field");
	memset(big, 'a', sizeof(big));
	memcpy(big, "{\"message\":\"x\",\"session_id\":\"", 29);
	memcpy(big + 29 + 129, "\"}", 3);
	bad(big, 400, "invalid_session_id");
	bad("{\"message\":\"x\",\"session_id\":\"s\",\"stream\":\"yes\"}", 400, "invalid_field");
	bad("{\"message\":\"x\",\"session_id\":\"s\",\"config\":[]}", 400, "invalid_field");
	bad("{\"message\":\"x\",\"session_id\":\"s\",\"config\":{\"id_empresa\":1.5}}", 400,
	    "invalid_field");
	bad("{\"message\":", 400, "invalid_json");
	bad("{\"message\":\"x\"} trailing", 400, "invalid_json");
	bad("[1,2]", 400, "invalid_body");
	bad("\"text\"", 400, "invalid_body");
	bad("{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":1}}}}}", 400, "invalid_json"); /* 5 > 4 */
	CHECK_CONTAINS(resp.body.data, "nested deeper than 4");
	bad("{\"a\":NaN}", 400, "invalid_json");
	bad("{\"message\":\"\xc0\xaf\",\"session_id\":\"s\"}", 400, "invalid_utf8");
	bad("42", 400, "invalid_body");
	bad("null", 400, "invalid_body");
	bad("{\"message\":\"\xff\xfe\",\"session_id\":\"s\"}", 400, "invalid_utf8");
	bad("", 400, "invalid_json");
	ctype = "text/plain";
	bad("{\"message\":\"x\",\"session_id\":\"s\"}", 415, "unsupported_media_type");
	ctype = NULL;
	bad("{\"message\":\"x\",\"session_id\":\"s\"}", 415, "unsupported_media_type");
	ctype = "application/json; charset=utf-8";
	CHECK_INT(run("POST", "/api/v1/chat", "{\"message\":\"x\",\"session_id\":\"s-5\","
	    "\"unknown\":1}"), 200);

	json_object_put(doc);
	http_response_free(&resp);
	buf_free(&mt.wire);
	app_worker_free(w);
	app_destroy(app);
	return check_done("test_chat");
}
