"""test_metrics_port: with VALERIE_METRICS_PORT set, every worker process of the pool serves
the pool's metrics over plain HTTP on that port (what Prometheus scrapes per replica): the
same totals as GET /metrics through nginx whichever process answers, never going backwards,
also after a worker is killed and replaced; a format promtool accepts; 404 and 405 for the
rest; a silent client neither blocks other scrapes nor stays forever. Off by default: then
no worker listens on any TCP port. A port that cannot be had stops the worker with a line
naming the variable."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import http.client

sys.path.insert(0, os.path.dirname(__file__))
from harness import (BIN, Stack, access_lines, check, done, free_port, kill,  # noqa: E402
                     remove_temp, temp_dir, wait_until)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HEALTH = {"route": "/health", "method": "GET", "code": "200"}


def value(text, name, labels=None):
    """The sample of `name` whose labels include all of `labels` (dict); None if absent."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in (labels or {}).items()):
            return float(m.group(4))
    return None


def series(text):
    """The set of series keys (name and labels) of an exposition."""
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def get(port, path, method="GET", body=None):
    """One request on a fresh connection (so the kernel may pick any process):
    (status, headers lower-case, body text)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data.decode(errors="replace")
    finally:
        c.close()


def scrape(port):
    s, h, text = get(port, "/metrics")
    return text if s == 200 else ""


def port_scrape_pids(st):
    """The worker pids that answered scrapes on the metrics port (nginx sets a request id;
    the port has none)."""
    return {d.get("pid") for d in access_lines(st, "/metrics") if d.get("request_id") == ""}


def tcp_listeners():
    """Inodes of the TCP sockets in LISTEN state on this host."""
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A":
                        inodes.add(cols[9])
        except OSError:
            pass
    return inodes


def socket_inodes(pid):
    out = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


port = free_port()
with Stack(workers=2, threads=4, env={"VALERIE_METRICS_PORT": str(port)}) as st:
    check(wait_until(lambda: value(scrape(port), "valerie_workers") == 2, 30),
          "the metrics port answers and counts two workers")
    s, h, doc = st.json("GET", "/config")
    check(s == 200 and doc.get("metrics_port") == port and doc.get("metrics_addr") == "127.0.0.1",
          f"GET /config shows the metrics port and address: {doc and doc.get('metrics_port')} "
          f"{doc and doc.get('metrics_addr')}")

    # Requests through nginx, each followed by a scrape of the port: every scrape sees
    # exactly what was answered so far, so whichever process answers, totals agree and
    # never go backwards.
    seen = []
    for i in range(30):
        st.request("GET", "/health")
        seen.append(value(scrape(port), "valerie_http_requests_total", HEALTH))
    check(seen == [float(i + 1) for i in range(30)],
          f"each scrape of the port counts every /health answered through nginx: {seen}")
    for i in range(4):
        st.request("GET", f"/api/v1/sessions/port-{i}")
    st.request("POST", "/api/v1/chat", body=json.dumps({"message": "m", "session_id": "port-1"}).encode(),
               headers={"Content-Type": "application/json"})

    # Several scrapes land on both processes (the kernel spreads new connections over
    # them); every one of them holds the same totals as /metrics through nginx.
    s, h, via_nginx = st.request("GET", "/metrics")
    via_nginx = via_nginx.decode()
    totals = set()
    for i in range(200):
        text = scrape(port)
        totals.add((value(text, "valerie_http_requests_total", HEALTH),
                    value(text, "valerie_http_requests_total",
                          {"route": "/api/v1/sessions/{id}", "method": "GET", "code": "404"}),
                    value(text, "valerie_llm_requests_total", {"provider": "offline", "outcome": "ok"})))
        if i >= 10 and len(port_scrape_pids(st)) >= 2:
            break
    pids = port_scrape_pids(st)
    check(len(pids) == 2 and pids <= set(st.worker_pids()),
          f"scrapes of the port were answered by both worker processes: {pids} of {st.worker_pids()}")
    expect = (value(via_nginx, "valerie_http_requests_total", HEALTH),
              value(via_nginx, "valerie_http_requests_total",
                    {"route": "/api/v1/sessions/{id}", "method": "GET", "code": "404"}),
              value(via_nginx, "valerie_llm_requests_total", {"provider": "offline", "outcome": "ok"}))
    check(expect == (30.0, 4.0, 1.0), f"nginx's /metrics has the totals: {expect}")
    check(totals == {expect}, f"every scrape of the port has the same totals as nginx's: {totals}")

    s, h, text = get(port, "/metrics")
    check(s == 200 and h.get("content-type") == CONTENT_TYPE,
          f"content type {h.get('content-type')!r}")
    check(series(text) == series(st.request("GET", "/metrics")[2].decode()),
          "the port and nginx expose the same series")
    promtool = shutil.which("promtool")
    if check(promtool is not None, "promtool is installed (apt-get install prometheus)"):
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        check(r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(),
              f"promtool check metrics: no error, no warning: {r.stdout.strip()[:300]} "
              f"{r.stderr.strip()[:300]}")
    s, h, body = get(port, "/metrics", method="HEAD")
    check(s == 200 and body == "" and h.get("content-type") == CONTENT_TYPE, f"HEAD /metrics: {s}")
    s, h, body = get(port, "/health/live")
    check(s == 200 and json.loads(body).get("status") == "ok", f"GET /health/live on the port: {s} {body}")

    # Only those: the rest of the API is not on this port.
    for path in ("/", "/config", "/health/ready", "/api/v1/sessions/x", "/metrics/", "/nope"):
        s, h, body = get(port, path)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        check(s == 404 and doc and doc["error"]["code"] == "not_found" and len(body) < 200,
              f"GET {path} on the port: small JSON 404: {s} {body[:80]!r}")
    for method in ("POST", "PUT", "DELETE"):
        s, h, body = get(port, "/metrics", method=method, body=b"{}")
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        check(s == 405 and doc and doc["error"]["code"] == "method_not_allowed"
              and h.get("allow") == "GET, HEAD", f"{method} /metrics on the port: 405 with Allow: {s} {h.get('allow')}")

    # Silent clients (connected, nothing sent, or half a request line) do not stop other
    # scrapes, and the server closes them by itself.
    silent = []
    for i in range(6):
        sk = socket.create_connection(("127.0.0.1", port))
        if i % 2:
            sk.sendall(b"GET /metr")
        silent.append(sk)
    answered = [get(port, "/metrics")[0] for _ in range(10)]
    check(answered == [200] * 10, f"10 scrapes answered while 6 silent clients are connected: {answered}")
    closed = 0
    for sk in silent:
        sk.settimeout(120)
        try:
            closed += sk.recv(1024) == b""
        except ConnectionResetError:
            closed += 1
        except OSError:
            pass
        sk.close()
    check(closed == 6, f"the server closed the silent connections itself: {closed} of 6")

    # A worker killed and replaced by multiwatch: the port still answers (the replacement
    # joins it), and nothing goes backwards.
    before = scrape(port)
    victim = st.worker_pids()[0]
    kill(victim, signal.SIGKILL)
    check(wait_until(lambda: len(st.worker_pids()) == 2 and victim not in st.worker_pids(), 30),
          "multiwatch replaced the killed worker")
    replacement = (set(st.worker_pids()) - {victim}) - pids
    after = []
    for i in range(200):
        after.append(get(port, "/metrics"))
        if i >= 10 and replacement <= port_scrape_pids(st):
            break
    check(all(s == 200 for s, _, _ in after), f"every scrape after the kill answered: "
          f"{sorted({s for s, _, _ in after})}")
    check(replacement and replacement <= port_scrape_pids(st),
          f"the replacement worker {replacement} answers on the port too")
    check(all(value(t, "valerie_http_requests_total", HEALTH) == 30
              and value(t, "valerie_llm_requests_total", {"provider": "offline", "outcome": "ok"}) == 1
              for _, _, t in after), "counters survive the killed worker on every scrape")
    scrapes = [value(t, "valerie_http_requests_total", {"route": "/metrics", "method": "GET", "code": "200"})
               for _, _, t in after]
    check(scrapes == sorted(scrapes) and scrapes[0] >= value(before, "valerie_http_requests_total",
                                                              {"route": "/metrics", "method": "GET", "code": "200"}),
          "the scrape counter never went backwards")

# After the pool stopped (SIGTERM, graceful drain), the port is free again: a plain
# listener (SO_REUSEADDR only passes the TIME_WAIT of closed scrapes, not a live listener).
with socket.socket() as sk:
    sk.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sk.bind(("127.0.0.1", port))
        sk.listen(1)
        check(True, "the stopped pool released the metrics port")
    except OSError as e:
        check(False, f"the stopped pool released the metrics port: {e}")

# Off by default: nothing listens, the configuration says so.
with Stack(workers=2, threads=2, env={"VALERIE_METRICS_PORT": "", "VALERIE_METRICS_ADDR": ""}) as st:
    check(wait_until(lambda: len(st.worker_pids()) == 2, 30), "two workers")
    listening = tcp_listeners()
    owned = {pid: socket_inodes(pid) & listening for pid in st.worker_pids()}
    check(all(not v for v in owned.values()), f"no worker listens on a TCP port: {owned}")
    s, h, doc = st.json("GET", "/config")
    check(s == 200 and doc.get("metrics_port") == 0 and doc.get("metrics_addr") == "127.0.0.1",
          f"GET /config: metrics_port 0, metrics_addr 127.0.0.1: {doc and doc.get('metrics_port')}")

# Invalid settings stop at start with one line naming the variable (exit 78).
for name, bad in (("VALERIE_METRICS_PORT", "70000"), ("VALERIE_METRICS_PORT", "metrics"),
                  ("VALERIE_METRICS_ADDR", "localhost")):
    r = subprocess.run([BIN, "check-config"], env=dict(os.environ, **{name: bad}),
                       capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    check(r.returncode == 78 and len(lines) == 1 and name in lines[0],
          f"{name}={bad}: exit 78 and one line naming it: {r.returncode} {r.stderr.strip()!r}")

# A port another program holds: the worker refuses to start and says which and why.
with socket.socket() as holder:
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    tmp = temp_dir("valerie-mport-")
    sock = os.path.join(tmp, "w.sock")
    log = os.path.join(tmp, "worker.log")
    env = dict(os.environ, VALERIE_METRICS_PORT=str(taken), VALERIE_THREADS="2",
               VALERIE_DATA_DIR=os.path.join(tmp, "data"))
    with open(log, "w") as logf:
        r = subprocess.run([os.environ.get("SPAWN_FCGI", "spawn-fcgi"), "-n", "-s", sock, "--", BIN],
                           env=env, stdout=subprocess.DEVNULL, stderr=logf, timeout=120)
    text = open(log).read()
    check(r.returncode != 0 and f"VALERIE_METRICS_PORT: cannot listen on 127.0.0.1:{taken}" in text
          and "worker ready" not in text,
          f"a taken port stops the worker, naming the variable: rc {r.returncode} {text.strip()[-300:]!r}")
    remove_temp(tmp)

done("test_metrics_port")
