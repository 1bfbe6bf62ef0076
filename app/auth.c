/* auth: who calls. JWT (libjwt, algorithm pinned by configuration) and API keys (stored hashed). */
#include "config.h"

#include "auth.h"
#include "conf.h"
#include "hex.h"
#include "http.h"
#include "log.h"
#include "vtime.h"

#include <errno.h>
#include <json-c/json.h>
#include <jwt.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#define AUTH_KEYS_MAX 10000          /* lines of the API keys file */
#define AUTH_KEY_FILE_MAX (1 << 20)  /* bytes of a key file (PEM or keys) */
#define AUTH_TOKEN_MAX 8192          /* a bearer credential's length */
#define AUTH_HEADER_JSON_MAX 1024    /* a JWT header, decoded */
#define AUTH_RELOAD_MS 1000          /* how often the keys file is looked at */
#define AUTH_APIKEY_BYTES 24         /* random bytes of a new API key */

/* One line of the API keys file. */
struct apikey {
	char name[AUTH_APIKEY_NAME_MAX + 1];
	int admin;
	char company[STORE_ID_MAX + 1];
	unsigned char sha[32];
};

struct auth {
	int jwt, apikey;                 /* which kinds VALERIE_AUTH accepts */
	jwt_alg_t alg;
	const char *alg_name;
	unsigned char *key;              /* HS secret or PEM public key */
	size_t keylen;
	const char *issuer, *audience;   /* borrowed from the configuration */
	const char *keys_path;
	int production;
	pthread_rwlock_t lock;           /* guards keys and the file's identity */
	struct apikey *keys;
	size_t nkeys;
	struct timespec mtime;
	off_t size;
	ino_t ino;
	long long checked_ms;
};

void
auth_sha256_hex(const void *data, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[32];
	unsigned int n = 0;
	size_t i;

	EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
	for (i = 0; i < 32; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = '\0';
	OPENSSL_cleanse(md, sizeof(md));
}

/*
 * Reads a whole small file into a malloc'd, NUL-terminated buffer. With
 * `private` and production, a file that others may read is refused.
 */
static unsigned char *
read_file(const char *path, const char *var, int refuse_readable, size_t *len, char *err,
    size_t errlen)
{
	struct stat sb;
	unsigned char *data;
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL) {
		snprintf(err, errlen, "%s: cannot read %s: %s", var, path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > AUTH_KEY_FILE_MAX) {
		snprintf(err, errlen, "%s: %s is not a regular file of at most %d bytes", var, path,
		    AUTH_KEY_FILE_MAX);
		fclose(f);
		return NULL;
	}
	if (refuse_readable && (sb.st_mode & (S_IROTH | S_IWOTH)) != 0) {
		snprintf(err, errlen, "%s: %s is readable by others (chmod 600 or 640 it): refused "
		    "with VALERIE_ENV=production", var, path);
		fclose(f);
		return NULL;
	}
	data = malloc((size_t)sb.st_size + 1);
	if (data == NULL) {
		snprintf(err, errlen, "%s: out of memory", var);
		fclose(f);
		return NULL;
	}
	n = fread(data, 1, (size_t)sb.st_size, f);
	fclose(f);
	data[n] = '\0';
	*len = n;
	return data;
}

/* --- the API keys file ---------------------------------------------------- */

static int
name_ok(const char *s, size_t max)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '.' || s[i] == '-' ||
		    s[i] == ':'))
			return 0;
	return i > 0 && i <= max;
}

/*
 * Parses the keys file: one key a line, `name role [company] sha256`, blank
 * lines and # comments ignored. Returns the keys (malloc'd) or NULL with `err`
 * naming the line.
 */
