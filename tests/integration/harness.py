"""harness: starts and stops real Valerie stacks (nginx, spawn-fcgi, multiwatch) for the
integration tests, on random loopback ports in a temp dir, through scripts/run-local.sh,
the same launch steps the README uses. Also a minimal FastCGI client to talk to a worker
directly, and helpers that make a test fail loudly."""
import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

SRCDIR = os.environ.get("VALERIE_SRCDIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("VALERIE_BIN") or os.path.join(SRCDIR, "fcgi", "valerie")
RUN_LOCAL = os.path.join(SRCDIR, "scripts", "run-local.sh")

failures = []


def check(cond, what):
    """Records a failed expectation (the test goes on, then exits 1)."""
    if cond:
        print(f"ok    {what}")
    else:
        print(f"FAIL  {what}")
        failures.append(what)
    return cond


def done(name):
    if failures:
        print(f"{name}: {len(failures)} check(s) failed")
        sys.exit(1)
    print(f"{name}: all checks passed")
    sys.exit(0)


# --- temp dirs: every one a test makes is gone when it exits, passed or failed ------------
KEEP_TMP = os.environ.get("VALERIE_KEEP_TMP") == "1"
_temp_dirs = {}


def temp_dir(prefix):
    """A new directory under $TMPDIR (/tmp) named prefix + random. It is removed at the
    latest when the test exits, whether it passed or failed; VALERIE_KEEP_TMP=1 keeps it
    (and says where) for a look after a failure."""
    d = tempfile.mkdtemp(prefix=prefix)
    _temp_dirs[d] = os.getpid()
    return d


def remove_temp(d, what="files"):
    """Removes temp dir d and all in it now (with VALERIE_KEEP_TMP=1: says where it is
    instead). Call it after stopping the processes that use d."""
    _temp_dirs.pop(d, None)
    if KEEP_TMP:
        print(f"({what} kept in {d})")
    else:
        shutil.rmtree(d, ignore_errors=True)


@atexit.register
def _remove_temp_dirs():
    # NOTE: only in the process that made them: a forked child exiting must not take
    # its parent's files.
    for d, pid in list(_temp_dirs.items()):
        if pid == os.getpid() and os.path.exists(d):
            remove_temp(d)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """A running stack in its own temp dir; use as a context manager."""

    def __init__(self, workers=2, threads=4, env=None, keep=False):
        self.dir = temp_dir("valerie-it-")
        self.http_port = free_port()
        self.https_port = free_port()
        self.env = dict(os.environ)
        self.env.update({
            "VALERIE_BIN": BIN,
            "VALERIE_RUN_DIR": os.path.join(self.dir, "run"),
            "VALERIE_HTTP_PORT": str(self.http_port),
            "VALERIE_HTTPS_PORT": str(self.https_port),
            "VALERIE_WORKERS": str(workers),
            "VALERIE_THREADS": str(threads),
            "VALERIE_NGINX_RATE": "10000",
            "VALERIE_NGINX_BURST": "10000",
            # The application's own limit (per principal or address) raised the same way;
            # the rate-limit tests set their own.
            "RATE_LIMIT_REQUESTS_PER_MINUTE": "1000000",
            "RATE_LIMIT_BURST": "1000000",
            "VALERIE_DATA_DIR": os.path.join(self.dir, "data"),
        })
        self.env.update(env or {})
        self.run_dir = self.env["VALERIE_RUN_DIR"]
        self.keep = keep
        self.started = False

    def script(self, verb, timeout=60):
        return subprocess.run(["bash", RUN_LOCAL, verb], env=self.env, cwd=self.dir,
                              capture_output=True, text=True, timeout=timeout)

    def start(self):
        try:
            r = self.script("start")
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        if r.returncode != 0:
            print(r.stdout, r.stderr)
            self.stop()
            raise RuntimeError(f"run-local.sh start failed ({r.returncode})")
        self.started = True
        return r

    def stop(self):
        r = self.script("stop")
        if r.returncode != 0:
            print("stop:", r.stdout, r.stderr)
        return r

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        if not self.keep:
            remove_temp(self.dir, "stack files")

    # --- the pieces the tests look at ---
    def socket_path(self):
        return os.path.join(self.run_dir, "valerie.sock")

    def pool_pid(self):
        return read_pid(os.path.join(self.run_dir, "pool.pid"))

    def nginx_pid(self):
        return read_pid(os.path.join(self.run_dir, "nginx", "nginx.pid"))

    def worker_pids(self):
        return children(self.pool_pid())

    def worker_log(self):
        return read_text(os.path.join(self.run_dir, "logs", "valerie.log"))

    def access_log(self):
        return read_text(os.path.join(self.run_dir, "logs", "access.log"))

    def request(self, method, path, body=None, headers=None, https=False, timeout=30):
        """(status, headers dict lower-case, body bytes) through nginx."""
        if https:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            c = http.client.HTTPSConnection("127.0.0.1", self.https_port, timeout=timeout,
                                            context=ctx)
        else:
            c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def json(self, method, path, body=None, headers=None, https=False):
        s, h, data = self.request(method, path, body, headers, https)
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        return s, h, doc


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def children(pid):
    if pid is None:
        return []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def alive(pid):
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def wait_until(cond, timeout=10.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


def is_error_doc(doc, code=None):
    ok = (isinstance(doc, dict) and set(doc) == {"error"} and isinstance(doc["error"], dict)
          and isinstance(doc["error"].get("code"), str)
          and isinstance(doc["error"].get("message"), str))
    return ok and (code is None or doc["error"]["code"] == code)


def json_lines(text):
    """Parses every line; returns (docs, bad lines)."""
    docs, bad = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            docs.append(json.loads(line))
        except ValueError:
            bad.append(line)
    return docs, bad


# --- a minimal FastCGI client (FastCGI 1.0 records), to reach a worker without nginx ---
FCGI_BEGIN, FCGI_END, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT, FCGI_STDERR = 1, 3, 4, 5, 6, 7


def _record(rtype, content, req_id=1):
    return struct.pack(">BBHHBx", 1, rtype, req_id, len(content), 0) + content


def _nv(name, value):
    def ln(n):
        return struct.pack(">B", n) if n < 128 else struct.pack(">I", n | 0x80000000)
    n, v = name.encode(), value.encode()
    return ln(len(n)) + ln(len(v)) + n + v


class FcgiClient:
    """One FastCGI request over a unix socket (a path) or TCP ((host, port), from the
    address `source` when given); body may be sent in slow parts."""

    def __init__(self, sock_path, timeout=30, source=None):
        if isinstance(sock_path, tuple):
            self.s = socket.socket(socket.AF_INET6 if ":" in sock_path[0] else socket.AF_INET,
                                   socket.SOCK_STREAM)
            if source is not None:
                self.s.bind((source, 0))
        else:
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(sock_path)

    @staticmethod
    def head(method, uri, body_len=0, extra=None):
        """The bytes begin() sends: BEGIN_REQUEST, the PARAMS and their end record."""
        params = {"REQUEST_METHOD": method, "REQUEST_URI": uri, "REMOTE_ADDR": "127.0.0.1",
                  "REQUEST_ID": "fcgi-test", "SERVER_PROTOCOL": "HTTP/1.1"}
        if body_len:
            params["CONTENT_LENGTH"] = str(body_len)
            params["CONTENT_TYPE"] = "application/json"
        params.update(extra or {})
        data = b"".join(_nv(k, v) for k, v in params.items())
        return (_record(FCGI_BEGIN, struct.pack(">HB5x", 1, 0))
                + _record(FCGI_PARAMS, data) + _record(FCGI_PARAMS, b""))

    def begin(self, method, uri, body_len=0, extra=None):
        self.s.sendall(self.head(method, uri, body_len, extra))

    def send_body(self, chunk):
        self.s.sendall(_record(FCGI_STDIN, chunk))

    def end_body(self):
        self.s.sendall(_record(FCGI_STDIN, b""))

    def response(self, close=True):
        """Reads records until END_REQUEST; returns (status, headers, body). .ended
        says whether END_REQUEST came; close=False leaves the socket open."""
        out, buf = b"", b""
        self.ended = False
        while True:
            chunk = self.s.recv(65536)
            if not chunk:
                break
            buf += chunk
            ended = False
            while len(buf) >= 8:
                _, rtype, _, clen, plen = struct.unpack(">BBHHB", buf[:7])
                if len(buf) < 8 + clen + plen:
                    break
                content, buf = buf[8:8 + clen], buf[8 + clen + plen:]
                if rtype == FCGI_STDOUT:
                    out += content
                elif rtype == FCGI_END:
                    ended = True
            if ended:
                self.ended = True
                break
        if close:
            self.s.close()
        head, _, body = out.partition(b"\r\n\r\n")
        headers, status = {}, None
        for line in head.decode(errors="replace").split("\r\n"):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "status" in headers:
            status = int(headers["status"].split()[0])
        return status, headers, body

    def close(self):
        self.s.close()


def fcgi_get(sock_path, uri, method="GET"):
    c = FcgiClient(sock_path)
    c.begin(method, uri)
    c.end_body()
    return c.response()


def kill(pid, sig=signal.SIGTERM):
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, TypeError):
        return False


# --- chat helpers -----------------------------------------------------------------
def post_chat(st, body, headers=None, path="/api/v1/chat", timeout=60):
    """POSTs a chat body (a dict, or bytes sent as they are) as JSON through nginx;
    returns (status, headers, parsed JSON or None)."""
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    s, hh, raw = st.request("POST", path, body=data, headers=h, timeout=timeout)
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    return s, hh, doc


def text_part(t):
    """An OpenAI text content part."""
    return {"type": "text", "text": t}


def completion_text(doc):
    """The message content of a chat.completion document, or None."""
    try:
        return doc["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None


def stream_completion(st, body, headers=None, path="/v1/chat/completions"):
    """POSTs an OpenAI chat body with "stream": true; returns (status, the deltas' content
    joined, whether the stream ended with [DONE])."""
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    s, _, raw = st.request("POST", path, body=json.dumps(dict(body, stream=True)), headers=h,
                           timeout=60)
    datas = [e["data"] for e in SseParser().feed(raw, final=True)]
    text = ""
    for d in datas[:-1]:
        try:
            for c in json.loads(d).get("choices") or []:
                text += (c.get("delta") or {}).get("content") or ""
        except ValueError:
            pass
    return s, text, datas[-1:] == ["[DONE]"]


def access_lines(st, route=None):
    """The worker's access-log lines (msg "request"), optionally for one route."""
    docs, _ = json_lines(st.worker_log())
    return [d for d in docs if isinstance(d, dict) and d.get("msg") == "request"
            and (route is None or d.get("route") == route)]


def log_time(s):
    """Seconds since the epoch of a log line's "time" (2026-01-02T03:04:05.678Z)."""
    import calendar
    main, _, frac = s.rstrip("Z").partition(".")
    t = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return t + (float("0." + frac) if frac else 0.0)


def peak_overlap(intervals):
    """The largest number of (start, end) intervals that hold one instant together."""
    points = []
    for a, b in intervals:
        points.append((a, 1))
        points.append((b, -1))
    points.sort(key=lambda p: (p[0], p[1]))  # an end before a start at the same instant
    cur = peak = 0
    for _, d in points:
        cur += d
        peak = max(peak, cur)
    return peak


# --- Server-Sent Events (https://html.spec.whatwg.org/multipage/server-sent-events.html) ---
class SseParser:
    """Incremental event-stream parser: feed() bytes as they arrive, get the events
    completed so far as dicts {"event", "data", "id"}. Lines end in CRLF, LF or CR;
    ':' starts a comment; one space after the colon is dropped; several data lines
    are joined with LF; an event with no data is not dispatched."""

    def __init__(self):
        import codecs
        self._dec = codecs.getincrementaldecoder("utf-8")("replace")
        self._buf = ""
        self._event, self._data, self._id = "", [], None
        self.first = True

    def feed(self, data, final=False):
        text = self._dec.decode(data, final)
        if self.first and text:
            text = text.lstrip("\ufeff")
            self.first = False
        self._buf += text
        out = []
        while True:
            i = min((p for p in (self._buf.find("\r"), self._buf.find("\n")) if p >= 0),
                    default=-1)
            if i < 0:
                break
            if self._buf[i] == "\r" and i + 1 == len(self._buf) and not final:
                break  # a CR at the end: its LF may come in the next read
            line = self._buf[:i]
            skip = 2 if self._buf.startswith("\r\n", i) else 1
            self._buf = self._buf[i + skip:]
            ev = self._line(line)
            if ev is not None:
                out.append(ev)
        return out

    def _line(self, line):
        if line == "":
            if not self._data:
                self._event = ""
                return None
            ev = {"event": self._event or "message", "data": "\n".join(self._data),
                  "id": self._id}
            self._event, self._data = "", []
            return ev
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def pending(self):
        """True when bytes of an unfinished event are held (a stream cut mid-event)."""
        return bool(self._buf or self._data or self._event)


class SseStream:
    """A chat POST read incrementally through nginx: open() sends it and reads the
    headers; next_events() returns the events completed by the next read from the
    socket ([] at the end, with .ended set)."""

    def __init__(self, st, body, path="/api/v1/chat", headers=None, timeout=60):
        self.c = http.client.HTTPConnection("127.0.0.1", st.http_port, timeout=timeout)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        self.c.request("POST", path, body=json.dumps(body), headers=h)
        self.r = self.c.getresponse()
        self.status = self.r.status
        self.headers = {k.lower(): v for k, v in self.r.getheaders()}
        self.parser = SseParser()
        self.raw = b""
        self.ended = False
        self.events = []

    def next_events(self):
        while not self.ended:
            chunk = self.r.read1(65536)
            if not chunk:
                self.ended = True
                evs = self.parser.feed(b"", final=True)
                self.events += evs
                return evs
            self.raw += chunk
            evs = self.parser.feed(chunk)
            if evs:
                self.events += evs
                return evs
        return []

    def read_all(self):
        while not self.ended:
            self.next_events()
        return self.events

    def close(self):
        self.c.close()


# --- a real redis-server for the tests -----------------------------------------
REDIS_SERVER = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or ""


class RedisServer:
    """redis-server on a random loopback port in a temp dir, persistence on (AOF,
    fsync at every write). stop() ends it by PID; start() again brings it back on the
    same port and dir, with the data it had."""

    def __init__(self, port=None, dir=None):
        self.dir = dir or temp_dir("valerie-redis-")
        self.port = port or free_port()
        self.proc = None

    def url(self, db=0):
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout=20):
        if not REDIS_SERVER:
            raise RuntimeError("redis-server not found (set REDIS_SERVER)")
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--daemonize", "no",
                "--logfile", os.path.join(self.dir, "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        ok = wait_until(lambda: self.proc.poll() is not None or self.ping(), timeout, 0.05)
        if not ok or self.proc.poll() is not None:
            log = read_text(os.path.join(self.dir, "redis.log"))[-2000:]
            self.stop()
            raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Ends the server by PID (SIGTERM: it writes its AOF and exits), waits for it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def ping(self):
        try:
            return self.command("PING") == "PONG"
        except (OSError, RuntimeError):
            return False

    def command(self, *args, timeout=5):
        """One command over RESP; returns the reply (str, int, list, None); a Redis
        error raises RuntimeError."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            req = b"*%d\r\n" % len(args)
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                req += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(req)
            f = s.makefile("rb")
            return _resp_read(f)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        remove_temp(self.dir, "redis files")


def _resp_read(f):
    line = f.readline()
    if not line:
        raise OSError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise OSError(f"bad RESP line {line!r}")


ANSWER_KEYS = {"reply", "session_id", "turn", "usage", "provider", "model", "request_id"}


def answer_problems(doc, headers=None, session_id=None):
    """What is wrong with an answer document (BRIEF 13); [] when nothing is. With the
    response headers, its request_id must be the X-Request-Id nginx returned."""
    if not isinstance(doc, dict):
        return [f"not a JSON object: {doc!r:.200}"]
    p = []
    keys = set(doc)
    if not (keys == ANSWER_KEYS or keys == ANSWER_KEYS | {"tool_calls"}):
        p.append(f"keys {sorted(keys)}")
    if not isinstance(doc.get("reply"), str) or not doc.get("reply"):
        p.append("reply not a non-empty string")
    t = doc.get("turn")
    if not (isinstance(t, int) and not isinstance(t, bool) and t >= 1):
        p.append(f"turn {t!r}")
    u = doc.get("usage")
    if not (isinstance(u, dict) and set(u) == {"input_tokens", "output_tokens"}
            and all(isinstance(u[k], int) and not isinstance(u[k], bool) and u[k] >= 0
                    for k in u)):
        p.append(f"usage {u!r}")
    for k in ("provider", "model", "request_id", "session_id"):
        if not isinstance(doc.get(k), str) or not doc.get(k):
            p.append(f"{k} {doc.get(k)!r}")
    if "tool_calls" in doc and not isinstance(doc["tool_calls"], list):
        p.append("tool_calls not a list")
    if session_id is not None and doc.get("session_id") != session_id:
        p.append(f"session_id {doc.get('session_id')!r} != {session_id!r}")
    if headers is not None and doc.get("request_id") != headers.get("x-request-id"):
        p.append(f"request_id {doc.get('request_id')!r} != X-Request-Id "
                 f"{headers.get('x-request-id')!r}")
    return p


def session_exchanges(doc):
    """Reads a session document: (turn numbers of its exchanges in order, problems).
    An exchange is one user message then one assistant message with the same turn;
    messages oldest first."""
    if not isinstance(doc, dict) or not isinstance(doc.get("messages"), list):
        return [], [f"no messages list: {doc!r:.200}"]
    msgs, turns, p = doc["messages"], [], []
    for i, m in enumerate(msgs):
        if not (isinstance(m, dict) and isinstance(m.get("turn"), int)
                and m.get("role") in ("user", "assistant", "tool")
                and isinstance(m.get("content"), str) and isinstance(m.get("ts"), str)):
            p.append(f"message {i} lacks turn/role/content/ts: {m!r:.200}")
            continue
        if not turns or turns[-1] != m["turn"]:
            if m["role"] != "user":
                p.append(f"turn {m['turn']} does not open with the user's message")
            turns.append(m["turn"])
    by_turn = {}
    for m in msgs:
        if isinstance(m, dict):
            by_turn.setdefault(m.get("turn"), []).append(m.get("role"))
    for t, roles in by_turn.items():
        if roles != ["user", "assistant"]:
            p.append(f"turn {t} holds {roles}, not one user and one assistant message")
    if turns != list(range(1, len(turns) + 1)):
        p.append(f"turns not 1..N in order without gaps or duplicates: {turns[:20]}"
                 f"{'...' if len(turns) > 20 else ''}")
    return turns, p


def iso_time(s):
    """Seconds since the epoch of an ISO-8601 UTC time with Z, or None."""
    try:
        return log_time(s) if isinstance(s, str) and s.endswith("Z") else None
    except ValueError:
        return None


# The stores a chat test runs against; VALERIE_TEST_STORES=lmdb narrows it by hand.
TEST_STORES = [s for s in os.environ.get("VALERIE_TEST_STORES", "lmdb,redis").split(",") if s]


def store_env(kind, redis=None):
    """The worker environment of a store: lmdb, or redis at `redis` (a RedisServer)."""
    if kind == "redis":
        return {"VALERIE_SESSION_STORE": "redis", "VALERIE_SESSION_REDIS_URL": redis.url()}
    return {"VALERIE_SESSION_STORE": "lmdb"}


# --- the fake LLM upstream (OpenAI and Anthropic wire formats, failures on request) ---
FAKE = os.path.join(SRCDIR, "tests", "fakes", "fake_llm.py")


class FakeLLM:
    """tests/fakes/fake_llm.py in a subprocess on a random loopback port; stopped by PID."""

    def __init__(self, tls=None, extra=()):
        self.dir = temp_dir("valerie-fake-")
        self.tls = bool(tls)
        portfile = os.path.join(self.dir, "port")
        args = [sys.executable, FAKE, "--port", "0", "--port-file", portfile]
        if tls:
            args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        self.proc = subprocess.Popen(args + list(extra), stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "log"), "w"))
        if not wait_until(lambda: os.path.exists(portfile) and open(portfile).read().strip(), 10):
            raise RuntimeError("fake upstream did not start")
        self.port = int(open(portfile).read())

    def control(self, method, path, body=None):
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=ctx)
        else:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        return json.loads(data) if data else None

    def plan(self, *entries):
        self.control("POST", "/_control/reset", {})
        if entries:
            self.control("POST", "/_control/plan", {"next": list(entries)})

    def stats(self):
        return self.control("GET", "/_control/stats")

    def last_body(self):
        """The body of the last request the fake received since its reset, or None."""
        reqs = self.stats()["requests"]
        return reqs[-1]["body"] if reqs else None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        remove_temp(self.dir)


# --- Node programs pinned by a lockfile (tests/node, tests/mcp) -----------------------
def npm_locked_version(d, package):
    """The version of `package` that d/package-lock.json pins, or None."""
    try:
        with open(os.path.join(d, "package-lock.json")) as f:
            return json.load(f)["packages"][f"node_modules/{package}"]["version"]
    except (OSError, ValueError, KeyError):
        return None


def npm_installed_version(d, package):
    try:
        with open(os.path.join(d, "node_modules", package, "package.json")) as f:
            return json.load(f).get("version")
    except (OSError, ValueError):
        return None


def _writable(d):
    try:
        return os.access(d, os.W_OK) and bool(os.stat(d).st_mode & 0o200)
    except OSError:
        return False


def npm_ci(d):
    t = time.monotonic()
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=d, capture_output=True,
                       text=True, timeout=600,
                       env=dict(os.environ, npm_config_update_notifier="false"))
    print(f"npm ci in {d}: exit {r.returncode} in {time.monotonic() - t:.1f} s")
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:])
    return r.returncode == 0


def node_major(node):
    """The major version of the `node` binary, 0 if it cannot tell."""
    try:
        r = subprocess.run([node, "--version"], capture_output=True, text=True)
        return int(r.stdout.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError):
        return 0


def npm_install(src, files, package):
    """Makes the lockfile's `package` installed: `npm ci` in `src` when its node_modules is
    missing or stale, or in a temp copy of `files` when `src` is read-only (make
    distcheck). Returns (dir, temp dir to remove or None, error or None)."""
    want = npm_locked_version(src, package)
    if want is None:
        return src, None, f"{src}/package-lock.json pins no {package}"
    if npm_installed_version(src, package) == want:
        return src, None, None
    tmp = None
    d = src
    if _writable(src):
        ok = npm_ci(src)
    else:
        tmp = temp_dir("valerie-node-")
        d = os.path.join(tmp, os.path.basename(src))
        os.mkdir(d)
        for f in files:
            shutil.copy(os.path.join(src, f), d)
        ok = npm_ci(d)
    if not ok:
        return d, tmp, f"npm ci --no-audit --no-fund in {d} failed (see above)"
    if npm_installed_version(d, package) != want:
        return d, tmp, f"{package} installed is {npm_installed_version(d, package)}, not {want}"
    return d, tmp, None


# --- MCP servers for the agent tests: the fake, and the real server-everything ---------
FAKE_MCP = os.path.join(SRCDIR, "tests", "fakes", "fake_mcp.py")
MCP_SRC = os.path.join(SRCDIR, "tests", "mcp")
MCP_FILES = ("package.json", "package-lock.json", "loopback.cjs")
EVERYTHING = "@modelcontextprotocol/server-everything"
EVERYTHING_NODE_MIN = 20
MCP_NODE_SRC = os.path.join(SRCDIR, "tests", "mcp-node")
MCP_NODE_FILES = ("package.json", "package-lock.json")


class FakeMCP:
    """tests/fakes/fake_mcp.py in a subprocess on a random loopback port; stopped by PID."""

    def __init__(self):
        self.dir = temp_dir("valerie-fakemcp-")
        portfile = os.path.join(self.dir, "port")
        self.proc = subprocess.Popen([sys.executable, FAKE_MCP, "--port", "0", "--port-file",
                                      portfile], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "log"), "w"))
        if not wait_until(lambda: os.path.exists(portfile), 10):
            raise RuntimeError("fake MCP server did not start")
        self.port = int(open(portfile).read())
        self.url = f"http://127.0.0.1:{self.port}/mcp"

    def control(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        return json.loads(data) if data else None

    def config(self, **kw):
        return self.control("POST", "/_control/config", kw)

    def reset(self, **kw):
        self.control("POST", "/_control/reset", {})
        if kw:
            self.config(**kw)

    def forget(self):
        return self.control("POST", "/_control/forget", {})

    def stats(self):
        return self.control("GET", "/_control/stats")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        remove_temp(self.dir)


def everything_install():
    """The pinned server-everything, installed from tests/mcp's lockfile, and a node that
    runs it. Returns (node, package dir, temp dir or None, error or None)."""
    node = shutil.which("node")
    if not node or not shutil.which("npm"):
        return None, None, None, "node and npm are needed: apt-get install nodejs npm"
    node_tmp = None
    if node_major(node) < EVERYTHING_NODE_MIN:
        # NOTE: Debian 12 has Node 18; the npm package node (pinned in tests/mcp-node's
        # lockfile) brings a Node 22 binary from the npm registry to run the server on.
        nd, node_tmp, why = npm_install(MCP_NODE_SRC, MCP_NODE_FILES, "node")
        node = os.path.join(nd, "node_modules", "node", "bin", "node")
        if why or node_major(node) < EVERYTHING_NODE_MIN:
            return None, None, node_tmp, why or f"{node} is not node {EVERYTHING_NODE_MIN}+"
    d, tmp, why = npm_install(MCP_SRC, MCP_FILES, EVERYTHING)
    if node_tmp is not None:
        # one temp dir for the caller to remove: the node install goes inside it
        if tmp is None:
            tmp = node_tmp
        else:
            shutil.move(node_tmp, os.path.join(tmp, "node-install"))
            node = os.path.join(tmp, "node-install", os.path.basename(MCP_NODE_SRC),
                                "node_modules", "node", "bin", "node")
    return node, d, tmp, why


class EverythingServer:
    """The real, unmodified @modelcontextprotocol/server-everything (streamableHttp, endpoint
    /mcp) bound to 127.0.0.1 by a preloaded shim (tests/mcp/loopback.cjs), on a free port."""

    def __init__(self, node, pkg_dir):
        self.dir = temp_dir("valerie-everything-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        main = os.path.join(pkg_dir, "node_modules", EVERYTHING, "dist", "index.js")
        self.log = os.path.join(self.dir, "log")
        self.proc = subprocess.Popen(
            [node, "--require", os.path.join(pkg_dir, "loopback.cjs"), main, "streamableHttp"],
            env=dict(os.environ, PORT=str(self.port)), cwd=self.dir,
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        if not wait_until(self.listening, 30, 0.1):
            self.stop()
            raise RuntimeError(f"server-everything did not start: {read_text(self.log)[-2000:]}")

    def listening(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return self.proc.poll() is not None and False

    def delete_session(self, sid):
        """Ends session `sid` as a client would (DELETE): the server then forgets it."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("DELETE", "/mcp", headers={"Mcp-Session-Id": sid,
                                             "MCP-Protocol-Version": "2025-11-25"})
        r = c.getresponse()
        r.read()
        c.close()
        return r.status

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        remove_temp(self.dir)
