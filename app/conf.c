/* conf: settings read from the environment, validated once at start. */
#include "config.h"

#include "agents.h"
#include "buf.h"
#include "conf.h"
#include "store_redis.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <json-c/json.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

enum cfg_type {
	CFG_STR,    /* free text */
	CFG_SECRET, /* free text, never shown */
	CFG_INT,    /* integer in [min, max] */
	CFG_ENUM,   /* one of `choices`, case-insensitive, stored canonical */
	CFG_LIST,   /* comma-separated, each one of `choices` (or any token if NULL) */
	CFG_URL     /* scheme in `choices`, then a host or path; password redacted */
};

typedef int (*cfg_check_fn)(const char *value, char *why, size_t whylen);

struct cfg_field {
	const char *env;
	const char *alias;   /* also read when `env` is unset (seed names) */
	enum cfg_type type;
	const char *def;     /* default as text; NULL = unset */
	long long min, max;
	const char *const *choices;
	size_t off;
	cfg_check_fn check;  /* extra rule, or NULL */
};

static const char *const envs[] = {"development", "production", NULL};
static const char *const levels[] = {"debug", "info", "warning", "error", NULL};
static const char *const providers[] = {"offline", "openai", "anthropic", NULL};
static const char *const stores[] = {"lmdb", "redis", NULL};
static const char *const syncs[] = {"periodic", "intact", "full", NULL};
static const char *const bools[] = {"false", "true", NULL};
static const char *const http_clients[] = {"builtin", "libcurl", NULL};
static const char *const algs[] = {"HS256", "HS384", "HS512", "RS256", "ES256", NULL};
static const char *const web[] = {"http", "https", NULL};
static const char *const redis_schemes[] = {"redis", "unix", NULL};

static int check_auth(const char *value, char *why, size_t whylen);
static int check_log_level(const char *value, char *why, size_t whylen);
static int check_ip(const char *value, char *why, size_t whylen);
static int check_redis_url(const char *value, char *why, size_t whylen);
static int check_origins(const char *value, char *why, size_t whylen);
static struct json_object *url_redacted(const char *url);

#define S(f) offsetof(struct conf, f)

