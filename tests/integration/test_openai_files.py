"""test_openai_files: PDF files and audio in POST /v1/chat/completions (OpenAI's content parts
`file` and `input_audio`), through real nginx and the pool, against the fake upstream
(tests/fakes/fake_llm.py) speaking each wire format, which checks file and audio parts and
document blocks as OpenAI and Anthropic do and answers "[N files, N audio clips]" for what it
was shown.

- openai provider: file parts (file_data, a base64 PDF data URL, or file_id; filename kept)
  and input_audio parts (base64 WAV or MP3) reach the upstream in their order with only
  their known members; with X-Session-Id the turn is stored with "content" (the text) and
  "parts", and the next turn's history sends the file again; streamed too; a file-only
  message is a turn; Idempotency-Key replays the same file, not another one.
- anthropic provider: a file_data part becomes a document block (a base64 PDF source, the
  filename as its title) in order with the text and images; a file_id (a file uploaded to
  OpenAI) and audio cannot be expressed: 400 provider_rejected_request, nothing sent.
- offline provider: says what it was sent and cannot see.
- bad input: 400 invalid_field for each malformed part, nothing sent upstream and nothing
  stored."""
import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (FakeLLM, SseParser, Stack, check, completion_text, done,  # noqa: E402
                     post_chat, stream_completion, text_part)

