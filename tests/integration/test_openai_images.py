"""test_openai_images: images in POST /v1/chat/completions (OpenAI's content parts: text and
image_url with an http(s) URL or a base64 data URL), through real nginx and the pool, against
the fake upstream (tests/fakes/fake_llm.py) speaking each wire format, which checks image
parts as OpenAI and Anthropic do and answers "[N image(s)]" for what it was shown.

- openai provider: the parts reach the upstream in their order with only their known members;
  with X-Session-Id the turn is stored with "content" (the text, as the session document has
  it) and "parts", and the next turn's history shows the image again; streamed too; an
  image-only message is a turn; Idempotency-Key replays the same image, not another one.
- anthropic provider: the same request translated into image blocks in order (a data URL as a
  base64 source with its media type, image/jpg spelled image/jpeg; an http(s) URL as a url
  source), after the tool results of a merged user message; the history carries them too.
- bad input: 400 invalid_field for each malformed image part, nothing sent upstream and
  nothing stored."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (FakeLLM, Stack, check, completion_text, done,  # noqa: E402
                     post_chat, stream_completion, text_part)

PATH = "/v1/chat/completions"
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5Er"
       "kJggg==")
DATA_PNG = "data:image/png;base64," + PNG
HTTP_IMG = "https://images.example.com/cat.jpg?sig=a%2Fb"


def complete(st, body, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return post_chat(st, body, h, path=PATH)




def image(url, detail=None, **extra):
    iu = {"url": url}
    if detail is not None:
        iu["detail"] = detail
    iu.update(extra)
    return {"type": "image_url", "image_url": iu}


def session(st, sid):
    return st.json("GET", f"/api/v1/sessions/{sid}")


fake = FakeLLM()
try:
    # --- the openai provider ------------------------------------------------------------
    L = "[openai]"
    env = {"VALERIE_LLM_PROVIDER": "openai", "OPENAI_BASE_URL": f"http://127.0.0.1:{fake.port}/v1",
           "OPENAI_API_KEY": "sk-test", "OPENAI_MODEL": "gpt-test", "OPENAI_MAX_RETRIES": "0"}
    with Stack(workers=1, threads=4, env=env) as st:
        fake.plan()
        parts = [text_part("What is in"), image(DATA_PNG, "low", extra="dropped"),
                 text_part(" this picture?")]
        s, h, d = complete(st, {"messages": [{"role": "user", "content": parts}]})
        b = fake.last_body()
        check(s == 200 and completion_text(d) == "echo: What is in  this picture? [1 image]",
              f"{L} a text and image request is answered by a model that saw the image: "
              f"{s} {completion_text(d)!r}")
        check(b is not None and b["messages"] == [{"role": "user", "content": [
            text_part("What is in"), image(DATA_PNG, "low"), text_part(" this picture?")]}],
              f"{L} the parts reach the upstream in order, unknown members dropped: "
              f"{b and json.dumps(b['messages'])[:400]}")

        # A session: stored with its text and its parts; the next turn's history has the image.
        sid = {"X-Session-Id": "img-openai-1"}
        s1, h1, d1 = complete(st, {"messages": [{"role": "user", "content": [
            text_part("Remember this cat."), image(HTTP_IMG)]}]}, sid)
        s2, h2, d2 = complete(st, {"messages": [{"role": "user", "content": "Which animal?"}]},
                              sid)
        b = fake.last_body()
        check(s1 == 200 and s2 == 200 and h2.get("x-session-turn") == "2"
              and b["messages"] == [
                  {"role": "user", "content": [text_part("Remember this cat."), image(HTTP_IMG)]},
                  {"role": "assistant", "content": "echo: Remember this cat. [1 image]"},
                  {"role": "user", "content": "Which animal?"}],
              f"{L} the second turn's history shows the first turn's image again: "
              f"{s1} {s2} {b and json.dumps(b['messages'])[:600]}")
        s, _, sd = session(st, "img-openai-1")
        m0 = (sd or {}).get("messages", [{}])[0]
        check(s == 200 and m0.get("role") == "user" and m0.get("content") == "Remember this cat."
              and m0.get("parts") == [text_part("Remember this cat."), image(HTTP_IMG)]
              and [m.get("content") for m in sd["messages"]][1:] == [
                  "echo: Remember this cat. [1 image]", "Which animal?", "echo: Which animal?"],
              f"{L} the session keeps the text as content and the parts beside it: "
              f"{json.dumps(sd)[:600]}")

        # Streamed, and an image with no text at all.
        s, t, ended = stream_completion(st, {"messages": [{"role": "user", "content": [
            image(DATA_PNG), image(HTTP_IMG, "high")]}]}, {"X-Session-Id": "img-openai-2"})
        check(s == 200 and ended and t == "echo:  [2 images]",
              f"{L} a streamed turn of two images and no text: {s} {t!r} {ended}")
        s, _, sd = session(st, "img-openai-2")
        check(s == 200 and sd.get("turns") == 1 and sd["messages"][0].get("content") == ""
              and len(sd["messages"][0].get("parts") or []) == 2,
              f"{L} an image-only message is a stored turn: {json.dumps(sd)[:300]}")

        # Idempotency-Key: the same image replays, another image under the key does not.
        hk = {"X-Session-Id": "img-openai-3", "Idempotency-Key": "img-key-1"}
        body = {"messages": [{"role": "user", "content": [text_part("once"), image(DATA_PNG)]}]}
        s1, h1, d1 = complete(st, body, hk)
        calls = fake.stats()["calls"]
        s2, h2, d2 = complete(st, body, hk)
        check(s1 == 200 and s2 == 200 and h2.get("idempotent-replayed") == "true"
              and completion_text(d2) == completion_text(d1) and fake.stats()["calls"] == calls,
              f"{L} the same image with the same Idempotency-Key replays the stored answer: "
              f"{s2} {h2.get('idempotent-replayed')}")
        other = {"messages": [{"role": "user", "content": [text_part("once"), image(HTTP_IMG)]}]}
        s3, h3, d3 = complete(st, other, hk)
        check(s3 != 200 and h3.get("idempotent-replayed") is None
              and fake.stats()["calls"] == calls,
              f"{L} another image under that key is not answered with the first one's reply: "
              f"{s3} {d3}")

        # Bad image parts: 400 invalid_field, nothing sent, nothing stored.
        many = [image(DATA_PNG)] * 101
        bad = [
            ("an ftp URL", [image("ftp://example.com/a.png")]),
            ("a javascript URL", [image("javascript:alert(1)")]),
            ("a data URL of text", [image("data:text/plain;base64,aGk=")]),
            ("a data URL of SVG", [image("data:image/svg+xml;base64,PHN2Zz4=")]),
            ("a data URL not base64", [image("data:image/png,rawbytes")]),
            ("broken base64", [image("data:image/png;base64,iVBO*w0K")]),
            ("base64 cut short", [image("data:image/png;base64,iVBORw0")]),
            ("an empty data URL", [image("data:image/png;base64,")]),
            ("an http URL with a space", [image("https://example.com/a b.png")]),
            ("a URL too long", [image("https://example.com/" + "a" * 9000)]),
            ("detail ultra", [image(DATA_PNG, "ultra")]),
            ("detail a number", [image(DATA_PNG, 1)]),
            ("image_url a string", [{"type": "image_url", "image_url": DATA_PNG}]),
            ("image_url without url", [{"type": "image_url", "image_url": {}}]),
            ("a url a number", [image(5)]),
            ("a part without type", [{"image_url": {"url": DATA_PNG}}]),
            ("a video part", [{"type": "input_video", "input_video": {"data": "aGk="}}]),
            ("101 images", many),
        ]
        fake.plan()
        for what, c in bad:
            s, h, d = complete(st, {"messages": [{"role": "user", "content": c}]},
                               {"X-Session-Id": "img-bad"})
            code = (d or {}).get("error", {}).get("code") if isinstance(d, dict) else None
            check(s == 400 and code == "invalid_field",
                  f"{L} {what}: 400 invalid_field: {s} {json.dumps(d)[:240]}")
        for role in ("system", "assistant", "tool"):
            m = {"role": role, "content": [text_part("look"), image(DATA_PNG)]}
            if role == "tool":
                m["tool_call_id"] = "call_1"
            s, h, d = complete(st, {"messages": [m, {"role": "user", "content": "hi"}]})
            check(s == 400 and "only user messages" in json.dumps(d),
                  f"{L} an image in a {role} message: 400: {s} {json.dumps(d)[:200]}")
        s, _, sd = session(st, "img-bad")
        check(fake.stats()["calls"] == 0 and s == 404,
              f"{L} no bad request reached the upstream or the store: "
              f"{fake.stats()['calls']} calls, session {s}")

    # --- the anthropic provider -------------------------------------------------------------
    L = "[anthropic]"
    aenv = {"VALERIE_LLM_PROVIDER": "anthropic", "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{fake.port}",
            "ANTHROPIC_API_KEY": "ak-test", "ANTHROPIC_MODEL": "claude-test",
            "ANTHROPIC_MAX_RETRIES": "0"}
    with Stack(workers=1, threads=4, env=aenv) as st:
        fake.plan()
        jpg = "data:image/jpg;base64," + PNG
        sid = {"X-Session-Id": "img-anthropic-1"}
        s1, h1, d1 = complete(st, {"messages": [{"role": "user", "content": [
            text_part("Compare"), image(DATA_PNG, "high"), text_part("with"), image(jpg),
            image(HTTP_IMG), text_part("please.")]}]}, sid)
        b = fake.last_body()
        want = [
            text_part("Compare"),
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}},
            text_part("with"),
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                         "data": PNG}},
            {"type": "image", "source": {"type": "url", "url": HTTP_IMG}},
            text_part("please.")]
        check(s1 == 200 and completion_text(d1) == "echo: Compare with please. [3 images]",
              f"{L} the model was shown three images: {s1} {completion_text(d1)!r}")
        check(b is not None and b["messages"] == [{"role": "user", "content": want}],
              f"{L} image parts become image blocks in order (base64 with its media type, "
              f"jpg as jpeg, a url source): {b and json.dumps(b['messages'])[:800]}")
        s2, t, ended = stream_completion(
            st, {"messages": [{"role": "user", "content": "And now?"}]}, sid)
        b = fake.last_body()
        check(s2 == 200 and ended and t == "echo: And now?" and b["messages"] == [
            {"role": "user", "content": want},
            {"role": "assistant", "content": "echo: Compare with please. [3 images]"},
            {"role": "user", "content": "And now?"}],
              f"{L} streamed, the history carries the image blocks: {s2} {t!r} "
              f"{b and json.dumps(b['messages'])[:800]}")

        # Consecutive user messages merge: the text before an image stays before it.
        s, h, d = complete(st, {"messages": [
            {"role": "user", "content": "First the text."},
            {"role": "user", "content": [image(HTTP_IMG), text_part("then this.")]}]})
        b = fake.last_body()
        check(s == 200 and b["messages"] == [{"role": "user", "content": [
            text_part("First the text."), {"type": "image", "source": {"type": "url",
                                                                  "url": HTTP_IMG}},
            text_part("then this.")]}],
              f"{L} merged user messages keep text and images in order: "
              f"{s} {b and json.dumps(b['messages'])[:600]}")
finally:
    fake.stop()
done("test_openai_images")
