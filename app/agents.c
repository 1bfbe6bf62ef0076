/* agents: the MCP agents of the environment, their tools offered to models, and tool calls. */
#include "config.h"

#include "agents.h"

#include "circuit.h"
#include "conf.h"
#include "httpc.h"
#include "log.h"
#include "mcp.h"
#include "metrics.h"
#include "retry.h"
#include "vtime.h"
#include "utf8.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define AGENTS_OFFERED_MAX 128        /* tools offered in one request: OpenAI's limit */
#define AGENTS_DESCRIPTION_MAX 1024   /* bytes of a tool description offered */
#define AGENTS_SCHEMA_MAX (32 * 1024) /* bytes of a tool's input schema offered (as JSON) */
#define AGENTS_HASH_LEN 8             /* hex digits appended to a mapped name */
#define AGENTS_THREAD_STACK (256 * 1024) /* a thread fetching one agent's tool list */

/* One agent. The cache and the last-call figures are per process, under `lock`. */
struct agent {
	char name[AGENTS_NAME_MAX + 1];
	char *url;
	int enabled;
	struct mcp_client *mcp;
	struct circuit *circuit;          /* NULL without breakers */
	pthread_mutex_t lock;
	pthread_mutex_t refresh;          /* one tools/list at a time */
	struct json_object *tools;        /* the cached list (never shared by reference) */
	long long fetched_ms;
	long long failed_ms;              /* the last failed tools/list; 0: none */
	int stale;                        /* a tools/list_changed was seen */
	long long last_ms;                /* the last call's duration; -1: none yet */
	int last_ok;                      /* it reached the agent and got an answer */
};

struct agents {
	const struct conf *conf;
	struct circuits *circuits;
	size_t n;
	struct agent a[AGENTS_MAX];
};

/* One name offered in a turn. */
struct offered {
	char mapped[AGENTS_TOOL_NAME_MAX + 1];
	const char *agent;                /* borrowed from the agents */
	char *tool;
};

struct agents_toolset {
	struct json_object *defs;
	struct offered *o;
	size_t n;
};

/* An agent as the environment defines it. */
struct env_agent {
	char name[AGENTS_NAME_MAX + 1];
	const char *url;
	int enabled;
};

const char *
agents_outcome_text(enum agents_outcome o)
{
	switch (o) {
	case AGENTS_OK: return "ok";
	case AGENTS_ERROR: return "error";
	case AGENTS_TIMEOUT: return "timeout";
	case AGENTS_CIRCUIT_OPEN: return "circuit_open";
	case AGENTS_UNAVAILABLE: return "unavailable";
	case AGENTS_CANCELLED: return "cancelled";
	}
	return "error";
}

