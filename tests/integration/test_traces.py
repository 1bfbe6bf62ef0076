"""test_traces: OTLP/HTTP JSON traces of chat turns, received by a collector on loopback
(a small HTTP server in this test: Langfuse itself cannot run here), through real nginx and
the pool.

- Langfuse: POST /api/public/otel/v1/traces with Basic auth from the Langfuse keys and
  x-langfuse-ingestion-version 4; valid OTLP JSON (resourceSpans/scopeSpans/spans, 32-hex
  trace ids and 16-hex span ids, nanosecond times as strings, typed attributes); one trace
  per turn: a root span and a generation span per provider call carrying
  langfuse.observation.type, the model, usage (gen_ai.* and usage_details), session.id,
  user.id; the X-Trace-Id header is the trace's id; a W3C traceparent is continued;
  content (input/output) only with VALERIE_TRACE_CONTENT=true; a failing provider with a
  fallback gives two generations, the first an error; streamed turns too.
- OTEL_EXPORTER_OTLP_ENDPOINT: the same payload at <endpoint>/v1/traces, no auth header.
- A collector that refuses (500): spans counted failed; one that accepts connections and
  never answers: chat turns still complete while it holds the export, and the queue drops
  and counts (valerie_trace_spans_total{outcome="dropped"}); /health/detailed says failing.
- Images and PDFs sent inline (base64 data URLs) and audio (input_audio data) become a note
  of their type and size in the inputs; the text, http(s) image URLs and file names stay.
- Long content (VALERIE_TRACE_CONTENT=true): each input and output attribute is cut to
  32 KiB on a character boundary and marked truncated; a batch larger than 4 MiB goes out
  as several requests, none over 4 MiB (Langfuse Cloud refuses requests over 5 MB).
- Tracing off: no X-Trace-Id, nothing sent, the counters still exported at 0.
"""
import base64
import http.server
import json
import os
import re
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeLLM, Stack, check, done, post_chat, wait_until  # noqa: E402

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


class Collector:
    """An OTLP/HTTP collector on loopback: records every POST; mode ok, fail, hang, or
    hold (the first POST waits for release, then all answer 200)."""

    def __init__(self, mode="ok"):
        self.mode = mode
        self.posts = []          # (path, headers lower-case, parsed body or None)
        self.lock = threading.Lock()
        self.hanging = []        # sockets held open without an answer
        self.held = False
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                try:
                    doc = json.loads(raw)
                except ValueError:
                    doc = None
                with owner.lock:
                    owner.posts.append((self.path, {k.lower(): v for k, v in
                                                    self.headers.items()}, doc))
                if owner.mode == "hang":
                    with owner.lock:
                        owner.hanging.append(self.connection)
                    owner.release.wait(120)
                    return
                if owner.mode == "hold":
                    with owner.lock:
                        first, owner.held = not owner.held, True
                    if first:
                        owner.release.wait(120)
                code = 200 if owner.mode in ("ok", "hold") else 500
                body = b"{}" if code == 200 else b'{"error":"nope"}'
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.release = threading.Event()
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def spans(self):
        out = []
        with self.lock:
            posts = list(self.posts)
        for _, _, doc in posts:
            for rs in (doc or {}).get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    out += ss.get("spans", [])
        return out

    def stop(self):
        self.release.set()
        self.srv.shutdown()
        self.srv.server_close()


def attrs(span):
    """{key: python value} of a span's typed attributes; problems listed under '_bad'."""
    out, bad = {}, []
    for a in span.get("attributes", []):
        v = a.get("value", {})
        if len(v) != 1:
            bad.append(a)
            continue
        (t, val), = v.items()
        if t == "stringValue" and isinstance(val, str):
            out[a["key"]] = val
        elif t == "intValue" and isinstance(val, (str, int)) and str(val).lstrip("-").isdigit():
            out[a["key"]] = int(val)
        elif t in ("boolValue", "doubleValue"):
            out[a["key"]] = val
        else:
            bad.append(a)
    if bad:
        out["_bad"] = bad
    return out


