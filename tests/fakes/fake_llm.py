#!/usr/bin/env python3
"""fake_llm: a fake LLM upstream for Valerie's tests (Python 3 standard library only).

Speaks the OpenAI chat completions wire format (POST .../chat/completions, GET
.../models) and the Anthropic Messages format (POST .../v1/messages), non-streaming and
streaming (SSE), with tools, over HTTP or HTTPS, on loopback. Answers are deterministic
("echo: " + the last user message). It fails on request, per call, by the model name or
by a plan set through a small control API (/_control/...), and it counts what it saw:
calls, outcomes, calls in flight, client disconnects. See tests/fakes/README.md.

    python3 tests/fakes/fake_llm.py --port 0 --port-file /tmp/port \\
        [--host 127.0.0.1] [--tls-cert CERT --tls-key KEY] [--delay-ms N] \\
        [--token-delay-ms N] [--seed N] [--openai-key sk-test] [--anthropic-key ak-test]
"""
import argparse
import base64
import calendar
import json
import os
import random
import re
import resource
import select
import signal
import socket
import ssl
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 8 * 1024 * 1024          # request bodies above this get 413
MAX_LOGGED_BODY = 256 * 1024        # bodies above this are not kept in the request log
REQUEST_LOG = 50                    # requests kept for /_control/stats
MAX_PLAN = 100000                   # entries in a "next" plan
DEFAULT_RETRY_AFTER = 1
DEFAULT_SLOW_MS = 5000
DEFAULT_STALL_MS = 60000
DEFAULT_AFTER_CHUNKS = 2

NAMED_MODES = (
    "ok", "fail-429", "fail-500", "fail-529", "slow-first-byte", "stall-mid-stream",
    "cut-mid-stream", "malformed-json", "oversized", "html-error", "empty-reply",
    "truncated-json", "error-event-mid-stream", "silent", "cut-after-end", "hang-after-end",
)
FAIL_RE = re.compile(r"^fail-([45][0-9][0-9])$")
DATA_URL_RE = re.compile(r"data:image/[a-z.+-]+;base64,[A-Za-z0-9+/]+={0,2}$")
PDF_URL_RE = re.compile(r"data:application/pdf;base64,(?:[A-Za-z0-9+/]{4})*"
                        r"(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$")
B64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|"
                    r"[A-Za-z0-9+/]{4})$")
TOOL_RE = re.compile(r"\bcall\s+([A-Za-z0-9_.\-]{1,128})")
PIECE_RE = re.compile(r"\S+\s*|\s+")
ENTRY_KEYS = {"mode", "retry_after", "retry_after_ms", "retry_after_date", "retry_after_form",
              "delay_ms", "stall_ms", "after_chunks", "token_delay_ms", "stop_reason", "compat_stream", "message",
              "error_type", "usage_start", "usage_delta"}

OPT = None       # parsed command line
STATE = None     # the shared counters and plan


def valid_mode(m):
    return isinstance(m, str) and (m in NAMED_MODES or bool(FAIL_RE.match(m)))


def model_mode(model):
    """The failure mode a model name asks for ('ok' for any other name). A prefix
    ending in '/' is allowed: 'openai/fail-429'."""
    if not isinstance(model, str):
        return "ok"
    name = model.rsplit("/", 1)[-1]
    return name if valid_mode(name) else "ok"


def now_ms():
    return int(time.time() * 1000)


def rand_id(n=24):
    return os.urandom(n // 2 + 1).hex()[:n]


def dumps(doc):
    """Raw UTF-8, or with --ascii-json every non-ASCII character escaped (characters
    beyond the BMP as surrogate pairs), as Python servers using json.dumps' default send."""
    ascii_only = OPT is not None and OPT.ascii_json
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=ascii_only).encode()


class ClientGone(Exception):
    """The client closed its connection before the answer was fully sent."""


class Closed(Exception):
    """We closed the connection on purpose (cut, truncated, empty reply)."""


class TooLarge(Exception):
    pass


class BadRequest(Exception):
    def __init__(self, message, status=400):
        super().__init__(message)
        self.message = message
        self.status = status


# --------------------------------------------------------------------------------------
# Shared state: counters and the plan, behind one lock.
class State:
    def __init__(self, seed):
        self.lock = threading.Lock()
        self.seed = seed
        self.rng = random.Random(seed)
        self.reset_all()

    def reset_all(self):
        with self.lock:
            self.calls = 0
            self.by_path = {}
            self.by_outcome = {}
            self.by_model = {}
            self.in_flight = getattr(self, "in_flight", 0)
            self.max_in_flight = self.in_flight
            self.disconnects = 0
            self.connections = 0
            self.requests = []
            self.seq = 0
            self.rng = random.Random(self.seed)
            self.plan = self._empty_plan()

    @staticmethod
    def _empty_plan():
        return {"next": [], "fail_rate": 0.0, "fail": None, "delay_ms": None,
                "token_delay_ms": None, "match": None}

    def new_connection(self):
        with self.lock:
            self.connections += 1
            return self.connections

    def begin(self, path):
        with self.lock:
            self.calls += 1
            self.seq += 1
            self.by_path[path] = self.by_path.get(path, 0) + 1
            self.in_flight += 1
            if self.in_flight > self.max_in_flight:
                self.max_in_flight = self.in_flight
            return self.seq

    def end(self, outcome, record, disconnected):
        with self.lock:
            self.in_flight -= 1
            if outcome:
                self.by_outcome[outcome] = self.by_outcome.get(outcome, 0) + 1
            if disconnected:
                self.disconnects += 1
            if record is not None:
                record["outcome"] = outcome
                record["disconnected"] = disconnected
                record["ended_ms"] = now_ms()

    def set_mode(self, record, mode):
        with self.lock:
            record["mode"] = mode

    def log_request(self, record):
        with self.lock:
            self.requests.append(record)
            if len(self.requests) > REQUEST_LOG:
                del self.requests[:len(self.requests) - REQUEST_LOG]
            m = record.get("model")
            if isinstance(m, str):
                self.by_model[m] = self.by_model.get(m, 0) + 1

    def set_plan(self, doc):
        """Replaces the whole plan; raises ValueError on a bad document."""
        if not isinstance(doc, dict):
            raise ValueError("the plan must be a JSON object")
        unknown = set(doc) - {"next", "fail_rate", "fail_mode", "fail_options", "delay_ms",
                              "token_delay_ms", "match", "seed"}
        if unknown:
            raise ValueError(f"unknown plan keys: {sorted(unknown)}")
        plan = self._empty_plan()
        nxt = doc.get("next", [])
        if not isinstance(nxt, list) or len(nxt) > MAX_PLAN:
            raise ValueError(f"next must be a list of at most {MAX_PLAN} entries")
        plan["next"] = [norm_entry(e) for e in nxt]
        rate = doc.get("fail_rate", 0)
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate <= 1:
            raise ValueError("fail_rate must be a number from 0 to 1")
        plan["fail_rate"] = float(rate)
        if rate:
            fm = doc.get("fail_mode", "fail-500")
            fail = norm_entry(fm)
            opts = doc.get("fail_options", {})
            if not isinstance(opts, dict):
                raise ValueError("fail_options must be an object")
            fail.update(norm_entry(dict(opts, mode=fail["mode"])))
            plan["fail"] = fail
        for k in ("delay_ms", "token_delay_ms"):
            if doc.get(k) is not None:
                if not is_ms(doc[k]):
                    raise ValueError(f"{k} must be a non-negative integer")
                plan[k] = int(doc[k])
        match = doc.get("match")
        if match is not None:
            if not isinstance(match, dict) or set(match) - {"provider", "model", "path"}:
                raise ValueError("match may hold provider, model and path")
            plan["match"] = match
        seed = doc.get("seed", self.seed)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError("seed must be an integer")
        with self.lock:
            self.plan = plan
            self.rng = random.Random(seed)

    def choose(self, provider, model, path):
        """(mode, options) for one chat call: the next planned entry, else a random
        failure at fail_rate, else the mode the model name asks for."""
        with self.lock:
            plan = self.plan
            m = plan["match"]
            applies = m is None or (
                m.get("provider") in (None, provider) and m.get("model") in (None, model)
                and m.get("path") in (None, path))
            entry = None
            if applies:
                if plan["next"]:
                    entry = plan["next"].pop(0)
                elif plan["fail_rate"] and self.rng.random() < plan["fail_rate"]:
                    entry = dict(plan["fail"])
            delay = plan["delay_ms"] if applies else None
            tdelay = plan["token_delay_ms"] if applies else None
        if entry is None:
            entry = {"mode": model_mode(model)}
        if delay is None:
            delay = OPT.delay_ms
        if tdelay is None:
            tdelay = OPT.token_delay_ms
        entry.setdefault("token_delay_ms", tdelay)
        entry["_delay_ms"] = delay
        return entry["mode"], entry

    def snapshot(self, nreq=REQUEST_LOG):
        with self.lock:
            plan = dict(self.plan)
            plan["next_left"] = len(plan["next"])
            plan["next"] = plan["next"][:50]
            return {
                "calls": self.calls,
                "by_path": dict(self.by_path),
                "by_outcome": dict(self.by_outcome),
                "by_model": dict(self.by_model),
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "disconnects": self.disconnects,
                "connections": self.connections,
                "plan": plan,
                "requests": [dict(r) for r in self.requests[-nreq:]] if nreq > 0 else [],
            }


