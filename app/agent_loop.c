/* agent_loop: a chat turn's model calls, running the agent tools the model asks for in between. */
#include "config.h"

#include "agent_loop.h"
#include "agents.h"
#include "conf.h"
#include "handler.h"
#include "httpc.h"
#include "log.h"
#include "store.h"
#include "trace.h"
#include "vtime.h"

#include <json-c/json.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AGENT_PARALLEL_MAX 8           /* tool calls run at once */
#define AGENT_THREAD_STACK (256 * 1024)
#define JSON_PLAIN (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
#define IDEM_CACHE_PREFIX "agentcall:"   /* + 64 hex digits: a cache key */
#define IDEM_CACHE_TTL_DEFAULT 86400     /* seconds, without a session TTL */

void
agent_turn_free(struct agent_turn *at)
{
	if (at == NULL)
		return;
	json_object_put(at->steps);
	json_object_put(at->calls);
	memset(at, 0, sizeof(*at));
}

/* One tool call to run: what the model asked, and what came of it. */
struct job {
	struct agents *agents;
	struct httpc *http;              /* the request thread's, or NULL: make one */
	const struct agents_ctl *ctl;
	const struct trace_turn *trace;
	char agent[AGENTS_NAME_MAX + 1];
	char tool[AGENTS_TOOL_NAME_MAX * 2 + 1];
	const char *arguments;
	int known;                       /* the name resolved to an agent's tool */
	int recorded;                    /* res is the result recorded under the turn's
	                                    Idempotency-Key: the agent is not called */
	char cache_key[sizeof(IDEM_CACHE_PREFIX) + 64];   /* where to record it, or "" */
	struct agents_result res;
};

static void
run_job(struct job *j)
{
	struct httpc *own = NULL;
	struct trace_tool tt;
	long long t0 = trace_now_ns();

	if (j->recorded)
		return;
	memset(&j->res, 0, sizeof(j->res));
	if (!j->known) {
		j->res.is_error = 1;
		buf_puts(&j->res.text, "no such tool: the name is not one of the tools offered");
		return;
	}
	if (j->http == NULL)
		j->http = own = httpc_new();
	if (j->http == NULL) {
		j->res.is_error = 1;
		buf_puts(&j->res.text, "the gateway ran out of memory for this call");
		return;
	}
	agents_call(j->agents, j->http, j->agent, j->tool, j->arguments, j->ctl, &j->res);
	httpc_free(own);
	j->http = NULL;
	memset(&tt, 0, sizeof(tt));
	tt.agent = j->agent;
	tt.tool = j->tool;
	tt.start_ns = t0;
	tt.end_ns = trace_now_ns();
	tt.error = j->res.is_error ? agents_outcome_text(j->res.outcome) : NULL;
	tt.input = j->arguments;
	tt.output = j->res.text.data != NULL ? j->res.text.data : "";
	tt.output_len = j->res.text.len;
	trace_tool(j->trace, &tt);
}

static void *
job_thread(void *arg)
{
	run_job(arg);
	return NULL;
}

/* Runs jobs[0..n): the first on this thread, the others on threads of their own. */
static void
run_jobs(struct job *jobs, size_t n)
{
	pthread_t th[AGENT_PARALLEL_MAX];
	int started[AGENT_PARALLEL_MAX];
	pthread_attr_t attr;
	size_t i;

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, AGENT_THREAD_STACK);
	for (i = 1; i < n; i++) {
		jobs[i].http = NULL;
		started[i] = !jobs[i].recorded &&
		    pthread_create(&th[i], &attr, job_thread, &jobs[i]) == 0;
	}
	pthread_attr_destroy(&attr);
	run_job(&jobs[0]);
	for (i = 1; i < n; i++) {
		if (started[i])
			pthread_join(th[i], NULL);
		else
			run_job(&jobs[i]);   /* no thread to be had: in turn, here */
	}
}

/*
 * Resolves a tool name the model used: a name the toolset offered, or the
 * offline provider's "<agent>.<tool>" (its /tool test rule names tools as
 * written).
 */
