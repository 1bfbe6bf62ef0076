"""test_chat_api: what a client of the chat routes sees, for each session store (lmdb,
and redis with a real redis-server): the answer document of BRIEF 13 with the request
id nginx returned, turn numbers 1, 2, 3 per session, the session document, a reply
that remembers earlier turns, seed 001's body on /api/agent/chat, forgetting a session
(DELETE, /memory/clear), and Idempotency-Key replays."""
import contextlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (TEST_STORES, RedisServer, Stack, answer_problems, check, done,  # noqa: E402
                     is_error_doc, iso_time, post_chat, session_exchanges, store_env)

# Seed 001 ("Verificacion Post-Deployment"): the body of its curl example, as written.
SEED_001_BODY = """{
    "message": "Hola",
    "session_id": "test_deploy",
    "config": {
      "nombre_bot": "Test",
      "id_empresa": 1,
      "rol_bot": "test",
      "tipo_bot": "test",
      "objetivo_principal": "test"
    }
  }"""
# ... and of its verify_deployment.sh.
SEED_001_VERIFY = ('{"message":"test","session_id":"verify","config":{"nombre_bot":"t",'
                   '"id_empresa":1,"rol_bot":"t","tipo_bot":"t","objetivo_principal":"t"}}')


def get_session(st, sid):
    return st.json("GET", f"/api/v1/sessions/{sid}")


