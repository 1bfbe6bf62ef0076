"""test_valgrind: the request path leaks nothing. One worker runs under valgrind
(memcheck, leak check on) behind spawn-fcgi; every route and every error path is
exercised over FastCGI (and the metrics port over HTTP), clients leave mid-request,
then SIGTERM; valgrind must report no error and no leak. Skipped (exit 77) in a
sanitizer build, which valgrind cannot run."""
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (BIN, FakeLLM, FcgiClient, check, done, fcgi_get, free_port,  # noqa: E402
                     remove_temp, temp_dir, wait_until)

if os.environ.get("VALERIE_SANITIZERS") == "yes":
    print("SKIP: sanitizer build; valgrind cannot run it")
    sys.exit(77)
if not shutil.which("valgrind"):
    print("FAIL: valgrind is not installed (apt-get install valgrind)")
    sys.exit(1)

silent = []  # metrics-port clients that never send a byte, closed after SIGTERM


def metrics_port_requests(port):
    """Every answer of the metrics port, and clients that leave it early or stay silent
    (still connected at SIGTERM)."""
    for method, path, want in (("GET", "/metrics", 200), ("HEAD", "/metrics", 200),
                               ("GET", "/health/live", 200), ("GET", "/nope", 404),
                               ("POST", "/metrics", 405), ("GET", "/" + "m" * 3000, 404)):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request(method, path, body=b"{}" if method == "POST" else None)
        r = c.getresponse()
        r.read()
        c.close()
        check(r.status == want, f"metrics port: {method} {path[:20]}: {r.status}")
    for data in (b"GET /metrics HTTP/1.1\r\n", b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"junk\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port)) as sk:
            sk.sendall(data)  # and leave without reading
    silent.append(socket.create_connection(("127.0.0.1", port)))


def scenario(label, extra_env, failing=False, metrics_port=None):
    """One worker under valgrind through every route; the provider as extra_env says.
    With metrics_port, the worker also serves its metrics port, exercised too."""
    def answered(s):
        return s == 200 or (failing and s in (502, 504))

    tmp = temp_dir("valerie-vg-")
    sock = os.path.join(tmp, "w.sock")
    vlog = os.path.join(tmp, "valgrind.log")
    env = dict(os.environ, VALERIE_THREADS="3", LOG_LEVEL="debug", VALERIE_SHUTDOWN_TIMEOUT="60",
               RATE_LIMIT_REQUESTS_PER_MINUTE="1000000", RATE_LIMIT_BURST="1000000",
               VALERIE_DATA_DIR=os.path.join(tmp, "data"),
               VALERIE_METRICS_PORT=str(metrics_port or 0), **extra_env)
    spawn = os.environ.get("SPAWN_FCGI", "spawn-fcgi")
    proc = subprocess.Popen(
        [spawn, "-n", "-s", sock, "--", shutil.which("valgrind"), "--quiet", "--leak-check=full",
         "--show-leak-kinds=definite,indirect,possible", "--errors-for-leak-kinds=definite,indirect,possible",
         "--error-exitcode=99", f"--log-file={vlog}", BIN],
        env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "worker.log"), "w"))
    try:
        up = wait_until(lambda: os.path.exists(sock) and "worker ready" in
                        open(os.path.join(tmp, "worker.log")).read(), 60, 0.2)
        check(up, "worker under valgrind came up")
        for path in ("/", "/health", "/health/live", "/health/ready", "/config", "/nope",
                     "/health/", "//x", "/" + "p" * 5000):
            s, h, b = fcgi_get(sock, path)
            check(s is not None, f"GET {path[:30]} answered {s}")
        for method in ("HEAD", "PUT", "DELETE", "get"):
            s, h, b = fcgi_get(sock, "/health", method=method)
            check(s is not None, f"{method} /health answered {s}")
        for body in (b"{}", b"x" * 50000):
            c = FcgiClient(sock)
            c.begin("POST", "/health", body_len=len(body))
            c.send_body(body)
            c.end_body()
            s, _, _ = c.response()
            check(s == 405, f"POST with a {len(body)}-byte body: {s}")
        c = FcgiClient(sock)
        c.begin("POST", "/health", body_len=10 ** 9)
        c.end_body()
        check(c.response()[0] == 413, "oversized body: 413")
        c = FcgiClient(sock)
        c.begin("POST", "/health", extra={"CONTENT_LENGTH": "x"})
        c.end_body()
        check(c.response()[0] == 400, "bad length: 400")
        many = {f"HTTP_X_H{i}": "v" for i in range(80)}
        c = FcgiClient(sock)
        c.begin("GET", "/health", extra=many)
        c.end_body()
        check(c.response()[0] == 431, "too many headers: 431")
        def post(path, body, extra=None):
            c = FcgiClient(sock)
            c.begin("POST", path, body_len=len(body),
                    extra=dict({"CONTENT_TYPE": "application/json"}, **(extra or {})))
            c.send_body(body)
            c.end_body()
            return c.response()

        # The chat path: turns, a stream, idempotent replay, sessions, bad input.
        for i in range(3):
            s, _, b = post("/api/v1/chat", b'{"message":"hello %d","session_id":"vg-1"}' % i)
            check(answered(s), f"{label}: chat turn {i + 1}: {s}")
        s, _, b = post("/api/v1/chat", b'{"message":"s","session_id":"vg-2","stream":true}')
        check(s == 200 and (b"event: done" in b or (failing and b"event: error" in b)),
              f"{label}: streamed turn: {s}")
        for _ in range(2):
            s, _, b = post("/api/v1/chat", b'{"message":"pay","session_id":"vg-3"}',
                           {"HTTP_IDEMPOTENCY_KEY": "k1"})
            check(answered(s), f"{label}: idempotent turn: {s}")
        s, _, b = post("/api/agent/chat", b'{"message":"Hola","session_id":"vg-4","config":'
                       b'{"nombre_bot":"T","id_empresa":1}}')
        check(answered(s), f"{label}: agent chat: {s}")
        # The business context (when the scenario sets an endpoint): from the cache now,
        # and a company id cached under its SHA-256.
        for cfg in (b'{"nombre_bot":"T","id_empresa":1}',
                    b'{"nombre_bot":"T","id_empresa":"empresa \xc3\xb1 / 2"}'):
            s, _, b = post("/api/agent/chat", b'{"message":"Hola","session_id":"vg-4",'
                           b'"config":' + cfg + b'}')
            check(answered(s), f"{label}: agent chat, business context again: {s}")
        for body in (b'{"message":', b'[1]', b'{"message":"x","session_id":"../x"}',
                     b'{"message":"\xff","session_id":"a"}', b'{"a":' * 40 + b'1' + b'}' * 40):
            s, _, b = post("/api/v1/chat", body)
            check(s == 400, f"bad chat body {body[:20]!r}: {s}")
        # Tool calls and their results, whole and streamed, kept in a session; bad tools.
        tools = (b'"tools":[{"type":"function","function":{"name":"get_weather",'
                 b'"parameters":{"type":"object"}}}],"temperature":0.5,"stop":"X"')
        call = b'{"role":"user","content":"call get_weather {\\"city\\":\\"Oslo\\"}"}'
        for stream in (b"false", b"true"):
            s, _, b = post("/v1/chat/completions", b'{"messages":[' + call + b'],' + tools +
                           b',"stream":' + stream + b'}', {"HTTP_X_SESSION_ID": "vg-tools"})
            check(answered(s), f"{label}: tool call (stream {stream.decode()}): {s}")
        s, _, b = post("/v1/chat/completions", b'{"messages":[' + call + b',{"role":"assistant",'
                       b'"content":null,"tool_calls":[{"id":"c1","type":"function","function":'
                       b'{"name":"get_weather","arguments":"{}"}}]},{"role":"tool",'
                       b'"tool_call_id":"c1","content":"snow"}],' + tools + b'}',
                       {"HTTP_X_SESSION_ID": "vg-tools"})
        check(answered(s), f"{label}: tool result: {s}")
        s, _, b = post("/v1/chat/completions", b'{"messages":[{"role":"user","content":"x"}],'
                       b'"tools":[{"type":"function","function":{"name":"a b"}}]}')
        check(s == 400, f"{label}: bad tool name: {s}")
        # Images: parts kept in a session and sent again with its history; a bad one.
        img = (b'{"role":"user","content":[{"type":"text","text":"see"},{"type":"image_url",'
               b'"image_url":{"url":"data:image/png;base64,iVBORw==","detail":"low"}},'
               b'{"type":"image_url","image_url":{"url":"https://x.example/a.png"}}]}')
        for stream in (b"false", b"true"):
            s, _, b = post("/v1/chat/completions", b'{"messages":[' + img + b'],"stream":' +
                           stream + b'}', {"HTTP_X_SESSION_ID": "vg-img"})
            check(answered(s), f"{label}: image turn (stream {stream.decode()}): {s}")
        s, _, b = post("/v1/chat/completions", b'{"messages":[{"role":"user","content":[{"type":'
                       b'"image_url","image_url":{"url":"data:image/png;base64,@@"}}]}]}')
        check(s == 400, f"{label}: bad image: {s}")
        # A PDF (a document block for Anthropic), audio (refused by Anthropic), a bad file.
        pdf = (b'{"role":"user","content":[{"type":"text","text":"read"},{"type":"file",'
               b'"file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,JVBE"}}]}')
        s, _, b = post("/v1/chat/completions", b'{"messages":[' + pdf + b']}',
                       {"HTTP_X_SESSION_ID": "vg-file"})
        check(answered(s), f"{label}: file turn: {s}")
        s, _, b = post("/v1/chat/completions", b'{"messages":[{"role":"user","content":[{"type":'
                       b'"input_audio","input_audio":{"data":"UklG","format":"wav"}}]}]}')
        check(answered(s) or (s == 400 and b"audio" in b), f"{label}: audio turn: {s}")
        s, _, b = post("/v1/chat/completions", b'{"messages":[{"role":"user","content":[{"type":'
                       b'"file","file":{"file_data":"data:application/pdf;base64,JV","file_id"'
                       b':"f"}}]}]}')
        check(s == 400, f"{label}: bad file: {s}")
        s, _, b = fcgi_get(sock, "/api/v1/sessions/vg-1")
        check(s == 200, f"session read: {s}")
        s, _, b = fcgi_get(sock, "/api/v1/sessions/vg-1", method="DELETE")
        check(s == 200, f"session delete: {s}")
        s, _, b = fcgi_get(sock, "/health/detailed")
        check(s == 200, f"detailed health: {s}")
        c = FcgiClient(sock)  # a stream whose client leaves
        c.begin("POST", "/api/v1/chat", body_len=48, extra={"CONTENT_TYPE": "application/json"})
        c.send_body(b'{"message":"x","session_id":"vg-5","stream":true}'[:48])
        c.close()
        for _ in range(10):  # clients that leave
            c = FcgiClient(sock)
            c.begin("GET", "/")
            c.end_body()
            c.close()
        c = FcgiClient(sock)
        c.begin("POST", "/health", body_len=100)
        c.send_body(b"abc")
        c.close()
        s, _, _ = fcgi_get(sock, "/health")
        check(s == 200, "still answering after clients left")
        if metrics_port:
            metrics_port_requests(metrics_port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=180)  # > VALERIE_SHUTDOWN_TIMEOUT (60) + valgrind's leak check
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()

    report = open(vlog).read() if os.path.exists(vlog) else ""
    check(rc == 0, f"{label}: worker exited 0 under valgrind (rc {rc})")
    check("ERROR SUMMARY" not in report or "ERROR SUMMARY: 0 errors" in report,
          f"{label}: valgrind found no error")
    check("definitely lost" not in report and "indirectly lost" not in report
          and "possibly lost" not in report, f"{label}: valgrind found no leak")
    if report.strip():
        print(report[-3000:])
    remove_temp(tmp)