/* NOTE: the JSON key of a setting is its name in lower case without VALERIE_. */
static const struct cfg_field fields[] = {
	{"VALERIE_ENV", NULL, CFG_ENUM, "development", 0, 0, envs, S(env), NULL},
	{"VALERIE_ENV_FILE", NULL, CFG_STR, NULL, 0, 0, NULL, S(env_file), NULL},
	{"LOG_LEVEL", NULL, CFG_STR, "info", 0, 0, NULL, S(log_level), check_log_level},
	{"VALERIE_THREADS", NULL, CFG_INT, "8", 1, 1024, NULL, S(threads), NULL},
	{"VALERIE_WORKERS", NULL, CFG_INT, "2", 1, 256, NULL, S(workers), NULL},
	{"VALERIE_MAX_BODY_BYTES", NULL, CFG_INT, "1048576", 1024, 67108864, NULL,
	    S(max_body_bytes), NULL},
	{"VALERIE_SHUTDOWN_TIMEOUT", NULL, CFG_INT, "30", 1, 3600, NULL,
	    S(shutdown_timeout), NULL},
	{"VALERIE_METRICS_PORT", NULL, CFG_INT, "0", 0, 65535, NULL, S(metrics_port), NULL},
	{"VALERIE_METRICS_ADDR", NULL, CFG_STR, "127.0.0.1", 0, 0, NULL, S(metrics_addr),
	    check_ip},

	{"VALERIE_LLM_PROVIDER", NULL, CFG_ENUM, "offline", 0, 0, providers,
	    S(llm_provider), NULL},
	{"VALERIE_LLM_FALLBACKS", NULL, CFG_LIST, NULL, 0, 0, providers,
	    S(llm_fallbacks), NULL},
	{"VALERIE_MODELS", NULL, CFG_LIST, NULL, 0, 0, NULL, S(models), NULL},
	{"VALERIE_TURN_TIMEOUT", NULL, CFG_INT, "120", 1, 3600, NULL, S(turn_timeout), NULL},
	{"VALERIE_CA_BUNDLE", NULL, CFG_STR, NULL, 0, 0, NULL, S(ca_bundle), NULL},
	{"VALERIE_HTTP_CLIENT", NULL, CFG_ENUM, "builtin", 0, 0, http_clients, S(http_client), NULL},
	{"VALERIE_OPENAI_API_KEY", "OPENAI_API_KEY", CFG_SECRET, NULL, 0, 0, NULL,
	    S(openai_api_key), NULL},
	{"OPENAI_MODEL", NULL, CFG_STR, "gpt-4o-mini", 0, 0, NULL, S(openai_model), NULL},
	{"OPENAI_BASE_URL", NULL, CFG_URL, "https://api.openai.com/v1", 0, 0, web,
	    S(openai_base_url), NULL},
	{"OPENAI_TIMEOUT", NULL, CFG_INT, "60", 1, 3600, NULL, S(openai_timeout), NULL},
	{"OPENAI_CONNECT_TIMEOUT_MS", NULL, CFG_INT, "5000", 100, 600000, NULL,
	    S(openai_connect_timeout_ms), NULL},
	{"OPENAI_FIRST_TOKEN_TIMEOUT_MS", NULL, CFG_INT, "30000", 100, 3600000, NULL,
	    S(openai_first_token_timeout_ms), NULL},
	{"OPENAI_MAX_RETRIES", NULL, CFG_INT, "2", 0, 10, NULL, S(openai_max_retries), NULL},
	{"OPENAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD", NULL, CFG_INT, "5", 1, 1000, NULL,
	    S(openai_cb_failure_threshold), NULL},
	{"OPENAI_CIRCUIT_BREAKER_RESET_TIMEOUT", NULL, CFG_INT, "30", 1, 86400, NULL,
	    S(openai_cb_reset_timeout), NULL},
	{"VALERIE_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY", CFG_SECRET, NULL, 0, 0, NULL,
	    S(anthropic_api_key), NULL},
	{"ANTHROPIC_MODEL", NULL, CFG_STR, "claude-3-5-haiku-latest", 0, 0, NULL,
	    S(anthropic_model), NULL},
	{"ANTHROPIC_BASE_URL", NULL, CFG_URL, "https://api.anthropic.com", 0, 0, web,
	    S(anthropic_base_url), NULL},
	{"ANTHROPIC_TIMEOUT", NULL, CFG_INT, "60", 1, 3600, NULL, S(anthropic_timeout), NULL},
	{"ANTHROPIC_CONNECT_TIMEOUT_MS", NULL, CFG_INT, "5000", 100, 600000, NULL,
	    S(anthropic_connect_timeout_ms), NULL},
	{"ANTHROPIC_FIRST_TOKEN_TIMEOUT_MS", NULL, CFG_INT, "30000", 100, 3600000, NULL,
	    S(anthropic_first_token_timeout_ms), NULL},
	{"ANTHROPIC_MAX_RETRIES", NULL, CFG_INT, "2", 0, 10, NULL, S(anthropic_max_retries), NULL},
	{"ANTHROPIC_CIRCUIT_BREAKER_FAILURE_THRESHOLD", NULL, CFG_INT, "5", 1, 1000, NULL,
	    S(anthropic_cb_failure_threshold), NULL},
	{"ANTHROPIC_CIRCUIT_BREAKER_RESET_TIMEOUT", NULL, CFG_INT, "30", 1, 86400, NULL,
	    S(anthropic_cb_reset_timeout), NULL},

	{"VALERIE_SESSION_STORE", NULL, CFG_ENUM, "lmdb", 0, 0, stores, S(session_store), NULL},
	{"VALERIE_SESSION_REDIS_URL", NULL, CFG_URL, "redis://127.0.0.1:6379/0", 0, 0,
	    redis_schemes, S(session_redis_url), check_redis_url},
	{"VALERIE_SESSION_REDIS_MIN_REPLICAS", NULL, CFG_INT, "0", 0, 16, NULL,
	    S(session_redis_min_replicas), NULL},
	{"VALERIE_SESSION_REDIS_REPLICA_TIMEOUT_MS", NULL, CFG_INT, "500", 1, 1500, NULL,
	    S(session_redis_replica_timeout_ms), NULL},
	{"VALERIE_SESSION_TTL", NULL, CFG_INT, "86400", 60, 31536000, NULL, S(session_ttl), NULL},
	{"VALERIE_DATA_DIR", NULL, CFG_STR, "/var/lib/valerie", 0, 0, NULL, S(data_dir), NULL},
	{"VALERIE_LMDB_MAP_MB", NULL, CFG_INT, "1024", 16, 1048576, NULL, S(lmdb_map_mb), NULL},
	{"VALERIE_LMDB_SYNC", NULL, CFG_ENUM, "periodic", 0, 0, syncs, S(lmdb_sync), NULL},
	{"VALERIE_HISTORY_TURNS", NULL, CFG_INT, "20", 1, 1000, NULL, S(history_turns), NULL},
	{"VALERIE_HISTORY_CHARS", NULL, CFG_INT, "24000", 100, 10000000, NULL,
	    S(history_chars), NULL},
	{"VALERIE_MAX_MESSAGE_CHARS", NULL, CFG_INT, "32000", 1, 1000000, NULL,
	    S(max_message_chars), NULL},
	{"VALERIE_JSON_MAX_DEPTH", NULL, CFG_INT, "32", 2, 256, NULL, S(json_max_depth), NULL},
	{"VALERIE_OFFLINE_DELAY_MS", NULL, CFG_INT, "0", 0, 600000, NULL,
	    S(offline_delay_ms), NULL},
	{"VALERIE_OFFLINE_TOKEN_MS", NULL, CFG_INT, "0", 0, 60000, NULL,
	    S(offline_token_ms), NULL},

	{"VALERIE_AUTH", NULL, CFG_STR, "none", 0, 0, NULL, S(auth), check_auth},
	{"JWT_SECRET_KEY", NULL, CFG_SECRET, NULL, 0, 0, NULL, S(jwt_secret_key), NULL},
	{"JWT_ALGORITHM", NULL, CFG_ENUM, "HS256", 0, 0, algs, S(jwt_algorithm), NULL},
	{"JWT_PUBLIC_KEY_FILE", NULL, CFG_STR, NULL, 0, 0, NULL, S(jwt_public_key_file), NULL},
	{"JWT_PRIVATE_KEY_FILE", NULL, CFG_STR, NULL, 0, 0, NULL, S(jwt_private_key_file), NULL},
	{"JWT_EXPIRATION_MINUTES", NULL, CFG_INT, "60", 1, 525600, NULL,
	    S(jwt_expiration_minutes), NULL},
	{"JWT_ISSUER", NULL, CFG_STR, NULL, 0, 0, NULL, S(jwt_issuer), NULL},
	{"JWT_AUDIENCE", NULL, CFG_STR, NULL, 0, 0, NULL, S(jwt_audience), NULL},
	{"VALERIE_API_KEYS_FILE", NULL, CFG_STR, NULL, 0, 0, NULL, S(api_keys_file), NULL},
	{"CORS_ORIGINS", NULL, CFG_LIST, NULL, 0, 0, NULL, S(cors_origins), check_origins},
	{"RATE_LIMIT_REQUESTS_PER_MINUTE", NULL, CFG_INT, "60", 1, 1000000, NULL,
	    S(rate_limit_rpm), NULL},
	{"RATE_LIMIT_BURST", NULL, CFG_INT, "10", 1, 1000000, NULL, S(rate_limit_burst), NULL},

	{"VALERIE_AGENT_MAX_STEPS", NULL, CFG_INT, "5", 1, 50, NULL, S(agent_max_steps), NULL},
	{"MCP_TIMEOUT", NULL, CFG_INT, "30", 1, 3600, NULL, S(mcp_timeout), NULL},
	{"MCP_MAX_RETRIES", NULL, CFG_INT, "3", 0, 10, NULL, S(mcp_max_retries), NULL},
	{"MCP_CIRCUIT_BREAKER_FAILURE_THRESHOLD", NULL, CFG_INT, "5", 1, 1000, NULL,
	    S(mcp_cb_failure_threshold), NULL},
	{"MCP_CIRCUIT_BREAKER_RESET_TIMEOUT", NULL, CFG_INT, "60", 1, 86400, NULL,
	    S(mcp_cb_reset_timeout), NULL},
	{"CONTEXTO_NEGOCIO_ENDPOINT", NULL, CFG_URL, NULL, 0, 0, web,
	    S(contexto_negocio_endpoint), NULL},
	{"CONTEXTO_NEGOCIO_TIMEOUT", NULL, CFG_INT, "10", 1, 600, NULL,
	    S(contexto_negocio_timeout), NULL},
	{"CONTEXTO_NEGOCIO_CACHE_TTL", NULL, CFG_INT, "300", 0, 86400, NULL,
	    S(contexto_negocio_cache_ttl), NULL},

	{"LANGFUSE_PUBLIC_KEY", NULL, CFG_STR, NULL, 0, 0, NULL, S(langfuse_public_key), NULL},
	{"LANGFUSE_SECRET_KEY", NULL, CFG_SECRET, NULL, 0, 0, NULL, S(langfuse_secret_key), NULL},
	{"LANGFUSE_HOST", NULL, CFG_URL, NULL, 0, 0, web, S(langfuse_host), NULL},
	{"OTEL_EXPORTER_OTLP_ENDPOINT", NULL, CFG_URL, NULL, 0, 0, web, S(otlp_endpoint), NULL},
	{"VALERIE_TRACE_CONTENT", NULL, CFG_ENUM, "false", 0, 0, bools, S(trace_content), NULL},
	{"VALERIE_TRACE_QUEUE_SIZE", NULL, CFG_INT, "4096", 16, 1000000, NULL,
	    S(trace_queue_size), NULL},
	{"VALERIE_TRACE_EXPORT_TIMEOUT_MS", NULL, CFG_INT, "5000", 100, 120000, NULL,
	    S(trace_export_timeout_ms), NULL},
};

