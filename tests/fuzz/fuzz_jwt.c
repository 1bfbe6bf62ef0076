/* fuzz_jwt: libFuzzer target for credentials: JWTs (forged or signed with the right key) and API keys. */
#include "config.h"

#include "auth.h"
#include "conf.h"
#include "http.h"
#include "log.h"
#include "../unit/tmpdir.h"

#include <fcntl.h>
#include <json-c/json.h>
#include <stdint.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SECRET "fuzz-secret-0123456789abcdef0123456789abcdef"
#define GOOD_KEY "vk_0123456789abcdef"   /* in the keys file as `ci user` */
#define MAX_IN 16384

/*
 * Two authenticators over VALERIE_AUTH=jwt,apikey, HS256 and a keys file:
 * `plain` checks no issuer or audience, `strict` wants both. `keys_conf` points
 * at a keys file each input may rewrite (mode 5).
 */
static struct auth *plain, *strict;
static struct conf conf_plain, conf_strict, conf_keys;
static const char *dir;
static char keys_path[PATH_MAX + 16], input_keys_path[PATH_MAX + 16];

struct fake_env {
	int strict;
	const char *keys;
};

static const char *
env_get(const char *name, void *ctx)
{
	const struct fake_env *e = ctx;

	if (strcmp(name, "VALERIE_AUTH") == 0)
		return "jwt,apikey";
	if (strcmp(name, "JWT_SECRET_KEY") == 0)
		return SECRET;
	if (strcmp(name, "JWT_ALGORITHM") == 0)
		return "HS256";
	if (strcmp(name, "VALERIE_API_KEYS_FILE") == 0)
		return e->keys;
	if (strcmp(name, "VALERIE_DATA_DIR") == 0)
		return dir;
	if (e->strict && strcmp(name, "JWT_ISSUER") == 0)
		return "https://issuer.example";
	if (e->strict && strcmp(name, "JWT_AUDIENCE") == 0)
		return "valerie";
	return NULL;
}

static void
write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (fd < 0 || write(fd, data, len) != (ssize_t)len)
		abort();
	close(fd);
}

static void
setup(void)
{
	struct fake_env e_plain = {0, keys_path}, e_strict = {1, keys_path};
	struct fake_env e_keys = {0, input_keys_path};
	char err[300], sha[65], text[400];

	log_set_fd(open("/dev/null", O_WRONLY));
	if ((dir = tmpdir_make("valerie-fuzz-jwt")) == NULL)
		abort();
	snprintf(keys_path, sizeof(keys_path), "%s/keys", dir);
	snprintf(input_keys_path, sizeof(input_keys_path), "%s/input-keys", dir);
	auth_sha256_hex(GOOD_KEY, strlen(GOOD_KEY), sha);
	snprintf(text, sizeof(text), "# fuzz\nci user %s\nops admin acme %s\n", sha,
	    "00000000000000000000000000000000000000000000000000000000000000ff");
	write_file(keys_path, text, strlen(text));
	write_file(input_keys_path, "", 0);
	if (conf_load(&conf_plain, env_get, &e_plain, err, sizeof(err)) != CONF_OK ||
	    conf_load(&conf_strict, env_get, &e_strict, err, sizeof(err)) != CONF_OK ||
	    conf_load(&conf_keys, env_get, &e_keys, err, sizeof(err)) != CONF_OK) {
		fprintf(stderr, "fuzz_jwt: %s\n", err);
		abort();
	}
	plain = auth_open(&conf_plain, err, sizeof(err));
	strict = auth_open(&conf_strict, err, sizeof(err));
	if (plain == NULL || strict == NULL) {
		fprintf(stderr, "fuzz_jwt: %s\n", err);
		abort();
	}
}

static size_t
b64url(const unsigned char *in, size_t len, char *out)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t i, o = 0;
	unsigned int v;

	for (i = 0; i + 2 < len; i += 3) {
		v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
		out[o++] = tab[v & 63];
	}
	if (len - i == 1) {
		v = (unsigned)in[i] << 16;
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
	} else if (len - i == 2) {
		v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
	}
	out[o] = '\0';
	return o;
}

