"""test_provider_wire: answers real OpenAI-compatible upstreams send that the fake upstream
does not, replayed byte for byte by a scripted loopback server, through real nginx and the
pool to an OpenAI-SDK-shaped client of /v1/chat/completions:
- Ollama streams every parallel tool call with tool_calls[].index 0, each whole with its
  own id (ollama/ollama#15457): two calls, not one with their arguments glued together;
- gateways in front of Claude (Bedrock access gateway, CLIProxyAPI) number streamed tool
  calls from the content block's index, so the first is index 1: one call, not an empty
  call 0 before it;
- a refusal (structured outputs) is message.content null with message.refusal, or
  delta.refusal fragments when streamed: the client gets it in that same shape (the SDK's
  parse() reads message.refusal), not a 502; /api/v1/chat has it as its reply;
- vLLM with a reasoning parser answers content null (the tokens went to reasoning) when
  max_tokens ran out first: an empty answer cut by length, not a 502;
- Mistral's reasoning models answer content as parts ([{type: "thinking"}, {type: "text"}]),
  whole and streamed: the text parts are the answer, not a 502 or an empty stream;
- a server that ignores `stream` (some compatible ones do when tools are given) answers a
  plain JSON completion: it is the answer, streamed out, not "ended before [DONE]", retries
  and a 502 (an event stream labelled application/json still reads as events);
- vLLM and SGLang send an error inside a stream with a Python class as its type and the HTTP
  status as its code ({"type": "BadRequestError", "code": 400}): the request was refused
  (provider_rejected_request), not an upstream failure (provider_error, a 502 before a
  stream);
- a compatible proxy in front of Claude that sends a tool_use block's whole input in
  content_block_start, with no input_json_delta: those are the call's arguments, not {};
- a stop sequence of only whitespace ("\\n"), which OpenAI takes and Anthropic refuses:
  the chain passes over Anthropic (PROVIDER_UNSUPPORTED) instead of a 400 from it."""
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(__file__))
from harness import SseParser, Stack, check, done, post_chat  # noqa: E402


class Scripted:
    """A loopback upstream answering each POST with the next canned (status, content
    type, body bytes) of `answers`, keeping the request bodies it was sent."""

    def __init__(self):
        self.answers, self.bodies = [], []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    outer.bodies.append(json.loads(raw))
                except ValueError:
                    outer.bodies.append(None)
                status, ctype, body = (outer.answers.pop(0) if outer.answers else
                                       (500, "application/json", b'{"error":{"message":"no '
                                        b'answer scripted","type":"server_error"}}'))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def script(self, *answers):
        self.answers = list(answers)
        self.bodies = []

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def openai_sse(*chunks):
    """An OpenAI chat completion stream of `chunks` (choices[0] fields), then [DONE]."""
    out = b""
    for c in chunks:
        doc = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1,
               "model": "up-model", "choices": [dict({"index": 0, "finish_reason": None}, **c)]}
        out += b"data: " + json.dumps(doc).encode() + b"\n\n"
    return 200, "text/event-stream", out + b"data: [DONE]\n\n"


def anthropic_sse(*events):
    """An Anthropic Messages stream of `events` (each named by its type)."""
    out = b""
    for e in events:
        out += b"event: " + e["type"].encode() + b"\ndata: " + json.dumps(e).encode() + b"\n\n"
    return 200, "text/event-stream", out


def openai_whole(message, finish):
    doc = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "up-model",
           "choices": [{"index": 0, "message": dict({"role": "assistant"}, **message),
                        "finish_reason": finish}],
           "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}
    return 200, "application/json", json.dumps(doc).encode()


def call(index, cid, name, args, **extra):
    c = {"index": index, "function": {"arguments": args}}
    if cid is not None:
        c.update(id=cid, type="function")
        c["function"]["name"] = name
    c.update(extra)
    return c


