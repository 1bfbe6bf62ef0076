"""test_agents_everything: the agent loop of whole chat turns through nginx and the pool,
against the real, unmodified @modelcontextprotocol/server-everything (pinned in
tests/mcp/package-lock.json, streamableHttp, bound to loopback) and, for the failures,
tests/fakes/fake_mcp.py.

- server-everything: the model (the fake LLM, OpenAI and Anthropic formats, plain and
  streamed) asks for `echo` and `get-sum` in one answer; both run, both results go back,
  the reply carries them, the answer's tool_calls list both, the session stores the
  user's message, the assistant's two calls, the two results and the final answer. The
  same with the offline provider's `/tool` rule, and an unknown tool there.
- Failures, each through a chat turn that still answers 200, each visible in the
  answer's tool_calls, in the stored messages and in the pool's JSON log (a line naming
  the agent and the outcome; no message text in the log): an agent that went down after
  its tools were listed, one never up, a tool slower than MCP_TIMEOUT (idempotent: tried
  again, then given up), a non-idempotent tool that timed out after reaching the agent
  (called once), isError and JSON-RPC error answers, a tool the agent no longer has, a
  session the server forgot (404 and 400: the call is made again in a new session and
  succeeds), the circuit opening after MCP_CIRCUIT_BREAKER_FAILURE_THRESHOLD failures and
  closing after MCP_CIRCUIT_BREAKER_RESET_TIMEOUT.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (free_port, EverythingServer, FakeLLM, FakeMCP, SseParser, Stack, check,  # noqa: E402
                     done, everything_install, json_lines, post_chat, remove_temp, wait_until)

# A word that only the users' messages carry: it must never show in the log.
SECRET = "marmalade7"
TWO = (f'call everything__echo {{"message":"hi {SECRET}"}} and '
       'call everything__get-sum {"a":2,"b":3}')


def openai_env(fake):
    return {"VALERIE_LLM_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{fake.port}/v1", "OPENAI_MODEL": "gpt-test"}


def anthropic_env(fake):
    return {"VALERIE_LLM_PROVIDER": "anthropic", "ANTHROPIC_API_KEY": "ak-test",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{fake.port}",
            "ANTHROPIC_MODEL": "claude-test"}


def turn_messages(st, sid, turn):
    """The stored messages of one turn of session `sid`."""
    s, _, doc = st.json("GET", f"/api/v1/sessions/{sid}")
    return [m for m in (doc or {}).get("messages", []) if m.get("turn") == turn]


def chat_stream(st, body):
    """A streamed chat turn: (status, event names, the done event's document)."""
    s, _, raw = st.request("POST", "/api/v1/chat", body=json.dumps(dict(body, stream=True)),
                           headers={"Content-Type": "application/json"}, timeout=60)
    ev = SseParser().feed(raw, final=True)
    final = {}
    if ev and ev[-1]["event"] == "done":
        try:
            final = json.loads(ev[-1]["data"])
        except ValueError:
            pass
    return s, [e["event"] for e in ev], final


def log_docs(st):
    docs, _ = json_lines(st.worker_log())
    return [d for d in docs if isinstance(d, dict)]


def agent_lines(st, agent, outcome, tool=None):
    """The pool's log lines about agent `agent` with `outcome` (and `tool`)."""
    return [d for d in log_docs(st) if d.get("agent") == agent and d.get("outcome") == outcome
            and (tool is None or d.get("tool") == tool)]


def logged(st, agent, outcome, tool=None):
    """Waits for a log line about the agent and outcome; returns the lines."""
    wait_until(lambda: agent_lines(st, agent, outcome, tool), 10)
    return agent_lines(st, agent, outcome, tool)


def renewals(st):
    """The log lines saying agent demo's MCP session was made anew during a call of echo."""
    return [d for d in agent_lines(st, "demo", "ok", "echo")
            if d.get("msg") == "agent session renewed"]


def no_secret_logged(st, what):
    bad = [d for d in log_docs(st) if SECRET in json.dumps(d)]
    check(not bad, f"{what}: no log line carries the users' words: {bad[:2]}")


def stored_pair(st, sid, turn, doc):
    """Checks the stored turn: user, assistant with the calls, one tool result per call in
    the same order with the answer's contents, the final assistant with the reply."""
    msgs = turn_messages(st, sid, turn)
    roles = [m["role"] for m in msgs]
    calls = (doc or {}).get("tool_calls") or []
    n = len(calls)
    asked = msgs[1].get("tool_calls") or [] if len(msgs) > 1 else []
    results = msgs[2:2 + n]
    ok = (roles == ["user", "assistant"] + ["tool"] * n + ["assistant"]
          and [c["id"] for c in asked] == [c["id"] for c in calls]
          and [m.get("tool_call_id") for m in results] == [c["id"] for c in calls]
          and [m.get("content") for m in results] == [c["content"] for c in calls]
          and msgs[-1].get("content") == doc.get("reply"))
    return ok, roles


# --- server-everything through a chat turn ------------------------------------------------
def everything_openai(ev, fake):
    env = dict(openai_env(fake), MCP_EVERYTHING_URL=ev.url)
    with Stack(workers=1, threads=4, env=env) as st:
        fake.plan()
        s, _, doc = post_chat(st, {"message": TWO, "session_id": "ev-o1"})
        reqs = fake.stats()["requests"]
        names = [t["function"]["name"] for t in (reqs[0]["body"].get("tools") or [])] \
            if reqs else []
        check("everything__echo" in names and "everything__get-sum" in names,
              f"openai: server-everything's tools offered as everything__<tool> "
              f"({len(names)} tools)")
        asked = reqs[0]["body"] if reqs else {}
        second = reqs[1]["body"]["messages"] if len(reqs) > 1 else []
        check(len(reqs) == 2 and [m["role"] for m in second[-3:]] == ["assistant", "tool", "tool"]
              and [c["function"]["name"] for c in second[-3].get("tool_calls", [])]
              == ["everything__echo", "everything__get-sum"],
              f"openai: one model answer asked for both, both results went back: "
              f"{[m['role'] for m in second]} ({len(reqs)} model calls, "
              f"tool_choice {asked.get('tool_choice')})")
        calls = (doc or {}).get("tool_calls") or []
        check(s == 200 and f"Echo: hi {SECRET}" in doc["reply"] and "5" in doc["reply"]
              and doc["reply"] == f"tool said: Echo: hi {SECRET} | The sum of 2 and 3 is 5.",
              f"openai: the reply carries both results: {s} {(doc or {}).get('reply')}")
        check([(c["name"], c["tool"], c["is_error"]) for c in calls]
              == [("everything", "echo", False), ("everything", "get-sum", False)]
              and calls[1]["content"] == "The sum of 2 and 3 is 5.",
              f"openai: the answer's tool_calls list both: {calls}")
        ok, roles = stored_pair(st, "ev-o1", 1, doc)
        check(ok, f"openai: the session stores user, assistant with 2 calls, 2 results, the "
              f"final answer: {roles}")

        # streamed: the model's stream carries the two calls by index
        fake.plan()
        s, names, final = chat_stream(st, {"message": TWO.replace("2,", "20,"),
                                           "session_id": "ev-o2"})
        calls = final.get("tool_calls") or []
        check(s == 200 and names[-1:] == ["done"] and fake.stats()["requests"][0]["body"]
              .get("stream") is True and "The sum of 20 and 3 is 23." in final.get("reply", "")
              and [c["tool"] for c in calls] == ["echo", "get-sum"],
              f"openai streamed: both calls read from indexed fragments and run: "
              f"{final.get('reply')} {[c.get('tool') for c in calls]}")
        ok, roles = stored_pair(st, "ev-o2", 1, final)
        check(ok, f"openai streamed: the session stores the calls and results: {roles}")
        no_secret_logged(st, "openai")


def everything_anthropic(ev, fake):
    env = dict(anthropic_env(fake), MCP_EVERYTHING_URL=ev.url)
    with Stack(workers=1, threads=4, env=env) as st:
        for stream in (False, True):
            sid = f"ev-a{int(stream)}"
            fake.plan()
            if stream:
                s, _, doc = chat_stream(st, {"message": TWO, "session_id": sid})
            else:
                s, _, doc = post_chat(st, {"message": TWO, "session_id": sid})
            reqs = fake.stats()["requests"]
            names = [t["name"] for t in (reqs[0]["body"].get("tools") or [])] if reqs else []
            last = reqs[-1]["body"]["messages"][-1]["content"] if len(reqs) == 2 else []
            calls = (doc or {}).get("tool_calls") or []
            check(s == 200 and "everything__echo" in names and len(reqs) == 2
                  and [b.get("type") for b in last] == ["tool_result", "tool_result"]
                  and doc["reply"] == f"tool said: Echo: hi {SECRET} | The sum of 2 and 3 is 5."
                  and [(c["tool"], c["is_error"]) for c in calls]
                  == [("echo", False), ("get-sum", False)],
                  f"anthropic{' streamed' if stream else ''}: two tool_use blocks, two "
                  f"tool_result blocks back, both results in the reply: {s} "
                  f"{(doc or {}).get('reply')}")
            ok, roles = stored_pair(st, sid, 1, doc)
            check(ok, f"anthropic{' streamed' if stream else ''}: stored: {roles}")


def everything_offline(ev):
    with Stack(workers=1, threads=4, env={"MCP_EVERYTHING_URL": ev.url}) as st:
        for n, (msg, want, tool) in enumerate((
                ('/tool everything.echo {"message":"x"}', "Echo: x", "echo"),
                ('/tool everything.get-sum {"a":1,"b":2}', "The sum of 1 and 2 is 3.",
                 "get-sum"))):
            sid = f"ev-off{n}"
            s, _, doc = post_chat(st, {"message": msg, "session_id": sid})
            calls = (doc or {}).get("tool_calls") or []
            check(s == 200 and want in doc["reply"] and len(calls) == 1
                  and calls[0]["tool"] == tool and calls[0]["content"] == want
                  and calls[0]["is_error"] is False,
                  f"offline /tool everything.{tool}: the reply quotes the result: "
                  f"{(doc or {}).get('reply')}")
            ok, roles = stored_pair(st, sid, 1, doc)
            check(ok, f"offline /tool everything.{tool}: stored: {roles}")
        s, _, doc = post_chat(st, {"message": "/tool everything.no-such-tool {}",
                                   "session_id": "ev-off-unknown"})
        calls = (doc or {}).get("tool_calls") or []
        check(s == 200 and calls and calls[0]["is_error"] is True
              and "no-such-tool" in calls[0]["content"],
              f"offline: an unknown tool of a real server is an error result, the turn 200: "
              f"{calls}")
        ok, roles = stored_pair(st, "ev-off-unknown", 1, doc)
        check(ok, f"offline: the unknown tool's error is stored: {roles}")
        check(logged(st, "everything", "error", "no-such-tool"),
              "offline: the log names the agent, the tool and the outcome error")


def everything(fake):
    node, pkg, tmpdir, why = everything_install()
    if not check(why is None, f"server-everything installed from tests/mcp's lockfile ({why})"):
        return
    ev = EverythingServer(node, pkg)
    try:
        everything_openai(ev, fake)
        everything_anthropic(ev, fake)
        everything_offline(ev)
    finally:
        ev.stop()
        if tmpdir:
            remove_temp(tmpdir, "node packages")


# --- failures, through chat turns with the fake MCP server ---------------------------------
def one_call(st, fake, sid, text):
    """A chat turn asking for one tool: (status, answer, its one tool_calls entry)."""
    fake.plan()
    s, _, doc = post_chat(st, {"message": text, "session_id": sid}, timeout=120)
    calls = (doc or {}).get("tool_calls") or [{}]
    return s, doc, calls[0]


def failure(st, fake, sid, text, what, agent, outcome, tool, content_has, is_error=True):
    """One failing (or recovering) call through a turn: 200, the tool_calls entry, the
    stored result, the model saw the text, and a log line with agent and outcome."""
    s, doc, c = one_call(st, fake, sid, text)
    check(s == 200 and c.get("is_error") is is_error and content_has in c.get("content", "")
          and doc["reply"] == "tool said: " + c.get("content", ""),
          f"{what}: the turn is 200, tool_calls says is_error {is_error}: "
          f"{c.get('content')!r}")
    ok, roles = stored_pair(st, sid, 1, doc)
    check(ok, f"{what}: the stored messages hold the call and its result: {roles}")
    if outcome is not None:
        lines = logged(st, agent, outcome, tool)
        check(lines and lines[-1]["level"] == "warning",
              f"{what}: the log has a line naming agent {agent} and outcome {outcome}: "
              f"{lines[-1:] or [d for d in log_docs(st) if d.get('agent')][-3:]}")
    return doc, c


def failures(fake):
    mcp = FakeMCP()
    gone = FakeMCP()
    try:
        # a tool the agent lists now and forgets later: in the cached list, then unknown
        mcp.reset(slow_seconds=3, extra_tools=["ghost"])
        env = dict(openai_env(fake), MCP_DEMO_URL=mcp.url, MCP_GONE_URL=gone.url,
                   MCP_DEAD_URL=f"http://127.0.0.1:{free_port()}/mcp", MCP_TIMEOUT="1",
                   MCP_MAX_RETRIES="1", MCP_CIRCUIT_BREAKER_FAILURE_THRESHOLD="1000")
        with Stack(workers=1, threads=4, env=env) as st:
            s, doc, c = one_call(st, fake, "f-up", f'call gone__echo {{"message":"{SECRET}"}}')
            names = [t["function"]["name"] for t in
                     fake.stats()["requests"][0]["body"].get("tools", [])]
            check(s == 200 and c.get("is_error") is False and "demo__ghost" in names
                  and "gone__echo" in names and not any(n.startswith("dead__") for n in names),
                  f"the agents up offer their tools, the dead one none, the turn runs: "
                  f"{len(names)} tools")
            check(logged(st, "dead", "unreachable"),
                  "the agent never up: the log says its tools/list was unreachable")

            # agent down: its tools were listed, then it stopped
            gone.stop()
            failure(st, fake, "f-down", 'call gone__echo {"message":"after"}',
                    "agent down", "gone", "unavailable", "echo", "agent gone is unavailable")

            # slow past MCP_TIMEOUT: an idempotent tool is tried again, then given up
            mcp.reset(slow_seconds=3)
            _, c = failure(st, fake, "f-slow", "call demo__slow_idem", "slow past MCP_TIMEOUT",
                           "demo", "timeout", "slow_idem", "did not answer in time")
            line = agent_lines(st, "demo", "timeout", "slow_idem")[-1:]
            check(mcp.stats()["calls"].get("slow_idem") == 2 and line
                  and line[0].get("attempts") == 2,
                  f"the idempotent slow tool was called 1 + MCP_MAX_RETRIES times: "
                  f"{mcp.stats()['calls']} {line}")

            # non-idempotent: the first call reached the agent and timed out: not again
            failure(st, fake, "f-once", "call demo__slow", "non-idempotent timeout", "demo",
                    "timeout", "slow", "did not answer in time")
            line = agent_lines(st, "demo", "timeout", "slow")[-1:]
            check(mcp.stats()["calls"].get("slow") == 1 and line and line[0].get("attempts") == 1,
                  f"the non-idempotent tool was called once, not retried: "
                  f"{mcp.stats()['calls'].get('slow')} {line}")

            # isError and a JSON-RPC error, asked for together
            fake.plan()
            # (the isError text quotes the user's words: the log must not)
            s, _, doc = post_chat(st, {"message": 'call demo__fail {"message": "' + SECRET
                                       + '"} and call demo__rpc_error {}',
                                       "session_id": "f-err"})
            calls = (doc or {}).get("tool_calls") or []
            quoted = "first problem\nsecond problem\nyou sent: " + SECRET
            check(s == 200 and [(c["tool"], c["is_error"]) for c in calls]
                  == [("fail", True), ("rpc_error", True)]
                  and calls[0]["content"] == quoted
                  and "boom" in calls[1]["content"]
                  and doc["reply"] == "tool said: " + quoted + " | " + calls[1]["content"],
                  f"isError and JSON-RPC error: error results, the model read both: {calls}")
            ok, roles = stored_pair(st, "f-err", 1, doc)
            check(ok, f"isError and JSON-RPC error: stored: {roles}")
            check(logged(st, "demo", "error", "fail") and logged(st, "demo", "error", "rpc_error"),
                  "isError and JSON-RPC error: logged with agent demo, outcome error")

            # unknown tool: offered from the cached list, gone at the agent
            mcp.config(extra_tools=[])
            failure(st, fake, "f-unknown", "call demo__ghost", "unknown tool", "demo", "error",
                    "ghost", "Tool ghost not found")

            # the server forgets the session: the call goes again in a new session
            for status in (404, 400):
                mcp.reset(forget_status=status)
                sid = f"f-forget{status}"
                one_call(st, fake, sid + "a", 'call demo__echo {"message":"one"}')
                before = mcp.stats()
                renewed0 = len(renewals(st))
                mcp.forget()
                failure(st, fake, sid, 'call demo__echo {"message":"two"}',
                        f"a session forgotten with {status}", "demo", None, "echo",
                        "Echo: two", is_error=False)
                after = mcp.stats()
                check(after["initialize"] == before["initialize"] + 1
                      and after["calls"].get("echo") == before["calls"].get("echo", 0) + 1,
                      f"forgotten with {status}: one new session, the tool called once: "
                      f"initialize {before['initialize']}->{after['initialize']}, echo "
                      f"{before['calls'].get('echo')}->{after['calls'].get('echo')}")
                wait_until(lambda: len(renewals(st)) > renewed0, 10)
                renewed = renewals(st)
                check(len(renewed) == renewed0 + 1 and renewed[-1]["level"] == "info"
                      and renewed[-1]["outcome"] == "ok",
                      f"forgotten with {status}: an info line says agent demo's session was "
                      f"renewed and the call ok: {renewed[-1:]}")
            no_secret_logged(st, "failures")

        # the circuit: opens after the threshold, closes after the reset timeout
        mcp.reset(fail_first=1000)
        env = dict(openai_env(fake), MCP_CB_URL=mcp.url, MCP_MAX_RETRIES="0",
                   MCP_CIRCUIT_BREAKER_FAILURE_THRESHOLD="2",
                   MCP_CIRCUIT_BREAKER_RESET_TIMEOUT="1")
        with Stack(workers=1, threads=4, env=env) as st:
            for i in (1, 2):
                failure(st, fake, f"c-fail{i}", "call cb__flaky", f"circuit: failure {i}", "cb",
                        "unavailable", "flaky", "agent cb is unavailable")
            _, c = failure(st, fake, "c-open", "call cb__flaky", "circuit open", "cb",
                           "circuit_open", "flaky", "circuit breaker is open")
            check(mcp.stats()["calls"].get("flaky") == 2,
                  f"the call refused by the open circuit never reached the agent: "
                  f"{mcp.stats()['calls'].get('flaky')}")

            def circuit():
                s, _, doc = st.json("GET", "/health/detailed")
                agents = ((doc or {}).get("dependencies") or {}).get("agents") or \
                    (doc or {}).get("agents") or []
                return next((a.get("circuit") for a in agents if a.get("name") == "cb"), None)

            check(circuit() == "open", f"/health/detailed: the circuit of cb is open: "
                  f"{st.json('GET', '/health/detailed')[2]}")
            mcp.config(fail_first=0)
            check(wait_until(lambda: circuit() != "open", 60, 0.2),
                  f"after MCP_CIRCUIT_BREAKER_RESET_TIMEOUT the circuit lets a probe through: "
                  f"{circuit()}")
            failure(st, fake, "c-closed", "call cb__flaky", "circuit: the probe succeeds", "cb",
                    None, "flaky", "flaky ok after 3 calls", is_error=False)
            check(circuit() == "closed", f"a good probe closes the circuit: {circuit()}")
    finally:
        gone.stop()
        mcp.stop()


fake = FakeLLM()
try:
    everything(fake)
    failures(fake)
finally:
    fake.stop()
done("test_agents_everything")