/* The value of variable `name` in `envp`, or NULL. */
static const char *
env_find(char *const *envp, const char *name)
{
	size_t n = strlen(name);

	for (; envp != NULL && *envp != NULL; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

static int
env_agent_cmp(const void *x, const void *y)
{
	return strcmp(((const struct env_agent *)x)->name, ((const struct env_agent *)y)->name);
}

/*
 * The agents `envp` defines, sorted by name, into out[AGENTS_MAX]. Returns
 * how many, or -1 with one line in `err`.
 */
static int
env_scan(char *const *envp, struct env_agent *out, char *err, size_t errlen)
{
	char var[128], why[160];
	const char *e, *eq;
	size_t len, i, n = 0, j;

	for (; envp != NULL && *envp != NULL; envp++) {
		e = *envp;
		eq = strchr(e, '=');
		if (strncmp(e, "MCP_", 4) != 0 || eq == NULL || eq - e < 9 ||
		    strncmp(eq - 4, "_URL", 4) != 0)
			continue;
		len = (size_t)(eq - 4 - (e + 4));
		snprintf(var, sizeof(var), "%.*s", (int)(eq - e), e);
		if (eq[1] == '\0')
			continue;   /* empty: unset, as for every setting */
		if (len > AGENTS_NAME_MAX) {
			snprintf(err, errlen, "%.100s: the agent name is longer than %d characters",
			    var, AGENTS_NAME_MAX);
			return -1;
		}
		if (n == AGENTS_MAX) {
			snprintf(err, errlen, "%.100s: more than %d agents", var, AGENTS_MAX);
			return -1;
		}
		for (i = 0; i < len; i++) {
			char ch = e[4 + i];

			if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
			    (ch >= '0' && ch <= '9') || ch == '_')) {
				snprintf(err, errlen, "%.100s: the agent name may hold only letters, "
				    "digits and _", var);
				return -1;
			}
			out[n].name[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
		}
		out[n].name[len] = '\0';
		for (j = 0; j < n; j++)
			if (strcmp(out[j].name, out[n].name) == 0) {
				snprintf(err, errlen, "%.100s: agent %s is defined twice", var,
				    out[n].name);
				return -1;
			}
		if (conf_check_web_url(eq + 1, why, sizeof(why)) != 0) {
			snprintf(err, errlen, "%.100s: %s", var, why);
			return -1;
		}
		out[n].url = eq + 1;
		out[n].enabled = 1;
		n++;
	}
	return (int)n;
}

/* Reads MCP_<NAME>_ENABLED of each agent. 0, or -1 with `err`. */
static int
env_enabled(char *const *envp, struct env_agent *ag, size_t n, char *err, size_t errlen)
{
	static const char *const yes[] = {"true", "1", "yes", "on", NULL};
	static const char *const no[] = {"false", "0", "no", "off", NULL};
	char var[128], upper[AGENTS_NAME_MAX + 1];
	const char *v;
	size_t i, k;

	for (i = 0; i < n; i++) {
		/* NOTE: the variable is spelled as its URL's was; try upper case, then as named. */
		for (k = 0; ag[i].name[k] != '\0'; k++)
			upper[k] = (char)(ag[i].name[k] >= 'a' && ag[i].name[k] <= 'z' ?
			    ag[i].name[k] - 32 : ag[i].name[k]);
		upper[k] = '\0';
		snprintf(var, sizeof(var), "MCP_%s_ENABLED", upper);
		v = env_find(envp, var);
		if (v == NULL) {
			snprintf(var, sizeof(var), "MCP_%s_ENABLED", ag[i].name);
			v = env_find(envp, var);
		}
		ag[i].enabled = 1;
		if (v == NULL || *v == '\0')
			continue;
		for (k = 0; yes[k] != NULL && strcasecmp(v, yes[k]) != 0; k++)
			;
		if (yes[k] != NULL)
			continue;
		for (k = 0; no[k] != NULL && strcasecmp(v, no[k]) != 0; k++)
			;
		if (no[k] == NULL) {
			snprintf(err, errlen, "%s: must be true or false, got \"%.40s\"", var, v);
			return -1;
		}
		ag[i].enabled = 0;
	}
	return 0;
}

/* The agents of `envp`: sorted, checked. Returns how many, or -1 with `err`. */
static int
env_agents(char *const *envp, struct env_agent *out, char *err, size_t errlen)
{
	int n = env_scan(envp, out, err, errlen);

	if (n < 0 || env_enabled(envp, out, (size_t)n, err, errlen) != 0)
		return -1;
	qsort(out, (size_t)n, sizeof(*out), env_agent_cmp);
	return n;
}

int
agents_env_check(char *const *envp, char *err, size_t errlen)
{
	struct env_agent ag[AGENTS_MAX];

	return env_agents(envp, ag, err, errlen) < 0 ? -1 : 0;
}

struct json_object *
agents_env_json(char *const *envp)
{
	struct env_agent ag[AGENTS_MAX];
	struct json_object *doc = json_object_new_object(), *o, *url;
	char err[256];
	int n = env_agents(envp, ag, err, sizeof(err)), i;

	if (doc == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		o = json_object_new_object();
		url = conf_url_json(ag[i].url);
		if (o == NULL || url == NULL || json_object_object_add(o, "url", url) != 0) {
			json_object_put(url);
			json_object_put(o);
			json_object_put(doc);
			return NULL;
		}
		if (json_object_object_add(o, "enabled", json_object_new_boolean(ag[i].enabled)) != 0 ||
		    json_object_object_add(doc, ag[i].name, o) != 0) {
			json_object_put(o);
			json_object_put(doc);
			return NULL;
		}
	}
	return doc;
}

/* The breaker settings of agents: failures that open, milliseconds before a probe. */
static long long
reset_ms(const struct agents *a)
{
	return a->conf->mcp_cb_reset_timeout * 1000;
}

static void
metrics_init(const struct agents *a)
{
	static const char *const outcomes[] = {"ok", "error", "timeout", "circuit_open",
		"unavailable"};
	char labels[METRICS_LABELS_MAX + 1], name[AGENTS_NAME_MAX * 2 + 1];
	size_t i, o;

	for (i = 0; i < a->n; i++) {
		metrics_label_value(a->a[i].name, name, sizeof(name));
		for (o = 0; o < sizeof(outcomes) / sizeof(outcomes[0]); o++) {
			metrics_labels(labels, sizeof(labels), "agent", name, "outcome", outcomes[o],
			    (char *)NULL);
			metrics_counter_add("valerie_agent_calls_total", labels, 0);
		}
	}
}

struct agents *
agents_open(const struct conf *conf, struct circuits *circuits, char *const *envp, char *err,
    size_t errlen)
{
	struct env_agent ag[AGENTS_MAX];
	struct agents *a;
	struct agent *g;
	char key[CIRCUIT_NAME_MAX + 1];
	int n = env_agents(envp, ag, err, errlen), i;

	if (n < 0)
		return NULL;
	a = calloc(1, sizeof(*a));
	if (a == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->conf = conf;
	a->circuits = circuits;
	for (i = 0; i < n; i++) {
		g = &a->a[i];
		memcpy(g->name, ag[i].name, sizeof(g->name));
		g->enabled = ag[i].enabled;
		g->last_ms = -1;
		g->url = strdup(ag[i].url);
		g->mcp = g->url != NULL ? mcp_client_new(g->url, 0) : NULL;
		pthread_mutex_init(&g->lock, NULL);
		pthread_mutex_init(&g->refresh, NULL);
		a->n++;
		if (g->mcp == NULL) {
			agents_close(a);
			snprintf(err, errlen, "out of memory");
			return NULL;
		}
		if (circuits != NULL) {
			snprintf(key, sizeof(key), "agent:%s", g->name);
			g->circuit = circuits_get(circuits, key);
			if (g->circuit == NULL) {
				agents_close(a);
				snprintf(err, errlen, "MCP_%s_URL: no room left for the agent's circuit "
				    "breaker (%d in all)", ag[i].name, CIRCUIT_MAX);
				return NULL;
			}
		}
	}
	metrics_init(a);
	return a;
}

void
agents_close(struct agents *a)
{
	size_t i;

	if (a == NULL)
		return;
	for (i = 0; i < a->n; i++) {
		mcp_client_free(a->a[i].mcp);
		free(a->a[i].url);
		json_object_put(a->a[i].tools);
		pthread_mutex_destroy(&a->a[i].lock);
		pthread_mutex_destroy(&a->a[i].refresh);
	}
	free(a);
}

size_t
agents_count(const struct agents *a)
{
	return a != NULL ? a->n : 0;
}

size_t
agents_enabled(const struct agents *a)
{
	size_t i, n = 0;

	for (i = 0; a != NULL && i < a->n; i++)
		n += a->a[i].enabled != 0;
	return n;
}

static struct agent *
find(struct agents *a, const char *name)
{
	size_t i;

	for (i = 0; a != NULL && i < a->n; i++)
		if (strcmp(a->a[i].name, name) == 0)
			return &a->a[i];
	return NULL;
}

/* The options of one MCP exchange for `ctl`. */
static void
mcp_opts_for(const struct agents *a, const struct agents_ctl *ctl, struct mcp_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->timeout_ms = a->conf->mcp_timeout * 1000;
	if (ctl != NULL) {
		o->deadline_ms = ctl->deadline_ms;
		o->cancelled = ctl->cancelled;
		o->ctx = ctl->ctx;
	}
}

/* Whether a failure says the agent itself is in trouble (counts against its breaker). */
static int
agent_failure(enum mcp_status st, const struct mcp_error *e)
{
	return st == MCP_UNREACHABLE || st == MCP_TIMEOUT || st == MCP_BROKEN ||
	    st == MCP_PROTOCOL || (st == MCP_HTTP && (e->http_status >= 500 ||
	    e->http_status == 429 || e->http_status == 408));
}

static void
log_agent(enum log_level level, const char *msg, const struct agent *g, const char *tool,
    const char *outcome, int attempts, const char *error)
{
	struct json_object *f = json_object_new_object();

	if (f != NULL) {
		json_object_object_add(f, "agent", json_object_new_string(g->name));
		if (tool != NULL)
			json_object_object_add(f, "tool", json_object_new_string(tool));
		if (outcome != NULL)
			json_object_object_add(f, "outcome", json_object_new_string(outcome));
		if (attempts > 0)
			json_object_object_add(f, "attempts", json_object_new_int(attempts));
		if (error != NULL)
			json_object_object_add(f, "error", json_object_new_string(error));
	}
	log_emit(level, msg, f);
	json_object_put(f);
}

void
agents_end_sessions(struct agents *a, long long budget_ms)
{
	char version[16], session[MCP_SESSION_ID_MAX + 1];
	struct httpc *http = NULL;
	struct mcp_error e;
	enum mcp_status st;
	long long end = vtime_mono_ms() + budget_ms;
	size_t i;

	if (a == NULL)
		return;
	for (i = 0; i < a->n; i++) {
		struct agent *g = &a->a[i];

		mcp_session_info(g->mcp, version, sizeof(version), session, sizeof(session));
		if (session[0] == '\0')
			continue;
		if (http == NULL && (http = httpc_new()) == NULL)
			break;
		st = mcp_session_end(g->mcp, http, end - vtime_mono_ms(), &e);
		if (st == MCP_OK)
			log_agent(LOG_LVL_DEBUG, "agent session ended", g, NULL, "ok", 0, NULL);
		else
			log_agent(LOG_LVL_INFO, "agent session not ended", g, NULL, mcp_status_text(st),
			    0, e.text);
	}
	httpc_free(http);
}

/* Fetches the tool list of `g` into its cache unless another thread just did. */
static void
refresh(struct agents *a, struct agent *g, struct httpc *http, const struct agents_ctl *ctl,
    long long seen_fetch, long long seen_fail)
{
	struct json_object *tools = NULL, *old;
	struct mcp_error e;
	struct mcp_opts o;
	enum mcp_status st;
	long long t, f;

	pthread_mutex_lock(&g->refresh);
	pthread_mutex_lock(&g->lock);
	t = g->fetched_ms;
	f = g->failed_ms;
	pthread_mutex_unlock(&g->lock);
	/*
	 * Fetched meanwhile, or failed meanwhile: a failure holds for the
	 * threads that waited for it as for those that come after it
	 * (AGENTS_LIST_RETRY_MS). NOTE: each waiter trying again in turn made
	 * the Nth concurrent turn wait N timeouts for a hung agent.
	 */
	if (t != seen_fetch || f != seen_fail)
		goto out;
	if (g->circuit != NULL && !circuit_allow(g->circuit, circuit_now_ms(), reset_ms(a)))
		goto out;
	mcp_opts_for(a, ctl, &o);
	st = mcp_list_tools(g->mcp, http, &o, &tools, &e);
	if (st == MCP_CANCELLED)
		goto out;
	if (g->circuit != NULL) {
		if (st == MCP_OK || !agent_failure(st, &e))
			circuit_success(g->circuit);
		else
			circuit_failure(g->circuit, circuit_now_ms(),
			    (int)a->conf->mcp_cb_failure_threshold);
	}
	pthread_mutex_lock(&g->lock);
	if (st == MCP_OK) {
		old = g->tools;
		g->tools = tools;
		tools = NULL;
		g->fetched_ms = vtime_mono_ms();
		g->failed_ms = 0;
		g->stale = 0;
		json_object_put(old);
	} else {
		g->failed_ms = vtime_mono_ms();
	}
	pthread_mutex_unlock(&g->lock);
	if (st != MCP_OK)
		log_agent(LOG_LVL_WARNING, "agent tools/list failed", g, NULL, mcp_status_text(st), 0,
		    e.text);
out:
	json_object_put(tools);
	pthread_mutex_unlock(&g->refresh);
}

/* One agent's tools/list in a turn: whether it is due, and what the cache was then. */
struct listing {
	struct agents *a;
	struct agent *g;
	const struct agents_ctl *ctl;
	long long seen, seen_fail;
	pthread_t thread;
	int started;
};

/* Whether the tool list of `g` is due for a fetch; notes the cache's state in `l`. */
static int
list_due(struct agent *g, struct listing *l)
{
	long long now = vtime_mono_ms();
	int need;

	pthread_mutex_lock(&g->lock);
	if (mcp_take_list_changed(g->mcp))
		g->stale = 1;
	need = g->tools == NULL || now - g->fetched_ms >= AGENTS_TOOLS_TTL_MS || g->stale;
	if (need && g->failed_ms > 0 && now - g->failed_ms < AGENTS_LIST_RETRY_MS)
		need = 0;
	l->seen = g->fetched_ms;
	l->seen_fail = g->failed_ms;
	pthread_mutex_unlock(&g->lock);
	return need;
}

/* A listing on a thread of its own, with its own HTTP handle (none to be had: not fetched). */
static void *
list_thread(void *p)
{
	struct listing *l = p;
	struct httpc *http = httpc_new();

	if (http != NULL)
		refresh(l->a, l->g, http, l->ctl, l->seen, l->seen_fail);
	httpc_free(http);
	return NULL;
}

/*
 * Fetches the tool lists of the enabled agents that are due, at once: the
 * first on this thread with `http`, the others on threads of their own.
 * NOTE: one after another, a hung agent made every later one wait its
 * MCP_TIMEOUT, and N hung agents N timeouts per turn; now a turn waits for
 * the slowest alone. Without a thread to be had, the fetch runs here, in turn.
 */
static void
refresh_due(struct agents *a, struct httpc *http, const struct agents_ctl *ctl)
{
	struct listing due[AGENTS_MAX];
	pthread_attr_t attr;
	size_t i, n = 0;

	for (i = 0; a != NULL && i < a->n; i++) {
		if (!a->a[i].enabled)
			continue;
		memset(&due[n], 0, sizeof(due[n]));
		due[n].a = a;
		due[n].g = &a->a[i];
		due[n].ctl = ctl;
		if (list_due(&a->a[i], &due[n]))
			n++;
	}
	if (n == 0)
		return;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, AGENTS_THREAD_STACK);
	for (i = 1; i < n; i++)
		due[i].started = pthread_create(&due[i].thread, &attr, list_thread, &due[i]) == 0;
	pthread_attr_destroy(&attr);
	refresh(a, due[0].g, http, ctl, due[0].seen, due[0].seen_fail);
	for (i = 1; i < n; i++) {
		if (due[i].started)
			pthread_join(due[i].thread, NULL);
		else
			refresh(a, due[i].g, http, ctl, due[i].seen, due[i].seen_fail);
	}
}

/* A copy of the agent's cached tool list; NULL when there is none. */
static struct json_object *
tools_of(struct agent *g)
{
	struct json_object *copy = NULL;

	pthread_mutex_lock(&g->lock);
	/* NOTE: json-c reference counts are not atomic: threads get copies, never references. */
	if (g->tools != NULL && json_object_deep_copy(g->tools, &copy, NULL) != 0)
		copy = NULL;
	pthread_mutex_unlock(&g->lock);
	return copy;
}

/* FNV-1a over agent, a NUL, tool and the salt. */
static uint32_t
name_hash(const char *agent, const char *tool, unsigned salt)
{
	uint64_t h = 1469598103934665603ULL;
	const unsigned char *p;
	int k;

	for (p = (const unsigned char *)agent; *p; p++)
		h = (h ^ *p) * 1099511628211ULL;
	h *= 1099511628211ULL;
	for (p = (const unsigned char *)tool; *p; p++)
		h = (h ^ *p) * 1099511628211ULL;
	for (k = 0; k < 4; k++)
		h = (h ^ ((salt >> (8 * k)) & 0xff)) * 1099511628211ULL;
	return (uint32_t)(h ^ (h >> 32));
}

static int
valid_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    c == '_' || c == '-';
}

