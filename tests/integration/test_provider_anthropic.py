"""test_provider_anthropic: chat turns served by the anthropic provider (the Messages API)
against the fake upstream (tests/fakes/fake_llm.py) through real nginx and the pool: the
request as Anthropic expects it (x-api-key, anthropic-version, max_tokens, a top-level
system, alternating roles), whole and streamed answers with cumulative usage, every failure
mode with the status or SSE event the client sees, retries (529 included) counted as upstream
calls (not timed), nothing stored for a failed turn, the upstream call abandoned when the
client leaves, and HTTPS with a CA bundle of our own."""
import json
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (FakeLLM as Fake, Stack, check, done, is_error_doc,  # noqa: E402
                     remove_temp, temp_dir, wait_until)


def chat(st, sid, message="hi", stream=False, config=None):
    body = {"message": message, "session_id": sid}
    if stream:
        body["stream"] = True
    if config is not None:
        body["config"] = config
    return st.request("POST", "/api/v1/chat", body=json.dumps(body).encode(),
                      headers={"Content-Type": "application/json"})


def sse_events(raw):
    out, name, data = [], "message", []
    for line in raw.decode().replace("\r\n", "\n").split("\n"):
        if line == "":
            if data:
                out.append((name, "\n".join(data)))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    return out


def turns(st, sid):
    s, h, doc = st.json("GET", f"/api/v1/sessions/{sid}")
    return doc.get("turns") if s == 200 else 0


def alternates(msgs):
    roles = [m["role"] for m in msgs]
    return bool(roles) and roles[0] == "user" and all(
        a != b for a, b in zip(roles, roles[1:])) and set(roles) <= {"user", "assistant"}


fake = Fake()
env = {"VALERIE_LLM_PROVIDER": "anthropic",
       "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{fake.port}",
       "ANTHROPIC_API_KEY": "ak-test", "ANTHROPIC_MODEL": "claude-test",
       "ANTHROPIC_MAX_RETRIES": "2", "ANTHROPIC_FIRST_TOKEN_TIMEOUT_MS": "1000",
       "ANTHROPIC_TIMEOUT": "4",
       # Many failures in a row on purpose: keep the circuit breaker out of the way.
       "ANTHROPIC_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000"}