PATH = "/v1/chat/completions"
PDF = base64.b64encode(b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n").decode()
DATA_PDF = "data:application/pdf;base64," + PDF
WAV = base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode()
PNG_URL = "https://images.example.com/cat.png"


def complete(st, body, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return post_chat(st, body, h, path=PATH)




def error_code(doc):
    return (doc or {}).get("error", {}).get("code") if isinstance(doc, dict) else None


def pdf(data=DATA_PDF, filename=None, **extra):
    f = {"file_data": data} if data is not None else {}
    if filename is not None:
        f["filename"] = filename
    f.update(extra)
    return {"type": "file", "file": f}


def file_id(fid, filename=None):
    f = {"file_id": fid}
    if filename is not None:
        f["filename"] = filename
    return {"type": "file", "file": f}


def audio(data=WAV, fmt="wav", **extra):
    a = {"data": data, "format": fmt}
    a.update(extra)
    return {"type": "input_audio", "input_audio": a}


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
        parts = [text_part("Summarize"), pdf(filename="q3 report.pdf", extra="dropped"),
                 text_part("and transcribe"), audio(extra=1), file_id("file-abc123")]
        s, h, d = complete(st, {"messages": [{"role": "user", "content": parts}]})
        b = fake.last_body()
        check(s == 200
              and completion_text(d) == "echo: Summarize and transcribe [2 files, 1 audio clip]",
              f"{L} a request with files and audio is answered by a model that was sent them: "
              f"{s} {completion_text(d)!r}")
        check(b is not None and b["messages"] == [{"role": "user", "content": [
            text_part("Summarize"), pdf(filename="q3 report.pdf"), text_part("and transcribe"),
            audio(),
            file_id("file-abc123")]}],
              f"{L} the parts reach the upstream in order, unknown members dropped: "
              f"{b and json.dumps(b['messages'])[:500]}")

        # Data URLs with an upper-case prefix go on in lower case, as providers match them.
        s, h, d = complete(st, {"messages": [{"role": "user", "content": [
            pdf("DATA:Application/PDF;BASE64," + PDF),
            {"type": "image_url", "image_url": {"url": "Data:Image/PNG;Base64,iVBORw=="}}]}]})
        b = fake.last_body()
        check(s == 200 and b is not None and b["messages"][0]["content"] == [
            pdf(), {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}}],
              f"{L} upper-case data URL prefixes reach the upstream in lower case, the base64 "
              f"as sent: {s} {b and json.dumps(b['messages'])[:300]}")

        # A session: stored with its text and its parts; the next turn's history has the file.
        sid = {"X-Session-Id": "file-openai-1"}
        s1, h1, d1 = complete(st, {"messages": [{"role": "user", "content": [
            text_part("Keep this contract."), pdf(filename="contract.pdf")]}]}, sid)
        s2, h2, d2 = complete(st, {"messages": [{"role": "user", "content": "Who signs it?"}]},
                              sid)
        b = fake.last_body()
        check(s1 == 200 and s2 == 200 and h2.get("x-session-turn") == "2"
              and b["messages"] == [
                  {"role": "user", "content": [text_part("Keep this contract."),
                                               pdf(filename="contract.pdf")]},
                  {"role": "assistant", "content": "echo: Keep this contract. [1 file]"},
                  {"role": "user", "content": "Who signs it?"}],
              f"{L} the second turn's history sends the first turn's file again: "
              f"{s1} {s2} {b and json.dumps(b['messages'])[:600]}")
        s, _, sd = session(st, "file-openai-1")
        m0 = (sd or {}).get("messages", [{}])[0]
        check(s == 200 and m0.get("content") == "Keep this contract."
              and m0.get("parts") == [text_part("Keep this contract."),
                                      pdf(filename="contract.pdf")],
              f"{L} the session keeps the text as content and the parts beside it: "
              f"{json.dumps(sd)[:600]}")

        # Streamed, and a message of a file and audio with no text at all.
        s, t, ended = stream_completion(st, {"messages": [{"role": "user", "content": [
            pdf(), audio(fmt="mp3")]}]}, {"X-Session-Id": "file-openai-2"})
        check(s == 200 and ended and t == "echo:  [1 file, 1 audio clip]",
              f"{L} a streamed turn of a file and audio, no text: {s} {t!r} {ended}")
        s, _, sd = session(st, "file-openai-2")
        check(s == 200 and sd.get("turns") == 1 and sd["messages"][0].get("content") == ""
              and len(sd["messages"][0].get("parts") or []) == 2,
              f"{L} a message without text is a stored turn: {json.dumps(sd)[:300]}")

        # Idempotency-Key: the same file replays, another file under the key does not.
        hk = {"X-Session-Id": "file-openai-3", "Idempotency-Key": "file-key-1"}
        body = {"messages": [{"role": "user", "content": [text_part("once"), pdf()]}]}
        s1, h1, d1 = complete(st, body, hk)
        calls = fake.stats()["calls"]
        s2, h2, d2 = complete(st, body, hk)
        check(s1 == 200 and s2 == 200 and h2.get("idempotent-replayed") == "true"
              and completion_text(d2) == completion_text(d1) and fake.stats()["calls"] == calls,
              f"{L} the same file with the same Idempotency-Key replays the stored answer: "
              f"{s2} {h2.get('idempotent-replayed')}")
        other = {"messages": [{"role": "user", "content": [text_part("once"), file_id("file-2")]}]}
        s3, h3, d3 = complete(st, other, hk)
        check(s3 == 422 and error_code(d3) == "idempotency_key_reused"
              and fake.stats()["calls"] == calls,
              f"{L} another file under that key is 422, not the first one's reply: {s3} {d3}")

        # Bad parts: 400 invalid_field, nothing sent, nothing stored.
        bad = [
            ("file a string", [{"type": "file", "file": DATA_PDF}]),
            ("file without file", [{"type": "file"}]),
            ("file with neither data nor id", [pdf(None, filename="a.pdf")]),
            ("file with both data and id", [pdf(file_id="file-1")]),
            ("file_data a PNG", [pdf("data:image/png;base64,iVBORw==")]),
            ("file_data not a data URL", [pdf("https://example.com/a.pdf")]),
            ("file_data raw base64", [pdf(PDF)]),
            ("file_data broken base64", [pdf("data:application/pdf;base64,JVB*")]),
            ("file_data empty", [pdf("data:application/pdf;base64,")]),
            ("file_data a number", [pdf(5)]),
            ("file_id empty", [file_id("")]),
            ("file_id with a space", [file_id("file 1")]),
            ("file_id too long", [file_id("f" * 257)]),
            ("file_id a number", [file_id(7)]),
            ("filename empty", [pdf(filename="")]),
            ("filename a list", [pdf(filename=["a"])]),
            ("filename with a newline", [pdf(filename="a\nb.pdf")]),
            ("filename too long", [pdf(filename="a" * 256)]),
            ("input_audio a string", [{"type": "input_audio", "input_audio": WAV}]),
            ("audio without data", [{"type": "input_audio", "input_audio": {"format": "wav"}}]),
            ("audio broken base64", [audio("UklG*g==")]),
            ("audio empty", [audio("")]),
            ("audio format flac", [audio(fmt="flac")]),
            ("audio without format", [{"type": "input_audio", "input_audio": {"data": WAV}}]),
            ("101 parts of three kinds", [pdf()] * 40 + [audio()] * 40 +
             [{"type": "image_url", "image_url": {"url": PNG_URL}}] * 21),
        ]
        fake.plan()
        for what, c in bad:
            s, h, d = complete(st, {"messages": [{"role": "user", "content": c}]},
                               {"X-Session-Id": "file-bad"})
            check(s == 400 and error_code(d) == "invalid_field",
                  f"{L} {what}: 400 invalid_field: {s} {json.dumps(d)[:240]}")
        for role in ("system", "assistant", "tool"):
            for part in (pdf(), audio()):
                m = {"role": role, "content": [text_part("look"), part]}
                if role == "tool":
                    m["tool_call_id"] = "call_1"
                s, h, d = complete(st, {"messages": [m, {"role": "user", "content": "hi"}]})
                check(s == 400 and "only user messages" in json.dumps(d),
                      f"{L} a {part['type']} part in a {role} message: 400: {s} "
                      f"{json.dumps(d)[:200]}")
        s, _, sd = session(st, "file-bad")
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
        sid = {"X-Session-Id": "file-anthropic-1"}
        s1, h1, d1 = complete(st, {"messages": [{"role": "user", "content": [
            text_part("Compare"), pdf(filename="a.pdf"), text_part("with"), pdf(),
            {"type": "image_url", "image_url": {"url": PNG_URL}}]}]}, sid)
        b = fake.last_body()
        want = [
            text_part("Compare"),
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                            "data": PDF}, "title": "a.pdf"},
            text_part("with"),
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                            "data": PDF}},
            {"type": "image", "source": {"type": "url", "url": PNG_URL}}]
        check(s1 == 200 and completion_text(d1) == "echo: Compare with [1 image, 2 files]",
              f"{L} the model was sent two documents and an image: {s1} {completion_text(d1)!r}")
        check(b is not None and b["messages"] == [{"role": "user", "content": want}],
              f"{L} file parts become document blocks in order, the filename as title: "
              f"{b and json.dumps(b['messages'])[:800]}")
        s2, t, ended = stream_completion(
            st, {"messages": [{"role": "user", "content": "And now?"}]}, sid)
        b = fake.last_body()
        check(s2 == 200 and ended and t == "echo: And now?" and b["messages"] == [
            {"role": "user", "content": want},
            {"role": "assistant", "content": "echo: Compare with [1 image, 2 files]"},
            {"role": "user", "content": "And now?"}],
              f"{L} streamed, the history carries the document blocks: {s2} {t!r} "
              f"{b and json.dumps(b['messages'])[:800]}")

        # What the Messages API cannot take: refused before anything is sent or stored.
        calls = fake.stats()["calls"]
        for what, part, why in (("a file_id", file_id("file-abc"), "file_id"),
                                ("audio", audio(), "audio")):
            for stream in (False, True):
                sidh = {"X-Session-Id": "file-anthropic-no"}
                if stream:
                    s, _, raw = st.request("POST", PATH, body=json.dumps({"stream": True,
                                           "messages": [{"role": "user", "content": [
                                               text_part("this"), part]}]}),
                                           headers=dict(sidh, **{"Content-Type":
                                                                 "application/json"}),
                                           timeout=60)
                    datas = [e["data"] for e in SseParser().feed(raw, final=True)]
                    check(s == 200 and "[DONE]" not in datas and len(datas) == 1
                          and "provider_rejected_request" in datas[0] and why in datas[0],
                          f"{L} {what}, streamed: one error chunk naming it, no [DONE]: {s} "
                          f"{datas[:3]}")
                    check(len(datas) == 1 and json.loads(datas[0])["error"].get("type") ==
                          "invalid_request_error", f"{L} {what}, streamed: the chunk's type "
                          f"is invalid_request_error (a refusal, not a server fault): {datas[:1]}")
                    continue
                s, h, d = complete(st, {"messages": [{"role": "user", "content": [
                    text_part("this"), part]}]}, sidh)
                check(s == 400 and error_code(d) == "provider_rejected_request"
                      and why in json.dumps(d),
                      f"{L} {what}: 400 provider_rejected_request naming it: {s} "
                      f"{json.dumps(d)[:300]}")
        s, _, sd = session(st, "file-anthropic-no")
        check(fake.stats()["calls"] == calls and s == 404,
              f"{L} nothing was sent upstream or stored: "
              f"{fake.stats()['calls'] - calls} calls, session {s}")

    # --- fallbacks: a provider that cannot express the request is passed over -----------------
    L = "[fallback]"
    fenv = dict(env, VALERIE_LLM_FALLBACKS="anthropic,offline",
                ANTHROPIC_BASE_URL=f"http://127.0.0.1:{fake.port}", ANTHROPIC_API_KEY="ak-test",
                ANTHROPIC_MODEL="claude-test", ANTHROPIC_MAX_RETRIES="0",
                OPENAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD="1000",
                ANTHROPIC_CIRCUIT_BREAKER_FAILURE_THRESHOLD="1000")
    with Stack(workers=1, threads=4, env=fenv) as st:
        # Audio while openai fails: Anthropic cannot take it and is not called; offline answers.
        fake.plan({"mode": "fail-500"})
        s, h, d = complete(st, {"messages": [{"role": "user", "content": [text_part("hear"),
                                                                          audio()]}]})
        paths = [q["path"] for q in fake.stats()["requests"]]
        check(s == 200 and "with 1 audio clip" in (completion_text(d) or "")
              and paths == ["/v1/chat/completions"],
              f"{L} openai failing, audio: Anthropic passed over uncalled, offline answers: "
              f"{s} {paths} {completion_text(d)!r}")

        # A session whose history has audio and a file_id goes on with Anthropic, which gets
        # a note in their place, while openai fails.
        sid = {"X-Session-Id": "file-fallback-1"}
        fake.plan()
        s1, _, d1 = complete(st, {"messages": [{"role": "user", "content": [
            text_part("keep these"), audio(), file_id("file-9")]}]}, sid)
        fake.plan({"mode": "fail-500"})
        s2, h2, d2 = complete(st, {"messages": [{"role": "user", "content": "and now?"}]}, sid)
        reqs = fake.stats()["requests"]
        ab = reqs[-1]["body"] if reqs and reqs[-1]["path"] == "/v1/messages" else {}
        first = (ab.get("messages") or [{}])[0].get("content")
        check(s1 == 200 and s2 == 200 and completion_text(d2) == "echo: and now?"
              and [q["path"] for q in reqs] == ["/v1/chat/completions", "/v1/messages"]
              and isinstance(first, str) and first.startswith("keep these")
              and "audio clip sent earlier" in first and "OpenAI file_id" in first,
              f"{L} history with audio and a file_id: Anthropic serves the turn with notes in "
              f"their place: {s1} {s2} {completion_text(d2)!r} {json.dumps(ab)[:400]}")

    # Anthropic first, openai after it: audio goes to openai, which can take it.
    aoenv = dict(aenv, VALERIE_LLM_FALLBACKS="openai", OPENAI_BASE_URL=env["OPENAI_BASE_URL"],
                 OPENAI_API_KEY="sk-test", OPENAI_MODEL="gpt-test", OPENAI_MAX_RETRIES="0")
    with Stack(workers=1, threads=2, env=aoenv) as st:
        fake.plan()
        s, h, d = complete(st, {"messages": [{"role": "user", "content": [text_part("hear"),
                                                                          audio()]}]})
        paths = [q["path"] for q in fake.stats()["requests"]]
        check(s == 200 and completion_text(d) == "echo: hear [1 audio clip]"
              and paths == ["/v1/chat/completions"],
              f"{L} anthropic first: audio goes to the openai fallback: {s} {paths} "
              f"{completion_text(d)!r}")
        s, h, d = complete(st, {"messages": [{"role": "user", "content": "plain"}]})
        paths = [q["path"] for q in fake.stats()["requests"]]
        check(s == 200 and paths[-1] == "/v1/messages",
              f"{L} a plain message still goes to Anthropic first: {s} {paths}")

    # Anthropic first, offline after it, nothing failing: offline does not stand in for a
    # provider that has no form for the request, nor for a request Anthropic refuses.
    with Stack(workers=1, threads=2, env=dict(aenv, VALERIE_LLM_FALLBACKS="offline")) as st:
        fake.plan()
        for what, body, why in (
                ("audio", {"messages": [{"role": "user", "content": [text_part("hear"), audio()]}]},
                 "audio"),
                ("logit_bias", {"logit_bias": {"50256": -100},
                                "messages": [{"role": "user", "content": "hi"}]},
                 "logit_bias")):
            s, h, d = complete(st, body)
            check(s == 400 and error_code(d) == "provider_rejected_request"
                  and why in json.dumps(d) and "offline" not in json.dumps(d)
                  and fake.stats()["calls"] == 0,
                  f"{L} anthropic then offline, {what}: 400 naming it, no offline non-answer, "
                  f"nothing sent: {s} {json.dumps(d)[:300]}")

    # --- the offline provider ---------------------------------------------------------------
    with Stack(workers=1, threads=2) as st:
        s, h, d = complete(st, {"messages": [{"role": "user", "content": [
            text_part("look"), pdf(), pdf(), audio(),
            {"type": "image_url", "image_url": {"url": PNG_URL}}]}]})
        check(s == 200 and 'You said: "look" with 1 image, 2 files and 1 audio clip, which it '
              'cannot see' in (completion_text(d) or ""),
              f"[offline] says what it was sent besides the text: {s} {completion_text(d)!r}")
finally:
    fake.stop()
done("test_openai_files")