static int
taken(const struct offered *o, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (o[i].mapped[0] != '\0' && strcmp(o[i].mapped, name) == 0)
			return 1;
	return 0;
}

/*
 * Gives every offered tool its name. First pass: `<agent>__<tool>` as it is
 * when it is already valid and free. Second pass, for the rest: invalid
 * characters become '_', the name is cut to leave room, and `_` plus a hash
 * of the real names follows (salted again until free). The map in `o` is
 * what makes it reversible; the order of the tools makes it deterministic.
 */
static void
map_names(struct offered *o, size_t n)
{
	char cand[AGENTS_NAME_MAX + MCP_TOOL_NAME_MAX + 8];
	size_t i, k, len;
	unsigned salt;
	int ok;

	for (i = 0; i < n; i++) {
		len = (size_t)snprintf(cand, sizeof(cand), "%s__%s", o[i].agent, o[i].tool);
		for (ok = len <= AGENTS_TOOL_NAME_MAX, k = 0; ok && k < len; k++)
			ok = valid_char(cand[k]);
		if (ok && !taken(o, n, cand))
			memcpy(o[i].mapped, cand, len + 1);
	}
	for (i = 0; i < n; i++) {
		if (o[i].mapped[0] != '\0')
			continue;
		len = (size_t)snprintf(cand, sizeof(cand), "%s__%s", o[i].agent, o[i].tool);
		for (k = 0; k < len; k++)
			if (!valid_char(cand[k]))
				cand[k] = '_';
		if (len > AGENTS_TOOL_NAME_MAX - AGENTS_HASH_LEN - 1)
			len = AGENTS_TOOL_NAME_MAX - AGENTS_HASH_LEN - 1;
		for (salt = 0;; salt++) {
			snprintf(cand + len, sizeof(cand) - len, "_%08x",
			    (unsigned)name_hash(o[i].agent, o[i].tool, salt));
			if (!taken(o, n, cand))
				break;
		}
		memcpy(o[i].mapped, cand, strlen(cand) + 1);
	}
}

