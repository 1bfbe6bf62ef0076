/* test_app: the request pipeline: routes, JSON errors for bad requests, config redaction, draining. */
#include "config.h"

#include "app.h"
#include "buf.h"
#include "check.h"
#include "fakeenv.h"
#include "conf.h"
#include "log.h"
#include "memtransport.h"
#include "metrics.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <json-c/json.h>
#include <unistd.h>

static struct app *app;
static struct app_worker *w;
static struct memtransport mt;
static struct http_response resp;
static struct json_object *doc;

/* Runs one request; leaves the parsed body in `doc`. Returns the status. */
static int
run(const char *method, const char *path, const char *body, enum http_body_error be)
{
	struct http_request req = {0};

	req.method = method;
	req.path = path;
	req.query = "";
	req.remote_addr = "127.0.0.1";
	req.request_id = "req-1";
	req.body = body ? body : "";
	req.body_len = body ? strlen(body) : 0;
	req.body_error = be;
	req.head = method && strcmp(method, "HEAD") == 0;
	json_object_put(doc);
	http_response_reset(&resp);
	app_handle(w, &req, &resp);
	doc = resp.body.len ? json_tokener_parse(resp.body.data) : NULL;
	return resp.status;
}

static const char *
str_at(const char *key)
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

/*
 * The value of the series `series` (name{labels}) in a fresh GET /metrics,
 * or -1 when it is not there.
 */
static long long
metric(const char *series)
{
	char needle[256];
	const char *p;

	run("GET", "/metrics", NULL, HTTP_BODY_OK);
	snprintf(needle, sizeof(needle), "\n%s ", series);
	if (resp.body.data == NULL || (p = strstr(resp.body.data, needle)) == NULL)
		return -1;
	return strtoll(p + strlen(needle), NULL, 10);
}

/* Label sets as the provider metrics write them, and cut where snprintf would cut. */
static void
test_metrics_labels(void)
{
	char l[40], small[12];

	metrics_labels(l, sizeof(l), "provider", "openai", "model", "gpt-4o", (char *)NULL);
	CHECK_STR(l, "provider=\"openai\",model=\"gpt-4o\"");
	metrics_labels(l, sizeof(l), "provider", "x", (char *)NULL);
	CHECK_STR(l, "provider=\"x\"");
	metrics_labels(l, sizeof(l), (char *)NULL);
	CHECK_STR(l, "");
	/* What does not fit is left out a whole pair at a time (test_metrics). */
	metrics_labels(small, sizeof(small), "provider", "openai", (char *)NULL);
	CHECK_STR(small, "");
	metrics_labels(small, sizeof(small), "ab", "c", "de", "f", (char *)NULL);
	CHECK_STR(small, "ab=\"c\"");
}

static void
test_buf_decimal(void)
{
	char d[BUF_DECIMAL_SIZE];

	CHECK_STR(buf_decimal(d, 0, 1), "0");
	CHECK_STR(buf_decimal(d, 7, 3), "007");
	CHECK_STR(buf_decimal(d, 1234, 3), "1234");
	CHECK_STR(buf_decimal(d, -42, 1), "-42");
	CHECK_STR(buf_decimal(d, -5, 2), "-05");
	CHECK_STR(buf_decimal(d, LLONG_MAX, 1), "9223372036854775807");
	CHECK_STR(buf_decimal(d, LLONG_MIN, 1), "-9223372036854775808");
	CHECK_STR(buf_decimal(d, 1, 99), "00000000000000000001");
}

/* buf_strcpy writes what snprintf(dst, size, "%s", src) writes, and returns strlen(src). */
static void
test_buf_strcpy(void)
{
	char d[6], want[6];
	const char *srcs[] = {"", "abc", "abcde", "abcdef", "abcdefghij"};
	size_t i, n;

	for (i = 0; i < sizeof(srcs) / sizeof(srcs[0]); i++) {
		memset(d, 'x', sizeof(d));
		memset(want, 'x', sizeof(want));
		snprintf(want, sizeof(want), "%s", srcs[i]);
		n = buf_strcpy(d, sizeof(d), srcs[i]);
		CHECK_INT(n, strlen(srcs[i]));
		CHECK(memcmp(d, want, sizeof(d)) == 0);
	}
	n = buf_strcpy(d, 1, "abc");
	CHECK_INT(n, 3);
	CHECK_STR(d, "");
}

/* A served model id longer than 63 bytes, as some quantised vLLM models are named. */
#define LONG_MODEL "neuralmagic/Meta-Llama-3.1-405B-Instruct-quantized.w8a8-FP8-dynamic-v2"