def is_ms(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def norm_entry(e):
    if isinstance(e, str):
        e = {"mode": e}
    if not isinstance(e, dict):
        raise ValueError("a plan entry is a mode name or an object with a mode")
    unknown = set(e) - ENTRY_KEYS
    if unknown:
        raise ValueError(f"unknown plan entry keys: {sorted(unknown)}")
    if not valid_mode(e.get("mode")):
        raise ValueError(f"unknown mode: {e.get('mode')!r}")
    if "message" in e and not isinstance(e["message"], str):
        raise ValueError("message must be a string")
    for k in ("delay_ms", "stall_ms", "after_chunks", "token_delay_ms", "retry_after_ms",
              "retry_after_date"):
        if k in e and not is_ms(e[k]):
            raise ValueError(f"{k} must be a non-negative integer")
    if e.get("retry_after_form", "imf") not in ("imf", "rfc850", "asctime"):
        raise ValueError("retry_after_form must be imf, rfc850 or asctime")
    if "retry_after" in e and e["retry_after"] is not None and not is_ms(e["retry_after"]):
        raise ValueError("retry_after must be a non-negative integer or null")
    for k in ("usage_start", "usage_delta"):
        if k in e and not isinstance(e[k], dict):
            raise ValueError(f"{k} must be an object")
    if "error_type" in e and not isinstance(e["error_type"], str):
        raise ValueError("error_type must be a string")
    if "stop_reason" in e and not isinstance(e["stop_reason"], str):
        raise ValueError("stop_reason must be a string")
    if "compat_stream" in e and not isinstance(e["compat_stream"], bool):
        raise ValueError("compat_stream must be true or false")
    return dict(e)


# --------------------------------------------------------------------------------------
# Reading requests: message text, tokens, tools.
def words(s):
    return len(s.split()) if isinstance(s, str) else 0


def block_text(content):
    """Text of a message content: a string, or a list of blocks/parts with 'text'."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for b in content:
            if isinstance(b, str):
                out.append(b)
            elif isinstance(b, dict):
                if isinstance(b.get("text"), str):
                    out.append(b["text"])
                elif b.get("type") == "tool_result":
                    out.append(block_text(b.get("content")))
        return " ".join(x for x in out if x)
    return ""


MEDIA_KINDS = (("image", ("image_url", "image")), ("file", ("file", "document")),
               ("audio clip", ("input_audio",)))


def images_seen(content):
    """' [2 images, 1 file, 1 audio clip]' for what a content carries besides text (OpenAI
    image_url, file and input_audio parts; Anthropic image and document blocks), so that a
    client sees what the model was shown; '' for none."""
    if not isinstance(content, list):
        return ""
    said = []
    for name, types in MEDIA_KINDS:
        n = sum(1 for b in content if isinstance(b, dict) and b.get("type") in types)
        if n:
            said.append("%d %s%s" % (n, name, "" if n == 1 else "s"))
    return " [%s]" % ", ".join(said) if said else ""


def tool_names_openai(tools):
    names = []
    for t in tools or []:
        if isinstance(t, dict) and isinstance(t.get("function"), dict):
            n = t["function"].get("name")
            if isinstance(n, str):
                names.append(n)
    return names


def tool_names_anthropic(tools):
    return [t["name"] for t in tools or [] if isinstance(t, dict) and isinstance(t.get("name"), str)]


def find_tool_calls(text, names):
    """[(name, raw JSON text or None), ...] for each 'call <name> [{json}]' in text whose
    name is one of the request's tools, in order; [] when there is none. A 'call <name>'
    inside the JSON of an earlier call does not count. Broken JSON runs to the next call
    (or to the end of the text)."""
    if not names or not isinstance(text, str):
        return []
    found = []
    pos = 0
    while True:
        m = TOOL_RE.search(text, pos)
        if m is None:
            break
        pos = m.end()
        name = m.group(1)
        if name not in names:
            # a name followed by punctuation: 'call get_time.' asks for get_time
            trimmed = name.rstrip(".-")
            if trimmed in names:
                name = trimmed
            else:
                continue
        rest = text[m.end():].lstrip()
        start = len(text) - len(rest)
        raw = None
        if rest.startswith("{"):
            try:
                _, end = json.JSONDecoder().raw_decode(rest)
                raw = rest[:end]
                pos = start + end
            except ValueError:
                # a model may emit broken JSON: hand it on as it is
                nxt = find_tool_calls_start(text, start + 1, names)
                raw = rest if nxt is None else text[start:nxt].rstrip()
                pos = len(text) if nxt is None else nxt
        found.append((name, raw))
    return found


def find_tool_calls_start(text, pos, names):
    """Where the next 'call <name>' with a known name starts at or after pos, or None."""
    for m in TOOL_RE.finditer(text, pos):
        if m.group(1) in names or m.group(1).rstrip(".-") in names:
            return m.start()
    return None


def find_tool_call(text, names):
    """The first of find_tool_calls(text, names), or None."""
    calls = find_tool_calls(text, names)
    return calls[0] if calls else None


def split_pieces(text):
    """One piece per word with its trailing whitespace; the pieces join to text."""
    return PIECE_RE.findall(text) or [""]


def split_fragments(s, n=3):
    """s in up to n non-empty fragments (at least one)."""
    if len(s) <= 1:
        return [s]
    size = max(1, -(-len(s) // n))
    return [s[i:i + size] for i in range(0, len(s), size)]


def tool_said(results):
    """The answer after tool results: 'tool said: ' + each result, ' | ' between them."""
    return "tool said: " + " | ".join(results)


def openai_reply(body):
    """What the fake model answers to an OpenAI request: a dict with kind text/tool. A tool
    answer has "calls" ([{name, arguments, id}], one per 'call <name>' asked for); the
    first call's fields are also at the top level."""
    msgs = body["messages"]
    prompt = sum(words(block_text(m.get("content"))) for m in msgs)
    last = msgs[-1]
    if last.get("role") == "tool":
        # the results of the last step: the tool messages at the end, in order
        n = len(msgs)
        while n > 0 and msgs[n - 1].get("role") == "tool":
            n -= 1
        text = tool_said([block_text(m.get("content")) for m in msgs[n:]])
        return {"kind": "text", "text": text, "prompt": prompt, "completion": words(text)}
    user = next((m for m in reversed(msgs) if m.get("role") == "user"), None)
    utext = block_text(user.get("content")) if user else ""
    if last.get("role") == "user":
        found = find_tool_calls(utext, tool_names_openai(body.get("tools")))
        if found:
            calls = [{"name": name, "arguments": raw if raw is not None else "{}",
                      "id": "call_" + rand_id(24)} for name, raw in found]
            return dict(calls[0], kind="tool", calls=calls, prompt=prompt,
                        completion=sum(1 + words(c["arguments"]) for c in calls))
    text = "echo: " + utext + images_seen(user.get("content") if user else None)
    return {"kind": "text", "text": text, "prompt": prompt, "completion": words(text)}


def anthropic_reply(body):
    """As openai_reply, for the Anthropic Messages format: a tool answer's "calls" are
    [{name, input, input_json, id}]."""
    msgs = body["messages"]
    prompt = words(block_text(body.get("system"))) + sum(
        words(block_text(m.get("content"))) for m in msgs)
    last = msgs[-1]
    content = last.get("content")
    if last.get("role") == "user" and isinstance(content, list):
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            text = tool_said([block_text(b.get("content")) for b in results])
            return {"kind": "text", "text": text, "prompt": prompt, "completion": words(text)}
    user = next((m for m in reversed(msgs) if m.get("role") == "user"), None)
    utext = block_text(user.get("content")) if user else ""
    if last.get("role") == "user":
        found = find_tool_calls(utext, tool_names_anthropic(body.get("tools")))
        if found:
            calls = []
            for name, raw in found:
                inp = {}
                if raw is not None:
                    try:
                        v = json.loads(raw)
                        inp = v if isinstance(v, dict) else {}
                    except ValueError:
                        inp = {}
                calls.append({"name": name, "input": inp,
                              "input_json": json.dumps(inp, separators=(",", ":")),
                              "id": "toolu_" + rand_id(24)})
            return dict(calls[0], kind="tool", calls=calls, prompt=prompt,
                        completion=sum(1 + words(c["input_json"]) for c in calls))
    text = "echo: " + utext + images_seen(user.get("content") if user else None)
    return {"kind": "text", "text": text, "prompt": prompt, "completion": words(text)}


def validate_openai_parts(i, m):
    """A content given as parts: text everywhere, image_url only in a user message, with a
    url that is an http(s) URL or a base64 data URL, as OpenAI checks them."""
    c = m.get("content")
    if not isinstance(c, list):
        return
    for j, part in enumerate(c):
        if not isinstance(part, dict) or part.get("type") not in ("text", "image_url", "file",
                                                                  "input_audio"):
            raise BadRequest(f"Invalid value for 'messages[{i}].content[{j}].type'.")
        if part["type"] in ("file", "input_audio") and m.get("role") != "user":
            raise BadRequest(f"Invalid 'messages[{i}]'. Files and audio are only allowed for "
                             "messages with role 'user'.")
        if part["type"] == "file":
            f = part.get("file")
            if not isinstance(f, dict) or ("file_data" in f) == ("file_id" in f):
                raise BadRequest(f"Invalid 'messages[{i}].content[{j}].file': expected one of "
                                 "'file_data' or 'file_id'.")
            if "file_data" in f and not (isinstance(f["file_data"], str)
                                         and PDF_URL_RE.match(f["file_data"])):
                raise BadRequest(f"Invalid 'messages[{i}].content[{j}].file.file_data'. "
                                 "Expected a base64-encoded data URL with a PDF MIME type.")
            if set(f) - {"file_data", "file_id", "filename"}:
                raise BadRequest(f"Unrecognized request argument supplied: "
                                 f"messages[{i}].content[{j}].file.{sorted(set(f))[0]}")
        if part["type"] == "input_audio":
            a = part.get("input_audio")
            if not isinstance(a, dict) or a.get("format") not in ("wav", "mp3") or not (
                    isinstance(a.get("data"), str) and B64_RE.match(a["data"])):
                raise BadRequest(f"Invalid 'messages[{i}].content[{j}].input_audio': expected "
                                 "base64 'data' and a 'format' of 'wav' or 'mp3'.")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise BadRequest(f"Missing required parameter: 'messages[{i}].content[{j}].text'.")
        if part["type"] == "image_url":
            if m.get("role") != "user":
                raise BadRequest(f"Invalid 'messages[{i}]'. Image URLs are only allowed for "
                                 "messages with role 'user', but this message with role "
                                 f"'{m.get('role')}' contains an image URL.")
            iu = part.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else None
            if not isinstance(url, str) or not (
                    url.startswith(("http://", "https://")) or DATA_URL_RE.match(url)):
                raise BadRequest(f"Invalid 'messages[{i}].content[{j}].image_url.url'. "
                                 "Expected a base64-encoded data URL with an image MIME type "
                                 "(e.g. 'data:image/png;base64,...'), but got an invalid "
                                 "value.")
            if isinstance(iu, dict) and iu.get("detail") not in (None, "auto", "low", "high"):
                raise BadRequest(f"Invalid value: '{iu.get('detail')}'. Supported values are: "
                                 "'auto', 'low', and 'high'.")


def validate_anthropic_image(i, j, role, b):
    """An image block as the Messages API checks it: in a user message, with a base64
    source of a supported media type or a url source."""
    if role != "user":
        raise BadRequest(f"messages.{i}.content.{j}: image blocks are only allowed in user "
                         "messages")
    src = b.get("source")
    if not isinstance(src, dict) or src.get("type") not in ("base64", "url"):
        raise BadRequest(f"messages.{i}.content.{j}.image.source: Input tag does not match "
                         "any of the expected tags: 'base64', 'url'")
    if src["type"] == "base64":
        if src.get("media_type") not in ("image/jpeg", "image/png", "image/gif", "image/webp"):
            raise BadRequest(f"messages.{i}.content.{j}.image.source.base64.media_type: Input "
                             "should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'")
        data = src.get("data")
        try:
            ok = isinstance(data, str) and len(data) > 0 and base64.b64decode(
                data, validate=True) is not None
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise BadRequest(f"messages.{i}.content.{j}.image.source.base64.data: The image "
                             "data is not valid base64")
    elif not isinstance(src.get("url"), str) or not src["url"].startswith(("http://",
                                                                         "https://")):
        raise BadRequest(f"messages.{i}.content.{j}.image.source.url.url: Input should be a "
                         "valid URL")


def validate_anthropic_document(i, j, role, b):
    """A document block as the Messages API checks it: in a user message, a base64 PDF
    source (the one kind Valerie sends), an optional string title, nothing else."""
    if role != "user":
        raise BadRequest(f"messages.{i}.content.{j}: document blocks are only allowed in user "
                         "messages")
    src = b.get("source")
    if not isinstance(src, dict) or src.get("type") != "base64" or \
            src.get("media_type") != "application/pdf" or set(src) != {"type", "media_type",
                                                                       "data"}:
        raise BadRequest(f"messages.{i}.content.{j}.document.source: expected a base64 "
                         "source with media_type 'application/pdf'")
    if not (isinstance(src["data"], str) and B64_RE.match(src["data"])):
        raise BadRequest(f"messages.{i}.content.{j}.document.source.base64.data: The PDF "
                         "data is not valid base64")
    if "title" in b and not isinstance(b["title"], str):
        raise BadRequest(f"messages.{i}.content.{j}.document.title: Input should be a valid "
                         "string")
    if set(b) - {"type", "source", "title"}:
        raise BadRequest(f"messages.{i}.content.{j}.document: Extra inputs are not permitted")


def validate_openai(body):
    if not isinstance(body, dict):
        raise BadRequest("We could not parse the JSON body of your request.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("you must provide a model parameter")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("Invalid 'messages': empty array. Expected an array with minimum "
                         "length 1, but got an empty array instead.")
    if body.get("stream_options") is not None and not body.get("stream"):
        raise BadRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.")
    if body.get("tool_choice") is not None and not body.get("tools"):
        raise BadRequest("Invalid value for 'tool_choice': 'tool_choice' is only allowed when "
                         "'tools' are specified.")
    ids = set()
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in (
                "system", "developer", "user", "assistant", "tool"):
            raise BadRequest(f"Invalid value for 'messages[{i}].role'.")
        validate_openai_parts(i, m)
        if m.get("role") == "assistant":
            for tc in m.get("tool_calls") or []:
                if isinstance(tc, dict):
                    ids.add(tc.get("id"))
        if m.get("role") == "tool" and not OPT.lenient:
            if not isinstance(m.get("tool_call_id"), str):
                raise BadRequest(f"Missing parameter 'messages[{i}].tool_call_id'.")
            if m["tool_call_id"] not in ids:
                raise BadRequest("Invalid parameter: messages with role 'tool' must be a "
                                 "response to a preceeding message with 'tool_calls'.")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(
                isinstance(t, dict) and t.get("type") == "function"
                and isinstance(t.get("function"), dict)
                and isinstance(t["function"].get("name"), str) for t in tools):
            raise BadRequest("Invalid 'tools': each tool needs type 'function' and a "
                             "function.name.")


def other_vendor(provider, model):
    """A model of the other vendor is unknown here, as each API answers it: OpenAI 404
    model_not_found for a claude-* model, Anthropic 404 not_found_error for a gpt-* one."""
    if provider == "openai" and model.startswith("claude-"):
        raise BadRequest(f"The model `{model}` does not exist or you do not have access to it.",
                         404)
    if provider == "anthropic" and model.startswith(("gpt-", "o1", "o3", "o4")):
        raise BadRequest(f"model: {model}", 404)


def validate_anthropic(body):
    if not isinstance(body, dict):
        raise BadRequest("Invalid JSON body")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("model: Field required")
    mt = body.get("max_tokens")
    if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
        raise BadRequest("max_tokens: Field required")
    if "temperature" in body and "top_p" in body:
        # as the newer models (Sonnet 4.5, Haiku 4.5, Opus 4.1 and later) answer
        raise BadRequest("`temperature` and `top_p` cannot both be specified for this model. "
                         "Please use only one.")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("messages: at least one message is required")
    prev_tool_ids = set()
    tool_blocks = False
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise BadRequest(f"messages.{i}: Input should be a valid dictionary")
        role = m.get("role")
        if role == "system":
            raise BadRequest('messages: Unexpected role "system". The Messages API accepts a '
                             'top-level `system` parameter, not "system" as an input message role.')
        if role not in ("user", "assistant"):
            raise BadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        c = m.get("content")
        if not isinstance(c, (str, list)):
            raise BadRequest(f"messages.{i}.content: Input should be a valid string or list")
        ids = set()
        if isinstance(c, list):
            for j, b in enumerate(c):
                if not isinstance(b, dict) or not isinstance(b.get("type"), str):
                    raise BadRequest(f"messages.{i}.content.{j}: Input should be a valid block")
                if b["type"] == "tool_use":
                    ids.add(b.get("id"))
                if b["type"] == "image":
                    validate_anthropic_image(i, j, role, b)
                if b["type"] == "document":
                    validate_anthropic_document(i, j, role, b)
                tool_blocks = tool_blocks or b["type"] in ("tool_use", "tool_result")
                if (b["type"] == "tool_result" and not OPT.lenient
                        and b.get("tool_use_id") not in prev_tool_ids):
                    raise BadRequest(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        "`tool_result` blocks: {}. Each `tool_result` block must have a "
                        "corresponding `tool_use` block in the previous message."
                        .format(b.get("tool_use_id")))
        prev_tool_ids = ids if role == "assistant" else set()
    tools = body.get("tools")
    if tool_blocks and not tools:
        raise BadRequest("Requests which include `tool_use` or `tool_result` blocks must "
                         "define tools.")
    if tools is not None:
        if not isinstance(tools, list) or not all(
                isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools):
            raise BadRequest("tools: each tool needs a name")
        for i, t in enumerate(tools):
            if t.get("type") in (None, "custom") and not isinstance(t.get("input_schema"), dict):
                raise BadRequest(f"tools.{i}.custom.input_schema: Field required")


# --------------------------------------------------------------------------------------
# Error bodies, as each provider writes them.
OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory",
          "Country, region, or territory not supported"),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do "
          "not have access to it."),
    413: ("invalid_request_error", None, "Request too large."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. "
          "Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. "
          "Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the "
          "specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def openai_error(status, message=None, etype=None, code=None):
    t, c, m = OPENAI_ERRORS.get(status, ("server_error" if status >= 500
                                         else "invalid_request_error", None, "Error."))
    return {"error": {"message": message or m, "type": etype or t, "param": None,
                      "code": code if code is not None else c}}


def anthropic_error(status, message=None, etype=None):
    t, m = ANTHROPIC_ERRORS.get(status, ("api_error" if status >= 500
                                         else "invalid_request_error", "Error."))
    return {"type": "error", "error": {"type": etype or t, "message": message or m},
            "request_id": "req_" + rand_id(24)}


HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
            b"</body>\r\n</html>\r\n")