static struct apikey *
parse_keys(char *text, size_t *nkeys, char *err, size_t errlen)
{
	struct apikey *keys = NULL, *k;
	char *line, *next, *f[5], *tok, *tsave;
	size_t n = 0, nf, i, lineno = 0;
	int hi, lo;

	*nkeys = 0;
	keys = calloc(1, sizeof(*keys));   /* never NULL for an empty file */
	if (keys == NULL)
		goto oom;
	/* NOTE: not strtok_r on "\n": it skips blank lines, and errors name the line. */
	for (line = text; line != NULL; line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		lineno++;
		for (nf = 0, tok = strtok_r(line, " \t\r", &tsave); tok != NULL && nf < 5;
		    tok = strtok_r(NULL, " \t\r", &tsave))
			f[nf++] = tok;
		if (nf == 0 || f[0][0] == '#')
			continue;
		if (nf < 3 || nf > 4 || !name_ok(f[0], AUTH_APIKEY_NAME_MAX) ||
		    (strcmp(f[1], "user") != 0 && strcmp(f[1], "admin") != 0) ||
		    (nf == 4 && !name_ok(f[2], STORE_ID_MAX)) || strlen(f[nf - 1]) != 64) {
			snprintf(err, errlen, "line %zu: want `name role [company] sha256-hex`", lineno);
			free(keys);
			return NULL;
		}
		if (n >= AUTH_KEYS_MAX) {
			snprintf(err, errlen, "more than %d keys", AUTH_KEYS_MAX);
			free(keys);
			return NULL;
		}
		k = realloc(keys, (n + 1) * sizeof(*keys));
		if (k == NULL)
			goto oom;
		keys = k;
		k = &keys[n];
		memset(k, 0, sizeof(*k));
		snprintf(k->name, sizeof(k->name), "%s", f[0]);
		k->admin = strcmp(f[1], "admin") == 0;
		if (nf == 4)
			snprintf(k->company, sizeof(k->company), "%s", f[2]);
		for (i = 0; i < 32; i++) {
			hi = hex_digit(f[nf - 1][2 * i]);
			lo = hex_digit(f[nf - 1][2 * i + 1]);
			if (hi < 0 || lo < 0) {
				snprintf(err, errlen, "line %zu: the SHA-256 is not hex", lineno);
				free(keys);
				return NULL;
			}
			k->sha[i] = (unsigned char)(hi << 4 | lo);
		}
		n++;
	}
	*nkeys = n;
	return keys;
oom:
	free(keys);
	snprintf(err, errlen, "out of memory");
	return NULL;
}

/* (Re)reads the keys file into `a` (write lock held by the caller, or none yet). */
static int
load_keys(struct auth *a, const struct stat *sb, char *err, size_t errlen)
{
	char why[160];
	unsigned char *text;
	struct apikey *keys;
	size_t len, n;

	text = read_file(a->keys_path, "VALERIE_API_KEYS_FILE", a->production, &len, err, errlen);
	if (text == NULL)
		return -1;
	keys = parse_keys((char *)text, &n, why, sizeof(why));
	OPENSSL_cleanse(text, len);
	free(text);
	if (keys == NULL) {
		snprintf(err, errlen, "VALERIE_API_KEYS_FILE: %s: %s", a->keys_path, why);
		return -1;
	}
	free(a->keys);
	a->keys = keys;
	a->nkeys = n;
	a->mtime = sb->st_mtim;
	a->size = sb->st_size;
	a->ino = sb->st_ino;
	return 0;
}

/* Reads the keys file again when it changed; a broken new file keeps the old keys. */
static void
maybe_reload(struct auth *a)
{
	struct stat sb;
	char err[300];
	long long now = vtime_mono_ms();
	int changed;

	pthread_rwlock_rdlock(&a->lock);
	changed = now - a->checked_ms >= AUTH_RELOAD_MS;
	pthread_rwlock_unlock(&a->lock);
	if (!changed)
		return;
	pthread_rwlock_wrlock(&a->lock);
	if (now - a->checked_ms >= AUTH_RELOAD_MS) {
		a->checked_ms = now;
		if (stat(a->keys_path, &sb) != 0) {
			/* NOTE: a keys file that is gone accepts no key at all. */
			if (a->ino != 0)
				log_msg(LOG_LVL_ERROR, "API keys file %s is gone (%s): no API key is "
				    "accepted until it is back", a->keys_path, strerror(errno));
			free(a->keys);
			a->keys = NULL;
			a->nkeys = 0;
			a->ino = 0;
		} else if (sb.st_ino != a->ino || sb.st_size != a->size ||
		    sb.st_mtim.tv_sec != a->mtime.tv_sec || sb.st_mtim.tv_nsec != a->mtime.tv_nsec) {
			if (load_keys(a, &sb, err, sizeof(err)) != 0)
				log_msg(LOG_LVL_ERROR, "API keys file not reloaded; keeping the keys read "
				    "before: %s", err);
			else
				log_msg(LOG_LVL_INFO, "API keys file reloaded");
		}
	}
	pthread_rwlock_unlock(&a->lock);
}