#undef S

#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

static const char **
str_at(struct conf *cfg, const struct cfg_field *f)
{
	return (const char **)(void *)((char *)cfg + f->off);
}

static long long *
int_at(struct conf *cfg, const struct cfg_field *f)
{
	return (long long *)(void *)((char *)cfg + f->off);
}

/* Strict decimal: optional '-', digits only, no spaces, in [min, max]. */
static int
parse_int(const char *s, long long min, long long max, long long *out)
{
	char *end;
	long long v;

	if (*s == '\0' || isspace((unsigned char)*s) || *s == '+')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static const char *
match_choice(const char *const *choices, const char *s, size_t len)
{
	size_t i;

	for (i = 0; choices[i] != NULL; i++)
		if (strlen(choices[i]) == len && strncasecmp(choices[i], s, len) == 0)
			return choices[i];
	return NULL;
}

static void
choices_text(const char *const *choices, char *out, size_t outlen)
{
	size_t i, n = 0;

	out[0] = '\0';
	for (i = 0; choices[i] != NULL && n < outlen; i++)
		n += (size_t)snprintf(out + n, outlen - n, "%s%s", i ? ", " : "", choices[i]);
}

static int
has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

static int
check_list(const char *value, const char *const *choices, char *why, size_t whylen)
{
	const char *p = value, *comma;
	size_t len;
	char all[128];

	for (;;) {
		comma = strchr(p, ',');
		len = comma ? (size_t)(comma - p) : strlen(p);
		if (len == 0 || memchr(p, ' ', len) != NULL) {
			snprintf(why, whylen, "must be a comma-separated list without spaces or "
			    "empty items");
			return -1;
		}
		if (choices != NULL && match_choice(choices, p, len) == NULL) {
			choices_text(choices, all, sizeof(all));
			snprintf(why, whylen, "unknown item \"%.*s\" (known: %s)", (int)len, p, all);
			return -1;
		}
		if (comma == NULL)
			return 0;
		p = comma + 1;
	}
}

/*
 * An http(s) URL as libcurl will parse it for every request (httpc.c sets it
 * with curl_url_set): a bad port or host is refused here, at start, rather
 * than failing every call. The URL is not quoted: it may hold a password.
 */
static int
check_web_url(const char *value, char *why, size_t whylen)
{
	CURLU *u = curl_url();
	CURLUcode rc;

	if (u == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	rc = curl_url_set(u, CURLUPART_URL, value, 0);
	curl_url_cleanup(u);
	if (rc != CURLUE_OK) {
		snprintf(why, whylen, "not a URL libcurl can use: %s", curl_url_strerror(rc));
		return -1;
	}
	return 0;
}

static int
check_url(const char *value, const char *const *schemes, char *why, size_t whylen)
{
	const char *sep = strstr(value, "://");
	char all[64];

	choices_text(schemes, all, sizeof(all));
	if (sep == NULL || match_choice(schemes, value, (size_t)(sep - value)) == NULL ||
	    sep[3] == '\0' || sep[3] == '?' || strchr(value, ' ') != NULL) {
		snprintf(why, whylen, "must be a URL with scheme %s", all);
		return -1;
	}
	return schemes == web ? check_web_url(value, why, whylen) : 0;
}

/* Secrets that come from examples and documents: never a production key. */
static const char *const placeholders[] = {
	"changeme", "change-me", "change_me", "secret", "your-secret-key", "your-256-bit-secret",
	"your-secret-key-here", "clave_secreta_32_caracteres_min", "<256-bit-random-key>",
	"supersecret", "password", NULL
};

/*
 * What VALERIE_AUTH needs must be there (in any environment). Then
 * VALERIE_ENV=production refuses what is only fit for development: no auth,
 * a JWT secret that is short or copied from an example, CORS open to every
 * origin. (Key files readable by others are refused when auth loads them.)
 */
/*
 * The env file the launcher loaded (VALERIE_ENV_FILE) holds the secrets: with
 * VALERIE_ENV=production it must exist and grant others nothing (mode & 007
 * == 0; its group may read it, as systemd's root:valerie 0640). NOTE: the
 * worker sees only its environment, so this is the one way to look at it.
 */
static enum conf_status
check_env_file(const char *path, char *err, size_t errlen)
{
	struct stat sb;

	if (stat(path, &sb) != 0) {
		snprintf(err, errlen, "VALERIE_ENV_FILE: cannot stat %.200s (%s): refused with "
		    "VALERIE_ENV=production", path, strerror(errno));
		return CONF_INVALID;
	}
	if ((sb.st_mode & (S_IRWXO)) != 0) {
		snprintf(err, errlen, "VALERIE_ENV_FILE: %.200s is open to others (mode %04o; chmod "
		    "600 or 640 it): refused with VALERIE_ENV=production", path,
		    (unsigned)(sb.st_mode & 07777));
		return CONF_INVALID;
	}
	return CONF_OK;
}

static enum conf_status
check_production(const struct conf *cfg, char *err, size_t errlen)
{
	const char *p, *comma;
	size_t i;

	if (strstr(cfg->auth, "jwt") != NULL && strncmp(cfg->jwt_algorithm, "HS", 2) == 0 &&
	    cfg->jwt_secret_key == NULL) {
		snprintf(err, errlen, "JWT_SECRET_KEY: required with VALERIE_AUTH=%s and "
		    "JWT_ALGORITHM=%s", cfg->auth, cfg->jwt_algorithm);
		return CONF_INVALID;
	}
	if (strstr(cfg->auth, "jwt") != NULL && strncmp(cfg->jwt_algorithm, "HS", 2) != 0 &&
	    cfg->jwt_public_key_file == NULL) {
		snprintf(err, errlen, "JWT_PUBLIC_KEY_FILE: required with JWT_ALGORITHM=%s",
		    cfg->jwt_algorithm);
		return CONF_INVALID;
	}
	if (strstr(cfg->auth, "apikey") != NULL && cfg->api_keys_file == NULL) {
		snprintf(err, errlen, "VALERIE_API_KEYS_FILE: required with VALERIE_AUTH=%s",
		    cfg->auth);
		return CONF_INVALID;
	}
	if (strcmp(cfg->env, "production") != 0)
		return CONF_OK;
	if (cfg->env_file != NULL && check_env_file(cfg->env_file, err, errlen) != CONF_OK)
		return CONF_INVALID;
	if (strcmp(cfg->auth, "none") == 0) {
		snprintf(err, errlen, "VALERIE_AUTH: none is refused with VALERIE_ENV=production "
		    "(use jwt, apikey or jwt,apikey)");
		return CONF_INVALID;
	}
	if (strstr(cfg->auth, "jwt") != NULL && strncmp(cfg->jwt_algorithm, "HS", 2) == 0 &&
	    cfg->jwt_secret_key != NULL) {
		if (strlen(cfg->jwt_secret_key) < 32) {
			snprintf(err, errlen, "JWT_SECRET_KEY: at least 32 bytes with "
			    "VALERIE_ENV=production (openssl rand -hex 32)");
			return CONF_INVALID;
		}
		for (i = 0; placeholders[i] != NULL; i++)
			if (strcasecmp(cfg->jwt_secret_key, placeholders[i]) == 0 ||
			    strcasestr(cfg->jwt_secret_key, "your-") != NULL ||
			    strcasestr(cfg->jwt_secret_key, "change") != NULL) {
				snprintf(err, errlen, "JWT_SECRET_KEY: a placeholder from an example is "
				    "refused with VALERIE_ENV=production (openssl rand -hex 32)");
				return CONF_INVALID;
			}
	}
	for (p = cfg->cors_origins; p != NULL && *p != '\0'; p = comma ? comma + 1 : NULL) {
		comma = strchr(p, ',');
		if (*p == '*' && (comma == p + 1 || (comma == NULL && p[1] == '\0'))) {
			snprintf(err, errlen, "CORS_ORIGINS: * is refused with VALERIE_ENV=production "
			    "(list the origins)");
			return CONF_INVALID;
		}
	}
	return CONF_OK;
}

static int
check_auth(const char *value, char *why, size_t whylen)
{
	if (strcmp(value, "none") == 0 || strcmp(value, "jwt") == 0 ||
	    strcmp(value, "apikey") == 0 || strcmp(value, "jwt,apikey") == 0 ||
	    strcmp(value, "apikey,jwt") == 0)
		return 0;
	snprintf(why, whylen, "must be none, jwt, apikey or jwt,apikey");
	return -1;
}

static int
check_log_level(const char *value, char *why, size_t whylen)
{
	if (match_choice(levels, value, strlen(value)) != NULL || strcasecmp(value, "warn") == 0)
		return 0;
	snprintf(why, whylen, "must be debug, info, warning or error");
	return -1;
}

/*
 * One CORS_ORIGINS entry: "*", or an origin as a browser sends it in Origin:
 * http or https, "://", then the host in lower case with an optional :port,
 * nothing after (no path, no trailing slash).
 */
static int
origin_ok(const char *p, size_t len)
{
	size_t i, at;

	if (len == 1 && *p == '*')
		return 1;
	if (len > 7 && strncmp(p, "http://", 7) == 0)
		at = 7;
	else if (len > 8 && strncmp(p, "https://", 8) == 0)
		at = 8;
	else
		return 0;
	for (i = at; i < len; i++)
		if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9') ||
		    p[i] == '.' || p[i] == '-' || p[i] == ':' || p[i] == '[' || p[i] == ']'))
			return 0;
	return p[len - 1] != ':';
}

