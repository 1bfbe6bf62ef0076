/* test_mcp: the MCP answer reader (mcp_parse_answer and what the client makes of a result), no network. */
#include "config.h"

#include "check.h"
#include "mcp.h"

#include <json-c/json.h>

#define JSON "application/json"
#define SSE "text/event-stream"
#define PRIME "id: prime-1\ndata: \n\n"
#define PROGRESS "event: message\nid: n\ndata: {\"jsonrpc\":\"2.0\",\"method\":" \
	"\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n"
#define CHANGED "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n"
#define PING "data: {\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}\n\n"
#define ECHO(id) "{\"jsonrpc\":\"2.0\",\"id\":" #id ",\"result\":{\"content\":" \
	"[{\"type\":\"text\",\"text\":\"Echo: hi\"}]}}"

/* One answer read as a tools/call result: its status, text and isError. */
struct tool_case {
	const char *what, *ctype, *body;
	long long id;
	enum mcp_status st;          /* of mcp_parse_answer, then of mcp_tool_result_parse */
	const char *text;            /* the tool's text, or a word of err.text */
	int is_error, list_changed;
};

static const struct tool_case cases[] = {
	{"JSON result", JSON, ECHO(7), 7, MCP_OK, "Echo: hi", 0, 0},
	{"JSON, the id echoed as a string", JSON,
	    "{\"jsonrpc\":\"2.0\",\"id\":\"7\",\"result\":{\"content\":[]}}", 7, MCP_OK, "", 0, 0},
	{"JSON batch: ours among others", JSON, "[" "{\"jsonrpc\":\"2.0\",\"method\":"
	    "\"notifications/tools/list_changed\"}," ECHO(6) "," ECHO(7) "]", 7, MCP_OK,
	    "Echo: hi", 0, 1},
	{"JSON, another id", JSON, ECHO(8), 7, MCP_PROTOCOL, "not the JSON-RPC response", 0, 0},
	{"JSON cut short", JSON, "{\"jsonrpc\":\"2.0\",\"id\":7,\"res", 7, MCP_PROTOCOL,
	    "not the JSON-RPC response", 0, 0},
	{"JSON-RPC error", JSON, "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-32601,"
	    "\"message\":\"Method not found\"}}", 7, MCP_RPC, "Method not found", 0, 0},
	{"isError", JSON, "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"isError\":true,\"content\":"
	    "[{\"type\":\"text\",\"text\":\"first\"},{\"type\":\"text\",\"text\":\"second\"}]}}",
	    7, MCP_OK, "first\nsecond", 1, 0},
	{"other content kinds", JSON, "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"content\":["
	    "{\"type\":\"image\",\"data\":\"aGk=\",\"mimeType\":\"image/png\"},"
	    "{\"type\":\"resource\",\"resource\":{\"uri\":\"file:///a\",\"text\":\"embedded\"}},"
	    "{\"type\":\"resource_link\",\"uri\":\"file:///c\"}]}}", 7, MCP_OK,
	    "[image: image/png]\nembedded\n[resource: file:///c]", 0, 0},
	{"embedded resources: a blob's mimeType and uri are in item.resource", JSON,
	    "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"content\":["
	    "{\"type\":\"resource\",\"resource\":{\"uri\":\"file:///r.pdf\","
	    "\"mimeType\":\"application/pdf\",\"blob\":\"aGk=\"}},"
	    "{\"type\":\"resource\",\"resource\":{\"uri\":\"file:///t\","
	    "\"mimeType\":\"text/plain\",\"text\":\"plain text\"}},"
	    "{\"type\":\"resource\",\"resource\":{\"uri\":\"file:///b\",\"blob\":\"aGk=\"}},"
	    "{\"type\":\"audio\",\"data\":\"aGk=\"}]}}", 7, MCP_OK,
	    "[resource: application/pdf file:///r.pdf]\nplain text\n[resource file:///b]\n[audio]",
	    0, 0},
	{"structuredContent alone", JSON, "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"content\":[],"
	    "\"structuredContent\":{\"sum\":5}}}", 7, MCP_OK, "{\"sum\":5}", 0, 0},
	{"a result that is not an object", JSON, "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[1]}", 7,
	    MCP_PROTOCOL, "without a result object", 0, 0},
	{"SSE with a priming event", SSE, PRIME "event: message\ndata: " ECHO(7) "\n\n", 7, MCP_OK,
	    "Echo: hi", 0, 0},
	{"SSE: a server request and progress first", "Text/Event-Stream; charset=utf-8",
	    PRIME PING PROGRESS "data: " ECHO(7) "\n\n", 7, MCP_OK, "Echo: hi", 0, 0},
	{"SSE: list_changed, the answer over two data lines", SSE,
	    CHANGED "data: {\"jsonrpc\":\"2.0\",\n"
	    "data: \"id\":7,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}}\n\n",
	    7, MCP_OK, "x", 0, 1},
	{"SSE: after the answer nothing counts", SSE, "data: " ECHO(7) "\n\n" CHANGED, 7, MCP_OK,
	    "Echo: hi", 0, 0},
	{"SSE: other event names are skipped", SSE, "event: ping\ndata: " ECHO(7) "\n\n", 7,
	    MCP_PROTOCOL, "ended without the answer", 0, 0},
	{"SSE cut before the blank line", SSE, PRIME "data: " ECHO(7) "\n", 7, MCP_PROTOCOL,
	    "ended without the answer", 0, 0},
	{"SSE JSON-RPC error", SSE, PRIME "data: {\"jsonrpc\":\"2.0\",\"id\":7,\"error\":"
	    "{\"code\":-32000,\"message\":\"boom\"}}\n\n", 7, MCP_RPC, "boom", 0, 0},
	{"an empty body", SSE, "", 7, MCP_PROTOCOL, "not the JSON-RPC response", 0, 0},
};

