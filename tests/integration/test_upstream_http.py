"""test_upstream_http: a plain http:// upstream gets the same request, and the client the
same answer, whether Valerie's own HTTP/1.1 client sends it (VALERIE_HTTP_CLIENT=builtin,
the default) or libcurl (VALERIE_HTTP_CLIENT=libcurl). Through real nginx and the pool to
an upstream on raw sockets that records each request as it came and answers in each of the
framings servers use:
- Content-Length, the connection kept: the next turn reuses it;
- an event stream in chunked encoding, written a few bytes at a time (chunk sizes, CRLFs
  and SSE lines cut anywhere);
- HTTP/1.0 with the body running to the close;
- an interim "100 Continue" before the answer;
- a kept connection the upstream closed after answering, without saying so (uvicorn closes
  idle ones after 5 s): the next turn goes out once, on a new connection, and succeeds;
- an HTML error page instead of an HTTP answer: 502, as with libcurl.
The request line, the header set and the body the upstream sees are compared between the
two clients."""
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Stack, check, done, post_chat, stream_completion  # noqa: E402


class RawUpstream:
    """Records (request line, [(lower name, value)], body) per request; answers each with
    the next scripted (pieces, after): the pieces are written one by one, then the
    connection is kept ("keep") or closed ("close")."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.requests, self.script = [], []
        self.connections = 0
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                headers = []
                for ln in lines[1:]:
                    n, _, v = ln.partition(":")
                    headers.append((n.strip().lower(), v.strip()))
                want = int(dict(headers).get("content-length", "0"))
                while len(buf) < want:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                body, buf = buf[:want], buf[want:]
                with self.lock:
                    self.requests.append((lines[0], headers, body))
                    pieces, after = self.script.pop(0) if self.script else (
                        [b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"],
                        "keep")
                for p in pieces:
                    c.sendall(p)
                    if len(pieces) > 1:
                        time.sleep(0.001)
                if after == "close":
                    c.shutdown(socket.SHUT_RDWR)
                    return
        except OSError:
            return
        finally:
            c.close()

    def plan(self, *entries):
        with self.lock:
            self.script.extend(entries)

    def stop(self):
        self.sock.close()


def completion(text):
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}).encode()


def whole(text, extra=b""):
    body = completion(text)
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra +
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def chunked_stream(words, piece=5):
    """An OpenAI event stream in chunked encoding, one event per chunk, cut in `piece`-byte
    writes."""
    events = []
    for w in words:
        events.append(b"data: " + json.dumps({
            "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
            "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}).encode()
            + b"\n\n")
    events.append(b"data: " + json.dumps({
        "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    raw = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n")
    for e in events:
        raw += b"%x;x=y\r\n" % len(e) + e + b"\r\n"
    raw += b"0\r\n\r\n"
    return [raw[i:i + piece] for i in range(0, len(raw), piece)]


ASK = {"model": "up-model", "messages": [{"role": "user", "content": "hello upstream"}]}


def chat(st):
    s, _, doc = post_chat(st, ASK, path="/v1/chat/completions")
    try:
        return s, doc["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return s, doc


seen = {}
for client in ("builtin", "libcurl"):
    up = RawUpstream()
    env = {"VALERIE_LLM_PROVIDER": "openai", "OPENAI_BASE_URL": f"http://127.0.0.1:{up.port}/v1",
           "OPENAI_API_KEY": "sk-test", "OPENAI_MODEL": "up-model", "OPENAI_MAX_RETRIES": "0",
           "OPENAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000", "VALERIE_HTTP_CLIENT": client}
    try:
        # One worker, one thread: every call goes over the same handle and its connections.
        with Stack(workers=1, threads=1, env=env) as st:
            up.plan(([whole("first answer")], "keep"))
            s, text = chat(st)
            check(s == 200 and text == "first answer",
                  f"{client}: a Content-Length answer reaches the client: {s} {text}")
            with up.lock:
                first_conns, first_req = up.connections, up.requests[-1]

            up.plan((chunked_stream(["one ", "two ", "three"]), "keep"))
            s, text, ended = stream_completion(st, ASK)
            check(s == 200 and text == "one two three" and ended,
                  f"{client}: a chunked event stream cut every 5 bytes is read whole: "
                  f"{s} {text!r} {ended}")
            with up.lock:
                check(up.connections == first_conns,
                      f"{client}: the kept connection carried the next turn: "
                      f"{up.connections} connections, {first_conns} before")

            body = completion("to the close")
            up.plan(([b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n", body],
                     "close"))
            s, text = chat(st)
            check(s == 200 and text == "to the close",
                  f"{client}: an HTTP/1.0 body read to the close: {s} {text}")

            up.plan(([b"HTTP/1.1 100 Continue\r\n\r\n", whole("after continue")], "keep"))
            s, text = chat(st)
            check(s == 200 and text == "after continue",
                  f"{client}: an interim 100 Continue is skipped: {s} {text}")

            # Answered, then closed without a word: the next turn must not fail for it.
            up.plan(([whole("then dropped")], "close"), ([whole("on a new one")], "keep"))
            with up.lock:
                before = len(up.requests)
            s1, t1 = chat(st)
            time.sleep(0.2)   # the close reaches Valerie's side of the idle connection
            s2, t2 = chat(st)
            with up.lock:
                sent = len(up.requests) - before
            check(s1 == 200 and t1 == "then dropped" and s2 == 200 and t2 == "on a new one",
                  f"{client}: a kept connection the upstream closed is replaced: "
                  f"{s1} {t1} / {s2} {t2}")
            check(sent == 2, f"{client}: each of the two turns reached the upstream once: {sent}")

            up.plan(([b"<html><body><h1>502 Bad Gateway</h1></body></html>\r\n"], "close"))
            s, doc = chat(st)
            check(s == 502, f"{client}: an HTML page instead of an HTTP answer: 502: {s} {doc}")
            seen[client] = (first_req, up.port)
    finally:
        up.stop()

if len(seen) == 2:
    (line_b, head_b, body_b), port_b = seen["builtin"]
    (line_c, head_c, body_c), port_c = seen["libcurl"]
    check(line_b == line_c, f"the same request line: {line_b!r} / {line_c!r}")
    check(dict(head_b).get("host") == f"127.0.0.1:{port_b}" and
          dict(head_c).get("host") == f"127.0.0.1:{port_c}",
          f"Host names the upstream: {dict(head_b).get('host')} / {dict(head_c).get('host')}")
    check(sorted(h for h in head_b if h[0] != "host") == sorted(h for h in head_c if h[0] != "host"),
          f"the same header lines: {sorted(head_b)} / {sorted(head_c)}")
    check(body_b == body_c, "the same body bytes")
    check(("authorization", "Bearer sk-test") in head_b, f"the key goes out: {head_b}")

done("test_upstream_http")