def answers(st, kind):
    L = f"[{kind}]"
    # --- three turns of one session, interleaved with another session ---
    sid, other = f"api-{kind}-1", f"api-{kind}-2"
    words = ["pelican-alpha", "walrus-beta", "otter-gamma"]
    replies = []
    for i, w in enumerate(words, 1):
        s, h, doc = post_chat(st, {"message": f"remember {w}", "session_id": sid})
        check(s == 200 and h.get("content-type", "").startswith("application/json"),
              f"{L} turn {i}: 200 JSON: {s} {h.get('content-type')} {doc}")
        p = answer_problems(doc, h, sid)
        check(not p, f"{L} turn {i}: the answer document of BRIEF 13, request_id = X-Request-Id: "
              f"{p or sorted(doc)}")
        check(isinstance(doc, dict) and doc.get("turn") == i, f"{L} turn number {i}: "
              f"{doc.get('turn') if isinstance(doc, dict) else doc}")
        check(isinstance(doc, dict) and doc.get("provider") == "offline"
              and "not a language model" in doc.get("reply", ""),
              f"{L} turn {i}: the offline provider says it is not a language model")
        check(isinstance(doc, dict) and doc.get("usage", {}).get("output_tokens", 0) > 0,
              f"{L} turn {i}: output tokens counted: {doc and doc.get('usage')}")
        replies.append(doc.get("reply", "") if isinstance(doc, dict) else "")
        s, h, d2 = post_chat(st, {"message": f"other {i}", "session_id": other})
        check(s == 200 and isinstance(d2, dict) and d2.get("turn") == i,
              f"{L} the other session numbers its own turns: {i} -> {d2 and d2.get('turn')}")
    check(words[2] in replies[2] and words[0] in replies[2] and words[1] in replies[2],
          f"{L} the third reply refers to the earlier turns (memory): {replies[2][:300]!r}")
    check(words[0] in replies[1], f"{L} the second reply refers to the first turn")
    check(all("other" not in r for r in replies),
          f"{L} no reply mentions the other session's messages")

    # --- the session document ---
    s, h, doc = get_session(st, sid)
    check(s == 200 and isinstance(doc, dict), f"{L} GET session: 200: {s}")
    doc = doc if isinstance(doc, dict) else {}
    check(doc.get("session_id") == sid and doc.get("owner") == "anonymous",
          f"{L} session_id and owner \"anonymous\": {doc.get('session_id')} {doc.get('owner')}")
    c, u = iso_time(doc.get("created_at")), iso_time(doc.get("updated_at"))
    check(c is not None and u is not None and c <= u,
          f"{L} created_at <= updated_at, ISO 8601: {doc.get('created_at')} "
          f"{doc.get('updated_at')}")
    turns, p = session_exchanges(doc)
    check(not p and turns == [1, 2, 3], f"{L} turns 1, 2, 3, each a user and an assistant "
          f"message, oldest first: {turns} {p}")
    msgs = doc.get("messages", [])
    users = [m.get("content") for m in msgs if m.get("role") == "user"]
    bots = [m.get("content") for m in msgs if m.get("role") == "assistant"]
    check(users == [f"remember {w}" for w in words], f"{L} the user messages as sent: {users}")
    check(bots == replies, f"{L} the assistant messages are the replies given")
    ts = [iso_time(m.get("ts")) for m in msgs]
    check(all(t is not None for t in ts) and ts == sorted(ts) and c <= ts[0] and ts[-1] <= u + 1,
          f"{L} message ts are ISO 8601 times in order, within created/updated: "
          f"{[m.get('ts') for m in msgs]}")

    # --- seed 001 on /api/agent/chat ---
    s, h, raw = st.request("POST", "/api/agent/chat", body=SEED_001_BODY,
                           headers={"Content-Type": "application/json"})
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    check(s == 200 and isinstance(doc, dict) and isinstance(doc.get("reply"), str)
          and doc["reply"], f"{L} seed 001's body on /api/agent/chat answers with reply: {s} "
          f"{raw[:200]!r}")
    check(not answer_problems(doc, h, "test_deploy") and doc.get("turn") == 1,
          f"{L} ... an answer document: {answer_problems(doc, h, 'test_deploy')}")
    s, h, raw = st.request("POST", "/api/agent/chat", body=SEED_001_VERIFY,
                           headers={"Content-Type": "application/json"})
    check(s == 200 and b"reply" in raw, f"{L} seed 001's verify_deployment.sh check passes: {s}")
    persona = {"nombre_bot": "Quetzalia", "id_empresa": 42, "rol_bot": "concierge",
               "tipo_bot": "ventas", "objetivo_principal": "vender boletos"}
    s, h, doc = post_chat(st, {"message": "hola", "session_id": f"persona-{kind}",
                               "config": persona}, path="/api/agent/chat")
    check(s == 200 and "Quetzalia" in (doc or {}).get("reply", ""),
          f"{L} the persona reaches the provider as the system prompt: {s} "
          f"{(doc or {}).get('reply', '')[:300]!r}")
    s, h, doc = post_chat(st, {"message": "hola", "session_id": f"persona-{kind}",
                               "config": dict(persona, id_empresa="42")})
    check(s == 200 and doc.get("turn") == 2,
          f"{L} id_empresa as a string too, on /api/v1/chat: {s} {doc}")

    # --- characters beyond the BMP, as Python's json.dumps escapes them (surrogate
    # pairs); U+1D800 and U+2D801 are the ones json-c 0.16 alone turns into U+FFFD ---
    text = "signs \U0001d800 \U0002d801 \U0001f600 caf\u00e9"
    usid = f"unicode-{kind}"
    s, h, doc = post_chat(st, {"message": text, "session_id": usid})
    check(s == 200 and text in (doc or {}).get("reply", ""),
          f"{L} escaped astral characters reach the provider as sent: {s} "
          f"{(doc or {}).get('reply', '')[:300]!r}")
    s, h, doc = get_session(st, usid)
    users = [m.get("content") for m in (doc or {}).get("messages", []) if m.get("role") == "user"]
    check(users == [text], f"{L} ... and are stored as sent: {users!r}")

    # --- forgetting a session ---
    s, h, doc = st.json("DELETE", f"/api/v1/sessions/{sid}")
    check(s == 200 and isinstance(doc, dict) and "error" not in doc,
          f"{L} DELETE session: 200: {s} {doc}")
    s, h, doc = get_session(st, sid)
    check(s == 404 and is_error_doc(doc) and h.get("content-type", "").startswith(
        "application/json"), f"{L} GET after DELETE: 404 JSON: {s} {doc}")
    s, h, doc = st.json("DELETE", f"/api/v1/sessions/{sid}")
    check(s == 404 and is_error_doc(doc), f"{L} DELETE again: 404 JSON: {s} {doc}")
    s, h, doc = post_chat(st, {"message": "again", "session_id": sid})
    check(s == 200 and doc.get("turn") == 1 and words[0] not in doc.get("reply", ""),
          f"{L} a deleted session starts again at turn 1 with no memory: {s} {doc}")
    s, h, doc = st.json("POST", f"/memory/clear/{other}")
    check(s == 200 and isinstance(doc, dict) and "error" not in doc,
          f"{L} POST /memory/clear: 200: {s} {doc}")
    s, h, doc = get_session(st, other)
    check(s == 404 and is_error_doc(doc), f"{L} GET after clear: 404 JSON: {s} {doc}")
    s, h, doc = st.json("POST", f"/memory/clear/{other}")
    check(s == 404 and is_error_doc(doc), f"{L} clear again: 404 JSON: {s} {doc}")
    s, h, doc = get_session(st, f"never-{kind}")
    check(s == 404 and is_error_doc(doc), f"{L} unknown session: 404 JSON: {s} {doc}")

    # --- Idempotency-Key ---
    sid = f"idem-{kind}"
    post_chat(st, {"message": "first", "session_id": sid})
    body = {"message": "pay the invoice", "session_id": sid}
    s1, h1, d1 = post_chat(st, body, {"Idempotency-Key": "key-0001"})
    check(s1 == 200 and d1.get("turn") == 2 and h1.get("idempotent-replayed") != "true",
          f"{L} first use of a key: a new turn: {s1} {d1 and d1.get('turn')} "
          f"{h1.get('idempotent-replayed')}")
    s2, h2, d2 = post_chat(st, body, {"Idempotency-Key": "key-0001"})
    check(s2 == 200 and h2.get("idempotent-replayed") == "true",
          f"{L} the same key again: 200 with Idempotent-Replayed: true: {s2} "
          f"{h2.get('idempotent-replayed')}")
    check(isinstance(d2, dict) and isinstance(d1, dict)
          and (d2.get("turn"), d2.get("reply"), d2.get("usage"), d2.get("session_id"))
          == (d1.get("turn"), d1.get("reply"), d1.get("usage"), d1.get("session_id")),
          f"{L} ... the same answer (turn, reply, usage): {d1} {d2}")
    check(not answer_problems(d2, h2, sid), f"{L} ... an answer document with this request's "
          f"id: {answer_problems(d2, h2, sid)}")
    s, h, doc = get_session(st, sid)
    turns, p = session_exchanges(doc)
    check(turns == [1, 2] and not p, f"{L} ... and the session did not grow: {turns} {p}")
    s3, h3, d3 = post_chat(st, body, {"Idempotency-Key": "key-0002"})
    check(s3 == 200 and d3.get("turn") == 3 and h3.get("idempotent-replayed") != "true",
          f"{L} a different key: a new turn 3: {s3} {d3 and d3.get('turn')}")
    s4, h4, d4 = post_chat(st, {"message": "no key", "session_id": sid})
    check(s4 == 200 and d4.get("turn") == 4, f"{L} no key: a new turn 4: {s4} {d4}")
    s5, h5, d5 = post_chat(st, body, {"Idempotency-Key": "key-0001"}, path="/api/agent/chat")
    check(s5 == 200 and d5.get("turn") == 2 and h5.get("idempotent-replayed") == "true",
          f"{L} the first key still replays turn 2 on /api/agent/chat: {s5} {d5}")
    s6, h6, d6 = post_chat(st, {"message": "refund the invoice", "session_id": sid},
                           {"Idempotency-Key": "key-0001"})
    check(s6 == 422 and is_error_doc(d6)
          and d6["error"].get("code") == "idempotency_key_reused"
          and h6.get("idempotent-replayed") != "true",
          f"{L} the same key with a different message: 422 idempotency_key_reused, not "
          f"turn 2's answer: {s6} {d6}")
    s7, h7, d7 = post_chat(st, dict(body, stream=True), {"Idempotency-Key": "key-0001"})
    check(s7 == 200 and h7.get("idempotent-replayed") == "true",
          f"{L} the same message streamed still replays: {s7} {h7}")
    s, h, doc = get_session(st, sid)
    turns, p = session_exchanges(doc)
    check(turns == [1, 2, 3, 4] and not p, f"{L} session turns 1..4: {turns} {p}")

    # --- a page of a long session: the newest turns, then older ones ---
    def page(query):
        s, h, doc = st.json("GET", f"/api/v1/sessions/{sid}?{query}")
        msgs = (doc or {}).get("messages") if isinstance(doc, dict) else None
        got = sorted({m.get("turn") for m in msgs}) if isinstance(msgs, list) else None
        return s, got, doc

    for query, want in (("limit=2", [3, 4]), ("limit=1000", [1, 2, 3, 4]),
                        ("before=3", [1, 2]), ("limit=1&before=4", [3]),
                        ("before=99&limit=2", [3, 4]), ("before=1", []),
                        ("x=1&limit=3", [2, 3, 4]),
                        # names and values percent-decoded, as clients encode a query
                        ("limit=%31", [4]), ("%6Cimit=2", [3, 4]), ("limit=%32&before=%34", [2, 3]),
                        ("limit=1%30%30%30", [1, 2, 3, 4]), ("before=%33&x=%zz", [1, 2]),
                        ("limit=1&limit=%32", [3, 4])):
        s, got, doc = page(query)
        check(s == 200 and got == want and doc.get("turns") == 4
              and doc.get("session_id") == sid,
              f"{L} GET ?{query}: turns {want} of 4, oldest first: {s} {got} {doc and doc.get('turns')}")
    for query in ("limit=0", "limit=1001", "limit=abc", "limit=", "before=0", "before=-1",
                  "limit=+5", "before=99999999999999999999", "limit=%2B5", "limit=%31%30%30%31",
                  "before=%30", "limit=%20%31", "limit=1%00", "limit=%31abc",
                  "limit=abc&limit=%32"):
        s, got, doc = page(query)
        check(s == 400 and is_error_doc(doc) and doc["error"].get("code") == "invalid_query",
              f"{L} GET ?{query}: 400 invalid_query: {s} {doc}")
    for query in ("limit=%zz", "limit=%3", "before=%", "limit=%g1", "before=1%0"):
        s, got, doc = page(query)
        check(s == 400 and is_error_doc(doc) and doc["error"].get("code") == "invalid_query"
              and "escape" in doc["error"]["message"]
              and query.split("=")[0] in doc["error"]["message"],
              f"{L} GET ?{query}: 400 invalid_query naming the parameter and the escape: "
              f"{s} {doc}")


def redis_keys(rs, kind, ttl_max):
    """Redis only: the keys of a session share one hash tag and expire."""
    keys = rs.command("KEYS", "*") or []
    mine = [k for k in keys if "idem-redis" in k]
    tags = {k[k.find("{") + 1:k.find("}", k.find("{"))] for k in mine if "{" in k and "}" in k}
    check(mine and all("{" in k and "}" in k for k in mine) and len(tags) == 1,
          f"[redis] a session's keys share one hash tag (Redis Cluster): {mine} {tags}")
    ttls = [rs.command("TTL", k) for k in mine]
    check(ttls and all(0 < t <= ttl_max for t in ttls),
          f"[redis] a session's keys expire within VALERIE_SESSION_TTL: {ttls}")


for kind in TEST_STORES:
    with contextlib.ExitStack() as es:
        rs = es.enter_context(RedisServer()) if kind == "redis" else None
        env = store_env(kind, rs)
        env["VALERIE_SESSION_TTL"] = "3600"
        st = es.enter_context(Stack(workers=2, threads=4, env=env))
        answers(st, kind)
        if kind == "redis":
            redis_keys(rs, kind, 3600)

done("test_chat_api")
