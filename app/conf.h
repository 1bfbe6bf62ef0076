/* conf: settings read from the environment, validated once at start. */
#ifndef VALERIE_CONF_H
#define VALERIE_CONF_H

#include <stddef.h>

struct json_object;

/*
 * The effective configuration. Strings are borrowed: from the environment
 * (which the worker never changes after start) or from static defaults, so a
 * config needs no free. Numbers are range-checked at load.
 */
struct conf {
	const char *env;                 /* VALERIE_ENV: development | production */
	const char *env_file;            /* VALERIE_ENV_FILE: the env file the launcher loaded */
	const char *log_level;           /* LOG_LEVEL: debug | info | warning | error */
	long long threads;               /* VALERIE_THREADS: per worker process */
	long long workers;               /* VALERIE_WORKERS: processes in the pool */
	long long max_body_bytes;        /* VALERIE_MAX_BODY_BYTES */
	long long shutdown_timeout;      /* VALERIE_SHUTDOWN_TIMEOUT: seconds to drain */
	long long metrics_port;          /* VALERIE_METRICS_PORT: per-replica scrape port, 0 = off */
	const char *metrics_addr;        /* VALERIE_METRICS_ADDR: numeric IP it listens on */

	const char *llm_provider;        /* VALERIE_LLM_PROVIDER */
	const char *llm_fallbacks;       /* VALERIE_LLM_FALLBACKS */
	const char *models;              /* VALERIE_MODELS */
	long long turn_timeout;          /* VALERIE_TURN_TIMEOUT */
	const char *ca_bundle;           /* VALERIE_CA_BUNDLE: CAs for upstream HTTPS */
	const char *http_client;         /* VALERIE_HTTP_CLIENT: builtin | libcurl, for plain http:// */
	const char *openai_api_key;
	const char *openai_model;
	const char *openai_base_url;
	long long openai_timeout;
	long long openai_connect_timeout_ms;
	long long openai_first_token_timeout_ms;
	long long openai_max_retries;
	long long openai_cb_failure_threshold;
	long long openai_cb_reset_timeout;
	const char *anthropic_api_key;
	const char *anthropic_model;
	const char *anthropic_base_url;
	long long anthropic_timeout;
	long long anthropic_connect_timeout_ms;
	long long anthropic_first_token_timeout_ms;
	long long anthropic_max_retries;
	long long anthropic_cb_failure_threshold;
	long long anthropic_cb_reset_timeout;

	const char *session_store;       /* lmdb | redis */
	const char *session_redis_url;
	long long session_redis_min_replicas;       /* VALERIE_SESSION_REDIS_MIN_REPLICAS: WAIT */
	long long session_redis_replica_timeout_ms; /* VALERIE_SESSION_REDIS_REPLICA_TIMEOUT_MS */
	long long session_ttl;
	const char *data_dir;
	long long lmdb_map_mb;           /* VALERIE_LMDB_MAP_MB: LMDB map size */
	const char *lmdb_sync;           /* VALERIE_LMDB_SYNC: periodic | full */
	long long history_turns;         /* VALERIE_HISTORY_TURNS: window sent to a provider */
	long long history_chars;         /* VALERIE_HISTORY_CHARS */
	long long max_message_chars;     /* VALERIE_MAX_MESSAGE_CHARS: one user message */
	long long json_max_depth;        /* VALERIE_JSON_MAX_DEPTH: request JSON nesting */
	long long offline_delay_ms;      /* VALERIE_OFFLINE_DELAY_MS: before the first token */
	long long offline_token_ms;      /* VALERIE_OFFLINE_TOKEN_MS: between tokens */

	const char *auth;                /* none | jwt | apikey | jwt,apikey */
	const char *jwt_secret_key;
	const char *jwt_algorithm;
	const char *jwt_public_key_file;
	const char *jwt_private_key_file;
	long long jwt_expiration_minutes;
	const char *jwt_issuer;
	const char *jwt_audience;
	const char *api_keys_file;
	const char *cors_origins;
	long long rate_limit_rpm;
	long long rate_limit_burst;

	long long agent_max_steps;
	long long mcp_timeout;
	long long mcp_max_retries;
	long long mcp_cb_failure_threshold;
	long long mcp_cb_reset_timeout;
	const char *contexto_negocio_endpoint;
	long long contexto_negocio_timeout;    /* CONTEXTO_NEGOCIO_TIMEOUT: seconds, whole fetch */
	long long contexto_negocio_cache_ttl;  /* CONTEXTO_NEGOCIO_CACHE_TTL: seconds, 0 = no cache */

	const char *langfuse_public_key;
	const char *langfuse_secret_key;
	const char *langfuse_host;
	const char *otlp_endpoint;
	const char *trace_content;          /* "true": span input and output recorded */
	long long trace_queue_size;
	long long trace_export_timeout_ms;
};

enum conf_status {
	CONF_OK = 0,
	CONF_INVALID
};

/* Looks a variable up; returns NULL when unset. */
typedef const char *(*conf_getenv_fn)(const char *name, void *ctx);

/*
 * Fills `cfg` from the variables `get` finds (an empty value counts as unset).
 * On CONF_INVALID, `err` holds one line naming the variable and why, for
 * example `VALERIE_THREADS: must be an integer from 1 to 1024, got "abc"`.
 */
enum conf_status conf_load(struct conf *cfg, conf_getenv_fn get, void *ctx,
    char *err, size_t errlen);

/* conf_load over the process environment. */
enum conf_status conf_load_env(struct conf *cfg, char *err, size_t errlen);

/*
 * The effective configuration as a JSON object, keys in snake case of the
 * setting, secrets redacted ("[redacted]" when set, null when not) and
 * passwords cut out of URLs. Caller frees with json_object_put; NULL on OOM.
 */
struct json_object *conf_to_json(const struct conf *cfg);

/*
 * Checks a URL as the http(s) settings are checked: scheme http or https, a
 * host, no spaces or control characters. 0, or -1 with `why` filled.
 */
int conf_check_web_url(const char *value, char *why, size_t whylen);

/*
 * `url` as /config shows it: the password (or a user part without one) and
 * the query's values (but `db`) replaced by "[redacted]". Caller puts; NULL
 * on OOM.
 */
struct json_object *conf_url_json(const char *url);

#endif
