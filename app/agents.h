/* agents: the MCP agents of the environment, their tools offered to models, and tool calls. */
#ifndef VALERIE_AGENTS_H
#define VALERIE_AGENTS_H

#include <stddef.h>

#include "buf.h"

#define AGENTS_MAX 32                       /* agents defined by MCP_<NAME>_URL */
#define AGENTS_NAME_MAX 40                  /* "agent:<name>" fits a circuit name */
#define AGENTS_TOOLS_TTL_MS (5 * 60 * 1000) /* a tool list is fetched again after this */
#define AGENTS_LIST_RETRY_MS 5000           /* after a failed tools/list, wait before another */
#define AGENTS_RESULT_MAX (64 * 1024)       /* bytes of one tool result given to the model */
#define AGENTS_TOOL_NAME_MAX 64             /* OpenAI's limit on a function name */
#define AGENTS_END_SESSIONS_MS 1000         /* at exit, for every session DELETE in all */

struct circuits;
struct conf;
struct httpc;
struct json_object;

/* The agents of this process, their sessions and tool caches (shared by threads). Opaque. */
struct agents;

/* The tools offered in one turn and the map from offered names back to agent and tool. */
struct agents_toolset;

enum agents_outcome {
	AGENTS_OK = 0,          /* the tool answered (result->is_error may still be set) */
	AGENTS_ERROR,           /* the tool or the agent answered an error */
	AGENTS_TIMEOUT,         /* the agent did not answer in time */
	AGENTS_CIRCUIT_OPEN,    /* not called: the agent's circuit is open */
	AGENTS_UNAVAILABLE,     /* the agent could not be reached or broke down */
	AGENTS_CANCELLED        /* the caller's client went away (not counted in metrics) */
};

/* How long a call may take and how to notice the client left (borrowed). */
struct agents_ctl {
	long long deadline_ms;          /* CLOCK_MONOTONIC ms (the turn's); 0: none */
	int (*cancelled)(void *ctx);    /* may be NULL */
	void *ctx;
};

/*
 * Checks the agents the environment `envp` (NULL-terminated "NAME=value",
 * like environ) defines: every non-empty MCP_<NAME>_URL is agent <name> in
 * lower case, MCP_<NAME>_ENABLED (true/false, 1/0, yes/no, on/off; default
 * true) switches it. Returns 0, or -1 with one line in `err` naming the
 * variable and why (for example `MCP_RESERVA_URL: must be a URL with scheme
 * http, https`).
 */
int agents_env_check(char *const *envp, char *err, size_t errlen);

/*
 * The agents of `envp` for GET /config: {"<name>": {"url", "enabled"}} with
 * passwords cut out of the URLs. Caller puts; NULL on OOM.
 */
struct json_object *agents_env_json(char *const *envp);

/*
 * The agents of `envp` with the MCP_* settings of `conf` (borrowed; must
 * outlive them) and the pool's breakers `circuits` (NULL: none). Registers
 * their metrics at 0. NULL with `err` filled when the environment is
 * invalid (as agents_env_check) or memory ran out.
 */
struct agents *agents_open(const struct conf *conf, struct circuits *circuits,
    char *const *envp, char *err, size_t errlen);

/* Frees the agents (no thread may be using them). Accepts NULL. */
void agents_close(struct agents *a);

/*
 * At exit: ends the MCP session of every agent that has one (HTTP DELETE, as
 * the spec asks of a client that is done), one agent after the other, all
 * within `budget_ms` in all: an agent that does not answer in time only
 * loses the courtesy. No thread may be calling the agents. Accepts NULL.
 */
void agents_end_sessions(struct agents *a, long long budget_ms);

/* Agents defined, and how many of them are enabled. */
size_t agents_count(const struct agents *a);
size_t agents_enabled(const struct agents *a);

/*
 * The tools of every enabled agent for one turn: from each agent's cache,
 * fetched first when it is empty, older than AGENTS_TOOLS_TTL_MS or a
 * tools/list_changed was seen (the agents due all at once, each but the
 * first on a thread of its own). An agent whose list cannot be had (down,
 * circuit open) is left out, or offered from its stale cache. Never NULL
 * except out of memory. Free with agents_toolset_free.
 */
struct agents_toolset *agents_toolset_get(struct agents *a, struct httpc *http,
    const struct agents_ctl *ctl);
void agents_toolset_free(struct agents_toolset *ts);

/*
 * The toolset as OpenAI tool definitions, [{type: "function", function:
 * {name, description, parameters}}], names `<agent>__<tool>` mapped into
 * [A-Za-z0-9_-]{1,64} without collisions (borrowed from `ts`; [] when no
 * tools).
 */
struct json_object *agents_tools_openai(const struct agents_toolset *ts);

/*
 * The agent and tool behind offered name `mapped` (both borrowed from `ts`).
 * Returns 0, or -1 when the toolset offered no such name.
 */
int agents_tool_lookup(const struct agents_toolset *ts, const char *mapped,
    const char **agent, const char **tool);

/* A tool call's outcome: text for the model (the result, or why it failed). */
struct agents_result {
	struct buf text;                /* capped at AGENTS_RESULT_MAX bytes */
	int is_error;                   /* the text reports a failure */
	enum agents_outcome outcome;
	int attempts;                   /* tools/call requests sent */
	int answered;                   /* the agent answered the call with a result
	                                   (isError or not): the tool ran */
	long long duration_ms;
};

/*
 * Calls tool `tool` of agent `agent` with `arguments` (JSON object text; NULL
 * or "" is {}), within MCP_TIMEOUT per attempt and `ctl`'s deadline, through
 * the agent's circuit breaker ("agent:<name>"). Retries (MCP_MAX_RETRIES,
 * backoff with jitter) only when the call surely never reached the agent, or
 * when the tool's annotations say idempotentHint: true or readOnlyHint: true;
 * never otherwise.
 * Whatever happens `res` gets a text the model can read (a dead, slow or
 * open-circuit agent is an error text, is_error set); counts the agent
 * metrics. Free `res` with agents_result_free. Returns res->outcome.
 */
enum agents_outcome agents_call(struct agents *a, struct httpc *http, const char *agent,
    const char *tool, const char *arguments, const struct agents_ctl *ctl,
    struct agents_result *res);
void agents_result_free(struct agents_result *res);

/* Refreshes valerie_circuit_state{target="agent:<name>"} (call at scrape time). */
void agents_metrics_scrape(const struct agents *a);

/*
 * For /health/detailed: [{name, enabled, status ("ok", "down", "unknown",
 * "disabled"), circuit ("closed", "half_open", "open"), response_time_ms
 * (the last call's, this process; null before one), tools (cached count)}].
 * Caller puts; NULL on OOM.
 */
struct json_object *agents_health_json(struct agents *a);

const char *agents_outcome_text(enum agents_outcome o);

#endif
