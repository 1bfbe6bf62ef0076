"""test_openai_sdk: the official `openai` Node SDK, unmodified, at the version pinned in
tests/node/package-lock.json, as a client of Valerie through real nginx and the pool
(tests/node/sdk-client.mjs): chat.completions.create whole and streamed (joined deltas, the
usage chunk), a session kept by Valerie through X-Session-Id in per-request headers and in
defaultHeaders, an image sent as a data URL part, models.list(), a model outside VALERIE_MODELS raising APIError 400, and a
stream that breaks mid-way raising APIError. Against the openai provider with the fake
upstream (whose recorded requests show the history Valerie prepends and that the client's
key never goes up), and against the offline provider.

Tools (sdk-client.mjs --only tools), against the openai provider and again against the
anthropic provider (the same fake speaking the Messages API), where the SDK must not notice
the difference: a function tool with a JSON Schema asked for whole (finish_reason
tool_calls, the name and the parsed arguments as asked) and answered with the assistant
message as the SDK returned it plus a tool message; the same streamed, tool_call deltas
joined by index; the SDK's beta.chat.completions.stream() helper (finalChatCompletion and
its arguments.done event) and runTools() whole and streamed; and a session where the
second request carries only the tool message. The fake's recorded requests show the tools,
the assistant's call and the tool result as each wire format has them (tool_use and
tool_result blocks for anthropic), and the session keeps both turns.

Needs node (18 or later, as a fresh Debian 12 has) and npm: without them the test fails
(apt-get install nodejs npm). The SDK is installed with `npm ci` into tests/node when its
node_modules is missing or stale, or into a temp copy when the source tree is read-only
(make distcheck)."""
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (SRCDIR, FakeLLM, Stack, check, done, node_major, npm_install,  # noqa: E402
                     npm_installed_version, npm_locked_version, remove_temp,
                     session_exchanges)

NODE_SRC = os.path.join(SRCDIR, "tests", "node")
NODE_FILES = ("package.json", "package-lock.json", "sdk-client.mjs")
NODE_MIN = 18
T0 = time.monotonic()


def fail_now(what):
    check(False, what)
    done("test_openai_sdk")


# --- node and npm, and the pinned SDK ---------------------------------------------------
node, npm = shutil.which("node"), shutil.which("npm")
if not node or not npm:
    fail_now(f"node and npm are needed for the openai SDK client (node: {node}, npm: {npm}): "
             f"apt-get install nodejs npm")
ver = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
major = node_major(node)
if not check(major >= NODE_MIN, f"node {ver} is {NODE_MIN} or later"):
    fail_now(f"node {ver} is too old for the SDK client: apt-get install nodejs npm "
             f"(Debian 12 has 18)")
want = npm_locked_version(NODE_SRC, "openai")
check(want is not None and want.startswith("4."),
      f"tests/node/package-lock.json pins an openai 4.x (runs on Node 18): {want}")

client_dir, tmp, why = npm_install(NODE_SRC, NODE_FILES, "openai")
if why is not None:
    fail_now(why)
check(npm_installed_version(client_dir, "openai") == want,
      f"the SDK installed is the locked one: {npm_installed_version(client_dir, 'openai')} == {want}")
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


