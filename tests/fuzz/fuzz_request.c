/* fuzz_request: libFuzzer target for the request pipeline: any method, path, headers and body. */
#include "config.h"

#include "app.h"
#include "conf.h"
#include "log.h"
#include "../unit/memtransport.h"
#include "../unit/tmpdir.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct app *app;
static struct app_worker *worker;
static struct conf conf;

static const char *
env_get(const char *name, void *ctx)
{
	(void)ctx;
	if (strcmp(name, "VALERIE_DATA_DIR") == 0 || strcmp(name, "VALERIE_LMDB_MAP_MB") == 0)
		return getenv(name);
	return NULL;
}

static void
setup(void)
{
	const char *dir = tmpdir_make("valerie-fuzz");
	char err[256];

	log_set_fd(open("/dev/null", O_WRONLY));
	if (dir == NULL || setenv("VALERIE_DATA_DIR", dir, 1) != 0)
		abort();
	if (conf_load(&conf, env_get, NULL, err, sizeof(err)) != CONF_OK)
		abort();
	conf.max_body_bytes = 4096;
	/* The rate limit would answer 429 to nearly every input: raise it out of the way. */
	conf.rate_limit_burst = 1000000000;
	conf.rate_limit_rpm = 1000000000;
	setenv("VALERIE_LMDB_MAP_MB", "64", 1);
	app = app_create(&conf, err, sizeof(err));
	worker = app_worker_new(app);
	if (app == NULL || worker == NULL)
		abort();
}

/* Takes the next '\n'-terminated field out of the input, NUL-terminated in place. */
static char *
field(char **p, char *end)
{
	char *start = *p, *nl;

	if (start >= end)
		return NULL;
	nl = memchr(start, '\n', (size_t)(end - start));
	if (nl == NULL) {
		*p = end;
		return start;
	}
	*nl = '\0';
	*p = nl + 1;
	return start;
}

/*
 * Input: "METHOD\nPATH[?QUERY]\nname: value\n...\n\nBODY". The last byte of a field
 * before '\n' may be anything; fields are C strings as the transport gives them.
 */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_header headers[HTTP_MAX_HEADERS];
	struct http_request req;
	struct http_response resp;
	struct memtransport mt;
	char *copy, *p, *end, *line, *colon, *query;

	if (app == NULL)
		setup();
	copy = malloc(size + 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	p = copy;
	end = copy + size;

	memset(&req, 0, sizeof(req));
	req.method = field(&p, end);
	req.path = field(&p, end);
	/* A '?' in PATH starts the query, as the transport splits REQUEST_URI. */
	query = req.path != NULL ? strchr(req.path, '?') : NULL;
	if (query != NULL)
		*query++ = '\0';
	req.query = query != NULL ? query : "";
	req.remote_addr = "127.0.0.1";
	req.request_id = "fuzz";
	while ((line = field(&p, end)) != NULL && *line != '\0' &&
	    req.nheaders < HTTP_MAX_HEADERS) {
		colon = strchr(line, ':');
		headers[req.nheaders].name = line;
		headers[req.nheaders].value = colon ? colon + 1 : "";
		if (colon)
			*colon = '\0';
		if (strcmp(line, "content-type") == 0)
			req.content_type = headers[req.nheaders].value;
		req.nheaders++;
	}
	req.headers = headers;
	req.body = p;
	req.body_len = (size_t)(end - p);
	if (req.body_len > (size_t)conf.max_body_bytes)
		req.body_error = HTTP_BODY_TOO_LARGE;
	req.head = req.method != NULL && strcmp(req.method, "HEAD") == 0;

	memtransport_init(&mt);
	http_response_init(&resp, &mt.ops);
	app_handle(worker, &req, &resp);
	if (resp.status < 100 || resp.status > 599)
		abort();
	if (!resp.streaming && resp.body.len == 0 && !req.head)
		abort(); /* every answer has a JSON body */
	http_response_free(&resp);
	buf_free(&mt.wire);
	free(copy);
	return 0;
}