try:
    with Stack(workers=2, threads=8, env=env) as st:
        # --- a normal turn, whole and streamed; the request as Anthropic wants it ---
        fake.plan()
        s, h, body = chat(st, "ok-1", "hello there")
        doc = json.loads(body)
        check(s == 200 and doc["reply"] == "echo: hello there" and doc["provider"] == "anthropic"
              and doc["model"] == "claude-test" and doc["usage"] == {"input_tokens": 2,
                                                                     "output_tokens": 3},
              f"a whole answer: {s} {doc}")
        s, h, body = chat(st, "ok-1", "second")
        req = fake.stats()["requests"][-1]
        hd, b = req["headers"], req["body"]
        check(s == 200 and req["path"] == "/v1/messages", f"POST /v1/messages: {s} {req['path']}")
        check(hd.get("x-api-key") == "ak-test" and hd.get("anthropic-version") == "2023-06-01"
              and hd.get("content-type") == "application/json" and "authorization" not in hd,
              f"x-api-key, anthropic-version and content-type are sent, no Bearer: {hd}")
        check(b.get("model") == "claude-test" and b.get("max_tokens") == 4096
              and "stream" not in b and "system" not in b,
              f"model and max_tokens, no system without a persona: { {k: b[k] for k in b if k != 'messages'} }")
        msgs = b["messages"]
        check([m["role"] for m in msgs] == ["user", "assistant", "user"]
              and [m["content"] for m in msgs] == ["hello there", "echo: hello there", "second"],
              f"the history reaches the upstream: {msgs}")
        persona = {"nombre_bot": "Vera", "rol_bot": "guide"}
        chat(st, "sys-1", "first", config=persona)
        s, h, body = chat(st, "sys-1", "again", config=persona)
        doc = json.loads(body)
        b = fake.stats()["requests"][-1]["body"]
        check(s == 200 and b.get("system") == "You are Vera, guide."
              and alternates(b["messages"]) and len(b["messages"]) == 3,
              f"the system prompt goes top-level, messages alternate user/assistant: {s} {b}")
        check(doc["usage"]["input_tokens"] == 4 + 4, f"input tokens count the system prompt: "
              f"{doc['usage']}")
        s, h, body = chat(st, "ok-2", "stream me please", stream=True)
        ev = sse_events(body)
        names = [n for n, _ in ev]
        deltas = "".join(json.loads(d)["text"] for n, d in ev if n == "delta")
        final = json.loads(ev[-1][1]) if ev else {}
        check(s == 200 and names[-1] == "done" and names.count("delta") >= 3
              and deltas == "echo: stream me please" and final["reply"] == deltas,
              f"a streamed answer: {names}")
        check(final.get("usage") == {"input_tokens": 3, "output_tokens": 4},
              f"streamed usage: input from message_start, output the last cumulative count "
              f"(not added to message_start's): {final.get('usage')}")
        b = fake.stats()["requests"][-1]["body"]
        check(b.get("stream") is True and "stream_options" not in b, f"streams ask for a stream: {b}")
        # message_delta's usage is cumulative field by field: a count it leaves out or sends
        # as null (unknown) keeps message_start's, the cached prompt included
        for sid, start, delta in (
                ("usage-cache-1", {"cache_read_input_tokens": 100, "cache_creation_input_tokens": 20},
                 {"input_tokens": 3}),
                ("usage-cache-2", {"cache_read_input_tokens": 100, "cache_creation_input_tokens": 20},
                 {"input_tokens": None, "cache_read_input_tokens": None,
                  "cache_creation_input_tokens": 20})):
            fake.plan({"mode": "ok", "usage_start": start, "usage_delta": delta})
            s, h, body = chat(st, sid, "stream me please", stream=True)
            ev = sse_events(body)
            final = json.loads(ev[-1][1]) if ev and ev[-1][0] == "done" else {}
            check(final.get("usage") == {"input_tokens": 123, "output_tokens": 4},
                  f"{sid}: message_start {start} then message_delta {delta}: 3 + 100 + 20 input "
                  f"tokens: {final.get('usage')}")

        # --- retries: counted as upstream calls ---
        fake.plan({"mode": "fail-429", "retry_after": 0}, {"mode": "fail-500"}, {"mode": "ok"})
        s, h, body = chat(st, "retry-1")
        check(s == 200 and fake.stats()["calls"] == 3, f"429 then 500 then ok: 200 after 3 calls "
              f"({s}, {fake.stats()['calls']})")
        fake.plan({"mode": "fail-529"}, {"mode": "fail-529"}, {"mode": "ok"})
        s, h, body = chat(st, "retry-529")
        check(s == 200 and fake.stats()["calls"] == 3, f"529 overloaded twice then ok: 200 after "
              f"3 calls ({s}, {fake.stats()['calls']})")
        fake.plan(*[{"mode": "fail-529"}] * 3)
        s, h, body = chat(st, "retry-2")
        doc = json.loads(body)
        check(s == 502 and is_error_doc(doc, "provider_error") and "529" in doc["error"]["message"]
              and "overloaded_error" in doc["error"]["message"] and fake.stats()["calls"] == 3,
              f"529 three times: 502 after 1 + 2 retries, with Anthropic's reason: {s} {doc}")
        check(turns(st, "retry-2") == 0, "a failed turn is not stored")
        # an upstream 400 is the request's fault: the client gets a 400 that says so
        fake.plan(*[{"mode": "fail-400"}] * 3)
        s, h, body = chat(st, "mode-fail-400")
        doc = json.loads(body)
        n = fake.stats()["calls"]
        check(s == 400 and is_error_doc(doc, "provider_rejected_request")
              and "400" in doc["error"]["message"] and n == 1,
              f"an upstream 400 is not retried and comes back as a 400: {s} {doc} after {n} calls")
        for mode, calls, what in (("fail-401", 1, "401 is not retried"),
                                  ("html-error", 3, "an HTML error page (502) is retried"),
                                  ("malformed-json", 1, "a 200 with garbage is not retried"),
                                  ("truncated-json", None, "a truncated body"),
                                  ("oversized", 1, "an oversized body is not retried")):
            fake.plan(*[{"mode": mode}] * 3)
            s, h, body = chat(st, f"mode-{mode}")
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            n = fake.stats()["calls"]
            check(s == 502 and is_error_doc(doc, "provider_error")
                  and (calls is None or n == calls), f"{what}: {s} {doc} after {n} calls")
            check(turns(st, f"mode-{mode}") == 0, f"{mode}: nothing stored")
        fake.plan(*[{"mode": "slow-first-byte", "delay_ms": 5000}] * 3)
        s, h, body = chat(st, "slow-1")
        doc = json.loads(body)
        check(s == 504 and is_error_doc(doc, "provider_timeout") and fake.stats()["calls"] == 3,
              f"no first byte within ANTHROPIC_FIRST_TOKEN_TIMEOUT_MS: 504 after 3 calls: {s} {doc}")
        # NOTE: libcurl itself re-sends once when a reused connection closes unanswered.
        fake.plan(*[{"mode": "empty-reply"}] * 10)
        s, h, body = chat(st, "empty-1")
        check(s == 502 and is_error_doc(json.loads(body), "provider_error"),
              f"an upstream that closes without answering: 502: {s} {body[:120]!r}")

        # --- a stream that fails before any text reached the client is retried ---
        fake.plan({"mode": "error-event-mid-stream", "after_chunks": 0}, {"mode": "ok"})
        s, h, body = chat(st, "stream-early", "one two three four", stream=True)
        ev = sse_events(body)
        names = [n for n, _ in ev]
        check(s == 200 and names[-1] == "done" and "error" not in names
              and fake.stats()["calls"] == 2,
              f"an error event before the first delta: retried, then a clean stream: {names} "
              f"after {fake.stats()['calls']} calls")

        # ...but only when the error says retrying may help: a refused request is refused again
        fake.plan(*[{"mode": "error-event-mid-stream", "after_chunks": 0,
                     "error_type": "invalid_request_error"}] * 3)
        s, h, body = chat(st, "stream-early-refused", "one two three four", stream=True)
        ev = sse_events(body)
        names = [n for n, _ in ev]
        err = json.loads(ev[-1][1]).get("error", {}) if ev else {}
        check(s == 200 and names == ["error"] and err.get("code") == "provider_rejected_request"
              and "invalid_request_error" in err.get("message", "")
              and fake.stats()["calls"] == 1,
              f"an invalid_request_error event before the first delta: not retried, an error event "
              f"saying the request was refused: {names} {err} after {fake.stats()['calls']} calls")
        fake.plan({"mode": "error-event-mid-stream", "after_chunks": 0,
                   "error_type": "rate_limit_error"}, {"mode": "ok"})
        s, h, body = chat(st, "stream-early-limited", "one two three four", stream=True)
        names = [n for n, _ in sse_events(body)]
        check(s == 200 and names[-1:] == ["done"] and fake.stats()["calls"] == 2,
              f"a rate_limit_error event before the first delta is retried: {names} after "
              f"{fake.stats()['calls']} calls")

        # --- streams that break after they started: an error event, never a clean end ---
        for mode, what in (("cut-mid-stream", "cut"), ("error-event-mid-stream", "error event"),
                           ("malformed-json", "garbage event"),
                           ("stall-mid-stream", "stall past ANTHROPIC_TIMEOUT")):
            fake.plan({"mode": mode, "after_chunks": 2, "stall_ms": 20000})
            s, h, body = chat(st, f"stream-{mode}", "one two three four", stream=True)
            ev = sse_events(body)
            names = [n for n, _ in ev]
            check(s == 200 and "delta" in names and names[-1] == "error" and "done" not in names
                  and fake.stats()["calls"] == 1,
                  f"stream {what}: deltas then an error event, not retried: {names}")
            if mode == "error-event-mid-stream" and names and names[-1] == "error":
                err = json.loads(ev[-1][1])["error"]
                check("overloaded" in err["message"], f"the error event names overloaded_error: {err}")
            check(turns(st, f"stream-{mode}") == 0, f"stream {what}: nothing stored")
        # a stream whose clean end (message_stop) came whole, then the connection dropped
        # without HTTP's last chunk: the answer is complete, so the client gets it
        fake.plan({"mode": "cut-after-end"})
        s, h, body = chat(st, "stream-cut-after-end", "one two three four", stream=True)
        names = [n for n, _ in sse_events(body)]
        check(s == 200 and names[-1:] == ["done"] and "error" not in names
              and turns(st, "stream-cut-after-end") == 1,
              f"a stream cut after message_stop: done, and the turn is stored: {names}")

        # --- the client leaves: the upstream call is abandoned ---
        fake.plan({"mode": "slow-first-byte", "delay_ms": 20000})
        with socket.create_connection(("127.0.0.1", st.http_port)) as sock:
            b = json.dumps({"message": "x", "session_id": "gone-1"}).encode()
            sock.sendall(b"POST /api/v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nContent-Length: %d\r\n\r\n" % len(b) + b)
            wait_until(lambda: fake.stats()["in_flight"] == 1, 5)
        check(wait_until(lambda: fake.stats()["disconnects"] >= 1, 5),
              f"a client that leaves during a whole call: the upstream sees its connection closed "
              f"({fake.stats()['disconnects']})")
        fake.plan({"mode": "stall-mid-stream", "after_chunks": 2, "stall_ms": 20000})
        with socket.create_connection(("127.0.0.1", st.http_port)) as sock:
            b = json.dumps({"message": "a b c d", "session_id": "gone-2", "stream": True}).encode()
            sock.sendall(b"POST /api/v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nContent-Length: %d\r\n\r\n" % len(b) + b)
            sock.recv(100)
            wait_until(lambda: fake.stats()["in_flight"] == 1, 5)
        check(wait_until(lambda: fake.stats()["disconnects"] >= 1, 5),
              "a client that leaves a stream: the upstream sees its connection closed")
        check(turns(st, "gone-1") == 0 and turns(st, "gone-2") == 0, "abandoned turns are not stored")

    # --- a wrong key: the upstream's 401, not retried ---
    with Stack(workers=1, threads=2, env=dict(env, ANTHROPIC_API_KEY="ak-wrong")) as st:
        fake.plan()
        s, h, body = chat(st, "key-1")
        doc = json.loads(body)
        check(s == 502 and "401" in doc["error"]["message"]
              and "authentication_error" in doc["error"]["message"] and fake.stats()["calls"] == 1,
              f"wrong key: 502 naming the upstream's 401, not retried: {doc}")
        check("ak-wrong" not in st.worker_log(), "the key is not logged")
finally:
    fake.stop()

# --- HTTPS: our own CA bundle is trusted, an unknown certificate is not ---
tmp = temp_dir("valerie-tls-")
crt, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-keyout", key, "-out", crt], check=True, capture_output=True)
tls_fake = Fake(tls=(crt, key))
try:
    tenv = dict(env, ANTHROPIC_BASE_URL=f"https://127.0.0.1:{tls_fake.port}")
    with Stack(workers=1, threads=2, env=dict(tenv, VALERIE_CA_BUNDLE=crt)) as st:
        s, h, body = chat(st, "tls-1", "secure")
        check(s == 200 and json.loads(body)["reply"] == "echo: secure", f"HTTPS upstream: {s}")
        s, h, body = chat(st, "tls-2", "secure stream", stream=True)
        check(s == 200 and sse_events(body)[-1][0] == "done", "HTTPS upstream, streamed")
    with Stack(workers=1, threads=2, env=tenv) as st:
        s, h, body = chat(st, "tls-3")
        doc = json.loads(body)
        check(s == 502 and "certificate" in doc["error"]["message"].lower(),
              f"an untrusted certificate is refused: {doc}")
finally:
    tls_fake.stop()
    remove_temp(tmp, "TLS files")

done("test_provider_anthropic")