def business_context_server():
    """A business-context endpoint answering every POST with a JSON contexto."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = '{"contexto":"Horario 9-18, env\u00edos gratis"}'.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


bctx = business_context_server()
scenario("offline provider, business context", {
    "CONTEXTO_NEGOCIO_ENDPOINT": f"http://127.0.0.1:{bctx.server_address[1]}/ctx"},
    metrics_port=free_port())
bctx.shutdown()
bctx.server_close()
for sk in silent:
    sk.close()
fake = FakeLLM()
try:
    # The fake LLM answers the business-context POST 404: the failure path, remembered.
    scenario("openai provider", {"VALERIE_LLM_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test",
                                 "OPENAI_BASE_URL": f"http://127.0.0.1:{fake.port}/v1",
                                 "OPENAI_MAX_RETRIES": "1",
                                 "CONTEXTO_NEGOCIO_ENDPOINT": f"http://127.0.0.1:{fake.port}/ctx"})
    fake.plan({"mode": "fail-500"}, {"mode": "cut-mid-stream"}, {"mode": "cut-mid-stream"})
    scenario("openai provider, failing", {"VALERIE_LLM_PROVIDER": "openai",
                                          "OPENAI_API_KEY": "sk-test", "OPENAI_MAX_RETRIES": "1",
                                          "OPENAI_BASE_URL": f"http://127.0.0.1:{fake.port}/v1"},
             failing=True)
    anthropic = {"VALERIE_LLM_PROVIDER": "anthropic", "ANTHROPIC_API_KEY": "ak-test",
                 "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{fake.port}", "ANTHROPIC_MAX_RETRIES": "1"}
    fake.plan()
    # Traced: spans built and exported by the background thread (the fake answers the
    # OTLP POSTs 404, so they count as failed), with content.
    scenario("anthropic provider, traced", dict(
        anthropic, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{fake.port}",
        VALERIE_TRACE_CONTENT="true"))
    # Turn 1 fails twice (502), turns 2 and 3 pass, the stream breaks after its first deltas.
    fake.plan({"mode": "fail-529"}, {"mode": "fail-529"}, {"mode": "ok"}, {"mode": "ok"},
              {"mode": "cut-mid-stream"}, {"mode": "error-event-mid-stream"})
    scenario("anthropic provider, failing", anthropic, failing=True)
    seen = fake.stats()["by_outcome"]
    check(seen.get("fail-529") == 2 and seen.get("cut-mid-stream") == 1
          and seen.get("error-event-mid-stream") == 1,
          f"anthropic provider, failing: the planned failures were met: {seen}")
finally:
    fake.stop()

def auth_scenario():
    """One worker under valgrind with VALERIE_AUTH=jwt,apikey, a small rate limit and
    CORS: every way a credential is accepted or refused, a role refused, a company
    mismatch, another principal's session, a key revoked while it runs, 429s."""
    import base64
    import hashlib
    import hmac
    import json
    import time

    tmp = temp_dir("valerie-vg-auth-")
    sock = os.path.join(tmp, "w.sock")
    vlog = os.path.join(tmp, "valgrind.log")
    secret = "vg-" + "s" * 40
    keys = os.path.join(tmp, "keys")

    def apikey(name, role, company=None):
        args = [BIN, "apikey", "new", "--name", name, "--role", role]
        out = subprocess.run(args + (["--company", company] if company else []),
                             capture_output=True, text=True).stdout
        return out.split("key:")[1].split()[0], out.split("line:")[1].splitlines()[0].strip()

    ci, ci_line = apikey("ci", "user")
    ops, ops_line = apikey("ops", "admin", "acme")
    with open(keys, "w") as f:
        f.write(ci_line + "\n" + ops_line + "\n")

    def b64(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    def tok(claims, alg="HS256", head=None):
        signing = b64(head or {"alg": alg, "typ": "JWT"}) + "." + b64(claims)
        dig = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
        sig = hmac.new(secret.encode(), signing.encode(), dig).digest()
        return "Bearer " + signing + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()

    now = int(time.time())
    alice = tok({"sub": "alice", "role": "user", "exp": now + 600, "company_id": "acme"})
    bob = tok({"sub": "bob", "exp": now + 600, "aud": ["x"], "iss": "i", "nbf": now - 1})
    env = dict(os.environ, VALERIE_THREADS="3", LOG_LEVEL="debug", VALERIE_SHUTDOWN_TIMEOUT="60",
               RATE_LIMIT_REQUESTS_PER_MINUTE="60", RATE_LIMIT_BURST="20",
               VALERIE_DATA_DIR=os.path.join(tmp, "data"), VALERIE_AUTH="jwt,apikey",
               JWT_SECRET_KEY=secret, VALERIE_API_KEYS_FILE=keys,
               CORS_ORIGINS="https://app.example")
    spawn = os.environ.get("SPAWN_FCGI", "spawn-fcgi")
    proc = subprocess.Popen(
        [spawn, "-n", "-s", sock, "--", shutil.which("valgrind"), "--quiet", "--leak-check=full",
         "--show-leak-kinds=definite,indirect,possible", "--errors-for-leak-kinds=definite,indirect,possible",
         "--error-exitcode=99", f"--log-file={vlog}", BIN],
        env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "worker.log"), "w"))

    def call(method, path, auth=None, body=None, extra=None):
        e = dict(extra or {})
        if auth is not None:
            e["HTTP_AUTHORIZATION"] = auth
        c = FcgiClient(sock)
        if body is None:
            c.begin(method, path, extra=e)
        else:
            c.begin(method, path, body_len=len(body),
                    extra=dict(e, CONTENT_TYPE="application/json"))
            c.send_body(body)
        c.end_body()
        return c.response()[0]

    try:
        up = wait_until(lambda: os.path.exists(sock) and "worker ready" in
                        open(os.path.join(tmp, "worker.log")).read(), 60, 0.2)
        check(up, "auth: worker under valgrind came up")
        refusals = [None, "Basic eA==", "Bearer ", "Bearer a.b.c", "Bearer !.!.!", "Bearer a.b.c.d",
                    tok({"sub": "a", "exp": now + 60}, "HS512"),
                    tok({"sub": "a", "exp": now + 60}, head={"alg": "none"}),
                    tok({"sub": "a", "exp": now - 600}), tok({"sub": "a"}),
                    tok({"exp": now + 60}), tok({"sub": "a", "exp": now + 60, "role": "x"}),
                    tok({"sub": "a", "exp": now + 60, "nbf": now + 600}),
                    tok([1, 2]), "Bearer vk_nope", "Bearer " + "x" * 9000]
        for a in refusals:
            s = call("GET", "/v1/models", a)
            check(s == 401, f"auth: {str(a)[:30]!r}: 401 ({s})")
        s = call("GET", "/v1/models", extra={"HTTP_X_API_KEY": ci})
        check(s == 200, f"auth: API key via X-API-Key: {s}")
        check(call("GET", "/v1/models", "Bearer " + ci) == 200, "auth: API key via Bearer")
        check(call("GET", "/config", alice) == 403, "auth: a user on /config: 403")
        check(call("GET", "/config", "Bearer " + ops) == 200, "auth: an admin key on /config")
        body = b'{"message":"hi","session_id":"vg-a","config":{"nombre_bot":"T","id_empresa":"zz"}}'
        check(call("POST", "/api/agent/chat", alice, body) == 403, "auth: company mismatch: 403")
        body = b'{"message":"hi","session_id":"vg-a","config":{"nombre_bot":"T"}}'
        check(call("POST", "/api/agent/chat", alice, body) == 200, "auth: company bound: 200")
        check(call("POST", "/api/v1/chat", bob, b'{"message":"x","session_id":"vg-a"}') == 404,
              "auth: another's session: 404")
        check(call("GET", "/api/v1/sessions/vg-a", bob) == 404, "auth: another reads: 404")
        check(call("DELETE", "/api/v1/sessions/vg-a", bob) == 404, "auth: another deletes: 404")
        check(call("GET", "/api/v1/sessions/vg-a", "Bearer " + ops) == 200, "auth: admin reads")
        s = call("OPTIONS", "/api/v1/chat", extra={"HTTP_ORIGIN": "https://app.example",
                                                   "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST"})
        check(s == 204, f"auth: preflight: {s}")
        s = call("OPTIONS", "/api/v1/chat", extra={"HTTP_ORIGIN": "https://evil.example",
                                                   "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST"})
        check(s == 403, f"auth: preflight from another origin: {s}")
        with open(keys + ".new", "w") as f:
            f.write(ops_line + "\n")
        os.rename(keys + ".new", keys)
        check(wait_until(lambda: call("GET", "/v1/models", "Bearer " + ci) == 401, 15, 0.3),
              "auth: a revoked key gets 401")
        with open(keys, "a") as f:
            f.write("broken line\n")
        time.sleep(1.2)
        check(call("GET", "/v1/models", "Bearer " + ops) == 200, "auth: a broken file keeps keys")
        codes = [call("GET", "/v1/models", bob) for _ in range(40)]
        check(429 in codes, f"auth: the rate limit answers 429: {codes.count(429)}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=180)  # > VALERIE_SHUTDOWN_TIMEOUT (60) + valgrind's leak check
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()

    report = open(vlog).read() if os.path.exists(vlog) else ""
    check(rc == 0, f"auth: worker exited 0 under valgrind (rc {rc})")
    check("ERROR SUMMARY" not in report or "ERROR SUMMARY: 0 errors" in report,
          "auth: valgrind found no error")
    check("definitely lost" not in report and "indirectly lost" not in report
          and "possibly lost" not in report, "auth: valgrind found no leak")
    if report.strip():
        print(report[-3000:])
    remove_temp(tmp)


auth_scenario()
done("test_valgrind")