/*
 * CORS_ORIGINS: app.c matches origins exactly, as browsers send them, so an
 * entry with a path, a trailing slash or capitals would never match: refused
 * here, naming it, instead of silently allowing no page.
 */
static int
check_origins(const char *value, char *why, size_t whylen)
{
	const char *p = value, *comma;
	size_t len;

	for (;;) {
		comma = strchr(p, ',');
		len = comma ? (size_t)(comma - p) : strlen(p);
		if (!origin_ok(p, len)) {
			snprintf(why, whylen, "\"%.*s\" is not an origin as browsers send it: "
			    "http(s)://host[:port] in lower case, no path or trailing slash (or *)",
			    (int)(len > 64 ? 64 : len), p);
			return -1;
		}
		if (comma == NULL)
			return 0;
		p = comma + 1;
	}
}

/*
 * The Redis URL as the store parses it (port, database, user and password,
 * socket path): what a worker would refuse at start, check-config refuses
 * (exit 78) instead of printing it as valid. Checked with either store, as
 * `valerie redis-export` and the other URL settings are.
 */
static int
check_redis_url(const char *value, char *why, size_t whylen)
{
	return store_redis_url_check(value, why, whylen);
}

/* A numeric IPv4 or IPv6 address: what a listening socket binds to, no name lookup. */
static int
check_ip(const char *value, char *why, size_t whylen)
{
	unsigned char addr[16];

	if (inet_pton(AF_INET, value, addr) == 1 || inet_pton(AF_INET6, value, addr) == 1)
		return 0;
	snprintf(why, whylen, "must be a numeric IPv4 or IPv6 address (127.0.0.1, 0.0.0.0, ::), "
	    "got \"%.40s\"", value);
	return -1;
}

