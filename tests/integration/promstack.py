"""promstack: a real Prometheus (the Debian package's binary) scraping a real Valerie pool
with traffic, for test_prometheus.py and test_grafana.py. Prometheus runs on a copy of
prometheus/prometheus.yml pointed at the test stack's nginx, with 1 s intervals, in a
temp dir on a random loopback port, and is stopped by its PID."""
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from harness import (SRCDIR, FakeLLM, FakeMCP, SseStream, Stack, check, failures, free_port,
                     kill, post_chat, read_text, remove_temp, temp_dir, wait_until)

PROM_DIR = os.path.join(SRCDIR, "prometheus")
PROMETHEUS = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus") or ""
PROMTOOL = os.environ.get("PROMTOOL_BIN") or shutil.which("promtool") or ""
JOB = "valerie-pool"


def promtool(*args):
    """Runs promtool in prometheus/; (exit status, stdout + stderr)."""
    r = subprocess.run([PROMTOOL, *args], cwd=PROM_DIR, capture_output=True, text=True,
                       timeout=60)
    return r.returncode, (r.stdout + r.stderr).strip()


def test_config(port):
    """prometheus.yml with the local pool's target moved to 127.0.0.1:port and the
    global intervals at 1 s. Each rewrite must find exactly one line to change, so an
    edit of prometheus.yml that moves them fails here instead of testing something
    else."""
    with open(os.path.join(PROM_DIR, "prometheus.yml")) as f:
        text = f.read()
    for old, new in (("- localhost:8080\n", f"- 127.0.0.1:{port}\n"),
                     ("scrape_interval: 15s\n", "scrape_interval: 1s\n"),
                     ("scrape_timeout: 10s\n", "scrape_timeout: 1s\n"),
                     ("evaluation_interval: 15s\n", "evaluation_interval: 1s\n")):
        if text.count(old) != 1:
            raise RuntimeError(f"prometheus.yml: expected one {old.strip()!r} to rewrite, "
                               f"found {text.count(old)}")
        text = text.replace(old, new)
    return text


