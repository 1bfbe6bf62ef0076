"""fake_mcp: a scriptable MCP server (Streamable HTTP, one endpoint /mcp) on loopback, for
what a real server cannot do on demand: answers as JSON or SSE (with or without a priming
event, with progress and list_changed notifications before the result), forgetting its
sessions (404, or the 400 some servers send), a chosen protocol version, paginated tool
lists, isError results, JSON-RPC errors, slow tools, failing tools, idempotent and
non-idempotent tools, oversized answers, sessions ended by DELETE (or refused with 405,
or answered late); and it counts every call.

Control (JSON): POST /_control/config {key: value} merges into the settings below,
POST /_control/forget drops every session, POST /_control/reset forgets everything,
GET /_control/stats returns the counters (`deletes`: the session ids DELETE ended or
was asked to end, in order).

Settings: sse (bool), priming (bool), notify ("progress" | "list_changed" | null: sent
before the result), version (answer to initialize; default: the one offered),
forget_status (404 or 400), page_size (tools per tools/list page), slow_seconds,
fail_first (how many calls of the flaky tools answer 503), big_bytes, extra_tools (a list
of names to add), schemas ({extra tool name: the inputSchema it lists, sent as given;
null: none}), annotations ({extra tool name: its annotations}; an extra tool named
flaky* fails as flaky does), delete_status (what DELETE answers: 200 ends the session, 405 says
clients may not), delete_seconds (how long DELETE waits before answering), stall ({method: seconds} to wait
before answering that method, initialize included: a server that hangs), ask (a list of
methods: with sse, the answer's stream sends these requests to the client first, flushed,
and waits up to ask_wait seconds for the client to POST its replies before it sends the
result; the replies are in the stats as `replies`: {id, result, error, session,
version}), resume (with sse, a number N: the answer's stream (initialize's excepted) is cut N times, as 2025-11-25
lets a server close the connection without ending the stream: the POST gets the priming
event (an id and `retry: resume_retry_ms`, none when that is null) and closes; each GET
with Last-Event-ID gets the next event and closes, the last one the rest; the GETs are in
the stats as `gets`: {last_event_id, session, version, after_ms (since the cut)})."""
import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULTS = {"sse": False, "priming": True, "notify": None, "version": None,
            "forget_status": 404, "page_size": 0, "slow_seconds": 5, "fail_first": 1,
            "big_bytes": 1000, "extra_tools": [], "schemas": {}, "delete_status": 200,
            "delete_seconds": 0, "stall": {}, "ask": [], "ask_wait": 5,
            "annotations": {}, "resume": 0, "resume_retry_ms": 300}
KNOWN_VERSIONS = ("2025-06-18", "2025-11-25")
LOCK = threading.Lock()
REPLIED = threading.Event()   # set at each reply the client POSTs
STATE = {}


def reset():
    with LOCK:
        STATE.clear()
        STATE.update(config=dict(DEFAULTS), sessions={}, next_session=1, calls={},
                     initialize=0, initialized=0, requests=[], bad_headers=[], deletes=[],
                     replies=[], gets=[], streams={}, next_stream=1)
    REPLIED.set()


reset()


def tool(name, description="", idempotent=None, schema=None):
    t = {"name": name, "description": description or f"the {name} tool",
         "inputSchema": schema or {"type": "object", "properties": {}}}
    if idempotent is not None:
        t["annotations"] = {"idempotentHint": idempotent}
    return t


BASE_TOOLS = [
    tool("echo", "Echoes the message", schema={"type": "object", "properties": {
        "message": {"type": "string"}}, "required": ["message"]}),
    tool("add", "Adds a and b", idempotent=True, schema={"type": "object", "properties": {
        "a": {"type": "number"}, "b": {"type": "number"}}}),
    tool("book", "Books a table (a side effect: never twice)", idempotent=False),
    tool("slow", "Answers after slow_seconds (not idempotent)"),
    tool("slow_idem", "Answers after slow_seconds (idempotent)", idempotent=True),
    tool("flaky", "503 for the first fail_first calls (not idempotent)"),
    tool("flaky_idem", "503 for the first fail_first calls (idempotent)", idempotent=True),
    tool("fail", "Answers isError with two texts"),
    tool("rpc_error", "Answers a JSON-RPC error"),
    tool("big", "Answers big_bytes of text"),
    tool("toggle", "Adds a tool and says the list changed"),
    tool("whoami", "Answers the tool name it was called as"),
]