/* Loads one field; returns 0 or -1 with `why` filled. */
static int
load_field(struct conf *cfg, const struct cfg_field *f, const char *value,
    char *why, size_t whylen)
{
	const char *canon;
	char all[128];

	if (value != NULL && has_control(value)) {
		snprintf(why, whylen, "contains control characters");
		return -1;
	}
	if (value == NULL)
		value = f->def;
	if (f->type == CFG_INT) {
		if (parse_int(value, f->min, f->max, int_at(cfg, f)) != 0) {
			snprintf(why, whylen, "must be an integer from %lld to %lld, got \"%.40s\"",
			    f->min, f->max, value);
			return -1;
		}
		return 0;
	}
	*str_at(cfg, f) = value;
	if (value == NULL)
		return 0;
	switch (f->type) {
	case CFG_ENUM:
		canon = match_choice(f->choices, value, strlen(value));
		if (canon == NULL) {
			choices_text(f->choices, all, sizeof(all));
			snprintf(why, whylen, "must be one of %s, got \"%.40s\"", all, value);
			return -1;
		}
		*str_at(cfg, f) = canon;
		break;
	case CFG_LIST:
		if (check_list(value, f->choices, why, whylen) != 0)
			return -1;
		break;
	case CFG_URL:
		if (check_url(value, f->choices, why, whylen) != 0)
			return -1;
		break;
	default:
		break;
	}
	if (f->check != NULL && f->check(value, why, whylen) != 0)
		return -1;
	return 0;
}

