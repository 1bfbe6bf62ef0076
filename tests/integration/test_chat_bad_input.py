"""test_chat_bad_input: every malformed chat request gets the right 4xx and a JSON error
whose message names the problem, and stores nothing: missing, empty or over-long
message (characters, not bytes), bad session ids (in the body and in the session
routes' paths), invalid JSON, JSON that is not an object, nesting over
VALERIE_JSON_MAX_DEPTH, invalid UTF-8, wrong Content-Type, a body over
VALERIE_MAX_BODY_BYTES, wrong field types, a bad Idempotency-Key. Validation does not
depend on the store: this runs on the default (lmdb)."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Stack, check, done, is_error_doc, post_chat  # noqa: E402

MAX_CHARS = 50
MAX_DEPTH = 5
MAX_BODY = 4096

seq = [0]


def sid():
    """A fresh, valid session id per case: none of them may exist afterwards."""
    seq[0] += 1
    return f"bad-{seq[0]}"


used_sids = []


def expect(st, label, body, status, code=None, words=(), headers=None, path="/api/v1/chat"):
    """POSTs `body` (dict or raw bytes); checks the status, a JSON error document with
    `code`, and that its message contains each of `words` (case-insensitive)."""
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    s, hh, raw = st.request("POST", path, body=data, headers=h)
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    msg = doc["error"]["message"] if is_error_doc(doc) else ""
    ok = (s == status and is_error_doc(doc, code)
          and hh.get("content-type", "").startswith("application/json")
          and all(w.lower() in msg.lower() for w in words))
    check(ok, f"{label}: {status} {code or ''} naming {list(words)}: got {s} {raw[:160]!r}")
    return s, doc


def ok_turn(st, label, body, headers=None):
    s, h, doc = post_chat(st, body, headers)
    check(s == 200 and isinstance(doc, dict) and doc.get("turn") == 1,
          f"{label}: accepted (200, turn 1): {s} {str(doc)[:160]}")


def nested(levels):
    """A body whose deepest value sits `levels` containers deep (the body object is 1)."""
    inner = "1"
    for _ in range(levels - 1):
        inner = f"[{inner}]"
    return (f'{{"message":"deep","session_id":"{sid()}","extra":{inner}}}').encode()


env = {"VALERIE_MAX_MESSAGE_CHARS": str(MAX_CHARS), "VALERIE_JSON_MAX_DEPTH": str(MAX_DEPTH),
       "VALERIE_MAX_BODY_BYTES": str(MAX_BODY)}
with Stack(workers=1, threads=4, env=env) as st:
    pid_before = st.worker_pids()

    # --- message ---
    s = sid()
    used_sids.append(s)
    expect(st, "missing message", {"session_id": s}, 400, None, ["message", "required"])
    expect(st, "message null", {"message": None, "session_id": s}, 400, None, ["message"])
    expect(st, "empty message", {"message": "", "session_id": s}, 400, None, ["message", "empty"])
    expect(st, "whitespace-only message", {"message": " \t\r\n  ", "session_id": s}, 400, None,
           ["message", "empty"])
    expect(st, f"message of {MAX_CHARS + 1} 'é' ({2 * (MAX_CHARS + 1)} bytes)",
           {"message": "é" * (MAX_CHARS + 1), "session_id": s}, 400, None,
           ["message", str(MAX_CHARS)])
    expect(st, f"message of {MAX_CHARS + 1} ASCII characters",
           {"message": "x" * (MAX_CHARS + 1), "session_id": s}, 400, None,
           ["message", str(MAX_CHARS)])
    expect(st, "message holding an escaped NUL",
           b'{"message":"a\\u0000b","session_id":"' + s.encode() + b'"}', 400, None,
           ["message"])
    ok_turn(st, f"message of {MAX_CHARS} 'é' ({2 * MAX_CHARS} bytes)",
            {"message": "é" * MAX_CHARS, "session_id": sid()})
    ok_turn(st, f"message of {MAX_CHARS} emoji ({4 * MAX_CHARS} bytes)",
            {"message": "\U0001F600" * MAX_CHARS, "session_id": sid()})
    ok_turn(st, "message of 1 character", {"message": "?", "session_id": sid()})

    # --- session_id in the body ---
    expect(st, "missing session_id", {"message": "hi"}, 400, None, ["session_id"])
    expect(st, "empty session_id", {"message": "hi", "session_id": ""}, 400, None,
           ["session_id"])
    expect(st, "session_id of 129 characters", {"message": "hi", "session_id": "a" * 129}, 400,
           None, ["session_id"])
    ok_turn(st, "session_id of 128 characters", {"message": "hi", "session_id": "b" * 128})
    ok_turn(st, "session_id using every allowed kind of character",
            {"message": "hi", "session_id": "Az09_.:-x"})
    for bad in ["../etc", "a b", "ü", "a/b", "a\nb", "a%41", "{x}", "a\u0000b", "a\u00a0b"]:
        expect(st, f"session_id {bad!r}", {"message": "hi", "session_id": bad}, 400, None,
               ["session_id"])

    # --- not JSON, not an object, too deep, not UTF-8 ---
    s = sid()
    used_sids.append(s)
    for label, raw in [("truncated JSON", b'{"message":"hi","session_id":"' + s.encode()),
                       ("missing comma", b'{"message":"hi" "session_id":"' + s.encode() + b'"}'),
                       ("trailing garbage",
                        b'{"message":"hi","session_id":"' + s.encode() + b'"} x'),
                       ("single quotes", b"{'message':'hi','session_id':'" + s.encode() + b"'}"),
                       ("trailing comma",
                        b'{"message":"hi","session_id":"' + s.encode() + b'",}'),
                       ("two objects", b'{"message":"hi","session_id":"' + s.encode()
                        + b'"}{"message":"hi","session_id":"' + s.encode() + b'"}'),
                       ("NaN", b'{"message":"hi","session_id":"' + s.encode() + b'","x":NaN}'),
                       ("Infinity",
                        b'{"message":"hi","session_id":"' + s.encode() + b'","x":-Infinity}'),
                       ("a number ending in a dot",
                        b'{"message":"hi","session_id":"' + s.encode() + b'","x":1.}'),
                       ("a raw control character in a string",
                        b'{"message":"a\x01b","session_id":"' + s.encode() + b'"}')]:
        expect(st, f"invalid JSON ({label})", raw, 400, "invalid_json", ["json"])
    expect(st, "empty body", b"", 400, "invalid_json", ["empty"])
    for label, raw in [("an array", b'[{"message":"hi","session_id":"x"}]'),
                       ("a string", b'"hello"'), ("a number", b"42"), ("null", b"null"),
                       ("true", b"true")]:
        expect(st, f"JSON that is {label}", raw, 400, None, ["object"])
    expect(st, f"nesting of {MAX_DEPTH + 1} levels (limit {MAX_DEPTH})", nested(MAX_DEPTH + 1),
           400, None, ["deep", str(MAX_DEPTH)])
    expect(st, "nesting of 1500 levels", b'{"message":"x","session_id":"y","z":'
           + b"[" * 1500 + b"]" * 1500 + b"}", 400, None, ["deep"])
    s, h, doc = post_chat(st, nested(MAX_DEPTH).replace(b"1", b""))
    check(s == 200, f"{MAX_DEPTH} levels of containers, the innermost empty, are accepted: "
          f"{s} {doc}")
    s, h, doc = post_chat(st, nested(MAX_DEPTH))
    check(s == 200, f"{MAX_DEPTH} levels of containers, a number innermost, are accepted "
          f"(a scalar is no level of nesting): {s} {doc}")
    s = sid()
    used_sids.append(s)
    for label, raw in [("a Latin-1 byte", b'{"message":"caf\xe9","session_id":"S"}'),
                       ("a stray continuation byte", b'{"message":"a\x80b","session_id":"S"}'),
                       ("an overlong encoding", b'{"message":"\xc0\xaf","session_id":"S"}'),
                       ("an encoded surrogate", b'{"message":"\xed\xa0\x80","session_id":"S"}'),
                       ("a cut sequence", b'{"message":"\xe2\x82","session_id":"S"}'),
                       ("0xff", b'{"message":"\xff","session_id":"S"}'),
                       ("bad bytes in a key", b'{"message":"hi","session_id":"S","\xfe":1}')]:
        expect(st, f"invalid UTF-8 ({label})", raw.replace(b'"S"', b'"' + s.encode() + b'"'),
               400, None, ["utf-8"])

    # --- Content-Type, size ---
    good = {"message": "hi", "session_id": "ct-" + sid()}
    used_sids.append(good["session_id"])
    for ct in ["text/plain", "application/x-www-form-urlencoded", "application/jsonx",
               "multipart/form-data; boundary=x"]:
        expect(st, f"Content-Type {ct}", good, 415, None, ["application/json"],
               headers={"Content-Type": ct})
    s, h, raw = st.request("POST", "/api/v1/chat", body=json.dumps(good).encode())
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    check(s == 415 and is_error_doc(doc), f"no Content-Type: 415 JSON: {s} {raw[:120]!r}")
    ok_turn(st, "Content-Type application/json; charset=utf-8",
            {"message": "hi", "session_id": sid()},
            headers={"Content-Type": "application/json; charset=utf-8"})
    big = {"message": "x" * 10, "session_id": "big-" + sid(), "pad": "p" * (MAX_BODY + 100)}
    used_sids.append(big["session_id"])
    expect(st, f"body over VALERIE_MAX_BODY_BYTES={MAX_BODY} (nginx answers)", big, 413,
           "payload_too_large", [])

    # --- field types ---
    s = sid()
    used_sids.append(s)
    for label, body, field in [
            ("message: 5", {"message": 5, "session_id": s}, "message"),
            ("message: [\"a\"]", {"message": ["a"], "session_id": s}, "message"),
            ("message: {}", {"message": {}, "session_id": s}, "message"),
            ("message: true", {"message": True, "session_id": s}, "message"),
            ("session_id: 5", {"message": "hi", "session_id": 5}, "session_id"),
            ("stream: \"yes\"", {"message": "hi", "session_id": s, "stream": "yes"}, "stream"),
            ("stream: 1", {"message": "hi", "session_id": s, "stream": 1}, "stream"),
            ("config: []", {"message": "hi", "session_id": s, "config": []}, "config"),
            ("config: \"x\"", {"message": "hi", "session_id": s, "config": "x"}, "config"),
            ("config.nombre_bot: 5",
             {"message": "hi", "session_id": s, "config": {"nombre_bot": 5}}, "nombre_bot"),
            ("config.id_empresa: 1.5",
             {"message": "hi", "session_id": s, "config": {"id_empresa": 1.5}}, "id_empresa"),
            ("config.id_empresa: {}",
             {"message": "hi", "session_id": s, "config": {"id_empresa": {}}}, "id_empresa"),
            # json-c saturates what it cannot hold: 2^64 would read as 2^64-1, another id.
            ("config.id_empresa: 2^64",
             {"message": "hi", "session_id": s, "config": {"id_empresa": 2 ** 64}},
             "id_empresa"),
            ("config.id_empresa: 10^30",
             {"message": "hi", "session_id": s, "config": {"id_empresa": 10 ** 30}},
             "id_empresa"),
            ("config.id_empresa: 2^63",
             {"message": "hi", "session_id": s, "config": {"id_empresa": 2 ** 63}},
             "id_empresa"),
            ("config.id_empresa: -2^63",
             {"message": "hi", "session_id": s, "config": {"id_empresa": -2 ** 63}},
             "id_empresa"),
            ("config.id_empresa: -10^30",
             {"message": "hi", "session_id": s, "config": {"id_empresa": -10 ** 30}},
             "id_empresa"),
            ("config.rol_bot of 3000 characters, over 500",
             {"message": "hi", "session_id": s, "config": {"rol_bot": "r" * 3000}}, "rol_bot")]:
        expect(st, f"wrong field type ({label})", body, 400, None, [field])
        expect(st, f"wrong field type ({label}) on /api/agent/chat", body, 400, None, [field],
               path="/api/agent/chat")

    for n in (2 ** 63 - 1, -(2 ** 63 - 1), 0):
        s_, h_, doc_ = post_chat(st, {"message": "hi", "session_id": sid(),
                                      "config": {"nombre_bot": "T", "id_empresa": n}})
        check(s_ == 200 and f"for company {n}." in doc_.get("reply", ""),
              f"config.id_empresa {n} is accepted and used exactly: {s_} {str(doc_)[:200]}")

    # --- Idempotency-Key ---
    s = sid()
    used_sids.append(s)
    for label, key in [("201 characters", "k" * 201), ("a space inside", "a b"),
                       ("a tab inside", "a\tb"), ("non-ASCII", "cl\u00e9"), ("empty", "")]:
        expect(st, f"Idempotency-Key {label}", {"message": "hi", "session_id": s}, 400, None,
               ["idempotency-key"], headers={"Idempotency-Key": key})
    ok_turn(st, "Idempotency-Key of 200 visible characters",
            {"message": "hi", "session_id": sid()}, headers={"Idempotency-Key": "~" * 200})

    # --- the session routes' {id} ---
    for bad in ["a%20b", "%C3%BC", "a" * 129, "a" * 256, "a" * 257, "a" * 300, "a" * 4000,
                "%7Bx%7D", "a;b", "a,b", "a%0Ab", "a%09b", "a+b",
                "a%25b", "a%C2%A0b"]:
        for method, path in [("GET", "/api/v1/sessions/"), ("DELETE", "/api/v1/sessions/"),
                             ("POST", "/memory/clear/")]:
            st_, h, doc = st.json(method, path + bad)
            check(st_ == 400 and is_error_doc(doc, "invalid_session_id") and "session id" in
                  doc["error"]["message"].lower(),
                  f"{method} {path}{bad[:20]}{'...' if len(bad) > 20 else ''} "
                  f"({len(bad)} characters): 400 naming the session id: {st_} {doc}")
    # A slash makes it another path (nginx decodes and normalises it), a NUL nginx
    # refuses itself: JSON errors all the same, and nothing reaches a session.
    for bad in ["..%2Fetc", "a%2Fb", "..%2F..%2Fetc%2Fpasswd"]:
        for method, path in [("GET", "/api/v1/sessions/"), ("DELETE", "/api/v1/sessions/"),
                             ("POST", "/memory/clear/")]:
            st_, h, doc = st.json(method, path + bad)
            check((st_ == 400 and is_error_doc(doc, "invalid_session_id"))
                  or (st_ == 404 and is_error_doc(doc, "not_found")),
                  f"{method} {path}{bad}: 400 invalid_session_id or 404 no such route: "
                  f"{st_} {doc}")
    for method, path in [("GET", "/api/v1/sessions/"), ("DELETE", "/api/v1/sessions/"),
                         ("POST", "/memory/clear/")]:
        st_, h, doc = st.json(method, path + "a%00b")
        check(st_ == 400 and is_error_doc(doc), f"{method} {path}a%00b: 400 JSON: {st_} {doc}")
    for method, path in [("GET", "/api/v1/sessions/"), ("DELETE", "/api/v1/sessions/"),
                         ("POST", "/memory/clear/")]:
        st_, h, doc = st.json(method, path + "no-such-session")
        check(st_ == 404 and is_error_doc(doc, "session_not_found"),
              f"{method} {path}<unknown>: 404 session_not_found: {st_} {doc}")
    st_, h, doc = st.json("GET", "/api/v1/chat")
    check(st_ == 405 and is_error_doc(doc), f"GET /api/v1/chat: 405 JSON: {st_} {doc}")

    # --- nothing of the above was stored; the worker never fell over ---
    stored = []
    for s in used_sids:
        st_, h, doc = st.json("GET", f"/api/v1/sessions/{s}")
        if st_ != 404:
            stored.append((s, st_))
    check(not stored, f"refused requests stored nothing: {stored}")
    check(st.worker_pids() == pid_before, f"the worker never restarted: {pid_before} -> "
          f"{st.worker_pids()}")

done("test_chat_bad_input")