static void
tool_cases(void)
{
	struct json_object *result;
	struct mcp_tool_result tr;
	struct mcp_error err;
	enum mcp_status st;
	size_t i;
	int changed;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct tool_case *c = &cases[i];

		memset(&err, 0, sizeof(err));
		memset(&tr, 0, sizeof(tr));
		changed = -1;
		st = mcp_parse_answer(c->ctype, c->body, strlen(c->body), c->id, &result, &changed,
		    &err);
		if (st == MCP_OK)
			st = mcp_tool_result_parse(result, &tr, &err);
		if (st != c->st)
			fprintf(stderr, "case \"%s\": %s (%s)\n", c->what, mcp_status_text(st), err.text);
		CHECK_INT(st, c->st);
		CHECK_INT(changed, c->list_changed);
		if (c->st == MCP_OK) {
			CHECK_STR(tr.text.len > 0 ? tr.text.data : "", c->text);
			CHECK_INT(tr.is_error, c->is_error);
		} else {
			CHECK_CONTAINS(err.text, c->text);
		}
		if (c->st == MCP_RPC)
			CHECK(err.rpc_code == -32601 || err.rpc_code == -32000);
		json_object_put(result);
		mcp_tool_result_free(&tr);
	}
}

/* The reader fed byte by byte stops at the answer, as it does fed whole. */
static void
bytewise(void)
{
	static const char body[] = PRIME PROGRESS "data: " ECHO(3) "\n\n" "data: garbage\n\n";
	struct json_object *result;
	struct mcp_reader r;
	struct mcp_error err;
	size_t i;
	int rc = 0;

	mcp_reader_init(&r, 3);
	for (i = 0; i < sizeof(body) - 1 && rc == 0; i++)
		rc = mcp_reader_feed(&r, SSE, body + i, 1);
	CHECK_INT(rc, 1);
	CHECK(i < sizeof(body) - 1);
	CHECK_INT(mcp_reader_finish(&r, &result, &err), MCP_OK);
	CHECK(json_object_is_type(result, json_type_object));
	json_object_put(result);
	mcp_reader_free(&r);
}

/*
 * Requests from the server in a stream are owed replies: ping an empty
 * result, the rest -32601, the id as sent; none for a request in a JSON body,
 * nor for an id that is not a string or an integer.
 */
static void
server_requests(void)
{
	static const char body[] = PRIME
	    "data: {\"jsonrpc\":\"2.0\",\"id\":\"p1\",\"method\":\"ping\"}\n\n"
	    "data: {\"jsonrpc\":\"2.0\",\"id\":12,\"method\":\"sampling/createMessage\","
	    "\"params\":{}}\n\n"
	    "data: {\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}\n\n"
	    "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n"
	    "data: " ECHO(3) "\n\n";
	static const char json[] = "[{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"ping\"}," ECHO(3) "]";
	struct json_object *result;
	struct mcp_reader r;
	struct mcp_error err;

	memset(&err, 0, sizeof(err));
	mcp_reader_init(&r, 3);
	CHECK_INT(mcp_reader_feed(&r, SSE, body, sizeof(body) - 1), 1);
	CHECK_INT(mcp_reader_finish(&r, &result, &err), MCP_OK);
	json_object_put(result);
	CHECK(r.replies != NULL && json_object_array_length(r.replies) == 2);
	if (r.replies != NULL && json_object_array_length(r.replies) == 2) {
		CHECK_STR(json_object_to_json_string_ext(json_object_array_get_idx(r.replies, 0),
		    JSON_C_TO_STRING_PLAIN), "{\"jsonrpc\":\"2.0\",\"id\":\"p1\",\"result\":{}}");
		CHECK_STR(json_object_to_json_string_ext(json_object_array_get_idx(r.replies, 1),
		    JSON_C_TO_STRING_PLAIN), "{\"jsonrpc\":\"2.0\",\"id\":12,\"error\":"
		    "{\"code\":-32601,\"message\":\"Method not found\"}}");
	}
	mcp_reader_free(&r);

	mcp_reader_init(&r, 3);
	mcp_reader_feed(&r, JSON, json, sizeof(json) - 1);
	CHECK_INT(mcp_reader_finish(&r, &result, &err), MCP_OK);
	json_object_put(result);
	CHECK(r.replies == NULL);
	mcp_reader_free(&r);
}

