"""test_openai_tools: tool calls and sampling settings on POST /v1/chat/completions, as an
OpenAI client sees them, through real nginx and the pool, with the openai provider and with
the anthropic provider (the same OpenAI-shaped request translated both ways) against the
fake upstream (tests/fakes/fake_llm.py), whose recorded requests show what went up.

- A tool call whole and streamed (the fake streams the arguments in fragments: Valerie joins
  them): finish_reason "tool_calls", content null, the call's id/name/arguments; then the
  tool result sent back gives the final text.
- What reaches the upstream: OpenAI gets tools, tool_choice, temperature, top_p, max_tokens
  (or max_completion_tokens), stop as sent; Anthropic gets input_schema tools, its own
  tool_choice forms, tool_use blocks with the arguments parsed, tool_result blocks in a
  user message, stop_sequences, max_tokens.
- A client that sends the whole conversation with X-Session-Id anyway (the usual SDK loop):
  what comes up to its last assistant message is already stored and goes up and into the
  session once; a new session keeps the history the client brings.
- With X-Session-Id the client sends only the tool result; the session document keeps the
  call (assistant tool_calls) and the result (role tool, tool_call_id); an Idempotency-Key
  replays a tool-call answer as it was; a history window that starts after a call drops
  its orphaned result, and a call the client never answered is not sent up again (both
  would be refused by the upstream).
- OpenAI's other fields (seed, penalties, user, parallel_tool_calls, response_format,
  logit_bias, a message's name): OpenAI gets them as sent; Anthropic gets user as metadata.user_id and
  parallel_tool_calls false as disable_parallel_tool_use, a JSON response_format is refused
  with a 400 (never answered in free text), seed and penalties are dropped.
- tool_choice "none" without tools is not sent up (providers refuse it).
- finish_reason from the upstream's stop reason (Anthropic max_tokens and
  model_context_window_exceeded: length), whole and streamed.
- A model that ends its turn without a word (Anthropic content []): an empty answer, whole
  and streamed.
- 400s that name the field for bad tools, tool_choice, sampling settings, n, the other
  fields, logprobs (answers carry none), and tool messages; an upstream that refuses the request (400) comes back as a 400
  with its reason.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (FakeLLM, SseParser, Stack, check, done, is_error_doc,  # noqa: E402
                     post_chat)

PATH = "/v1/chat/completions"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time"}}


def completion(st, body, headers=None):
    s, h, doc = post_chat(st, body, headers=headers, path=PATH)
    return s, h, doc


def stream(st, body, headers=None):
    """(status, chunks as dicts, saw [DONE])."""
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    s, hh, raw = st.request("POST", PATH, body=json.dumps(dict(body, stream=True)), headers=h)
    evs = SseParser().feed(raw, final=True)
    chunks, done_seen = [], False
    for e in evs:
        if e["data"] == "[DONE]":
            done_seen = True
        else:
            chunks.append(json.loads(e["data"]))
    return s, chunks, done_seen


def joined_calls(chunks):
    """Tool calls from stream chunks, fragments joined by index as SDK users do."""
    calls = {}
    for c in chunks:
        for ch in c.get("choices", []):
            for tc in (ch.get("delta") or {}).get("tool_calls") or []:
                d = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
                d["id"] += tc.get("id") or ""
                fn = tc.get("function") or {}
                d["name"] += fn.get("name") or ""
                d["arguments"] += fn.get("arguments") or ""
    return [calls[i] for i in sorted(calls)]


def finish_reasons(chunks):
    return [ch["finish_reason"] for c in chunks for ch in c.get("choices", [])
            if ch.get("finish_reason")]


def last_up(fake):
    return fake.stats()["requests"][-1]["body"]


def user(text):
    return {"role": "user", "content": text}


def tool_flow(st, fake, prov):
    """The whole round trip without a session: call, result, final text."""
    fake.plan()
    s, _, doc = completion(st, {"messages": [user('call get_weather {"city":"Paris"}')],
                                "tools": [WEATHER, TIME]})
    msg = doc["choices"][0]["message"] if s == 200 else {}
    calls = msg.get("tool_calls") or []
    check(s == 200 and doc["choices"][0]["finish_reason"] == "tool_calls"
          and msg.get("content") is None and len(calls) == 1
          and calls[0]["type"] == "function" and calls[0]["function"]["name"] == "get_weather"
          and json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
          and isinstance(calls[0]["id"], str) and calls[0]["id"]
          and doc["usage"]["completion_tokens"] > 0,
          f"[{prov}] a tool call: finish_reason tool_calls, content null, name and arguments: "
          f"{s} {doc}")
    up = last_up(fake)
    if prov == "openai":
        check(up.get("tools") == [WEATHER, TIME], f"[openai] the tools go up as sent: {up}")
    else:
        check(up.get("tools") == [
            {"name": "get_weather", "description": "The weather in a city",
             "input_schema": WEATHER["function"]["parameters"]},
            {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}],
            f"[anthropic] tools as name/description/input_schema: {up.get('tools')}")
    if not calls:
        return
    s, _, doc2 = completion(st, {"messages": [
        user('call get_weather {"city":"Paris"}'), msg,
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny, 21 C"}],
        "tools": [WEATHER, TIME]})
    check(s == 200 and doc2["choices"][0]["message"]["content"] == "tool said: sunny, 21 C"
          and doc2["choices"][0]["finish_reason"] == "stop"
          and "tool_calls" not in doc2["choices"][0]["message"],
          f"[{prov}] the tool result gives the final answer: {s} {doc2}")
    up = last_up(fake)["messages"]
    if prov == "openai":
        check([m["role"] for m in up] == ["user", "assistant", "tool"]
              and up[1]["tool_calls"][0]["id"] == calls[0]["id"]
              and up[2]["tool_call_id"] == calls[0]["id"],
              f"[openai] the call and its result go up as OpenAI messages: {up}")
    else:
        check([m["role"] for m in up] == ["user", "assistant", "user"]
              and up[1]["content"] == [{"type": "tool_use", "id": calls[0]["id"],
                                        "name": "get_weather", "input": {"city": "Paris"}}]
              and up[2]["content"] == [{"type": "tool_result", "tool_use_id": calls[0]["id"],
                                        "content": "sunny, 21 C"}],
              f"[anthropic] tool_use with parsed input, tool_result in a user message: {up}")

    # streamed: the fake sends the arguments in fragments
    s, chunks, done_seen = stream(st, {"messages": [user('call get_weather {"city":"Rome"}')],
                                       "tools": [WEATHER]})
    got = joined_calls(chunks)
    check(s == 200 and done_seen and len(got) == 1 and got[0]["name"] == "get_weather"
          and json.loads(got[0]["arguments"]) == {"city": "Rome"} and got[0]["id"]
          and finish_reasons(chunks) == ["tool_calls"]
          and all(c["object"] == "chat.completion.chunk" for c in chunks),
          f"[{prov}] a streamed tool call: joined by index, finish_reason tool_calls, [DONE]: "
          f"{got} {finish_reasons(chunks)}")
    if prov == "openai":
        # as some compatible servers stream: no index on the fragments, "error": null
        fake.plan({"mode": "ok", "compat_stream": True})
        s, chunks, done_seen = stream(st, {"messages": [user(
            'call get_weather {"city":"Rome"} and call get_weather {"city":"Oslo"}')],
            "tools": [WEATHER]})
        got = joined_calls(chunks)
        check(s == 200 and done_seen and [json.loads(g["arguments"]) for g in got] ==
              [{"city": "Rome"}, {"city": "Oslo"}] and all(g["id"] for g in got)
              and len({g["id"] for g in got}) == 2 and finish_reasons(chunks) == ["tool_calls"]
              and fake.stats()["calls"] == 1,
              f"[openai] a compatible server's stream without indexes and with error null: "
              f"two calls told apart by their ids, in one upstream call: {s} {got} "
              f"{fake.stats()['calls']}")
        fake.plan()
    # a text answer streamed alongside offered tools
    s, chunks, done_seen = stream(st, {"messages": [user("no tools needed")],
                                       "tools": [WEATHER]})
    text = "".join((ch.get("delta") or {}).get("content") or ""
                   for c in chunks for ch in c.get("choices", []))
    check(s == 200 and done_seen and text == "echo: no tools needed"
          and finish_reasons(chunks) == ["stop"] and joined_calls(chunks) == [],
          f"[{prov}] tools offered but not called: text and finish_reason stop: {text!r}")


def params_flow(st, fake, prov):
    fake.plan()
    body = {"messages": [user("hi")], "tools": [WEATHER], "temperature": 0.25, "top_p": 0.5,
            "max_tokens": 77, "stop": ["END", "STOP"], "tool_choice": "required"}
    s, _, doc = completion(st, body)
    up = last_up(fake)
    if prov == "openai":
        check(s == 200 and up.get("temperature") == 0.25 and up.get("top_p") == 0.5
              and up.get("max_tokens") == 77 and up.get("stop") == ["END", "STOP"]
              and up.get("tool_choice") == "required",
              f"[openai] sampling settings and tool_choice go up as sent: {up}")
        s, _, _ = completion(st, {"messages": [user("hi")], "max_completion_tokens": 12,
                                  "stop": "X"})
        up = last_up(fake)
        check(s == 200 and up.get("max_completion_tokens") == 12 and "max_tokens" not in up
              and up.get("stop") == "X" and "temperature" not in up and "tools" not in up,
              f"[openai] max_completion_tokens keeps its name; unset settings stay unset: {up}")
    else:
        # temperature and top_p both set: temperature alone (the newer models refuse both)
        check(s == 200 and up.get("temperature") == 0.25 and "top_p" not in up
              and up.get("max_tokens") == 77 and up.get("stop_sequences") == ["END", "STOP"]
              and up.get("tool_choice") == {"type": "any"},
              f"[anthropic] temperature (top_p dropped beside it), max_tokens, stop_sequences, "
              f"tool_choice required -> any: {s} {up}")
        s, _, _ = completion(st, {"messages": [user("hi")], "top_p": 0.5})
        up = last_up(fake)
        check(s == 200 and up.get("top_p") == 0.5 and "temperature" not in up,
              f"[anthropic] top_p alone goes up: {s} {up}")
        for choice, want in (("auto", {"type": "auto"}), ("none", {"type": "none"}),
                             ({"type": "function", "function": {"name": "get_weather"}},
                              {"type": "tool", "name": "get_weather"})):
            s, _, _ = completion(st, {"messages": [user("hi")], "tools": [WEATHER],
                                      "tool_choice": choice, "stop": "X"})
            up = last_up(fake)
            check(s == 200 and up.get("tool_choice") == want and up.get("stop_sequences") == ["X"]
                  and up.get("max_tokens") == 4096,
                  f"[anthropic] tool_choice {choice} -> {want}: {up.get('tool_choice')}")


def big_int_flow(st, fake, prov):
    """Integers in a tool's schema go up unchanged, or are refused: json-c would saturate
    one beyond -2^63..2^64-1 into another number."""
    L = f"[{prov}]"

    def tool(maximum):
        return {"type": "function", "function": {"name": "count", "parameters": {
            "type": "object", "properties": {"n": {"type": "integer", "maximum": maximum}}}}}

    fake.plan()
    s, _, doc = completion(st, {"messages": [user("hi")], "tools": [tool(2 ** 64 - 1)]})
    up = last_up(fake)
    sent = (up.get("tools") or [{}])[0]
    schema = sent.get("input_schema") or (sent.get("function") or {}).get("parameters") or {}
    check(s == 200 and schema.get("properties", {}).get("n", {}).get("maximum") == 2 ** 64 - 1,
          f"{L} a schema's 2^64-1 goes up unchanged: {s} {schema}")
    calls = fake.stats()["calls"]
    for big in (2 ** 64, -2 ** 63 - 1, 10 ** 30):
        s, _, doc = completion(st, {"messages": [user("hi")], "tools": [tool(big)]})
        msg = ((doc or {}).get("error") or {}).get("message", "")
        check(s == 400 and is_error_doc(doc, "invalid_field") and '"maximum"' in msg
              and fake.stats()["calls"] == calls,
              f"{L} a schema's {big} is refused naming the member, never sent as another "
              f"number: {s} {doc}")


def extra_flow(st, fake, prov):
    """OpenAI's other fields: passed on to OpenAI; translated, refused or dropped for
    Anthropic, never silently lost when they change what the answer means."""
    fake.plan()
    extra = {"seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5, "user": "u-42",
             "parallel_tool_calls": False}
    s, _, doc = completion(st, dict({"messages": [user("hi")], "tools": [WEATHER]}, **extra))
    up = last_up(fake)
    if prov == "openai":
        check(s == 200 and all(up.get(k) == v for k, v in extra.items()),
              f"[openai] seed, penalties, user, parallel_tool_calls go up as sent: {up}")
    else:
        check(s == 200 and up.get("metadata") == {"user_id": "u-42"}
              and up.get("tool_choice") == {"type": "auto", "disable_parallel_tool_use": True}
              and not any(k in up for k in extra),
              f"[anthropic] user -> metadata.user_id, parallel_tool_calls false -> "
              f"disable_parallel_tool_use, seed and penalties dropped: {up}")
    newer = {"reasoning_effort": "low", "verbosity": "high", "service_tier": "flex",
             "store": True, "metadata": {"team": "a"}, "safety_identifier": "s-9",
             "prompt_cache_key": "k1"}
    s, _, doc = completion(st, dict({"messages": [user("hi")], "temperature": 1.5}, **newer))
    up = last_up(fake)
    if prov == "openai":
        check(s == 200 and all(up.get(k) == v for k, v in newer.items())
              and up.get("temperature") == 1.5,
              f"[openai] reasoning_effort, verbosity, store, metadata and the rest go up as "
              f"sent: {s} {up}")
    else:
        check(s == 200 and up.get("temperature") == 1.0
              and up.get("metadata") == {"user_id": "s-9"}
              and not any(k in up for k in newer if k != "metadata"),
              f"[anthropic] temperature above 1 sent as 1, safety_identifier -> "
              f"metadata.user_id, the rest dropped: {s} {up}")
    # an upstream's non-ASCII error message, cut at a byte count mid-character: the
    # client's error is still valid UTF-8 JSON
    fake.plan({"mode": "fail-400", "message": "a" + "\u00e9" * 100})
    s, _, doc = completion(st, {"messages": [user("hi")]})
    check(s == 400 and is_error_doc(doc, "provider_rejected_request")
          and "\u00e9" * 50 in doc["error"]["message"],
          f"[{prov}] a cut non-ASCII upstream message: the 400 is valid UTF-8 JSON: {s} {doc}")
    fake.plan()
    s, _, _ = completion(st, {"messages": [user("hi")], "parallel_tool_calls": True})
    check(s == 200 and "parallel_tool_calls" not in last_up(fake),
          f"[{prov}] parallel_tool_calls without tools is not sent (OpenAI refuses it)")
    n = fake.stats()["calls"]
    for rf in ({"type": "json_object"},
               {"type": "json_schema", "json_schema": {"name": "w", "schema": {
                   "type": "object", "properties": {"t": {"type": "number"}}}}}):
        s, _, doc = completion(st, {"messages": [user("json please")], "response_format": rf})
        if prov == "openai":
            check(s == 200 and last_up(fake).get("response_format") == rf,
                  f"[openai] response_format {rf['type']} goes up as sent: {s} {doc}")
        else:
            check(s == 400 and is_error_doc(doc, "provider_rejected_request")
                  and "response_format" in doc["error"]["message"]
                  and fake.stats()["calls"] == n,
                  f"[anthropic] response_format {rf['type']} is refused with a 400, not "
                  f"answered in free text: {s} {doc}")
    s, _, _ = completion(st, {"messages": [user("hi")], "response_format": {"type": "text"}})
    check(s == 200, f"[{prov}] response_format text is fine: {s}")
    # a message's name (who speaks): OpenAI gets it, and from the session on later turns
    hd = {"X-Session-Id": f"names-{prov}"}
    s, _, _ = completion(st, {"messages": [dict(user("I am Ann"), name="ann")]}, hd)
    first = last_up(fake)["messages"]
    s2, _, _ = completion(st, {"messages": [dict(user("I am Bob"), name="bob")]}, hd)
    up = last_up(fake)["messages"]
    if prov == "openai":
        check(s == 200 and s2 == 200 and first[-1].get("name") == "ann"
              and [m.get("name") for m in up] == ["ann", None, "bob"],
              f"[openai] a message's name goes up, and with the history: {up}")
    else:
        check(s == 200 and s2 == 200 and not any("name" in m for m in up),
              f"[anthropic] a message's name is not sent (the Messages API has none): {up}")


def session_flow(st, fake, prov):
    fake.plan()
    sid = f"tools-{prov}"
    hd = {"X-Session-Id": sid}
    s, h, doc = completion(st, {"messages": [user('call get_weather {"city":"Oslo"}')],
                                "tools": [WEATHER]}, hd)
    call = doc["choices"][0]["message"]["tool_calls"][0] if s == 200 else {}
    check(s == 200 and h.get("x-session-turn") == "1" and call.get("id"),
          f"[{prov}] session turn 1 is a tool call: {s} {doc}")
    s, h, doc = completion(st, {"messages": [{"role": "tool", "tool_call_id": call.get("id"),
                                              "content": "snow"}], "tools": [WEATHER]}, hd)
    check(s == 200 and h.get("x-session-turn") == "2"
          and doc["choices"][0]["message"]["content"] == "tool said: snow",
          f"[{prov}] with X-Session-Id the client sends only the tool result: {s} {doc}")
    s, _, sess = st.json("GET", f"/api/v1/sessions/{sid}")
    msgs = sess.get("messages", [])
    shape = [(m["turn"], m["role"]) for m in msgs]
    check(s == 200 and shape == [(1, "user"), (1, "assistant"), (2, "tool"), (2, "assistant")]
          and msgs[1].get("tool_calls") == [call] and msgs[2].get("tool_call_id") == call["id"]
          and msgs[2]["content"] == "snow" and msgs[3]["content"] == "tool said: snow",
          f"[{prov}] the session keeps the call and the result: {shape} {msgs[:3]}")
    s, _, doc = completion(st, {"messages": [user("thanks")], "tools": [WEATHER]}, hd)
    up = last_up(fake)["messages"]
    roles = [m["role"] for m in up]
    want = (["user", "assistant", "tool", "assistant", "user"] if prov == "openai"
            else ["user", "assistant", "user", "assistant", "user"])
    check(s == 200 and roles == want, f"[{prov}] turn 3: the upstream gets the whole tool "
          f"exchange from the store: {roles}")
    # a later turn without tools: the stored exchange still goes up (Anthropic refuses tool
    # blocks without tools, so it gets the names called, with nothing callable)
    s, _, doc = completion(st, {"messages": [user("and tomorrow?")]}, hd)
    up = last_up(fake)
    check(s == 200 and len(up["messages"]) == 7 if prov == "openai" else
          s == 200 and [t["name"] for t in up.get("tools", [])] == ["get_weather"]
          and up.get("tool_choice") == {"type": "none"},
          f"[{prov}] turn 4 without tools is answered: {s} {doc} {up.get('tools')}")

    # an Idempotency-Key replays a tool-call answer as it was
    ik = {"X-Session-Id": sid + "-idem", "Idempotency-Key": "k-1"}
    body = {"messages": [user('call get_weather {"city":"Lima"}')], "tools": [WEATHER]}
    s1, _, d1 = completion(st, body, ik)
    n = fake.stats()["calls"]
    s2, h2, d2 = completion(st, body, ik)
    check(s1 == 200 and s2 == 200 and h2.get("idempotent-replayed") == "true"
          and d2["choices"][0]["message"].get("tool_calls") ==
          d1["choices"][0]["message"]["tool_calls"]
          and d2["choices"][0]["finish_reason"] == "tool_calls"
          and fake.stats()["calls"] == n,
          f"[{prov}] Idempotency-Key: the same tool call again, no second upstream call: {d2}")

    # a call never answered: the next user turn does not send it up again
    hd = {"X-Session-Id": sid + "-unanswered"}
    completion(st, {"messages": [user('call get_weather {"city":"Kyiv"}')], "tools": [WEATHER]},
               hd)
    s, _, doc = completion(st, {"messages": [user("never mind")]}, hd)
    up = last_up(fake)["messages"]
    sent_calls = [m for m in up if m.get("tool_calls") or (
        isinstance(m.get("content"), list) and any(b.get("type") == "tool_use"
                                                   for b in m["content"]))]
    # NOTE: for Anthropic the call-only assistant message goes, so the two user messages
    # around it merge into one (roles must alternate): the echo then holds both.
    check(s == 200 and doc["choices"][0]["message"]["content"].endswith("never mind")
          and sent_calls == [],
          f"[{prov}] an unanswered call is not sent up again: {s} {up}")


def resend_flow(st, fake, prov):
    """A client that keeps the whole conversation (the usual SDK tool loop) and sends it all
    with X-Session-Id: what comes up to its last assistant message is already stored, so
    it is neither sent up twice nor stored twice."""
    fake.plan()
    sid = f"resend-{prov}"
    hd = {"X-Session-Id": sid}
    convo = [user('call get_weather {"city":"Oslo"}')]
    s, _, doc = completion(st, {"messages": convo, "tools": [WEATHER]}, hd)
    msg = doc["choices"][0]["message"] if s == 200 else {}
    call = (msg.get("tool_calls") or [{}])[0]
    convo += [{"role": "assistant", "content": None, "tool_calls": msg.get("tool_calls")},
              {"role": "tool", "tool_call_id": call.get("id"), "content": "snow"}]
    s, h, doc = completion(st, {"messages": convo, "tools": [WEATHER]}, hd)
    up = last_up(fake)["messages"]
    want = (["user", "assistant", "tool"] if prov == "openai"
            else ["user", "assistant", "user"])
    check(s == 200 and h.get("x-session-turn") == "2"
          and doc["choices"][0]["message"]["content"] == "tool said: snow"
          and [m["role"] for m in up] == want,
          f"[{prov}] the whole conversation resent with X-Session-Id: the call goes up once: "
          f"{s} {[m['role'] for m in up]} {doc}")
    convo += [{"role": "assistant", "content": "tool said: snow"}, user("thanks")]
    s, h, doc = completion(st, {"messages": convo, "tools": [WEATHER]}, hd)
    up = last_up(fake)["messages"]
    want = (["user", "assistant", "tool", "assistant", "user"] if prov == "openai"
            else ["user", "assistant", "user", "assistant", "user"])
    check(s == 200 and h.get("x-session-turn") == "3"
          and doc["choices"][0]["message"]["content"] == "echo: thanks"
          and [m["role"] for m in up] == want,
          f"[{prov}] turn 3 resent whole: the history goes up once: {s} "
          f"{[m['role'] for m in up]}")
    s, _, sess = st.json("GET", f"/api/v1/sessions/{sid}")
    shape = [(m["turn"], m["role"]) for m in sess.get("messages", [])]
    check(s == 200 and shape == [(1, "user"), (1, "assistant"), (2, "tool"), (2, "assistant"),
                                 (3, "user"), (3, "assistant")],
          f"[{prov}] the session stores each message once: {shape}")
    s, _, doc = completion(st, {"messages": convo[:-1]}, hd)
    check(s == 400 and is_error_doc(doc, "invalid_field"),
          f"[{prov}] a resent conversation ending with an answer has nothing new: 400: {s} {doc}")
    # a new session takes the client's history as its first turn
    s, h, doc = completion(st, {"messages": [user("seed"), {"role": "assistant", "content": "ok"},
                                             user("go on")]}, {"X-Session-Id": sid + "-new"})
    up = last_up(fake)["messages"]
    check(s == 200 and h.get("x-session-turn") == "1" and len(up) == 3,
          f"[{prov}] a new session keeps the history the client brings: {s} {up}")


def silent_flow(st, fake, prov):
    """A model that ends its turn without a word (Claude answers content [] with end_turn,
    after a tool result especially): an empty answer, whole and streamed, not a 502."""
    sid = f"silent-{prov}"
    fake.plan({"mode": "silent"})
    s, _, doc = completion(st, {"messages": [user("hush")]}, {"X-Session-Id": sid})
    ch = doc["choices"][0] if s == 200 else {}
    check(s == 200 and ch.get("message", {}).get("content") == ""
          and ch.get("finish_reason") == "stop" and fake.stats()["calls"] == 1,
          f"[{prov}] a silent turn, whole: 200 with empty content, no retry: {s} {doc}")
    fake.plan({"mode": "silent"})
    s, chunks, done_seen = stream(st, {"messages": [user("hush")]})
    check(s == 200 and done_seen and finish_reasons(chunks) == ["stop"]
          and not any("error" in c for c in chunks)
          and chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""},
          f"[{prov}] a silent turn, streamed: the role chunk, a clean end: {s} {chunks}")
    fake.plan()
    s, _, doc = completion(st, {"messages": [user("and now?")]}, {"X-Session-Id": sid})
    # NOTE: for Anthropic the empty answer goes, so the two user messages merge.
    check(s == 200 and doc["choices"][0]["message"]["content"].endswith("and now?"),
          f"[{prov}] the turn after a silent one: {s} {doc}")


def choice_without_tools(st, fake, prov):
    """tool_choice "none" without tools (or with an empty list) is valid and says nothing:
    it is not sent up, where OpenAI and Anthropic refuse a tool_choice without tools."""
    fake.plan()
    for extra in ({"tool_choice": "none"}, {"tools": [], "tool_choice": "none"}):
        s, _, doc = completion(st, dict({"messages": [user("hi")]}, **extra))
        up = last_up(fake)
        check(s == 200 and "tool_choice" not in up and "tools" not in up,
              f"[{prov}] {extra}: 200, no tool_choice sent up: {s} {doc} {up}")


def finish_flow(st, fake, prov):
    """finish_reason from the upstream's stop reason, whole and streamed: Anthropic's
    max_tokens and model_context_window_exceeded are "length" (the answer was cut off),
    stop_sequence and end_turn "stop", refusal "content_filter"; OpenAI's as sent."""
    if prov == "anthropic":
        cases = (("max_tokens", "length"), ("model_context_window_exceeded", "length"),
                 ("stop_sequence", "stop"), ("end_turn", "stop"), ("refusal", "content_filter"))
    else:
        cases = (("length", "length"), ("content_filter", "content_filter"))
    for up, want in cases:
        fake.plan({"mode": "ok", "stop_reason": up})
        s, _, doc = completion(st, {"messages": [user("a long story")]})
        got = doc["choices"][0]["finish_reason"] if s == 200 else None
        check(got == want, f"[{prov}] upstream {up}, whole: finish_reason {want}: {s} {got}")
        fake.plan({"mode": "ok", "stop_reason": up})
        s, chunks, done_seen = stream(st, {"messages": [user("a long story")]})
        check(s == 200 and done_seen and finish_reasons(chunks) == [want],
              f"[{prov}] upstream {up}, streamed: finish_reason {want}: "
              f"{finish_reasons(chunks)}")