int
main(void)
{
	const char *env[] = {"OPENAI_API_KEY", "sk-testsecret123456", "VALERIE_MAX_BODY_BYTES",
		"2048", "VALERIE_MODELS", LONG_MODEL ",small", NULL, NULL};
	struct conf conf;
	struct json_object *v;
	char err[256];
	int devnull = open("/dev/null", O_WRONLY);

	log_set_fd(devnull);
	test_metrics_labels();
	test_buf_decimal();
	test_buf_strcpy();
	CHECK_INT(conf_load(&conf, fake_get, env, err, sizeof(err)), CONF_OK);
	app = app_create(&conf, err, sizeof(err));
	CHECK(app != NULL);
	w = app_worker_new(app);
	memtransport_init(&mt);
	http_response_init(&resp, &mt.ops);

	CHECK_INT(run("GET", "/health", NULL, HTTP_BODY_OK), 200);
	CHECK_STR(str_at("status"), "ok");
	CHECK_STR(str_at("service"), "valerie");
	CHECK_STR(str_at("version"), PACKAGE_VERSION);
	CHECK_STR(http_response_get_header(&resp, "Content-Type"), "application/json");
	CHECK_STR(http_response_get_header(&resp, "Cache-Control"), "no-store");
	CHECK_INT(run("GET", "/health/live", NULL, HTTP_BODY_OK), 200);
	CHECK_INT(run("HEAD", "/health", NULL, HTTP_BODY_OK), 200);

	CHECK_INT(run("GET", "/", NULL, HTTP_BODY_OK), 200);
	CHECK(doc != NULL && json_object_object_get_ex(doc, "endpoints", &v) &&
	    json_object_array_length(v) >= 5);

	CHECK_INT(run("GET", "/health/ready", NULL, HTTP_BODY_OK), 200);
	CHECK_STR(str_at("status"), "ready");

	CHECK_INT(run("GET", "/config", NULL, HTTP_BODY_OK), 200);
	CHECK_STR(str_at("openai_api_key"), "[redacted]");
	CHECK_STR(str_at("openai_model"), "gpt-4o-mini");
	CHECK(strstr(resp.body.data, "sk-testsecret") == NULL);

	/* GET /v1/models lists each model by its whole id, and retrieves it by that id. */
	CHECK_INT(run("GET", "/v1/models", NULL, HTTP_BODY_OK), 200);
	CHECK_CONTAINS(resp.body.data, "\"" LONG_MODEL "\"");
	CHECK_INT(run("GET", "/v1/models/" LONG_MODEL, NULL, HTTP_BODY_OK), 200);
	CHECK_STR(str_at("id"), LONG_MODEL);
	CHECK_INT(run("GET", "/v1/models/small", NULL, HTTP_BODY_OK), 200);
	CHECK_INT(run("GET", "/v1/models/smal", NULL, HTTP_BODY_OK), 404);
	CHECK_STR(err_code(), "model_not_found");

	/* Errors are JSON with the right status. */
	CHECK_INT(run("GET", "/no/such/route", NULL, HTTP_BODY_OK), 404);
	CHECK_STR(err_code(), "not_found");
	CHECK_INT(run("PUT", "/health", NULL, HTTP_BODY_OK), 405);
	CHECK_STR(err_code(), "method_not_allowed");
	CHECK_STR(http_response_get_header(&resp, "Allow"), "GET, HEAD");
	CHECK_INT(run("POST", "/health", "{}", HTTP_BODY_TOO_LARGE), 413);
	CHECK_STR(err_code(), "payload_too_large");
	CHECK_CONTAINS(resp.body.data, "2048");
	CHECK_INT(run("POST", "/health", NULL, HTTP_BODY_BAD_LENGTH), 400);
	CHECK_STR(err_code(), "bad_request");
	CHECK_INT(run("POST", "/health", NULL, HTTP_BODY_READ_FAILED), 400);
	CHECK_INT(run(NULL, "/health", NULL, HTTP_BODY_OK), 400);
	CHECK_INT(run("get", "/health", NULL, HTTP_BODY_OK), 400);
	CHECK_INT(run("GET", "health", NULL, HTTP_BODY_OK), 400);
	CHECK_INT(run("GET", NULL, NULL, HTTP_BODY_OK), 400);
	{
		static char longpath[5000];

		memset(longpath, 'a', sizeof(longpath) - 1);
		longpath[0] = '/';
		CHECK_INT(run("GET", longpath, NULL, HTTP_BODY_OK), 414);
		CHECK_STR(err_code(), "uri_too_long");
	}

	/*
	 * Each request counted once under its own labels, however the per-thread
	 * series cache maps them (GET and HEAD /health share a slot).
	 */
	{
		static const char *const series[] = {
			"valerie_http_requests_total{route=\"/health\",method=\"GET\",code=\"200\"}",
			"valerie_http_requests_total{route=\"/health\",method=\"HEAD\",code=\"200\"}",
			"valerie_http_requests_total{route=\"unmatched\",method=\"PUT\",code=\"405\"}",
			"valerie_http_requests_total{route=\"unmatched\",method=\"GET\",code=\"404\"}",
			"valerie_http_request_duration_seconds_count{route=\"/health\"}",
		};
		static const long long want[] = {5, 5, 5, 5, 10};
		long long before[5];
		int i;

		for (i = 0; i < 5; i++)
			before[i] = metric(series[i]);
		for (i = 0; i < 5; i++) {
			CHECK_INT(run("GET", "/health", NULL, HTTP_BODY_OK), 200);
			CHECK_INT(run("HEAD", "/health", NULL, HTTP_BODY_OK), 200);
			CHECK_INT(run("PUT", "/health", NULL, HTTP_BODY_OK), 405);
			CHECK_INT(run("GET", "/nope", NULL, HTTP_BODY_OK), 404);
		}
		for (i = 0; i < 5; i++)
			CHECK_INT(metric(series[i]) - before[i], want[i]);
	}

	/* Draining: readiness says 503 with the reason, liveness stays 200. */
	app_set_draining(app);
	CHECK_INT(run("GET", "/health/ready", NULL, HTTP_BODY_OK), 503);
	CHECK_STR(str_at("status"), "not_ready");
	CHECK_CONTAINS(resp.body.data, "shutting down");
	CHECK_INT(run("GET", "/health", NULL, HTTP_BODY_OK), 200);

	json_object_put(doc);
	http_response_free(&resp);
	buf_free(&mt.wire);
	app_worker_free(w);
	app_destroy(app);
	close(devnull);
	return check_done("test_app");
}
