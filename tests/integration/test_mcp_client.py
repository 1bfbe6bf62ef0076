"""test_mcp_client: the MCP client (app/mcp.c) and the agents (app/agents.c), through the
driver program tests/integration/mcp_client, against the real, unmodified
@modelcontextprotocol/server-everything (pinned in tests/mcp/package-lock.json, bound to
loopback) and against tests/fakes/fake_mcp.py for what a real server does not do on
demand: JSON and SSE answers with priming events and notifications before the result,
forgotten sessions (404 and 400), sessions ended by DELETE (at exit, within a bound), both
protocol versions, pagination, isError results,
JSON-RPC errors, the answer cap, slow and failing tools counted at the server (retries only
when the call never reached the agent or the tool is idempotent), the circuit opening and
its half-open probe, a hung agent (concurrent callers wait one timeout for it, not one
after another), tool-list refresh on list_changed, tool names mapped for OpenAI
(reversible, no collisions), the agent settings' validation and /config, the agent
metrics; and one run of the driver under valgrind with no leak."""
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (BIN, EverythingServer, FakeMCP, check, done, everything_install,  # noqa: E402
                     free_port, remove_temp, temp_dir)

BUILDDIR = os.environ.get("VALERIE_BUILDDIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
DRIVER = os.path.join(BUILDDIR, "tests", "integration", "mcp_client")
OPENAI_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TMP = temp_dir("valerie-mcp-")
RUNS = [0]


def drive(env, *cmds, on_wait=None, valgrind=None, timeout=120):
    """Runs the driver with `cmds` (tuples) in one process; returns its JSON lines. The
    environment holds only the agents `env` names (none inherited). `on_wait` runs when
    the driver waits at a wait-file command."""
    RUNS[0] += 1
    data = os.path.join(TMP, f"run{RUNS[0]}")
    os.makedirs(data)
    e = {k: v for k, v in os.environ.items() if not k.startswith("MCP_")}
    e.update({"VALERIE_DATA_DIR": data, "LOG_LEVEL": "debug"})
    e.update(env)
    args = []
    for c in cmds:
        args += [str(x) for x in c] + ["--"]
    prefix = []
    if valgrind:
        prefix = [shutil.which("valgrind"), "--quiet", "--leak-check=full",
                  "--show-leak-kinds=definite,indirect,possible",
                  "--errors-for-leak-kinds=definite,indirect,possible", "--error-exitcode=99",
                  f"--log-file={valgrind}"]
    errlog = open(os.path.join(data, "stderr"), "w")
    p = subprocess.Popen(prefix + [DRIVER] + args, env=e, stdout=subprocess.PIPE,
                         stderr=errlog, text=True)
    out = []
    t0 = time.monotonic()
    for line in p.stdout:
        doc = json.loads(line)
        out.append(doc)
        if isinstance(doc, dict) and "waiting" in doc:
            if on_wait:
                on_wait(out)
            open(doc["waiting"], "w").close()
        if time.monotonic() - t0 > timeout:
            break
    rc = p.wait(timeout)
    errlog.close()
    drive.rc = rc
    drive.stderr = open(os.path.join(data, "stderr")).read()
    if rc not in (0, 78):
        print(f"driver exit {rc}; stderr: {drive.stderr[-3000:]}")
    return out


def wait_cmd():
    RUNS[0] += 1
    return ("wait-file", os.path.join(TMP, f"go{RUNS[0]}"))


def agent_env(fake, name="FAKE", **extra):
    e = {f"MCP_{name}_URL": fake.url}
    e.update({k: str(v) for k, v in extra.items()})
    return e


def raw_env(url, **extra):
    e = {"VALERIE_TEST_MCP_URL": url}
    e.update({k: str(v) for k, v in extra.items()})
    return e


# --- the real server ---------------------------------------------------------------------
def real_server():
    node, pkg, tmpdir, why = everything_install()
    if not check(why is None, f"server-everything installed from tests/mcp's lockfile ({why})"):
        return
    ev = EverythingServer(node, pkg)
    try:
        env = dict(raw_env(ev.url), MCP_EVERYTHING_URL=ev.url)
        w = wait_cmd()
        sessions = []

        def forget(out):
            sessions.append(out[-2].get("session"))
            sessions.append(ev.delete_session(out[-2].get("session", "")))

        r = drive(env, ("mcp.list",), ("mcp.call", "echo", '{"message":"hello agents"}'),
                  ("mcp.call", "get-sum", '{"a":2,"b":3}'), ("mcp.call", "no-such-tool", "{}"),
                  ("mcp.request", "no/such/method", "{}"), w,
                  ("mcp.call", "echo", '{"message":"again"}'),
                  ("list",), ("callmapped", "everything__get-sum", '{"a":20,"b":22}'),
                  ("call", "everything", "echo", '{"message":"via agents"}'), on_wait=forget)
        lst, echo, add, unknown, method, _, again, toolset, mapped, via = r
        names = lst.get("tools") or []
        check(lst["status"] == "ok" and "echo" in names and "get-sum" in names,
              f"everything: tools/list has echo and get-sum ({len(names)} tools)")
        check(lst["version"] == "2025-11-25" and lst["session"],
              f"everything: 2025-11-25 negotiated, a session kept: {lst['version']} {lst['session']}")
        check(echo["status"] == "ok" and echo["text"] == "Echo: hello agents" and
              not echo["is_error"], f"everything: echo answered over SSE: {echo.get('text')}")
        check(add["status"] == "ok" and "5" in add["text"], f"everything: get-sum: {add['text']}")
        check(unknown["status"] == "ok" and unknown["is_error"] and "no-such-tool" in
              unknown["text"], f"everything: an unknown tool is an isError result: {unknown['text']}")
        check(method["status"] == "json-rpc error" and method["rpc_code"] == -32601,
              f"everything: an unknown method is JSON-RPC error -32601: {method.get('error')}")
        check(sessions and sessions[1] in (200, 204), f"the test ended the session: {sessions}")
        check(again["status"] == "ok" and again["text"] == "Echo: again" and
              again["session"] and again["session"] != sessions[0],
              "everything: a forgotten session is re-initialized transparently "
              f"({sessions[0]} -> {again['session']})")
        mnames = {m["name"]: m for m in toolset["map"]}
        check("everything__echo" in mnames and "everything__get-sum" in mnames and
              mnames["everything__get-sum"]["tool"] == "get-sum",
              "everything: tools offered as everything__<tool>")
        check(all(OPENAI_NAME.match(n) for n in mnames), "every offered name is OpenAI-valid")
        defs = {d["function"]["name"]: d for d in toolset["defs"]}
        d = defs.get("everything__get-sum", {})
        check(d.get("type") == "function" and
              set(d["function"]["parameters"].get("properties", {})) >= {"a", "b"},
              f"the OpenAI definition carries the input schema: {d}")
        check(mapped.get("outcome") == "ok" and "42" in mapped.get("text", ""),
              f"a call by mapped name reaches get-sum: {mapped}")
        check(via["outcome"] == "ok" and via["text"] == "Echo: via agents", f"agents_call: {via}")

        if shutil.which("valgrind") and os.environ.get("VALERIE_SANITIZERS") != "yes":
            vlog = os.path.join(TMP, "valgrind-everything.log")
            r = drive(env, ("list",), ("call", "everything", "echo", '{"message":"vg"}'),
                      ("mcp.call", "get-sum", '{"a":1,"b":1}'), valgrind=vlog, timeout=300)
            check(drive.rc == 0 and len(r) == 3 and r[1]["outcome"] == "ok",
                  f"valgrind: the client path against server-everything is clean (exit "
                  f"{drive.rc}): {open(vlog).read()[-2000:] if drive.rc else ''}")
    finally:
        ev.stop()
        if tmpdir:
            remove_temp(tmpdir, "node packages")


# --- the fake ----------------------------------------------------------------------------
def fake_protocol(fake):
    fake.reset()
    r = drive(raw_env(fake.url), ("mcp.list",), ("mcp.call", "echo", '{"message":"json"}'))
    s = fake.stats()
    check(r[0]["status"] == "ok" and r[0]["version"] == "2025-11-25" and
          r[1]["text"] == "Echo: json", f"JSON answers, 2025-11-25: {r}")
    check(s["initialize"] == 1 and s["initialized"] == 1 and s["bad_headers"] == [],
          f"one initialize, notifications/initialized sent, MCP-Protocol-Version on every "
          f"request: {s}")

    fake.reset(version="2025-06-18")
    r = drive(raw_env(fake.url), ("mcp.call", "echo", '{"message":"older"}'))
    check(r[0]["status"] == "ok" and r[0]["version"] == "2025-06-18" and
          fake.stats()["bad_headers"] == [], f"a server answering 2025-06-18 is accepted: {r}")

    fake.reset(version="2024-11-05")
    r = drive(raw_env(fake.url), ("mcp.call", "echo", "{}"))
    check(r[0]["status"] == "protocol error" and "2024-11-05" in r[0]["error"] and
          not r[0]["sent"], f"an unknown protocol version is refused: {r[0].get('error')}")

    fake.reset(sse=True, priming=True, notify="progress")
    r = drive(raw_env(fake.url), ("mcp.list",), ("mcp.call", "echo", '{"message":"sse"}'))
    check(r[0]["status"] == "ok" and r[1]["status"] == "ok" and r[1]["text"] == "Echo: sse",
          f"SSE with a priming event, a server request and progress before the result: {r[1]}")

    fake.reset(sse=True, priming=False, notify="list_changed")
    r = drive(raw_env(fake.url), ("mcp.call", "echo", '{"message":"n"}'))
    check(r[0]["status"] == "ok" and r[0]["text"] == "Echo: n" and r[0]["list_changed"],
          f"SSE without priming; list_changed noticed: {r[0]}")

    # A server that asks the client something on the answer's stream and waits for the
    # reply: ping is answered with an empty result, the rest with "method not found",
    # each POSTed with the session's headers; the answer then comes well within the timeout.
    asked = ["ping", "sampling/createMessage", "elicitation/create", "roots/list"]
    fake.reset(sse=True, ask=asked, ask_wait=8)
    r = drive(raw_env(fake.url, VALERIE_TEST_MCP_TIMEOUT_MS=4000),
              ("mcp.call", "echo", '{"message":"asked"}'))
    got = {json.dumps(x["id"]): x for x in fake.stats()["replies"]}
    want = {json.dumps(f"srv-{i}" if i % 2 == 0 else 1000 + i): m for i, m in enumerate(asked)}
    check(r[0]["status"] == "ok" and r[0]["text"] == "Echo: asked",
          f"a server waiting for replies to its requests gets them and answers: {r[0]}")
    check(set(got) == set(want) and all(
        (got[k]["result"] == {} and got[k]["error"] is None) if m == "ping" else
        (got[k]["error"] or {}).get("code") == -32601 for k, m in want.items()) and all(
        x["session"] == r[0]["session"] and x["version"] == "2025-11-25" for x in got.values()),
        f"ping answered with {{}}, sampling, elicitation and roots with -32601, each with "
        f"the session's headers: {list(got.values())}")

    # 2025-11-25: a server may close the connection of an answer's stream after an event
    # with an id, and the client comes back with GET and Last-Event-ID after `retry:` ms.
    fake.reset(sse=True, resume=2, resume_retry_ms=300)
    r = drive(raw_env(fake.url), ("mcp.call", "echo", '{"message":"resumed"}'),
              ("mcp.list",))
    gets = fake.stats()["gets"]
    check(r[0]["status"] == "ok" and r[0]["text"] == "Echo: resumed" and r[1]["status"] == "ok",
          f"an answer's stream cut twice is resumed: {r[0]}")
    check([g["last_event_id"] for g in gets] == ["s1-0", "s1-1", "s2-0", "s2-1"] and all(
        g["session"] == r[0]["session"] and g["version"] == "2025-11-25" and
        g["after_ms"] >= 250 for g in gets),
        f"resumed with GET, Last-Event-ID, the session's headers, after retry: {gets}")
    # A resumed stream refused (the session gone meanwhile) is a failed call, not one the
    # client sends again in a new session: the tool ran.
    fake.reset(sse=True, resume=1, resume_retry_ms=1500)
    timer = threading.Timer(0.7, fake.forget)
    timer.start()
    r = drive(raw_env(fake.url), ("mcp.call", "book", "{}"))
    timer.join()
    s = fake.stats()
    check(r[0]["status"] == "protocol error" and "HTTP 404" in r[0]["error"] and
          r[0]["sent"] and s["calls"].get("book") == 1 and s["initialize"] == 1,
          f"a resumption refused with 404: the call failed, not made again: {r[0]} {s['calls']}")

    for status in (404, 400):
        fake.reset(forget_status=status)
        r = drive(raw_env(fake.url), ("mcp.call", "echo", '{"message":"1"}'), wait_cmd(),
                  ("mcp.call", "echo", '{"message":"2"}'), on_wait=lambda out: fake.forget())
        s = fake.stats()
        check(r[2]["status"] == "ok" and r[2]["text"] == "Echo: 2" and s["initialize"] == 2 and
              r[2]["session"] != r[0]["session"] and s["calls"].get("echo") == 2,
              f"a session forgotten with {status}: re-initialized, the call made once: {s}")

    fake.reset(page_size=3)
    r = drive(raw_env(fake.url), ("mcp.list",))
    s = fake.stats()
    n = len(r[0].get("tools", []))
    check(r[0]["status"] == "ok" and n == 12 and s["requests"].count("tools/list") == 4,
          f"tools/list pages followed by nextCursor: {n} tools in "
          f"{s['requests'].count('tools/list')} pages")

    fake.reset()
    r = drive(raw_env(fake.url), ("mcp.call", "fail", "{}"), ("mcp.call", "rpc_error", "{}"))
    check(r[0]["status"] == "ok" and r[0]["is_error"] and
          r[0]["text"] == "first problem\nsecond problem", f"isError result, texts joined: {r[0]}")
    check(r[1]["status"] == "json-rpc error" and "boom" in r[1]["error"] and r[1]["sent"],
          f"a JSON-RPC error: {r[1].get('error')}")

    fake.reset(big_bytes=300000)
    r = drive(raw_env(fake.url, VALERIE_TEST_MCP_MAX_BYTES=100000), ("mcp.call", "big", "{}"),
              ("mcp.call", "echo", '{"message":"after"}'))
    check(r[0]["status"] == "answer too large" and r[1]["text"] == "Echo: after",
          f"an answer over the cap is refused, the client goes on: {r[0].get('error')}")
    fake.reset(sse=True, big_bytes=300000)
    r = drive(raw_env(fake.url, VALERIE_TEST_MCP_MAX_BYTES=100000), ("mcp.call", "big", "{}"))
    check(r[0]["status"] in ("answer too large", "protocol error"),
          f"an SSE answer over the cap is refused: {r[0].get('error')}")
    # Under the cap, SSE as JSON: servers send a message as one data line (the TypeScript
    # SDK does), so a 1.5 MB tool answer is one 1.5 MB line; the agent gets it cut to
    # AGENTS_RESULT_MAX, it is not a protocol error counted against the agent's breaker.
    for sse in (False, True):
        fake.reset(sse=sse, big_bytes=1500000)
        r = drive(dict(agent_env(fake), **raw_env(fake.url)), ("mcp.call", "big", "{}"),
                  ("call", "fake", "big", "{}"))
        check(r[0]["status"] == "ok" and len(r[0]["text"]) == 1500000 and
              r[1]["outcome"] == "ok" and "[truncated: the tool answered 1500000 bytes]" in
              r[1]["text"], f"a 1.5 MB tool answer over {'SSE' if sse else 'JSON'} (one "
              f"line) is read and cut for the model: {r[0].get('error')} {r[1]['text'][-80:]}")


def fake_session_end(fake):
    """Ending sessions (the spec: a client that is done SHOULD send DELETE with its
    Mcp-Session-Id; 405 means the server does not allow it): the raw call, and the agents
    at exit, bounded in time."""
    fake.reset()
    r = drive(raw_env(fake.url), ("mcp.call", "echo", '{"message":"1"}'), ("mcp.end",),
              ("mcp.end",), ("mcp.call", "echo", '{"message":"2"}'))
    s = fake.stats()
    check(r[1]["status"] == "ok" and r[1]["session"] == "" and
          s["deletes"] == [r[0]["session"]] and r[2]["status"] == "ok",
          f"mcp_session_end sends DELETE with the session id once: {s['deletes']} {r[1:3]}")
    check(r[3]["text"] == "Echo: 2" and r[3]["session"] not in ("", r[0]["session"]) and
          s["initialize"] == 2, f"the next call opens a new session: {r[3]}")

    fake.reset(delete_status=405)
    r = drive(raw_env(fake.url), ("mcp.call", "echo", "{}"), ("mcp.end",))
    check(r[1]["status"] == "ok" and fake.stats()["deletes"] == [r[0]["session"]],
          f"a 405 to DELETE (the server keeps sessions to itself) is not an error: {r[1]}")

    fake.reset(delete_seconds=3)
    r = drive(raw_env(fake.url, VALERIE_TEST_MCP_TIMEOUT_MS=500), ("mcp.call", "echo", "{}"),
              ("mcp.end",))
    check(r[1]["status"] == "timeout" and r[1]["ms"] < 1500,
          f"a DELETE left unanswered gives up at the timeout: {r[1]}")

    fake.reset()
    env = dict(agent_env(fake), MCP_DEAD_URL=f"http://127.0.0.1:{free_port()}/mcp")
    r = drive(env, ("call", "fake", "echo", '{"message":"x"}'), ("call", "dead", "echo", "{}"))
    s = fake.stats()
    check(drive.rc == 0 and r[0]["outcome"] == "ok" and s["deletes"] == ["fake-session-1"] and
          s["sessions"] == [], f"at exit the agents end their sessions: {s['deletes']} "
          f"(left {s['sessions']})")

    # Two agents whose DELETE hangs: the first uses up the 1 s budget, the second is skipped.
    fake.reset(delete_seconds=5)
    r = drive({"MCP_A_URL": fake.url, "MCP_B_URL": fake.url}, ("call", "a", "echo", "{}"),
              ("call", "b", "echo", "{}"), ("end-sessions",))
    s = fake.stats()
    check(r[0]["outcome"] == r[1]["outcome"] == "ok" and 800 <= r[2]["ms"] < 1600 and
          len(s["deletes"]) == 1,
          f"ending sessions never takes more than AGENTS_END_SESSIONS_MS in all: "
          f"{r[2]['ms']} ms, {len(s['deletes'])} DELETE sent")


def fake_agents(fake):
    # A tool result larger than what the model gets is cut, and says so.
    fake.reset(big_bytes=100000)
    r = drive(agent_env(fake), ("call", "fake", "big", "{}"))
    check(r[0]["outcome"] == "ok" and len(r[0]["text"]) < 70000 and "truncated" in r[0]["text"],
          f"a long tool result is cut for the model ({len(r[0]['text'])} chars)")

    # Connection refused: unavailable, an error text, nothing crashes.
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    r = drive({"MCP_DEAD_URL": dead, "MCP_MAX_RETRIES": "2"}, ("list",),
              ("call", "dead", "book", "{}"), ("health",))
    check(r[0]["map"] == [], "a dead agent offers no tools")
    check(r[1]["outcome"] == "unavailable" and r[1]["is_error"] and
          r[1]["text"].startswith("agent dead is unavailable") and r[1]["attempts"] == 0,
          f"a dead agent is an error text for the model: {r[1]}")
    check(r[2][0]["status"] == "down", f"health says the dead agent is down: {r[2]}")

    # Retries: never for a non-idempotent call that reached the agent.
    fake.reset(fail_first=1, slow_seconds=3)
    env = agent_env(fake, MCP_MAX_RETRIES=3, MCP_TIMEOUT=1)
    r = drive(env, ("list",), ("call", "fake", "flaky", "{}"), ("call", "fake", "flaky_idem", "{}"),
              ("call", "fake", "book", "{}"), ("call", "fake", "slow", "{}"),
              ("call", "fake", "slow_idem", "{}"), ("metrics",))
    s = fake.stats()["calls"]
    check(r[1]["outcome"] == "unavailable" and r[1]["attempts"] == 1 and s.get("flaky") == 1,
          f"a non-idempotent tool answering 503 is not called again: {r[1]['text']} "
          f"(calls {s.get('flaky')})")
    check(r[2]["outcome"] == "ok" and r[2]["attempts"] == 2 and s.get("flaky_idem") == 2,
          f"an idempotent tool is retried after a 503: {r[2]}")
    check(r[3]["outcome"] == "ok" and r[3]["text"] == "booked #1" and s.get("book") == 1,
          "a booking is made once")
    check(r[4]["outcome"] == "timeout" and r[4]["is_error"] and s.get("slow") == 1,
          f"a non-idempotent tool that timed out after reaching the agent is not retried: "
          f"{r[4]['text']} (calls {s.get('slow')})")
    check(r[5]["outcome"] == "timeout" and s.get("slow_idem") == 4,
          f"an idempotent tool that timed out is retried MCP_MAX_RETRIES times "
          f"(calls {s.get('slow_idem')})")
    m = r[6]["metrics"]
    for outcome, v in (("ok", 2), ("unavailable", 1), ("timeout", 2), ("circuit_open", 0),
                       ("error", 0)):
        check(f'valerie_agent_calls_total{{agent="fake",outcome="{outcome}"}} {v}' in m,
              f"valerie_agent_calls_total{{agent=fake,outcome={outcome}}} is {v}")
    check('valerie_agent_call_duration_seconds_count{agent="fake"} 5' in m,
          "valerie_agent_call_duration_seconds counts the calls")

    # readOnlyHint: a tool that changes nothing is retried as an idempotent one is (MCP:
    # idempotentHint means something only when readOnlyHint is false); readOnlyHint false
    # or not a boolean is not enough.
    fake.reset(fail_first=1, extra_tools=["flaky_ro", "flaky_rw", "flaky_odd"],
               annotations={"flaky_ro": {"readOnlyHint": True},
                            "flaky_rw": {"readOnlyHint": False, "destructiveHint": False},
                            "flaky_odd": {"readOnlyHint": "true"}})
    r = drive(agent_env(fake, MCP_MAX_RETRIES=3), ("list",), ("call", "fake", "flaky_ro", "{}"),
              ("call", "fake", "flaky_rw", "{}"), ("call", "fake", "flaky_odd", "{}"))
    s = fake.stats()["calls"]
    check(r[1]["outcome"] == "ok" and r[1]["attempts"] == 2 and s.get("flaky_ro") == 2,
          f"a readOnlyHint tool is retried after a 503: {r[1]} (calls {s.get('flaky_ro')})")
    check(r[2]["outcome"] == "unavailable" and s.get("flaky_rw") == 1 and
          r[3]["outcome"] == "unavailable" and s.get("flaky_odd") == 1,
          f"readOnlyHint false, or a string, is not retried: {s}")

    # The circuit: opens after the threshold, a probe after the reset timeout.
    fake.reset(fail_first=1000)
    env = agent_env(fake, MCP_MAX_RETRIES=0, MCP_CIRCUIT_BREAKER_FAILURE_THRESHOLD=2,
                    MCP_CIRCUIT_BREAKER_RESET_TIMEOUT=1)

    def after_reset(ok):
        def act(out):
            time.sleep(1.3)   # past MCP_CIRCUIT_BREAKER_RESET_TIMEOUT: not an assertion
            if ok:
                fake.config(fail_first=0)
        return act

    waits = []

    def on_wait(out):
        waits.append(len(out))
        after_reset(len(waits) == 2)(out)

    r = drive(env, ("call", "fake", "flaky", "{}"), ("call", "fake", "flaky", "{}"),
              ("call", "fake", "flaky", "{}"), ("health",), ("metrics",), wait_cmd(),
              ("call", "fake", "flaky", "{}"), ("call", "fake", "flaky", "{}"), wait_cmd(),
              ("call", "fake", "flaky", "{}"), ("health",), ("metrics",), on_wait=on_wait)
    calls = fake.stats()["calls"].get("flaky")
    check([x["outcome"] for x in r[0:3]] == ["unavailable", "unavailable", "circuit_open"],
          f"the circuit opens after 2 failures: {[x['outcome'] for x in r[0:3]]}")
    check(r[2]["is_error"] and "circuit" in r[2]["text"], f"open circuit text: {r[2]['text']}")
    check(r[3][0]["circuit"] == "open" and r[3][0]["status"] == "down", f"health: {r[3]}")
    check('valerie_circuit_state{target="agent:fake"} 2' in r[4]["metrics"],
          "valerie_circuit_state{target=agent:fake} is 2 while open")
    check(r[6]["outcome"] == "unavailable" and r[7]["outcome"] == "circuit_open",
          "a failed half-open probe opens the circuit again")
    check(r[9]["outcome"] == "ok" and r[10][0]["circuit"] == "closed" and
          r[10][0]["status"] == "ok" and isinstance(r[10][0]["response_time_ms"], int),
          f"a good probe closes it: {r[9]['outcome']} {r[10]}")
    check('valerie_circuit_state{target="agent:fake"} 0' in r[11]["metrics"] and
          'valerie_agent_calls_total{agent="fake",outcome="circuit_open"} 2' in r[11]["metrics"],
          "the gauge is 0 again; circuit_open calls counted")
    check(calls == 4, f"calls refused by the open circuit never reached the agent ({calls})")

    # Tool list cache: refreshed when the server says the list changed.
    fake.reset(sse=True)
    r = drive(agent_env(fake), ("list",), ("list",), ("call", "fake", "toggle", "{}"), ("list",))
    s = fake.stats()
    names0 = {m["name"] for m in r[0]["map"]}
    names2 = {m["name"] for m in r[3]["map"]}
    check(s["requests"].count("tools/list") == 2 and "fake__added_later" not in names0 and
          "fake__added_later" in names2,
          f"the tool list is cached, and fetched again after list_changed "
          f"({s['requests'].count('tools/list')} tools/list)")

    # One session for concurrent threads.
    fake.reset()
    r = drive(agent_env(fake), ("parallel", 8, "fake", "echo", '{"message":"p"}'))
    s = fake.stats()
    check(all(x["outcome"] == "ok" for x in r[0]) and s["initialize"] == 1 and
          s["calls"].get("echo") == 8, f"8 threads share one session: {s['initialize']} initialize")

    # A hung agent (it takes the connection, never answers): concurrent turns wait one
    # MCP_TIMEOUT for it, not one after another (the Nth waiting N timeouts, past the turn's).
    env = agent_env(fake, MCP_TIMEOUT=1, MCP_MAX_RETRIES=0,
                    MCP_CIRCUIT_BREAKER_FAILURE_THRESHOLD=100)
    fake.reset(stall={"tools/list": 5})
    r = drive(env, ("parallel-list", 4))
    ms = [x["ms"] for x in r[0]]
    check(all(x["tools"] == 0 for x in r[0]) and max(ms) < 1800 and
          fake.stats()["requests"].count("tools/list") == 1,
          f"4 threads wanting the tools of a hung agent: one tools/list, each waits about "
          f"MCP_TIMEOUT: {ms} ms")
    # Three hung agents (one server under three names): their tool lists are fetched at
    # once, so a turn waits about one MCP_TIMEOUT for them, not three one after another.
    fake.reset(stall={"tools/list": 5})
    env3 = dict(env, MCP_HUNG1_URL=fake.url, MCP_HUNG2_URL=fake.url, MCP_HUNG3_URL=fake.url)
    del env3["MCP_FAKE_URL"]
    r = drive(env3, ("parallel-list", 1))
    ms = r[0][0]["ms"]
    check(r[0][0]["tools"] == 0 and ms < 2500 and
          fake.stats()["requests"].count("tools/list") == 3,
          f"the tool lists of 3 hung agents are fetched at once: {ms} ms for the turn's "
          f"listing (one after another: 3 x MCP_TIMEOUT)")
    fake.reset(stall={"initialize": 5})
    r = drive(env, ("parallel", 4, "fake", "echo", '{"message":"h"}'))
    ms = [x["ms"] for x in r[0]]
    check(all(x["outcome"] == "timeout" and x["attempts"] == 0 for x in r[0]) and
          max(ms) < 1800 and fake.stats()["requests"].count("initialize") == 1,
          f"4 calls to an agent whose initialize hangs: one initialize, its failure theirs: "
          f"{ms} ms {[x['outcome'] for x in r[0]]}")


def fake_names(fake):
    long1, long2 = "x" * 100, "x" * 99 + "y"
    extra = ["get.weather.forecast", "a.b", "a_b", long1, long2, "weird/ch@rs", "_a", "a",
             "." * 64]
    fake.reset(extra_tools=extra)
    env = {"MCP_X_URL": fake.url, "MCP_X__URL": fake.url}
    cmds = [("list",)]
    r = drive(env, *cmds)
    m = r[0]["map"]
    names = [e["name"] for e in m]
    pairs = {(e["agent"], e["tool"]) for e in m}
    check(all(OPENAI_NAME.match(n) for n in names), f"every mapped name is OpenAI-valid: "
          f"{[n for n in names if not OPENAI_NAME.match(n)]}")
    check(len(set(names)) == len(names) == len(pairs) == 2 * (12 + len(extra)),
          f"no collisions: {len(names)} names for {len(pairs)} tools")
    check(("x", "_a") in pairs and ("x_", "a") in pairs,
          "x___a could be agent x's _a or agent x_'s a: both are offered")
    by = {(e["agent"], e["tool"]): e["name"] for e in m}
    check(by[("x", "a_b")] == "x__a_b" and by[("x", "a.b")] != "x__a_b",
          f"a.b and a_b stay apart: {by[('x', 'a.b')]}, {by[('x', 'a_b')]}")
    calls = [("callmapped", by[("x", t)], "{}") for t in extra] + \
        [("callmapped", by[("x_", "a")], "{}"), ("callmapped", "x__nope", "{}")]
    r = drive(env, ("list",), *calls)
    for t, res in zip(extra, r[1:1 + len(extra)]):
        check(res.get("outcome") == "ok" and res.get("text") == f"called {t}",
              f"{by[('x', t)]} maps back to {t[:30]}")
    check(r[-2].get("text") == "called a", "x_'s a reached as itself")
    check(r[-1] == {"lookup": "unknown"}, "a name never offered is not found")


def fake_schemas(fake):
    """OpenAI refuses a whole request when one tool's parameters are not an object schema:
    every tool is offered with "type": "object"; a huge schema is not offered."""
    huge = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "d" * 200}
                                             for i in range(400)}}
    odd = {"untyped": {"properties": {"q": {"type": "string"}}, "required": ["q"]},
           "stringy": {"type": "string"}, "listy": [1, 2], "absent": None, "huge": huge}
    fake.reset(extra_tools=list(odd), schemas=odd)
    r = drive(agent_env(fake), ("list",))
    params = {e["function"]["name"]: e["function"]["parameters"] for e in r[0]["defs"]}
    check(all(isinstance(p, dict) and p.get("type") == "object" for p in params.values()),
          f"every tool is offered with an object schema: "
          f"{ {n: p for n, p in params.items() if p.get('type') != 'object'} }")
    check(params.get("fake__untyped") == {"type": "object", "required": ["q"],
                                          "properties": {"q": {"type": "string"}}}
          and params.get("fake__stringy") == {"type": "object", "properties": {}}
          and params.get("fake__echo", {}).get("required") == ["message"],
          f"a schema without type keeps its properties; one of another type is replaced: "
          f"{params.get('fake__untyped')} {params.get('fake__stringy')}")
    check(params.get("fake__huge") == {"type": "object", "properties": {}},
          f"a schema of {len(json.dumps(huge))} bytes is not sent to the model with every step: "
          f"{len(json.dumps(params.get('fake__huge')))} bytes offered")