def window_flow(fake, prov, env):
    """VALERIE_HISTORY_TURNS=1: turn 3's window starts at turn 2, after the call."""
    env = dict(env, VALERIE_HISTORY_TURNS="1")
    with Stack(workers=1, threads=2, env=env) as st:
        fake.plan()
        hd = {"X-Session-Id": "window"}
        s, _, doc = completion(st, {"messages": [user('call get_weather {"city":"Lyon"}')],
                                    "tools": [WEATHER]}, hd)
        cid = doc["choices"][0]["message"]["tool_calls"][0]["id"]
        completion(st, {"messages": [{"role": "tool", "tool_call_id": cid, "content": "rain"}],
                        "tools": [WEATHER]}, hd)
        s, _, doc = completion(st, {"messages": [user("and tomorrow?")], "tools": [WEATHER]}, hd)
        up = last_up(fake)["messages"]
        orphan = [m for m in up if m.get("role") == "tool" or (
            isinstance(m.get("content"), list) and any(b.get("type") == "tool_result"
                                                       for b in m["content"]))]
        check(s == 200 and doc["choices"][0]["message"]["content"] == "echo: and tomorrow?"
              and orphan == [],
              f"[{prov}] a window starting after the call drops the orphaned result "
              f"(the upstream would refuse it): {s} {up}")