/*
 * Whether `schema` can be offered as function parameters: an object whose
 * "type" is "object" or absent (MCP says inputSchema is an object schema;
 * OpenAI refuses the whole request when one tool's is not: "schema must be
 * a JSON Schema of 'type: \"object\"'"), at most AGENTS_SCHEMA_MAX bytes
 * as JSON (it goes to the model with every step of every turn).
 */
static int
object_schema(struct json_object *schema)
{
	struct json_object *type;
	size_t len = 0;

	if (!json_object_is_type(schema, json_type_object))
		return 0;
	if (json_object_to_json_string_length(schema, JSON_C_TO_STRING_PLAIN, &len) == NULL ||
	    len > AGENTS_SCHEMA_MAX)
		return 0;
	if (!json_object_object_get_ex(schema, "type", &type))
		return 1;
	return json_object_is_type(type, json_type_string) &&
	    strcmp(json_object_get_string(type), "object") == 0;
}

/*
 * One OpenAI function definition for tool `t` offered as `mapped`: its
 * inputSchema as parameters ("type": "object" added when absent), or an
 * object schema without properties when it has none usable (none, not an
 * object schema, or too large). Caller puts.
 */
static struct json_object *
definition(struct json_object *t, const char *mapped)
{
	struct json_object *def = json_object_new_object(), *fn = json_object_new_object(), *v,
	    *params = NULL;
	const char *d = "";
	size_t len = 0;

	if (def == NULL || fn == NULL)
		goto oom;
	if ((json_object_object_get_ex(t, "description", &v) ||
	    json_object_object_get_ex(t, "title", &v)) && json_object_is_type(v, json_type_string)) {
		d = json_object_get_string(v);
		len = utf8_prefix(d, (size_t)json_object_get_string_len(v), AGENTS_DESCRIPTION_MAX);
	}
	if (json_object_object_get_ex(t, "inputSchema", &v) && object_schema(v)) {
		if (json_object_deep_copy(v, &params, NULL) != 0)
			goto oom;
		if (!json_object_object_get_ex(params, "type", NULL) &&
		    json_object_object_add(params, "type", json_object_new_string("object")) != 0) {
			json_object_put(params);
			goto oom;
		}
	} else {
		params = json_object_new_object();
		if (params == NULL)
			goto oom;
		json_object_object_add(params, "type", json_object_new_string("object"));
		json_object_object_add(params, "properties", json_object_new_object());
	}
	if (json_object_object_add(fn, "name", json_object_new_string(mapped)) != 0 ||
	    json_object_object_add(fn, "description", json_object_new_string_len(d, (int)len)) != 0 ||
	    json_object_object_add(fn, "parameters", params) != 0) {
		json_object_put(params);
		goto oom;
	}
	json_object_object_add(def, "type", json_object_new_string("function"));
	json_object_object_add(def, "function", fn);
	return def;
oom:
	json_object_put(fn);
	json_object_put(def);
	return NULL;
}

