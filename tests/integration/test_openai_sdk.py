"""test_openai_sdk: the official `openai` Node SDK, unmodified, at the version pinned in
tests/node/package-lock.json, as a client of Valerie through real nginx and the pool
(tests/node/sdk-client.mjs): chat.completions.create whole and streamed (joined deltas, the
usage chunk), a session kept by Valerie through X-Session-Id in per-request headers and in
defaultHeaders, models.list(), a model outside VALERIE_MODELS raising APIError 400, and a
stream that breaks mid-way raising APIError. Against the openai provider with the fake
upstream (whose recorded requests show the history Valerie prepends and that the client's
key never goes up), and against the offline provider.

Needs node (18 or later, as a fresh Debian 12 has) and npm: without them the test fails
(apt-get install nodejs npm). The SDK is installed with `npm ci` into tests/node when its
node_modules is missing or stale, or into a temp copy when the source tree is read-only
(make distcheck)."""
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRCDIR, FakeLLM, Stack, check, done, session_exchanges  # noqa: E402

NODE_SRC = os.path.join(SRCDIR, "tests", "node")
NODE_FILES = ("package.json", "package-lock.json", "sdk-client.mjs")
NODE_MIN = 18
T0 = time.monotonic()


def fail_now(what):
    check(False, what)
    done("test_openai_sdk")


def locked_version(d):
    try:
        with open(os.path.join(d, "package-lock.json")) as f:
            return json.load(f)["packages"]["node_modules/openai"]["version"]
    except (OSError, ValueError, KeyError):
        return None


def installed_version(d):
    try:
        with open(os.path.join(d, "node_modules", "openai", "package.json")) as f:
            return json.load(f).get("version")
    except (OSError, ValueError):
        return None


def writable(d):
    try:
        return os.access(d, os.W_OK) and bool(os.stat(d).st_mode & stat.S_IWUSR)
    except OSError:
        return False


def npm_ci(d):
    t = time.monotonic()
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=d, capture_output=True,
                       text=True, timeout=600,
                       env=dict(os.environ, npm_config_update_notifier="false"))
    print(f"npm ci in {d}: exit {r.returncode} in {time.monotonic() - t:.1f} s")
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:])
    return r.returncode == 0


# --- node and npm, and the pinned SDK ---------------------------------------------------
node, npm = shutil.which("node"), shutil.which("npm")
if not node or not npm:
    fail_now(f"node and npm are needed for the openai SDK client (node: {node}, npm: {npm}): "
             f"apt-get install nodejs npm")
r = subprocess.run([node, "--version"], capture_output=True, text=True)
ver = r.stdout.strip()
try:
    major = int(ver.lstrip("v").split(".")[0])
except ValueError:
    major = 0
if not check(major >= NODE_MIN, f"node {ver} is {NODE_MIN} or later"):
    fail_now(f"node {ver} is too old for the SDK client: apt-get install nodejs npm "
             f"(Debian 12 has 18)")
want = locked_version(NODE_SRC)
check(want is not None and want.startswith("4."),
      f"tests/node/package-lock.json pins an openai 4.x (runs on Node 18): {want}")

tmp = None
client_dir = NODE_SRC
if installed_version(NODE_SRC) != want:
    if writable(NODE_SRC):
        ok = npm_ci(NODE_SRC)
    else:  # make distcheck: the source tree is read-only
        tmp = tempfile.mkdtemp(prefix="valerie-node-")
        client_dir = os.path.join(tmp, "node")
        os.mkdir(client_dir)
        for f in NODE_FILES:
            shutil.copy(os.path.join(NODE_SRC, f), client_dir)
        ok = npm_ci(client_dir)
    if not ok:
        fail_now(f"npm ci --no-audit --no-fund in {client_dir} failed (see above)")
check(installed_version(client_dir) == want,
      f"the SDK installed is the locked one: {installed_version(client_dir)} == {want}")
T_INSTALL = time.monotonic() - T0