static int
resolve(const struct agents_toolset *ts, const char *name, struct job *j)
{
	const char *agent, *tool, *dot;

	if (ts != NULL && agents_tool_lookup(ts, name, &agent, &tool) == 0) {
		snprintf(j->agent, sizeof(j->agent), "%s", agent);
		snprintf(j->tool, sizeof(j->tool), "%s", tool);
		return 1;
	}
	dot = strchr(name, '.');
	if (dot == NULL || dot == name || dot[1] == '\0' ||
	    (size_t)(dot - name) > AGENTS_NAME_MAX)
		return 0;
	snprintf(j->agent, sizeof(j->agent), "%.*s", (int)(dot - name), name);
	snprintf(j->tool, sizeof(j->tool), "%s", dot + 1);
	return 1;
}

/*
 * How many times before jobs[i] this turn ran the same tool with the same
 * arguments: the calls summed up in at->calls, then jobs[0..i).
 */
static int
occurrence(const struct agent_turn *at, const struct job *jobs, size_t i)
{
	const struct job *j = &jobs[i];
	struct json_object *c, *v;
	size_t n, m;
	int occ = 0;

	n = json_object_array_length(at->calls);
	for (m = 0; m < n; m++) {
		c = json_object_array_get_idx(at->calls, m);
		if (json_object_object_get_ex(c, "name", &v) &&
		    strcmp(json_object_get_string(v), j->agent) == 0 &&
		    json_object_object_get_ex(c, "tool", &v) &&
		    strcmp(json_object_get_string(v), j->tool) == 0 &&
		    json_object_object_get_ex(c, "arguments", &v) &&
		    strcmp(json_object_get_string(v), j->arguments) == 0)
			occ++;
	}
	for (m = 0; m < i; m++)
		if (jobs[m].known && jobs[m].arguments != NULL &&
		    strcmp(jobs[m].agent, j->agent) == 0 &&
		    strcmp(jobs[m].tool, j->tool) == 0 &&
		    strcmp(jobs[m].arguments, j->arguments) == 0)
			occ++;
	return occ;
}

/*
 * Sets j->cache_key to IDEM_CACHE_PREFIX and the SHA-256 (hex) of the scoped
 * Idempotency-Key, the agent, the tool, the arguments as sent and `occ`,
 * each ended by a NUL (none of them holds one). Leaves it "" when OpenSSL
 * fails (out of memory): the call then runs unrecorded.
 */
static void
cache_key(const char *idem, struct job *j, int occ)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0, i;
	char num[24];
	EVP_MD_CTX *h = EVP_MD_CTX_new();
	int ok;

	j->cache_key[0] = '\0';
	if (h == NULL)
		return;
	snprintf(num, sizeof(num), "%d", occ);
	ok = EVP_DigestInit_ex(h, EVP_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(h, idem, strlen(idem) + 1) == 1 &&
	    EVP_DigestUpdate(h, j->agent, strlen(j->agent) + 1) == 1 &&
	    EVP_DigestUpdate(h, j->tool, strlen(j->tool) + 1) == 1 &&
	    EVP_DigestUpdate(h, j->arguments, strlen(j->arguments) + 1) == 1 &&
	    EVP_DigestUpdate(h, num, strlen(num) + 1) == 1 &&
	    EVP_DigestFinal_ex(h, md, &n) == 1 && n == 32;
	EVP_MD_CTX_free(h);
	if (!ok)
		return;
	memcpy(j->cache_key, IDEM_CACHE_PREFIX, sizeof(IDEM_CACHE_PREFIX) - 1);
	for (i = 0; i < n; i++) {
		j->cache_key[sizeof(IDEM_CACHE_PREFIX) - 1 + 2 * i] = hex[md[i] >> 4];
		j->cache_key[sizeof(IDEM_CACHE_PREFIX) - 1 + 2 * i + 1] = hex[md[i] & 15];
	}
	j->cache_key[sizeof(IDEM_CACHE_PREFIX) - 1 + 2 * n] = '\0';
}