def tool_checks(L, provider, st, sid, rc, sm):
    """Checks a run of sdk-client.mjs --only tools against `provider` behind `st`: what the
    SDK saw, then what the fake upstream received (planned clean just before the run)."""
    summary_ok(L, rc, sm)
    w = case(sm, "tools_whole")
    call = w.get("call") or {}
    check(w.get("first_finish") == "tool_calls" and (call.get("function") or {}).get("name")
          == "get_weather" and w.get("final") == "tool said: sunny in Paris"
          and w.get("final_finish") == "stop",
          f"{L} tools, whole: a get_weather call, then the answer to its result: {w}")
    ts = case(sm, "tools_stream")
    s1, s2 = ts.get("first") or {}, ts.get("second") or {}
    check(s1.get("finish_reason") == "tool_calls" and len(s1.get("tool_calls") or []) == 1
          and s2.get("content") == "tool said: snow in Oslo" and s2.get("finish_reason") == "stop",
          f"{L} tools, streamed: deltas joined by index to one call, then the answer: "
          f"{ts}")
    h = case(sm, "tools_helper_stream")
    check(((h.get("call") or {}).get("function") or {}).get("name") == "get_weather"
          and len(h.get("done_events") or []) == 1,
          f"{L} tools, beta.chat.completions.stream(): finalChatCompletion has the call: {h}")
    for name, city in (("tools_run", "Lima"), ("tools_run_stream", "Kyiv")):
        r = case(sm, name)
        check(r.get("content") == f"tool said: fog in {city}" and r.get("called") == [
            {"city": city, "days": 5 if city == "Lima" else 4}],
            f"{L} tools, {name}: the SDK ran the tool and got the final answer: {r}")
    se = case(sm, "tools_session")
    scall = se.get("call") or {}
    check(se.get("turn_1") == "1" and se.get("turn_2") == "2"
          and se.get("final") == "tool said: rain in Quito",
          f"{L} tools in a session: the second request sends only the tool result: {se}")

    # What reached the upstream.
    reqs = fake.stats()["requests"]
    path = "/chat/completions" if provider == "openai" else "/v1/messages"
    calls = [q for q in reqs if q["path"].endswith(path)]
    check(len(calls) == 11 and all(q["headers"].get("authorization") != f"Bearer {CLIENT_KEY}"
                                   and CLIENT_KEY not in json.dumps(q) for q in calls),
          f"{L} tools: 11 upstream calls (two for each case, one for the stream helper), "
          f"none with the client's key: {len(calls)}")

    def text_of(c):
        if isinstance(c, str):
            return c
        if isinstance(c, list):
            return " ".join(text_of(b.get("content")) if b.get("type") == "tool_result"
                            else b.get("text", "") for b in c if isinstance(b, dict))
        return ""

    def with_text(text):
        return [q for q in calls if any(text in text_of(m.get("content"))
                                        for m in q["body"]["messages"])]

    ask = 'call get_weather {"city":"Quito","days":6}'
    turn2 = with_text("rain in Quito")
    msgs = turn2[0]["body"]["messages"] if len(turn2) == 1 else None
    fn = scall.get("function") or {}
    tool = w.get("tool") or {}
    first = [q for q in with_text("Paris") if len(q["body"]["messages"]) == 1]
    if provider == "openai":
        check(len(first) == 1 and tool and first[0]["body"].get("tools") == [tool]
              and "tool_choice" not in first[0]["body"],
              f"{L} tools: the tool definition reaches the upstream as the SDK sent it: "
              f"{first and first[0]['body'].get('tools')}")
        ok = (msgs is not None and len(msgs) == 3
              and msgs[0] == {"role": "user", "content": ask}
              and msgs[1].get("role") == "assistant" and msgs[1].get("content") is None
              and msgs[1].get("tool_calls") == [scall]
              and msgs[2] == {"role": "tool", "tool_call_id": scall.get("id"),
                              "content": "rain in Quito"})
    else:
        fdef = tool.get("function") or {}
        check(len(first) == 1 and first[0]["body"].get("tools") == [
            {"name": fdef.get("name"), "description": fdef.get("description"),
             "input_schema": fdef.get("parameters")}],
              f"{L} tools: the tool definition reaches Anthropic as name, description, "
              f"input_schema: {first and first[0]['body'].get('tools')}")
        ok = (msgs is not None and msgs == [
            {"role": "user", "content": ask},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": scall.get("id"), "name": "get_weather",
                 "input": {"city": "Quito", "days": 6}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": scall.get("id"),
                 "content": "rain in Quito"}]}])
    check(ok and fn.get("name") == "get_weather",
          f"{L} tools in a session: the upstream got the user message, the assistant's call "
          f"and the tool result Valerie kept: {json.dumps(msgs)[:1500]}")
    code, _, sd = st.json("GET", f"/api/v1/sessions/{sid}")
    got = [(m.get("turn"), m.get("role")) for m in (sd or {}).get("messages") or []]
    check(code == 200 and got == [(1, "user"), (1, "assistant"), (2, "tool"), (2, "assistant")],
          f"{L} GET /api/v1/sessions/{sid}: the call and its result kept by turn: {code} {got}")