def run_client(st, extra_args=(), env=None, timeout=120):
    """Runs sdk-client.mjs against the stack; returns (exit code, summary or None)."""
    e = dict(os.environ)
    e.update(env or {})
    e["OPENAI_API_KEY"] = CLIENT_KEY
    t = time.monotonic()
    r = subprocess.run([node, os.path.join(client_dir, "sdk-client.mjs"),
                        f"http://127.0.0.1:{st.http_port}/v1", *extra_args],
                       cwd=client_dir, env=e, capture_output=True, text=True, timeout=timeout)
    print(f"node sdk-client.mjs {' '.join(extra_args)}: exit {r.returncode} in "
          f"{time.monotonic() - t:.1f} s")
    try:
        summary = json.loads(r.stdout)
    except ValueError:
        summary = None
    if r.returncode != 0 or summary is None:
        print("stdout:", r.stdout[-4000:])
        print("stderr:", r.stderr[-4000:])
    elif r.stderr.strip():
        print("stderr:", r.stderr[-2000:])
    return r.returncode, summary


def case(summary, name):
    return (summary or {}).get("cases", {}).get(name) or {}


def summary_ok(L, rc, summary):
    return check(rc == 0 and isinstance(summary, dict) and summary.get("ok") is True
                 and summary.get("failures") == [] and summary.get("sdk") == want,
                 f"{L} the SDK client ran clean (openai {summary and summary.get('sdk')} on "
                 f"node {summary and summary.get('node')}): exit {rc}, failures "
                 f"{summary and summary.get('failures')}")


