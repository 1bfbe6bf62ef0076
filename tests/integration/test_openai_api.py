"""test_openai_api: POST /v1/chat/completions and GET /v1/models as an OpenAI client sees them,
through real nginx and the pool, with the offline provider and with the openai provider
against the fake upstream (tests/fakes/fake_llm.py): the answer and the stream chunks shaped
exactly as OpenAI's, usage, [DONE]; without X-Session-Id nothing is kept and every message
reaches the upstream; with it the client sends only the new message, the upstream still gets
the history and the turn is stored (X-Session-Turn, GET /api/v1/sessions/{id}); system
messages as the system prompt; content as an array of text parts (images: test_openai_images);
Idempotency-Key; 400 JSON
errors for bad input and models outside VALERIE_MODELS (and for OpenAI's deprecated
function calling, `functions`/`function_call`/role function, saying to use tools, never
dropped); an assistant's refusal part in the history goes up as its text; the model list; a stream that breaks
mid-way ends with an error chunk and no [DONE]."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (FakeLLM, SseParser, Stack, check, done, is_error_doc,  # noqa: E402
                     post_chat, session_exchanges)

PATH = "/v1/chat/completions"
# The keys an OpenAI answer has; the optional ones OpenAI may add.
ANSWER_KEYS = {"id", "object", "created", "model", "choices", "usage"}
ANSWER_OPTIONAL = {"system_fingerprint", "service_tier"}
CHUNK_KEYS = {"id", "object", "created", "model", "choices"}
CHUNK_OPTIONAL = {"system_fingerprint", "service_tier", "usage"}
USAGE_KEYS = {"prompt_tokens", "completion_tokens", "total_tokens"}
USAGE_OPTIONAL = {"prompt_tokens_details", "completion_tokens_details"}


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def usage_problems(u):
    if not isinstance(u, dict):
        return [f"usage {u!r}"]
    p = []
    if not (USAGE_KEYS <= set(u) <= USAGE_KEYS | USAGE_OPTIONAL):
        p.append(f"usage keys {sorted(u)}")
    if not all(is_int(u.get(k)) and u.get(k) >= 0 for k in USAGE_KEYS):
        p.append(f"usage values {u}")
    elif u["total_tokens"] != u["prompt_tokens"] + u["completion_tokens"]:
        p.append(f"total_tokens != prompt + completion: {u}")
    return p


def answer_problems(doc, model=None):
    """What differs from an OpenAI chat.completion; [] when nothing does."""
    if not isinstance(doc, dict):
        return [f"not a JSON object: {doc!r:.200}"]
    p = []
    if not (ANSWER_KEYS <= set(doc) <= ANSWER_KEYS | ANSWER_OPTIONAL):
        p.append(f"keys {sorted(doc)}")
    if not (isinstance(doc.get("id"), str) and doc["id"].startswith("chatcmpl-")):
        p.append(f"id {doc.get('id')!r}")
    if doc.get("object") != "chat.completion":
        p.append(f"object {doc.get('object')!r}")
    if not (is_int(doc.get("created")) and abs(doc["created"] - time.time()) < 300):
        p.append(f"created {doc.get('created')!r} is not now in seconds")
    if not (isinstance(doc.get("model"), str) and doc["model"]):
        p.append(f"model {doc.get('model')!r}")
    elif model is not None and doc["model"] != model:
        p.append(f"model {doc['model']!r} != {model!r}")
    ch = doc.get("choices")
    if not (isinstance(ch, list) and len(ch) == 1 and isinstance(ch[0], dict)):
        p.append(f"choices {ch!r:.200}")
    else:
        c = ch[0]
        if not ({"index", "message", "finish_reason"} <= set(c)
                <= {"index", "message", "finish_reason", "logprobs"}):
            p.append(f"choice keys {sorted(c)}")
        if c.get("index") != 0:
            p.append(f"choice index {c.get('index')!r}")
        m = c.get("message")
        if not (isinstance(m, dict) and {"role", "content"} <= set(m)
                <= {"role", "content", "refusal", "tool_calls", "annotations"}):
            p.append(f"message {m!r:.200}")
        elif m.get("role") != "assistant" or not isinstance(m.get("content"), str) \
                or not m["content"]:
            p.append(f"message role/content {m!r:.200}")
        if c.get("finish_reason") != "stop":
            p.append(f"finish_reason {c.get('finish_reason')!r}")
    p += usage_problems(doc.get("usage"))
    return p


def content(doc):
    try:
        return doc["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None


def complete(st, body, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return post_chat(st, body, h, path=PATH)


def stream(st, body, headers=None):
    """(status, headers, list of the events' data strings, event names) of a streamed call."""
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    s, hh, raw = st.request("POST", PATH, body=json.dumps(body), headers=h, timeout=60)
    parser = SseParser()
    evs = parser.feed(raw, final=True)
    return s, hh, [e["data"] for e in evs], [e["event"] for e in evs], raw


def stream_problems(datas, names, usage=False, model=None):
    """Reads an OpenAI stream: (joined content, usage doc or None, problems). Every data
    line parses (but the last, [DONE]); chunks are chat.completion.chunk with one id,
    created and model; the first delta carries role assistant; the last chunk with a choice
    has finish_reason stop; with usage, then a chunk with choices [] and usage."""
    p = []
    if any(n != "message" for n in names):
        p.append(f"events with a name (OpenAI sends data lines only): {set(names)}")
    if not datas or datas[-1] != "[DONE]":
        p.append(f"does not end with data: [DONE] ({datas[-1:]!r:.200})")
        body = datas
    else:
        body = datas[:-1]
    chunks = []
    for d in body:
        try:
            chunks.append(json.loads(d))
        except ValueError:
            p.append(f"a data line does not parse: {d!r:.200}")
    if not chunks:
        return "", None, p + ["no chunks"]
    for c in chunks:
        if not isinstance(c, dict) or not (CHUNK_KEYS <= set(c) <= CHUNK_KEYS | CHUNK_OPTIONAL):
            p.append(f"chunk keys {sorted(c) if isinstance(c, dict) else c!r}")
            return "", None, p
        if c.get("object") != "chat.completion.chunk":
            p.append(f"chunk object {c.get('object')!r}")
        if c.get("usage") is not None and c.get("choices") != []:
            p.append(f"usage on a chunk with choices: {c!r:.200}")
    for k in ("id", "created"):  # the model: its own check (chunk_models)
        vals = [c.get(k) for c in chunks]
        if len(set(map(repr, vals))) != 1:
            p.append(f"the chunks of one stream differ in {k}: {sorted(set(map(str, vals)))}")
    if not (isinstance(chunks[0].get("id"), str) and chunks[0]["id"].startswith("chatcmpl-")):
        p.append(f"chunk id {chunks[0].get('id')!r}")
    if not (is_int(chunks[0].get("created")) and abs(chunks[0]["created"] - time.time()) < 300):
        p.append(f"chunk created {chunks[0].get('created')!r}")
    if model is not None and any(c.get("model") != model for c in chunks):
        p.append(f"chunk models {sorted({str(c.get('model')) for c in chunks})} != {model!r}")
    with_choice = [c for c in chunks if c.get("choices") != []]
    usage_chunks = [c for c in chunks if c.get("choices") == []]
    text, u = [], None
    for i, c in enumerate(with_choice):
        ch = c.get("choices")
        if not (isinstance(ch, list) and len(ch) == 1 and isinstance(ch[0], dict)
                and {"index", "delta", "finish_reason"} <= set(ch[0])
                <= {"index", "delta", "finish_reason", "logprobs"} and ch[0]["index"] == 0
                and isinstance(ch[0]["delta"], dict)):
            p.append(f"chunk choices {ch!r:.200}")
            continue
        delta, fin = ch[0]["delta"], ch[0]["finish_reason"]
        if i == 0 and delta.get("role") != "assistant":
            p.append(f"the first delta carries no role assistant: {delta}")
        if i > 0 and "role" in delta:
            p.append(f"chunk {i} repeats the role: {delta}")
        if "content" in delta:
            if not isinstance(delta["content"], str):
                p.append(f"delta content {delta['content']!r}")
            else:
                text.append(delta["content"])
        if i < len(with_choice) - 1 and fin is not None:
            p.append(f"finish_reason {fin!r} before the last chunk")
        if i == len(with_choice) - 1 and fin != "stop":
            p.append(f"the last chunk's finish_reason is {fin!r}, not stop")
    if usage:
        if len(usage_chunks) != 1 or chunks[-1] is not usage_chunks[0]:
            p.append(f"with include_usage: not one usage chunk (choices []) at the end: "
                     f"{len(usage_chunks)}")
        else:
            u = usage_chunks[0].get("usage")
            p += usage_problems(u)
    elif usage_chunks or any(c.get("usage") is not None for c in chunks):
        p.append("usage sent without stream_options.include_usage")
    return "".join(text), u, p


def chunk_models(datas):
    """The set of models the chunks of a stream name."""
    out = set()
    for d in datas:
        try:
            c = json.loads(d)
        except ValueError:
            continue
        if isinstance(c, dict):
            out.add(c.get("model"))
    return out


def error_tail(datas):
    """(parsed chunks, the error chunk or None, whether [DONE] came) of a broken stream."""
    docs, err = [], None
    for d in datas:
        try:
            docs.append(json.loads(d))
        except ValueError:
            pass
    for d in docs:
        if isinstance(d, dict) and "error" in d:
            err = d
    return docs, err, "[DONE]" in datas


def err_chunk_ok(err):
    return (isinstance(err, dict) and isinstance(err.get("error"), dict)
            and isinstance(err["error"].get("message"), str) and err["error"]["message"]
            and isinstance(err["error"].get("code"), str))


def user(text):
    return {"role": "user", "content": text}


def session(st, sid):
    return st.json("GET", f"/api/v1/sessions/{sid}")


def msgs_of(req):
    return [(m.get("role"), m.get("content")) for m in req["body"]["messages"]]


# =====================================================================================
# The offline provider, VALERIE_MODELS set.
def offline_part():
    env = {"VALERIE_MODELS": "gpt-a,gpt-b"}
    with Stack(workers=2, threads=4, env=env) as st:
        L = "[offline]"
        # --- a whole answer ---
        s, h, doc = complete(st, {"model": "gpt-a", "messages": [user("hi there")]})
        check(s == 200 and h.get("content-type", "").startswith("application/json"),
              f"{L} a whole answer: 200 JSON: {s} {h.get('content-type')}")
        p = answer_problems(doc)
        check(not p, f"{L} the answer is an OpenAI chat.completion: {p or sorted(doc)}")
        whole = content(doc) or ""
        check('You said: "hi there"' in whole and "not a language model" in whole,
              f"{L} the offline answer to the message: {whole[:120]!r}")
        check("x-session-turn" not in h, f"{L} no X-Session-Turn without X-Session-Id")
        check(doc is not None and doc.get("id") == "chatcmpl-" + h.get("x-request-id", "?"),
              f"{L} the id carries the request id: {doc and doc.get('id')} / "
              f"{h.get('x-request-id')}")
        s, h, d2 = complete(st, {"messages": [user("hi there")]})
        check(s == 200 and not answer_problems(d2) and content(d2) == whole,
              f"{L} model may be left out: {s} {answer_problems(d2)}")

        # --- streamed: the same answer in chunks ---
        s, h, datas, names, raw = stream(st, {"model": "gpt-a", "messages": [user("hi there")],
                                              "stream": True,
                                              "stream_options": {"include_usage": True}})
        check(s == 200 and h.get("content-type", "").startswith("text/event-stream"),
              f"{L} a stream: 200 text/event-stream: {s} {h.get('content-type')}")
        text, u, p = stream_problems(datas, names, usage=True)
        check(not p, f"{L} the stream is OpenAI chunks, role first, stop, usage, [DONE]: {p}")
        check(text == whole, f"{L} the chunks' contents join to the whole answer: {text[:80]!r}")
        check(len(datas) > 5, f"{L} the answer comes in several chunks: {len(datas)}")
        check(u is not None and doc is not None and u == doc.get("usage"),
              f"{L} the stream's usage is the whole answer's: {u} / {doc and doc.get('usage')}")
        check(raw.endswith(b"data: [DONE]\n\n"), f"{L} the stream ends with data: [DONE]: "
              f"{raw[-40:]!r}")
        # The model a stream names is the model that answers (as in the whole answer).
        # Asked for "gpt-a", served by the offline provider: a whole answer says "offline".
        models = chunk_models(datas)
        check(len(models) == 1, f"{L} the chunks of one stream name one model: "
              f"{sorted(map(str, models))}")
        check(models == {doc.get("model") if doc else None},
              f"{L} the stream names the model the whole answer names (the one that served "
              f"it, {doc and doc.get('model')!r}): {sorted(map(str, models))}")
        for opts in (None, {"include_usage": False}):
            body = {"messages": [user("no usage please")], "stream": True}
            if opts is not None:
                body["stream_options"] = opts
            s, h, datas, names, raw = stream(st, body)
            text, u, p = stream_problems(datas, names, usage=False)
            check(s == 200 and not p and "no usage please" in text,
                  f"{L} stream_options {opts}: no usage chunk, finish then [DONE]: {p}")

        # --- without X-Session-Id: nothing kept, every message reaches the provider ---
        s, h, d1 = complete(st, {"messages": [user("alpha one")]})
        s2, h2, d2 = complete(st, {"messages": [user("alpha two")]})
        check("This is turn 1 of this conversation" in (content(d2) or "")
              and "alpha one" not in (content(d2) or "") and "x-session-turn" not in h2,
              f"{L} without X-Session-Id nothing is kept: {content(d2)!r:.160}")
        s, h, d = complete(st, {"messages": [user("beta one"), {"role": "assistant",
                                                                  "content": "noted"},
                                              user("beta two")]})
        c = content(d) or ""
        check(s == 200 and 'You said: "beta two"' in c and 'it began with "beta one"' in c,
              f"{L} without X-Session-Id every message reaches the provider: {c!r:.200}")

        # --- with X-Session-Id: only the new message, the history kept by Valerie ---
        sid = "oai-offline-1"
        s, h, d = complete(st, {"model": "gpt-b", "messages": [user("my name is Ada")]},
                           {"X-Session-Id": sid})
        check(s == 200 and not answer_problems(d) and h.get("x-session-turn") == "1",
              f"{L} session turn 1: 200, X-Session-Turn 1: {s} {h.get('x-session-turn')}")
        s, h, d = complete(st, {"model": "gpt-b", "messages": [user("what is my name?")]},
                           {"X-Session-Id": sid})
        c = content(d) or ""
        check(s == 200 and h.get("x-session-turn") == "2" and "This is turn 2" in c
              and 'it began with "my name is Ada"' in c,
              f"{L} session turn 2 sends only the new message; the history is prepended: "
              f"{h.get('x-session-turn')} {c!r:.200}")
        s, h, datas, names, raw = stream(st, {"messages": [user("and a stream")], "stream": True},
                                         {"X-Session-Id": sid})
        text, u, p = stream_problems(datas, names)
        check(s == 200 and not p and "This is turn 3" in text,
              f"{L} session turn 3 streamed: {p} {text[:100]!r}")
        s, h, sd = session(st, sid)
        turns, p = session_exchanges(sd)
        msgs = sd.get("messages", []) if isinstance(sd, dict) else []
        check(s == 200 and turns == [1, 2, 3] and not p
              and [m.get("content") for m in msgs if m.get("role") == "user"]
              == ["my name is Ada", "what is my name?", "and a stream"]
              and msgs[-1].get("content") == text,
              f"{L} GET /api/v1/sessions/{{id}} shows the three turns, the streamed answer "
              f"stored whole: {s} {turns} {p}")

        # --- system messages become the system prompt, not stored turns ---
        sid = "oai-offline-sys"
        for i, role in enumerate(("system", "developer"), 1):
            s, h, d = complete(st, {"messages": [{"role": role, "content": f"Talk like a "
                                                  f"pirate {i}."}, user(f"ahoy {i}")]},
                               {"X-Session-Id": sid})
            check(s == 200 and f'Persona: "Talk like a pirate {i}."' in (content(d) or "")
                  and h.get("x-session-turn") == str(i),
                  f"{L} a {role} message is the system prompt: {content(d)!r:.220}")
        s, h, sd = session(st, sid)
        roles = [m.get("role") for m in sd.get("messages", [])] if isinstance(sd, dict) else []
        check(s == 200 and roles == ["user", "assistant"] * 2,
              f"{L} system messages are not stored as turns: {roles}")
        s, h, d = complete(st, {"messages": [{"role": "system", "content": "Be a parrot."},
                                             user("polly")]})
        check(s == 200 and 'Persona: "Be a parrot."' in (content(d) or ""),
              f"{L} without a session too: {content(d)!r:.200}")

        # --- content as an array of text parts ---
        parts = [{"type": "text", "text": "part one"}, {"type": "text", "text": " and two"}]
        s, h, d = complete(st, {"messages": [{"role": "user", "content": parts}]},
                           {"X-Session-Id": "oai-offline-parts"})
        check(s == 200 and 'You said: "part one and two"' in (content(d) or ""),
              f"{L} content as text parts: {s} {content(d)!r:.160}")
        s, h, sd = session(st, "oai-offline-parts")
        check(s == 200 and sd["messages"][0]["content"] == "part one and two"
              and sd["messages"][0].get("parts") == parts,
              f"{L} the parts are stored as one text, and as parts: "
              f"{sd and sd.get('messages', [{}])[0]}")
        # an image: the offline provider says it got one and cannot see it
        img = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        s, h, d = complete(st, {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "look"}, img]}]})
        check(s == 200 and 'You said: "look" with 1 image, which it cannot see'
              in (content(d) or ""), f"{L} an image part: {s} {content(d)!r:.200}")

        # --- Idempotency-Key with X-Session-Id: the stored answer again ---
        hk = {"X-Session-Id": "oai-offline-idem", "Idempotency-Key": "idem-1"}
        s, h, d1 = complete(st, {"messages": [user("once only")]}, hk)
        s2, h2, d2 = complete(st, {"messages": [user("once only")]}, hk)
        s3, h3, sd = session(st, "oai-offline-idem")
        check(s == 200 and s2 == 200 and content(d1) == content(d2)
              and h2.get("idempotent-replayed") == "true" and h2.get("x-session-turn") == "1"
              and isinstance(sd, dict) and sd.get("turns") == 1,
              f"{L} Idempotency-Key: the same answer, replayed, one turn stored: "
              f"{h2.get('idempotent-replayed')} {h2.get('x-session-turn')} "
              f"{sd and sd.get('turns')}")
        s, h, datas, names, raw = stream(st, {"messages": [user("once only")], "stream": True},
                                         hk)
        text, u, p = stream_problems(datas, names)
        check(s == 200 and not p and text == content(d1),
              f"{L} Idempotency-Key, streamed: the stored answer as a stream: {p}")

        # --- bad input: 400 JSON errors, nothing stored ---
        good = [user("x")]
        cases = [
            ("bad JSON", b'{"messages": [', None, None),
            ("no messages", {"model": "gpt-a"}, None, "invalid_field"),
            ("messages empty", {"messages": []}, None, "invalid_field"),
            ("messages a string", {"messages": "hi"}, None, "invalid_field"),
            ("a message a string", {"messages": ["hi"]}, None, "invalid_field"),
            ("a message without role", {"messages": [{"content": "x"}]}, None, "invalid_field"),
            ("role a number", {"messages": [{"role": 5, "content": "x"}]}, None,
             "invalid_field"),
            ("role unknown", {"messages": [{"role": "wizard", "content": "x"}]}, None,
             "invalid_field"),
            ("content a number", {"messages": [{"role": "user", "content": 42}]}, None,
             "invalid_field"),
            ("content an object", {"messages": [{"role": "user", "content": {"text": "x"}}]},
             None, "invalid_field"),
            ("an image part with a file URL", {"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]},
             None, "invalid_field"),
            ("content parts of numbers", {"messages": [{"role": "user", "content": [42]}]},
             None, "invalid_field"),
            ("a text part without text", {"messages": [{"role": "user", "content": [
                {"type": "text", "text": 5}]}]}, None, "invalid_field"),
            ("model a number", {"model": 5, "messages": good}, None, None),
            ("stream a string", {"stream": "yes", "messages": good}, None, None),
            ("X-Session-Id with a space", {"messages": good}, {"X-Session-Id": "bad id"},
             "invalid_session_id"),
            ("X-Session-Id with a slash", {"messages": good}, {"X-Session-Id": "a/b"},
             "invalid_session_id"),
            ("X-Session-Id too long", {"messages": good}, {"X-Session-Id": "s" * 129},
             "invalid_session_id"),
            ("X-Session-Id and no user message", {"messages": [
                {"role": "system", "content": "only a system prompt"}]},
             {"X-Session-Id": "oai-bad-nouser"}, "invalid_field"),
            ("a bad Idempotency-Key", {"messages": good},
             {"X-Session-Id": "oai-bad-idem", "Idempotency-Key": "has space"},
             "invalid_idempotency_key"),
            # json-c saturates integers it cannot hold: refused, not passed on changed.
            ("seed above 2^64", {"seed": 2 ** 64 + 5, "messages": good}, None, "invalid_field"),
            ("seed 2^63", {"seed": 2 ** 63, "messages": good}, None, "invalid_field"),
            ("seed below -2^63", {"seed": -2 ** 63 - 1, "messages": good}, None,
             "invalid_field"),
            ("max_tokens above 2^64", {"max_tokens": 2 ** 64, "messages": good}, None,
             "invalid_field"),
            ("n above 2^64", {"n": 2 ** 64 + 1, "messages": good}, None, "invalid_field"),
            # OpenAI's deprecated function calling: refused, never dropped (the model
            # would not be offered the functions)
            ("legacy functions", {"messages": good, "functions": [
                {"name": "get_weather", "parameters": {"type": "object"}}]}, None,
             "invalid_field"),
            ("legacy function_call", {"messages": good, "function_call": "auto"}, None,
             "invalid_field"),
            ("an assistant message's function_call", {"messages": [
                user("x"), {"role": "assistant", "content": None, "function_call": {
                    "name": "get_weather", "arguments": "{}"}}, user("y")]}, None,
             "invalid_field"),
            ("a role function message", {"messages": [
                user("x"), {"role": "function", "name": "get_weather", "content": "9C"}]},
             None, "invalid_field"),
            ("a refusal part in a user message", {"messages": [{"role": "user", "content": [
                {"type": "refusal", "refusal": "no"}]}]}, None, "invalid_field"),
            ("a refusal part without its text", {"messages": [
                user("x"), {"role": "assistant", "content": [{"type": "refusal"}]},
                user("y")]}, None, "invalid_field"),
            ("a model not in VALERIE_MODELS", {"model": "gpt-c", "messages": good}, None,
             "model_not_allowed"),
            ("a model not in VALERIE_MODELS, streamed", {"model": "gpt-c", "messages": good,
                                                         "stream": True}, None,
             "model_not_allowed"),
        ]
        for what, body, hdrs, code in cases:
            s, h, d = complete(st, body, hdrs)
            check(s == 400 and h.get("content-type", "").startswith("application/json")
                  and is_error_doc(d, code),
                  f"{L} {what}: 400 JSON error{' ' + code if code else ''}: {s} {d}")
        for what, body in (("functions", {"functions": [{"name": "f"}]}),
                           ("function_call", {"function_call": "none"}),
                           ("role function", {"messages": [user("x"), {
                               "role": "function", "name": "f", "content": "1"}]})):
            s, h, d = complete(st, dict({"messages": good}, **body))
            check(s == 400 and is_error_doc(d, "invalid_field") and "tool" in
                  d["error"]["message"] and "deprecated" in d["error"]["message"],
                  f"{L} legacy {what}: the 400 says to use tools instead: {s} {d}")
        for what, body, name in (("seed above 2^64", {"seed": 2 ** 64 + 5}, "seed"),
                                 ("max_tokens above 2^64", {"max_tokens": 2 ** 64},
                                  "max_tokens")):
            s, h, d = complete(st, dict(body, messages=good))
            check(s == 400 and is_error_doc(d) and name in d["error"]["message"],
                  f"{L} {what}: the error names the field: {s} {d}")
        s, h, d = complete(st, {"messages": good, "seed": 2 ** 63 - 1})
        check(s == 200, f"{L} seed 2^63-1 (the largest) is accepted: {s} {d}")
        for sid in ("oai-bad-nouser", "oai-bad-idem"):
            s, h, d = session(st, sid)
            check(s == 404, f"{L} a refused request stores nothing ({sid}): {s}")

        # --- the model list: the chain's default model, then the allowlist ---
        s, h, d = st.json("GET", "/v1/models")
        ids = [m.get("id") for m in d.get("data", [])] if isinstance(d, dict) else []
        check(s == 200 and d.get("object") == "list" and ids == ["offline", "gpt-a", "gpt-b"],
              f"{L} GET /v1/models: offline then VALERIE_MODELS: {s} {ids}")
        check(isinstance(d, dict) and all(
            set(m) == {"id", "object", "created", "owned_by"} and m["object"] == "model"
            and is_int(m["created"]) and isinstance(m["owned_by"], str)
            for m in d.get("data", [])), f"{L} each model is an OpenAI model object: {d}")


# =====================================================================================
# The openai provider against the fake upstream.
def upstream_part():
    fake = FakeLLM()
    env = {"VALERIE_LLM_PROVIDER": "openai",
           "OPENAI_BASE_URL": f"http://127.0.0.1:{fake.port}/v1",
           "OPENAI_API_KEY": "sk-test", "OPENAI_MODEL": "gpt-test", "OPENAI_MAX_RETRIES": "1",
           "OPENAI_FIRST_TOKEN_TIMEOUT_MS": "2000", "OPENAI_TIMEOUT": "5",
           "OPENAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000"}
    L = "[openai]"
    try:
        with Stack(workers=2, threads=4, env=env) as st:
            def last():
                return fake.stats()["requests"][-1]

            # --- a whole answer; model and usage from the upstream ---
            fake.plan()
            s, h, d = complete(st, {"messages": [user("hello upstream")]})
            req = last()
            check(s == 200 and not answer_problems(d, model="gpt-test")
                  and content(d) == "echo: hello upstream",
                  f"{L} a whole answer from the upstream: {s} {answer_problems(d)} "
                  f"{content(d)!r}")
            check(req["body"].get("model") == "gpt-test" and req["body"].get("stream") in
                  (None, False), f"{L} no model asked: OPENAI_MODEL goes up: {req['body']}")
            check(isinstance(d, dict) and d.get("usage") == {
                "prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
                f"{L} the upstream's usage: {d and d.get('usage')}")
            s, h, d = complete(st, {"model": "gpt-4o", "messages": [user("pick a model")]})
            check(s == 200 and last()["body"].get("model") == "gpt-4o"
                  and isinstance(d, dict) and d.get("model") == "gpt-4o",
                  f"{L} the request's model is passed through: {last()['body'].get('model')} "
                  f"{d and d.get('model')}")

            # --- without X-Session-Id every message reaches the upstream, nothing kept ---
            given = [{"role": "system", "content": "Be terse."}, user("first"),
                     {"role": "assistant", "content": "echo: first"}, user("second")]
            fake.plan()
            s, h, d = complete(st, {"messages": given})
            check(s == 200 and content(d) == "echo: second" and "x-session-turn" not in h,
                  f"{L} without X-Session-Id: {s} {content(d)!r}")
            check(msgs_of(last()) == [(m["role"], m["content"]) for m in given],
                  f"{L} without X-Session-Id all messages reach the upstream as sent: "
                  f"{msgs_of(last())}")
            s, h, d = complete(st, {"messages": [user("third")]})
            check(msgs_of(last()) == [("user", "third")],
                  f"{L} ... and nothing was kept: the next call sends only its own: "
                  f"{msgs_of(last())}")
            s, h, d = complete(st, {"messages": [{"role": "developer", "content": "Dev says."},
                                                 user("dev")]})
            check(msgs_of(last()) == [("system", "Dev says."), ("user", "dev")],
                  f"{L} a developer message goes up as system: {msgs_of(last())}")
            # An earlier refusal in the history, as OpenAI answered it (a refusal part of
            # an assistant message): its text, not a 400.
            s, h, d = complete(st, {"messages": [
                user("fill the form"), {"role": "assistant", "content": [
                    {"type": "refusal", "refusal": "I can't help with that."}]},
                user("then say hi")]})
            check(s == 200 and msgs_of(last()) == [
                ("user", "fill the form"), ("assistant", "I can't help with that."),
                ("user", "then say hi")],
                f"{L} an assistant refusal part goes up as its text: {s} {d} "
                f"{msgs_of(last())}")
            # A clean message is passed on as it came; any other is made clean.
            s, h, d = complete(st, {"messages": [
                {"role": "user", "content": "as is"},
                {"content": "swapped", "role": "user", "x_extra": 1}]})
            got = last()["body"]["messages"]
            check(s == 200 and got == [{"role": "user", "content": "as is"},
                                       {"role": "user", "content": "swapped"}]
                  and [list(m) for m in got] == [["role", "content"]] * 2,
                  f"{L} messages go up as role then content, unknown keys dropped: {got}")

            # --- with X-Session-Id: only the new message; the upstream gets the history ---
            sid = "oai-up-1"
            s, h, d = complete(st, {"messages": [{"role": "system", "content": "Be kind."},
                                                 user("one")]}, {"X-Session-Id": sid})
            check(s == 200 and h.get("x-session-turn") == "1"
                  and msgs_of(last()) == [("system", "Be kind."), ("user", "one")],
                  f"{L} session turn 1: the system prompt then the message: {msgs_of(last())}")
            s, h, d = complete(st, {"messages": [user("two")]}, {"X-Session-Id": sid})
            check(s == 200 and h.get("x-session-turn") == "2" and content(d) == "echo: two"
                  and msgs_of(last()) == [("user", "one"), ("assistant", "echo: one"),
                                          ("user", "two")],
                  f"{L} session turn 2 sends only the new message; the upstream receives "
                  f"user, assistant, user: {msgs_of(last())}")
            s, h, datas, names, raw = stream(st, {"messages": [
                {"role": "system", "content": "Be brief."}, user("three please")],
                "stream": True, "stream_options": {"include_usage": True}},
                {"X-Session-Id": sid})
            text, u, p = stream_problems(datas, names, usage=True, model="gpt-test")
            req = last()
            check(s == 200 and not p and text == "echo: three please",
                  f"{L} session turn 3 streamed: {p} {text!r}")
            check(req["body"].get("stream") is True and msgs_of(req) == [
                ("system", "Be brief."), ("user", "one"), ("assistant", "echo: one"),
                ("user", "two"), ("assistant", "echo: two"), ("user", "three please")],
                f"{L} a streamed session turn: the upstream gets system, history, new message: "
                f"{msgs_of(req)}")
            # the fake counts words: prompt = every message's words, completion = the reply's
            words = sum(len(c.split()) for _, c in msgs_of(req))
            check(u == {"prompt_tokens": words, "completion_tokens": 3,
                        "total_tokens": words + 3},
                  f"{L} the streamed usage is the upstream's ({words} + 3): {u}")
            s, h, sd = session(st, sid)
            turns, p = session_exchanges(sd)
            msgs = sd.get("messages", []) if isinstance(sd, dict) else []
            check(s == 200 and turns == [1, 2, 3] and not p
                  and [(m.get("role"), m.get("content")) for m in msgs] == [
                      ("user", "one"), ("assistant", "echo: one"), ("user", "two"),
                      ("assistant", "echo: two"), ("user", "three please"),
                      ("assistant", "echo: three please")],
                  f"{L} GET /api/v1/sessions/{{id}} shows the turns: {s} {turns} {p}")

            # --- content as text parts: upstream as sent (a model reads parts as they are) ---
            parts = [{"type": "text", "text": "part one"}, {"type": "text", "text": " and two"}]
            s, h, d = complete(st, {"messages": [{"role": "user", "content": parts}]})
            check(s == 200 and msgs_of(last()) == [("user", parts)]
                  and content(d) == "echo: part one  and two",
                  f"{L} content as text parts goes up as the parts sent: {msgs_of(last())}")

            # --- a stream of a plain call ---
            s, h, datas, names, raw = stream(st, {"model": "gpt-4o", "stream": True,
                                                  "messages": [user("a b c d e")]})
            text, u, p = stream_problems(datas, names, usage=False, model="gpt-4o")
            check(s == 200 and not p and text == "echo: a b c d e" and len(datas) >= 5,
                  f"{L} a plain stream: {p} {text!r} ({len(datas)} events)")

            # --- a failing upstream ---
            fake.plan({"mode": "fail-500"}, {"mode": "fail-500"})
            s, h, d = complete(st, {"messages": [user("fail")]})
            check(s == 502 and is_error_doc(d, "provider_error"),
                  f"{L} an upstream failing before the answer: 502 JSON: {s} {d}")
            for mode in ("cut-mid-stream", "error-event-mid-stream"):
                sid = f"oai-up-{mode}"
                fake.plan({"mode": mode, "after_chunks": 2})
                s, h, datas, names, raw = stream(st, {"messages": [user("one two three four")],
                                                      "stream": True}, {"X-Session-Id": sid})
                docs, err, got_done = error_tail(datas)
                contents = [c for c in docs if isinstance(c, dict) and c.get("choices")]
                check(s == 200 and contents and err_chunk_ok(err) and docs[-1] is err
                      and not got_done and fake.stats()["calls"] == 1,
                      f"{L} upstream {mode}: content chunks, then a chunk with an error key, "
                      f"no [DONE], not retried: {datas[-2:]} calls {fake.stats()['calls']}")
                check(session(st, sid)[0] == 404, f"{L} upstream {mode}: nothing stored")
            fake.plan({"mode": "fail-500"}, {"mode": "fail-500"})
            s, h, datas, names, raw = stream(st, {"messages": [user("fail")], "stream": True})
            docs, err, got_done = error_tail(datas)
            check(not got_done and ((s == 200 and err_chunk_ok(err) and docs[-1] is err)
                                    or (s == 502 and is_error_doc(json.loads(raw or b"null")))),
                  f"{L} a stream whose upstream fails at once: an error, no [DONE]: {s} "
                  f"{datas[-2:]}")

        # --- the models of the chain and the allowlist ---
        menv = dict(env, VALERIE_LLM_FALLBACKS="anthropic,offline",
                    ANTHROPIC_MODEL="claude-test",
                    VALERIE_MODELS="gpt-test,gpt-4o,claude-x,meta-llama/Llama-3.1-8B")
        with Stack(workers=1, threads=2, env=menv) as st:
            s, h, d = st.json("GET", "/v1/models")
            ids = [m.get("id") for m in d.get("data", [])] if isinstance(d, dict) else []
            check(s == 200 and ids == ["gpt-test", "claude-test", "offline", "gpt-4o",
                                       "claude-x", "meta-llama/Llama-3.1-8B"],
                  f"{L} GET /v1/models: each provider's default model in chain order, then the "
                  f"allowlist, once each: {ids}")
            # models.retrieve: GET /v1/models/{id}, ids with a slash too (vLLM's names)
            listed = {m["id"]: m for m in d["data"]}
            for mid in ("claude-test", "gpt-4o", "meta-llama/Llama-3.1-8B"):
                s, h, one = st.json("GET", f"/v1/models/{mid}")
                check(s == 200 and one == listed[mid],
                      f"{L} GET /v1/models/{mid}: the listed model object: {s} {one}")
            s, h, one = st.json("GET", "/v1/models/meta-llama/Llama-3.1-8B/")
            check(s == 200 and one.get("id") == "meta-llama/Llama-3.1-8B",
                  f"{L} GET /v1/models/{{id}}/ with a trailing slash: {s} {one}")
            for mid in ("gpt-5", "meta-llama", "meta-llama/Llama-3.1-8B/extra", "%FF%FE",
                        "x" * 300):
                s, h, one = st.json("GET", f"/v1/models/{mid}")
                check(s == 404 and is_error_doc(one, "model_not_found")
                      and "''" not in one["error"]["message"],
                      f"{L} GET /v1/models/{mid[:40]}: 404 model_not_found: {s} {one}")
            fake.plan()
            s, h, d = complete(st, {"model": "gpt-4o", "messages": [user("allowed")]})
            check(s == 200 and last_model(fake) == "gpt-4o",
                  f"{L} a model in VALERIE_MODELS is served: {s}")
            n = fake.stats()["calls"]
            s, h, d = complete(st, {"model": "gpt-5", "messages": [user("refused")]})
            check(s == 400 and is_error_doc(d, "model_not_allowed") and fake.stats()["calls"] == n,
                  f"{L} a model outside VALERIE_MODELS: 400, the upstream not called: {s} {d}")
    finally:
        fake.stop()


def last_model(fake):
    r = fake.stats()["requests"]
    return r[-1]["body"].get("model") if r else None


t0 = time.monotonic()
offline_part()
upstream_part()
print(f"took {time.monotonic() - t0:.1f} s")
done("test_openai_api")
