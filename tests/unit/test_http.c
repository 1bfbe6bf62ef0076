/* test_http: the error document, response headers and streaming through a transport. */
#include "config.h"

#include "check.h"
#include "http.h"
#include "memtransport.h"

#include <json-c/json.h>

/* Parses resp's body and returns error.code (static copy), or NULL. */
static const char *
error_code(const struct http_response *resp)
{
	static char code[64];
	struct json_object *doc, *err, *c, *msg;
	const char *out = NULL;

	doc = json_tokener_parse(resp->body.data);
	if (doc != NULL && json_object_object_get_ex(doc, "error", &err) &&
	    json_object_object_get_ex(err, "code", &c) &&
	    json_object_object_get_ex(err, "message", &msg) &&
	    json_object_is_type(msg, json_type_string) && json_object_object_length(doc) == 1) {
		snprintf(code, sizeof(code), "%s", json_object_get_string(c));
		out = code;
	}
	json_object_put(doc);
	return out;
}

int
main(void)
{
	struct memtransport mt;
	struct http_response resp;
	struct http_header hs[] = {{"x-api-key", "k"}, {"accept", "text/event-stream"}};
	struct http_request req = {0};
	char big[300];

	memtransport_init(&mt);
	http_response_init(&resp, &mt.ops);

	/* The error document is exactly {"error":{"code","message"}}. */
	http_response_error(&resp, 404, "not_found", "no such route \"x\"");
	CHECK_INT(resp.status, 404);
	CHECK_STR(error_code(&resp), "not_found");
	CHECK_STR(http_response_get_header(&resp, "content-type"), "application/json");
	/* A second error replaces the first body, it does not append. */
	http_response_error(&resp, 400, "bad_request", "x");
	CHECK_STR(error_code(&resp), "bad_request");

	/* Headers: replaced by name, CR/LF and oversize refused. */
	CHECK_INT(http_response_header(&resp, "X-A", "1"), 0);
	CHECK_INT(http_response_header(&resp, "x-a", "2"), 0);
	CHECK_STR(http_response_get_header(&resp, "X-A"), "2");
	CHECK_INT(http_response_header(&resp, "X-B", "a\r\nSet-Cookie: x"), -1);
	CHECK_INT(http_response_header(&resp, "X-B\n", "a"), -1);
	memset(big, 'v', sizeof(big));
	big[sizeof(big) - 1] = '\0';
	CHECK_INT(http_response_header(&resp, "X-Big", big), -1);
	CHECK(http_response_get_header(&resp, "X-B") == NULL);

	/* Reset keeps nothing of the previous response. */
	http_response_reset(&resp);
	CHECK_INT(resp.status, 200);
	CHECK_INT(resp.nheaders, 0);
	CHECK_INT(resp.body.len, 0);

	/* Streaming: head once, then each chunk flushed. */
	http_response_header(&resp, "Content-Type", "text/event-stream");
	CHECK_INT(http_stream_write(&resp, "event: delta\n\n", 14), 0);
	CHECK_INT(http_stream_write(&resp, "event: done\n\n", 13), 0);
	CHECK_CONTAINS(mt.wire.data, "Status: 200\r\nContent-Type: text/event-stream\r\n\r\n"
	    "event: delta\n\nevent: done\n\n");
	CHECK(mt.flushes >= 2);
	CHECK_INT(resp.bytes_sent, 27);

	/* A client that goes away: the next write fails and the response is aborted. */
	CHECK_INT(http_client_gone(&resp), 0);
	mt.gone = 1;
	CHECK_INT(http_client_gone(&resp), 1);
	CHECK_INT(http_stream_write(&resp, "x", 1), -1);
	CHECK_INT(resp.aborted, 1);

	/* Request headers by lower-case name. */
	req.headers = hs;
	req.nheaders = 2;
	CHECK_STR(http_request_header(&req, "x-api-key"), "k");
	CHECK(http_request_header(&req, "authorization") == NULL);

	/* A query, parameter by parameter, raw; then decoded. */
	{
		const char *q = "&limit=%31&&before&x=a%2Bb+c&=v&n=";
		struct http_query_param p;
		char out[16];

		CHECK_INT(http_query_next(&q, &p), 1);
		CHECK_INT(p.name_len, 5);
		CHECK(strncmp(p.name, "limit", 5) == 0);
		CHECK_INT(p.value_len, 3);
		CHECK(strncmp(p.value, "%31", 3) == 0);
		CHECK_INT(http_query_decode(p.value, p.value_len, out, sizeof(out)), HTTP_DECODE_OK);
		CHECK_STR(out, "1");
		CHECK_INT(http_query_next(&q, &p), 1);
		CHECK(p.name_len == 6 && strncmp(p.name, "before", 6) == 0 && p.value_len == 0);
		CHECK_INT(http_query_next(&q, &p), 1);
		CHECK_INT(http_query_decode(p.value, p.value_len, out, sizeof(out)), HTTP_DECODE_OK);
		CHECK_STR(out, "a+b c");
		CHECK_INT(http_query_next(&q, &p), 1);
		CHECK(p.name_len == 0 && p.value_len == 1);
		CHECK_INT(http_query_next(&q, &p), 1);
		CHECK(p.name_len == 1 && p.value_len == 0);
		CHECK_INT(http_query_next(&q, &p), 0);
		CHECK_INT(http_query_next(&q, &p), 0);
		q = "";
		CHECK_INT(http_query_next(&q, &p), 0);

		CHECK_INT(http_query_decode("%6c%69MIT", 9, out, sizeof(out)), HTTP_DECODE_OK);
		CHECK_STR(out, "liMIT");
		CHECK_INT(http_query_decode("", 0, out, sizeof(out)), HTTP_DECODE_OK);
		CHECK_STR(out, "");
		CHECK_INT(http_query_decode("%zz", 3, out, sizeof(out)), HTTP_DECODE_BAD);
		CHECK_INT(http_query_decode("1%3", 3, out, sizeof(out)), HTTP_DECODE_BAD);
		CHECK_INT(http_query_decode("1%", 2, out, sizeof(out)), HTTP_DECODE_BAD);
		CHECK_INT(http_query_decode("%3g", 3, out, sizeof(out)), HTTP_DECODE_BAD);
		CHECK_INT(http_query_decode("a%00b", 5, out, sizeof(out)), HTTP_DECODE_BAD);
		/* "%31" fits a 2-byte buffer (one byte and the NUL); "12" does not. */
		CHECK_INT(http_query_decode("%31", 3, out, 2), HTTP_DECODE_OK);
		CHECK_INT(http_query_decode("12", 2, out, 2), HTTP_DECODE_TOO_LONG);
		CHECK_INT(http_query_decode("", 0, out, 0), HTTP_DECODE_TOO_LONG);
	}

	CHECK_STR(http_status_text(413), "Content Too Large");
	CHECK_STR(http_status_text(799), "Unknown");

	http_response_free(&resp);
	buf_free(&mt.wire);
	return check_done("test_http");
}