enum conf_status
conf_load(struct conf *cfg, conf_getenv_fn get, void *ctx, char *err, size_t errlen)
{
	char why[192];
	const char *value, *name;
	size_t i;

	memset(cfg, 0, sizeof(*cfg));
	for (i = 0; i < NFIELDS; i++) {
		name = fields[i].env;
		value = get(name, ctx);
		if ((value == NULL || *value == '\0') && fields[i].alias != NULL) {
			value = get(fields[i].alias, ctx);
			if (value != NULL && *value != '\0')
				name = fields[i].alias;
		}
		if (value != NULL && *value == '\0')
			value = NULL;
		if (load_field(cfg, &fields[i], value, why, sizeof(why)) != 0) {
			snprintf(err, errlen, "%s: %s", name, why);
			return CONF_INVALID;
		}
	}
	return check_production(cfg, err, errlen);
}

static const char *
env_get(const char *name, void *ctx)
{
	(void)ctx;
	return getenv(name);
}

extern char **environ;

/* NOTE: the agents (MCP_<NAME>_URL) are not in the table: agents.c scans environ for them. */
enum conf_status
conf_load_env(struct conf *cfg, char *err, size_t errlen)
{
	enum conf_status st = conf_load(cfg, env_get, NULL, err, errlen);

	if (st == CONF_OK && agents_env_check(environ, err, errlen) != 0)
		return CONF_INVALID;
	return st;
}

