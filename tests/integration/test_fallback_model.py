"""test_fallback_model: which model a fallback provider is asked for. A client names a model
for the provider it talks to (the OpenAI SDK always sends one); a fallback of another vendor
does not know that name, and the fake upstream answers it as each API does (OpenAI 404
model_not_found for a claude-* model, Anthropic 404 not_found_error for a gpt-* one), which
used to end the turn with 400 instead of the fallback's answer. Through real nginx and the
pool, the upstream's requests counted and read:

- openai first, anthropic after it, openai failing: a request for the openai default model
  or an allowed other one is answered by Anthropic with ANTHROPIC_MODEL; the answer and the
  stream name that model; a request for ANTHROPIC_MODEL itself keeps it.
- anthropic first, openai after it, anthropic failing: OPENAI_MODEL.
- without a failure the primary gets the client's model as before.
- every model GET /v1/models lists may be asked for (the default models too, though
  VALERIE_MODELS does not name them), and a fallback's default model goes to that fallback
  first (the primary after it, with its own default)."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (FakeLLM, Stack, check, completion_text, done, post_chat,  # noqa: E402
                     stream_completion)

PATH = "/v1/chat/completions"


def complete(st, body):
    return post_chat(st, body, path=PATH)


def calls(fake):
    """(path, model) of each upstream request since the last plan."""
    return [(q["path"], (q.get("body") or {}).get("model")) for q in fake.stats()["requests"]]


fake = FakeLLM()
try:
    base = {"OPENAI_BASE_URL": f"http://127.0.0.1:{fake.port}/v1", "OPENAI_API_KEY": "sk-test",
            "OPENAI_MODEL": "gpt-test", "OPENAI_MAX_RETRIES": "0",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{fake.port}", "ANTHROPIC_API_KEY": "ak-test",
            "ANTHROPIC_MODEL": "claude-test", "ANTHROPIC_MAX_RETRIES": "0",
            "OPENAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000",
            "ANTHROPIC_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000",
            "VALERIE_MODELS": "gpt-4o-mini,claude-test"}

    L = "[openai, then anthropic]"
    with Stack(workers=1, threads=2, env=dict(base, VALERIE_LLM_PROVIDER="openai",
                                              VALERIE_LLM_FALLBACKS="anthropic")) as st:
        fake.plan()
        s, h, d = complete(st, {"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": "hello"}]})
        check(s == 200 and calls(fake) == [("/v1/chat/completions", "gpt-4o-mini")],
              f"{L} no failure: the primary gets the client's model: {s} {calls(fake)}")
        for model in ("gpt-test", "gpt-4o-mini"):
            fake.plan({"mode": "fail-500"})
            s, h, d = complete(st, {"model": model, "messages": [
                {"role": "user", "content": "hello"}]})
            check(s == 200 and completion_text(d) == "echo: hello"
                  and d.get("model") == "claude-test"
                  and calls(fake) == [("/v1/chat/completions", model),
                                      ("/v1/messages", "claude-test")],
                  f"{L} openai failing, model {model}: Anthropic answers with ANTHROPIC_MODEL: "
                  f"{s} {calls(fake)} {json.dumps(d)[:200]}")
        fake.plan({"mode": "fail-500"})
        s, text, ended = stream_completion(st, {"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": "streamed"}]})
        check(s == 200 and ended and text == "echo: streamed"
              and calls(fake)[-1] == ("/v1/messages", "claude-test"),
              f"{L} streamed, openai failing: Anthropic answers with ANTHROPIC_MODEL: "
              f"{s} {text!r} {calls(fake)}")
        # What GET /v1/models lists may be asked for, and goes to the provider that owns it:
        # the fallback's default model goes to the fallback first, the primary after it.
        s, h, ml = st.json("GET", "/v1/models")
        owners = {m["id"]: m["owned_by"] for m in (ml or {}).get("data", [])}
        check(owners.get("gpt-test") == "openai" and owners.get("claude-test") == "anthropic",
              f"{L} /v1/models lists each default model with its provider: {owners}")
        fake.plan()
        s, h, d = complete(st, {"model": "claude-test", "messages": [
            {"role": "user", "content": "hello"}]})
        check(s == 200 and d.get("model") == "claude-test"
              and calls(fake) == [("/v1/messages", "claude-test")],
              f"{L} the anthropic default model asked for: Anthropic answers, openai uncalled: "
              f"{s} {calls(fake)}")
        fake.plan({"mode": "fail-500"})
        s, h, d = complete(st, {"model": "claude-test", "messages": [
            {"role": "user", "content": "hello"}]})
        check(s == 200 and d.get("model") == "gpt-test"
              and calls(fake) == [("/v1/messages", "claude-test"),
                                  ("/v1/chat/completions", "gpt-test")],
              f"{L} ... and with Anthropic failing, openai serves it with OPENAI_MODEL: "
              f"{s} {calls(fake)}")
        fake.plan()
        s, h, d = complete(st, {"model": "gpt-test", "messages": [
            {"role": "user", "content": "hello"}]})
        check(s == 200 and calls(fake) == [("/v1/chat/completions", "gpt-test")],
              f"{L} OPENAI_MODEL is listed, so allowed though VALERIE_MODELS does not name it: "
              f"{s} {calls(fake)}")
        s, h, d = complete(st, {"model": "gpt-5", "messages": [
            {"role": "user", "content": "hello"}]})
        check(s == 400 and (d or {}).get("error", {}).get("code") == "model_not_allowed",
              f"{L} a model neither listed nor allowed: 400 model_not_allowed: {s} {d}")

    L = "[anthropic, then openai]"
    with Stack(workers=1, threads=2, env=dict(base, VALERIE_LLM_PROVIDER="anthropic",
                                              VALERIE_LLM_FALLBACKS="openai")) as st:
        fake.plan({"mode": "fail-500"})
        s, h, d = complete(st, {"model": "claude-test", "messages": [
            {"role": "user", "content": "hi"}]})
        check(s == 200 and completion_text(d) == "echo: hi" and d.get("model") == "gpt-test"
              and calls(fake) == [("/v1/messages", "claude-test"),
                                  ("/v1/chat/completions", "gpt-test")],
              f"{L} anthropic failing: openai answers with OPENAI_MODEL: {s} {calls(fake)}")
        fake.plan()
        s, h, d = complete(st, {"messages": [{"role": "user", "content": "hi"}]})
        check(s == 200 and calls(fake) == [("/v1/messages", "claude-test")],
              f"{L} no model named, no failure: ANTHROPIC_MODEL: {s} {calls(fake)}")
finally:
    fake.stop()
done("test_fallback_model")
