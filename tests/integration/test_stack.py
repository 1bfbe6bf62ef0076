"""test_stack: a real stack (nginx, spawn-fcgi, multiwatch, workers) started by
scripts/run-local.sh answers the foundation routes over HTTP and HTTPS with the
right JSON, headers and logs, and start/status/stop behave as BRIEF section 13 says."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Stack, alive, check, done, is_error_doc,  # noqa: E402
                     json_lines, remove_temp, wait_until)

SECRET = "sk-integrationSECRET0123456789"

with Stack(env={"OPENAI_API_KEY": SECRET, "OPENAI_MODEL": "gpt-test-model"}, keep=True) as st:
    s, h, doc = st.json("GET", "/health")
    check(s == 200 and doc == {"status": "ok", "service": "valerie", "version": doc.get("version")}
          and doc.get("version"), f"GET /health over HTTP: {s} {doc}")
    check(h.get("content-type", "").startswith("application/json"), "health is JSON")
    check(bool(h.get("x-request-id")), "nginx returns X-Request-Id")
    check(h.get("x-content-type-options") == "nosniff", "security header X-Content-Type-Options")
    check(h.get("cache-control") == "no-store", "API answers are not cached")

    s, h, doc = st.json("GET", "/health/live", https=True)
    check(s == 200 and doc and doc.get("status") == "ok", f"GET /health/live over HTTPS: {s}")
    check("strict-transport-security" in h, "HSTS on HTTPS")

    s, h, doc = st.json("GET", "/health/ready")
    check(s == 200 and doc.get("status") == "ready", f"ready: {s} {doc}")

    s, h, doc = st.json("GET", "/")
    paths = {e.get("path") for e in (doc or {}).get("endpoints", [])}
    check(s == 200 and doc.get("service") == "valerie" and {"/health", "/config"} <= paths,
          f"GET / lists endpoints: {s} {sorted(paths)}")
    check("/v1/models/{model}" in paths and not any("*" in p for p in paths),
          f"GET / names a rest-of-path parameter as users write it: {sorted(paths)}")

    s, h, doc = st.json("GET", "/config")
    check(s == 200 and doc.get("openai_model") == "gpt-test-model", "config shows the model")
    check(doc.get("openai_api_key") == "[redacted]", "config redacts the key")
    check(SECRET not in json.dumps(doc), "secret absent from /config")
    r = subprocess.run([st.env["VALERIE_BIN"], "check-config"], env=st.env, capture_output=True,
                       text=True)
    check(r.returncode == 0 and json.loads(r.stdout) == doc,
          "valerie check-config prints the same document as GET /config")

    s, h, doc = st.json("GET", "/no/such/route")
    check(s == 404 and is_error_doc(doc, "not_found"), f"404 is a JSON error: {s} {doc}")
    s, h, doc = st.json("PUT", "/health", body=b"{}")
    check(s == 405 and is_error_doc(doc, "method_not_allowed") and "GET" in h.get("allow", ""),
          f"405 is a JSON error with Allow: {s} {doc} {h.get('allow')}")
    s, h, body = st.request("HEAD", "/health")
    check(s == 200 and body == b"", f"HEAD /health: {s} {body[:40]!r}")

    # The request id nginx made reaches the worker's log line for that request.
    s, h, _ = st.request("GET", "/health/ready")
    rid = h.get("x-request-id")
    found = wait_until(lambda: rid in st.worker_log(), 5)
    check(found, f"request id {rid} appears in the worker log")
    docs, bad = json_lines(st.worker_log())
    check(not bad, f"every worker log line is JSON ({len(bad)} bad: {bad[:2]})")
    line = next((d for d in docs if d.get("request_id") == rid), {})
    check(line.get("route") == "/health/ready" and line.get("status") == 200
          and "duration_ms" in line and line.get("level") == "info",
          f"access line has route, status, duration: {line}")
    # nginx writes its access line after the answer went out: wait for it too.
    wait_until(lambda: rid in st.access_log(), 5)
    adocs, abad = json_lines(st.access_log())
    check(adocs and not abad and any(d.get("request_id") == rid for d in adocs),
          f"nginx access log is JSON with the request id ({len(abad)} bad)")

    # status says what runs.
    r = st.script("status")
    check(r.returncode == 0 and "nginx" in r.stdout and str(st.pool_pid()) in r.stdout,
          f"status while running: rc {r.returncode}: {r.stdout.strip()[:200]}")
    check(len(st.worker_pids()) == 2, f"two worker processes: {st.worker_pids()}")

    # A bad VALERIE_STOP_TIMEOUT is named, not ignored, and stops nothing.
    st.env["VALERIE_STOP_TIMEOUT"] = "10s"
    r = st.script("stop")
    del st.env["VALERIE_STOP_TIMEOUT"]
    check(r.returncode != 0 and "VALERIE_STOP_TIMEOUT" in r.stderr and "'10s'" in r.stderr,
          f"stop refuses VALERIE_STOP_TIMEOUT=10s: rc {r.returncode}: {r.stderr.strip()[:200]}")
    check(alive(st.nginx_pid()) and alive(st.pool_pid()),
          "a refused stop left nginx and the pool running")

    # A second stack in another run dir runs at the same time.
    with Stack(workers=1, threads=2) as st2:
        s2, _, d2 = st2.json("GET", "/health")
        s1, _, d1 = st.json("GET", "/health")
        check(s1 == 200 and s2 == 200, "two stacks answer at once")
        r = st2.script("start")
        check(r.returncode != 0, "start refuses a run dir whose stack already runs")

    # Secrets never reach the logs.
    check(SECRET not in st.worker_log() and SECRET not in st.access_log(),
          "the API key is in no log")
    pids = [st.pool_pid(), st.nginx_pid()] + st.worker_pids()

r = st.script("status")
check(r.returncode != 0, f"status after stop says nothing runs (rc {r.returncode})")
r = st.script("stop")
check(r.returncode == 0 and "nothing was running" in r.stdout,
      f"a second stop succeeds and says so: rc {r.returncode}: {r.stdout.strip()[:200]}")
check(not any(alive(p) for p in pids), f"stop left no process behind: {pids}")
check(not os.path.exists(st.socket_path()), "stop removed the socket")
remove_temp(st.dir, "stack files")

# An invalid variable stops start with one line naming it, and nothing keeps running.
bad = Stack(env={"VALERIE_THREADS": "lots"})
r = bad.script("start")
out = r.stdout + r.stderr
check(r.returncode != 0 and "VALERIE_THREADS" in out, f"invalid config refused: {out.strip()[:200]}")
check(bad.pool_pid() is None or not alive(bad.pool_pid()), "no pool left after a refused start")
bad.stop()
remove_temp(bad.dir, "stack files")

done("test_stack")
