"""test_nginx_prod: the production nginx configuration (nginx/production.conf.template
with nginx/snippets) passes `nginx -t` with a test certificate, and runs on loopback in
front of TWO worker pools (scripts/valerie-pool.sh on two TCP ports, production mode,
sessions in one Redis, as two hosts would run): HTTPS with HSTS and the security
headers, HTTP redirected to HTTPS except certbot's challenges, JSON errors, /metrics
for this host only, a JSON access log with the request id. One pool is killed by PID
and new requests, chat turns included, still succeed on the other. Then a pool that
takes requests and never answers shows the failover rule: a GET that reached it is
retried on the other pool, a chat POST that reached it is NOT replayed (502). The per-IP
limit (1 r/s, burst 1) answers the JSON 429 with Retry-After; the chat read timeouts
are longer than a turn's deadline; TLS is 1.2 and 1.3 only."""
import json
import os
import re
import socket
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from harness import (BIN, SRCDIR, RedisServer, check, done, free_port,  # noqa: E402
                     is_error_doc, json_lines, remove_temp, temp_dir, wait_until)
from deployharness import Pool, ProdNginx  # noqa: E402

tmp = temp_dir("valerie-nginxprod-")
JWT = os.urandom(32).hex()


def refuses(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except OSError:
        return True


class BlackHole:
    """A 'pool' that accepts FastCGI connections, reads the whole request (up to the
    empty FCGI_STDIN record) and closes without answering: the request reached a worker
    that then died. Counts what it got, by method."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.got = {"GET": 0, "POST": 0}
        self.lock = threading.Lock()
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        data = buf = b""
        try:
            c.settimeout(10)
            while True:
                while len(data) >= 8:
                    typ, clen, pad = data[1], int.from_bytes(data[4:6], "big"), data[6]
                    if len(data) < 8 + clen + pad:
                        break
                    rec, data = data[:8 + clen + pad], data[8 + clen + pad:]
                    buf += rec
                    if typ == 5 and clen == 0:  # end of FCGI_STDIN: the request is in
                        m = "POST" if b"REQUEST_METHODPOST" in buf else "GET"
                        with self.lock:
                            self.got[m] += 1
                        return
                chunk = c.recv(65536)
                if not chunk:
                    return
                data += chunk
        except OSError:
            return
        finally:
            c.close()

    def close(self):
        self.sock.close()


def chat(ng, sid, token, msg="hello"):
    body = json.dumps({"message": msg, "session_id": sid})
    s, h, raw = ng.request("POST", "/api/v1/chat", body=body,
                           headers={"Content-Type": "application/json",
                                    "Authorization": f"Bearer {token}"})
    try:
        return s, h, json.loads(raw)
    except ValueError:
        return s, h, None


# The chat locations' read timeout is longer than a turn may last: the example's and
# the default VALERIE_TURN_TIMEOUT (app/conf.c), or nginx would cut turns with a 504.
locs = open(os.path.join(SRCDIR, "nginx", "snippets", "valerie-locations.conf")).read()
chat_timeouts = []
for route in ("/api/v1/chat", "/api/agent/chat", "/v1/chat/completions"):
    for pattern, block in re.findall(r"location ~ (\S+) \{([^}]*)\}", locs):
        t = re.search(r"fastcgi_read_timeout (\d+)s;", block)
        if re.search(pattern, route) and re.search(pattern, route + "/") and t:
            chat_timeouts.append(int(t.group(1)))
turn_default = int(re.search(r'\{"VALERIE_TURN_TIMEOUT", NULL, CFG_INT, "(\d+)"',
                             open(os.path.join(SRCDIR, "app", "conf.c")).read()).group(1))
turn_example = int(re.search(r"^VALERIE_TURN_TIMEOUT=(\d+)",
                             open(os.path.join(SRCDIR, ".env.production.example")).read(), re.M).group(1))
check(len(chat_timeouts) == 3 and min(chat_timeouts) > max(turn_default, turn_example),
      f"chat read timeouts {chat_timeouts} s > VALERIE_TURN_TIMEOUT ({turn_default} default, {turn_example} example)")
tmpl = open(os.path.join(SRCDIR, "nginx", "production.conf.template")).read()
check(re.search(r"^\s*ssl_protocols TLSv1\.2 TLSv1\.3;", tmpl, re.M) and "ssl_session_tickets off;" in tmpl,
      "TLS 1.2 and 1.3 only, no session tickets")

redis = RedisServer().start()
pools = []
ng = None
try:
    common = {
        "VALERIE_ENV": "production",
        "VALERIE_AUTH": "jwt",
        "JWT_SECRET_KEY": JWT,
        "VALERIE_SESSION_STORE": "redis",
        "VALERIE_SESSION_REDIS_URL": redis.url(),
        # FastCGI on TCP: production refuses it without this allow list.
        "FCGI_WEB_SERVER_ADDRS": "127.0.0.1",
        "VALERIE_TURN_TIMEOUT": "120",
    }
    ports = [free_port(), free_port()]
    pools = [Pool(os.path.join(tmp, f"pool{i}"), f"127.0.0.1:{p}", common).start()
             for i, p in enumerate(ports)]
    check(all(p.pid for p in pools), f"two pools started (multiwatch pids {[p.pid for p in pools]})")
    token = subprocess.run([BIN, "token", "--sub", "alice", "--role", "user"],
                           env=pools[0].env, capture_output=True, text=True).stdout.strip()
    check(token.count(".") == 2, "minted a user token")

    ng = ProdNginx(os.path.join(tmp, "nginx"),
                   [f"server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;" for p in ports])
    r = ng.test()
    check(r.returncode == 0, f"nginx -t accepts the production configuration: {r.stderr.strip()}")
    ng.start()

    # --- HTTPS, headers, redirect ---
    s, h, body = ng.request("GET", "/health/ready")
    check(s == 200, f"GET /health/ready over HTTPS: {s} {body[:200]!r}")
    check(h.get("strict-transport-security", "").startswith("max-age="), f"HSTS on HTTPS: {h.get('strict-transport-security')}")
    for name, want in (("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"),
                       ("referrer-policy", "no-referrer")):
        check(h.get(name) == want, f"security header {name}: {h.get(name)}")
    check("content-security-policy" in h, "Content-Security-Policy sent")
    check(len(h.get("x-request-id", "")) == 32, f"X-Request-Id: {h.get('x-request-id')}")
    check("server" not in h or "/" not in h["server"], f"no nginx version: {h.get('server')}")

    s, h, _ = ng.request("GET", "/api/v1/sessions/x?y=1", https=False)
    check(s == 301 and h.get("location") == "https://127.0.0.1/api/v1/sessions/x?y=1",
          f"HTTP redirects to HTTPS, path and query kept: {s} {h.get('location')}")
    check("strict-transport-security" not in h, "no HSTS over plain HTTP")
    os.makedirs(os.path.join(ng.www, ".well-known", "acme-challenge"))
    with open(os.path.join(ng.www, ".well-known", "acme-challenge", "tok123"), "w") as f:
        f.write("tok123.thumb")
    s, h, body = ng.request("GET", "/.well-known/acme-challenge/tok123", https=False)
    check(s == 200 and body == b"tok123.thumb", f"certbot's challenge served over HTTP: {s} {body!r}")

    # --- JSON errors, body limit, auth passes through, /metrics internal ---
    s, h, body = ng.request("POST", "/api/v1/chat", body=b"x" * (1048576 + 1),
                            headers={"Content-Type": "application/json"})
    check(s == 413 and is_error_doc(json.loads(body or b"null"), "payload_too_large"),
          f"body over VALERIE_MAX_BODY_BYTES: nginx's JSON 413 ({s})")
    s, h, body = ng.request("GET", "/v1/models")
    check(s == 401 and h.get("content-type", "").startswith("application/json"),
          f"no token: the application's JSON 401 passes through ({s})")
    s, h, body = ng.request("GET", "/metrics")
    check(s == 200 and b"valerie_http_requests_total" in body, f"/metrics from this host: {s}")
    s, h, body = ng.request("GET", "/metrics", source="127.0.0.2")
    check(s == 403 and is_error_doc(json.loads(body or b"null"), "forbidden"),
          f"/metrics from another address: JSON 403 ({s})")

    # --- chat over both pools, SSE unbuffered ---
    sid = "prod-nginx-1"
    for i in range(4):
        s, h, doc = chat(ng, sid, token, f"turn {i}")
        check(s == 200 and doc and doc.get("turn") == i + 1, f"chat turn {i + 1}: {s} {doc and doc.get('turn')}")
    served = [sum(1 for d in json_lines(open(p.log).read())[0]
                  if isinstance(d, dict) and d.get("route") == "/api/v1/chat") for p in pools]
    check(all(n > 0 for n in served), f"both pools served chat turns (round robin): {served}")
    body = json.dumps({"message": "stream please", "session_id": "prod-sse", "stream": True})
    s, h, raw = ng.request("POST", "/api/v1/chat", body=body,
                           headers={"Content-Type": "application/json",
                                    "Authorization": f"Bearer {token}"})
    check(s == 200 and h.get("content-type", "").startswith("text/event-stream")
          and b"event: done" in raw, f"SSE through the production nginx: {s} {h.get('content-type')}")

    # --- one pool dies: new requests still succeed ---
    victim = pools[0]
    victim.kill()
    check(wait_until(lambda: refuses(ports[0]), 10), f"pool 0 killed by PID, port {ports[0]} refuses")
    results = []
    for i in range(6):
        s, _, _ = ng.request("GET", "/health/ready")
        results.append(s)
    check(results == [200] * 6, f"GETs after the kill all succeed: {results}")
    codes = []
    for i in range(4):
        s, h, doc = chat(ng, sid, token, f"after kill {i}")
        codes.append((s, doc and doc.get("turn")))
    check(codes == [(200, 5), (200, 6), (200, 7), (200, 8)],
          f"chat turns after the kill succeed (a connect that fails is retried): {codes}")
    s, h, body = ng.request("GET", f"/api/v1/sessions/{sid}",
                            headers={"Authorization": f"Bearer {token}"})
    doc = json.loads(body or b"null") or {}
    check(s == 200 and len(doc.get("messages", [])) == 16,
          f"the session holds every turn, from both pools (shared Redis): {s} {len(doc.get('messages', []))}")

    # --- access log: JSON lines with the request id ---
    s, h, _ = ng.request("GET", "/health/live")
    rid = h.get("x-request-id")
    wait_until(lambda: rid in ng.access_log(), 5)
    docs, bad = json_lines(ng.access_log())
    check(not bad and docs, f"access log is JSON lines ({len(docs)} lines, {len(bad)} bad)")
    check(any(d.get("request_id") == rid and d.get("uri") == "/health/live" for d in docs),
          f"access log line carries the request id {rid}")

    # --- a pool that got the request and died: GET retried, POST never replayed ---
    ng.stop()
    hole = BlackHole()
    # max_fails=0: plain round robin, so the dead-end pool gets every other request.
    ng.write([f"server 127.0.0.1:{hole.port} max_fails=0;",
              f"server 127.0.0.1:{ports[1]} max_fails=0;"])
    ng.start()
    gets = [ng.request("GET", "/health/live")[0] for _ in range(6)]
    check(gets == [200] * 6 and hole.got["GET"] >= 1,
          f"GETs that reached the dead-end pool were retried on the other: {gets}, dead end got {hole.got['GET']}")
    posts = [chat(ng, "prod-nginx-2", token, f"m{i}")[0] for i in range(6)]
    n502 = posts.count(502)
    check(hole.got["POST"] >= 1 and n502 == hole.got["POST"] and posts.count(200) == 6 - n502,
          f"a chat POST that reached a worker is not replayed: {posts}, dead end got {hole.got['POST']}")
    s, h, body = ng.request("GET", "/api/v1/sessions/prod-nginx-2",
                            headers={"Authorization": f"Bearer {token}"})
    doc = json.loads(body or b"null") or {}
    check(len(doc.get("messages", [])) == 2 * posts.count(200),
          f"only the answered turns are stored, each once: {len(doc.get('messages', []))} messages")
    hole.close()

    # --- per-IP limits, rendered from VALERIE_NGINX_RATE/BURST (1 r/s, burst 1), in
    # front of the pool still alive. (Port 80's redirect is a `return`, answered in
    # nginx's rewrite phase, before limit_req: nothing to limit there.) ---
    lim = ProdNginx(os.path.join(tmp, "nginx-limit"), [f"server 127.0.0.1:{ports[1]};"],
                    {"VALERIE_NGINX_RATE": "1", "VALERIE_NGINX_BURST": "1"}).start()
    try:
        got = [lim.request("GET", "/health") for _ in range(6)]
        over = [(st, h, b) for st, h, b in got if st == 429]
        check([st for st, _, _ in got][:2] == [200, 200] and len(over) >= 3,
              f"per-IP limit_req: the burst passes, then 429: {[st for st, _, _ in got]}")
        check(over and all(is_error_doc(json.loads(b or b"null"), "rate_limited") and h.get("retry-after")
                           for _, h, b in over), "nginx's 429 is the JSON error with Retry-After")
        s, _, _ = lim.request("GET", "/health", source="127.0.0.2")
        check(s == 200, f"another address has its own bucket: {s}")
    finally:
        lim.stop()
finally:
    if ng:
        ng.stop()
    for p in pools:
        p.stop()
    redis.stop()
    remove_temp(tmp)
    remove_temp(redis.dir, "redis files")
done("test_nginx_prod")
