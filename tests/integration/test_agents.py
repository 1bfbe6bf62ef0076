"""test_agents: the agent loop of a chat turn through nginx and the pool, with MCP agents on
the fake MCP server (tests/fakes/fake_mcp.py) and a dead one on a closed port.

- The offline provider's test rule: `/tool demo.echo {"message": ...}` calls the tool, the
  result goes back to the model, the answer quotes it; the answer's tool_calls say what
  ran; the session stores the user's message, the assistant's call, the tool's result and
  the final answer; valerie_agent_calls_total counts it.
- A dead agent, an unknown tool: a tool error the model reads, the turn still 200.
- The openai provider (the fake LLM): the agents' tools are offered under their mapped
  names, the model calls one, the result goes back as a tool message, the final text comes
  from the model; several calls in one step all run; the step limit ends with an answer
  from a last call with tool_choice "none" (the tools still defined: Anthropic refuses
  tool_use/tool_result blocks in a request that defines no tools), with either provider.
- With an Idempotency-Key, a turn whose tool ran but whose next model call failed (5xx)
  sent again does not run the tool again: the recorded result answers (one booking);
  another key runs it.
- The rule is refused in production as a plain reply; streams carry the final text.
- Stopping the pool ends every MCP session the workers opened (HTTP DELETE).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import free_port, FakeLLM, FakeMCP, SseParser, Stack, check, done, post_chat  # noqa: E402


def scrape(st, name, labels):
    s, _, raw = st.request("GET", "/metrics")
    for line in raw.decode().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.split()[-1])
    return None


def scrape_sum(text, name, agent):
    """The value of `name`{agent="..."} in the exposition `text`, 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + "{") and f'agent="{agent}"' in line:
            return float(line.split()[-1])
    return 0.0


