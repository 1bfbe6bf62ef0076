"""test_metrics: GET /metrics answers the whole pool's totals whichever worker serves the
scrape, in a format promtool accepts without a warning; route labels are templates;
counters start at 0 for known label sets and do not go backwards when a worker is killed
and replaced; nginx keeps /metrics internal; a pool started again on the same data dir with
another configuration shows no gauge of a provider it no longer has."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Stack, check, done, kill, wait_until  # noqa: E402


def scrape(st):
    s, h, body = st.request("GET", "/metrics")
    return s, h, body.decode()


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


with Stack(workers=3, threads=4) as st:
    # start returns once one worker answers; the others may still be starting (slowly
    # under sanitizers): wait for all three before counting.
    check(wait_until(lambda: value(scrape(st)[2], "valerie_workers") == 3, 30), "three workers up")
    for i in range(40):
        st.request("GET", "/health")
    for i in range(5):
        st.request("GET", f"/api/v1/sessions/nope-{i}")
    for i in range(6):
        st.request("POST", "/api/v1/chat", body=json.dumps({"message": "m", "session_id": f"met-{i % 2}"}).encode(),
                   headers={"Content-Type": "application/json"})
    s, h, text = scrape(st)
    check(s == 200 and h.get("content-type", "").startswith("text/plain")
          and "version=0.0.4" in h.get("content-type", ""), f"exposition content type: {h.get('content-type')}")
    promtool = shutil.which("promtool")
    if check(promtool is not None, "promtool is installed (apt-get install prometheus)"):
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        check(r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(),
              f"promtool check metrics: no error, no warning: {r.stdout.strip()[:300]} {r.stderr.strip()[:300]}")
    for name in ("valerie_build_info", "valerie_workers", "valerie_inflight_requests",
                 "valerie_http_requests_total", "valerie_http_request_duration_seconds_bucket",
                 "valerie_llm_requests_total", "valerie_llm_request_duration_seconds_bucket",
                 "valerie_llm_tokens_total", "valerie_store_up", "valerie_store_op_duration_seconds_count",
                 "valerie_overhead_seconds_count", "valerie_circuit_state", "valerie_llm_retries_total",
                 "valerie_llm_fallbacks_total"):
        check(re.search(rf"^{name}[{{ ]", text, re.M) is not None, f"{name} is exposed")
    check(value(text, "valerie_http_requests_total", {"route": "/health", "method": "GET", "code": "200"}) == 40,
          "40 requests to /health counted across 3 workers")
    check(value(text, "valerie_http_requests_total",
                {"route": "/api/v1/sessions/{id}", "method": "GET", "code": "404"}) == 5,
          "session routes are counted by template, not by raw path")
    check(not re.search(r'route="/api/v1/sessions/nope', text), "no raw path as a label")
    check(value(text, "valerie_llm_requests_total",
                {"provider": "offline", "model": "offline", "outcome": "ok"}) == 6, "6 chat turns counted")
    check(value(text, "valerie_llm_requests_total", {"provider": "offline", "outcome": "timeout"}) == 0,
          "known label sets start at 0")
    check(value(text, "valerie_workers") == 3, f"valerie_workers is 3: {value(text, 'valerie_workers')}")
    check(value(text, "valerie_store_up") == 1, "the store is up")
    check(value(text, "valerie_build_info", {"version": "0.1.0"}) == 1, "build info carries the version")
    check(value(text, "valerie_http_request_duration_seconds_bucket", {"route": "/health", "le": "10"}) == 40,
          "a bucket boundary sits on the 10 s alert threshold")

    # Whichever worker answers, the totals are the pool's.
    counts = {value(scrape(st)[2], "valerie_http_requests_total",
                    {"route": "/health", "method": "GET", "code": "200"}) for _ in range(12)}
    check(counts == {40.0}, f"12 scrapes (served by several workers) agree: {counts}")

    # A worker killed and replaced: nothing goes backwards.
    before = scrape(st)[2]
    victim = st.worker_pids()[0]
    kill(victim, signal.SIGKILL)
    wait_until(lambda: len(st.worker_pids()) == 3 and victim not in st.worker_pids(), 10)
    after = scrape(st)[2]
    check(value(after, "valerie_http_requests_total", {"route": "/health", "method": "GET", "code": "200"}) == 40
          and value(after, "valerie_llm_requests_total", {"provider": "offline", "outcome": "ok"}) == 6,
          "counters survive a killed worker")
    check(value(after, "valerie_http_requests_total", {"route": "/metrics", "method": "GET", "code": "200"})
          >= value(before, "valerie_http_requests_total", {"route": "/metrics", "method": "GET", "code": "200"}),
          "the scrape counter did not go backwards")
    check(wait_until(lambda: value(scrape(st)[2], "valerie_workers") == 3, 10),
          "valerie_workers counts the live workers after the restart")

    # valerie_sessions_active: the sessions alive in the store (met-0, met-1 above).
    check(value(scrape(st)[2], "valerie_sessions_active") == 2,
          f"two sessions alive: {value(scrape(st)[2], 'valerie_sessions_active')}")
    for i in range(3):
        st.request("POST", "/api/v1/chat", body=json.dumps({"message": "m", "session_id":
                   f"act-{i}"}).encode(), headers={"Content-Type": "application/json"})
    st.request("DELETE", "/api/v1/sessions/met-0")
    check(value(scrape(st)[2], "valerie_sessions_active") == 4,
          f"three more, one deleted: {value(scrape(st)[2], 'valerie_sessions_active')}")

    # nginx keeps /metrics to loopback: from another address it is a JSON 403.
    import socket
    try:
        with socket.create_connection(("127.0.0.1", st.http_port), source_address=("127.0.0.2", 0)) as sk:
            sk.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                c = sk.recv(65536)
                if not c:
                    break
                data += c
        check(data.startswith(b"HTTP/1.1 403") and b'"error"' in data, "/metrics from 127.0.0.2: 403 JSON")
    except OSError as e:
        check(False, f"could not connect from 127.0.0.2: {e}")

# The metrics file outlives the pool (VALERIE_DATA_DIR): a pool started again with another
# configuration must not show the gauges of a provider it no longer has (left at 0, the
# alert ValerieLLMProviderDown would fire for good), while counters go on.
import tempfile  # noqa: E402
data = tempfile.mkdtemp(prefix="valerie-it-data-")
try:
    dead = {"VALERIE_DATA_DIR": data, "VALERIE_LLM_PROVIDER": "openai", "OPENAI_API_KEY": "sk-x",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_MAX_RETRIES": "0"}
    with Stack(workers=2, threads=2, env=dead) as st:
        st.request("POST", "/api/v1/chat", body=json.dumps({"message": "m", "session_id": "gone-1"}).encode(),
                   headers={"Content-Type": "application/json"})
        text = scrape(st)[2]
        check(value(text, "valerie_provider_up", {"provider": "openai"}) == 0,
              "a provider that cannot be reached is down")
    with Stack(workers=2, threads=2, env={"VALERIE_DATA_DIR": data}) as st:
        text = scrape(st)[2]
        check(value(text, "valerie_provider_up", {"provider": "openai"}) is None
              and value(text, "valerie_circuit_state", {"target": "provider:openai"}) is None,
              "a provider taken out of the configuration leaves no gauge behind: "
              + " ".join(ln for ln in text.splitlines() if "openai" in ln and "_total" not in ln and "_seconds" not in ln))
        check(value(text, "valerie_llm_requests_total", {"provider": "openai", "outcome": "error"}) == 1,
              "the counters of the pool before go on")
        check(value(text, "valerie_circuit_state", {"target": "provider:offline"}) == 0,
              "the gauges of this pool are there")
finally:
    shutil.rmtree(data, ignore_errors=True)

done("test_metrics")