def config_checks(fake):
    r = drive({"MCP_BAD_URL": "ftp://example.com/mcp"}, ("list",))
    check(drive.rc == 78 and r and "MCP_BAD_URL: must be a URL with scheme http, https" in
          r[0].get("config_error", ""), f"a bad agent URL is refused at start: {r}")
    r = drive(agent_env(fake, MCP_FAKE_ENABLED="maybe"), ("list",))
    check(drive.rc == 78 and "MCP_FAKE_ENABLED: must be true or false" in
          r[0].get("config_error", ""), f"a bad _ENABLED is refused: {r}")
    fake.reset()
    r = drive(agent_env(fake, MCP_FAKE_ENABLED="false"), ("list",),
              ("call", "fake", "echo", "{}"), ("call", "nobody", "echo", "{}"), ("health",),
              ("metrics",))
    check(r[0]["map"] == [] and r[1]["is_error"] and "disabled" in r[1]["text"],
          f"MCP_FAKE_ENABLED=false: no tools, calls refused: {r[1]['text']}")
    check("no agent named" in r[2]["text"], "an unknown agent is an error text")
    check(r[3][0]["status"] == "disabled", "health shows it disabled")
    check('valerie_agent_calls_total{agent="fake",outcome="ok"} 0' in r[4]["metrics"],
          "the agent's counters start at 0")
    check(fake.stats()["requests"] == [], "a disabled agent is never contacted")
    r = drive(agent_env(fake), ("call", "fake", "echo", "[1,2]"))
    check(r[0]["outcome"] == "error" and "not a JSON object" in r[0]["text"],
          "arguments that are not a JSON object are refused")

    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_")}
    env.update({"MCP_SECRET_URL": "https://user:pw@agent.example/mcp",
                "MCP_OFF_URL": "http://127.0.0.1:1/mcp", "MCP_OFF_ENABLED": "0"})
    p = subprocess.run([BIN, "check-config"], env=env, capture_output=True, text=True)
    doc = json.loads(p.stdout) if p.returncode == 0 else {}
    check(doc.get("agents") == {"off": {"url": "http://127.0.0.1:1/mcp", "enabled": False},
                                "secret": {"url": "https://user:[redacted]@agent.example/mcp",
                                           "enabled": True}},
          f"/config lists the agents, passwords redacted: {doc.get('agents')}")


