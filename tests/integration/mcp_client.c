/* mcp_client: drives app/mcp.c and app/agents.c from the command line for test_mcp_client.py. */
#include "config.h"

#include "agents.h"
#include "circuit.h"
#include "conf.h"
#include "httpc.h"
#include "log.h"
#include "mcp.h"
#include "metrics.h"
#include "vtime.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * usage: mcp_client COMMAND [ARGS]... [-- COMMAND [ARGS]...]...
 * Runs the commands in order in one process (sessions and caches persist
 * between them) and prints one JSON line per command:
 *   list                          the toolset of the enabled agents (mapped names, definitions)
 *   call AGENT TOOL ARGS          agents_call
 *   callmapped NAME ARGS          agents_tool_lookup in the last list, then agents_call
 *   parallel N AGENT TOOL ARGS    N threads call at once (one shared session)
 *   parallel-list N               N threads get the toolset at once: tools and ms of each
 *   health                        agents_health_json
 *   metrics                       the exposition after agents_metrics_scrape
 *   wait-file PATH                waits until PATH exists (the test acts meanwhile)
 *   end-sessions                  agents_end_sessions, as the worker at exit (timed)
 *   mcp.list | mcp.call TOOL ARGS | mcp.request METHOD PARAMS | mcp.end
 *                                 the raw client on $VALERIE_TEST_MCP_URL (answer cap
 *                                 $VALERIE_TEST_MCP_MAX_BYTES); mcp.end is timed
 * The agents come from the environment (MCP_<NAME>_URL...), the breakers and
 * metrics live in $VALERIE_DATA_DIR. At exit the agents' sessions are ended
 * as the worker ends them.
 */

extern char **environ;

static struct agents *agents;
static struct agents_toolset *last;
static struct mcp_client *raw;
static struct httpc *http;

static void
print(struct json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE));
	fflush(stdout);
	json_object_put(o);
}

static struct json_object *
result_json(const struct agents_result *r)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "outcome", json_object_new_string(agents_outcome_text(r->outcome)));
	json_object_object_add(o, "is_error", json_object_new_boolean(r->is_error));
	json_object_object_add(o, "text", json_object_new_string_len(r->text.data != NULL ?
	    r->text.data : "", (int)r->text.len));
	json_object_object_add(o, "attempts", json_object_new_int(r->attempts));
	json_object_object_add(o, "ms", json_object_new_int64(r->duration_ms));
	return o;
}

static void
cmd_list(void)
{
	struct json_object *o = json_object_new_object(), *map = json_object_new_array(), *e, *defs;
	const char *agent, *tool, *name;
	size_t i, n;

	agents_toolset_free(last);
	last = agents_toolset_get(agents, http, NULL);
	defs = agents_tools_openai(last);
	n = json_object_array_length(defs);
	for (i = 0; i < n; i++) {
		struct json_object *fn, *v;

		json_object_object_get_ex(json_object_array_get_idx(defs, i), "function", &fn);
		json_object_object_get_ex(fn, "name", &v);
		name = json_object_get_string(v);
		e = json_object_new_object();
		json_object_object_add(e, "name", json_object_new_string(name));
		if (agents_tool_lookup(last, name, &agent, &tool) == 0) {
			json_object_object_add(e, "agent", json_object_new_string(agent));
			json_object_object_add(e, "tool", json_object_new_string(tool));
		}
		json_object_array_add(map, e);
	}
	json_object_object_add(o, "map", map);
	json_object_object_add(o, "defs", json_object_get(defs));
	print(o);
}

static void
cmd_call(const char *agent, const char *tool, const char *args)
{
	struct agents_result r;

	agents_call(agents, http, agent, tool, args, NULL, &r);
	print(result_json(&r));
	agents_result_free(&r);
}

static void
cmd_callmapped(const char *name, const char *args)
{
	const char *agent, *tool;
	struct json_object *o;

	if (agents_tool_lookup(last, name, &agent, &tool) != 0) {
		o = json_object_new_object();
		json_object_object_add(o, "lookup", json_object_new_string("unknown"));
		print(o);
		return;
	}
	cmd_call(agent, tool, args);
}

struct par {
	pthread_t t;
	const char *agent, *tool, *args;
	struct agents_result r;
};

static void *
par_run(void *p)
{
	struct par *x = p;
	struct httpc *h = httpc_new();

	agents_call(agents, h, x->agent, x->tool, x->args, NULL, &x->r);
	httpc_free(h);
	return NULL;
}