def streamed(st, body, refusal=None):
    """(status, the content deltas joined, the tool calls joined by index as an OpenAI SDK
    does, the finish reason, whether [DONE] ended it) of a streamed completion; the
    refusal deltas joined go to refusal[0] when a list is given."""
    s, _, raw = st.request("POST", "/v1/chat/completions", body=json.dumps(dict(body, stream=True)),
                           headers={"Content-Type": "application/json"}, timeout=60)
    text, calls, finish, datas = "", {}, None, []
    if refusal is not None:
        refusal[:] = [None]
    for ev in SseParser().feed(raw, final=True):
        datas.append(ev["data"])
        if ev["data"] == "[DONE]":
            continue
        for c in json.loads(ev["data"]).get("choices") or []:
            d = c.get("delta") or {}
            text += d.get("content") or ""
            if refusal is not None and d.get("refusal") is not None:
                refusal[0] = (refusal[0] or "") + d["refusal"]
            for tc in d.get("tool_calls") or []:
                acc = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
                acc["id"] += tc.get("id") or ""
                fn = tc.get("function") or {}
                acc["name"] += fn.get("name") or ""
                acc["arguments"] += fn.get("arguments") or ""
            finish = c.get("finish_reason") or finish
    return s, text, [calls[k] for k in sorted(calls)], finish, datas[-1:] == ["[DONE]"]


TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
         for n in ("file_write", "get_weather")]
ASK = {"model": "up-model", "messages": [{"role": "user", "content": "do it"}], "tools": TOOLS}

up = Scripted()
env = {"VALERIE_LLM_PROVIDER": "openai", "OPENAI_BASE_URL": f"http://127.0.0.1:{up.port}/v1",
       "OPENAI_API_KEY": "sk-test", "OPENAI_MODEL": "up-model", "OPENAI_MAX_RETRIES": "0",
       "OPENAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000"}
