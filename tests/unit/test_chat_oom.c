/*
 * test_chat_oom: memory that runs out in the middle of a streamed turn (offline provider,
 * LMDB in a temp dir): the stream ends with an explicit error event, never a silent end.
 * Linked with -Wl,--wrap=realloc, so one growth of one of Valerie's buffers can be made
 * to fail once the first delta went out.
 */
#include "config.h"

#include "app.h"
#include "check.h"
#include "conf.h"
#include "fakeenv.h"
#include "log.h"
#include "memtransport.h"
#include "tmpdir.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * NOTE: the linker's --wrap names: every realloc in Valerie's objects goes to
 * __wrap_realloc, which reaches the C library's as __real_realloc.
 */
void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);

static int fail_next;   /* the next realloc fails, once */
static int armed;       /* fail the realloc after the first delta reached the client */

void *
__wrap_realloc(void *p, size_t n)
{
	if (fail_next) {
		fail_next = 0;
		return NULL;
	}
	return __real_realloc(p, n);
}

static struct memtransport mt;

/* The body as the client gets it; the first delta arms the failure. */
static int
body(void *ctx, const char *data, size_t len)
{
	int rc = mt_body(ctx, data, len);

	if (armed && (memmem(data, len, "event: delta", 12) != NULL ||
	    memmem(data, len, "\"delta\"", 7) != NULL)) {
		armed = 0;
		fail_next = 1;
	}
	return rc;
}

static void
turn(struct app_worker *w, struct http_response *resp, const char *path, const char *json)
{
	struct http_request req = {0};

	req.method = "POST";
	req.path = path;
	req.query = "";
	req.remote_addr = "127.0.0.1";
	req.request_id = "rid-oom";
	req.content_type = "application/json";
	req.body = json;
	req.body_len = strlen(json);
	buf_reset(&mt.wire, 0);
	http_response_reset(resp);
	armed = 1;
	fail_next = 0;
	app_handle(w, &req, resp);
	armed = fail_next = 0;
}

int
main(void)
{
	const char *env[] = {"VALERIE_DATA_DIR", NULL, "VALERIE_THREADS", "2",
		"RATE_LIMIT_REQUESTS_PER_MINUTE", "1000000", "RATE_LIMIT_BURST", "1000000", NULL, NULL};
	struct conf conf;
	struct app *app;
	struct app_worker *w;
	struct http_response resp;
	char err[256];

	if ((env[1] = tmpdir_make("valerie-chat-oom")) == NULL)
		return 1;
	log_set_fd(open("/dev/null", O_WRONLY));
	CHECK_INT(conf_load(&conf, fake_get, env, err, sizeof(err)), CONF_OK);
	app = app_create(&conf, err, sizeof(err));
	if (app == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	w = app_worker_new(app);
	memtransport_init(&mt);
	mt.ops.write_body = body;
	http_response_init(&resp, &mt.ops);

	/* The native stream: deltas, then an error event, not done and not a silent end. */
	turn(w, &resp, "/api/v1/chat",
	    "{\"message\":\"stream\",\"session_id\":\"oom-1\",\"stream\":true}");
	CHECK(resp.streaming);
	CHECK_CONTAINS(mt.wire.data, "event: delta\n");
	CHECK_CONTAINS(mt.wire.data, "event: error\ndata: {\"error\":{\"code\":\"internal_error\"");
	CHECK(strstr(mt.wire.data, "event: done") == NULL);

	/* The OpenAI-compatible stream: an error chunk, and no [DONE]. */
	turn(w, &resp, "/v1/chat/completions",
	    "{\"model\":\"offline\",\"stream\":true,\"messages\":[{\"role\":\"user\","
	    "\"content\":\"stream\"}]}");
	CHECK(resp.streaming);
	CHECK_CONTAINS(mt.wire.data, "\"delta\"");
	CHECK_CONTAINS(mt.wire.data, "\"code\":\"internal_error\"");
	CHECK(strstr(mt.wire.data, "[DONE]") == NULL);

	http_response_free(&resp);
	app_worker_free(w);
	app_destroy(app);
	buf_free(&mt.wire);
	return check_done("test_chat_oom");
}