CLIENT_KEY = "sk-client-secret-4242"
PNG_1PX = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAAB"
           "JRU5ErkJggg==")  # as in sdk-client.mjs
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
        check(case(sm, "image").get("content") == "echo: what is in this picture? [1 image]",
              f"{L} an image part: the upstream model was shown it: {case(sm, 'image')}")
        check(case(sm, "file").get("content") == "echo: summarize this [1 file]",
              f"{L} a PDF file part: the upstream model was sent it: {case(sm, 'file')}")
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

        q = [x for x in chats if isinstance(x["body"]["messages"][-1].get("content"), list)
             and "image_url" in json.dumps(x["body"]["messages"][-1])]
        check(len(q) == 1 and q[0]["body"]["messages"][-1]["content"] == [
            {"type": "text", "text": "what is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG_1PX,
                                                "detail": "low"}}],
              f"{L} the SDK's image parts reach the upstream as sent: "
              f"{[x['body']['messages'][-1] for x in q]}")
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

        # Tools through the SDK, the fake's request log cleared first.
        fake.plan()
        tsid = "sdk-openai-tools"
        rc, sm = run_client(st, ["--only", "tools"], env={
            "VALERIE_SDK_ECHO": "1", "VALERIE_SDK_SESSION": tsid,
            "VALERIE_SDK_MODEL": "gpt-4o-mini"})
        tool_checks(L, "openai", st, tsid, rc, sm)

    # --- the anthropic provider: the same tool flow, the SDK none the wiser ----------------
    L = "[anthropic]"
    aenv = {"VALERIE_LLM_PROVIDER": "anthropic",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{fake.port}", "ANTHROPIC_API_KEY": "ak-test",
            "ANTHROPIC_MODEL": "claude-test", "ANTHROPIC_MAX_RETRIES": "1",
            "ANTHROPIC_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000", "VALERIE_MODELS": "claude-test"}
    with Stack(workers=1, threads=4, env=aenv) as st:
        fake.plan()
        tsid = "sdk-anthropic-tools"
        rc, sm = run_client(st, ["--only", "tools"], env={
            "VALERIE_SDK_ECHO": "1", "VALERIE_SDK_SESSION": tsid,
            "VALERIE_SDK_MODEL": "claude-test"})
        tool_checks(L, "anthropic", st, tsid, rc, sm)
        reqs = [q for q in fake.stats()["requests"] if q["path"] == "/v1/messages"]
        check(reqs and all(q["headers"].get("x-api-key") == "ak-test"
                           and q["headers"].get("anthropic-version") for q in reqs),
              f"{L} every call went to /v1/messages with Valerie's x-api-key")

    # --- the offline provider --------------------------------------------------------------
    L = "[offline]"
    with Stack(workers=1, threads=4, env={"VALERIE_MODELS": "gpt-4o-mini"}) as st:
        rc, sm = run_client(st, env={"VALERIE_SDK_SESSION": "sdk-offline-1"})
        summary_ok(L, rc, sm)
        c2 = case(sm, "session_turn_2").get("content") or ""
        check("not a language model" in c2 and 'it began with "my name is Ada"' in c2,
              f"{L} the offline provider remembers the session's first message: {c2[:200]!r}")
        check("with 1 file, which it cannot see" in (case(sm, "file").get("content") or ""),
              f"{L} a file part: the offline provider says so: {case(sm, 'file')}")
        check("with 1 image, which it cannot see" in (case(sm, "image").get("content") or ""),
              f"{L} an image part: the offline provider says it cannot see it: "
              f"{case(sm, 'image')}")
        check(case(sm, "models").get("ids") == ["offline", "gpt-4o-mini"],
              f"{L} models.list(): {case(sm, 'models')}")
        code, h, sd = st.json("GET", "/api/v1/sessions/sdk-offline-1")
        check(code == 200 and sd.get("turns") == 3, f"{L} three turns stored: {code} "
              f"{sd and sd.get('turns')}")
finally:
    fake.stop()
    if tmp is not None:
        remove_temp(tmp, "node packages")

print(f"took {time.monotonic() - T0:.1f} s ({T_INSTALL:.1f} s installing)")
done("test_openai_sdk")