CLIENT_KEY = "sk-client-secret-4242"
fake = FakeLLM()
try:
    # --- the openai provider against the fake upstream ---------------------------------
    L = "[openai]"
    sid = "sdk-openai-1"
    env = {"VALERIE_LLM_PROVIDER": "openai", "OPENAI_BASE_URL": f"http://127.0.0.1:{fake.port}/v1",
           "OPENAI_API_KEY": "sk-test", "OPENAI_MODEL": "gpt-test", "OPENAI_MAX_RETRIES": "1",
           "OPENAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000",
           "VALERIE_MODELS": "gpt-test,gpt-4o-mini"}
    with Stack(workers=2, threads=4, env=env) as st:
        fake.plan()
        rc, sm = run_client(st, env={"VALERIE_SDK_ECHO": "1", "VALERIE_SDK_SESSION": sid,
                                     "VALERIE_SDK_MODEL": "gpt-4o-mini",
                                     "VALERIE_SDK_BAD_MODEL": "gpt-5"})
        summary_ok(L, rc, sm)
        w = case(sm, "whole")
        check(w.get("content") == "echo: hello from the sdk" and w.get("model") == "gpt-4o-mini"
              and w.get("session_turn") is None,
              f"{L} create, whole: the upstream's answer, the model asked for: {w}")
        check(case(sm, "session_turn_1").get("session_turn") == "1"
              and case(sm, "session_turn_2").get("session_turn") == "2",
              f"{L} X-Session-Id per request, then in defaultHeaders: X-Session-Turn 1, 2")
        s = case(sm, "stream")
        check(s.get("content") == "echo: stream this answer please" and s.get("role") == "assistant"
              and s.get("finish_reason") == "stop" and s.get("chunks", 0) >= 4
              and isinstance(s.get("usage"), dict) and s.get("usage_chunk_last") is True,
              f"{L} create, streamed: deltas join to the answer, usage chunk last: {s}")
        check(case(sm, "stream_session_turn_3").get("content") == "echo: and now streamed",
              f"{L} a streamed session turn: {case(sm, 'stream_session_turn_3')}")
        check(case(sm, "models").get("ids") == ["gpt-test", "gpt-4o-mini"],
              f"{L} models.list(): OPENAI_MODEL then VALERIE_MODELS: {case(sm, 'models')}")
        e = case(sm, "model_not_allowed")
        check(e.get("name") == "BadRequestError" and e.get("status") == 400
              and e.get("code") == "model_not_allowed" and e.get("api_error") is True,
              f"{L} a model outside VALERIE_MODELS: the SDK raises APIError 400: {e}")

        # What the upstream saw: the client's messages, Valerie's history, Valerie's key.
        reqs = fake.stats()["requests"]
        chats = [q for q in reqs if q["path"].endswith("/chat/completions")]

        def sent(q):
            return [(m.get("role"), m.get("content")) for m in q["body"]["messages"]]

        def by_last(text):
            return [q for q in chats if sent(q) and sent(q)[-1] == ("user", text)]

        q = by_last("hello from the sdk")
        check(len(q) == 1 and sent(q[0]) == [("system", "Be brief."),
                                             ("user", "hello from the sdk")]
              and q[0]["body"].get("model") == "gpt-4o-mini",
              f"{L} no session: the upstream gets the client's messages as sent: "
              f"{[sent(x) for x in q]}")
        q = by_last("what is my name?")
        check(len(q) == 1 and sent(q[0]) == [("user", "my name is Ada"),
                                             ("assistant", "echo: my name is Ada"),
                                             ("user", "what is my name?")],
              f"{L} session turn 2: the SDK sent one message, the upstream got user, assistant, "
              f"user: {[sent(x) for x in q]}")
        q = by_last("and now streamed")
        check(len(q) == 1 and q[0]["body"].get("stream") is True and sent(q[0]) == [
            ("user", "my name is Ada"), ("assistant", "echo: my name is Ada"),
            ("user", "what is my name?"), ("assistant", "echo: what is my name?"),
            ("user", "and now streamed")],
            f"{L} streamed session turn 3: the upstream got the whole history: "
            f"{[sent(x) for x in q]}")
        auths = {q["headers"].get("authorization") for q in chats}
        check(auths == {"Bearer sk-test"} and not any(CLIENT_KEY in json.dumps(q) for q in reqs),
              f"{L} the upstream sees Valerie's key, never the client's: {auths}")
        check(not any(q["body"].get("model") == "gpt-5" for q in chats),
              f"{L} the refused model never reached the upstream")
        code, h, sd = st.json("GET", f"/api/v1/sessions/{sid}")
        turns, p = session_exchanges(sd)
        check(code == 200 and turns == [1, 2, 3] and not p,
              f"{L} GET /api/v1/sessions/{sid}: the SDK's three turns: {code} {turns} {p}")

        # A stream that breaks after it started: the SDK raises on Valerie's error chunk.
        for mode in ("cut-mid-stream", "error-event-mid-stream"):
            fake.plan({"mode": mode, "after_chunks": 2})
            rc, sm = run_client(st, ["--only", "stream-error"],
                                env={"VALERIE_SDK_MODEL": "gpt-4o-mini"})
            se = case(sm, "stream_error")
            raised = se.get("raised") or {}
            check(rc == 0 and sm and sm.get("ok") is True and raised.get("api_error") is True
                  and se.get("chunks", 0) >= 1 and se.get("content", "").startswith("echo: one")
                  and fake.stats()["calls"] == 1,
                  f"{L} upstream {mode}: content, then the SDK raises APIError "
                  f"({raised.get('name')}: {raised.get('message')}), not retried: exit {rc} "
                  f"{se}")

    # --- the offline provider --------------------------------------------------------------
    L = "[offline]"
    with Stack(workers=1, threads=4, env={"VALERIE_MODELS": "gpt-4o-mini"}) as st:
        rc, sm = run_client(st, env={"VALERIE_SDK_SESSION": "sdk-offline-1"})
        summary_ok(L, rc, sm)
        c2 = case(sm, "session_turn_2").get("content") or ""
        check("not a language model" in c2 and 'it began with "my name is Ada"' in c2,
              f"{L} the offline provider remembers the session's first message: {c2[:200]!r}")
        check(case(sm, "models").get("ids") == ["offline", "gpt-4o-mini"],
              f"{L} models.list(): {case(sm, 'models')}")
        code, h, sd = st.json("GET", "/api/v1/sessions/sdk-offline-1")
        check(code == 200 and sd.get("turns") == 3, f"{L} three turns stored: {code} "
              f"{sd and sd.get('turns')}")
finally:
    fake.stop()
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)

print(f"took {time.monotonic() - T0:.1f} s ({T_INSTALL:.1f} s installing)")
done("test_openai_sdk")