def span_problems(s):
    p = []
    if not HEX32.match(s.get("traceId", "")):
        p.append(f"traceId {s.get('traceId')!r}")
    if not HEX16.match(s.get("spanId", "")):
        p.append(f"spanId {s.get('spanId')!r}")
    if "parentSpanId" in s and not HEX16.match(s["parentSpanId"]):
        p.append(f"parentSpanId {s['parentSpanId']!r}")
    for k in ("startTimeUnixNano", "endTimeUnixNano"):
        v = s.get(k)
        if not (isinstance(v, str) and v.isdigit() and 1.7e18 < int(v) < 4e18):
            p.append(f"{k} {v!r} is not Unix nanoseconds")
    if not p and int(s["endTimeUnixNano"]) < int(s["startTimeUnixNano"]):
        p.append("ends before it starts")
    if not isinstance(s.get("name"), str) or not s["name"]:
        p.append("no name")
    if "_bad" in attrs(s):
        p.append(f"untyped attributes {attrs(s)['_bad']}")
    return p


def metric(st, name, labels):
    s, _, raw = st.request("GET", "/metrics")
    for line in raw.decode().splitlines():
        if line.startswith(name + "{" + labels + "}"):
            return float(line.split()[-1])
    return None


def chat(st, sid, msg, stream=False, headers=None):
    body = {"message": msg, "session_id": sid}
    if stream:
        body["stream"] = True
    return post_chat(st, body, headers=headers)


