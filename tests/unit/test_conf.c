/* test_conf: configuration from the environment: defaults, valid, missing, out of range, garbage. */
#include "config.h"

#include "check.h"
#include "fakeenv.h"
#include "conf.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* A fake environment: NULL-terminated name/value pairs. */
static enum conf_status
load(struct conf *c, const char *const *kv, char *err)
{
	err[0] = '\0';
	return conf_load(c, fake_get, (void *)kv, err, 256);
}

static void
expect_invalid(const char *name, const char *value, const char *why)
{
	const char *kv[] = {name, value, NULL, NULL};
	struct conf c;
	char err[256];

	CHECK_INT(load(&c, kv, err), CONF_INVALID);
	/* One line, naming the variable first. */
	CHECK(strncmp(err, name, strlen(name)) == 0);
	CHECK(strchr(err, '\n') == NULL);
	CHECK_CONTAINS(err, why);
}

int
main(void)
{
	const char *none[] = {NULL, NULL};
	const char *valid[] = {
		"VALERIE_THREADS", "64", "VALERIE_LLM_PROVIDER", "OpenAI",
		"OPENAI_MODEL", "gpt-4.1-mini", "LOG_LEVEL", "DEBUG",
		"OPENAI_API_KEY", "sk-abcdefghijklmnop", "VALERIE_SESSION_STORE", "redis",
		"VALERIE_SESSION_REDIS_URL", "redis://:hunter2@redis:6379/1",
		"VALERIE_LLM_FALLBACKS", "anthropic,offline", "JWT_SECRET_KEY", "s3cret-s3cret",
		"VALERIE_AUTH", "jwt,apikey", "VALERIE_API_KEYS_FILE", "/etc/valerie/api-keys",
		"VALERIE_SESSION_TTL", "3600",
		"OPENAI_TIMEOUT", "", NULL, NULL};
	struct conf c;
	struct json_object *doc, *v;
	const char *text;
	char err[256];

	/* Defaults. */
	CHECK_INT(load(&c, none, err), CONF_OK);
	CHECK_STR(c.env, "development");
	CHECK_STR(c.llm_provider, "offline");
	CHECK_STR(c.session_store, "lmdb");
	CHECK_STR(c.auth, "none");
	CHECK_STR(c.http_client, "builtin");
	CHECK_STR(c.openai_model, "gpt-4o-mini");
	CHECK_STR(c.openai_base_url, "https://api.openai.com/v1");
	CHECK_INT(c.max_body_bytes, 1048576);
	CHECK_INT(c.rate_limit_burst, 10);
	CHECK_INT(c.rate_limit_rpm, 60);
	CHECK(c.openai_api_key == NULL);
	CHECK(c.llm_fallbacks == NULL);
	CHECK_INT(c.metrics_port, 0);
	CHECK_STR(c.metrics_addr, "127.0.0.1");

	/* Valid values, canonical enums, the seed alias, empty means default. */
	CHECK_INT(load(&c, valid, err), CONF_OK);
	CHECK_STR(err, "");
	CHECK_INT(c.threads, 64);
	CHECK_STR(c.llm_provider, "openai");
	CHECK_STR(c.openai_api_key, "sk-abcdefghijklmnop");
	CHECK_STR(c.session_store, "redis");
	CHECK_INT(c.session_ttl, 3600);
	CHECK_INT(c.openai_timeout, 60);

	/* The document: snake-case keys, secrets and URL passwords redacted. */
	doc = conf_to_json(&c);
	CHECK(doc != NULL);
	text = json_object_to_json_string(doc);
	CHECK(strstr(text, "sk-abcdefghijklmnop") == NULL);
	CHECK(strstr(text, "hunter2") == NULL);
	CHECK(strstr(text, "s3cret") == NULL);
	CHECK(json_object_object_get_ex(doc, "openai_model", &v));
	CHECK_STR(json_object_get_string(v), "gpt-4.1-mini");
	CHECK(json_object_object_get_ex(doc, "openai_api_key", &v));
	CHECK_STR(json_object_get_string(v), "[redacted]");
	CHECK(json_object_object_get_ex(doc, "session_redis_url", &v));
	CHECK_STR(json_object_get_string(v), "redis://:[redacted]@redis:6379/1");
	CHECK(json_object_object_get_ex(doc, "threads", &v));
	CHECK_INT(json_object_get_int64(v), 64);
	CHECK(json_object_object_get_ex(doc, "anthropic_api_key", &v));
	CHECK(v == NULL);
	json_object_object_foreach(doc, key, val) {
		const char *k;

		(void)val;
		for (k = key; *k; k++)
			CHECK((*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') || *k == '_');
	}
	json_object_put(doc);

	/*
	 * Credentials in a URL's query (the only way to give an MCP agent or the
	 * business context endpoint a token) or in a user part without a password
	 * are redacted too; a Redis socket's ?db= stays readable.
	 */
	{
		static const char *const urls[][2] = {
			{"https://ctx.example/ws.php?token=t0psecret&empresa=1",
			    "https://ctx.example/ws.php?token=[redacted]&empresa=[redacted]"},
			{"http://u:pw@agent:8003/mcp?api_key=t0psecret#frag",
			    "http://u:[redacted]@agent:8003/mcp?api_key=[redacted]#frag"},
			{"https://t0psecret@agent.example/mcp", "https://[redacted]@agent.example/mcp"},
			{"https://agent.example?key=t0psecret", "https://agent.example?key=[redacted]"},
			/* a bare parameter may be the secret itself */
			{"https://agent.example/mcp?t0psecret&x=1",
			    "https://agent.example/mcp?[redacted]&x=[redacted]"},
			{"https://agent.example/a@b?x", "https://agent.example/a@b?[redacted]"},
			{"https://agent.example/mcp?flag&k=", "https://agent.example/mcp?[redacted]&k="},
			{"unix:///run/redis.sock?db=3", "unix:///run/redis.sock?db=3"},
			{"redis://:hunter2@redis:6379/1", "redis://:[redacted]@redis:6379/1"},
			{"https://api.openai.com/v1", "https://api.openai.com/v1"},
		};
		size_t i;

		for (i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
			v = conf_url_json(urls[i][0]);
			CHECK(v != NULL);
			CHECK_STR(json_object_get_string(v), urls[i][1]);
			json_object_put(v);
		}
	}

	/* Out of range, garbage, unknown choices: one line naming the variable. */
	expect_invalid("VALERIE_THREADS", "0", "from 1 to 1024");
	expect_invalid("VALERIE_THREADS", "99999", "from 1 to 1024");
	expect_invalid("VALERIE_THREADS", "abc", "got \"abc\"");
	expect_invalid("VALERIE_THREADS", "12abc", "integer");
	expect_invalid("VALERIE_THREADS", " 12", "integer");
	expect_invalid("VALERIE_THREADS", "+12", "integer");
	expect_invalid("VALERIE_THREADS", "99999999999999999999999", "integer");
	expect_invalid("VALERIE_MAX_BODY_BYTES", "-1", "integer");
	expect_invalid("VALERIE_SESSION_TTL", "59", "from 60");
	expect_invalid("VALERIE_LLM_PROVIDER", "gpt", "must be one of offline, openai, anthropic");
	expect_invalid("VALERIE_SESSION_STORE", "postgres", "lmdb, redis");
	expect_invalid("VALERIE_ENV", "prod", "development, production");
	expect_invalid("VALERIE_HTTP_CLIENT", "curl", "must be one of builtin, libcurl");
	expect_invalid("LOG_LEVEL", "verbose", "debug, info");
	expect_invalid("VALERIE_AUTH", "basic", "none, jwt");
	expect_invalid("VALERIE_AUTH", "none,jwt", "none, jwt");
	expect_invalid("VALERIE_LLM_FALLBACKS", "openai,,offline", "empty");
	expect_invalid("VALERIE_LLM_FALLBACKS", "openai,llama", "unknown item \"llama\"");
	expect_invalid("OPENAI_BASE_URL", "api.openai.com/v1", "scheme http, https");
	expect_invalid("OPENAI_BASE_URL", "ftp://x", "scheme");
	expect_invalid("OPENAI_BASE_URL", "https://", "scheme");
	/* What libcurl would refuse at every call, refused at start. */
	expect_invalid("OPENAI_BASE_URL", "http://127.0.0.1:80o0/v1", "Port number");
	expect_invalid("ANTHROPIC_BASE_URL", "https://api.anthropic.com:443443", "Port number");
	expect_invalid("CONTEXTO_NEGOCIO_ENDPOINT", "https://:8443/ctx", "host");
	expect_invalid("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318x", "Port number");
	{
		const char *ok[] = {"OPENAI_BASE_URL", "http://[::1]:8000/v1",
		    "LANGFUSE_HOST", "https://langfuse.example.com", NULL, NULL};

		CHECK_INT(load(&c, ok, err), CONF_OK);
	}
	expect_invalid("VALERIE_SESSION_REDIS_URL", "http://redis:6379", "redis, unix");
	/* What the store would refuse at a worker's start, check-config refuses first. */
	expect_invalid("VALERIE_SESSION_REDIS_URL", "redis://redis:65536/0", "port");
	expect_invalid("VALERIE_SESSION_REDIS_URL", "redis://redis:6379x", "port");
	expect_invalid("VALERIE_SESSION_REDIS_URL", "redis://redis/zero", "database");
	expect_invalid("VALERIE_SESSION_REDIS_URL", "redis://redis?db=1", "no query");
	expect_invalid("VALERIE_SESSION_REDIS_URL", "redis://hunter2@redis", "password");
	expect_invalid("VALERIE_SESSION_REDIS_URL", "unix://run/redis.sock", "absolute path");
	expect_invalid("VALERIE_SESSION_REDIS_URL", "unix:///run/redis.sock?db=x", "database");
	{
		const char *leak[] = {"VALERIE_SESSION_REDIS_URL", "redis://u:hunter2@redis:0/1",
		    NULL, NULL};
		const char *sock[] = {"VALERIE_SESSION_REDIS_URL", "unix:///run/redis.sock?db=3",
		    NULL, NULL};

		CHECK_INT(load(&c, leak, err), CONF_INVALID);
		CHECK(strstr(err, "hunter2") == NULL);
		CHECK_INT(load(&c, sock, err), CONF_OK);
	}
	expect_invalid("JWT_ALGORITHM", "none", "HS256");
	expect_invalid("OPENAI_MODEL", "gpt\n4", "control characters");
	expect_invalid("VALERIE_METRICS_PORT", "65536", "from 0 to 65535");
	expect_invalid("VALERIE_METRICS_PORT", "-1", "from 0 to 65535");
	expect_invalid("VALERIE_METRICS_PORT", "http", "integer");
	expect_invalid("VALERIE_METRICS_ADDR", "localhost", "numeric IPv4 or IPv6");
	/* CORS origins are matched exactly as browsers send them: what could never match is refused. */
	expect_invalid("CORS_ORIGINS", "https://app.example/", "\"https://app.example/\"");
	expect_invalid("CORS_ORIGINS", "https://a.example,https://App.example", "App.example");
	expect_invalid("CORS_ORIGINS", "app.example", "http(s)://host[:port]");
	expect_invalid("CORS_ORIGINS", "https://a.example/path", "no path");
	expect_invalid("CORS_ORIGINS", "https://a.example:", "a.example:");
	{
		const char *kv[] = {"CORS_ORIGINS",
			"https://app.example,http://127.0.0.1:3000,http://[::1]:8080,*", NULL, NULL};

		CHECK_INT(load(&c, kv, err), CONF_OK);
	}
	expect_invalid("VALERIE_METRICS_ADDR", "127.0.0.1:9464", "numeric IPv4 or IPv6");
	{
		const char *kv[] = {"VALERIE_METRICS_PORT", "9464", "VALERIE_METRICS_ADDR", "::",
			NULL, NULL};

		CHECK_INT(load(&c, kv, err), CONF_OK);
		CHECK_INT(c.metrics_port, 9464);
		CHECK_STR(c.metrics_addr, "::");
	}

	/* The seed's name for the key is read when Valerie's is unset. */
	{
		const char *kv[] = {"ANTHROPIC_API_KEY", "ak", NULL, NULL};
		const char *both[] = {"VALERIE_OPENAI_API_KEY", "one", "OPENAI_API_KEY", "two",
			NULL, NULL};

		CHECK_INT(load(&c, kv, err), CONF_OK);
		CHECK_STR(c.anthropic_api_key, "ak");
		CHECK_INT(load(&c, both, err), CONF_OK);
		CHECK_STR(c.openai_api_key, "one");
	}
	{
		const char *kv[] = {"OPENAI_API_KEY", "bad\001", NULL, NULL};

		CHECK_INT(load(&c, kv, err), CONF_INVALID);
		CHECK(strncmp(err, "OPENAI_API_KEY:", 15) == 0);
		CHECK(strstr(err, "bad") == NULL || strstr(err, "\001") == NULL);
	}
	/* VALERIE_ENV=production refuses what only development may use: one line naming it. */
	{
		static const char good[] = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
		static const char *const refusals[][3] = {
			/* variable, value, the word the line must hold */
			{"VALERIE_AUTH", "none", "none"},
			{"JWT_SECRET_KEY", "0123456789abcdef0123456789abcde", "32"},      /* 31 bytes */
			{"JWT_SECRET_KEY", "your-256-bit-secret-padded-to-be-long-enough-xx", "placeholder"},
			{"JWT_SECRET_KEY", "please-change-this-to-a-long-random-value", "placeholder"},
			{"CORS_ORIGINS", "*", "*"},
			{"CORS_ORIGINS", "https://a.example,*", "*"},
			{"CORS_ORIGINS", "*,https://a.example", "*"},
		};
		const char *kv[] = {"VALERIE_ENV", "production", "VALERIE_AUTH", "jwt",
			"JWT_SECRET_KEY", good, NULL, NULL, NULL, NULL};
		size_t i;

		CHECK_INT(load(&c, kv, err), CONF_OK);
		CHECK_STR(err, "");
		CHECK_STR(c.env, "production");
		for (i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
			const char *name = refusals[i][0];

			/* The variable replaces its good value, or comes last. */
			kv[6] = kv[7] = NULL;
			if (strcmp(name, "VALERIE_AUTH") == 0)
				kv[3] = refusals[i][1];
			else if (strcmp(name, "JWT_SECRET_KEY") == 0)
				kv[5] = refusals[i][1];
			else {
				kv[6] = name;
				kv[7] = refusals[i][1];
			}
			CHECK_INT(load(&c, kv, err), CONF_INVALID);
			if (strncmp(err, name, strlen(name)) != 0 || strchr(err, '\n') != NULL ||
			    strstr(err, "production") == NULL || strstr(err, refusals[i][2]) == NULL)
				fprintf(stderr, "refusal %zu (%s=%s): \"%s\"\n", i, name, refusals[i][1], err);
			CHECK(strncmp(err, name, strlen(name)) == 0);
			CHECK(strchr(err, '\n') == NULL);
			CHECK_CONTAINS(err, "production");
			CHECK_CONTAINS(err, refusals[i][2]);
			/* The refusal never repeats a secret. */
			if (strcmp(name, "JWT_SECRET_KEY") == 0 && refusals[i][1][0] != '\0')
				CHECK(strstr(err, refusals[i][1]) == NULL);
			kv[3] = "jwt";
			kv[5] = good;
			kv[6] = kv[7] = NULL;
		}
		/* The placeholder words count in any case, inside a longer secret too. */
		kv[5] = "CHANGEME-CHANGEME-CHANGEME-CHANGEME";
		CHECK_INT(load(&c, kv, err), CONF_INVALID);
		CHECK(strncmp(err, "JWT_SECRET_KEY:", 15) == 0);
		kv[5] = good;
		/* Exactly 32 bytes, listed origins, an API-keys-only or RS256 stack: accepted. */
		kv[5] = "0123456789abcdef0123456789abcdef";
		CHECK_INT(load(&c, kv, err), CONF_OK);
		kv[5] = good;
		kv[6] = "CORS_ORIGINS";
		kv[7] = "https://a.example,https://b.example";
		CHECK_INT(load(&c, kv, err), CONF_OK);
		kv[6] = kv[7] = NULL;
		kv[3] = "apikey";
		kv[5] = "short";  /* not used without jwt */
		CHECK_INT(load(&c, kv, err), CONF_INVALID);   /* the keys file is required */
		CHECK(strncmp(err, "VALERIE_API_KEYS_FILE:", 22) == 0);
		kv[6] = "VALERIE_API_KEYS_FILE";
		kv[7] = "/etc/valerie/api-keys";
		CHECK_INT(load(&c, kv, err), CONF_OK);
		kv[6] = kv[7] = NULL;
		/* Development accepts what production refuses. */
		kv[1] = "development";
		kv[3] = "none";
		kv[6] = "CORS_ORIGINS";
		kv[7] = "*";
		CHECK_INT(load(&c, kv, err), CONF_OK);
	}
	/*
	 * VALERIE_ENV_FILE in production: the env file must exist and grant others
	 * nothing (0600 and 0640 pass; 0644, 0602 and a missing file are refused).
	 */
	{
		static const char good[] = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
		char path[] = "/tmp/valerie-test-conf-env-XXXXXX", missing[64];
		const char *kv[] = {"VALERIE_ENV", "production", "VALERIE_AUTH", "jwt",
			"JWT_SECRET_KEY", good, "VALERIE_ENV_FILE", path, NULL, NULL};
		int fd = mkstemp(path);

		CHECK(fd >= 0);
		if (fd >= 0)
			close(fd);
		CHECK_INT(chmod(path, 0600), 0);
		CHECK_INT(load(&c, kv, err), CONF_OK);
		CHECK_STR(c.env_file, path);
		CHECK_INT(chmod(path, 0640), 0);
		CHECK_INT(load(&c, kv, err), CONF_OK);
		CHECK_INT(chmod(path, 0644), 0);
		CHECK_INT(load(&c, kv, err), CONF_INVALID);
		CHECK(strncmp(err, "VALERIE_ENV_FILE:", 17) == 0);
		CHECK(strchr(err, '\n') == NULL);
		CHECK_CONTAINS(err, path);
		CHECK_CONTAINS(err, "0644");
		CHECK_CONTAINS(err, "production");
		CHECK_INT(chmod(path, 0602), 0);
		CHECK_INT(load(&c, kv, err), CONF_INVALID);
		CHECK(strncmp(err, "VALERIE_ENV_FILE:", 17) == 0);
		/* Development does not look at it. */
		kv[1] = "development";
		CHECK_INT(load(&c, kv, err), CONF_OK);
		kv[1] = "production";
		unlink(path);
		snprintf(missing, sizeof(missing), "%s", path);
		kv[7] = missing;
		CHECK_INT(load(&c, kv, err), CONF_INVALID);
		CHECK(strncmp(err, "VALERIE_ENV_FILE:", 17) == 0);
		CHECK_CONTAINS(err, "cannot stat");
		/* Unset or empty: not checked (a launcher that loads no file). */
		kv[7] = "";
		CHECK_INT(load(&c, kv, err), CONF_OK);
		CHECK(c.env_file == NULL);
	}
	/* What VALERIE_AUTH needs is required in any environment, named in one line. */
	{
		const char *jwt_only[] = {"VALERIE_AUTH", "jwt", NULL, NULL};
		const char *rs_only[] = {"VALERIE_AUTH", "jwt", "JWT_ALGORITHM", "RS256", NULL, NULL};
		const char *key_only[] = {"VALERIE_AUTH", "apikey", NULL, NULL};

		CHECK_INT(load(&c, jwt_only, err), CONF_INVALID);
		CHECK(strncmp(err, "JWT_SECRET_KEY: required", 24) == 0);
		CHECK_INT(load(&c, rs_only, err), CONF_INVALID);
		CHECK(strncmp(err, "JWT_PUBLIC_KEY_FILE: required", 29) == 0);
		CHECK_INT(load(&c, key_only, err), CONF_INVALID);
		CHECK(strncmp(err, "VALERIE_API_KEYS_FILE: required", 31) == 0);
	}
	return check_done("test_conf");
}
