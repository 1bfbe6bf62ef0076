"""test_fastcgi_end: how a worker ends each FastCGI connection. Once it has read a
request's input to nginx's end record it closes at once (no shutdown-and-wait); when
input is left unread it keeps libfcgi's careful close, so the peer never meets a reset.
What a client sees either way: every answer whole, then a clean end of the connection.
Through nginx: a mix of requests (no body, small and large bodies, a body nginx keeps
in a temp file, HEAD, refused JSON, a streamed answer, a client leaving mid-stream)
answered whole, and nginx logs no upstream error. Straight over FastCGI: the end of the
connection after the answer, with the input read, with the end record sent late, and
with input left unread."""
import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (FcgiClient, SseStream, Stack, check, done,  # noqa: E402
                     is_error_doc, post_chat, read_text, wait_until)


def answer_then_end(c, timeout=10):
    """The answer, the socket left open: (status, body, whether END_REQUEST came)."""
    c.s.settimeout(timeout)
    status, _, body = c.response(close=False)
    return status, body, c.ended


def after_end(c, timeout=10):
    """What the peer sees once it has its answer and closes its own sending side."""
    try:
        c.s.shutdown(socket.SHUT_WR)
    except OSError as e:
        return type(e).__name__
    try:
        rest = c.s.recv(65536)
        return rest
    except OSError as e:
        return type(e).__name__
    finally:
        c.s.close()


def send(fn):
    """"sent", or the name of the error sending met."""
    try:
        fn()
        return "sent"
    except OSError as e:
        return type(e).__name__


def as_json(b):
    try:
        return json.loads(b)
    except ValueError:
        return None


with Stack(workers=1, threads=2) as st:
    # --- through nginx ---
    for i in range(20):
        s, h, b = st.request("GET", "/health")
        check(s == 200 and as_json(b) is not None, f"GET /health {i}: 200 JSON: {s} {b[:80]!r}")
        if s != 200:
            break
    s, h, b = st.request("HEAD", "/health")
    check(s == 200 and b == b"", f"HEAD /health: 200, no body: {s} {b[:80]!r}")
    for i in range(10):
        s, h, doc = post_chat(st, {"message": f"small {i}", "session_id": "end-small"})
        check(s == 200 and doc.get("turn") == i + 1, f"small chat {i}: turn {i + 1}: {s} {doc}")
    # ~600 KB: past nginx's client_body_buffer_size, so nginx sends it from a temp file.
    big = "x" * 600000
    s, h, doc = post_chat(st, {"message": big, "session_id": "end-big"})
    check(s in (200, 400, 413) and isinstance(doc, dict),
          f"a 600 KB body gets a whole JSON answer: {s} {str(doc)[:200]}")
    s, h, doc = st.json("GET", "/api/v1/sessions/end-big")
    if s == 200:
        msgs = [m.get("content") for m in doc.get("messages", []) if m.get("role") == "user"]
        check(msgs == [big], f"... and the stored message is the 600 KB sent: "
              f"{[len(m or '') for m in msgs]}")
    s, h, doc = post_chat(st, b'{"message": "no end", "session_id": ')
    check(s == 400 and is_error_doc(doc), f"truncated JSON: 400 JSON: {s} {doc}")
    sse = SseStream(st, {"message": "stream me", "session_id": "end-sse", "stream": True})
    names = [e["event"] for e in sse.read_all()]
    sse.close()
    check(sse.status == 200 and names[-1:] == ["done"],
          f"a streamed answer ends with done: {sse.status} {names[-3:]}")
    sse = SseStream(st, {"message": "leave me", "session_id": "end-gone", "stream": True})
    sse.next_events()
    sse.close()
    for i in range(5):
        s, h, b = st.request("GET", "/health")
        check(s == 200, f"after a client left mid-stream, GET /health {i}: {s}")
    access = lambda: st.access_log().count("\n")  # noqa: E731
    wait_until(lambda: access() >= 40, 10)
    errors = [ln for ln in read_text(os.path.join(st.run_dir, "logs", "error.log")).splitlines()
              if "upstream" in ln and any(f"[{lv}]" in ln for lv in ("error", "crit", "alert"))]
    check(not errors, f"nginx logs no upstream error: {errors[:3]}")

    # --- straight over FastCGI ---
    sock = st.socket_path()
    c = FcgiClient(sock)
    c.begin("GET", "/health")
    c.end_body()
    s, b, ended = answer_then_end(c)
    check(s == 200 and ended and as_json(b) is not None, f"FastCGI GET: the whole answer: {s}")
    check(after_end(c) == b"", "... then a clean end of the connection")

    body = json.dumps({"message": "over fastcgi", "session_id": "end-fcgi"}).encode()
    c = FcgiClient(sock)
    c.begin("POST", "/api/v1/chat", body_len=len(body))
    c.send_body(body)
    c.end_body()
    s, b, ended = answer_then_end(c)
    check(s == 200 and ended and (as_json(b) or {}).get("turn") == 1,
          f"FastCGI chat, body and end record: the whole answer: {s} {b[:120]!r}")
    check(after_end(c) == b"", "... then a clean end of the connection")

    # The body whole, the end record only after the answer has come.
    body = json.dumps({"message": "late end", "session_id": "end-late"}).encode()
    c = FcgiClient(sock)
    c.begin("POST", "/api/v1/chat", body_len=len(body))
    c.send_body(body)
    s, b, ended = answer_then_end(c)
    check(s == 200 and ended, f"FastCGI chat, end record not sent yet: the whole answer: {s}")
    check(send(c.end_body) == "sent", "... the end record can still be sent")
    check(after_end(c) == b"", "... then a clean end of the connection")

    # Input left unread: more body than the worker takes (413), and more sent after.
    c = FcgiClient(sock)
    c.begin("POST", "/api/v1/chat", body_len=10 ** 7)
    c.send_body(b"x" * 60000)
    s, b, ended = answer_then_end(c)
    check(s == 413 and ended and is_error_doc(as_json(b), "payload_too_large"),
          f"FastCGI body over the limit: the whole 413: {s} {b[:120]!r}")
    sent = send(lambda: (c.send_body(b"y" * 60000), c.end_body()))
    check(sent == "sent", f"... the peer can still send what it had: {sent}")
    check(after_end(c) == b"", "... and meets a clean end, not a reset")

    # The pool still answers on both threads.
    for i in range(4):
        s, h, b = st.request("GET", "/health")
        check(s == 200, f"afterwards GET /health {i}: {s}")

done("test_fastcgi_end")
