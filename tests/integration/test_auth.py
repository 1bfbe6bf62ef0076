"""test_auth: who may call, as a client sees it through nginx and the real pool.

VALERIE_AUTH=jwt,apikey with an HS256 secret (tokens built here with hmac, and with
`valerie token`); an RS256 stack with JWT_ISSUER and JWT_AUDIENCE (tokens signed with
`openssl dgst -sign`); an ES256 stack. Refused: no token, malformed, bad signature,
alg none, algorithm confusion (HS256 keyed with the RSA public key PEM), HS512 when
HS256 is configured, expired, not yet valid, no exp, wrong issuer or audience, an
unknown role, no sub. Roles (403 on an admin route), company binding, session
ownership, API keys (minted by `valerie apikey new`, revoked by editing the file while
the stack runs), the open routes, CORS, the production refusals, and no secret in any
log the stacks wrote."""
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (BIN, Stack, check, done, is_error_doc, post_chat,  # noqa: E402
                     read_text, remove_temp, temp_dir, wait_until)

TMP = temp_dir("valerie-auth-")
SECRET = secrets.token_hex(32)            # the HS256 stack's key: 64 bytes
OTHER_SECRET = secrets.token_hex(32)
SECRETS = [SECRET, OTHER_SECRET]          # nothing here may reach a log
LOGS = {}                                 # file name -> text, read before a stack goes


def note_secret(s):
    SECRETS.append(s)
    return s


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64u_json(d):
    return b64u(json.dumps(d, separators=(",", ":")).encode())


HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def hs_token(claims, secret=SECRET, alg="HS256", header=None):
    head = header if header is not None else {"alg": alg, "typ": "JWT"}
    signing = b64u_json(head) + "." + b64u_json(claims)
    key = secret if isinstance(secret, bytes) else secret.encode()
    sig = hmac.new(key, signing.encode(), HASHES[alg]).digest()
    return note_secret(signing + "." + b64u(sig))


def rs_token(claims, keyfile=None, header=None):
    keyfile = keyfile or RSA_PRIV
    head = header if header is not None else {"alg": "RS256", "typ": "JWT"}
    signing = b64u_json(head) + "." + b64u_json(claims)
    r = subprocess.run(["openssl", "dgst", "-sha256", "-sign", keyfile], input=signing.encode(),
                       capture_output=True, check=True)
    return note_secret(signing + "." + b64u(r.stdout))


def none_token(claims, sig=""):
    return note_secret(b64u_json({"alg": "none", "typ": "JWT"}) + "." + b64u_json(claims)
                       + "." + sig)


def claims(sub="alice", role="user", ttl=300, **extra):
    now = int(time.time())
    c = {"sub": sub, "role": role, "iat": now, "exp": now + ttl}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def valerie(args, env, timeout=30):
    """Runs the binary with exactly `env` (plus PATH); (rc, stdout, stderr)."""
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    e.update(env)
    r = subprocess.run([BIN] + args, env=e, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def keep_logs(st, label):
    """Reads every file the stack wrote under its dir that is a log, before it goes."""
    for root, _, files in os.walk(st.dir):
        for f in files:
            p = os.path.join(root, f)
            if f.endswith(".log") or os.sep + "logs" + os.sep in p:
                LOGS[f"{label}:{os.path.relpath(p, st.dir)}"] = read_text(p)


def refused(st, headers, what, path="/v1/models"):
    """A request that must be a 401 unauthorized with WWW-Authenticate."""
    s, h, doc = st.json("GET", path, headers=headers)
    check(s == 401 and is_error_doc(doc, "unauthorized") and "www-authenticate" in h,
          f"{what}: 401 unauthorized with WWW-Authenticate (got {s} {doc})")
    return doc


def accepted(st, headers, what, path="/v1/models"):
    s, h, doc = st.json("GET", path, headers=headers)
    check(s == 200, f"{what}: 200 (got {s} {str(doc)[:120]})")


# --- key material -------------------------------------------------------------------
def genkey(name, algo_args):
    priv = os.path.join(TMP, name + ".key")
    pub = os.path.join(TMP, name + ".pub")
    subprocess.run(["openssl", "genpkey"] + algo_args + ["-out", priv], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub], check=True,
                   capture_output=True)
    os.chmod(priv, 0o600)
    return priv, pub