MALFORMED = b'{"id": "x", "choices": ['


# --------------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-llm/1.0"
    sys_version = ""
    timeout = 300                  # idle keep-alive connections are closed after this

    # ---- plumbing -------------------------------------------------------------------
    def send_error(self, code, message=None, explain=None):
        """Errors found by the HTTP parser itself (bad request line, headers too long)."""
        try:
            short, _ = self.responses.get(code, ("Error", ""))
        except (AttributeError, ValueError):
            short = "Error"
        body = dumps(openai_error(code, message or short))
        self.close_connection = True
        try:
            self.send_response_only(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except (OSError, ValueError):
            pass

    def handle_expect_100(self):
        """No '100 Continue' for a body above the cap: the 413 comes without it."""
        try:
            if int(self.headers.get("Content-Length", "0")) > MAX_BODY:
                return True
        except ValueError:
            pass
        return super().handle_expect_100()

    def setup(self):
        super().setup()
        self.conn_id = STATE.new_connection()
        self.is_tls = isinstance(self.connection, ssl.SSLSocket)

    def log_message(self, fmt, *args):
        if OPT.verbose:
            sys.stderr.write("fake_llm: %s %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def client_gone(self, timeout_s=0.0):
        """Waits up to timeout_s for the client to close its connection; True if it did.
        Event-driven (poll on the socket), so a close is seen at once."""
        sock = self.connection
        deadline = time.monotonic() + timeout_s
        p = select.poll()
        p.register(sock.fileno(), select.POLLIN | select.POLLPRI
                   | getattr(select, "POLLRDHUP", 0))
        while True:
            left = deadline - time.monotonic()
            try:
                ev = p.poll(int(left * 1000) + 1 if left > 0 else 0)
            except InterruptedError:
                continue
            if ev:
                if self._peer_closed():
                    return True
                # data from the client while we answer (pipelining): no close; sleep
                # the rest of the wait in 50 ms steps, still watching for a close
                while time.monotonic() < deadline:
                    time.sleep(min(0.05, max(0, deadline - time.monotonic())))
                    if self._peer_closed():
                        return True
                return False
            if time.monotonic() >= deadline:
                return False

    def _peer_closed(self):
        sock = self.connection
        try:
            if self.is_tls:
                raw = socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                if raw == b"":
                    return True
                # TLS bytes: maybe a close_notify alert; read them through TLS
                old = sock.gettimeout()
                sock.settimeout(0.0)
                try:
                    data = sock.recv(1)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    return False
                finally:
                    try:
                        sock.settimeout(old)
                    except OSError:
                        pass
                if data == b"":
                    return True
                self.close_connection = True  # a byte of a pipelined request is lost
                return False
            data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            return data == b""
        except (BlockingIOError, InterruptedError):
            return False
        except (OSError, ValueError):
            return True

    def wait(self, ms):
        """Sleeps ms, watching the client; raises ClientGone if it closes."""
        if ms and ms > 0:
            if self.client_gone(ms / 1000.0):
                raise ClientGone()

    def check_gone(self):
        if self.client_gone(0):
            raise ClientGone()

    def send(self, data):
        """Writes data, with any headers still held back in front of it: one write, so
        that Nagle's algorithm never holds a small answer back."""
        if getattr(self, "_headers_buffer", None):
            data = b"".join(self._headers_buffer) + data
            self._headers_buffer = []
        try:
            self.wfile.write(data)
        except (OSError, ValueError) as e:
            raise ClientGone() from e

    def chunk(self, data):
        if not data:
            return
        if self.chunked:
            self.send(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.send(data)

    def end_chunks(self):
        if self.chunked:
            self.send(b"0\r\n\r\n")
        else:
            self.close_connection = True

    def hard_close(self):
        """Closes the TCP connection now: no terminating chunk, no TLS close_notify."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except (OSError, ValueError):
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass
        raise Closed()

    def linger(self, seconds=2.0, limit=64 * 1024 * 1024):
        """After an answer sent without reading the request body (413): stop writing,
        then read and drop what the client still sends (for a while, up to a limit), so
        that closing does not reset the connection before the client reads the answer."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            return
        end = time.monotonic() + seconds
        got = 0
        try:
            while got < limit and time.monotonic() < end:
                self.connection.settimeout(max(0.01, end - time.monotonic()))
                data = self.connection.recv(65536)
                if not data:
                    break
                got += len(data)
        except (OSError, ValueError):
            pass

    def head(self, status, ctype, length=None, extra=None, stream=False, flush=False):
        """The status line and headers; held back until the first body write unless
        flush (a stream's headers go out at once)."""
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        self.send_header("Server", self.server_version)
        self.send_header("Content-Type", ctype)
        self.chunked = False
        if stream:
            self.send_header("Cache-Control", "no-cache")
            if self.request_version == "HTTP/1.1":
                self.send_header("Transfer-Encoding", "chunked")
                self.chunked = True
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
        elif length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if self.close_connection and not stream:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")
        if flush:
            self.send(b"")

    def reply(self, status, body, ctype="application/json", extra=None):
        self.head(status, ctype, len(body), extra)
        self.send(body)

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ClientGone()
                try:
                    n = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    self.close_connection = True
                    raise BadRequest("bad chunked body")
                if n == 0:
                    while True:  # trailers
                        t = self.rfile.readline(1024)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    return b"".join(out)
                total += n
                if total > MAX_BODY:
                    self.close_connection = True
                    raise TooLarge()
                data = self.rfile.read(n + 2)
                if len(data) < n + 2:
                    raise ClientGone()
                out.append(data[:n])
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        try:
            n = int(cl)
        except ValueError:
            self.close_connection = True
            raise BadRequest("bad Content-Length")
        if n < 0:
            self.close_connection = True
            raise BadRequest("bad Content-Length")
        if n > MAX_BODY:
            self.close_connection = True
            raise TooLarge()
        data = self.rfile.read(n)
        if len(data) < n:
            raise ClientGone()
        return data

    # ---- routing --------------------------------------------------------------------
    def dispatch(self):
        self.chunked = False
        path = urlsplit(self.path).path
        if path.startswith("/_control/"):
            return self.control(path)
        if self.command == "POST" and path.endswith("/chat/completions"):
            kind, provider = "chat", "openai"
        elif self.command == "POST" and (path.endswith("/v1/messages") or path == "/messages"):
            kind, provider = "messages", "anthropic"
        elif self.command == "GET" and path.endswith("/models"):
            kind = "models"
            provider = ("anthropic" if self.headers.get("x-api-key") is not None
                        and self.headers.get("Authorization") is None else "openai")
        else:
            kind, provider = None, "openai"
        seq = STATE.begin(path)
        record = None
        outcome, gone = None, False
        try:
            try:
                raw = self.read_body() if self.command in ("POST", "PUT") else b""
            except TooLarge:
                raw = None
            record, body = self.record(seq, path, provider, raw)
            if raw is None:
                outcome = "too_large"
                self.close_connection = True
                self.error(provider, 413)
                return self.linger()
            if kind is None:
                outcome = "not_found"
                return self.error(provider, 404, "Unknown request URL: %s %s" % (
                    self.command, path), code="unknown_url")
            if not self.authorized(provider):
                outcome = "auth_error"
                return
            if kind == "models":
                outcome = "ok"
                return self.models(provider)
            try:
                if not isinstance(body, dict):
                    raise BadRequest("We could not parse the JSON body of your request."
                                     if provider == "openai" else
                                     "There was an error parsing the body of your request.")
                (validate_openai if provider == "openai" else validate_anthropic)(body)
                other_vendor(provider, body["model"])
            except BadRequest as e:
                outcome = "bad_request"
                return self.error(provider, e.status, e.message)
            mode, entry = STATE.choose(provider, body.get("model"), path)
            STATE.set_mode(record, mode)
            outcome = mode
            self.call(provider, body, mode, entry)
        except BadRequest as e:
            outcome = outcome or "bad_request"
            self.close_connection = True
            try:
                self.error(provider, e.status, e.message)
            except ClientGone:
                gone = True
        except ClientGone:
            gone = True
            self.close_connection = True
        except Closed:
            self.close_connection = True
        finally:
            STATE.end(outcome, record, gone)

    def record(self, seq, path, provider, raw):
        """Parses the body; logs the request. Returns (record, parsed body or None)."""
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        rec = {"seq": seq, "method": self.command, "path": self.path, "provider": provider,
               "conn": self.conn_id, "tls": self.is_tls,
               "headers": {k.lower(): v for k, v in self.headers.items()},
               "body": body if raw is None or len(raw) <= MAX_LOGGED_BODY
               else {"_omitted_bytes": len(raw)},
               "model": body.get("model") if isinstance(body, dict) else None,
               "stream": bool(body.get("stream")) if isinstance(body, dict) else False,
               "mode": None, "outcome": None, "disconnected": False,
               "started_ms": now_ms(), "ended_ms": None}
        STATE.log_request(rec)
        return rec, body

    def authorized(self, provider):
        if provider == "openai":
            auth = self.headers.get("Authorization") or ""
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
            if key == OPT.openai_key:
                return True
            if not key:
                msg = ("You didn't provide an API key. You need to provide your API key in an "
                       "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                       "YOUR_KEY).")
            else:
                shown = key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 7 else "***"
                msg = f"Incorrect API key provided: {shown}."
            self.error("openai", 401, msg, code="invalid_api_key")
            return False
        if self.headers.get("x-api-key") != OPT.anthropic_key:
            self.error("anthropic", 401, "invalid x-api-key", etype="authentication_error")
            return False
        if not self.headers.get("anthropic-version"):
            self.error("anthropic", 400, "anthropic-version: header is required",
                       etype="invalid_request_error")
            return False
        return True

    def req_headers(self, provider):
        rid = "req_" + rand_id(24)
        if provider == "openai":
            return {"x-request-id": rid, "openai-processing-ms": "1"}
        return {"request-id": rid}

    def error(self, provider, status, message=None, etype=None, code=None, extra=None):
        if provider == "openai":
            doc = openai_error(status, message, etype, code)
        else:
            doc = anthropic_error(status, message, etype)
        h = self.req_headers(provider)
        h.update(extra or {})
        self.reply(status, dumps(doc), extra=h)

    def models(self, provider):
        names = [m for m in OPT.models.split(",") if m]
        if provider == "openai":
            doc = {"object": "list", "data": [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake-llm"}
                for m in names]}
        else:
            doc = {"data": [{"type": "model", "id": m, "display_name": m,
                             "created_at": "2025-01-01T00:00:00Z"} for m in names],
                   "has_more": False, "first_id": names[0] if names else None,
                   "last_id": names[-1] if names else None}
        self.reply(200, dumps(doc), extra=self.req_headers(provider))

    # ---- one chat call ----------------------------------------------------------------
    def call(self, provider, body, mode, entry):
        stream = bool(body.get("stream"))
        if "delay_ms" in entry:         # this entry's own first-byte delay
            self.wait(entry["delay_ms"])
        elif mode == "slow-first-byte":
            self.wait(DEFAULT_SLOW_MS)
        else:                           # the plan's or the command line's delay
            self.wait(entry.get("_delay_ms") or 0)
        m = FAIL_RE.match(mode)
        if m:
            return self.fail(provider, int(m.group(1)), entry)
        if mode == "empty-reply":
            return self.hard_close()
        if mode == "html-error":
            return self.reply(502, HTML_502, "text/html; charset=utf-8")
        reply = (openai_reply if provider == "openai" else anthropic_reply)(body)
        if mode == "silent":
            # the model ends its turn without a word (Claude does: content [], end_turn)
            reply = {"kind": "text", "text": "", "prompt": reply["prompt"], "completion": 0}
        if "stop_reason" in entry:
            reply["stop"] = entry["stop_reason"]
        for k in ("usage_start", "usage_delta"):
            if k in entry:
                reply[k] = entry[k]
        reply["compat"] = bool(entry.get("compat_stream"))
        model = body["model"]
        if mode == "error-event-mid-stream" and not stream:
            # without a stream the same trouble is an error status
            return self.fail(provider, 500 if provider == "openai" else 529, entry)
        if mode == "malformed-json" and not stream:
            return self.reply(200, MALFORMED, extra=self.req_headers(provider))
        if mode == "truncated-json":
            full = dumps(self.full_body(provider, model, reply))
            self.head(200, "application/json", len(full), self.req_headers(provider))
            self.send(full[:max(1, len(full) // 2)])
            return self.hard_close()
        if mode == "oversized":
            return (self.oversized_stream if stream else self.oversized_body)(provider, model)
        if stream:
            return self.stream(provider, body, model, reply, mode, entry)
        full = dumps(self.full_body(provider, model, reply))
        if mode in ("stall-mid-stream", "cut-mid-stream"):
            self.head(200, "application/json", len(full), self.req_headers(provider))
            half = max(1, len(full) // 2)
            self.send(full[:half])
            if mode == "cut-mid-stream":
                return self.hard_close()
            self.wait(entry.get("stall_ms", DEFAULT_STALL_MS))
            return self.send(full[half:])
        self.reply(200, full, extra=self.req_headers(provider))

    def fail(self, provider, status, entry):
        extra = {}
        ra = entry.get("retry_after", DEFAULT_RETRY_AFTER if status == 429 else None)
        if ra is not None:
            extra["Retry-After"] = str(ra)
        if entry.get("retry_after_date") is not None:
            # RFC 9110 allows an HTTP-date too (proxies and CDNs send one)
            # in the form asked for: RFC 9110 says a recipient reads all three
            when = time.gmtime(time.time() + entry["retry_after_date"])
            form = entry.get("retry_after_form", "imf")
            if form == "imf":
                extra["Retry-After"] = formatdate(calendar.timegm(when), usegmt=True)
            elif form == "rfc850":
                extra["Retry-After"] = time.strftime("%A, %d-%b-%y %H:%M:%S GMT", when)
            else:
                extra["Retry-After"] = time.strftime("%a %b ", when) + \
                    f"{when.tm_mday:2d}" + time.strftime(" %H:%M:%S %Y", when)
        if entry.get("retry_after_ms") is not None:
            extra["retry-after-ms"] = str(entry["retry_after_ms"])
        if provider == "openai":
            if status == 529:   # OpenAI has no 529: its overload answer is a 503
                status = 503
            if status == 429:
                extra.update({"x-ratelimit-limit-requests": "60",
                              "x-ratelimit-remaining-requests": "0",
                              "x-ratelimit-reset-requests": "%ss" % (ra if ra is not None else 1)})
        elif status == 429:
            extra.update({"anthropic-ratelimit-requests-limit": "60",
                          "anthropic-ratelimit-requests-remaining": "0"})
        self.error(provider, status, entry.get("message"), extra=extra)

    def full_body(self, provider, model, r):
        if provider == "openai":
            if r["kind"] == "tool":
                msg = {"role": "assistant", "content": None, "tool_calls": [
                    {"id": c["id"], "type": "function",
                     "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in r["calls"]], "refusal": None}
                finish = "tool_calls"
            else:
                msg = {"role": "assistant", "content": r["text"], "refusal": None}
                finish = "stop"
            finish = r.get("stop", finish)
            return {"id": "chatcmpl-" + rand_id(29), "object": "chat.completion",
                    "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "message": msg, "logprobs": None,
                                 "finish_reason": finish}],
                    "usage": {"prompt_tokens": r["prompt"], "completion_tokens": r["completion"],
                              "total_tokens": r["prompt"] + r["completion"]},
                    "system_fingerprint": "fp_fake"}
        if r["kind"] == "tool":
            content = [{"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["input"]}
                       for c in r["calls"]]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": r["text"]}] if r["text"] else []
            stop = "end_turn"
        stop = r.get("stop", stop)
        return {"id": "msg_" + rand_id(24), "type": "message", "role": "assistant",
                "model": model, "content": content, "stop_reason": stop,
                "stop_sequence": None,
                "usage": {"input_tokens": r["prompt"], "output_tokens": r["completion"]}}

    # ---- streams ----------------------------------------------------------------------
    def openai_events(self, body, model, r):
        """(events, first content index, index of the finishing chunk)."""
        cid = "chatcmpl-" + rand_id(29)
        created = int(time.time())
        usage_on = bool((body.get("stream_options") or {}).get("include_usage"))

        compat = r.get("compat")

        def chunk(delta, finish=None):
            c = {"id": cid, "object": "chat.completion.chunk", "created": created,
                 "model": model, "system_fingerprint": "fp_fake",
                 "choices": [{"index": 0, "delta": delta, "logprobs": None,
                              "finish_reason": finish}]}
            if usage_on:
                c["usage"] = None
            if compat:
                # as some OpenAI-compatible servers stream: "error": null in every
                # chunk, tool call fragments without an index
                c["error"] = None
                for tc in delta.get("tool_calls", []):
                    tc.pop("index", None)
            return b"data: " + dumps(c) + b"\n\n"

        evs = []
        if r["kind"] == "tool":
            # as the API streams parallel calls: each call's head (index, id, name) in a
            # chunk of its own (the first with the role), then its argument fragments
            first = None
            for k, c in enumerate(r["calls"]):
                head = {"tool_calls": [{"index": k, "id": c["id"], "type": "function",
                                        "function": {"name": c["name"], "arguments": ""}}]}
                if k == 0:
                    head = {"role": "assistant", "content": None, **head, "refusal": None}
                evs.append(chunk(head))
                if first is None:
                    first = len(evs)
                for frag in split_fragments(c["arguments"]):
                    evs.append(chunk({"tool_calls": [{"index": k,
                                                      "function": {"arguments": frag}}]}))
            finish = "tool_calls"
        else:
            evs.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            first = len(evs)
            for piece in split_pieces(r["text"]):
                evs.append(chunk({"content": piece}))
            finish = "stop"
        finish = r.get("stop", finish)
        last = len(evs)
        evs.append(chunk({}, finish))
        if usage_on:
            u = {"id": cid, "object": "chat.completion.chunk", "created": created,
                 "model": model, "system_fingerprint": "fp_fake", "choices": [],
                 "usage": {"prompt_tokens": r["prompt"], "completion_tokens": r["completion"],
                           "total_tokens": r["prompt"] + r["completion"]}}
            evs.append(b"data: " + dumps(u) + b"\n\n")
        evs.append(b"data: [DONE]\n\n")
        return evs, first, last

    def anthropic_events(self, model, r):
        def ev(name, doc):
            return b"event: " + name.encode() + b"\ndata: " + dumps(doc) + b"\n\n"

        evs = [ev("message_start", {"type": "message_start", "message": {
            "id": "msg_" + rand_id(24), "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": dict({"input_tokens": r["prompt"], "output_tokens": 1},
                          **r.get("usage_start", {}))}})]
        if r["kind"] == "tool":
            # one tool_use content block per call, index k; the ping after the first start
            first = None
            for k, c in enumerate(r["calls"]):
                if k > 0:
                    evs.append(ev("content_block_stop", {"type": "content_block_stop",
                                                         "index": k - 1}))
                evs.append(ev("content_block_start", {"type": "content_block_start", "index": k,
                                                      "content_block": {"type": "tool_use",
                                                                        "id": c["id"],
                                                                        "name": c["name"],
                                                                        "input": {}}}))
                if k == 0:
                    evs.append(ev("ping", {"type": "ping"}))
                    first = len(evs)
                for frag in split_fragments(c["input_json"]):
                    evs.append(ev("content_block_delta", {
                        "type": "content_block_delta", "index": k,
                        "delta": {"type": "input_json_delta", "partial_json": frag}}))
            block = len(r["calls"]) - 1
            stop = "tool_use"
        elif not r["text"]:
            # a silent turn: no content block at all
            evs.append(ev("ping", {"type": "ping"}))
            first, block = len(evs), None
            stop = "end_turn"
        else:
            evs.append(ev("content_block_start", {"type": "content_block_start", "index": 0,
                                                  "content_block": {"type": "text", "text": ""}}))
            evs.append(ev("ping", {"type": "ping"}))
            first = len(evs)
            for piece in split_pieces(r["text"]):
                evs.append(ev("content_block_delta", {
                    "type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": piece}}))
            block = 0
            stop = "end_turn"
        stop = r.get("stop", stop)
        last = len(evs)
        if block is not None:
            evs.append(ev("content_block_stop", {"type": "content_block_stop",
                                                 "index": block}))
        evs.append(ev("message_delta", {"type": "message_delta",
                                        "delta": {"stop_reason": stop, "stop_sequence": None},
                                        "usage": dict({"output_tokens": r["completion"]},
                                                      **r.get("usage_delta", {}))}))
        evs.append(ev("message_stop", {"type": "message_stop"}))
        return evs, first, last

    def stream(self, provider, body, model, r, mode, entry):
        if provider == "openai":
            evs, first, last = self.openai_events(body, model, r)
        else:
            evs, first, last = self.anthropic_events(model, r)
        fail_at = None
        if mode in ("stall-mid-stream", "cut-mid-stream", "error-event-mid-stream",
                    "malformed-json"):
            fail_at = min(first + entry.get("after_chunks", DEFAULT_AFTER_CHUNKS), last)
        tdelay = entry.get("token_delay_ms") or 0
        self.head(200, "text/event-stream; charset=utf-8", extra=self.req_headers(provider),
                  stream=True, flush=True)
        for i, data in enumerate(evs):
            if i == fail_at:
                if mode == "stall-mid-stream":
                    self.wait(entry.get("stall_ms", DEFAULT_STALL_MS))
                elif mode == "cut-mid-stream":
                    return self.hard_close()
                elif mode == "error-event-mid-stream":
                    etype = entry.get("error_type")
                    if provider == "openai":
                        err = b"data: " + dumps(openai_error(500, etype=etype)) + b"\n\n"
                    else:
                        err = (b"event: error\ndata: " + dumps(
                            {"type": "error", "error": {"type": etype or "overloaded_error",
                                                        "message": "Overloaded"}}) + b"\n\n")
                    self.chunk(err)
                    self.end_chunks()
                    self.close_connection = True
                    return
                elif mode == "malformed-json":
                    bad = (b"data: " if provider == "openai"
                           else b"event: content_block_delta\ndata: ") + MALFORMED + b"\n\n"
                    self.chunk(bad)
                    self.end_chunks()
                    return
            if i > 0:
                if tdelay:
                    self.wait(tdelay)
                else:
                    self.check_gone()
            self.chunk(data)
        if mode == "cut-after-end":
            # the whole stream, [DONE] or message_stop included, but no terminating chunk
            return self.hard_close()
        if mode == "hang-after-end":
            # the whole stream, then the connection stays open without the terminating chunk
            self.wait(entry.get("stall_ms", DEFAULT_STALL_MS))
        self.end_chunks()

    def oversized_body(self, provider, model):
        total = OPT.oversized_bytes
        if provider == "openai":
            pre = dumps({"id": "chatcmpl-" + rand_id(29), "object": "chat.completion",
                         "created": int(time.time()), "model": model})[:-1] + \
                b',"choices":[{"index":0,"message":{"role":"assistant","content":"'
            post = (b'"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1,'
                    b'"completion_tokens":1,"total_tokens":2}}')
        else:
            pre = dumps({"id": "msg_" + rand_id(24), "type": "message", "role": "assistant",
                         "model": model})[:-1] + b',"content":[{"type":"text","text":"'
            post = (b'"}],"stop_reason":"end_turn","stop_sequence":null,'
                    b'"usage":{"input_tokens":1,"output_tokens":1}}')
        pad = max(0, total - len(pre) - len(post))
        self.head(200, "application/json", len(pre) + pad + len(post),
                  self.req_headers(provider))
        self.send(pre)
        block = b"x" * 65536
        left = pad
        while left > 0:
            n = min(left, len(block))
            self.send(block[:n])
            left -= n
        self.send(post)

    def oversized_stream(self, provider, model):
        total = OPT.oversized_bytes
        piece = "x" * 16384
        self.head(200, "text/event-stream; charset=utf-8", extra=self.req_headers(provider),
                  stream=True, flush=True)
        sent = 0
        if provider == "openai":
            cid = "chatcmpl-" + rand_id(29)
            created = int(time.time())

            def c(delta, finish=None):
                return b"data: " + dumps({"id": cid, "object": "chat.completion.chunk",
                                          "created": created, "model": model,
                                          "choices": [{"index": 0, "delta": delta,
                                                       "finish_reason": finish}]}) + b"\n\n"
            first = c({"role": "assistant", "content": ""})
            mid = c({"content": piece})
            tail = [c({}, "stop"), b"data: [DONE]\n\n"]
        else:
            def e(name, doc):
                return b"event: " + name.encode() + b"\ndata: " + dumps(doc) + b"\n\n"
            first = (e("message_start", {"type": "message_start", "message": {
                "id": "msg_" + rand_id(24), "type": "message", "role": "assistant",
                "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 1}}})
                + e("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {"type": "text", "text": ""}}))
            mid = e("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": piece}})
            tail = [e("content_block_stop", {"type": "content_block_stop", "index": 0}),
                    e("message_delta", {"type": "message_delta",
                                        "delta": {"stop_reason": "end_turn",
                                                  "stop_sequence": None},
                                        "usage": {"output_tokens": 1}}),
                    e("message_stop", {"type": "message_stop"})]
        self.chunk(first)
        sent += len(first)
        while sent < total:
            self.chunk(mid)
            sent += len(mid)
        for t in tail:
            self.chunk(t)
        self.end_chunks()

    # ---- control API ------------------------------------------------------------------
    def control(self, path):
        try:
            raw = self.read_body() if self.command in ("POST", "PUT") else b""
        except TooLarge:
            return self.reply(413, dumps({"error": "body too large"}))
        except (BadRequest, ClientGone):
            self.close_connection = True
            return
        try:
            if path == "/_control/stats" and self.command == "GET":
                q = parse_qs(urlsplit(self.path).query)
                n = REQUEST_LOG
                if "requests" in q:
                    try:
                        n = max(0, min(REQUEST_LOG, int(q["requests"][0])))
                    except ValueError:
                        pass
                return self.reply(200, dumps(STATE.snapshot(n)))
            if path == "/_control/reset" and self.command == "POST":
                STATE.reset_all()
                return self.reply(200, dumps({"ok": True}))
            if path == "/_control/plan" and self.command == "POST":
                try:
                    doc = json.loads(raw or b"{}")
                    STATE.set_plan(doc)
                except ValueError as e:
                    return self.reply(400, dumps({"error": str(e)}))
                return self.reply(200, dumps({"ok": True, "plan": STATE.snapshot(0)["plan"]}))
            if path == "/_control/plan" and self.command == "GET":
                return self.reply(200, dumps(STATE.snapshot(0)["plan"]))
            return self.reply(404, dumps({"error": "unknown control path"}))
        except ClientGone:
            self.close_connection = True


# --------------------------------------------------------------------------------------
class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 4096
    allow_reuse_address = True

    def __init__(self, addr, handler, tls_ctx):
        self.tls_ctx = tls_ctx
        super().__init__(addr, handler)

    def finish_request(self, request, client_address):
        # TLS is set up here, in the connection's own thread, so that a slow or broken
        # handshake never holds up the accept loop.
        sock = request
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self.tls_ctx is not None:
            try:
                request.settimeout(10)
                sock = self.tls_ctx.wrap_socket(request, server_side=True)
            except (OSError, ValueError):
                try:
                    request.close()
                except OSError:
                    pass
                return
        try:
            self.RequestHandlerClass(sock, client_address, self)
        finally:
            if sock is not request:
                try:
                    sock.close()
                except OSError:
                    pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ValueError, ClientGone, Closed)):
            return
        if OPT.verbose:
            super().handle_error(request, client_address)
        else:
            sys.stderr.write("fake_llm: error: %r\n" % (exc,))


# --------------------------------------------------------------------------------------
# For tests: start the fake as a child process and talk to its control API.
def make_cert(directory):
    """A self-signed EC certificate for 127.0.0.1/localhost made with openssl in
    directory; returns (cert path, key path). Reused when already there."""
    import subprocess
    cert, key = os.path.join(directory, "fake-cert.pem"), os.path.join(directory, "fake-key.pem")
    if not (os.path.exists(cert) and os.path.exists(key)):
        r = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
             "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("openssl could not make a certificate: " + r.stderr)
    return cert, key


class FakeProcess:
    """fake_llm.py running as a child process on a random loopback port.

        with FakeProcess(tmpdir, tls=True, args=["--delay-ms", "100"]) as fake:
            env["OPENAI_BASE_URL"] = fake.url + "/v1"
            fake.plan({"next": ["fail-429"]})
            ... fake.stats()["by_path"] ...

    With tls=True a certificate is made in directory (fake.cert: hand it to the client
    as its CA file). stop() signals the process by PID and returns (exit code, seconds)."""

    def __init__(self, directory, tls=False, args=(), timeout=30, python=None):
        import subprocess
        self.dir = directory
        self.tls = tls
        self.cert = self.key = None
        tag = "%d-%d" % (os.getpid(), int(time.monotonic() * 1e6))
        self.port_file = os.path.join(directory, "fake-llm-%s.port" % tag)
        self.log_path = os.path.join(directory, "fake-llm-%s.log" % tag)
        cmd = [python or sys.executable or "python3", os.path.abspath(__file__),
               "--port", "0", "--port-file", self.port_file] + [str(a) for a in args]
        if tls:
            self.cert, self.key = make_cert(directory)
            cmd += ["--tls-cert", self.cert, "--tls-key", self.key]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while not (os.path.exists(self.port_file) and os.path.getsize(self.port_file)):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                with open(self.log_path) as f:
                    raise RuntimeError("fake_llm did not start: " + f.read()[-2000:])
            time.sleep(0.02)
        with open(self.port_file) as f:
            self.port = int(f.read().strip())
        self.url = "%s://127.0.0.1:%d" % ("https" if tls else "http", self.port)

    @property
    def pid(self):
        return self.proc.pid

    def ssl_context(self):
        return ssl.create_default_context(cafile=self.cert) if self.tls else None

    def control(self, method, path, doc=None, timeout=30):
        """(status, parsed JSON) of a control call, e.g. ("GET", "/_control/stats")."""
        import http.client
        if self.tls:
            c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                            context=self.ssl_context())
        else:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            body = None if doc is None else json.dumps(doc)
            c.request(method, path, body=body,
                      headers={"Content-Type": "application/json"} if body else {})
            r = c.getresponse()
            raw = r.read()
            try:
                return r.status, json.loads(raw)
            except ValueError:
                return r.status, None
        finally:
            c.close()

    def stats(self, requests=REQUEST_LOG):
        return self.control("GET", "/_control/stats?requests=%d" % requests)[1]

    def plan(self, doc):
        s, d = self.control("POST", "/_control/plan", doc)
        if s != 200:
            raise ValueError("plan refused: %r" % (d,))
        return d

    def reset(self):
        return self.control("POST", "/_control/reset", {})[0] == 200

    def wait_for(self, cond, timeout=10.0, step=0.02):
        """Polls stats until cond(stats) is true; returns the last stats or None."""
        end = time.monotonic() + timeout
        while True:
            st = self.stats(0)
            if cond(st):
                return st
            if time.monotonic() > end:
                return None
            time.sleep(step)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        import subprocess
        t = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode, time.monotonic() - t

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def parse_args(argv):
    p = argparse.ArgumentParser(description="A fake OpenAI/Anthropic upstream for tests.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--port-file", help="the chosen port is written here once listening")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--delay-ms", type=int, default=0,
                   help="every chat answer waits this long first (a slow upstream)")
    p.add_argument("--token-delay-ms", type=int, default=0,
                   help="pause between the events of a stream")
    p.add_argument("--seed", type=int, default=0, help="seed of the random failures")
    p.add_argument("--openai-key", default="sk-test")
    p.add_argument("--anthropic-key", default="ak-test")
    p.add_argument("--oversized-bytes", type=int, default=20 * 1024 * 1024)
    p.add_argument("--models", default="gpt-4o-mini,claude-3-5-haiku-latest",
                   help="comma-separated names listed by GET /v1/models")
    p.add_argument("--lenient", action="store_true",
                   help="do not check that tool results answer an earlier tool call")
    p.add_argument("--verbose", action="store_true", help="log each request to stderr")
    p.add_argument("--ascii-json", action="store_true",
                   help="escape every non-ASCII character in answers (\\uXXXX, pairs beyond the BMP)")
    o = p.parse_args(argv)
    if bool(o.tls_cert) != bool(o.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if o.host not in ("127.0.0.1", "::1", "localhost") and not o.host.startswith("127."):
        p.error("loopback only: --host must be a loopback address")
    return o


def main(argv=None):
    global OPT, STATE
    OPT = parse_args(argv if argv is not None else sys.argv[1:])
    STATE = State(OPT.seed)
    threading.stack_size(512 * 1024)
    try:  # a thousand connections need more than the usual 1024 descriptors
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65536
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass
    ctx = None
    if OPT.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(OPT.tls_cert, OPT.tls_key)
    if ":" in OPT.host:
        Server.address_family = socket.AF_INET6
    srv = Server((OPT.host, OPT.port), Handler, ctx)
    port = srv.server_address[1]
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    t.start()
    if OPT.port_file:
        tmp = OPT.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, OPT.port_file)
    if OPT.verbose:
        sys.stderr.write("fake_llm: listening on %s:%d (%s)\n" % (
            OPT.host, port, "https" if ctx else "http"))
    while not stop.wait(1.0):
        if not t.is_alive():
            sys.stderr.write("fake_llm: the server loop died\n")
            sys.stderr.flush()
            os._exit(1)
    srv.shutdown()
    srv.server_close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # connection threads may be asleep in a stall: do not wait for them


if __name__ == "__main__":
    main()