def bad_input(st, fake):
    fake.plan()
    cases = [
        ({"tools": {"a": 1}}, "tools"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "name"),
        ({"tools": [{"type": "function", "function": {"name": "x" * 65}}]}, "name"),
        ({"tools": [{"type": "function", "function": {"name": "ok", "parameters": []}}]},
         "parameters"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"temperature": 3}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [1]}, "stop"),
        ({"n": 2}, "n"),
        ({"seed": "7"}, "seed"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": "x"}, "frequency_penalty"),
        ({"logit_bias": {"1": 500}}, "logit_bias"),
        ({"user": 5}, "user"),
        ({"parallel_tool_calls": "no"}, "parallel_tool_calls"),
        ({"reasoning_effort": 1}, "reasoning_effort"),
        ({"store": "yes"}, "store"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 3}, "logprobs"),

        ({"messages": [user("x"), {"role": "tool", "content": "r"}]}, "tool_call_id"),
        ({"messages": [user("x"), {"role": "assistant", "content": None,
                                   "tool_calls": [{"id": "c1", "function": {"name": "f"}}]}]},
         "tool_calls"),
        ({"messages": [user("x"), {"role": "assistant", "tool_calls": "nope"}]}, "tool_calls"),
    ]
    n0 = fake.stats()["calls"]
    for extra, word in cases:
        body = dict({"messages": [user("hello")]}, **extra)
        s, _, doc = completion(st, body)
        check(s == 400 and is_error_doc(doc, "invalid_field") and word in doc["error"]["message"],
              f"400 naming {word!r} for {json.dumps(extra)[:80]}: {s} {doc}")
    check(fake.stats()["calls"] == n0, "none of them reached the upstream")
    s, _, doc = completion(st, {"messages": [user("hello")], "logprobs": False})
    check(s == 200, f"logprobs false is fine: {s} {doc}")
    # OpenAI's metadata limits are in characters: 64 of a key, 512 of a value
    meta = {"\u00fc" * 64: "\u00e9" * 512}
    s, _, doc = completion(st, {"messages": [user("hello")], "metadata": meta})
    check(s == 200 and last_up(fake).get("metadata") == meta,
          f"metadata at OpenAI's limits in non-ASCII characters goes up: {s} {doc}")
    s, _, doc = completion(st, {"messages": [{"role": "system", "content": "be brief"}]},
                           {"X-Session-Id": "nothing-new"})
    check(s == 400 and is_error_doc(doc, "invalid_field"),
          f"with X-Session-Id, a request with neither a user message nor a tool result: {s}")
    # the upstream refuses the request itself: a 400 with its reason, not a 502
    fake.plan({"mode": "fail-400"})
    s, _, doc = completion(st, {"messages": [user("hello")], "tools": [WEATHER]})
    check(s == 400 and is_error_doc(doc, "provider_rejected_request")
          and "400" in doc["error"]["message"] and fake.stats()["calls"] == 1,
          f"an upstream 400 comes back as 400 provider_rejected_request, not retried: {s} {doc}")


fake = FakeLLM()
try:
    base = {"OPENAI_BASE_URL": f"http://127.0.0.1:{fake.port}/v1", "OPENAI_API_KEY": "sk-test",
            "OPENAI_MODEL": "gpt-test", "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{fake.port}",
            "ANTHROPIC_API_KEY": "ak-test", "ANTHROPIC_MODEL": "claude-test",
            "OPENAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000",
            "ANTHROPIC_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000"}
    for prov in ("openai", "anthropic"):
        env = dict(base, VALERIE_LLM_PROVIDER=prov)
        with Stack(workers=2, threads=4, env=env) as st:
            tool_flow(st, fake, prov)
            params_flow(st, fake, prov)
            big_int_flow(st, fake, prov)
            extra_flow(st, fake, prov)
            session_flow(st, fake, prov)
            resend_flow(st, fake, prov)
            silent_flow(st, fake, prov)
            finish_flow(st, fake, prov)
            choice_without_tools(st, fake, prov)
            if prov == "openai":
                bad_input(st, fake)
        window_flow(fake, prov, env)
finally:
    fake.stop()
done("test_openai_tools")