/*
 * Before jobs[0..k) run, on the request thread (the store connection is
 * its own): for a turn with an Idempotency-Key, a call that ran before under
 * that key (a first attempt of the turn that failed after it) takes the
 * result recorded then, and is not run again: a tool that books something
 * books it once. The recorded value is "0" or "1" (is_error) and the text.
 * NOTE: a store that fails here never fails the turn: the call runs, as
 * without a key, and is not recorded (the store is not asked twice).
 */
static void
recall(struct handler_ctx *ctx, const char *idem, const struct agent_turn *at,
    struct job *jobs, size_t k)
{
	struct buf v;
	enum store_status st;
	size_t i;

	for (i = 0; i < k; i++) {
		struct job *j = &jobs[i];

		j->cache_key[0] = '\0';
		if (idem == NULL || ctx->store == NULL || !j->known || j->arguments == NULL)
			continue;
		cache_key(idem, j, occurrence(at, jobs, i));
		if (j->cache_key[0] == '\0')
			continue;
		buf_init(&v);
		st = store_cache_get(ctx->store, j->cache_key, &v);
		if (st == STORE_OK && !v.oom && v.len >= 1 &&
		    (v.data[0] == '0' || v.data[0] == '1')) {
			memset(&j->res, 0, sizeof(j->res));
			j->res.is_error = v.data[0] == '1';
			j->res.outcome = j->res.is_error ? AGENTS_ERROR : AGENTS_OK;
			j->res.answered = 1;
			buf_append(&j->res.text, v.data + 1, v.len - 1);
			j->recorded = 1;
			log_msg(LOG_LVL_INFO, "agent %s tool %s: ran before under this "
			    "Idempotency-Key; its recorded result is used, the agent is not called",
			    j->agent, j->tool);
		} else if (st != STORE_OK && st != STORE_NOT_FOUND) {
			log_msg(LOG_LVL_WARNING, "agent %s tool %s: the recorded result could not "
			    "be looked up (%s): the call runs unrecorded", j->agent, j->tool,
			    store_status_text(st));
			j->cache_key[0] = '\0';
		} else if (st == STORE_OK) {
			log_msg(LOG_LVL_WARNING, "agent %s tool %s: the recorded result is not one "
			    "this gateway writes: the call runs", j->agent, j->tool);
		}
		buf_free(&v);
	}
}

/*
 * After jobs[0..k) ran, on the request thread: records the result of each
 * call the agent answered (a result, isError or not) under its cache key
 * for the session TTL, so that the turn sent again with its Idempotency-Key
 * does not run it again. A call that never got an answer (unreachable,
 * timed out, open circuit, cancelled) is not recorded: it may run again.
 * A store failure is logged and the turn goes on.
 */
static void
record(struct handler_ctx *ctx, struct job *jobs, size_t k)
{
	long long ttl = ctx->conf->session_ttl > 0 ? ctx->conf->session_ttl :
	    IDEM_CACHE_TTL_DEFAULT;
	struct buf v;
	enum store_status st;
	size_t i;

	if (ttl > STORE_CACHE_TTL_MAX)
		ttl = STORE_CACHE_TTL_MAX;
	for (i = 0; i < k; i++) {
		struct job *j = &jobs[i];

		if (j->cache_key[0] == '\0' || j->recorded || !j->res.answered || j->res.text.oom)
			continue;
		buf_init(&v);
		buf_append(&v, j->res.is_error ? "1" : "0", 1);
		if (j->res.text.len > 0)
			buf_append(&v, j->res.text.data, j->res.text.len);
		st = v.oom ? STORE_UNAVAILABLE : store_cache_put(ctx->store, j->cache_key,
		    v.data, v.len, ttl);
		if (st != STORE_OK)
			log_msg(LOG_LVL_WARNING, "agent %s tool %s: the result could not be recorded "
			    "for its Idempotency-Key (%s): a retry of the turn runs it again",
			    j->agent, j->tool, v.oom ? "out of memory" : store_status_text(st));
		buf_free(&v);
	}
}