RSA_PRIV, RSA_PUB = genkey("rsa", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
RSA2_PRIV, _ = genkey("rsa2", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
EC_PRIV, EC_PUB = genkey("ec", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
SECRETS.append(open(RSA_PRIV).read().split("\n")[1])  # a line of each private key
SECRETS.append(open(EC_PRIV).read().split("\n")[1])


def apikey_new(name, role, company=None):
    args = ["apikey", "new", "--name", name, "--role", role]
    if company:
        args += ["--company", company]
    rc, out, err = valerie(args, {})
    key = re.search(r"^key:\s+(\S+)$", out, re.M)
    line = re.search(r"^line:\s+(.+)$", out, re.M)
    check(rc == 0 and key and line, f"valerie apikey new --name {name}: prints key and line "
          f"(rc {rc}, {err.strip()[:100]})")
    if not (key and line):
        raise SystemExit(1)
    check(key.group(1) not in line.group(1), f"apikey {name}: the line does not hold the key")
    check(hashlib.sha256(key.group(1).encode()).hexdigest() in line.group(1).split(),
          f"apikey {name}: the line holds the key's SHA-256")
    return note_secret(key.group(1)), line.group(1)


CI_KEY, CI_LINE = apikey_new("ci", "user")
OPS_KEY, OPS_LINE = apikey_new("ops", "admin")
ACME_KEY, ACME_LINE = apikey_new("acmebot", "user", "acme")
LATE_KEY, LATE_LINE = apikey_new("late", "user")
KEYS_FILE = os.path.join(TMP, "api-keys")


def write_keys(lines):
    """Replaces the keys file the way an operator would: a new file renamed over it."""
    tmp = KEYS_FILE + ".new"
    with open(tmp, "w") as f:
        f.write("# name role [company] sha256\n" + "".join(l + "\n" for l in lines))
    os.chmod(tmp, 0o600)
    os.rename(tmp, KEYS_FILE)


write_keys([CI_LINE, OPS_LINE, ACME_LINE])

# Bad arguments of the operator's verbs: non-zero with a message.
for args, env, want in (
        (["token", "--sub", "alice"], {"JWT_SECRET_KEY": SECRET}, "usage"),
        (["token", "--sub", "alice", "--role", "boss"], {"JWT_SECRET_KEY": SECRET}, "--role"),
        (["token", "--sub", "alice", "--role", "user", "--ttl", "0"], {"JWT_SECRET_KEY": SECRET},
         "--ttl"),
        (["token", "--sub", "alice", "--role", "user", "--ttl", "x"], {"JWT_SECRET_KEY": SECRET},
         "--ttl"),
        (["token", "--sub", "alice", "--role", "user", "--bogus", "1"], {"JWT_SECRET_KEY": SECRET},
         "usage"),
        (["token", "--sub", "key:ci", "--role", "user"], {"JWT_SECRET_KEY": SECRET}, "--sub"),
        (["token", "--sub", "a b", "--role", "user"], {"JWT_SECRET_KEY": SECRET}, "--sub"),
        (["token", "--sub", "alice", "--role", "user"], {}, "JWT_SECRET_KEY"),
        (["token", "--sub", "alice", "--role", "user"],
         {"JWT_ALGORITHM": "RS256", "JWT_PUBLIC_KEY_FILE": RSA_PUB}, "JWT_PRIVATE_KEY_FILE"),
        (["token", "--sub", "alice", "--role", "user"],
         {"JWT_ALGORITHM": "RS256", "JWT_PRIVATE_KEY_FILE": EC_PRIV}, "RS256"),
        (["apikey"], {}, "usage"),
        (["apikey", "new", "--name", "ci"], {}, "usage"),
        (["apikey", "new", "--name", "ci", "--role", "root"], {}, "--role"),
        (["apikey", "new", "--name", "has space", "--role", "user"], {}, "--name")):
    rc, out, err = valerie(args, env)
    check(rc != 0 and out == "" and want in err,
          f"valerie {' '.join(args)}: exit {rc}, no output, says {want!r}: {err.strip()[:80]!r}")

# =====================================================================================
# Stack A: HS256, JWT and API keys, CORS for one origin.
# =====================================================================================
ENV_A = {"VALERIE_AUTH": "jwt,apikey", "JWT_SECRET_KEY": SECRET, "JWT_ALGORITHM": "HS256",
         "VALERIE_API_KEYS_FILE": KEYS_FILE, "CORS_ORIGINS": "https://app.example",
         "LANGFUSE_SECRET_KEY": note_secret("sk-lf-" + secrets.token_hex(16)),
         "LANGFUSE_PUBLIC_KEY": "pk-lf-test"}

with Stack(workers=2, threads=4, env=ENV_A) as st:
    # --- the open routes ---
    for path in ("/health", "/health/live", "/health/ready", "/"):
        s, h, doc = st.json("GET", path)
        check(s == 200 and isinstance(doc, dict), f"GET {path} without credentials: 200 ({s})")
    s, h, raw = st.request("GET", "/metrics")
    check(s == 200 and b"valerie_build_info" in raw,
          f"GET /metrics through nginx from loopback without credentials: 200 ({s})")

    # --- no or broken credentials ---
    for path, method in (("/v1/models", "GET"), ("/config", "GET"),
                         ("/api/v1/sessions/x", "GET"), ("/api/v1/sessions/x", "DELETE"),
                         ("/memory/clear/x", "POST")):
        s, h, doc = st.json(method, path)
        check(s == 401 and is_error_doc(doc, "unauthorized")
              and h.get("www-authenticate", "").startswith("Bearer"),
              f"{method} {path} with no credentials: 401 with WWW-Authenticate ({s} {h.get('www-authenticate')})")
    for path in ("/api/v1/chat", "/api/agent/chat", "/v1/chat/completions"):
        s, h, doc = post_chat(st, {"message": "hi", "session_id": "nocred",
                                   "messages": [{"role": "user", "content": "hi"}]}, path=path)
        check(s == 401 and is_error_doc(doc, "unauthorized") and "www-authenticate" in h,
              f"POST {path} with no credentials: 401 ({s})")
    # RFC 6750 3.1: no error code without credentials; invalid_token for ones that fail.
    s, h, doc = st.json("GET", "/v1/models")
    check(h.get("www-authenticate") == 'Bearer realm="valerie"',
          f"no credentials: WWW-Authenticate names no error ({h.get('www-authenticate')})")
    for hdrs, what in ((bearer(hs_token(claims(ttl=-120))), "an expired token"),
                       (bearer(hs_token(claims(), secret=OTHER_SECRET)), "a forged token"),
                       ({"X-API-Key": "vk_" + "0" * 48}, "an unknown API key")):
        s, h, doc = st.json("GET", "/v1/models", headers=hdrs)
        check(s == 401 and h.get("www-authenticate") ==
              'Bearer realm="valerie", error="invalid_token"',
              f"{what}: 401 with WWW-Authenticate error=\"invalid_token\" "
              f"({s} {h.get('www-authenticate')})")
    refused(st, {"Authorization": "Bearer "}, "an empty Bearer")
    refused(st, {"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()},
            "Basic credentials")
    refused(st, bearer("abc.def.ghi"), "malformed token (three parts, not base64url JSON)")
    refused(st, bearer("!!!.@@@.###"), "malformed token (not base64url)")
    refused(st, bearer("a.b.c.d"), "malformed token (four parts)")
    good = hs_token(claims())
    refused(st, bearer(good.rsplit(".", 1)[0]), "token without its signature part")
    refused(st, bearer(good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")),
            "token with a changed signature")
    refused(st, bearer(hs_token(claims(), secret=OTHER_SECRET)), "bad signature (other secret)")
    head, body, sig = good.split(".")
    refused(st, bearer(head + "." + b64u_json(claims(role="admin")) + "." + sig),
            "payload changed after signing (role admin)")
    refused(st, bearer(none_token(claims())), "alg none, empty signature")
    refused(st, bearer(none_token(claims(), sig=sig)), "alg none with a signature")
    refused(st, bearer(hs_token(claims(), header={"alg": "None", "typ": "JWT"})), "alg None")
    refused(st, bearer(hs_token(claims(), header={"typ": "JWT"})), "header without alg")
    refused(st, bearer(hs_token(claims(), alg="HS512")), "HS512 token when HS256 is configured")
    refused(st, bearer(hs_token(claims(), alg="HS384")), "HS384 token when HS256 is configured")
    refused(st, bearer(hs_token(claims(), header={"alg": "HS256", "typ": "JWS"})), "typ not JWT")
    # libjwt 1.10 takes typ JWT only: RFC 9068's at+jwt is refused (DEPLOYMENT.md, Auth).
    refused(st, bearer(hs_token(claims(), header={"alg": "HS256", "typ": "at+jwt"})),
            "typ at+jwt")
    refused(st, bearer(hs_token(claims(ttl=-120))), "expired 2 minutes ago (beyond the leeway)")
    accepted(st, bearer(hs_token(claims(ttl=-5))), "expired 5 s ago (within the 30 s leeway)")
    refused(st, bearer(hs_token(claims(nbf=int(time.time()) + 120))),
            "nbf 2 minutes ahead (beyond the leeway)")
    accepted(st, bearer(hs_token(claims(nbf=int(time.time()) + 5))), "nbf 5 s ahead (leeway)")
    refused(st, bearer(hs_token(claims(iat=int(time.time()) + 3600))), "iat an hour ahead")
    s, h, doc = st.json("GET", "/v1/models", headers=bearer(hs_token(claims(exp=2 ** 63 - 1))))
    check(s == 200, f"exp = 2^63-1 (a token that never expires) is accepted: {s} {doc}")
    refused(st, bearer(hs_token({"sub": "alice", "role": "user"})), "no exp")
    refused(st, bearer(hs_token(claims(exp=str(int(time.time()) + 300)))), "exp as a string")
    # NumericDate allows a fraction (RFC 7519 2); rounded to the safe side.
    accepted(st, bearer(hs_token(claims(exp=int(time.time()) + 300.5))), "exp with a fraction")
    refused(st, bearer(hs_token(claims(exp=time.time() - 120.5))),
            "exp with a fraction, expired beyond the leeway")
    accepted(st, bearer(hs_token(claims(nbf=time.time() - 1.5, iat=time.time() - 1.5))),
             "nbf and iat with a fraction")
    refused(st, bearer(hs_token(claims(nbf=time.time() + 120.5))),
            "nbf with a fraction, beyond the leeway")
    refused(st, bearer(hs_token(claims(exp=float("nan")))), "exp NaN")
    refused(st, bearer(hs_token(claims(sub=None))), "no sub")
    refused(st, bearer(hs_token(claims(sub=""))), "empty sub")
    refused(st, bearer(hs_token(claims(sub=42))), "sub a number")
    refused(st, bearer(hs_token(claims(sub="key:ci"))), "sub posing as an API key principal")
    refused(st, bearer(hs_token(claims(sub="anonymous"))), "sub anonymous")
    refused(st, bearer(hs_token(claims(sub="x" * 200))), "sub longer than a principal id")
    refused(st, bearer(hs_token(claims(role="superuser"))), "role not user or admin")
    refused(st, bearer(hs_token(claims(role=["admin"]))), "role a list")
    refused(st, bearer(hs_token(["not", "an", "object"])), "claims not an object")
    doc = refused(st, bearer(hs_token(claims(ttl=-120))), "expired (message)")
    check(isinstance(doc, dict) and SECRET not in json.dumps(doc),
          "an error message holds no secret")

    # --- roles ---
    user_tok = hs_token(claims("alice", "user"))
    admin_tok = hs_token(claims("root", "admin"))
    norole_tok = hs_token(claims("carol", None))
    accepted(st, bearer(user_tok), "role user on GET /v1/models")
    accepted(st, bearer(norole_tok), "no role (a user) on GET /v1/models")
    for tok, what in ((user_tok, "role user"), (norole_tok, "no role")):
        s, h, doc = st.json("GET", "/config", headers=bearer(tok))
        check(s == 403 and is_error_doc(doc, "forbidden"), f"{what} on GET /config: 403 ({s} {doc})")
    s, h, doc = st.json("GET", "/config", headers=bearer(admin_tok))
    check(s == 200 and isinstance(doc, dict), f"role admin on GET /config: 200 ({s})")
    check(s == 200 and SECRET not in json.dumps(doc) and ENV_A["LANGFUSE_SECRET_KEY"]
          not in json.dumps(doc), "GET /config redacts the JWT and Langfuse secrets")
    s, h, doc = st.json("GET", "/v1/models", headers={"Authorization": "bearer " + user_tok})
    check(s == 200, f"the Bearer scheme is case-insensitive ({s})")

    # --- valerie token ---
    rc, out, err = valerie(["token", "--sub", "alice", "--role", "admin", "--company", "acme",
                            "--ttl", "5"], {"JWT_SECRET_KEY": SECRET})
    minted = note_secret(out.strip())
    check(rc == 0 and minted.count(".") == 2, f"valerie token: prints a JWT (rc {rc} {err.strip()})")
    s, h, doc = st.json("GET", "/config", headers=bearer(minted))
    check(s == 200, f"valerie token --role admin: GET /config 200 ({s})")
    payload = json.loads(base64.urlsafe_b64decode(minted.split(".")[1] + "=="))
    check(payload.get("sub") == "alice" and payload.get("role") == "admin"
          and payload.get("company_id") == "acme"
          and 0 < payload.get("exp", 0) - payload.get("iat", 0) <= 300,
          f"valerie token: claims sub, role, company_id, exp within --ttl 5 minutes: {payload}")
    s, h, doc = st.json("GET", "/v1/models", headers=bearer(minted + "x"))
    check(s == 401, f"a minted token with one more character: 401 ({s})")

    # --- company binding ---
    acme_tok = hs_token(claims("acme-user", "user", company_id="acme"))
    num_tok = hs_token(claims("num-user", "user", company_id=42))

    def agent(tok, cfg, sid):
        body = {"message": "Hola", "session_id": sid}
        if cfg is not None:
            body["config"] = cfg
        return post_chat(st, body, headers=tok, path="/api/agent/chat")

    s, h, doc = agent(bearer(acme_tok), {"nombre_bot": "T", "id_empresa": "other"}, "cb-1")
    check(s == 403 and is_error_doc(doc, "company_mismatch"),
          f"company acme posting id_empresa other: 403 company_mismatch ({s} {doc})")
    s, h, doc = agent(bearer(acme_tok), {"nombre_bot": "T", "id_empresa": "ACME"}, "cb-1b")
    check(s == 403 and is_error_doc(doc, "company_mismatch"),
          f"company acme posting id_empresa ACME: 403 company_mismatch ({s})")
    s, h, doc = post_chat(st, {"message": "Hola", "session_id": "cb-1c",
                               "config": {"id_empresa": "other"}}, headers=bearer(acme_tok))
    check(s == 403 and is_error_doc(doc, "company_mismatch"),
          f"company acme on /api/v1/chat with config.id_empresa other: 403 ({s})")
    s, h, doc = agent(bearer(acme_tok), {"nombre_bot": "T", "id_empresa": "acme"}, "cb-2")
    check(s == 200 and isinstance(doc, dict) and doc.get("reply"),
          f"company acme posting id_empresa acme: 200 ({s} {doc})")
    s, h, doc = agent(bearer(acme_tok), {"nombre_bot": "T"}, "cb-3")
    check(s == 200, f"company acme posting a persona naming no company: 200 ({s} {doc})")
    # The offline provider quotes the system prompt: the caller's company was put in.
    check(s == 200 and "for company acme" in doc.get("reply", ""),
          f"... and the persona is given the caller's company ({str(doc)[:300]})")
    s, h, doc = agent(bearer(acme_tok), {"nombre_bot": "T", "id_empresa": "acme"}, "cb-3b")
    check(s == 200 and "for company acme" in doc.get("reply", "")
          and "for company other" not in doc.get("reply", ""),
          "the persona naming the caller's own company is used as it is")
    s, h, doc = agent(bearer(acme_tok), None, "cb-4")
    check(s == 200, f"company acme posting no persona: 200 ({s} {doc})")
    s, h, doc = agent(bearer(num_tok), {"nombre_bot": "T", "id_empresa": 42}, "cb-5")
    check(s == 200, f"company_id 42 (a number) posting id_empresa 42: 200 ({s} {doc})")
    s, h, doc = agent(bearer(num_tok), {"nombre_bot": "T", "id_empresa": 43}, "cb-6")
    check(s == 403 and is_error_doc(doc, "company_mismatch"),
          f"company_id 42 posting id_empresa 43: 403 ({s})")
    # An integer company_id of 2^63 and up is refused, never read as 2^63-1 (another
    # company): libjwt's JSON parser (jansson) refuses the payload before Valerie reads it.
    # 2^63-1 itself is exact.
    refused(st, bearer(hs_token(claims("big-user", "user", company_id=2 ** 63))),
            "company_id 2^63")
    refused(st, bearer(hs_token(claims("big-user", "user", company_id=2 ** 64 + 7))),
            "company_id above 2^64")
    big_tok = hs_token(claims("big-user", "user", company_id=2 ** 63 - 1))
    s, h, doc = agent(bearer(big_tok), {"nombre_bot": "T", "id_empresa": 2 ** 63 - 1}, "cb-6b")
    check(s == 200 and f"for company {2 ** 63 - 1}" in doc.get("reply", ""),
          f"company_id 2^63-1 posting id_empresa 2^63-1: 200 ({s} {str(doc)[:200]})")
    s, h, doc = agent(bearer(user_tok), {"nombre_bot": "T", "id_empresa": "other"}, "cb-7")
    check(s == 200, f"a caller bound to no company may name any: 200 ({s})")
    s, h, doc = agent({"X-API-Key": ACME_KEY}, {"nombre_bot": "T", "id_empresa": "other"}, "cb-8")
    check(s == 403 and is_error_doc(doc, "company_mismatch"),
          f"an API key of company acme posting id_empresa other: 403 ({s})")
    s, h, doc = agent({"X-API-Key": ACME_KEY}, {"nombre_bot": "T", "id_empresa": "acme"}, "cb-9")
    check(s == 200, f"an API key of company acme posting id_empresa acme: 200 ({s})")

    # --- session ownership ---
    alice, bob = bearer(user_tok), bearer(hs_token(claims("bob", "user")))
    admin = bearer(admin_tok)
    sid = "owned-by-alice"
    s, h, doc = post_chat(st, {"message": "my secret plan", "session_id": sid}, headers=alice)
    check(s == 200, f"alice starts session {sid}: 200 ({s})")

    def alice_sees(turns, what):
        s, h, doc = st.json("GET", f"/api/v1/sessions/{sid}", headers=alice)
        check(s == 200 and isinstance(doc, dict) and doc.get("owner") == "alice"
              and len(doc.get("messages", [])) == 2 * turns,
              f"{what}: alice still reads her session with {turns} turn(s) ({s})")

    s, h, doc = st.json("GET", f"/api/v1/sessions/{sid}", headers=bob)
    check(s == 404 and is_error_doc(doc, "session_not_found"), f"bob reads it: 404 ({s} {doc})")
    check("my secret plan" not in json.dumps(doc), "bob sees none of its content")
    s, h, doc = post_chat(st, {"message": "mine now", "session_id": sid}, headers=bob)
    check(s == 404 and is_error_doc(doc, "session_not_found"),
          f"bob appends to it (/api/v1/chat): 404 session_not_found ({s} {doc})")
    s, h, doc = post_chat(st, {"message": "mine now", "session_id": sid, "stream": True},
                          headers=bob)
    check(s == 404, f"bob appends to it streaming: 404 before any stream ({s})")
    s, h, doc = post_chat(st, {"model": "x", "messages": [{"role": "user", "content": "hi"}]},
                          headers=dict(bob, **{"X-Session-Id": sid}), path="/v1/chat/completions")
    check(s == 404, f"bob appends via /v1/chat/completions X-Session-Id: 404 ({s} {doc})")
    s, h, doc = st.json("DELETE", f"/api/v1/sessions/{sid}", headers=bob)
    check(s == 404 and is_error_doc(doc, "session_not_found"), f"bob deletes it: 404 ({s})")
    s, h, doc = st.json("POST", f"/memory/clear/{sid}", headers=bob)
    check(s == 404 and is_error_doc(doc, "session_not_found"),
          f"bob clears it (/memory/clear): 404 ({s})")
    s, h, doc = st.json("GET", "/api/v1/sessions/never-was", headers=bob)
    check(s == 404 and is_error_doc(doc, "session_not_found"),
          "a session that never was: the same 404 (bob cannot tell the two apart)")
    alice_sees(1, "after bob's attempts")
    s, h, doc = post_chat(st, {"message": "second", "session_id": sid}, headers=alice)
    check(s == 200 and doc.get("turn") == 2, f"alice appends turn 2: 200 ({s})")
    s, h, doc = st.json("GET", f"/api/v1/sessions/{sid}", headers=admin)
    check(s == 200 and doc.get("owner") == "alice" and len(doc.get("messages", [])) == 4,
          f"an admin reads alice's session: 200, owner alice ({s})")
    s, h, doc = st.json("DELETE", f"/api/v1/sessions/{sid}", headers=admin)
    check(s == 200 and doc.get("deleted") is True, f"an admin deletes it: 200 ({s} {doc})")
    s, h, doc = st.json("GET", f"/api/v1/sessions/{sid}", headers=alice)
    check(s == 404, f"gone for alice too after the admin's delete ({s})")
    post_chat(st, {"message": "again", "session_id": sid + "-2"}, headers=alice)
    s, h, doc = st.json("POST", f"/memory/clear/{sid}-2", headers=admin)
    check(s == 200, f"an admin clears another's session (/memory/clear): 200 ({s})")

    # --- API keys ---
    accepted(st, {"X-API-Key": CI_KEY}, "API key via X-API-Key")
    accepted(st, bearer(CI_KEY), "API key via Authorization: Bearer")
    # Basic credentials of a proxy in front reach the worker too: the X-API-Key beside
    # them is the caller's credential (it used to be a 401 for the Basic header).
    basic = "Basic " + base64.b64encode(b"proxy:pw").decode()
    accepted(st, {"Authorization": basic, "X-API-Key": CI_KEY},
             "X-API-Key beside an Authorization: Basic header")
    refused(st, {"Authorization": basic, "X-API-Key": "vk_" + "0" * 48},
            "an unknown X-API-Key beside an Authorization: Basic header")
    refused(st, {"X-API-Key": "vk_" + "0" * 48}, "an unknown API key")
    refused(st, {"X-API-Key": CI_KEY[:-1]}, "an API key missing its last character")
    refused(st, {"X-API-Key": CI_KEY + "0"}, "an API key with one more character")
    refused(st, bearer(hashlib.sha256(CI_KEY.encode()).hexdigest()),
            "the key's stored hash used as the key")
    s, h, doc = st.json("GET", "/config", headers={"X-API-Key": CI_KEY})
    check(s == 403 and is_error_doc(doc, "forbidden"), f"user key on GET /config: 403 ({s})")
    s, h, doc = st.json("GET", "/config", headers={"X-API-Key": OPS_KEY})
    check(s == 200, f"admin key on GET /config: 200 ({s})")
    s, h, doc = post_chat(st, {"message": "from ci", "session_id": "key-sess"},
                          headers={"X-API-Key": CI_KEY})
    check(s == 200, f"a chat turn with the ci key: 200 ({s})")
    s, h, doc = st.json("GET", "/api/v1/sessions/key-sess", headers=bearer(CI_KEY))
    check(s == 200 and doc.get("owner") == "key:ci",
          f"the key's session shows owner key:ci ({s} {doc and doc.get('owner')})")
    s, h, doc = st.json("GET", "/api/v1/sessions/key-sess", headers={"X-API-Key": OPS_KEY})
    check(s == 200, f"the admin key reads it ({s})")
    s, h, doc = st.json("GET", "/api/v1/sessions/key-sess", headers=alice)
    check(s == 404, f"alice does not ({s})")
    # A key added while the stack runs works within a few seconds.
    refused(st, {"X-API-Key": LATE_KEY}, "a key not yet in the file")
    write_keys([CI_LINE, OPS_LINE, ACME_LINE, LATE_LINE])
    check(wait_until(lambda: st.json("GET", "/v1/models", headers={"X-API-Key": LATE_KEY})[0]
                     == 200, 10, 0.2), "a key added to the file works without a restart")
    # Revoked: the line removed; every worker stops accepting it.
    pids_before = sorted(st.worker_pids())
    write_keys([OPS_LINE, ACME_LINE, LATE_LINE])

    def revoked():
        return all(st.json("GET", "/v1/models", headers={"X-API-Key": CI_KEY})[0] == 401
                   for _ in range(6))
    check(wait_until(revoked, 10, 0.2), "a key removed from the file gets 401 within seconds")
    refused(st, bearer(CI_KEY), "the revoked key via Bearer")
    accepted(st, {"X-API-Key": OPS_KEY}, "the keys left in the file still work")
    check(sorted(st.worker_pids()) == pids_before and st.json("GET", "/health")[0] == 200,
          "the stack kept running through the revocation (same workers)")
    # A broken file keeps the keys read before.
    with open(KEYS_FILE, "a") as f:
        f.write("\n\nthis is not a key line\n")
    time.sleep(1.5)  # let a reload look at it (not an assertion on time)
    accepted(st, {"X-API-Key": OPS_KEY}, "a broken keys file keeps the keys read before")
    # The operator is told which line is wrong (line 1 is the comment write_keys puts,
    # lines 5 and 6 are blank: they count).
    check(wait_until(lambda: re.search(r"API keys file not reloaded.*line 7\b",
                                       st.worker_log()), 5, 0.1),
          "the log says why the keys file was not reloaded, naming line 7")
    write_keys([OPS_LINE, ACME_LINE, LATE_LINE])
    # A keys file that is gone accepts no key (fail closed), and the log says so.
    accepted(st, {"X-API-Key": OPS_KEY}, "the keys file mended")
    os.rename(KEYS_FILE, KEYS_FILE + ".moved")
    check(wait_until(lambda: st.json("GET", "/v1/models", headers={"X-API-Key": OPS_KEY})[0]
                     == 401, 10, 0.2), "with the keys file gone, no key is accepted")
    check(wait_until(lambda: re.search(r"API keys file .* is gone", st.worker_log()), 5, 0.1),
          "the log says the keys file is gone")
    os.rename(KEYS_FILE + ".moved", KEYS_FILE)
    check(wait_until(lambda: st.json("GET", "/v1/models", headers={"X-API-Key": OPS_KEY})[0]
                     == 200, 10, 0.2), "the keys file back: its keys work again")

    # --- CORS ---
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type"}
    s, h, raw = st.request("OPTIONS", "/api/v1/chat", headers=pre)
    check(s == 204 and h.get("access-control-allow-origin") == "https://app.example"
          and "POST" in h.get("access-control-allow-methods", "")
          and "authorization" in h.get("access-control-allow-headers", "").lower()
          and "content-type" in h.get("access-control-allow-headers", "").lower(),
          f"preflight from an allowed origin: 204 with the Allow-* headers ({s} {h})")
    # The official openai SDK in a browser asks for headers of its own (x-stainless-*).
    sdk = ("authorization,content-type,x-stainless-arch,x-stainless-lang,x-stainless-os,"
           "x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,"
           "x-stainless-runtime-version,x-stainless-timeout")
    s, h, raw = st.request("OPTIONS", "/v1/chat/completions",
                           headers=dict(pre, **{"Access-Control-Request-Headers": sdk}))
    allowed = {x.strip().lower() for x in h.get("access-control-allow-headers", "").split(",")}
    check(s == 204 and set(sdk.split(",")) <= allowed,
          f"a preflight for the openai SDK's own headers allows all of them ({s} {h})")
    s, h, raw = st.request("OPTIONS", "/api/v1/chat",
                           headers=dict(pre, **{"Access-Control-Request-Headers": "x-a;b"}))
    check(s == 204 and "x-a;b" not in h.get("access-control-allow-headers", "")
          and "authorization" in h.get("access-control-allow-headers", "").lower(),
          f"a malformed header list is not echoed; the fixed list is sent ({s} {h})")
    s, h, doc = post_chat(st, {"message": "cors", "session_id": "cors-1"},
                          headers=dict(alice, Origin="https://app.example"))
    check(s == 200 and h.get("access-control-allow-origin") == "https://app.example",
          f"a POST from the allowed origin carries Access-Control-Allow-Origin ({s})")
    check("origin" in h.get("vary", "").lower(), "... and Vary: Origin")
    s, h, doc = st.json("GET", "/v1/models", headers={"Origin": "https://app.example"})
    check(s == 401 and h.get("access-control-allow-origin") == "https://app.example",
          f"a 401 to the allowed origin is readable by its page ({s})")
    evil_pre = dict(pre, Origin="https://evil.example")
    s, h, raw = st.request("OPTIONS", "/api/v1/chat", headers=evil_pre)
    check(s == 403 and not any(k.startswith("access-control-") for k in h),
          f"preflight from another origin: 403 without Access-Control-* ({s} {h})")
    for origin in ("https://evil.example", "https://app.example.evil.example", "null",
                   "http://app.example"):
        s, h, doc = post_chat(st, {"message": "cors", "session_id": "cors-2"},
                              headers=dict(alice, Origin=origin))
        check(s == 200 and not any(k.startswith("access-control-") for k in h),
              f"a POST from {origin}: answered, no Access-Control-* header ({s})")
    s, h, raw = st.request("OPTIONS", "/api/v1/chat")
    check(s in (204, 404, 405) and not any(k.startswith("access-control-") for k in h),
          f"OPTIONS without Origin: no CORS headers ({s})")
    keep_logs(st, "hs256")

# =====================================================================================
# Stack B: RS256 with issuer and audience; JWT only.
# =====================================================================================
ISS, AUD = "https://issuer.example", "valerie-api"
ENV_B = {"VALERIE_AUTH": "jwt", "JWT_ALGORITHM": "RS256", "JWT_PUBLIC_KEY_FILE": RSA_PUB,
         "JWT_ISSUER": ISS, "JWT_AUDIENCE": AUD}
with Stack(workers=1, threads=4, env=ENV_B) as st:
    ok = claims(iss=ISS, aud=AUD)
    accepted(st, bearer(rs_token(ok)), "RS256 signed with the private key")
    accepted(st, bearer(rs_token(claims(iss=ISS, aud=["other", AUD]))),
             "RS256 with aud an array that names us")
    refused(st, bearer(rs_token(claims(iss=ISS, aud=["other", "more"]))),
            "aud an array that does not name us")
    refused(st, bearer(rs_token(claims(iss=ISS, aud="other"))), "aud a wrong string")
    refused(st, bearer(rs_token(claims(iss=ISS, aud=[]))), "aud an empty array")
    refused(st, bearer(rs_token(claims(iss=ISS))), "no aud")
    refused(st, bearer(rs_token(claims(iss="https://evil.example", aud=AUD))), "wrong issuer")
    refused(st, bearer(rs_token(claims(iss=ISS + "/", aud=AUD))), "issuer with a trailing /")
    refused(st, bearer(rs_token(claims(aud=AUD))), "no issuer")
    refused(st, bearer(rs_token(ok, keyfile=RSA2_PRIV)), "RS256 signed with another key")
    pem = open(RSA_PUB, "rb").read()
    refused(st, bearer(hs_token(ok, secret=pem)),
            "algorithm confusion: HS256 keyed with the RS256 public key PEM")
    refused(st, bearer(hs_token(ok, secret=pem.strip())),
            "algorithm confusion: the PEM without its last newline")
    refused(st, bearer(hs_token(ok, secret=pem, alg="HS512")), "HS512 keyed with the public key")
    refused(st, bearer(hs_token(ok, secret=pem, header={"alg": "RS256", "typ": "JWT"})),
            "header RS256 but an HMAC signature with the public key")
    refused(st, bearer(none_token(ok)), "alg none")
    refused(st, bearer(rs_token(claims(iss=ISS, aud=AUD, ttl=-120))), "expired RS256")
    refused(st, {"X-API-Key": OPS_KEY}, "an API key where only JWT is accepted")
    refused(st, bearer(OPS_KEY), "an API key as Bearer where only JWT is accepted")
    refused(st, {"Authorization": "Basic " + base64.b64encode(b"p:w").decode(),
                 "X-API-Key": OPS_KEY}, "Basic and an API key where only JWT is accepted")
    env = {"JWT_ALGORITHM": "RS256", "JWT_PRIVATE_KEY_FILE": RSA_PRIV, "JWT_ISSUER": ISS,
           "JWT_AUDIENCE": AUD}
    rc, out, err = valerie(["token", "--sub", "ops", "--role", "admin"], env)
    tok = note_secret(out.strip())
    check(rc == 0, f"valerie token with JWT_PRIVATE_KEY_FILE (RS256): rc 0 ({err.strip()})")
    s, h, doc = st.json("GET", "/config", headers=bearer(tok))
    check(s == 200, f"its token (iss and aud set) is an admin's: GET /config 200 ({s})")
    keep_logs(st, "rs256")

# =====================================================================================
# Stack C: ES256.
# =====================================================================================
with Stack(workers=1, threads=2, env={"VALERIE_AUTH": "jwt", "JWT_ALGORITHM": "ES256",
                                      "JWT_PUBLIC_KEY_FILE": EC_PUB}) as st:
    rc, out, err = valerie(["token", "--sub", "eve", "--role", "user"],
                           {"JWT_ALGORITHM": "ES256", "JWT_PRIVATE_KEY_FILE": EC_PRIV})
    tok = note_secret(out.strip())
    check(rc == 0, f"valerie token (ES256): rc 0 ({err.strip()})")
    accepted(st, bearer(tok), "ES256 token from valerie token")
    h64, p64, sig = tok.split(".")
    refused(st, bearer(h64 + "." + b64u_json(claims("eve", "admin")) + "." + sig),
            "ES256 payload changed after signing")
    refused(st, bearer(hs_token(claims(), secret=open(EC_PUB, "rb").read())),
            "algorithm confusion: HS256 keyed with the ES256 public key")
    refused(st, bearer(none_token(claims())), "alg none on ES256")
    refused(st, bearer(rs_token(claims(), RSA_PRIV)), "RS256 token on an ES256 stack")
    keep_logs(st, "es256")

# =====================================================================================
# Production refusals: one line naming the variable; the pool does not start.
# =====================================================================================
GOOD = secrets.token_hex(32)
SECRETS.append(GOOD)
PROD = {"VALERIE_ENV": "production", "VALERIE_AUTH": "jwt", "JWT_SECRET_KEY": GOOD,
        "VALERIE_DATA_DIR": os.path.join(TMP, "prod-data")}
rc, out, err = valerie(["check-config"], PROD)
check(rc == 0, f"production with auth and a good secret: check-config passes ({err.strip()})")
check(GOOD not in out, "check-config does not print the secret")
short31 = secrets.token_hex(16)[:31]
for var, value, extra in (
        ("VALERIE_AUTH", "none", {}),
        ("JWT_SECRET_KEY", short31, {}),
        ("JWT_SECRET_KEY", "your-256-bit-secret-padded-to-be-long-enough-xx", {}),
        ("JWT_SECRET_KEY", "changeme-changeme-changeme-changeme", {}),
        ("JWT_SECRET_KEY", "CHANGEME", {}),
        ("CORS_ORIGINS", "*", {}),
        ("CORS_ORIGINS", "https://app.example,*", {})):
    env = dict(PROD, **{var: value}, **extra)
    rc, out, err = valerie(["check-config"], env)
    lines = [l for l in err.splitlines() if l.strip()]
    check(rc != 0 and len(lines) == 1 and var in lines[0] and out == "",
          f"production with {var}={value[:20]!r}: refused in one line naming {var}: "
          f"rc {rc} {err.strip()[:120]!r}")
    if var == "JWT_SECRET_KEY":
        check(value not in err, f"the refusal does not print the secret {value[:10]}...")
rc, out, err = valerie(["check-config"], dict(PROD, JWT_SECRET_KEY=secrets.token_hex(16)))
check(rc == 0, f"production with a random 32-byte secret: passes ({err.strip()[:100]})")
rc, out, err = valerie(["check-config"], dict(PROD, CORS_ORIGINS="https://a.example,https://b.example"))
check(rc == 0, f"production with listed CORS origins: passes ({err.strip()[:100]})")
# The files the settings name are read as a worker reads them at start: one a worker would
# refuse (every worker exiting 1 under multiwatch) is refused by check-config, exit 78.
junk = os.path.join(TMP, "junk.pem")
with open(junk, "w") as f:
    f.write("not a certificate\n")
for var, extra in (("VALERIE_CA_BUNDLE", {"VALERIE_CA_BUNDLE": junk + ".gone"}),
                   ("VALERIE_CA_BUNDLE", {"VALERIE_CA_BUNDLE": junk}),
                   ("JWT_PUBLIC_KEY_FILE", {"JWT_ALGORITHM": "RS256",
                                            "JWT_PUBLIC_KEY_FILE": junk + ".gone"}),
                   ("JWT_PUBLIC_KEY_FILE", {"JWT_ALGORITHM": "RS256",
                                            "JWT_PUBLIC_KEY_FILE": junk}),
                   ("VALERIE_API_KEYS_FILE", {"VALERIE_AUTH": "apikey",
                                              "VALERIE_API_KEYS_FILE": junk + ".gone"}),
                   ("VALERIE_API_KEYS_FILE", {"VALERIE_AUTH": "apikey",
                                              "VALERIE_API_KEYS_FILE": junk})):
    rc, out, err = valerie(["check-config"], dict(PROD, **extra))
    lines = [l for l in err.splitlines() if l.strip()]
    check(rc == 78 and out == "" and len(lines) == 1 and var in lines[0],
          f"check-config with {var} naming a missing or junk file: refused in one line "
          f"naming it (rc {rc} {err.strip()[:160]!r})")
# The env file the launcher loaded (VALERIE_ENV_FILE, as scripts/valerie.service sets it):
# it holds the secrets, so others may have nothing of it, and it must exist.
env_file = os.path.join(TMP, "valerie.env")
with open(env_file, "w") as f:
    f.write(f"VALERIE_ENV=production\nJWT_SECRET_KEY={GOOD}\n")
for mode in (0o644, 0o604, 0o602):
    os.chmod(env_file, mode)
    rc, out, err = valerie(["check-config"], dict(PROD, VALERIE_ENV_FILE=env_file))
    lines = [l for l in err.splitlines() if l.strip()]
    check(rc == 78 and out == "" and len(lines) == 1 and "VALERIE_ENV_FILE" in lines[0] and
          f"{mode:04o}" in lines[0] and "chmod" in lines[0],
          f"production with an env file of mode {mode:04o}: refused in one line naming "
          f"VALERIE_ENV_FILE (rc {rc} {err.strip()[:160]!r})")
for mode in (0o600, 0o640):
    os.chmod(env_file, mode)
    rc, out, err = valerie(["check-config"], dict(PROD, VALERIE_ENV_FILE=env_file))
    check(rc == 0, f"production with the env file at {mode:04o}: passes ({err.strip()[:100]})")
rc, out, err = valerie(["check-config"], dict(PROD, VALERIE_ENV_FILE=env_file + ".gone"))
check(rc == 78 and "VALERIE_ENV_FILE" in err and "cannot stat" in err,
      f"production with an env file that does not exist: refused ({err.strip()[:120]!r})")
rc, out, err = valerie(["check-config"], dict(PROD, VALERIE_ENV="development",
                                              VALERIE_ENV_FILE=env_file + ".gone"))
check(rc == 0, f"development does not look at VALERIE_ENV_FILE ({err.strip()[:100]})")
os.chmod(env_file, 0o644)
st = Stack(workers=1, threads=2, env=dict(PROD, VALERIE_ENV_FILE=env_file,
                                          VALERIE_START_TIMEOUT="20"))
r = st.script("start")
check(r.returncode != 0 and "VALERIE_ENV_FILE" in r.stdout + r.stderr,
      f"run-local.sh start with production and an env file of mode 0644: non-zero, names "
      f"VALERIE_ENV_FILE (rc {r.returncode}: {(r.stdout + r.stderr).strip()[-200:]!r})")
st.stop()
keep_logs(st, "prod-envfile")
remove_temp(st.dir, "stack files")
os.chmod(env_file, 0o600)

open_priv = os.path.join(TMP, "open-priv.key")
shutil.copy(RSA_PRIV, open_priv)
os.chmod(open_priv, 0o644)
rc, out, err = valerie(["token", "--sub", "ops", "--role", "admin"],
                       dict(PROD, JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY_FILE=RSA_PUB,
                            JWT_PRIVATE_KEY_FILE=open_priv))
check(rc != 0 and out == "" and "JWT_PRIVATE_KEY_FILE" in err,
      f"production: valerie token refuses a private key others may read ({rc} {err.strip()[:100]!r})")
os.chmod(open_priv, 0o600)
rc, out, err = valerie(["token", "--sub", "ops", "--role", "admin"],
                       dict(PROD, JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY_FILE=RSA_PUB,
                            JWT_PRIVATE_KEY_FILE=open_priv))
note_secret(out.strip())
check(rc == 0 and out.count(".") == 2, f"... and signs with it at mode 0600 ({rc} {err.strip()[:100]!r})")

# The stack itself: refused at start with the reason.
st = Stack(workers=1, threads=2, env=dict(PROD, VALERIE_AUTH="none", VALERIE_START_TIMEOUT="20"))
r = st.script("start")
check(r.returncode != 0 and "VALERIE_AUTH" in r.stdout + r.stderr,
      f"run-local.sh start with production and auth none: non-zero, names VALERIE_AUTH "
      f"(rc {r.returncode}: {(r.stdout + r.stderr).strip()[-200:]!r})")
st.stop()
keep_logs(st, "prod-none")
remove_temp(st.dir, "stack files")

# An API keys file others may read: check-config cannot see it; the workers refuse it.
open_keys = os.path.join(TMP, "open-keys")
shutil.copy(KEYS_FILE, open_keys)
os.chmod(open_keys, 0o644)
prod_keys = dict(PROD, VALERIE_AUTH="jwt,apikey", VALERIE_API_KEYS_FILE=open_keys,
                 VALERIE_START_TIMEOUT="20")
st = Stack(workers=2, threads=2, env=prod_keys)
r = st.script("start")
said = r.stdout + r.stderr + st.worker_log()
check(r.returncode != 0, f"production with a keys file of mode 0644: the stack does not start "
      f"(rc {r.returncode})")
check("VALERIE_API_KEYS_FILE" in said and "readable by others" in said,
      f"... and the log says why, naming VALERIE_API_KEYS_FILE: "
      f"{[l for l in said.splitlines() if 'KEYS_FILE' in l][:1]}")
st.stop()
keep_logs(st, "prod-0644")
remove_temp(st.dir, "stack files")
os.chmod(open_keys, 0o600)
with Stack(workers=1, threads=2, env=dict(prod_keys, VALERIE_API_KEYS_FILE=open_keys)) as st:
    accepted(st, {"X-API-Key": OPS_KEY}, "the same production stack with the file at 0600 "
             "starts and takes its keys")
    keep_logs(st, "prod-0600")

# =====================================================================================
# No secret in any log any stack wrote.
# =====================================================================================
check(len(LOGS) >= 3 and any("valerie.log" in k for k in LOGS),
      f"logs were collected: {sorted(LOGS)[:8]}")
seen_auth = sum(t.count('"status":401') for t in LOGS.values())
check(seen_auth > 0 or any('401' in t for t in LOGS.values()),
      "the logs do record the refused requests (so the grep below means something)")
leaks = []
for name, text in LOGS.items():
    for s in set(SECRETS):
        if s and s in text:
            leaks.append(f"{name}: {s[:12]}...")
        # A token's signature alone is a secret too.
        elif s.count(".") == 2 and len(s.rsplit(".", 1)[1]) > 16 and s.rsplit(".", 1)[1] in text:
            leaks.append(f"{name}: signature of {s[:12]}...")
check(not leaks, f"no secret, token or API key appears in any log ({len(SECRETS)} secrets, "
      f"{len(LOGS)} files): {leaks[:5]}")

if not sys.flags.interactive:
    remove_temp(TMP, "key material")
done("test_auth")