fake = FakeLLM()
col = Collector()
try:
    # --- Langfuse, content on, a provider that fails once with a fallback ---
    env = {"LANGFUSE_HOST": f"http://127.0.0.1:{col.port}", "LANGFUSE_PUBLIC_KEY": "pk-lf-test",
           "LANGFUSE_SECRET_KEY": "sk-lf-secret", "VALERIE_TRACE_CONTENT": "true",
           "VALERIE_LLM_PROVIDER": "openai", "VALERIE_LLM_FALLBACKS": "offline",
           "OPENAI_BASE_URL": f"http://127.0.0.1:{fake.port}/v1", "OPENAI_API_KEY": "sk-test",
           "OPENAI_MODEL": "gpt-test", "OPENAI_MAX_RETRIES": "0",
           "OPENAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000"}
    with Stack(workers=2, threads=4, env=env) as st:
        fake.plan()
        s, h, doc = chat(st, "tr-1", "hello traces")
        tid = h.get("x-trace-id", "")
        check(s == 200 and HEX32.match(tid), f"a chat answer carries X-Trace-Id: {s} {tid!r}")
        ok = wait_until(lambda: len([x for x in col.spans() if x["traceId"] == tid]) >= 2, 15)
        spans = [x for x in col.spans() if x["traceId"] == tid]
        check(ok and len(spans) == 2, f"one trace per turn: a root span and one generation "
              f"({len(spans)} spans)")
        path, hd, body = col.posts[0]
        auth = "Basic " + base64.b64encode(b"pk-lf-test:sk-lf-secret").decode()
        check(path == "/api/public/otel/v1/traces" and hd.get("authorization") == auth
              and hd.get("content-type", "").startswith("application/json")
              and hd.get("x-langfuse-ingestion-version") == "4",
              f"Langfuse's OTLP endpoint with Basic auth and the ingestion version: {path} "
              f"{ {k: v for k, v in hd.items() if k != 'authorization'} }")
        res = attrs(body["resourceSpans"][0]["resource"])
        check(res.get("service.name") == "valerie" and res.get("service.version"),
              f"the resource names the service: {res}")
        probs = [p for x in spans for p in span_problems(x)]
        check(probs == [], f"valid OTLP JSON spans: {probs}")
        root = next((x for x in spans if "parentSpanId" not in x), {})
        gen = next((x for x in spans if x.get("parentSpanId") == root.get("spanId")), {})
        ra, ga = attrs(root), attrs(gen)
        check(root.get("kind") == 2 and ra.get("langfuse.trace.name") == "/api/v1/chat"
              and ra.get("session.id") == "tr-1" and ra.get("user.id") == "anonymous"
              and ra.get("http.response.status_code") == 200
              and root.get("status", {}).get("code") == 1,
              f"the root span: the route, session.id, user.id, status: {ra}")
        check(ga.get("langfuse.observation.type") == "generation"
              and ga.get("langfuse.observation.model.name") == "gpt-test"
              and ga.get("gen_ai.request.model") == "gpt-test"
              and ga.get("gen_ai.system") == "openai"
              and ga.get("gen_ai.usage.input_tokens") == doc["usage"]["input_tokens"]
              and ga.get("gen_ai.usage.output_tokens") == doc["usage"]["output_tokens"]
              and json.loads(ga.get("langfuse.observation.usage_details", "{}")) ==
              {"input": doc["usage"]["input_tokens"], "output": doc["usage"]["output_tokens"]}
              and ga.get("session.id") == "tr-1" and ga.get("user.id") == "anonymous",
              f"the generation: type, model, usage, session and user on every span: {ga}")
        check(int(root["startTimeUnixNano"]) <= int(gen["startTimeUnixNano"])
              and int(gen["endTimeUnixNano"]) <= int(root["endTimeUnixNano"]),
              "the generation lies within the turn")
        check("hello traces" in ga.get("langfuse.observation.input", "")
              and ga.get("langfuse.observation.output") == doc["reply"]
              and "hello traces" in ra.get("langfuse.trace.input", "")
              and ra.get("langfuse.trace.output") == doc["reply"],
              "with VALERIE_TRACE_CONTENT=true the input and output are recorded")

        # an image, a PDF and audio sent inline: the trace keeps the conversation and notes,
        # not the base64
        img64 = base64.b64encode(bytes(range(256)) * 200).decode()   # 68 KB of base64
        s, h, raw = st.request("POST", "/v1/chat/completions", body=json.dumps({"messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "what is in these?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + img64}},
                {"type": "image_url", "image_url": {"url": "https://x.example/cat.png"}},
                {"type": "file", "file": {"filename": "a.pdf",
                                          "file_data": "data:application/pdf;base64," + img64}},
                {"type": "input_audio", "input_audio": {"data": img64, "format": "wav"}}]}]}),
            headers={"Content-Type": "application/json", "X-Session-Id": "tr-img"})
        itid = h.get("x-trace-id", "")
        ok = wait_until(lambda: len([x for x in col.spans() if x["traceId"] == itid]) >= 2, 15)
        ins = [v for x in col.spans() if x["traceId"] == itid
               for k, v in attrs(x).items() if k.endswith(".input")]
        notes = [f"[{kind}, {len(img64)} bytes of base64, not traced]"
                 for kind in ("image/png", "application/pdf", "audio")]
        check(s == 200 and ok and len(ins) == 3
              and all(all(n in v for n in notes) and "what is in these?" in v
                      and "https://x.example/cat.png" in v and '"filename":"a.pdf"' in v
                      and img64[:64] not in v and "truncated" not in v for v in ins),
              f"an inline image, PDF and audio clip become notes in the trace's inputs, the "
              f"text, the image URL and the file name stay: {s} {[v[:500] for v in ins]}")

        # a caller's W3C traceparent is continued
        parent_tid, parent_sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        s, h, _ = chat(st, "tr-2", "with a parent",
                       headers={"traceparent": f"00-{parent_tid}-{parent_sid}-01"})
        ok = wait_until(lambda: any(x["traceId"] == parent_tid and "kind" in x
                                    and x["kind"] == 2 for x in col.spans()), 15)
        root2 = next((x for x in col.spans() if x["traceId"] == parent_tid and x["kind"] == 2), {})
        check(ok and h.get("x-trace-id") == parent_tid
              and root2.get("parentSpanId") == parent_sid,
              f"traceparent: the trace id is the caller's, the root's parent its span: "
              f"{h.get('x-trace-id')} {root2.get('parentSpanId')}")
        s, h, _ = chat(st, "tr-2", "bad parent", headers={"traceparent": "00-zz-yy-01"})
        check(s == 200 and HEX32.match(h.get("x-trace-id", "")) and
              h["x-trace-id"] != parent_tid, "a malformed traceparent starts a new trace")

        # the primary fails, the fallback answers: two generations, the first an error
        fake.plan({"mode": "fail-500"})
        s, h, doc = chat(st, "tr-3", "fall back please")
        tid = h.get("x-trace-id", "")
        ok = wait_until(lambda: len([x for x in col.spans() if x["traceId"] == tid]) >= 3, 15)
        gens = sorted([x for x in col.spans() if x["traceId"] == tid and
                       attrs(x).get("langfuse.observation.type") == "generation"],
                      key=lambda x: int(x["startTimeUnixNano"]))
        check(s == 200 and doc["provider"] == "offline" and len(gens) == 2
              and gens[0].get("status", {}).get("code") == 2
              and "500" in gens[0]["status"].get("message", "")
              and attrs(gens[0]).get("langfuse.observation.level") == "ERROR"
              and attrs(gens[1]).get("gen_ai.system") == "offline"
              and gens[1].get("status", {}).get("code") == 1,
              f"a failed call then the fallback: two generations, the first an error: "
              f"{[(attrs(g).get('gen_ai.system'), g.get('status')) for g in gens]}")

        # an upstream's non-ASCII error message, cut by Valerie at a byte count in the
        # middle of a character: the export is still valid UTF-8 JSON (the collector
        # parses it), the cut character replaced
        posts_before = len(col.posts)
        fake.plan({"mode": "fail-500", "message": "a" * 159 + "\u00e9" * 20})
        s, h, doc = chat(st, "tr-3b", "fall back again")
        tid = h.get("x-trace-id", "")
        ok = wait_until(lambda: len([x for x in col.spans() if x["traceId"] == tid]) >= 3, 15)
        with col.lock:
            bad = [p for p in col.posts[posts_before:] if p[2] is None]
        gens = [x for x in col.spans() if x["traceId"] == tid and
                attrs(x).get("langfuse.observation.type") == "generation"]
        msgs = [g.get("status", {}).get("message", "") for g in gens]
        check(s == 200 and ok and not bad and any("a" * 159 + "\ufffd" in m for m in msgs),
              f"a cut multi-byte character does not spoil the export: {len(bad)} unparsable "
              f"post(s), {len(gens)} generation(s) {[m[150:] for m in msgs]}")

        # a streamed turn: the generation says when the first token came
        fake.plan()
        s, h, raw = st.request("POST", "/api/v1/chat", body=json.dumps(
            {"message": "stream it", "session_id": "tr-4", "stream": True}),
            headers={"Content-Type": "application/json"})
        tid = h.get("x-trace-id", "")
        ok = wait_until(lambda: len([x for x in col.spans() if x["traceId"] == tid]) >= 2, 15)
        gen = next((x for x in col.spans() if x["traceId"] == tid and x.get("kind") == 3), {})
        check(s == 200 and b"event: done" in raw and HEX32.match(tid)
              and re.match(r"^\d{4}-\d\d-\d\dT", attrs(gen).get(
                  "langfuse.observation.completion_start_time", "")),
              f"a streamed turn is traced, with the first token's time: "
              f"{attrs(gen).get('langfuse.observation.completion_start_time')}")

        # the OpenAI-compatible route is traced too
        s, h, _ = post_chat(st, {"messages": [{"role": "user", "content": "hi"}]},
                            path="/v1/chat/completions")
        check(s == 200 and HEX32.match(h.get("x-trace-id", "")),
              f"/v1/chat/completions carries X-Trace-Id: {h.get('x-trace-id')}")
        exported = 'outcome="exported"'
        check(wait_until(lambda: (metric(st, "valerie_trace_spans_total", exported) or 0)
                         >= 10, 15),
              f"exported spans are counted: {metric(st, 'valerie_trace_spans_total', exported)}")
        s, _, det = st.json("GET", "/health/detailed")
        te = (det or {}).get("dependencies", {}).get("trace_exporter", {})
        check(te.get("status") == "ok" and "queued" in te, f"/health/detailed: {te}")

    # --- content off (the default): no input or output on any span ---
    col.posts.clear()
    env_off = dict(env, VALERIE_TRACE_CONTENT="false")
    with Stack(workers=1, threads=2, env=env_off) as st:
        fake.plan()
        s, h, doc = chat(st, "tr-5", "secret words")
        tid = h.get("x-trace-id", "")
        wait_until(lambda: len([x for x in col.spans() if x["traceId"] == tid]) >= 2, 15)
        keys = {k for x in col.spans() if x["traceId"] == tid for k in attrs(x)}
        check(keys and not any(k.endswith(".input") or k.endswith(".output") for k in keys)
              and "secret words" not in json.dumps(col.posts),
              f"without VALERIE_TRACE_CONTENT no content leaves: {sorted(keys)}")

    # --- OTEL_EXPORTER_OTLP_ENDPOINT: <endpoint>/v1/traces, no auth ---
    col.posts.clear()
    env_otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{col.port}/otlp/"}
    with Stack(workers=1, threads=2, env=env_otel) as st:
        s, h, _ = chat(st, "tr-6", "to any collector")
        tid = h.get("x-trace-id", "")
        ok = wait_until(lambda: any(x["traceId"] == tid for x in col.spans()), 15)
        path, hd, _ = col.posts[0] if col.posts else ("", {}, None)
        check(ok and path == "/otlp/v1/traces" and "authorization" not in hd
              and "x-langfuse-ingestion-version" not in hd,
              f"OTEL_EXPORTER_OTLP_ENDPOINT: {path}, no Langfuse headers")

    # --- a collector that refuses: failed spans are counted ---
    bad = Collector("fail")
    with Stack(workers=1, threads=2, env={"OTEL_EXPORTER_OTLP_ENDPOINT":
                                           f"http://127.0.0.1:{bad.port}"}) as st:
        s, _, _ = chat(st, "tr-7", "refused")
        check(s == 200, "a refusing collector does not fail the turn")
        check(wait_until(lambda: (metric(st, "valerie_trace_spans_total",
                                         'outcome="failed"') or 0) >= 2, 15),
              "spans a collector refused are counted failed")
        s, _, det = st.json("GET", "/health/detailed")
        te = det["dependencies"]["trace_exporter"]
        check(s == 200 and te["status"] == "failing",
              f"/health/detailed says the exporter is failing, still 200: {s} {te}")
    bad.stop()

    # --- a collector that accepts and never answers: turns go on, the queue drops ---
    hang = Collector("hang")
    env_hang = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{hang.port}",
                "VALERIE_TRACE_QUEUE_SIZE": "16", "VALERIE_TRACE_EXPORT_TIMEOUT_MS": "60000"}
    with Stack(workers=1, threads=2, env=env_hang) as st:
        chat(st, "tr-8", "first")
        held = wait_until(lambda: len(hang.hanging) >= 1, 15)
        check(held, "the exporter's first batch is held by the hanging collector")
        answered = 0
        for i in range(40):
            s, _, _ = chat(st, "tr-8", f"turn {i}")
            answered += s == 200
        check(answered == 40 and len(hang.hanging) == 1,
              f"40 turns answered while the collector still holds the export: {answered}")
        dropped = metric(st, "valerie_trace_spans_total", 'outcome="dropped"') or 0
        check(dropped >= 40, f"the full queue drops spans and counts them: {dropped}")
    hang.stop()

    # --- long content: attributes cut at 32 KiB, each export at most 4 MiB ---
    # The collector holds the first export while 30 turns queue up, so the next pass
    # takes them as one batch of 60 spans (~6 MB even with the attributes cut).
    hold = Collector("hold")
    env_long = {"LANGFUSE_HOST": f"http://127.0.0.1:{hold.port}",
                "LANGFUSE_PUBLIC_KEY": "pk-lf-test", "LANGFUSE_SECRET_KEY": "sk-lf-secret",
                "VALERIE_TRACE_CONTENT": "true", "VALERIE_MAX_MESSAGE_CHARS": "100000",
                "VALERIE_TRACE_EXPORT_TIMEOUT_MS": "60000", "VALERIE_LLM_PROVIDER": "openai",
                "OPENAI_BASE_URL": f"http://127.0.0.1:{fake.port}/v1", "OPENAI_API_KEY": "sk-test",
                "OPENAI_MODEL": "gpt-test"}
    fake.plan()                                  # replies "echo: " + the message
    long_msg = "x" + "\u00e9" * 20000          # 40001 bytes: 32 KiB falls mid-character
    with Stack(workers=1, threads=2, env=env_long) as st:
        chat(st, "tr-long-0", "first")
        check(wait_until(lambda: hold.held, 15), "the first export is held")
        tids = []
        for i in range(30):
            s, h, _ = chat(st, f"tr-long-{i + 1}", long_msg)
            tids.append(h.get("x-trace-id", ""))
        check(all(HEX32.match(t) for t in tids), "30 long turns answered")
        hold.release.set()
        ok = wait_until(lambda: len([x for x in hold.spans() if x["traceId"] in tids]) >= 60,
                        30)
        with hold.lock:
            posts = list(hold.posts)
        sizes = [int(hd.get("content-length", "0")) for _, hd, _ in posts]
        check(ok and all(doc is not None for _, _, doc in posts),
              f"every span of the long turns arrives in parsable exports: "
              f"{len([x for x in hold.spans() if x['traceId'] in tids])} spans, sizes {sizes}")
        check(len(posts) >= 3 and max(sizes) <= 4 * 1024 * 1024,
              f"a batch over 4 MiB is split into requests of at most 4 MiB: {sizes}")
        contents = [(k, v) for x in hold.spans() if x["traceId"] in tids
                    for k, v in attrs(x).items() if k.endswith(".input") or k.endswith(".output")]
        long_ones = [(k, v) for k, v in contents if len(v.encode()) > 32768 + 100]
        check(len(contents) == 30 * 6 and not long_ones,
              f"each input and output attribute is at most 32 KiB: {len(contents)} attributes, "
              f"{[(k, len(v.encode())) for k, v in long_ones][:4]}")
        cut = [v for k, v in contents if "truncated" in v]
        check(len(cut) == 30 * 6 and all("\ufffd" not in v and
                                         re.search(r"\u00e9\.\.\. \[truncated, \d+ bytes in all\]$", v)
                                         for v in cut),
              f"cut attributes end on a whole character and say they were truncated: "
              f"{len(cut)} {[v[-60:] for v in cut[:2]]}")
    hold.stop()

    # --- tracing off: no header, nothing sent, counters at 0 ---
    col.posts.clear()
    with Stack(workers=1, threads=2) as st:
        s, h, _ = chat(st, "tr-9", "untraced")
        check(s == 200 and "x-trace-id" not in h, "tracing off: no X-Trace-Id")
        check(metric(st, "valerie_trace_spans_total", 'outcome="dropped"') == 0
              and metric(st, "valerie_trace_spans_total", 'outcome="exported"') == 0,
              "tracing off: the span counters are exported at 0")
        s, _, det = st.json("GET", "/health/detailed")
        check(det["dependencies"]["trace_exporter"]["status"] == "disabled",
              "tracing off: /health/detailed says disabled")
    check(col.posts == [], "tracing off: nothing reaches a collector")
finally:
    col.stop()
    fake.stop()
done("test_traces")
