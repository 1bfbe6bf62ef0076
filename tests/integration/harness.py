"""harness: starts and stops real Valerie stacks (nginx, spawn-fcgi, multiwatch) for the
integration tests, on random loopback ports in a temp dir, through scripts/run-local.sh,
the same launch steps the README uses. Also a minimal FastCGI client to talk to a worker
directly, and helpers that make a test fail loudly."""
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """A running stack in its own temp dir; use as a context manager."""

    def __init__(self, workers=2, threads=4, env=None, keep=False):
        self.dir = tempfile.mkdtemp(prefix="valerie-it-")
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
        if not self.keep and not failures:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif failures:
            print(f"(stack files kept in {self.dir})")

    # --- the pieces the tests look at ---
    def socket_path(self):
        return os.path.join(self.run_dir, "valerie.sock")

    def pool_pid(self):
        return read_pid(os.path.join(self.run_dir, "pool.pid"))

    def nginx_pid(self):
        return read_pid(os.path.join(self.run_dir, "nginx.pid"))

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
    """One FastCGI request over a unix socket; body may be sent in slow parts."""

    def __init__(self, sock_path, timeout=30):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(sock_path)

    def begin(self, method, uri, body_len=0, extra=None):
        params = {"REQUEST_METHOD": method, "REQUEST_URI": uri, "REMOTE_ADDR": "127.0.0.1",
                  "REQUEST_ID": "fcgi-test", "SERVER_PROTOCOL": "HTTP/1.1"}
        if body_len:
            params["CONTENT_LENGTH"] = str(body_len)
            params["CONTENT_TYPE"] = "application/json"
        params.update(extra or {})
        data = b"".join(_nv(k, v) for k, v in params.items())
        self.s.sendall(_record(FCGI_BEGIN, struct.pack(">HB5x", 1, 0))
                       + _record(FCGI_PARAMS, data) + _record(FCGI_PARAMS, b""))

    def send_body(self, chunk):
        self.s.sendall(_record(FCGI_STDIN, chunk))

    def end_body(self):
        self.s.sendall(_record(FCGI_STDIN, b""))

    def response(self):
        """Reads records until END_REQUEST; returns (status, headers, body)."""
        out, buf = b"", b""
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
                break
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