int
conf_check_web_url(const char *value, char *why, size_t whylen)
{
	if (has_control(value)) {
		snprintf(why, whylen, "contains control characters");
		return -1;
	}
	return check_url(value, web, why, whylen);
}

struct json_object *
conf_url_json(const char *url)
{
	return url_redacted(url);
}

/* The JSON key of a field: lower case, without the VALERIE_ prefix. */
static void
field_key(const struct cfg_field *f, char *out, size_t outlen)
{
	const char *s = f->env;
	size_t i;

	if (strncmp(s, "VALERIE_", 8) == 0)
		s += 8;
	for (i = 0; s[i] != '\0' && i + 1 < outlen; i++)
		out[i] = (char)tolower((unsigned char)s[i]);
	out[i] = '\0';
}

/*
 * A URL with its credentials replaced by "[redacted]"; NULL on OOM. The
 * password of the user part ("user:[redacted]@"), a user part without one
 * (a token given as the user: "[redacted]@"), and the value of every query
 * parameter but a Redis socket's `db`: a token in the query is the only way
 * to give an MCP agent or the business context endpoint one.
 */
static struct json_object *
url_redacted(const char *url)
{
	static const char mark[] = "[redacted]";
	const char *sep = strstr(url, "://"), *auth, *auth_end, *at = NULL, *colon, *p, *q;
	struct json_object *o;
	struct buf b = {0};
	size_t n;

	if (sep == NULL)
		return json_object_new_string(url);
	auth = sep + 3;
	auth_end = auth + strcspn(auth, "/?#");
	for (p = auth; p < auth_end; p++)
		if (*p == '@')
			at = p;
	if (at != NULL) {
		colon = memchr(auth, ':', (size_t)(at - auth));
		buf_append(&b, url, (size_t)((colon != NULL ? colon + 1 : auth) - url));
		buf_puts(&b, mark);
		p = at;
	} else {
		p = url;
	}
	q = strchr(auth_end, '?');
	if (q != NULL) {
		q++;
		buf_append(&b, p, (size_t)(q - p));
		/* Each name=value up to '&' or the fragment: the value goes. */
		while (*q != '\0' && *q != '#') {
			n = strcspn(q, "&#");
			p = memchr(q, '=', n);
			if (p != NULL && (size_t)(p + 1 - q) < n &&
			    !(p - q == 2 && memcmp(q, "db", 2) == 0)) {
				buf_append(&b, q, (size_t)(p + 1 - q));
				buf_puts(&b, mark);
			} else if (p == NULL && n > 0) {
				buf_puts(&b, mark);   /* a bare parameter may be the secret itself */
			} else {
				buf_append(&b, q, n);
			}
			q += n;
			if (*q == '&')
				buf_append(&b, q++, 1);
		}
		p = q;
	}
	buf_puts(&b, p);
	o = b.oom || b.data == NULL ? NULL : json_object_new_string(b.data);
	buf_free(&b);
	return o;
}

