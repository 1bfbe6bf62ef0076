/* auth: who calls. JWT (libjwt, algorithm pinned by configuration) and API keys (stored hashed). */
#ifndef VALERIE_AUTH_H
#define VALERIE_AUTH_H

#include <stddef.h>

#include "store.h"

struct conf;
struct http_request;

#define AUTH_LEEWAY_S 30            /* clock skew allowed on exp, nbf and iat */
#define AUTH_KEY_PREFIX "key:"      /* API key principals: "key:<name>" */
#define AUTH_APIKEY_NAME_MAX 64

/* Who a request is from, once authenticated. Plain data. */
struct principal {
	char id[STORE_ID_MAX + 1];       /* JWT `sub`, "key:<name>", or "anonymous" */
	int admin;                       /* role admin (else user) */
	char company[STORE_ID_MAX + 1];  /* the company the caller is bound to, "" if none */
};

enum auth_result {
	AUTH_OK = 0,
	AUTH_MISSING,    /* no credentials: 401 */
	AUTH_INVALID     /* credentials that do not hold: 401 */
};

struct auth;

/*
 * Loads what VALERIE_AUTH needs: the JWT secret or public key (JWT_SECRET_KEY
 * for HS*, JWT_PUBLIC_KEY_FILE for RS256/ES256) and the API keys file. A
 * public key file that holds no public key of the algorithm's kind (RSA,
 * EC P-256) is refused. With VALERIE_ENV=production, a keys file (or
 * private key file) readable by others is refused. NULL with `err` naming
 * the variable when it cannot.
 */
struct auth *auth_open(const struct conf *conf, char *err, size_t errlen);
void auth_close(struct auth *a);

/* Whether credentials are required at all (VALERIE_AUTH is not none). */
int auth_required(const struct auth *a);

/*
 * Authenticates `req`: `Authorization: Bearer <JWT or API key>` or
 * `X-API-Key`. On AUTH_OK fills `p`; otherwise `why` says what was wrong in
 * words safe to send back (never the credential itself). The API keys file is
 * read again when it changes (checked at most once a second), so a key
 * removed from it stops working without a restart.
 */
enum auth_result auth_check(struct auth *a, const struct http_request *req,
    struct principal *p, char *why, size_t whylen);

/*
 * `valerie token`: a JWT for `sub` with `role` (user or admin), optional
 * `company`, expiring in `ttl_min` minutes (0: JWT_EXPIRATION_MINUTES), signed
 * with the configured algorithm and key (JWT_PRIVATE_KEY_FILE for RS256 and
 * ES256), with JWT_ISSUER and JWT_AUDIENCE when set. malloc'd, or NULL with
 * `err`.
 */
char *auth_token_mint(const struct conf *conf, const char *sub, const char *role,
    const char *company, long long ttl_min, char *err, size_t errlen);

/*
 * `valerie apikey new`: a fresh random key (shown once) into `key`, and the
 * line of the keys file that accepts it (name, role, company or nothing,
 * SHA-256 of the key) into `line`. Returns 0, or -1 with `err`.
 */
int auth_apikey_new(const char *name, const char *role, const char *company, char *key,
    size_t keylen, char *line, size_t linelen, char *err, size_t errlen);

/* Lower-case hex SHA-256 of `len` bytes into out (65 bytes). */
void auth_sha256_hex(const void *data, size_t len, char *out);

#endif
