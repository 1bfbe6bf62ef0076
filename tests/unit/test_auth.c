/*
 * test_auth: opening the authenticator. A JWT_PUBLIC_KEY_FILE that holds no
 * public key of JWT_ALGORITHM's kind (the private key, garbage, an RSA key
 * for ES256, an EC key for RS256, another curve) is refused at start, naming
 * the variable, rather than starting a stack that refuses every token.
 */
#include "config.h"

#include "check.h"
#include "fakeenv.h"
#include "tmpdir.h"

#include "auth.h"
#include "conf.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Writes `pk` into dir/name as PEM, public or private; the path (static). */
static const char *
write_pem(const char *dir, const char *name, EVP_PKEY *pk, int private)
{
	static char paths[8][4096];
	static int n;
	char *path = paths[n++ % 8];
	FILE *f;

	snprintf(path, sizeof(paths[0]), "%s/%s", dir, name);
	f = fopen(path, "w");
	if (f == NULL)
		return NULL;
	if (pk == NULL)
		fputs("not a key at all\n", f);
	else if (private)
		PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
	else
		PEM_write_PUBKEY(f, pk);
	fclose(f);
	return path;
}

/* auth_open with VALERIE_AUTH=jwt, `alg` and `keyfile`: 1 if it opened; err filled. */
static int
opens(const char *dir, const char *alg, const char *keyfile, char *err, size_t errlen)
{
	const char *env[] = {"VALERIE_DATA_DIR", dir, "VALERIE_AUTH", "jwt", "JWT_ALGORITHM", alg,
		"JWT_PUBLIC_KEY_FILE", keyfile, NULL, NULL};
	struct conf conf;
	struct auth *a;

	err[0] = '\0';
	if (conf_load(&conf, fake_get, env, err, errlen) != CONF_OK)
		return 0;
	a = auth_open(&conf, err, errlen);
	auth_close(a);
	return a != NULL;
}

int
main(void)
{
	const char *dir, *rsa_pub, *rsa_priv, *ec_pub, *p384_pub, *junk;
	EVP_PKEY *rsa, *ec, *p384;
	char err[512];

	if ((dir = tmpdir_make("valerie-auth")) == NULL)
		return 1;
	rsa = EVP_RSA_gen(2048);
	ec = EVP_EC_gen("P-256");
	p384 = EVP_EC_gen("P-384");
	CHECK(rsa != NULL && ec != NULL && p384 != NULL);
	if (rsa == NULL || ec == NULL || p384 == NULL)
		return check_done("test_auth");
	rsa_pub = write_pem(dir, "rsa.pub", rsa, 0);
	rsa_priv = write_pem(dir, "rsa.key", rsa, 1);
	ec_pub = write_pem(dir, "ec.pub", ec, 0);
	p384_pub = write_pem(dir, "p384.pub", p384, 0);
	junk = write_pem(dir, "junk.pub", NULL, 0);

	/* The right kind of public key opens. */
	CHECK(opens(dir, "RS256", rsa_pub, err, sizeof(err)));
	CHECK(opens(dir, "ES256", ec_pub, err, sizeof(err)));

	/* Anything else is refused at start, naming the variable and the file. */
	CHECK(!opens(dir, "RS256", rsa_priv, err, sizeof(err)));
	CHECK_CONTAINS(err, "JWT_PUBLIC_KEY_FILE");
	CHECK_CONTAINS(err, "no PEM public key");
	CHECK(!opens(dir, "RS256", junk, err, sizeof(err)));
	CHECK_CONTAINS(err, "JWT_PUBLIC_KEY_FILE");
	CHECK_CONTAINS(err, junk);
	CHECK(!opens(dir, "RS256", ec_pub, err, sizeof(err)));
	CHECK_CONTAINS(err, "not an RSA key");
	CHECK(!opens(dir, "ES256", rsa_pub, err, sizeof(err)));
	CHECK_CONTAINS(err, "not an EC P-256 key");
	CHECK(!opens(dir, "ES256", p384_pub, err, sizeof(err)));
	CHECK_CONTAINS(err, "not an EC P-256 key");

	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(p384);
	return check_done("test_auth");
}