struct json_object *
conf_to_json(const struct conf *cfg)
{
	struct json_object *doc, *v;
	const struct cfg_field *f;
	const char *s;
	char key[64];
	size_t i;

	doc = json_object_new_object();
	if (doc == NULL)
		return NULL;
	for (i = 0; i < NFIELDS; i++) {
		f = &fields[i];
		field_key(f, key, sizeof(key));
		if (f->type == CFG_INT) {
			v = json_object_new_int64(*int_at((struct conf *)cfg, f));
		} else {
			s = *str_at((struct conf *)cfg, f);
			if (s == NULL)
				v = NULL;
			else if (f->type == CFG_SECRET)
				v = json_object_new_string("[redacted]");
			else if (f->type == CFG_URL)
				v = url_redacted(s);
			else
				v = json_object_new_string(s);
			if (s != NULL && v == NULL)
				goto oom;
		}
		if (f->type == CFG_INT && v == NULL)
			goto oom;
		if (json_object_object_add(doc, key, v) != 0) {
			json_object_put(v);
			goto oom;
		}
	}
	v = agents_env_json(environ);
	if (v == NULL || json_object_object_add(doc, "agents", v) != 0) {
		json_object_put(v);
		goto oom;
	}
	return doc;
oom:
	json_object_put(doc);
	return NULL;
}