class Prometheus:
    """prometheus scraping 127.0.0.1:scrape_port (the test stack's nginx)."""

    def __init__(self, scrape_port):
        self.dir = temp_dir("valerie-prom-")
        self.port = free_port()
        self.proc = None
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write(test_config(scrape_port))
        shutil.copy(os.path.join(PROM_DIR, "alert-rules.yml"), self.dir)

    def start(self, timeout=30):
        if not PROMETHEUS:
            raise RuntimeError("prometheus not found (apt-get install prometheus, or set "
                               "PROMETHEUS_BIN)")
        args = [PROMETHEUS, f"--config.file={self.config}",
                f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w")
        self.proc = subprocess.Popen(args, cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_until(lambda: self.proc.poll() is not None or self.ready(), timeout, 0.1) \
                or self.proc.poll() is not None:
            out = read_text(os.path.join(self.dir, "prometheus.log"))[-3000:]
            self.stop()
            raise RuntimeError(f"prometheus did not become ready:\n{out}")
        return self

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, timeout=20):
        """Ends Prometheus by its PID (SIGTERM, then SIGKILL) and removes its files (kept,
        with the end of its log shown, when a check failed)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
            self.proc = None
            self.log.close()
        if failures:
            print("(end of prometheus's log:)")
            print(read_text(os.path.join(self.dir, "prometheus.log"))[-2000:])
        remove_temp(self.dir, "prometheus files")

    def api(self, path, params=None):
        """GET /api/v1/<path> (a POST form for queries, which can be long); returns the decoded "data",
        raises RuntimeError with Prometheus's error otherwise."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        form = urllib.parse.urlencode(params or {}, doseq=True)
        if path in ("query", "query_range", "series"):
            req = urllib.request.Request(url, data=form.encode())
        else:
            req = urllib.request.Request(url + ("?" + form if form else ""))
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {"errorType": "not JSON", "error": raw[:300]}
        if doc.get("status") != "success":
            raise RuntimeError(f"{path}: {doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, expr, at=None):
        """An instant query: the list of {"metric", "value"} (a vector), or a scalar's
        [time, value] wrapped as one sample."""
        data = self.api("query", {"query": expr, **({"time": at} if at else {})})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr, seconds=30, step=1):
        end = time.time()
        data = self.api("query_range", {"query": expr, "start": end - seconds, "end": end,
                                        "step": step})
        return data["result"]

    def target(self, job=JOB):
        for t in self.api("targets", {"state": "active"})["activeTargets"]:
            if t["labels"].get("job") == job:
                return t
        return None

    def wait_scrapes(self, n, timeout=20, job=JOB):
        """Waits until the job's target has been scraped successfully n more times."""
        seen = set()
        t = self.target(job)
        first = t and t.get("lastScrape")

        def scraped():
            tt = self.target(job)
            if tt and tt.get("health") == "up" and tt.get("lastScrape") != first:
                seen.add(tt["lastScrape"])
            return len(seen) >= n
        return wait_until(scraped, timeout, 0.1)


def finite_values(result):
    """The finite numbers of a query's result (vector or matrix)."""
    out = []
    for s in result:
        pairs = s.get("values") or ([s["value"]] if "value" in s else [])
        for _, v in pairs:
            try:
                x = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(x):
                out.append(x)
    return out


# --- the pool under observation ------------------------------------------------------
def llm_env(fake, mcp=None):
    """OpenAI first, Anthropic as the fallback, both the fake upstream; one retry each;
    circuits that stay closed (this traffic is about the metrics, not the breaker)."""
    base = f"http://127.0.0.1:{fake.port}"
    return {"VALERIE_LLM_PROVIDER": "openai", "VALERIE_LLM_FALLBACKS": "anthropic",
            "OPENAI_BASE_URL": base + "/v1", "OPENAI_API_KEY": "sk-test",
            "ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": "ak-test",
            "OPENAI_MAX_RETRIES": "1", "ANTHROPIC_MAX_RETRIES": "1",
            "OPENAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000",
            "ANTHROPIC_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000",
            # The application's limit, per client address here (auth none): room for the
            # rounds' traffic from 127.0.0.1, not for the burst sent from 127.0.0.2.
            "RATE_LIMIT_BURST": "60", "RATE_LIMIT_REQUESTS_PER_MINUTE": "6000",
            # An agent on the fake MCP server: the chat turns can call its tools.
            **({"MCP_DEMO_URL": mcp.url, "MCP_MAX_RETRIES": "0"} if mcp else {})}


def blast_from_other_address(st, n):
    """n GETs of /v1/models from 127.0.0.2 (a bucket of its own): the statuses."""
    import http.client
    out = []
    for _ in range(n):
        c = http.client.HTTPConnection("127.0.0.1", st.http_port, timeout=10,
                                       source_address=("127.0.0.2", 0))
        try:
            c.request("GET", "/v1/models")
            r = c.getresponse()
            r.read()
            out.append(r.status)
        except OSError:
            out.append(None)
        finally:
            c.close()
    return out


def traffic_round(st, fake, k, counts):
    """One round of every kind of request, in sequence (the fake's plan is per call):
    plain and streamed chat turns, a retried call, a fallback, a turn both providers
    fail (502), the OpenAI-compatible route, a session read, 404s, a health check.
    Adds what it sent to counts."""
    def add(key, n=1):
        counts[key] = counts.get(key, 0) + n

    def chat(sid, msg):
        s, h, doc = post_chat(st, {"message": msg, "session_id": sid})
        add(f"chat {s}")
        return s

    sid = f"obs-{k}"
    fake.plan()                                   # every call answers
    chat(sid, "hello there")
    chat(sid, "and a second turn")
    sse = SseStream(st, {"message": "stream a few words please", "session_id": sid + "-s",
                         "stream": True})
    evs = sse.read_all()
    sse.close()
    add(f"stream {sse.status} {evs[-1]['event'] if evs else 'none'}")
    fake.plan("fail-500")                         # openai fails once, its retry answers
    chat(sid + "-r", "retried")
    fake.plan("fail-500", "fail-500")             # openai fails twice: anthropic answers
    chat(sid + "-f", "fallback")
    fake.plan("fail-500", "fail-500", "fail-500", "fail-500")   # both fail: 502
    chat(sid + "-x", "nobody answers")
    fake.plan()
    s, _, _ = post_chat(st, {"model": "gpt-4o-mini",
                             "messages": [{"role": "user", "content": "compat"}]},
                        path="/v1/chat/completions")
    add(f"completions {s}")
    s, _, doc = post_chat(st, {"messages": [{"role": "user", "content": "call get_time"}],
                               "tools": [{"type": "function", "function": {"name": "get_time"}}]},
                          path="/v1/chat/completions")
    add(f"tool call {s} {doc['choices'][0]['finish_reason'] if s == 200 else ''}")
    # an agent's tool, called by the model in a chat turn, and one that fails
    s, _, doc = post_chat(st, {"message": 'call demo__echo {"message": "agent"}',
                               "session_id": sid + "-a"})
    add(f"agent turn {s} {len((doc or {}).get('tool_calls') or [])}")
    s, _, doc = post_chat(st, {"message": "call demo__fail", "session_id": sid + "-e"})
    add(f"agent turn {s} {len((doc or {}).get('tool_calls') or [])}")
    if k == 0:
        # Rate-limit hits, before Prometheus starts: the counter moves, the rounds' error
        # shares stay what the alert tests expect.
        for status in blast_from_other_address(st, 120):
            add(f"blast {status}")
    s, _, _ = st.request("GET", f"/api/v1/sessions/{sid}")
    add(f"session {s}")
    s, _, _ = st.request("GET", f"/api/v1/sessions/nope-{k}")
    add(f"session {s}")
    s, _, _ = st.request("GET", "/no/such/route")
    add(f"unmatched {s}")
    s, _, _ = st.request("GET", "/health")
    add(f"health {s}")


@contextlib.contextmanager
def observed_pool(rounds=3, workers=2, threads=4):
    """Yields (stack, prometheus, counts): a pool with the fake upstream, one round of
    traffic before Prometheus starts (so every series exists at its first scrape), then
    `rounds` rounds a second apart after its first scrape (so rates are not zero), then
    two more scrapes once the traffic is over. Everything is stopped by PID at exit."""
    fake = FakeLLM()
    mcp = FakeMCP()
    prom = None
    counts = {}
    try:
        with Stack(workers=workers, threads=threads, env=llm_env(fake, mcp)) as st:
            wait_until(lambda: len(st.worker_pids()) == workers, 20)
            traffic_round(st, fake, 0, counts)
            prom = Prometheus(st.http_port).start()
            check(prom.wait_scrapes(1, 20), "prometheus scraped the pool once before the traffic")
            for k in range(1, rounds + 1):
                t0 = time.monotonic()
                traffic_round(st, fake, k, counts)
                time.sleep(max(0.0, 1.1 - (time.monotonic() - t0)))
            check(prom.wait_scrapes(2, 20), "prometheus scraped the pool twice after the traffic")
            yield st, prom, counts
    finally:
        if prom is not None:
            prom.stop()
        fake.stop()
        mcp.stop()