/*
 * A stream cut after an event with an id may be resumed: the id and retry:
 * are kept, a half-read event dropped, and the new stream read on; an id that
 * cannot go back in a header, a failed or a JSON reader may not.
 */
static void
resumable(void)
{
	static const char cut[] = "id: s-0\nretry: 250\ndata: \n\nid: s-1\ndata: {\"jsonr";
	static const char rest[] = "id: s-2\ndata: " ECHO(3) "\n\n";
	static const char ctl[] = "id: a\001b\ndata: \n\n";
	struct json_object *result;
	struct mcp_reader r;
	struct mcp_error err;
	char longid[300 + 16];

	memset(&err, 0, sizeof(err));
	mcp_reader_init(&r, 3);
	CHECK_INT(mcp_reader_feed(&r, SSE, cut, sizeof(cut) - 1), 0);
	CHECK(mcp_reader_resumable(&r));
	CHECK_STR(r.sse.last_id, "s-0");
	CHECK(r.sse.has_retry && r.sse.retry_ms == 250);
	mcp_reader_restart(&r);
	CHECK_STR(r.sse.last_id, "s-0");
	CHECK(r.sse.has_retry && r.sse.retry_ms == 250);
	CHECK_INT(mcp_reader_feed(&r, SSE, rest, sizeof(rest) - 1), 1);
	CHECK(!mcp_reader_resumable(&r));
	CHECK_INT(mcp_reader_finish(&r, &result, &err), MCP_OK);
	json_object_put(result);
	mcp_reader_free(&r);

	mcp_reader_init(&r, 3);
	mcp_reader_feed(&r, SSE, ctl, sizeof(ctl) - 1);
	CHECK(!mcp_reader_resumable(&r));
	mcp_reader_free(&r);

	memset(longid, 'x', sizeof(longid));
	memcpy(longid, "id: ", 4);
	memcpy(longid + 300, "\ndata: \n\n", 10);   /* its NUL included */
	mcp_reader_init(&r, 3);
	mcp_reader_feed(&r, SSE, longid, strlen(longid));
	CHECK(!mcp_reader_resumable(&r));
	mcp_reader_free(&r);

	mcp_reader_init(&r, 3);
	mcp_reader_feed(&r, JSON, "{", 1);
	CHECK(!mcp_reader_resumable(&r));
	mcp_reader_free(&r);
}

/* tools/list pages: valid names kept, the cursor followed only when there is one. */
static void
tools_pages(void)
{
	static const char page1[] = "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":["
	    "{\"name\":\"echo\"},{\"name\":\"\"},{\"name\":5},\"x\",{\"name\":\"a\\u0000b\"},"
	    "{\"name\":\"add\"}],\"nextCursor\":\"p2\"}}";
	static const char page2[] = "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"tools\":"
	    "[{\"name\":\"book\"}],\"nextCursor\":\"\"}}";
	static const char none[] = "{\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{}}";
	struct json_object *all = json_object_new_array(), *res, *next;
	struct mcp_error err;

	memset(&err, 0, sizeof(err));
	CHECK_INT(mcp_parse_answer(JSON, page1, strlen(page1), 2, &res, NULL, &err), MCP_OK);
	CHECK_INT(mcp_tools_page(res, all, &next, &err), MCP_OK);
	CHECK(next != NULL && strcmp(json_object_get_string(next), "p2") == 0);
	CHECK_INT(json_object_array_length(all), 2);
	json_object_put(res);
	CHECK_INT(mcp_parse_answer(JSON, page2, strlen(page2), 3, &res, NULL, &err), MCP_OK);
	CHECK_INT(mcp_tools_page(res, all, &next, &err), MCP_OK);
	CHECK(next == NULL);
	CHECK_INT(json_object_array_length(all), 3);
	json_object_put(res);
	CHECK_INT(mcp_parse_answer(JSON, none, strlen(none), 4, &res, NULL, &err), MCP_OK);
	CHECK_INT(mcp_tools_page(res, all, &next, &err), MCP_PROTOCOL);
	CHECK_CONTAINS(err.text, "tools array");
	json_object_put(res);
	json_object_put(all);
}

int
main(void)
{
	tool_cases();
	bytewise();
	server_requests();
	resumable();
	tools_pages();
	return check_done("test_mcp");
}