static struct json_object *
tool_message(const char *id, const struct buf *text)
{
	struct json_object *m = json_object_new_object();

	if (m == NULL)
		return NULL;
	json_object_object_add(m, "role", json_object_new_string("tool"));
	json_object_object_add(m, "tool_call_id", json_object_new_string(id));
	json_object_object_add(m, "content", json_object_new_string_len(
	    text->data != NULL ? text->data : "", (int)text->len));
	return m;
}

/*
 * Runs the calls of `res` and appends the assistant's message and the tool
 * results to `messages` and to at->steps, their summaries to at->calls.
 * Returns 0, or -1 out of memory.
 */
static int
run_calls(struct handler_ctx *ctx, const struct agents_toolset *ts, const char *idem,
    const struct llm_request *req, const struct llm_result *res, struct agent_turn *at)
{
	struct json_object *calls, *assistant, *c, *fn, *v, *tm, *sum;
	struct job jobs[AGENT_PARALLEL_MAX];
	struct agents_ctl ctl;
	size_t n, i, base, k;
	int oom = 0;

	calls = provider_tool_calls_json(res, &oom);
	if (calls == NULL)
		return oom ? -1 : 0;
	assistant = json_object_new_object();
	if (assistant == NULL) {
		json_object_put(calls);
		return -1;
	}
	json_object_object_add(assistant, "role", json_object_new_string("assistant"));
	json_object_object_add(assistant, "content", res->text.len > 0 ?
	    json_object_new_string_len(res->text.data, (int)res->text.len) : NULL);
	json_object_object_add(assistant, "tool_calls", calls);
	json_object_array_add(req->messages, json_object_get(assistant));
	json_object_array_add(at->steps, assistant);

	memset(&ctl, 0, sizeof(ctl));
	ctl.deadline_ms = req->deadline_ms;
	ctl.cancelled = req->cancelled;
	ctl.ctx = req->ctx;
	n = json_object_array_length(calls);
	for (base = 0; base < n; base += AGENT_PARALLEL_MAX) {
		k = n - base < AGENT_PARALLEL_MAX ? n - base : AGENT_PARALLEL_MAX;
		memset(jobs, 0, sizeof(jobs));
		for (i = 0; i < k; i++) {
			c = json_object_array_get_idx(calls, base + i);
			fn = NULL;
			json_object_object_get_ex(c, "function", &fn);
			jobs[i].agents = ctx->agents;
			jobs[i].http = i == 0 ? ctx->http : NULL;
			jobs[i].ctl = &ctl;
			jobs[i].trace = req->trace;
			jobs[i].arguments = json_object_object_get_ex(fn, "arguments", &v) ?
			    json_object_get_string(v) : "{}";
			jobs[i].known = json_object_object_get_ex(fn, "name", &v) &&
			    resolve(ts, json_object_get_string(v), &jobs[i]);
		}
		recall(ctx, idem, at, jobs, k);
		run_jobs(jobs, k);
		record(ctx, jobs, k);
		for (i = 0; i < k; i++) {
			c = json_object_array_get_idx(calls, base + i);
			json_object_object_get_ex(c, "id", &v);
			tm = tool_message(json_object_get_string(v), &jobs[i].res.text);
			sum = json_object_new_object();
			if (tm == NULL || sum == NULL || jobs[i].res.text.oom) {
				json_object_put(tm);
				json_object_put(sum);
				oom = 1;
			} else {
				json_object_array_add(req->messages, json_object_get(tm));
				json_object_array_add(at->steps, tm);
				json_object_object_add(sum, "id", json_object_get(v));
				json_object_object_add(sum, "name", json_object_new_string(jobs[i].known ?
				    jobs[i].agent : ""));
				json_object_object_add(sum, "tool", json_object_new_string(jobs[i].known ?
				    jobs[i].tool : ""));
				json_object_object_add(sum, "arguments",
				    json_object_new_string(jobs[i].arguments));
				json_object_object_add(sum, "is_error",
				    json_object_new_boolean(jobs[i].res.is_error));
				json_object_object_add(sum, "content", json_object_get(
				    json_object_object_get_ex(tm, "content", &v) ? v : NULL));
				json_object_array_add(at->calls, sum);
			}
			agents_result_free(&jobs[i].res);
		}
	}
	return oom ? -1 : 0;
}