void
agents_toolset_free(struct agents_toolset *ts)
{
	size_t i;

	if (ts == NULL)
		return;
	for (i = 0; i < ts->n; i++)
		free(ts->o[i].tool);
	free(ts->o);
	json_object_put(ts->defs);
	free(ts);
}

struct agents_toolset *
agents_toolset_get(struct agents *a, struct httpc *http, const struct agents_ctl *ctl)
{
	struct agents_toolset *ts = calloc(1, sizeof(*ts));
	struct json_object *lists[AGENTS_MAX] = {NULL}, *t, *name, *def;
	size_t i, j, len, k = 0;

	if (ts == NULL)
		return NULL;
	ts->defs = json_object_new_array();
	ts->o = calloc(AGENTS_OFFERED_MAX, sizeof(*ts->o));
	if (ts->defs == NULL || ts->o == NULL)
		goto oom;
	refresh_due(a, http, ctl);
	for (i = 0; a != NULL && i < a->n; i++) {
		if (!a->a[i].enabled)
			continue;
		lists[i] = tools_of(&a->a[i]);
		len = lists[i] != NULL ? json_object_array_length(lists[i]) : 0;
		for (j = 0; j < len && ts->n < AGENTS_OFFERED_MAX; j++) {
			t = json_object_array_get_idx(lists[i], j);
			json_object_object_get_ex(t, "name", &name);
			ts->o[ts->n].agent = a->a[i].name;
			ts->o[ts->n].tool = strdup(json_object_get_string(name));
			if (ts->o[ts->n].tool == NULL)
				goto oom;
			ts->n++;
		}
	}
	map_names(ts->o, ts->n);
	for (i = 0; a != NULL && i < a->n; i++) {
		len = lists[i] != NULL ? json_object_array_length(lists[i]) : 0;
		for (j = 0; j < len && k < ts->n; j++, k++) {
			def = definition(json_object_array_get_idx(lists[i], j), ts->o[k].mapped);
			if (def == NULL || json_object_array_add(ts->defs, def) != 0) {
				json_object_put(def);
				goto oom;
			}
		}
	}
	for (i = 0; i < AGENTS_MAX; i++)
		json_object_put(lists[i]);
	return ts;
oom:
	for (i = 0; i < AGENTS_MAX; i++)
		json_object_put(lists[i]);
	agents_toolset_free(ts);
	return NULL;
}