/* Checks one credential header against `a`; returns the result after checking invariants. */
static enum auth_result
run(struct auth *a, const char *name, const char *value, struct principal *p)
{
	struct http_header h = {name, value};
	struct http_request req;
	char why[200];
	enum auth_result r;
	size_t n;

	memset(&req, 0, sizeof(req));
	req.method = "GET";
	req.path = "/v1/models";
	req.query = "";
	req.remote_addr = "127.0.0.1";
	req.request_id = "fuzz";
	req.headers = &h;
	req.nheaders = 1;
	memset(why, 'x', sizeof(why));
	r = auth_check(a, &req, p, why, sizeof(why));
	if (r != AUTH_OK && r != AUTH_MISSING && r != AUTH_INVALID)
		abort();
	if (r != AUTH_OK && memchr(why, '\0', sizeof(why)) == NULL)
		abort();                 /* the reason is a C string */
	if (r == AUTH_OK) {
		n = strnlen(p->id, sizeof(p->id));
		if (n == 0 || n == sizeof(p->id) || strnlen(p->company, sizeof(p->company)) ==
		    sizeof(p->company))
			abort();
		if (strcmp(p->id, "anonymous") == 0)
			abort();         /* a credential never makes the anonymous caller */
	}
	return r;
}

/*
 * Input: a mode byte, then:
 *   0: the value of Authorization;  1: the value of X-API-Key;
 *   2, 3: "HEADER-JSON\nCLAIMS-JSON", base64url'd and signed with the right HS256
 *         key, sent as Bearer to `plain` (2) or `strict` (3): the claim checks;
 *   4: "HEADER-JSON\nCLAIMS-JSON\nSIGNATURE-PART": a forged token, never accepted;
 *   5: the text of an API keys file, opened as a new authenticator, then a key.
 */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char buf[4 * MAX_IN + 64], value[4 * MAX_IN + 64];
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	struct principal p;
	enum auth_result r;
	char *text, *nl, *nl2, err[300];
	size_t len, o;
	int mode;

	if (plain == NULL)
		setup();
	if (size < 1 || size > MAX_IN)
		return 0;
	mode = data[0] % 6;
	text = malloc(size);
	if (text == NULL)
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	len = strlen(text);      /* headers are C strings: stop at a NUL */

	switch (mode) {
	case 0:
		r = run(plain, "authorization", text, &p);
		/* Only a known API key passes: no one can sign a token without the key. */
		if (r == AUTH_OK && strncmp(p.id, "key:", 4) != 0)
			abort();
		break;
	case 1:
		r = run(plain, "x-api-key", text, &p);
		if (r == AUTH_OK && strcmp(p.id, "key:ci") != 0)
			abort();
		break;
	case 2:
	case 3:
	case 4:
		nl = strchr(text, '\n');
		if (nl == NULL)
			break;
		*nl = '\0';
		nl2 = strchr(nl + 1, '\n');
		if (nl2 != NULL && mode != 4)
			*nl2 = '\0';
		o = (size_t)snprintf(value, sizeof(value), "Bearer ");
		o += b64url((unsigned char *)text, strlen(text), value + o);
		value[o++] = '.';
		o += b64url((unsigned char *)nl + 1, strlen(nl + 1) - (nl2 && mode == 4 ?
		    strlen(nl2) : 0), value + o);
		if (mode == 4) {
			snprintf(value + o, sizeof(value) - o, ".%s", nl2 != NULL ? nl2 + 1 : "");
			r = run(plain, "authorization", value, &p);
			if (r == AUTH_OK)
				abort();   /* a token not signed with the key was accepted */
			break;
		}
		memcpy(buf, value + 7, o - 7);
		if (HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (unsigned char *)buf, o - 7, mac,
		    &maclen) == NULL)
			abort();
		value[o++] = '.';
		b64url(mac, maclen, value + o);
		run(mode == 2 ? plain : strict, "authorization", value, &p);
		break;
	case 5: {
		struct auth *a;

		write_file(input_keys_path, text, len);
		a = auth_open(&conf_keys, err, sizeof(err));
		if (a == NULL) {
			if (memchr(err, '\0', sizeof(err)) == NULL)
				abort();
			break;
		}
		r = run(a, "x-api-key", GOOD_KEY, &p);
		if (r == AUTH_OK && strncmp(p.id, "key:", 4) != 0)
			abort();
		auth_close(a);
		break;
	}
	}
	free(text);
	return 0;
}