enum provider_status
agent_loop_complete(struct handler_ctx *ctx, int agents, const char *idem,
    struct llm_request *req, struct llm_result *res, struct agent_turn *at)
{
	struct agents_toolset *ts = NULL;
	struct json_object *offered = NULL, *none = NULL;
	struct agents_ctl ctl;
	enum provider_status st;
	long long in_tokens = 0, out_tokens = 0, ms = 0, t0;
	int step, last = 0, oom;

	memset(at, 0, sizeof(*at));
	if (!agents || ctx->agents == NULL || agents_enabled(ctx->agents) == 0)
		return provider_complete(ctx->conf, ctx->http, ctx->circuits, req, res);
	req->agents = 1;
	at->steps = json_object_new_array();
	at->calls = json_object_new_array();
	if (at->steps == NULL || at->calls == NULL)
		return PROVIDER_NOMEM;
	memset(&ctl, 0, sizeof(ctl));
	ctl.deadline_ms = req->deadline_ms;
	ctl.cancelled = req->cancelled;
	ctl.ctx = req->ctx;
	if (req->tools == NULL) {
		t0 = vtime_mono_ms();
		ts = agents_toolset_get(ctx->agents, ctx->http, &ctl);
		at->agent_ms += vtime_mono_ms() - t0;
		offered = ts != NULL ? agents_tools_openai(ts) : NULL;
		if (offered != NULL && json_object_array_length(offered) > 0)
			req->tools = offered;
	}
	for (step = 0;; step++) {
		st = provider_complete(ctx->conf, ctx->http, ctx->circuits, req, res);
		in_tokens += res->input_tokens;
		out_tokens += res->output_tokens;
		ms += res->provider_ms;
		if (st != PROVIDER_OK || res->ntool_calls == 0 || last)
			break;
		at->steps_taken++;
		t0 = vtime_mono_ms();
		oom = run_calls(ctx, ts, idem, req, res, at) != 0;
		at->agent_ms += vtime_mono_ms() - t0;
		if (oom) {
			st = PROVIDER_NOMEM;
			break;
		}
		if (step + 1 >= ctx->conf->agent_max_steps) {
			/*
			 * The step limit: one more call, which may not call tools, for a
			 * final answer. NOTE: the tools stay offered with tool_choice
			 * "none" rather than being dropped: Anthropic refuses a request
			 * whose messages hold tool_use or tool_result blocks but that
			 * defines no tools, and the messages now hold them.
			 */
			if (req->tools != NULL) {
				if (none == NULL && (none = json_object_new_string("none")) == NULL) {
					st = PROVIDER_NOMEM;
					break;
				}
				req->tool_choice = none;
			}
			last = 1;
		}
		provider_result_free(res);
		memset(res, 0, sizeof(*res));
	}
	if (st == PROVIDER_OK && res->ntool_calls > 0) {
		/* Tools asked for after the last step are not run: the answer is the text. */
		provider_tool_calls_clear(res);
		snprintf(res->finish_reason, sizeof(res->finish_reason), "stop");
		if (res->text.len == 0)
			buf_printf(&res->text, "I stopped after %d tool steps without a final answer.",
			    at->steps_taken);
	}
	res->input_tokens = in_tokens;
	res->output_tokens = out_tokens;
	res->provider_ms = ms;
	if (req->tools == offered)
		req->tools = NULL;
	if (req->tool_choice == none)
		req->tool_choice = NULL;
	json_object_put(none);
	agents_toolset_free(ts);
	return st;
}