/* --- opening ---------------------------------------------------------------- */

static jwt_alg_t
alg_of(const char *name)
{
	if (strcmp(name, "HS384") == 0)
		return JWT_ALG_HS384;
	if (strcmp(name, "HS512") == 0)
		return JWT_ALG_HS512;
	if (strcmp(name, "RS256") == 0)
		return JWT_ALG_RS256;
	if (strcmp(name, "ES256") == 0)
		return JWT_ALG_ES256;
	return JWT_ALG_HS256;
}

static int
is_hmac(jwt_alg_t alg)
{
	return alg == JWT_ALG_HS256 || alg == JWT_ALG_HS384 || alg == JWT_ALG_HS512;
}

/*
 * Whether the PEM read from JWT_PUBLIC_KEY_FILE is a public key of the kind
 * `alg` verifies with (RSA for RS256, EC P-256 for ES256). NOTE: libjwt reads
 * the key only when a token comes; without this check a wrong file (the
 * private key, a certificate, the other kind of key) starts a stack that
 * refuses every token as a bad signature.
 */
static int
public_key_ok(const unsigned char *pem, size_t len, jwt_alg_t alg, const char *path, char *err,
    size_t errlen)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *pk = bio != NULL ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
	int ok = 0;

	if (pk == NULL)
		snprintf(err, errlen, "JWT_PUBLIC_KEY_FILE: %s holds no PEM public key "
		    "(-----BEGIN PUBLIC KEY-----)", path);
	else if (alg == JWT_ALG_RS256 && EVP_PKEY_base_id(pk) != EVP_PKEY_RSA)
		snprintf(err, errlen, "JWT_PUBLIC_KEY_FILE: %s is not an RSA key (JWT_ALGORITHM=RS256)",
		    path);
	else if (alg == JWT_ALG_ES256 && (EVP_PKEY_base_id(pk) != EVP_PKEY_EC ||
	    EVP_PKEY_bits(pk) != 256))
		snprintf(err, errlen, "JWT_PUBLIC_KEY_FILE: %s is not an EC P-256 key "
		    "(JWT_ALGORITHM=ES256)", path);
	else
		ok = 1;
	EVP_PKEY_free(pk);
	BIO_free(bio);
	return ok;
}

