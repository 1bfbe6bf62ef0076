/* fuzz_mcp: the MCP answer reader on any body, JSON or SSE, whole and byte by byte: same outcome, no crash. */
#include "config.h"

#include "mcp.h"

#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Input: one control byte, then the answer body. Control bit 0: the body is
 * text/event-stream (else application/json); bits 1-2: what the result is
 * read as (0: a plain request, 1: tools/call, 2: tools/list, 3: both);
 * bits 3-7: our request id minus 1 (1 to 32).
 */
#define CTL_SSE 0x01
#define CTL_KIND(b) (((b) >> 1) & 3)
#define CTL_ID(b) ((long long)((b) >> 3) + 1)

/* What one reading yields, for comparing two of them. */
struct outcome {
	enum mcp_status st;
	struct mcp_error err;
	int list_changed;
	struct buf result;       /* the result as JSON text */
};

static void
outcome_free(struct outcome *o)
{
	buf_free(&o->result);
}

static void
outcome_set(struct outcome *o, enum mcp_status st, struct json_object *result)
{
	o->st = st;
	if (result != NULL)
		buf_puts(&o->result, json_object_to_json_string_ext(result, JSON_C_TO_STRING_PLAIN));
}

/* The same reader fed one byte at a time, as a slow server would send it. */
static void
read_bytewise(const char *ctype, const char *body, size_t len, long long id, struct outcome *o)
{
	struct json_object *result = NULL;
	struct mcp_reader r;
	size_t i;

	mcp_reader_init(&r, id);
	for (i = 0; i < len; i++)
		if (mcp_reader_feed(&r, ctype, body + i, 1) != 0)
			break;
	outcome_set(o, mcp_reader_finish(&r, &result, &o->err), result);
	o->list_changed = r.list_changed;
	json_object_put(result);
	mcp_reader_free(&r);
}

/* What the client makes of a result: the tool's text, or the pages of tools. */
static void
use_result(struct json_object *result, int kind)
{
	struct mcp_tool_result tr;
	struct mcp_error err;
	struct json_object *all, *next, *name;
	size_t i, n;

	memset(&err, 0, sizeof(err));
	if (kind & 1) {
		if (mcp_tool_result_parse(result, &tr, &err) == MCP_OK &&
		    tr.text.len > 0 && (tr.text.data == NULL || tr.text.data[tr.text.len] != '\0'))
			abort();
		mcp_tool_result_free(&tr);
	}
	if (kind & 2) {
		all = json_object_new_array();
		if (mcp_tools_page(result, all, &next, &err) == MCP_OK) {
			if (next != NULL && !json_object_is_type(next, json_type_string))
				abort();
			n = json_object_array_length(all);
			if (n > MCP_TOOLS_MAX)
				abort();
			for (i = 0; i < n; i++) {
				if (!json_object_object_get_ex(json_object_array_get_idx(all, i), "name",
				    &name) || json_object_get_string_len(name) < 1 ||
				    json_object_get_string_len(name) > MCP_TOOL_NAME_MAX)
					abort();
			}
		}
		json_object_put(all);
	}
	if (memchr(err.text, '\0', sizeof(err.text)) == NULL)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object *result = NULL;
	struct outcome whole, bytewise;
	const char *ctype, *body;
	long long id;
	size_t len;

	if (size < 1)
		return 0;
	ctype = data[0] & CTL_SSE ? "text/event-stream" : "application/json";
	id = CTL_ID(data[0]);
	body = (const char *)data + 1;
	len = size - 1;

	memset(&whole, 0, sizeof(whole));
	memset(&bytewise, 0, sizeof(bytewise));
	outcome_set(&whole, mcp_parse_answer(ctype, body, len, id, &result, &whole.list_changed,
	    &whole.err), result);
	if (whole.st != MCP_OK && result != NULL)
		abort();   /* a result only with MCP_OK */
	if (memchr(whole.err.text, '\0', sizeof(whole.err.text)) == NULL ||
	    mcp_status_text(whole.st) == NULL)
		abort();
	if (whole.st == MCP_OK)
		use_result(result, CTL_KIND(data[0]));
	json_object_put(result);

	read_bytewise(ctype, body, len, id, &bytewise);
	if (whole.st != bytewise.st || whole.list_changed != bytewise.list_changed ||
	    whole.err.rpc_code != bytewise.err.rpc_code ||
	    strcmp(whole.err.text, bytewise.err.text) != 0 ||
	    whole.result.len != bytewise.result.len ||
	    (whole.result.len > 0 && memcmp(whole.result.data, bytewise.result.data,
	    whole.result.len) != 0))
		abort();
	outcome_free(&whole);
	outcome_free(&bytewise);
	return 0;
}