static void
cmd_parallel(int n, const char *agent, const char *tool, const char *args)
{
	struct par *p = calloc((size_t)n, sizeof(*p));
	struct json_object *o = json_object_new_array();
	int i;

	for (i = 0; i < n; i++) {
		p[i].agent = agent;
		p[i].tool = tool;
		p[i].args = args;
		pthread_create(&p[i].t, NULL, par_run, &p[i]);
	}
	for (i = 0; i < n; i++) {
		pthread_join(p[i].t, NULL);
		json_object_array_add(o, result_json(&p[i].r));
		agents_result_free(&p[i].r);
	}
	free(p);
	print(o);
}

struct parlist {
	pthread_t t;
	size_t ntools;
	long long ms;
};

static void *
parlist_run(void *p)
{
	struct parlist *x = p;
	struct httpc *h = httpc_new();
	struct agents_toolset *ts;
	long long t0 = vtime_mono_ms();

	ts = agents_toolset_get(agents, h, NULL);
	x->ms = vtime_mono_ms() - t0;
	x->ntools = ts != NULL ? json_object_array_length(agents_tools_openai(ts)) : 0;
	agents_toolset_free(ts);
	httpc_free(h);
	return NULL;
}

static void
cmd_parallel_list(int n)
{
	struct parlist *p = calloc((size_t)n, sizeof(*p));
	struct json_object *o = json_object_new_array(), *e;
	int i;

	for (i = 0; i < n; i++)
		pthread_create(&p[i].t, NULL, parlist_run, &p[i]);
	for (i = 0; i < n; i++) {
		pthread_join(p[i].t, NULL);
		e = json_object_new_object();
		json_object_object_add(e, "tools", json_object_new_int64((long long)p[i].ntools));
		json_object_object_add(e, "ms", json_object_new_int64(p[i].ms));
		json_object_array_add(o, e);
	}
	free(p);
	print(o);
}

static struct json_object *
raw_json(enum mcp_status st, const struct mcp_error *e)
{
	struct json_object *o = json_object_new_object();
	char version[32], session[MCP_SESSION_ID_MAX + 1];

	mcp_session_info(raw, version, sizeof(version), session, sizeof(session));
	json_object_object_add(o, "status", json_object_new_string(mcp_status_text(st)));
	json_object_object_add(o, "version", json_object_new_string(version));
	json_object_object_add(o, "session", json_object_new_string(session));
	if (st != MCP_OK) {
		json_object_object_add(o, "error", json_object_new_string(e->text));
		json_object_object_add(o, "sent", json_object_new_boolean(e->sent));
		json_object_object_add(o, "http_status", json_object_new_int64(e->http_status));
		json_object_object_add(o, "rpc_code", json_object_new_int64(e->rpc_code));
	}
	json_object_object_add(o, "list_changed",
	    json_object_new_boolean(mcp_take_list_changed(raw)));
	return o;
}

static void
raw_opts(struct mcp_opts *o)
{
	const char *t = getenv("VALERIE_TEST_MCP_TIMEOUT_MS");

	memset(o, 0, sizeof(*o));
	o->timeout_ms = t != NULL ? strtoll(t, NULL, 10) : 10000;
}

static void
cmd_raw(char **argv, int argc)
{
	struct json_object *res = NULL, *o, *params = NULL;
	struct mcp_tool_result tr;
	struct mcp_error e;
	struct mcp_opts opts;
	enum mcp_status st;

	raw_opts(&opts);
	if (strcmp(argv[0], "mcp.list") == 0) {
		st = mcp_list_tools(raw, http, &opts, &res, &e);
		o = raw_json(st, &e);
		if (res != NULL) {
			struct json_object *names = json_object_new_array(), *name;
			size_t i, n = json_object_array_length(res);

			for (i = 0; i < n; i++) {
				json_object_object_get_ex(json_object_array_get_idx(res, i), "name", &name);
				json_object_array_add(names, json_object_get(name));
			}
			json_object_object_add(o, "tools", names);
		}
		json_object_put(res);
	} else if (strcmp(argv[0], "mcp.call") == 0 && argc >= 3) {
		params = mcp_json_parse(argv[2], strlen(argv[2]));
		st = mcp_call_tool(raw, http, &opts, argv[1], params, &tr, &e);
		o = raw_json(st, &e);
		json_object_object_add(o, "is_error", json_object_new_boolean(tr.is_error));
		json_object_object_add(o, "text", json_object_new_string_len(tr.text.data != NULL ?
		    tr.text.data : "", (int)tr.text.len));
		mcp_tool_result_free(&tr);
	} else if (strcmp(argv[0], "mcp.end") == 0) {
		long long t0 = vtime_mono_ms();

		st = mcp_session_end(raw, http, opts.timeout_ms, &e);
		o = raw_json(st, &e);
		json_object_object_add(o, "ms", json_object_new_int64(vtime_mono_ms() - t0));
	} else if (strcmp(argv[0], "mcp.request") == 0 && argc >= 3) {
		params = mcp_json_parse(argv[2], strlen(argv[2]));
		st = mcp_request(raw, http, &opts, argv[1], params, &res, &e);
		o = raw_json(st, &e);
		if (res != NULL)
			json_object_object_add(o, "result", res);
	} else {
		fprintf(stderr, "mcp_client: bad raw command %s\n", argv[0]);
		exit(2);
	}
	json_object_put(params);
	print(o);
}