struct auth *
auth_open(const struct conf *conf, char *err, size_t errlen)
{
	struct auth *a = calloc(1, sizeof(*a));
	struct stat sb;

	if (a == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_rwlock_init(&a->lock, NULL);
	a->jwt = strstr(conf->auth, "jwt") != NULL;
	a->apikey = strstr(conf->auth, "apikey") != NULL;
	a->production = strcmp(conf->env, "production") == 0;
	a->alg_name = conf->jwt_algorithm;
	a->alg = alg_of(conf->jwt_algorithm);
	a->issuer = conf->jwt_issuer;
	a->audience = conf->jwt_audience;
	if (a->jwt && is_hmac(a->alg)) {
		if (conf->jwt_secret_key == NULL) {
			snprintf(err, errlen, "JWT_SECRET_KEY: required with VALERIE_AUTH=%s and "
			    "JWT_ALGORITHM=%s", conf->auth, conf->jwt_algorithm);
			goto fail;
		}
		a->keylen = strlen(conf->jwt_secret_key);
		a->key = malloc(a->keylen + 1);
		if (a->key == NULL)
			goto oom;
		memcpy(a->key, conf->jwt_secret_key, a->keylen + 1);
	} else if (a->jwt) {
		if (conf->jwt_public_key_file == NULL) {
			snprintf(err, errlen, "JWT_PUBLIC_KEY_FILE: required with JWT_ALGORITHM=%s",
			    conf->jwt_algorithm);
			goto fail;
		}
		a->key = read_file(conf->jwt_public_key_file, "JWT_PUBLIC_KEY_FILE", 0, &a->keylen,
		    err, errlen);
		if (a->key == NULL || !public_key_ok(a->key, a->keylen, a->alg,
		    conf->jwt_public_key_file, err, errlen))
			goto fail;
	}
	if (a->apikey) {
		if (conf->api_keys_file == NULL) {
			snprintf(err, errlen, "VALERIE_API_KEYS_FILE: required with VALERIE_AUTH=%s",
			    conf->auth);
			goto fail;
		}
		a->keys_path = conf->api_keys_file;
		if (stat(a->keys_path, &sb) != 0) {
			snprintf(err, errlen, "VALERIE_API_KEYS_FILE: cannot read %s: %s", a->keys_path,
			    strerror(errno));
			goto fail;
		}
		if (load_keys(a, &sb, err, errlen) != 0)
			goto fail;
		a->checked_ms = vtime_mono_ms();
	}
	return a;
oom:
	snprintf(err, errlen, "out of memory");
fail:
	auth_close(a);
	return NULL;
}

void
auth_close(struct auth *a)
{
	if (a == NULL)
		return;
	if (a->key != NULL) {
		OPENSSL_cleanse(a->key, a->keylen);
		free(a->key);
	}
	if (a->keys != NULL) {
		OPENSSL_cleanse(a->keys, a->nkeys * sizeof(*a->keys));
		free(a->keys);
	}
	pthread_rwlock_destroy(&a->lock);
	free(a);
}

int
auth_required(const struct auth *a)
{
	return a != NULL && (a->jwt || a->apikey);
}

/* --- checking ----------------------------------------------------------------- */

/* base64url (no padding) of `in` into out; -1 if it is not. */
static int
b64url_decode(const char *in, size_t len, unsigned char *out, size_t outmax, size_t *outlen)
{
	unsigned int acc = 0;
	int bits = 0, v;
	size_t i, o = 0;
	char c;

	for (i = 0; i < len; i++) {
		c = in[i];
		if (c >= 'A' && c <= 'Z')
			v = c - 'A';
		else if (c >= 'a' && c <= 'z')
			v = c - 'a' + 26;
		else if (c >= '0' && c <= '9')
			v = c - '0' + 52;
		else if (c == '-')
			v = 62;
		else if (c == '_')
			v = 63;
		else
			return -1;
		acc = (acc << 6) | (unsigned int)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= outmax)
				return -1;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	*outlen = o;
	return 0;
}

/*
 * The token's own header, read before anything else is trusted: it must be a
 * JSON object whose `alg` is exactly the configured algorithm (so `none`,
 * HS256 signed with a public key, or HS512 when HS256 is configured, are
 * refused here, whatever libjwt would accept).
 */
static int
header_alg_ok(const struct auth *a, const char *token, char *why, size_t whylen)
{
	const char *dot = strchr(token, '.');
	unsigned char raw[AUTH_HEADER_JSON_MAX + 1];
	struct json_object *h = NULL, *alg, *typ;
	struct json_tokener *tok;
	size_t n;
	int ok = 0;

	if (dot == NULL || strchr(dot + 1, '.') == NULL || strchr(strchr(dot + 1, '.') + 1, '.')) {
		snprintf(why, whylen, "malformed token: a JWT has three parts");
		return 0;
	}
	if (b64url_decode(token, (size_t)(dot - token), raw, AUTH_HEADER_JSON_MAX, &n) != 0) {
		snprintf(why, whylen, "malformed token: the header is not base64url");
		return 0;
	}
	raw[n] = '\0';
	tok = json_tokener_new_ex(4);
	if (tok != NULL) {
		json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
		h = json_tokener_parse_ex(tok, (const char *)raw, (int)n);
		if (json_tokener_get_error(tok) != json_tokener_success || json_tokener_get_parse_end(tok) != n) {
			json_object_put(h);
			h = NULL;
		}
		json_tokener_free(tok);
	}
	if (h == NULL || !json_object_is_type(h, json_type_object)) {
		snprintf(why, whylen, "malformed token: the header is not a JSON object");
	} else if (!json_object_object_get_ex(h, "alg", &alg) ||
	    !json_object_is_type(alg, json_type_string) ||
	    strcmp(json_object_get_string(alg), a->alg_name) != 0) {
		snprintf(why, whylen, "the token's algorithm is not the accepted one (%s)", a->alg_name);
	} else if (json_object_object_get_ex(h, "typ", &typ) &&
	    (!json_object_is_type(typ, json_type_string) ||
	    strcasecmp(json_object_get_string(typ), "JWT") != 0)) {
		/* NOTE: libjwt 1.10 refuses any other typ, RFC 9068's at+jwt too. */
		snprintf(why, whylen, "malformed token: typ is not JWT");
	} else {
		ok = 1;
	}
	json_object_put(h);
	return ok;
}

/*
 * A NumericDate claim (RFC 7519 2: seconds since the epoch, a fraction allowed) in whole
 * seconds, rounded to the safe side: down for exp and iat, up for nbf (`up`). 1 when
 * found, 0 when absent, -1 when not a number.
 */
static int
date_claim(struct json_object *claims, const char *name, int up, long long *out)
{
	struct json_object *v;
	double d;
	long long n;

	if (!json_object_object_get_ex(claims, name, &v) || v == NULL)
		return 0;
	if (json_object_is_type(v, json_type_int)) {
		*out = json_object_get_int64(v);
		return 1;
	}
	if (!json_object_is_type(v, json_type_double))
		return -1;
	d = json_object_get_double(v);
	if (d != d)
		return -1;
	if (d >= 9.2e18) {
		*out = LLONG_MAX;
	} else if (d <= -9.2e18) {
		*out = LLONG_MIN;
	} else {
		n = (long long)d; /* toward zero */
		if (up && (double)n < d)
			n++;
		else if (!up && (double)n > d)
			n--;
		*out = n;
	}
	return 1;
}

/* A short id claim (string, or integer for company ids) into out; -1 if malformed. */
static int
id_claim(struct json_object *claims, const char *name, int allow_int, char *out, size_t outlen)
{
	struct json_object *v;
	const char *s;
	size_t i, n;

	out[0] = '\0';
	if (!json_object_object_get_ex(claims, name, &v) || v == NULL)
		return 0;
	if (allow_int && json_object_is_type(v, json_type_int)) {
		snprintf(out, outlen, "%lld", (long long)json_object_get_int64(v));
		return 1;
	}
	if (!json_object_is_type(v, json_type_string))
		return -1;
	s = json_object_get_string(v);
	n = (size_t)json_object_get_string_len(v);
	if (n == 0 || n >= outlen || strlen(s) != n)
		return -1;
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return -1;
	memcpy(out, s, n + 1);
	return 1;
}

static int
aud_ok(struct json_object *claims, const char *want)
{
	struct json_object *v, *e;
	size_t i;

	if (!json_object_object_get_ex(claims, "aud", &v) || v == NULL)
		return 0;
	if (json_object_is_type(v, json_type_string))
		return strcmp(json_object_get_string(v), want) == 0;
	if (!json_object_is_type(v, json_type_array))
		return 0;
	for (i = 0; i < json_object_array_length(v); i++) {
		e = json_object_array_get_idx(v, i);
		if (json_object_is_type(e, json_type_string) &&
		    strcmp(json_object_get_string(e), want) == 0)
			return 1;
	}
	return 0;
}

static enum auth_result
check_jwt(struct auth *a, const char *token, struct principal *p, char *why, size_t whylen)
{
	struct json_object *claims = NULL, *v;
	jwt_t *jwt = NULL;
	char *grants = NULL, role[16];
	long long exp, nbf, iat, now = (long long)time(NULL);
	enum auth_result r = AUTH_INVALID;
	int has;

	if (!header_alg_ok(a, token, why, whylen))
		return AUTH_INVALID;
	if (jwt_decode(&jwt, token, a->key, (int)a->keylen) != 0 || jwt == NULL) {
		snprintf(why, whylen, "the token's signature does not verify");
		goto out;
	}
	if (jwt_get_alg(jwt) != a->alg) {
		snprintf(why, whylen, "the token's algorithm is not the accepted one (%s)", a->alg_name);
		goto out;
	}
	grants = jwt_get_grants_json(jwt, NULL);
	claims = grants != NULL ? json_tokener_parse(grants) : NULL;
	if (claims == NULL || !json_object_is_type(claims, json_type_object)) {
		snprintf(why, whylen, "malformed token: the claims are not a JSON object");
		goto out;
	}
	has = date_claim(claims, "exp", 0, &exp);
	if (has <= 0) {
		snprintf(why, whylen, has == 0 ? "the token has no exp" : "the token's exp is not a "
		    "number of seconds");
		goto out;
	}
	/* NOTE: on the side of `now`: exp + leeway would overflow for a far-off exp. */
	if (now - AUTH_LEEWAY_S > exp) {
		snprintf(why, whylen, "the token has expired");
		goto out;
	}
	has = date_claim(claims, "nbf", 1, &nbf);
	if (has < 0 || (has > 0 && now + AUTH_LEEWAY_S < nbf)) {
		snprintf(why, whylen, "the token is not valid yet");
		goto out;
	}
	has = date_claim(claims, "iat", 0, &iat);
	if (has < 0 || (has > 0 && iat > now + AUTH_LEEWAY_S)) {
		snprintf(why, whylen, "the token was issued in the future");
		goto out;
	}
	if (a->issuer != NULL && (!json_object_object_get_ex(claims, "iss", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    strcmp(json_object_get_string(v), a->issuer) != 0)) {
		snprintf(why, whylen, "the token's issuer is not the accepted one");
		goto out;
	}
	if (a->audience != NULL && !aud_ok(claims, a->audience)) {
		snprintf(why, whylen, "the token is not for this audience");
		goto out;
	}
	if (id_claim(claims, "sub", 0, p->id, sizeof(p->id)) != 1 ||
	    strncmp(p->id, AUTH_KEY_PREFIX, strlen(AUTH_KEY_PREFIX)) == 0 ||
	    strcmp(p->id, "anonymous") == 0) {
		snprintf(why, whylen, "the token needs a sub (1 to %d characters; not anonymous, not "
		    "key:...)", STORE_ID_MAX);
		goto out;
	}
	has = id_claim(claims, "role", 0, role, sizeof(role));
	if (has < 0 || (has > 0 && strcmp(role, "user") != 0 && strcmp(role, "admin") != 0)) {
		snprintf(why, whylen, "the token's role must be user or admin");
		goto out;
	}
	p->admin = has > 0 && strcmp(role, "admin") == 0;
	if (id_claim(claims, "company_id", 1, p->company, sizeof(p->company)) < 0) {
		snprintf(why, whylen, "the token's company_id must be a short string or an integer");
		goto out;
	}
	r = AUTH_OK;
out:
	json_object_put(claims);
	free(grants);
	jwt_free(jwt);
	return r;
}

static enum auth_result
check_apikey(struct auth *a, const char *key, struct principal *p, char *why, size_t whylen)
{
	unsigned char sha[32];
	unsigned int n = 0;
	size_t i;
	int found = -1;

	maybe_reload(a);
	EVP_Digest(key, strlen(key), sha, &n, EVP_sha256(), NULL);
	pthread_rwlock_rdlock(&a->lock);
	/* NOTE: every key is compared, in constant time each, whichever matches. */
	for (i = 0; i < a->nkeys; i++)
		if (CRYPTO_memcmp(sha, a->keys[i].sha, sizeof(sha)) == 0 && found < 0)
			found = (int)i;
	if (found >= 0) {
		snprintf(p->id, sizeof(p->id), "%s%s", AUTH_KEY_PREFIX, a->keys[found].name);
		p->admin = a->keys[found].admin;
		snprintf(p->company, sizeof(p->company), "%s", a->keys[found].company);
	}
	pthread_rwlock_unlock(&a->lock);
	OPENSSL_cleanse(sha, sizeof(sha));
	if (found < 0) {
		snprintf(why, whylen, "unknown API key");
		return AUTH_INVALID;
	}
	return AUTH_OK;
}

/* Whether `s` looks like a JWT (three base64url parts), not an API key. */
static int
looks_like_jwt(const char *s)
{
	const char *d1 = strchr(s, '.');

	return d1 != NULL && strchr(d1 + 1, '.') != NULL;
}

enum auth_result
auth_check(struct auth *a, const struct http_request *req, struct principal *p, char *why,
    size_t whylen)
{
	const char *h = http_request_header(req, "authorization");
	const char *k = http_request_header(req, "x-api-key");
	const char *cred = NULL;
	int bearer = 0;

	memset(p, 0, sizeof(*p));
	/*
	 * An Authorization header of another scheme (Basic credentials of a proxy in
	 * front, say) is not ours: an X-API-Key beside it is the credential.
	 */
	if (h != NULL && strncasecmp(h, "Bearer ", 7) == 0) {
		for (cred = h + 7; *cred == ' '; cred++)
			;
		bearer = 1;
	} else if (k != NULL && a->apikey) {
		cred = k;
	} else if (h != NULL) {
		snprintf(why, whylen, "the Authorization header must be `Bearer <credential>`");
		return AUTH_INVALID;
	} else if (k != NULL) {
		cred = k;
	}
	if (cred == NULL || *cred == '\0') {
		snprintf(why, whylen, a->jwt && a->apikey ? "send a token or an API key" :
		    a->jwt ? "send a token: Authorization: Bearer <JWT>" :
		    "send an API key: X-API-Key or Authorization: Bearer");
		return AUTH_MISSING;
	}
	if (strlen(cred) > AUTH_TOKEN_MAX) {
		snprintf(why, whylen, "the credential is too long");
		return AUTH_INVALID;
	}
	if (bearer && a->jwt && (!a->apikey || looks_like_jwt(cred)))
		return check_jwt(a, cred, p, why, whylen);
	if (a->apikey)
		return check_apikey(a, cred, p, why, whylen);
	snprintf(why, whylen, "API keys are not accepted here: send a token");
	return AUTH_INVALID;
}

/* --- minting -------------------------------------------------------------------- */

char *
auth_token_mint(const struct conf *conf, const char *sub, const char *role,
    const char *company, long long ttl_min, char *err, size_t errlen)
{
	jwt_alg_t alg = alg_of(conf->jwt_algorithm);
	unsigned char *key = NULL;
	size_t keylen = 0;
	jwt_t *jwt = NULL;
	char *out = NULL;
	long long now = (long long)time(NULL);

	if (!name_ok(sub, STORE_ID_MAX) || strncmp(sub, AUTH_KEY_PREFIX, 4) == 0 ||
	    strcmp(sub, "anonymous") == 0) {
		snprintf(err, errlen, "--sub: 1 to %d characters of A-Z a-z 0-9 _ . : - (not "
		    "anonymous, not key:...)", STORE_ID_MAX);
		return NULL;
	}
	if (strcmp(role, "user") != 0 && strcmp(role, "admin") != 0) {
		snprintf(err, errlen, "--role: user or admin");
		return NULL;
	}
	if (company != NULL && !name_ok(company, STORE_ID_MAX)) {
		snprintf(err, errlen, "--company: 1 to %d characters of A-Z a-z 0-9 _ . : -",
		    STORE_ID_MAX);
		return NULL;
	}
	if (is_hmac(alg)) {
		if (conf->jwt_secret_key == NULL) {
			snprintf(err, errlen, "JWT_SECRET_KEY: required to sign with %s",
			    conf->jwt_algorithm);
			return NULL;
		}
		keylen = strlen(conf->jwt_secret_key);
		key = (unsigned char *)strdup(conf->jwt_secret_key);
	} else {
		if (conf->jwt_private_key_file == NULL) {
			snprintf(err, errlen, "JWT_PRIVATE_KEY_FILE: required to sign with %s",
			    conf->jwt_algorithm);
			return NULL;
		}
		key = read_file(conf->jwt_private_key_file, "JWT_PRIVATE_KEY_FILE",
		    strcmp(conf->env, "production") == 0, &keylen, err, errlen);
		if (key == NULL)
			return NULL;
	}
	if (key == NULL || jwt_new(&jwt) != 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (ttl_min <= 0)
		ttl_min = conf->jwt_expiration_minutes;
	if (jwt_add_grant(jwt, "sub", sub) != 0 || jwt_add_grant(jwt, "role", role) != 0 ||
	    jwt_add_grant_int(jwt, "iat", (long)now) != 0 ||
	    jwt_add_grant_int(jwt, "exp", (long)(now + ttl_min * 60)) != 0 ||
	    (company != NULL && jwt_add_grant(jwt, "company_id", company) != 0) ||
	    (conf->jwt_issuer != NULL && jwt_add_grant(jwt, "iss", conf->jwt_issuer) != 0) ||
	    (conf->jwt_audience != NULL && jwt_add_grant(jwt, "aud", conf->jwt_audience) != 0) ||
	    jwt_set_alg(jwt, alg, key, (int)keylen) != 0) {
		snprintf(err, errlen, "cannot build the token (is the key right for %s?)",
		    conf->jwt_algorithm);
		goto out;
	}
	out = jwt_encode_str(jwt);
	if (out == NULL)
		snprintf(err, errlen, "cannot sign the token (is the key right for %s?)",
		    conf->jwt_algorithm);
out:
	jwt_free(jwt);
	if (key != NULL) {
		OPENSSL_cleanse(key, keylen);
		free(key);
	}
	return out;
}

int
auth_apikey_new(const char *name, const char *role, const char *company, char *key,
    size_t keylen, char *line, size_t linelen, char *err, size_t errlen)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char rnd[AUTH_APIKEY_BYTES];
	char sha[65];
	size_t i;

	if (!name_ok(name, AUTH_APIKEY_NAME_MAX)) {
		snprintf(err, errlen, "--name: 1 to %d characters of A-Z a-z 0-9 _ . : -",
		    AUTH_APIKEY_NAME_MAX);
		return -1;
	}
	if (strcmp(role, "user") != 0 && strcmp(role, "admin") != 0) {
		snprintf(err, errlen, "--role: user or admin");
		return -1;
	}
	if (company != NULL && !name_ok(company, STORE_ID_MAX)) {
		snprintf(err, errlen, "--company: 1 to %d characters of A-Z a-z 0-9 _ . : -",
		    STORE_ID_MAX);
		return -1;
	}
	if (keylen < 4 + 2 * sizeof(rnd)) {
		snprintf(err, errlen, "internal: key buffer too small");
		return -1;
	}
	arc4random_buf(rnd, sizeof(rnd));
	memcpy(key, "vk_", 3);
	for (i = 0; i < sizeof(rnd); i++) {
		key[3 + 2 * i] = hex[rnd[i] >> 4];
		key[3 + 2 * i + 1] = hex[rnd[i] & 15];
	}
	key[3 + 2 * sizeof(rnd)] = '\0';
	OPENSSL_cleanse(rnd, sizeof(rnd));
	auth_sha256_hex(key, strlen(key), sha);
	snprintf(line, linelen, "%s %s%s%s %s", name, role, company != NULL ? " " : "",
	    company != NULL ? company : "", sha);
	return 0;
}
