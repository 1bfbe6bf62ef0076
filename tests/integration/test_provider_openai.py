"""test_provider_openai: chat turns served by the openai provider against the fake upstream
(tests/fakes/fake_llm.py) through real nginx and the pool: every failure mode with the status
or SSE event the client sees, retries counted as upstream calls (not timed), nothing stored
for a failed turn, the upstream call abandoned when the client leaves, and HTTPS with a
CA bundle of our own."""
import http.client
import json
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (FakeLLM as Fake, Stack, check, done, is_error_doc,  # noqa: E402
                     remove_temp, temp_dir, wait_until)

def chat(st, sid, message="hi", stream=False):
    body = {"message": message, "session_id": sid}
    if stream:
        body["stream"] = True
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


fake = Fake()
env = {"VALERIE_LLM_PROVIDER": "openai", "OPENAI_BASE_URL": f"http://127.0.0.1:{fake.port}/v1",
       "OPENAI_API_KEY": "sk-test", "OPENAI_MODEL": "gpt-test", "OPENAI_MAX_RETRIES": "2",
       "OPENAI_FIRST_TOKEN_TIMEOUT_MS": "1000", "OPENAI_TIMEOUT": "4",
       # failure modes one after another: the breaker is tested in test_provider_resilience
       "OPENAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000"}
try:
    with Stack(workers=2, threads=8, env=env) as st:
        # --- a normal turn, whole and streamed; history reaches the upstream ---
        fake.plan()
        s, h, body = chat(st, "ok-1", "hello there")
        doc = json.loads(body)
        check(s == 200 and doc["reply"] == "echo: hello there" and doc["provider"] == "openai"
              and doc["model"] == "gpt-test" and doc["usage"]["output_tokens"] == 3,
              f"a whole answer: {s} {doc}")
        s, h, body = chat(st, "ok-1", "second")
        req = fake.stats()["requests"][-1]
        check(req["headers"].get("authorization") == "Bearer sk-test", "the key is sent as Bearer")
        msgs = req["body"]["messages"]
        check([m["role"] for m in msgs] == ["user", "assistant", "user"]
              and msgs[0]["content"] == "hello there", f"the history reaches the upstream: {msgs}")
        s, h, body = chat(st, "ok-2", "stream me please", stream=True)
        ev = sse_events(body)
        names = [n for n, _ in ev]
        deltas = "".join(json.loads(d)["text"] for n, d in ev if n == "delta")
        check(s == 200 and names[-1] == "done" and names.count("delta") >= 3
              and deltas == "echo: stream me please"
              and json.loads(ev[-1][1])["reply"] == deltas, f"a streamed answer: {names}")
        check(fake.stats()["requests"][-1]["body"].get("stream_options") == {"include_usage": True},
              "streams ask for usage")

        # --- retries: counted as upstream calls ---
        fake.plan({"mode": "fail-429", "retry_after": 0}, {"mode": "fail-500"}, {"mode": "ok"})
        s, h, body = chat(st, "retry-1")
        check(s == 200 and fake.stats()["calls"] == 3, f"429 then 500 then ok: 200 after 3 calls "
              f"({s}, {fake.stats()['calls']})")
        fake.plan(*[{"mode": "fail-429", "retry_after": 0}] * 3)
        s, h, body = chat(st, "retry-2")
        doc = json.loads(body)
        check(s == 502 and is_error_doc(doc, "provider_error") and "429" in doc["error"]["message"]
              and fake.stats()["calls"] == 3, f"429 three times: 502 after 1 + 2 retries: {s} {doc}")
        check(turns(st, "retry-2") == 0, "a failed turn is not stored")
        # Retry-After as an HTTP-date (RFC 9110; proxies send it): one past the turn's
        # deadline (VALERIE_TURN_TIMEOUT, 120 s) means no retry, at once
        fake.plan(*[{"mode": "fail-429", "retry_after_date": 3600}] * 3)
        s, h, body = chat(st, "retry-date")
        check(s == 502 and fake.stats()["calls"] == 1,
              f"429 with a Retry-After date an hour away: not retried: {s} after "
              f"{fake.stats()['calls']} calls")
        # the two older date forms RFC 9110 has recipients read, and a date years away
        for form, ahead in (("rfc850", 3600), ("asctime", 3600), ("imf", 3000 * 86400)):
            fake.plan(*[{"mode": "fail-429", "retry_after_date": ahead,
                         "retry_after_form": form}] * 3)
            s, h, body = chat(st, f"retry-date-{form}")
            check(s == 502 and fake.stats()["calls"] == 1,
                  f"429 with a Retry-After {form} date {ahead} s away: not retried: {s} after "
                  f"{fake.stats()['calls']} calls")
        fake.plan({"mode": "fail-429", "retry_after_date": 0, "retry_after_form": "asctime"},
                  {"mode": "ok"})
        s, h, body = chat(st, "retry-date-now")
        check(s == 200 and fake.stats()["calls"] == 2,
              f"429 with a Retry-After date of now: retried: {s} after {fake.stats()['calls']} calls")
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
        fake.plan(*[{"mode": "slow-first-byte", "delay_ms": 5000}] * 3)
        s, h, body = chat(st, "slow-1")
        doc = json.loads(body)
        check(s == 504 and is_error_doc(doc, "provider_timeout") and fake.stats()["calls"] == 3,
              f"no first byte within OPENAI_FIRST_TOKEN_TIMEOUT_MS: 504 after 3 calls: {s} {doc}")
        # NOTE: libcurl itself re-sends once when a reused connection closes unanswered.
        fake.plan(*[{"mode": "empty-reply"}] * 10)
        s, h, body = chat(st, "empty-1")
        check(s == 502 and is_error_doc(json.loads(body), "provider_error"),
              f"an upstream that closes without answering: 502: {s} {body[:120]!r}")

        # --- an error chunk before any text reached the client: retried when retrying may
        # help (server_error), not when the request itself was refused ---
        fake.plan({"mode": "error-event-mid-stream", "after_chunks": 0}, {"mode": "ok"})
        s, h, body = chat(st, "stream-early", "one two three four", stream=True)
        names = [n for n, _ in sse_events(body)]
        check(s == 200 and names[-1:] == ["done"] and "error" not in names
              and fake.stats()["calls"] == 2,
              f"a server_error chunk before the first delta: retried, then a clean stream: {names} "
              f"after {fake.stats()['calls']} calls")
        fake.plan(*[{"mode": "error-event-mid-stream", "after_chunks": 0,
                     "error_type": "invalid_request_error"}] * 3)
        s, h, body = chat(st, "stream-early-refused", "one two three four", stream=True)
        ev = sse_events(body)
        names = [n for n, _ in ev]
        err = json.loads(ev[-1][1]).get("error", {}) if ev else {}
        check(s == 200 and names == ["error"] and err.get("code") == "provider_rejected_request"
              and fake.stats()["calls"] == 1,
              f"an invalid_request_error chunk before the first delta: not retried, an error event "
              f"saying the request was refused: {names} {err} after {fake.stats()['calls']} calls")

        # --- streams that break after they started: an error event, never a clean end ---
        for mode, what in (("cut-mid-stream", "cut"), ("error-event-mid-stream", "error chunk"),
                           ("stall-mid-stream", "stall past OPENAI_TIMEOUT")):
            fake.plan({"mode": mode, "after_chunks": 2, "stall_ms": 20000})
            s, h, body = chat(st, f"stream-{mode}", "one two three four", stream=True)
            ev = sse_events(body)
            names = [n for n, _ in ev]
            check(s == 200 and "delta" in names and names[-1] == "error" and "done" not in names
                  and fake.stats()["calls"] == 1,
                  f"stream {what}: deltas then an error event, not retried: {names}")
            check(turns(st, f"stream-{mode}") == 0, f"stream {what}: nothing stored")
        # a stream whose clean end ([DONE]) came whole, then the connection dropped
        # without HTTP's last chunk: the answer is complete, so the client gets it
        fake.plan({"mode": "cut-after-end"})
        s, h, body = chat(st, "stream-cut-after-end", "one two three four", stream=True)
        names = [n for n, _ in sse_events(body)]
        check(s == 200 and names[-1:] == ["done"] and "error" not in names
              and turns(st, "stream-cut-after-end") == 1,
              f"a stream cut after [DONE]: done, and the turn is stored: {names}")

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
    with Stack(workers=1, threads=2, env=dict(env, OPENAI_API_KEY="sk-wrong")) as st:
        fake.plan()
        s, h, body = chat(st, "key-1")
        doc = json.loads(body)
        check(s == 502 and "401" in doc["error"]["message"] and fake.stats()["calls"] == 1,
              f"wrong key: 502 naming the upstream's 401: {doc}")
        check("sk-wrong" not in st.worker_log(), "the key is not logged")
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
    tenv = dict(env, OPENAI_BASE_URL=f"https://127.0.0.1:{tls_fake.port}/v1")
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