struct json_object *
agents_tools_openai(const struct agents_toolset *ts)
{
	return ts->defs;
}

int
agents_tool_lookup(const struct agents_toolset *ts, const char *mapped, const char **agent,
    const char **tool)
{
	size_t i;

	for (i = 0; ts != NULL && i < ts->n; i++)
		if (strcmp(ts->o[i].mapped, mapped) == 0) {
			*agent = ts->o[i].agent;
			*tool = ts->o[i].tool;
			return 0;
		}
	return -1;
}

/* Whether annotation `key` of a tool's `ann` (may be NULL) is the boolean true. */
static int
hint_true(struct json_object *ann, const char *key)
{
	struct json_object *hint;

	return ann != NULL && json_object_object_get_ex(ann, key, &hint) &&
	    json_object_is_type(hint, json_type_boolean) && json_object_get_boolean(hint);
}

/*
 * Whether the cached list of `g` says calling tool `tool` again is harmless:
 * annotations.idempotentHint, or readOnlyHint (MCP: a read-only tool does not
 * modify its environment, so idempotentHint "is meaningful only when
 * readOnlyHint == false").
 */
static int
idempotent(struct agent *g, const char *tool)
{
	struct json_object *t, *name, *ann;
	size_t i, n;
	int yes = 0;

	pthread_mutex_lock(&g->lock);
	n = g->tools != NULL ? json_object_array_length(g->tools) : 0;
	for (i = 0; i < n; i++) {
		t = json_object_array_get_idx(g->tools, i);
		if (json_object_object_get_ex(t, "name", &name) &&
		    strcmp(json_object_get_string(name), tool) == 0) {
			if (!json_object_object_get_ex(t, "annotations", &ann))
				ann = NULL;
			yes = hint_true(ann, "idempotentHint") || hint_true(ann, "readOnlyHint");
			break;
		}
	}
	pthread_mutex_unlock(&g->lock);
	return yes;
}

/* Sets the result text (capped on a character boundary) and the error flag. */
static void
set_text(struct agents_result *res, const char *text, size_t len, int is_error)
{
	size_t keep = utf8_prefix(text, len, AGENTS_RESULT_MAX);

	buf_reset(&res->text, 0);
	buf_append(&res->text, text, keep);
	if (keep < len)
		buf_printf(&res->text, "\n[truncated: the tool answered %zu bytes]", len);
	res->is_error = is_error;
}

