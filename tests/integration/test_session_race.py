"""test_session_race: two callers make one session id at once. A turn runs for seconds
between its load (which checks who owns the session) and its append, so both find no
session, and the one whose append comes second used to have its turn stored in the other
caller's session (owned by the other, read by the other). The store now refuses it: that
turn answers 404 `session_not_found` (a stream: an `error` event), nothing of it is
stored, and the session holds only its owner's turns; an admin's turn in someone's
session still lands there. On each store (LMDB, Redis)."""
import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (TEST_STORES, RedisServer, SseStream, Stack, check, done,  # noqa: E402
                     is_error_doc, post_chat, store_env)

SECRET = secrets.token_hex(32)
DELAY_MS = 1500   # every turn's provider time: the window between load and append


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def bearer(sub, role="user"):
    now = int(time.time())
    head = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64u(json.dumps({"sub": sub, "role": role, "iat": now, "exp": now + 600}).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return {"Authorization": f"Bearer {head}.{body}.{b64u(sig)}"}


def race(st, sid, first, second, stream_second=False):
    """`first` posts, then `second` 0.4 s later, both to the new session `sid`; returns
    their results (status, doc or events)."""
    got = {}

    def one(who, headers, stream):
        body = {"message": f"from {who}", "session_id": sid}
        if stream:
            sse = SseStream(st, dict(body, stream=True), headers=headers, timeout=60)
            got[who] = (sse.status, sse.read_all())
            sse.close()
        else:
            s, _, doc = post_chat(st, body, headers=headers, timeout=60)
            got[who] = (s, doc)

    a = threading.Thread(target=one, args=(first[0], first[1], False))
    b = threading.Thread(target=one, args=(second[0], second[1], stream_second))
    a.start()
    time.sleep(0.4)
    b.start()
    a.join(60)
    b.join(60)
    return got


def run(kind, redis=None):
    L = kind
    env = store_env(kind, redis)
    env.update({"VALERIE_AUTH": "jwt", "JWT_SECRET_KEY": SECRET, "JWT_ALGORITHM": "HS256",
                "VALERIE_OFFLINE_DELAY_MS": str(DELAY_MS)})
    alice, bob, admin = bearer("alice"), bearer("bob"), bearer("ops", "admin")
    with Stack(workers=2, threads=4, env=env) as st:
        got = race(st, "race-1", ("alice", alice), ("bob", bob))
        s_a, doc_a = got.get("alice", (None, None))
        s_b, doc_b = got.get("bob", (None, None))
        check(s_a == 200 and doc_a.get("turn") == 1, f"{L}: alice's turn makes the session: "
              f"{s_a} {doc_a}")
        check(s_b == 404 and is_error_doc(doc_b, "session_not_found"),
              f"{L}: bob's turn, which found no session at its start, is refused: 404 "
              f"session_not_found ({s_b} {doc_b})")
        s, _, doc = st.json("GET", "/api/v1/sessions/race-1", headers=alice)
        contents = [m.get("content", "") for m in (doc or {}).get("messages", [])]
        check(s == 200 and doc.get("owner") == "alice" and len(contents) == 2
              and not any("from bob" in c for c in contents),
              f"{L}: alice's session holds her one turn and nothing of bob's: {s} {contents}")

        # The same through a stream: the refusal comes as the stream's error event.
        got = race(st, "race-2", ("alice", alice), ("bob", bob), stream_second=True)
        s_b, events = got.get("bob", (None, []))
        last = events[-1] if events else {}
        check(s_b == 200 and last.get("event") == "error"
              and "session_not_found" in last.get("data", "")
              and not any(e["event"] == "done" for e in events),
              f"{L}: bob's stream ends with an error event session_not_found: {s_b} "
              f"{[e['event'] for e in events][-3:]}")
        s, _, doc = st.json("GET", "/api/v1/sessions/race-2", headers=admin)
        check(s == 200 and doc.get("owner") == "alice"
              and len(doc.get("messages", [])) == 2,
              f"{L}: race-2 holds only alice's turn: {s} {doc and len(doc.get('messages', []))}")

        # An admin may still add a turn to alice's session; it stays alice's.
        s, _, doc = post_chat(st, {"message": "from ops", "session_id": "race-1"},
                              headers=admin)
        check(s == 200 and doc.get("turn") == 2, f"{L}: an admin's turn in alice's session: "
              f"{s} {doc}")
        s, _, doc = st.json("GET", "/api/v1/sessions/race-1", headers=alice)
        check(s == 200 and doc.get("owner") == "alice" and len(doc.get("messages", [])) == 4,
              f"{L}: alice's session has the admin's turn and is still hers: {s}")


for kind in TEST_STORES:
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer()) if kind == "redis" else None
        run(kind, redis)

done("test_session_race")