try:
    with Stack(workers=1, threads=2, env=env) as st:
        # --- Ollama: every parallel call streamed whole under index 0 ---
        up.script(openai_sse(
            {"delta": {"role": "assistant", "content": "",
                       "tool_calls": [call(0, "call_a", "file_write", '{"path":"a.py"}')]}},
            {"delta": {"tool_calls": [call(0, "call_b", "file_write", '{"path":"b.py"}')]}},
            {"delta": {}, "finish_reason": "tool_calls"}))
        s, text, calls, finish, ended = streamed(st, ASK)
        check(s == 200 and ended and finish == "tool_calls" and
              [(c["id"], c["name"], c["arguments"]) for c in calls] ==
              [("call_a", "file_write", '{"path":"a.py"}'), ("call_b", "file_write",
                                                             '{"path":"b.py"}')],
              f"two calls under one index, each with its own id: two calls: {s} {calls}")
        # the usual OpenAI shape still joins fragments by index, interleaved
        up.script(openai_sse(
            {"delta": {"tool_calls": [call(0, "call_a", "file_write", ""),
                                      call(1, "call_b", "get_weather", "")]}},
            {"delta": {"tool_calls": [call(1, None, None, '{"city":')]}},
            {"delta": {"tool_calls": [call(0, None, None, '{"path":"a.py"}')]}},
            {"delta": {"tool_calls": [call(1, None, None, '"Oslo"}')]}},
            {"delta": {}, "finish_reason": "tool_calls"}))
        s, text, calls, finish, ended = streamed(st, ASK)
        check(s == 200 and [(c["id"], c["name"], c["arguments"]) for c in calls] ==
              [("call_a", "file_write", '{"path":"a.py"}'), ("call_b", "get_weather",
                                                             '{"city":"Oslo"}')],
              f"interleaved fragments of two calls are joined by index: {s} {calls}")
        # a server that repeats a call's id in each of its fragments: still one call
        up.script(openai_sse(
            {"delta": {"tool_calls": [call(0, "call_a", "get_weather", '{"city":')]}},
            {"delta": {"tool_calls": [call(0, "call_a", "", '"Oslo"}')]}},
            {"delta": {}, "finish_reason": "tool_calls"}))
        s, text, calls, finish, ended = streamed(st, ASK)
        check(s == 200 and [(c["id"], c["name"], c["arguments"]) for c in calls] ==
              [("call_a", "get_weather", '{"city":"Oslo"}')],
              f"a call's id repeated in its fragments: one call: {s} {calls}")

        # --- a gateway in front of Claude: the first call is index 1 ---
        up.script(openai_sse(
            {"delta": {"role": "assistant", "content": "Let me check."}},
            {"delta": {"tool_calls": [call(1, "toolu_1", "get_weather", "")]}},
            {"delta": {"tool_calls": [call(1, None, None, '{"city": ')]}},
            {"delta": {"tool_calls": [call(1, None, None, '"Paris"}')]}},
            {"delta": {}, "finish_reason": "tool_calls"}))
        s, text, calls, finish, ended = streamed(st, ASK)
        check(s == 200 and text == "Let me check." and
              [(c["id"], c["name"], c["arguments"]) for c in calls] ==
              [("toolu_1", "get_weather", '{"city": "Paris"}')],
              f"a stream whose first call is index 1: that one call, no empty one: {s} {calls}")
        # ...or index 2, with no text before it
        up.script(openai_sse(
            {"delta": {"tool_calls": [call(2, "toolu_2", "get_weather", '{"city":"Rome"}')]}},
            {"delta": {}, "finish_reason": "tool_calls"}))
        s, text, calls, finish, ended = streamed(st, ASK)
        check(s == 200 and [c["name"] for c in calls] == ["get_weather"],
              f"a stream whose only call is index 2: one call: {s} {calls}")

        # --- a refusal: content null and message.refusal, or delta.refusal; answered in
        # that shape (the SDK's parse() reads message.refusal instead of parsing content) ---
        refusal = "I'm sorry, I cannot help with that request."
        up.script(openai_whole({"content": None, "refusal": refusal}, "stop"))
        s, h, doc = post_chat(st, {"model": "up-model", "messages": [
            {"role": "user", "content": "x"}]}, path="/v1/chat/completions")
        msg = (doc or {}).get("choices", [{}])[0].get("message", {})
        check(s == 200 and "content" in msg and msg["content"] is None
              and msg.get("refusal") == refusal,
              f"a whole refusal: message.content null, message.refusal the refusal: {s} {doc}")
        up.script(openai_sse({"delta": {"role": "assistant", "content": None, "refusal": ""}},
                             {"delta": {"refusal": "I'm sorry, I cannot "}},
                             {"delta": {"refusal": "help with that request."}},
                             {"delta": {}, "finish_reason": "stop"}))
        got = []
        s, text, calls, finish, ended = streamed(st, {"model": "up-model", "messages": [
            {"role": "user", "content": "x"}]}, refusal=got)
        check(s == 200 and ended and text == "" and got == [refusal],
              f"a streamed refusal: delta.refusal pieces, no content: {s} {text!r} {got}")
        # the native route keeps the refusal as its reply
        up.script(openai_whole({"content": None, "refusal": refusal}, "stop"))
        s, h, doc = post_chat(st, {"message": "x", "session_id": "wire-refusal"})
        check(s == 200 and (doc or {}).get("reply") == refusal,
              f"/api/v1/chat: a refusal is the reply: {s} {doc}")
        # an answer that is not a refusal says nothing of one
        up.script(openai_whole({"content": "fine", "refusal": None}, "stop"))
        s, h, doc = post_chat(st, {"model": "up-model", "messages": [
            {"role": "user", "content": "x"}]}, path="/v1/chat/completions")
        msg = (doc or {}).get("choices", [{}])[0].get("message", {})
        check(s == 200 and msg.get("content") == "fine" and msg.get("refusal") is None,
              f"an answer with refusal null: its content: {s} {doc}")

        # --- vLLM with a reasoning parser: content null, the tokens spent on reasoning ---
        up.script(openai_whole({"content": None, "reasoning_content": "Let me think about"},
                               "length"))
        s, h, doc = post_chat(st, {"model": "up-model", "messages": [
            {"role": "user", "content": "x"}], "max_tokens": 5}, path="/v1/chat/completions")
        ch = (doc or {}).get("choices", [{}])[0]
        check(s == 200 and ch.get("message", {}).get("content") == ""
              and ch.get("finish_reason") == "length"
              and doc.get("usage", {}).get("completion_tokens") == 7,
              f"content null, cut by length while reasoning: an empty answer, finish_reason "
              f"length: {s} {doc}")
        # --- Mistral's reasoning models: content as parts, thinking then text ---
        think = {"type": "thinking", "thinking": [{"type": "text", "text": "2 and 2..."}]}
        up.script(openai_whole({"content": [think, {"type": "text", "text": "It is 4."}]},
                               "stop"))
        s, h, doc = post_chat(st, {"model": "up-model", "messages": [
            {"role": "user", "content": "2+2?"}]}, path="/v1/chat/completions")
        msg = (doc or {}).get("choices", [{}])[0].get("message", {})
        check(s == 200 and msg.get("content") == "It is 4.",
              f"a whole answer whose content is parts: the text parts: {s} {doc}")
        up.script(openai_sse({"delta": {"role": "assistant", "content": [think]}},
                             {"delta": {"content": [{"type": "text", "text": "It is "}]}},
                             {"delta": {"content": "4."}},
                             {"delta": {}, "finish_reason": "stop"}))
        s, text, calls, finish, ended = streamed(st, {"model": "up-model", "messages": [
            {"role": "user", "content": "2+2?"}]})
        check(s == 200 and ended and text == "It is 4.",
              f"a stream whose deltas' content is parts: the text parts: {s} {text!r}")
        # content that is neither text, parts nor null is still garbage
        up.script(openai_whole({"content": 42}, "stop"))
        s, h, doc = post_chat(st, {"model": "up-model", "messages": [
            {"role": "user", "content": "x"}]}, path="/v1/chat/completions")
        check(s == 502, f"content that is neither text nor null: 502: {s} {doc}")

        # --- a server that ignores `stream` (some do when tools are given) and answers
        # plain JSON: that answer, streamed out, not "ended before [DONE]" and a 502 ---
        up.script(openai_whole({"content": None, "tool_calls": [
            {"id": "call_j", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"city":"Lima"}'}}]}, "tool_calls"))
        s, text, calls, finish, ended = streamed(st, ASK)
        check(s == 200 and ended and finish == "tool_calls" and len(up.bodies) == 1
              and up.bodies[0].get("stream") is True and
              [(c["id"], c["name"], c["arguments"]) for c in calls] ==
              [("call_j", "get_weather", '{"city":"Lima"}')],
              f"a JSON answer with tool calls to a stream: those calls, streamed, one call up: "
              f"{s} {calls} {finish} {len(up.bodies)}")
        up.script(openai_whole({"content": "Hello there."}, "stop"))
        s, text, calls, finish, ended = streamed(st, {"model": "up-model", "messages": [
            {"role": "user", "content": "x"}]})
        check(s == 200 and ended and text == "Hello there." and finish == "stop" and not calls,
              f"a JSON answer to a stream: its text streamed: {s} {text!r} {finish}")
        # an event stream mislabelled application/json still reads as a stream
        ctype, body = openai_sse({"delta": {"content": "as events"}},
                                 {"delta": {}, "finish_reason": "stop"})[1:]
        up.script((200, "application/json", body))
        s, text, calls, finish, ended = streamed(st, {"model": "up-model", "messages": [
            {"role": "user", "content": "x"}]})
        check(s == 200 and ended and text == "as events",
              f"SSE under Content-Type application/json: read as events: {s} {text!r}")

        # --- vLLM/SGLang: an error inside a stream, a Python class as its type and the HTTP
        # status as its code: 400 refused the request (provider_rejected_request), not 502 ---
        err = {"error": {"object": "error", "message": "This model's maximum context length "
                         "is 4096 tokens.", "type": "BadRequestError", "param": None,
                         "code": 400}}
        up.script((200, "text/event-stream", b"data: " + json.dumps(err).encode() + b"\n\n"
                   b"data: [DONE]\n\n"))
        s, _, raw = st.request("POST", "/v1/chat/completions", body=json.dumps(
            {"model": "up-model", "messages": [{"role": "user", "content": "x"}],
             "stream": True}), headers={"Content-Type": "application/json"}, timeout=60)
        errs = [json.loads(ev["data"]).get("error") for ev in SseParser().feed(raw, final=True)
                if ev["data"] != "[DONE]" and "error" in json.loads(ev["data"])]
        check(s == 200 and len(errs) == 1 and errs[0].get("code") == "provider_rejected_request"
              and "maximum context length" in errs[0].get("message", ""),
              f"vLLM's in-stream BadRequestError (code 400): the request was refused, not an "
              f"upstream failure: {s} {raw[-400:]!r}")

    # --- a compatible proxy in front of Claude sends a tool_use block's whole input in
    # content_block_start and no input_json_delta: those are the arguments ---
    aenv = dict(env, VALERIE_LLM_PROVIDER="anthropic", ANTHROPIC_API_KEY="ak-test",
                ANTHROPIC_MODEL="claude-test", ANTHROPIC_BASE_URL=f"http://127.0.0.1:{up.port}",
                ANTHROPIC_MAX_RETRIES="0")
    with Stack(workers=1, threads=2, env=aenv) as st:
        def tool_stream(start_input, *fragments):
            return anthropic_sse(
                {"type": "message_start", "message": {"model": "claude-test", "usage": {
                    "input_tokens": 5, "output_tokens": 1}}},
                {"type": "content_block_start", "index": 0, "content_block": {
                    "type": "tool_use", "id": "toolu_1", "name": "get_weather",
                    "input": start_input}},
                *({"type": "content_block_delta", "index": 0, "delta": {
                    "type": "input_json_delta", "partial_json": f}} for f in fragments),
                {"type": "content_block_stop", "index": 0},
                {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                 "usage": {"output_tokens": 9}},
                {"type": "message_stop"})
        up.script(tool_stream({"city": "Oslo"}))
        s, text, calls, finish, ended = streamed(st, ASK)
        check(s == 200 and ended and finish == "tool_calls" and
              [(c["id"], c["name"], json.loads(c["arguments"])) for c in calls] ==
              [("toolu_1", "get_weather", {"city": "Oslo"})],
              f"a tool_use whose whole input came in content_block_start: those arguments: "
              f"{s} {calls}")
        # Anthropic's own shape: {} at the start, the input in fragments (an empty one first)
        up.script(tool_stream({}, "", '{"city": ', '"Rome"}'))
        s, text, calls, finish, ended = streamed(st, ASK)
        check(s == 200 and [json.loads(c["arguments"]) for c in calls] == [{"city": "Rome"}],
              f"input {{}} at the start, then fragments: the fragments: {s} {calls}")
        # both: the fragments are the input, not glued after the start's
        up.script(tool_stream({"city": "Oslo"}, "", '{"city": "Oslo"}'))
        s, text, calls, finish, ended = streamed(st, ASK)
        check(s == 200 and [json.loads(c["arguments"]) for c in calls] == [{"city": "Oslo"}],
              f"a whole start input and fragments: the fragments alone: {s} {calls}")
        # a whole Messages answer to a stream: that answer, streamed out
        up.script((200, "application/json", json.dumps({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [{"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_9", "name": "get_weather",
                         "input": {"city": "Bern"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 3, "output_tokens": 4}
        }).encode()))
        s, text, calls, finish, ended = streamed(st, ASK)
        check(s == 200 and ended and text == "Checking." and finish == "tool_calls" and
              [(c["id"], json.loads(c["arguments"])) for c in calls] ==
              [("toolu_9", {"city": "Bern"})],
              f"anthropic: a JSON answer to a stream, streamed out: {s} {text!r} {calls}")

    # --- Anthropic refuses a whitespace-only stop sequence, which OpenAI takes: passed
    # over for the next provider of the chain, never sent to Anthropic ---
    ask = {"messages": [{"role": "user", "content": "one line"}], "stop": ["\n"]}
    with Stack(workers=1, threads=2, env=dict(aenv, VALERIE_LLM_FALLBACKS="openai")) as st:
        up.script(openai_whole({"content": "one line"}, "stop"))
        s, h, doc = post_chat(st, ask, path="/v1/chat/completions")
        check(s == 200 and [b.get("stop") for b in up.bodies] == [["\n"]]
              and "stop_sequences" not in json.dumps(up.bodies),
              f"stop \\n with anthropic then openai: openai serves it, anthropic is not "
              f"called: {s} {doc} {up.bodies}")
    with Stack(workers=1, threads=2, env=aenv) as st:
        up.script()
        s, h, doc = post_chat(st, ask, path="/v1/chat/completions")
        check(s == 400 and "whitespace" in json.dumps(doc) and up.bodies == [],
              f"stop \\n with anthropic alone: a 400 saying why, no upstream call: {s} {doc}")
finally:
    up.stop()

done("test_provider_wire")