static void
set_textf(struct agents_result *res, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
set_textf(struct agents_result *res, const char *fmt, ...)
{
	va_list ap;

	buf_reset(&res->text, 0);
	va_start(ap, fmt);
	buf_vprintf(&res->text, fmt, ap);
	va_end(ap);
	res->is_error = 1;
}

static void
count(const struct agent *g, enum agents_outcome o, long long ms)
{
	char labels[METRICS_LABELS_MAX + 1], name[AGENTS_NAME_MAX * 2 + 1];

	if (o == AGENTS_CANCELLED)
		return;
	metrics_label_value(g->name, name, sizeof(name));
	metrics_labels(labels, sizeof(labels), "agent", name, "outcome", agents_outcome_text(o),
	    (char *)NULL);
	metrics_counter_add("valerie_agent_calls_total", labels, 1);
	metrics_labels(labels, sizeof(labels), "agent", name, (char *)NULL);
	metrics_observe("valerie_agent_call_duration_seconds", labels, (double)ms / 1000.0);
}

/* Whether another attempt may be made after failure `st` (see agents_call). */
static int
may_retry(enum mcp_status st, const struct mcp_error *e, int idem)
{
	if (st == MCP_CANCELLED || st == MCP_NOMEM || st == MCP_RPC || st == MCP_TOO_LARGE)
		return 0;
	/*
	 * NOTE: never reached the agent: refused or unresolved, or the session's
	 * initialize failed before the call went out. A timeout of that
	 * initialize is not retried (a hung agent would eat the turn).
	 */
	if (!e->sent && st != MCP_TIMEOUT)
		return 1;
	return idem && agent_failure(st, e);
}

enum agents_outcome
agents_call(struct agents *a, struct httpc *http, const char *agent, const char *tool,
    const char *arguments, const struct agents_ctl *ctl, struct agents_result *res)
{
	struct json_object *args = NULL;
	struct mcp_tool_result tr;
	struct mcp_error e;
	struct mcp_opts o;
	enum mcp_status st = MCP_OK;
	struct agent *g = find(a, agent);
	long long start = vtime_mono_ms(), left;
	char version[16], sid0[MCP_SESSION_ID_MAX + 1], sid1[MCP_SESSION_ID_MAX + 1];
	int idem, i, renewed = 0;

	memset(res, 0, sizeof(*res));
	memset(&tr, 0, sizeof(tr));
	memset(&e, 0, sizeof(e));
	if (g == NULL || !g->enabled) {
		set_textf(res, g == NULL ? "there is no agent named \"%.60s\"" :
		    "agent %.60s is disabled", agent);
		res->outcome = AGENTS_ERROR;
		return res->outcome;   /* not counted: no label for an unknown name */
	}
	if (arguments != NULL && arguments[strspn(arguments, " \t\r\n")] != '\0') {
		args = mcp_json_parse(arguments, strlen(arguments));
		if (args == NULL || !json_object_is_type(args, json_type_object)) {
			json_object_put(args);
			args = NULL;
			set_textf(res, "the arguments for %s.%.128s are not a JSON object", g->name,
			    tool);
			res->outcome = AGENTS_ERROR;
			goto done;
		}
	}
	if (g->circuit != NULL && !circuit_allow(g->circuit, circuit_now_ms(), reset_ms(a))) {
		set_textf(res, "agent %s is unavailable: its circuit breaker is open after repeated "
		    "failures; it is tried again %lld s after it opened", g->name,
		    a->conf->mcp_cb_reset_timeout);
		res->outcome = AGENTS_CIRCUIT_OPEN;
		goto done;
	}
	idem = idempotent(g, tool);
	mcp_opts_for(a, ctl, &o);
	mcp_session_info(g->mcp, version, sizeof(version), sid0, sizeof(sid0));
	for (i = 0;; i++) {
		mcp_tool_result_free(&tr);
		st = mcp_call_tool(g->mcp, http, &o, tool, args, &tr, &e);
		if (e.sent)
			res->attempts++;
		if (st == MCP_OK || i >= a->conf->mcp_max_retries || !may_retry(st, &e, idem))
			break;
		left = ctl != NULL && ctl->deadline_ms > 0 ? ctl->deadline_ms - vtime_mono_ms() : 1LL << 40;
		if (retry_backoff(i, -1, left, ctl != NULL ? ctl->cancelled : NULL,
		    ctl != NULL ? ctl->ctx : NULL) != 0)
			break;
	}
	/* The server forgot the session and the client made a new one (or a thread did). */
	mcp_session_info(g->mcp, version, sizeof(version), sid1, sizeof(sid1));
	renewed = sid0[0] != '\0' && sid1[0] != '\0' && strcmp(sid0, sid1) != 0;
	if (g->circuit != NULL && st != MCP_CANCELLED && st != MCP_NOMEM) {
		if (agent_failure(st, &e))
			circuit_failure(g->circuit, circuit_now_ms(),
			    (int)a->conf->mcp_cb_failure_threshold);
		else
			circuit_success(g->circuit);
	}
	switch (st) {
	case MCP_OK:
		set_text(res, tr.text.data != NULL ? tr.text.data : "", tr.text.len, tr.is_error);
		if (tr.is_error && res->text.len == 0)
			set_textf(res, "tool %.128s of agent %s failed without saying why", tool, g->name);
		res->outcome = tr.is_error ? AGENTS_ERROR : AGENTS_OK;
		res->answered = 1;
		break;
	case MCP_CANCELLED:
		set_textf(res, "the call to agent %s was abandoned: the client went away", g->name);
		res->outcome = AGENTS_CANCELLED;
		break;
	case MCP_TIMEOUT:
		set_textf(res, "agent %s is unavailable: tool %.128s did not answer in time (%s)",
		    g->name, tool, e.text);
		res->outcome = AGENTS_TIMEOUT;
		break;
	case MCP_UNREACHABLE:
	case MCP_BROKEN:
		set_textf(res, "agent %s is unavailable: %s", g->name, e.text);
		res->outcome = AGENTS_UNAVAILABLE;
		break;
	case MCP_HTTP:
		set_textf(res, "agent %s %s: %s", g->name, agent_failure(st, &e) ?
		    "is unavailable" : "refused the call", e.text);
		res->outcome = agent_failure(st, &e) ? AGENTS_UNAVAILABLE : AGENTS_ERROR;
		break;
	default:
		set_textf(res, "agent %s: tool %.128s failed: %s", g->name, tool, e.text);
		res->outcome = AGENTS_ERROR;
		break;
	}
done:
	res->duration_ms = vtime_mono_ms() - start;
	if (res->outcome != AGENTS_CIRCUIT_OPEN && res->outcome != AGENTS_CANCELLED &&
	    (res->attempts > 0 || res->outcome == AGENTS_UNAVAILABLE)) {
		pthread_mutex_lock(&g->lock);
		g->last_ms = res->duration_ms;
		g->last_ok = st == MCP_OK || !agent_failure(st, &e);
		pthread_mutex_unlock(&g->lock);
	}
	count(g, res->outcome, res->duration_ms);
	if (renewed)
		log_agent(LOG_LVL_INFO, "agent session renewed", g, tool,
		    agents_outcome_text(res->outcome), res->attempts, NULL);
	/*
	 * NOTE: an error the agent wrote (isError content, a JSON-RPC error
	 * message) may quote the arguments, that is the user's words: it goes
	 * to the log at DEBUG only. Timeouts and unreachable agents carry our
	 * own wording and keep it at WARNING.
	 */
	if (res->outcome == AGENTS_ERROR) {
		log_agent(LOG_LVL_WARNING, "agent call failed", g, tool,
		    agents_outcome_text(res->outcome), res->attempts, NULL);
		log_agent(LOG_LVL_DEBUG, "agent call failed: the agent's error", g, tool,
		    agents_outcome_text(res->outcome), res->attempts,
		    res->text.data != NULL ? res->text.data : "");
	} else if (res->outcome != AGENTS_OK && res->outcome != AGENTS_CANCELLED) {
		log_agent(LOG_LVL_WARNING, "agent call failed", g, tool,
		    agents_outcome_text(res->outcome), res->attempts,
		    res->text.data != NULL ? res->text.data : "");
	}
	mcp_tool_result_free(&tr);
	json_object_put(args);
	if (res->text.oom) {
		buf_free(&res->text);
		res->is_error = 1;
	}
	return res->outcome;
}

void
agents_result_free(struct agents_result *res)
{
	if (res != NULL)
		buf_free(&res->text);
}

static const char *
state_text(enum circuit_state s)
{
	return s == CIRCUIT_OPEN ? "open" : s == CIRCUIT_HALF_OPEN ? "half_open" : "closed";
}

void
agents_metrics_scrape(const struct agents *a)
{
	char labels[METRICS_LABELS_MAX + 1], name[AGENTS_NAME_MAX * 2 + 1];
	enum circuit_state s;
	size_t i;

	for (i = 0; a != NULL && i < a->n; i++) {
		s = a->a[i].circuit != NULL ? circuit_state_now(a->a[i].circuit, circuit_now_ms(),
		    reset_ms(a)) : CIRCUIT_CLOSED;
		metrics_label_value(a->a[i].name, name, sizeof(name));
		snprintf(labels, sizeof(labels), "target=\"agent:%s\"", name);
		metrics_gauge_set("valerie_circuit_state", labels, (double)s);
	}
}

struct json_object *
agents_health_json(struct agents *a)
{
	struct json_object *list = json_object_new_array(), *o;
	enum circuit_state s;
	struct agent *g;
	const char *status;
	long long ms;
	size_t i, ntools;
	int ok;

	if (list == NULL)
		return NULL;
	for (i = 0; a != NULL && i < a->n; i++) {
		g = &a->a[i];
		s = g->circuit != NULL ? circuit_state_now(g->circuit, circuit_now_ms(), reset_ms(a)) :
		    CIRCUIT_CLOSED;
		pthread_mutex_lock(&g->lock);
		ms = g->last_ms;
		ok = g->last_ok;
		ntools = g->tools != NULL ? json_object_array_length(g->tools) : 0;
		pthread_mutex_unlock(&g->lock);
		status = !g->enabled ? "disabled" : s == CIRCUIT_OPEN ? "down" :
		    ms < 0 ? "unknown" : ok ? "ok" : "down";
		o = json_object_new_object();
		if (o == NULL || json_object_array_add(list, o) != 0) {
			json_object_put(o);
			json_object_put(list);
			return NULL;
		}
		json_object_object_add(o, "name", json_object_new_string(g->name));
		json_object_object_add(o, "enabled", json_object_new_boolean(g->enabled));
		json_object_object_add(o, "status", json_object_new_string(status));
		json_object_object_add(o, "circuit", json_object_new_string(state_text(s)));
		json_object_object_add(o, "response_time_ms", ms < 0 ? NULL : json_object_new_int64(ms));
		json_object_object_add(o, "tools", json_object_new_int64((long long)ntools));
	}
	return list;
}