static void
cmd_metrics(void)
{
	struct json_object *o = json_object_new_object();
	struct buf b;

	buf_init(&b);
	agents_metrics_scrape(agents);
	metrics_render(&b);
	json_object_object_add(o, "metrics", json_object_new_string_len(b.data != NULL ?
	    b.data : "", (int)b.len));
	buf_free(&b);
	print(o);
}

static void
cmd_end_sessions(void)
{
	struct json_object *o = json_object_new_object();
	long long t0 = vtime_mono_ms();

	agents_end_sessions(agents, AGENTS_END_SESSIONS_MS);
	json_object_object_add(o, "ms", json_object_new_int64(vtime_mono_ms() - t0));
	print(o);
}

static void
cmd_wait_file(const char *path)
{
	struct json_object *o = json_object_new_object();
	struct timespec ts = {0, 20 * 1000000L};

	json_object_object_add(o, "waiting", json_object_new_string(path));
	print(o);
	while (access(path, F_OK) != 0)
		nanosleep(&ts, NULL);
}

int
main(int argc, char **argv)
{
	struct conf conf;
	struct circuits *cs;
	char err[256], path[4096];
	const char *url = getenv("VALERIE_TEST_MCP_URL"), *max = getenv("VALERIE_TEST_MCP_MAX_BYTES");
	int i, j, rc = 0;

	if (conf_load_env(&conf, err, sizeof(err)) != CONF_OK) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "config_error", json_object_new_string(err));
		print(o);
		return 78;
	}
	log_set_level(LOG_LVL_DEBUG);
	if (httpc_global_init(NULL, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	snprintf(path, sizeof(path), "%s/valerie.circuits", conf.data_dir);
	cs = circuits_open(path, err, sizeof(err));
	snprintf(path, sizeof(path), "%s/valerie.metrics", conf.data_dir);
	if (cs == NULL || metrics_open(path, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	agents = agents_open(&conf, cs, environ, err, sizeof(err));
	http = httpc_new();
	raw = mcp_client_new(url != NULL ? url : "http://127.0.0.1:9/mcp",
	    max != NULL ? (size_t)strtoull(max, NULL, 10) : 0);
	if (agents == NULL || http == NULL || raw == NULL) {
		fprintf(stderr, "mcp_client: %s\n", agents == NULL ? err : "out of memory");
		return 1;
	}
	for (i = 1; i < argc; i = j + 1) {
		int n;

		for (j = i; j < argc && strcmp(argv[j], "--") != 0; j++)
			;
		n = j - i;
		if (strcmp(argv[i], "list") == 0)
			cmd_list();
		else if (strcmp(argv[i], "call") == 0 && n >= 4)
			cmd_call(argv[i + 1], argv[i + 2], argv[i + 3]);
		else if (strcmp(argv[i], "callmapped") == 0 && n >= 3)
			cmd_callmapped(argv[i + 1], argv[i + 2]);
		else if (strcmp(argv[i], "parallel") == 0 && n >= 5)
			cmd_parallel((int)strtol(argv[i + 1], NULL, 10), argv[i + 2], argv[i + 3], argv[i + 4]);
		else if (strcmp(argv[i], "parallel-list") == 0 && n >= 2)
			cmd_parallel_list((int)strtol(argv[i + 1], NULL, 10));
		else if (strcmp(argv[i], "health") == 0)
			print(agents_health_json(agents));
		else if (strcmp(argv[i], "metrics") == 0)
			cmd_metrics();
		else if (strcmp(argv[i], "wait-file") == 0 && n >= 2)
			cmd_wait_file(argv[i + 1]);
		else if (strcmp(argv[i], "end-sessions") == 0)
			cmd_end_sessions();
		else if (strncmp(argv[i], "mcp.", 4) == 0)
			cmd_raw(argv + i, n);
		else {
			fprintf(stderr, "mcp_client: bad command %s\n", argv[i]);
			rc = 2;
			break;
		}
	}
	agents_toolset_free(last);
	mcp_client_free(raw);
	agents_end_sessions(agents, AGENTS_END_SESSIONS_MS);
	agents_close(agents);
	httpc_free(http);
	metrics_close();
	circuits_close(cs);
	return rc;
}