def tools():
    with LOCK:
        extra = list(STATE["config"]["extra_tools"])
        schemas = dict(STATE["config"]["schemas"])
        annotations = dict(STATE["config"]["annotations"])
    out = []
    for n in extra:
        t = tool(n, f"extra tool {n}")
        if n in annotations:
            t["annotations"] = annotations[n]
        if n in schemas:
            if schemas[n] is None:
                del t["inputSchema"]
            else:
                t["inputSchema"] = schemas[n]
        out.append(t)
    return BASE_TOOLS + out


def count(name):
    with LOCK:
        STATE["calls"][name] = STATE["calls"].get(name, 0) + 1
        return STATE["calls"][name]


def text(t, is_error=False):
    r = {"content": [{"type": "text", "text": t}]}
    if is_error:
        r["isError"] = True
    return r


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("fake_mcp: " + fmt % args + "\n")

    def send(self, status, body=None, headers=None, ctype="application/json"):
        data = b"" if body is None else (body if isinstance(body, bytes) else
                                          json.dumps(body).encode())
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if data:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/_control/stats":
            with LOCK:
                self.send(200, {k: STATE[k] for k in ("calls", "initialize", "initialized",
                                                      "requests", "bad_headers", "deletes",
                                                      "replies", "gets")} |
                          {"sessions": list(STATE["sessions"])})
            return
        last = self.headers.get("Last-Event-ID")
        if self.path == "/mcp" and last is not None:
            self.resume_stream(last)
            return
        self.send(405, {"error": "GET streams are not offered"})

    def resume_stream(self, last):
        """A GET resuming a cut answer stream after event `last`."""
        sid = self.headers.get("Mcp-Session-Id")
        with LOCK:
            known = sid in STATE["sessions"]
            stream = next((st for st in STATE["streams"].values()
                           if any(i == last for i, _ in st["events"])), None)
            if known and stream is not None:
                STATE["gets"].append({"last_event_id": last, "session": sid,
                                      "version": self.headers.get("MCP-Protocol-Version"),
                                      "after_ms": int((time.monotonic() - stream["cut"]) * 1000)})
        if not known:
            self.send(404, {"jsonrpc": "2.0", "id": None, "error": {
                "code": -32001, "message": "Session not found"}})
            return
        if stream is None or "text/event-stream" not in self.headers.get("Accept", ""):
            self.send(400, {"error": "no such stream"})
            return
        k = [i for i, _ in stream["events"]].index(last)
        rest = stream["events"][k + 1:]
        with LOCK:
            cut = stream["cuts"] > 0 and len(rest) > 1
            if cut:
                stream["cuts"] -= 1
                rest = rest[:1]
        body = b"".join(e for _, e in rest)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        with LOCK:
            stream["cut"] = time.monotonic()

    def do_DELETE(self):
        """Ends the session named by Mcp-Session-Id (the spec: 200, or 405 when the server
        does not let clients end sessions; 404 for a session it does not know)."""
        if self.path != "/mcp":
            self.send(404, {"error": "not here"})
            return
        sid = self.headers.get("Mcp-Session-Id")
        with LOCK:
            cfg = dict(STATE["config"])
            STATE["deletes"].append(sid)
            known = sid in STATE["sessions"]
        time.sleep(cfg["delete_seconds"])
        if cfg["delete_status"] != 200:
            self.send(cfg["delete_status"], {"jsonrpc": "2.0", "id": None, "error": {
                "code": -32000, "message": "Method not allowed"}})
            return
        if not known:
            self.send(404, {"jsonrpc": "2.0", "id": None, "error": {
                "code": -32001, "message": "Session not found"}})
            return
        with LOCK:
            STATE["sessions"].pop(sid, None)
        self.send(200)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        if self.path.startswith("/_control/"):
            body = json.loads(raw or b"{}")
            if self.path == "/_control/config":
                with LOCK:
                    STATE["config"].update(body)
            elif self.path == "/_control/forget":
                with LOCK:
                    STATE["sessions"].clear()
            elif self.path == "/_control/reset":
                reset()
            self.send(200, {"ok": True})
            return
        if self.path != "/mcp":
            self.send(404, {"error": "not here"})
            return
        accept = self.headers.get("Accept", "")
        if "application/json" not in accept or "text/event-stream" not in accept:
            self.send(406, {"jsonrpc": "2.0", "id": None,
                            "error": {"code": -32000, "message": "Not Acceptable"}})
            return
        try:
            msg = json.loads(raw)
        except ValueError:
            self.send(400, {"jsonrpc": "2.0", "id": None,
                            "error": {"code": -32700, "message": "Parse error"}})
            return
        method = msg.get("method")
        if method is None and "id" in msg and ("result" in msg or "error" in msg):
            self.reply_from_client(msg)
            return
        with LOCK:
            STATE["requests"].append(method)
            cfg = dict(STATE["config"])
        if isinstance(method, str) and cfg["stall"].get(method):
            time.sleep(cfg["stall"][method])
        if method == "initialize":
            self.initialize(msg, cfg)
            return
        sid = self.headers.get("Mcp-Session-Id")
        with LOCK:
            version = STATE["sessions"].get(sid)
        if sid is None:
            self.send(400, {"jsonrpc": "2.0", "id": None,
                            "error": {"code": -32000, "message": "Bad Request: no session"}})
            return
        if version is None:
            self.send(cfg["forget_status"], {"jsonrpc": "2.0", "id": None, "error": {
                "code": -32001, "message": "Session not found"}})
            return
        if self.headers.get("MCP-Protocol-Version") != version:
            with LOCK:
                STATE["bad_headers"].append(self.headers.get("MCP-Protocol-Version"))
            self.send(400, {"jsonrpc": "2.0", "id": None, "error": {
                "code": -32000, "message": "Bad MCP-Protocol-Version header"}})
            return
        if "id" not in msg:
            if method == "notifications/initialized":
                with LOCK:
                    STATE["initialized"] += 1
            self.send(202)
            return
        self.rpc(msg, cfg, version)

    def reply_from_client(self, msg):
        """The client's reply to a request of ours: 202, as the spec says, when it comes
        with a session this server knows."""
        sid = self.headers.get("Mcp-Session-Id")
        with LOCK:
            known = sid in STATE["sessions"]
            if known:
                STATE["replies"].append({"id": msg["id"], "result": msg.get("result"),
                                         "error": msg.get("error"), "session": sid,
                                         "version": self.headers.get("MCP-Protocol-Version")})
        REPLIED.set()
        if not known:
            self.send(404, {"jsonrpc": "2.0", "id": None, "error": {
                "code": -32001, "message": "Session not found"}})
            return
        self.send(202)

    def ask_and_wait(self, cfg):
        """Streams requests of cfg["ask"] to the client (the headers already sent) and
        waits until it replied to each of them, or ask_wait seconds."""
        ids = []
        for i, m in enumerate(cfg["ask"]):
            rid = f"srv-{i}" if i % 2 == 0 else 1000 + i   # string and integer ids
            ids.append(rid)
            params = {"messages": [], "maxTokens": 10} if m == "sampling/createMessage" else {}
            self.wfile.write(b"event: message\ndata: " + json.dumps(
                {"jsonrpc": "2.0", "id": rid, "method": m, "params": params}).encode() + b"\n\n")
        self.wfile.flush()
        end = time.monotonic() + cfg["ask_wait"]
        while time.monotonic() < end:
            with LOCK:
                got = {json.dumps(r["id"]) for r in STATE["replies"]}
                REPLIED.clear()
            if all(json.dumps(i) in got for i in ids):
                return
            REPLIED.wait(0.05)

    def initialize(self, msg, cfg):
        offered = msg.get("params", {}).get("protocolVersion")
        version = cfg["version"] or (offered if offered in KNOWN_VERSIONS else "2025-06-18")
        with LOCK:
            sid = f"fake-session-{STATE['next_session']}"
            STATE["next_session"] += 1
            STATE["sessions"][sid] = version
            STATE["initialize"] += 1
        self.answer(msg["id"], {"protocolVersion": version,
                                "capabilities": {"tools": {"listChanged": True}},
                                "serverInfo": {"name": "fake_mcp", "version": "1"}},
                    cfg, version, {"Mcp-Session-Id": sid})

    def rpc(self, msg, cfg, version):
        method, rid, params = msg["method"], msg["id"], msg.get("params") or {}
        if method == "tools/list":
            all_tools = tools()
            size = cfg["page_size"] or len(all_tools)
            start = int((params.get("cursor") or "p0")[1:])
            result = {"tools": all_tools[start:start + size]}
            if start + size < len(all_tools):
                result["nextCursor"] = f"p{start + size}"
            self.answer(rid, result, cfg, version)
        elif method == "tools/call":
            self.call(rid, params.get("name"), params.get("arguments") or {}, cfg, version)
        else:
            self.answer(rid, None, cfg, version,
                        error={"code": -32601, "message": "Method not found"})

    def call(self, rid, name, args, cfg, version):
        n = count(name)
        notes = []
        if name == "echo":
            result = text(f"Echo: {args.get('message')}")
        elif name == "add":
            result = text(str(args.get("a", 0) + args.get("b", 0)))
        elif name == "book":
            result = text(f"booked #{n}")
        elif name in ("slow", "slow_idem"):
            time.sleep(cfg["slow_seconds"])
            result = text(f"{name} done #{n}")
        elif isinstance(name, str) and name.startswith("flaky"):
            if n <= cfg["fail_first"]:
                self.send(503, {"error": "overloaded"})
                return
            result = text(f"{name} ok after {n} calls")
        elif name == "fail":
            result = {"content": [{"type": "text", "text": "first problem"},
                                  {"type": "text", "text": "second problem"}], "isError": True}
            if isinstance(args, dict) and isinstance(args.get("message"), str):
                # as real tools do: the error quotes what it was sent
                result["content"].append({"type": "text", "text": "you sent: " + args["message"]})
        elif name == "rpc_error":
            self.answer(rid, None, cfg, version, error={"code": -32000, "message": "boom"})
            return
        elif name == "big":
            result = text("x" * cfg["big_bytes"])
        elif name == "toggle":
            with LOCK:
                STATE["config"]["extra_tools"] = STATE["config"]["extra_tools"] + ["added_later"]
            notes.append({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
            result = text("toggled")
        elif name in [t["name"] for t in tools()]:
            result = text(f"called {name}")
        else:
            result = text(f"Tool {name} not found", is_error=True)
        self.answer(rid, result, cfg, version, notes=notes)

    def answer(self, rid, result, cfg, version, headers=None, error=None, notes=()):
        resp = {"jsonrpc": "2.0", "id": rid}
        if error is not None:
            resp["error"] = error
        else:
            resp["result"] = result
        notes = list(notes)
        if cfg["notify"] == "progress":
            notes.insert(0, {"jsonrpc": "2.0", "method": "notifications/progress",
                             "params": {"progressToken": 1, "progress": 1, "total": 2}})
        elif cfg["notify"] == "list_changed":
            notes.insert(0, {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        if not cfg["sse"]:
            self.send(200, resp, headers)
            return
        if cfg["ask"] and error is None and not (isinstance(result, dict) and
                                                 "protocolVersion" in result):
            # streamed as it goes, the requests first; the connection closes at the end
            self.send_response(200)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if cfg["priming"]:
                self.wfile.write(b"id: prime-1\ndata: \n\n")
            self.ask_and_wait(cfg)
            for m in notes:
                self.wfile.write(b"event: message\ndata: " + json.dumps(m).encode() + b"\n\n")
            self.wfile.write(b"event: message\ndata: " + json.dumps(resp).encode() + b"\n\n")
            self.wfile.flush()
            return
        if cfg["resume"] and not (isinstance(result, dict) and "protocolVersion" in result):
            with LOCK:
                n = STATE["next_stream"]
                STATE["next_stream"] += 1
            retry = b"" if cfg["resume_retry_ms"] is None else \
                b"retry: %d\n" % cfg["resume_retry_ms"]
            events = [(f"s{n}-0", b"id: s%d-0\n" % n + retry + b"data: \n\n")]
            for k, m in enumerate([{"jsonrpc": "2.0", "method": "notifications/progress",
                                    "params": {"progressToken": 1, "progress": 1}}] +
                                  list(notes) + [resp]):
                events.append((f"s{n}-{k + 1}", b"event: message\nid: s%d-%d\ndata: " %
                               (n, k + 1) + json.dumps(m).encode() + b"\n\n"))
            with LOCK:
                STATE["streams"][n] = {"events": events, "cuts": cfg["resume"] - 1,
                                       "cut": time.monotonic()}
            self.send(200, events[0][1], headers, ctype="text/event-stream")
            with LOCK:
                STATE["streams"][n]["cut"] = time.monotonic()
            return
        events = []
        if cfg["priming"]:
            events.append(b"id: prime-1\ndata: \n\n")
        # A request from the server the client never asked for: to be skipped.
        events.append(b"event: message\ndata: " + json.dumps(
            {"jsonrpc": "2.0", "id": 999, "method": "ping"}).encode() + b"\n\n")
        for m in notes:
            events.append(b"event: message\nid: n\ndata: " + json.dumps(m).encode() + b"\n\n")
        # Split the answer over two data lines (the parser joins them with a newline).
        body = json.dumps(resp, indent=1).encode()
        cut = body.index(b"\n")
        events.append(b"event: message\ndata: " + body[:cut] + b"\ndata: " + body[cut + 1:]
                      .replace(b"\n", b" ") + b"\n\n")
        data = b"".join(events)
        self.send(200, data, headers, ctype="text/event-stream")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    a = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(srv.server_address[1]))
        os.rename(tmp, a.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