def fake_valgrind(fake):
    if os.environ.get("VALERIE_SANITIZERS") == "yes" or not shutil.which("valgrind"):
        print("(valgrind run skipped: sanitizer build or no valgrind)")
        return
    fake.reset(sse=True, notify="progress", extra_tools=["a.b", "x" * 90])
    vlog = os.path.join(TMP, "valgrind-fake.log")
    r = drive(agent_env(fake, MCP_TIMEOUT=1, MCP_MAX_RETRIES=1), ("list",),
              ("callmapped", "FAKE", "{}"), ("call", "fake", "echo", '{"message":"vg"}'),
              ("call", "fake", "fail", "{}"), ("call", "fake", "rpc_error", "{}"),
              ("call", "fake", "echo", "[1]"), ("call", "nobody", "echo", "{}"),
              ("call", "fake", "flaky_idem", "{}"), ("parallel", 3, "fake", "add", '{"a":1}'),
              ("health",), ("metrics",), valgrind=vlog, timeout=300)
    log = open(vlog).read()
    check(drive.rc == 0 and len(r) == 11 and r[2]["text"] == "Echo: vg",
          f"valgrind: list, calls, errors and threads leak nothing (exit {drive.rc}) {log[-3000:]}")


fake = FakeMCP()
try:
    fake_protocol(fake)
    fake_session_end(fake)
    fake_agents(fake)
    fake_names(fake)
    fake_schemas(fake)
    config_checks(fake)
    fake_valgrind(fake)
finally:
    fake.stop()
real_server()
remove_temp(TMP)
done("test_mcp_client")
