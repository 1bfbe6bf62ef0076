"""test_chat_stream: "stream": true answers Server-Sent Events through nginx, unbuffered.
With the offline provider pacing its tokens (VALERIE_OFFLINE_TOKEN_MS), the client holds
the first `delta` event while the stream is still open and before `done` is produced:
at that moment the worker has not written the request's access line (it writes it when
the response ends) and nginx has not logged it either; `done` comes later. The events
follow the SSE rules: text/event-stream, `delta` events with {"text"}, then one `done`
whose data is the whole answer document (the deltas put together are its reply). A
replayed Idempotency-Key streams the stored answer; bad input is refused before any
event, as JSON."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (SseStream, Stack, access_lines, answer_problems, check, done,  # noqa: E402
                     is_error_doc, json_lines, post_chat, session_exchanges, wait_until)

TOKEN_MS = 300


def nginx_logged(st, request_id):
    docs, _ = json_lines(st.access_log())
    return any(isinstance(d, dict) and d.get("request_id") == request_id for d in docs)


def worker_logged(st, request_id):
    return any(d.get("request_id") == request_id for d in access_lines(st))


def event_problems(events, headers, sid):
    """The SSE contract of BRIEF 13: deltas, then one done (the answer document), last."""
    p = []
    names = [e["event"] for e in events]
    if not names or names[-1] != "done" or names.count("done") != 1:
        p.append(f"not ending in one done: {names[-3:]}")
    if set(names[:-1]) - {"delta"}:
        p.append(f"other events before done: {set(names[:-1])}")
    text, answer = "", None
    for e in events:
        try:
            d = json.loads(e["data"])
        except ValueError:
            p.append(f"data is not JSON: {e['data'][:80]!r}")
            continue
        if e["event"] == "delta":
            if not (isinstance(d, dict) and set(d) == {"text"} and isinstance(d["text"], str)):
                p.append(f"delta data not {{\"text\"}}: {d}")
            else:
                text += d["text"]
        elif e["event"] == "done":
            answer = d
    p += answer_problems(answer, headers, sid)
    if isinstance(answer, dict) and answer.get("reply") != text:
        p.append(f"the deltas do not add up to the reply: {text[:60]!r} vs "
                 f"{answer.get('reply', '')[:60]!r}")
    return p, answer


# --- paced: the first delta arrives while the turn is still going on ---
with Stack(workers=2, threads=4, env={"VALERIE_OFFLINE_TOKEN_MS": str(TOKEN_MS),
                                      "VALERIE_OFFLINE_DELAY_MS": "100"}) as st:
    sid = "stream-1"
    s, h, doc = post_chat(st, {"message": "first, not streamed", "session_id": sid})
    check(s == 200 and doc.get("turn") == 1, f"a first turn, not streamed: {s}")

    sse = SseStream(st, {"message": "tell me a story", "session_id": sid, "stream": True},
                    timeout=120)
    rid = sse.headers.get("x-request-id", "")
    check(sse.status == 200 and sse.headers.get("content-type", "").startswith(
        "text/event-stream"), f"200 text/event-stream: {sse.status} "
        f"{sse.headers.get('content-type')}")
    check("content-length" not in sse.headers, "no Content-Length: the length is not known yet")
    check(rid, f"nginx returned a request id: {rid!r}")
    first = sse.next_events()
    # The moment of truth: we hold the first event; what does the server say?
    open_now = not sse.ended
    worker_done = worker_logged(st, rid)
    nginx_done = nginx_logged(st, rid)
    check(first and first[0]["event"] == "delta",
          f"the first event is a delta: {first[:1]}")
    check(all(e["event"] != "done" for e in first), "no done yet when the first delta arrives")
    check(open_now, "the stream is still open when the first delta arrives")
    check(not worker_done, "the worker has not finished the request (no access line yet) "
          "when the client holds the first delta")
    check(not nginx_done, "nginx has not finished the request either (no access.log line)")

    reads = 1
    while not sse.ended:
        if sse.next_events():
            reads += 1
    sse.close()
    events = sse.events
    check(reads >= 10, f"the events came in many separate reads, not in one buffered lump: "
          f"{reads} reads, {len(events)} events")
    p, answer = event_problems(events, sse.headers, sid)
    check(not p, f"the events follow BRIEF 13 (deltas, one done = the answer document): {p}")
    check(isinstance(answer, dict) and answer.get("turn") == 2, f"the streamed turn is turn 2: "
          f"{answer and answer.get('turn')}")
    check("first, not streamed" in (answer or {}).get("reply", ""),
          "the streamed reply remembers the first turn")
    check(not sse.parser.pending(), "the stream ended on an event boundary")
    try:
        sse.raw.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    check(utf8, "the stream is valid UTF-8")
    lines = [ln for ln in sse.raw.decode(errors="replace").split("\n") if ln]
    others = [ln for ln in lines if not ln.startswith(("event: ", "data: "))]
    check(not others, f"only event: and data: lines: {others[:3]}")
    check(wait_until(lambda: worker_logged(st, rid), 10),
          "the worker's access line appears once the stream has ended")
    line = [d for d in access_lines(st) if d.get("request_id") == rid]
    check(line and line[0].get("status") == 200 and line[0].get("duration_ms", 0) >= TOKEN_MS * 10,
          f"... status 200, and it lasted the whole stream: {line[:1]}")
    s, h, doc = st.json("GET", f"/api/v1/sessions/{sid}")
    turns, p = session_exchanges(doc)
    bots = [m.get("content") for m in (doc or {}).get("messages", [])
            if m.get("role") == "assistant"]
    check(turns == [1, 2] and not p and bots[-1:] == [(answer or {}).get("reply")],
          f"the streamed turn is stored: {turns} {p}")

# --- unpaced: replays, the agent route, refusals ---
with Stack(workers=1, threads=4) as st:
    sid = "stream-2"
    body = {"message": "stream me", "session_id": sid, "stream": True}
    sse = SseStream(st, body, headers={"Idempotency-Key": "s-1"})
    events = sse.read_all()
    sse.close()
    p, a1 = event_problems(events, sse.headers, sid)
    check(sse.status == 200 and not p and a1.get("turn") == 1, f"a streamed turn: {p}")
    sse = SseStream(st, body, headers={"Idempotency-Key": "s-1"})
    events = sse.read_all()
    sse.close()
    p, a2 = event_problems(events, sse.headers, sid)
    check(sse.status == 200 and not p and sse.headers.get("idempotent-replayed") == "true",
          f"the same key again streams the stored answer, Idempotent-Replayed: true: {p} "
          f"{sse.headers.get('idempotent-replayed')}")
    check(a1 and a2 and (a1.get("turn"), a1.get("reply")) == (a2.get("turn"), a2.get("reply")),
          "... the same turn and reply")
    s, h, d = post_chat(st, {"message": "stream me", "session_id": sid},
                        {"Idempotency-Key": "s-1"})
    check(s == 200 and d.get("turn") == 1 and d.get("reply") == a1.get("reply"),
          f"... and as JSON too: {s}")

    sse = SseStream(st, {"message": "hola", "session_id": "stream-3", "stream": True,
                         "config": {"nombre_bot": "Test", "id_empresa": 1, "rol_bot": "t",
                                    "tipo_bot": "t", "objetivo_principal": "t"}},
                    path="/api/agent/chat")
    events = sse.read_all()
    sse.close()
    p, a = event_problems(events, sse.headers, "stream-3")
    check(sse.status == 200 and sse.headers.get("content-type", "").startswith(
        "text/event-stream") and not p, f"/api/agent/chat streams too: {p}")

    for label, b in [("empty message", {"message": "", "session_id": "s4", "stream": True}),
                     ("bad session id", {"message": "x", "session_id": "a b", "stream": True}),
                     ("stream: \"yes\"", {"message": "x", "session_id": "s4", "stream": "yes"})]:
        s, h, d = post_chat(st, b)
        check(s == 400 and is_error_doc(d) and h.get("content-type", "").startswith(
            "application/json"), f"{label} with stream: a JSON 400 before any event: {s} {d}")
    s, h, d = st.json("GET", "/api/v1/sessions/s4")
    check(s == 404, "... and nothing stored")

done("test_chat_stream")