# --- an upstream that escapes non-ASCII (Python's json.dumps default): characters beyond
# the BMP come as surrogate pairs, U+1D800 and U+2D801 among them, which json-c 0.16
# alone would turn into U+FFFD (app/jsoncheck.h) ---
ascii_fake = Fake(extra=("--ascii-json",))
try:
    text = "signs \U0001d800 \U0002d801 \U0001f600 caf\u00e9"
    c = http.client.HTTPConnection("127.0.0.1", ascii_fake.port, timeout=10)
    c.request("POST", "/v1/chat/completions", body=json.dumps(
        {"model": "gpt-test", "messages": [{"role": "user", "content": text}]}),
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-test"})
    raw = c.getresponse().read()
    c.close()
    check(b"\\ud836\\udc00" in raw and b"\\u00e9" in raw,
          f"the fake escapes its answers as the test needs: {raw[:300]!r}")
    for prov in ("openai", "anthropic"):
        aenv = dict(env, VALERIE_LLM_PROVIDER=prov, ANTHROPIC_API_KEY="ak-test",
                    ANTHROPIC_MODEL="claude-test",
                    OPENAI_BASE_URL=f"http://127.0.0.1:{ascii_fake.port}/v1",
                    ANTHROPIC_BASE_URL=f"http://127.0.0.1:{ascii_fake.port}")
        with Stack(workers=1, threads=2, env=aenv) as st:
            s, h, body = chat(st, f"ascii-{prov}", text)
            doc = json.loads(body) if s == 200 else {}
            check(doc.get("reply") == "echo: " + text,
                  f"[{prov}] an escaped answer beyond the BMP, whole: {s} {doc.get('reply')!r}")
            s, h, body = chat(st, f"ascii-{prov}-s", text, stream=True)
            ev = sse_events(body)
            deltas = "".join(json.loads(d)["text"] for n, d in ev if n == "delta")
            check(s == 200 and deltas == "echo: " + text,
                  f"[{prov}] ... and streamed: {s} {deltas!r}")
finally:
    ascii_fake.stop()

done("test_provider_openai")