mcp = FakeMCP()
fake = FakeLLM()
dead = f"http://127.0.0.1:{free_port()}/mcp"
try:
    env = {"MCP_DEMO_URL": mcp.url, "MCP_DEAD_URL": dead, "MCP_MAX_RETRIES": "0",
           "MCP_TIMEOUT": "5"}
    with Stack(workers=2, threads=4, env=env) as st:
        s, _, doc = post_chat(st, {"message": '/tool demo.echo {"message": "hi there"}',
                                   "session_id": "ag-1"})
        calls = (doc or {}).get("tool_calls") or []
        check(s == 200 and "Echo: hi there" in doc["reply"] and len(calls) == 1
              and calls[0]["name"] == "demo" and calls[0]["tool"] == "echo"
              and calls[0]["is_error"] is False and calls[0]["content"] == "Echo: hi there",
              f"/tool demo.echo runs the tool; the answer quotes the result: {s} {doc}")
        s, _, sess = st.json("GET", "/api/v1/sessions/ag-1")
        roles = [(m["turn"], m["role"]) for m in sess.get("messages", [])]
        check(s == 200 and roles == [(1, "user"), (1, "assistant"), (1, "tool"),
                                     (1, "assistant")]
              and sess["messages"][1].get("tool_calls")
              and sess["messages"][2].get("tool_call_id") ==
              sess["messages"][1]["tool_calls"][0]["id"],
              f"the session stores the call and its result within the turn: {roles}")
        check(mcp.stats()["calls"].get("echo") == 1, f"the agent was called once: "
              f"{mcp.stats()['calls']}")
        check(scrape(st, "valerie_agent_calls_total", {"agent": "demo", "outcome": "ok"}) == 1,
              "valerie_agent_calls_total counts the call")

        # the next turn sees the whole exchange in its history
        s, _, doc = post_chat(st, {"message": "and now?", "session_id": "ag-1"})
        check(s == 200 and doc["turn"] == 2, f"a plain turn after the tool turn: {s}")

        # a dead agent and an unknown tool: errors the model reads, not failed turns
        s, _, doc = post_chat(st, {"message": "/tool dead.anything", "session_id": "ag-2"})
        calls = (doc or {}).get("tool_calls") or []
        check(s == 200 and len(calls) == 1 and calls[0]["is_error"] is True
              and "The tool answered" in doc["reply"],
              f"a dead agent is a tool error, the turn still answers: {s} {doc}")
        s, _, doc = post_chat(st, {"message": "/tool demo.nope", "session_id": "ag-3"})
        calls = (doc or {}).get("tool_calls") or []
        check(s == 200 and calls and calls[0]["is_error"] is True,
              f"an unknown tool is an error result: {s} {calls}")
        s, _, doc = post_chat(st, {"message": "/tool nodot", "session_id": "ag-4"})
        check(s == 200 and "/tool <agent>.<tool>" in doc["reply"] and not doc.get("tool_calls"),
              f"a malformed /tool gets a plain reply: {doc.get('reply')}")

        # streamed: the final text comes as deltas, the done event carries the calls
        s, h, raw = st.request("POST", "/api/v1/chat", body=json.dumps(
            {"message": '/tool demo.add {"a": 2, "b": 3}', "session_id": "ag-5",
             "stream": True}), headers={"Content-Type": "application/json"})
        ev = SseParser().feed(raw, final=True)
        final = json.loads(ev[-1]["data"]) if ev else {}
        check(s == 200 and ev and ev[-1]["event"] == "done" and "5" in final.get("reply", "")
              and final.get("tool_calls", [{}])[0].get("tool") == "add",
              f"a streamed tool turn ends with done carrying the calls: "
              f"{[e['event'] for e in ev]}")

        # valerie_overhead_seconds is the turn's time outside providers *and* agents:
        # a tool that takes 1.5 s is the agent's time, not the gateway's.
        def sample(text, name):
            for line in text.splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[-1])
            return None

        before = st.request("GET", "/metrics")[2].decode()
        mcp.config(slow_seconds=1.5)
        s, _, doc = post_chat(st, {"message": "/tool demo.slow", "session_id": "ag-6"})
        mcp.config(slow_seconds=5)
        after = st.request("GET", "/metrics")[2].decode()
        agent_s = (scrape_sum(after, "valerie_agent_call_duration_seconds_sum", "demo")
                   - scrape_sum(before, "valerie_agent_call_duration_seconds_sum", "demo"))
        over_n = sample(after, "valerie_overhead_seconds_count") - sample(before, "valerie_overhead_seconds_count")
        over_s = sample(after, "valerie_overhead_seconds_sum") - sample(before, "valerie_overhead_seconds_sum")
        check(s == 200 and agent_s >= 1.4 and over_n == 1 and over_s < 1.0,
              f"a slow tool's time is not counted as gateway overhead: status {s}, "
              f"agent {agent_s:.3f} s, overhead {over_s:.3f} s over {over_n} turn(s)")

    # Stopped: each worker ended the session it had opened with the agent.
    s = mcp.stats()
    opened = [f"fake-session-{i}" for i in range(1, s["initialize"] + 1)]
    check(s["initialize"] >= 1 and sorted(s["deletes"]) == opened and s["sessions"] == [],
          f"at stop the workers end their MCP sessions (DELETE): opened {opened}, "
          f"ended {s['deletes']}, left {s['sessions']}")

    # --- the openai provider: mapped names, the model's own final text, the step limit ---
    env2 = dict(env, VALERIE_LLM_PROVIDER="openai", OPENAI_API_KEY="sk-test",
                OPENAI_BASE_URL=f"http://127.0.0.1:{fake.port}/v1", OPENAI_MODEL="gpt-test",
                VALERIE_AGENT_MAX_STEPS="2")
    with Stack(workers=1, threads=2, env=env2) as st:
        fake.plan()
        s, _, doc = post_chat(st, {"message": 'call demo__echo {"message": "via openai"}',
                                   "session_id": "ag-o1"})
        reqs = fake.stats()["requests"]
        first, second = (reqs[0]["body"], reqs[1]["body"]) if len(reqs) >= 2 else ({}, {})
        names = [t["function"]["name"] for t in first.get("tools", [])]
        check("demo__echo" in names and all(n.replace("_", "a").replace("-", "a").isalnum()
                                            and len(n) <= 64 for n in names),
              f"the agents' tools are offered under valid mapped names: {names}")
        check(s == 200 and doc["reply"] == "tool said: Echo: via openai"
              and [m["role"] for m in second.get("messages", [])][-2:] == ["assistant", "tool"],
              f"the model's call runs, the result goes back, the model answers: {s} {doc}")
        check(doc.get("usage", {}).get("input_tokens", 0) > 0 and len(reqs) == 2,
              f"two model calls, usage summed: {doc.get('usage')} ({len(reqs)} calls)")
    with Stack(workers=1, threads=2, env=env2) as st:
        # "a booking is never made twice": the tool runs, the next model call fails (every
        # retry), the turn answers 5xx and stores nothing; the client sends it again with
        # its Idempotency-Key and the tool's recorded result is used, the tool not run again
        def echoes():
            return mcp.stats()["calls"].get("echo", 0)

        for path, body in (
                ("/api/v1/chat", {"message": 'call demo__echo {"message": "book it"}',
                                  "session_id": "ag-idem"}),
                ("/api/agent/chat", {"message": 'call demo__echo {"message": "book it"}',
                                     "session_id": "ag-idem-2"})):
            key = {"Idempotency-Key": "idem-book-" + path.replace("/", "-")}
            n0 = echoes()
            fake.plan({"mode": "ok"}, *[{"mode": "fail-500"}] * 3)
            s, _, doc = post_chat(st, body, headers=key, path=path)
            check(s >= 500 and echoes() == n0 + 1,
                  f"{path}: the tool ran, the next model call failed: 5xx: {s} {doc} "
                  f"(echo calls {echoes() - n0})")
            fake.plan()
            s, _, doc = post_chat(st, body, headers=key, path=path)
            answer = (doc or {}).get("reply")
            check(s == 200 and answer == "tool said: Echo: book it" and echoes() == n0 + 1,
                  f"{path}: sent again with the same Idempotency-Key, the recorded result "
                  f"answers and the tool is not run again: {s} {answer} "
                  f"(echo calls {echoes() - n0})")
            s, _, doc = post_chat(st, body, headers={"Idempotency-Key": "idem-other" + path},
                                  path=path)
            check(s == 200 and echoes() == n0 + 2,
                  f"{path}: another Idempotency-Key runs the tool again: {s} "
                  f"(echo calls {echoes() - n0})")
    with Stack(workers=1, threads=2, env=dict(env2, VALERIE_AGENT_MAX_STEPS="1")) as st:
        # every step asks again: the limit stops it and a call that may not use tools answers
        fake.plan()
        s, _, doc = post_chat(st, {"message": 'call demo__echo {"message": "loop"}',
                                   "session_id": "ag-o2"})
        reqs = fake.stats()["requests"]
        last = reqs[-1]["body"] if reqs else {}
        check(s == 200 and len(reqs) == 2 and last.get("tool_choice") == "none"
              and last.get("tools") == reqs[0]["body"].get("tools"),
              f"at the step limit a last call with tool_choice none gives the answer: {s} "
              f"{[(r['body'].get('tool_choice'), 'tools' in r['body']) for r in reqs]} {doc}")
    aenv = dict(env, VALERIE_LLM_PROVIDER="anthropic", ANTHROPIC_API_KEY="ak-test",
                ANTHROPIC_BASE_URL=f"http://127.0.0.1:{fake.port}",
                ANTHROPIC_MODEL="claude-test", VALERIE_AGENT_MAX_STEPS="1")
    with Stack(workers=1, threads=2, env=aenv) as st:
        # Anthropic: "Requests which include tool_use or tool_result blocks must define
        # tools", so the last call keeps them and says {"type": "none"}
        fake.plan()
        s, _, doc = post_chat(st, {"message": 'call demo__echo {"message": "claude"}',
                                   "session_id": "ag-a1"})
        reqs = fake.stats()["requests"]
        last = reqs[-1]["body"] if reqs else {}
        blocks = [b.get("type") for m in last.get("messages", [])
                  if isinstance(m.get("content"), list) for b in m["content"]]
        check(s == 200 and doc.get("reply") == "tool said: Echo: claude" and len(reqs) == 2
              and "tool_result" in blocks and last.get("tools")
              and last.get("tool_choice") == {"type": "none"},
              f"anthropic at the step limit: tools defined, tool_choice none: {s} "
              f"{last.get('tool_choice')} tools={bool(last.get('tools'))} {doc}")

    # --- production: the test rule is off ---
    penv = dict(env, VALERIE_ENV="production", VALERIE_AUTH="apikey",
                VALERIE_API_KEYS_FILE="/dev/null")
    # (the keys file must exist and not be readable by others: make one)
    keys = os.path.join(mcp.dir, "keys")
    open(keys, "w").write("ci user " + "0" * 64 + "\n")
    os.chmod(keys, 0o600)
    penv["VALERIE_API_KEYS_FILE"] = keys
    import hashlib
    key = "vk_test_key_for_agents"
    open(keys, "w").write(f"ci user {hashlib.sha256(key.encode()).hexdigest()}\n")
    with Stack(workers=1, threads=2, env=penv) as st:
        s, _, doc = post_chat(st, {"message": "/tool demo.echo", "session_id": "ag-p"},
                              headers={"X-API-Key": key})
        check(s == 200 and "off with VALERIE_ENV=production" in doc.get("reply", "")
              and not doc.get("tool_calls"),
              f"production refuses the /tool rule as a plain reply: {s} {doc}")
finally:
    fake.stop()
    mcp.stop()
done("test_agents")
