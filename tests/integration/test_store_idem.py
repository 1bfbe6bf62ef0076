"""test_store_idem: an Idempotency-Key works for every caller the API accepts, on each
store. The chat layer scopes a key to its caller (principal \\x1f key), so the store
sees up to a 128-character JWT sub plus a 200-character header: a turn sent with the
longest of both is answered 200 and stored, and sent again it is replayed, not run
twice (before the fix the Redis store refused such a key after the provider had
answered: a 500 and a turn that was never stored, at every retry).

On Redis, a session whose turn list is gone while its meta stays (evicted under a
volatile-* maxmemory-policy) is no session, and its next turn starts it afresh: a retry
with the same Idempotency-Key is that next turn too, never a 503 that asks for the same
retry again until the key expires (a day)."""
import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (TEST_STORES, RedisServer, Stack, check, done, post_chat,  # noqa: E402
                     store_env)

SECRET = secrets.token_hex(32)


def b64u_json(d):
    raw = json.dumps(d, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def redis_cmd(port, *args):
    """One command to the Redis at `port`; its reply's first line (enough for DEL)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        raw = [a.encode() for a in args]
        c.sendall(b"*%d\r\n" % len(raw) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a)
                                                   for a in raw))
        return c.makefile("rb").readline().strip()


def token(sub):
    now = int(time.time())
    head = b64u_json({"alg": "HS256", "typ": "JWT"})
    body = b64u_json({"sub": sub, "role": "user", "iat": now, "exp": now + 600})
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


for kind in TEST_STORES:
    L = f"[{kind}]"
    with contextlib.ExitStack() as es:
        rs = es.enter_context(RedisServer()) if kind == "redis" else None
        env = dict(store_env(kind, rs), VALERIE_AUTH="jwt", JWT_SECRET_KEY=SECRET,
                   JWT_ALGORITHM="HS256")
        st = es.enter_context(Stack(workers=1, threads=2, env=env))
        sub = "u" * 128                       # the longest sub a token may carry
        key = "k" * 200                       # the longest Idempotency-Key the API takes
        sid = "idem-" + kind + "-" + "s" * 100
        hdrs = {"Authorization": "Bearer " + token(sub), "Idempotency-Key": key}
        body = {"message": "book one room", "session_id": sid}

        s, h, doc = post_chat(st, body, headers=hdrs)
        check(s == 200 and doc and doc.get("turn") == 1,
              f"{L} longest sub and Idempotency-Key: 200, turn 1 ({s} {doc})")
        s, h, again = post_chat(st, body, headers=hdrs)
        check(s == 200 and again and again.get("turn") == 1
              and h.get("idempotent-replayed") == "true"
              and again.get("reply") == (doc or {}).get("reply"),
              f"{L} the same request again is replayed, not run twice ({s} "
              f"{h.get('idempotent-replayed')} {again and again.get('turn')})")
        s, h, sess = st.json("GET", f"/api/v1/sessions/{sid}",
                             headers={"Authorization": hdrs["Authorization"]})
        turns = sorted({m.get("turn") for m in (sess or {}).get("messages", [])})
        check(s == 200 and turns == [1] and (sess or {}).get("owner") == sub,
              f"{L} the session holds the one turn, owned by the caller ({s} {turns})")

        if kind == "redis":
            # The turn list gone, the meta and the idempotency keys left: the retry with
            # the same key starts the session afresh (turn 1, run, not replayed). It was
            # a 503 "retry with the same Idempotency-Key" at every retry: the key was
            # found, its turn was not.
            check(redis_cmd(rs.port, "DEL", "valerie:{%s}:turns" % sid) == b":1",
                  f"{L} the session's turn list deleted")
            s, h, doc = post_chat(st, body, headers=hdrs)
            check(s == 200 and doc and doc.get("turn") == 1
                  and h.get("idempotent-replayed") != "true",
                  f"{L} a retry whose session lost its turns: run afresh as turn 1 ({s} "
                  f"{h.get('idempotent-replayed')} {doc})")
            s, h, again = post_chat(st, body, headers=hdrs)
            check(s == 200 and again and again.get("turn") == 1
                  and h.get("idempotent-replayed") == "true",
                  f"{L} ... and that turn is replayed for the key again ({s} "
                  f"{h.get('idempotent-replayed')} {again and again.get('turn')})")

done("test_store_idem")
