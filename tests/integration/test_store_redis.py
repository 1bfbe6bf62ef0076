"""test_store_redis: the Redis session store against a real redis-server started here (a
temp dir, a random loopback port and a unix socket, a password, AOF on). Runs the store
contract (tests/unit/test_store) over redis:// and unix:// URLs, and under valgrind; then
drives tests/unit/test_store_redis_faults through faults: bad URLs refused at open, key
layout and expiry, Redis restarted under an idle connection, Redis stopped (fast 503s that
say why and never show the password), Redis back (the same connection recovers, the data
is still there), Redis paused (the command timeout), a wrong or missing password, the
reply cap, a session whose list is gone while its meta stays; then `valerie redis-export`
while turns are appended, each export restored into another database: every session
loads whole. Every redis-server started here is stopped by its PID, also on failure."""
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import BIN, SRCDIR, check, done, free_port, remove_temp, temp_dir, wait_until  # noqa: E402

BUILDDIR = os.environ.get("VALERIE_BUILDDIR") or SRCDIR
REDIS = os.environ.get("REDIS_SERVER") or "redis-server"
TEST_STORE = os.path.join(BUILDDIR, "tests", "unit", "test_store")
FAULTS = os.path.join(BUILDDIR, "tests", "unit", "test_store_redis_faults")
PASSWORD = "pw-" + secrets.token_hex(12)
URL_VAR = "VALERIE_SESSION_REDIS_URL"
COMMAND_TIMEOUT_MS = 2000   # STORE_REDIS_COMMAND_TIMEOUT_MS in app/store_redis.c
BACKOFF_MAX_MS = 2000       # STORE_REDIS_BACKOFF_MAX_MS
# "At once" means well before the command timeout, with room for a loaded machine.
FAST_MS = COMMAND_TIMEOUT_MS // 2


class RespError(Exception):
    pass


class Resp:
    """A minimal RESP2 client, to look at what the store wrote."""

    def __init__(self, port=None, path=None, password=None, db=0, timeout=5):
        if path:
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.settimeout(timeout)
            self.s.connect(path)
        else:
            self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.s.makefile("rb")
        if password:
            self.cmd("AUTH", password)
        if db:
            self.cmd("SELECT", str(db))

    def cmd(self, *args):
        args = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        self.s.sendall(b"*%d\r\n" % len(args) +
                       b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line:
            raise OSError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RespError(f"bad reply {line!r}")

    def close(self):
        self.f.close()
        self.s.close()


class RedisServer:
    """One redis-server in its own dir: loopback port, unix socket, password, AOF."""

    def __init__(self, root, password):
        self.dir = os.path.join(root, "redis")
        os.makedirs(self.dir)
        self.port = free_port()
        self.sock = os.path.join(self.dir, "redis.sock")
        self.password = password
        self.proc = None
        self.conf = os.path.join(self.dir, "redis.conf")
        with open(self.conf, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                    f"unixsocket {self.sock}\nunixsocketperm 700\n"
                    f"requirepass {password}\n"
                    "appendonly yes\nappendfsync always\nsave \"\"\n"
                    f"daemonize no\nlogfile {os.path.join(self.dir, 'redis.log')}\n")

    def start(self):
        self.proc = subprocess.Popen([REDIS, self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_until(self.answers, 15, 0.05):
            self.stop()
            raise RuntimeError("redis-server did not come up; see "
                               + os.path.join(self.dir, "redis.log"))

    def answers(self):
        try:
            r = Resp(port=self.port, password=self.password, timeout=1)
            try:
                return r.cmd("PING") == "PONG"
            finally:
                r.close()
        except (OSError, RespError):
            return False

    def client(self, db=0):
        return Resp(port=self.port, password=self.password, db=db)

    def signal(self, sig):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self):
        """SIGTERM by PID (Redis writes its AOF and exits), SIGKILL if it will not."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


class Repl:
    """test_store_redis_faults repl: one store connection, one command a line."""

    def __init__(self, url):
        env = dict(os.environ, VALERIE_SESSION_STORE="redis", VALERIE_SESSION_REDIS_URL=url)
        self.p = subprocess.Popen([FAULTS, "repl"], env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        first = self._line(10)
        if first != "ready":
            self.p.kill()
            self.p.wait()
            raise RuntimeError(f"test_store_redis_faults repl: {first!r}")

    def _pump(self):
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _line(self, timeout):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def cmd(self, line, timeout=30):
        """{status, ms, result (dict), err} for one command; status None if no answer."""
        try:
            self.p.stdin.write(line + "\n")
            self.p.stdin.flush()
        except OSError:
            return {"status": None, "ms": 0.0, "result": {}, "err": "faults program died"}
        out = self._line(timeout)
        if out is None:
            return {"status": None, "ms": 0.0, "result": {}, "err": "no answer"}
        status, ms, result, err = (out.split("\t") + ["", "", ""])[:4]
        kv = dict(x.split("=", 1) for x in result.split(" ") if "=" in x)
        return {"status": status, "ms": float(ms or 0), "result": kv, "err": err}

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write("quit\n")
                self.p.stdin.flush()
                return self.p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
        return self.p.wait()


def store_env(url):
    return dict(os.environ, VALERIE_SESSION_STORE="redis", VALERIE_SESSION_REDIS_URL=url)


def run_contract(url, what, wrapper=()):
    r = subprocess.run(list(wrapper) + [TEST_STORE], env=store_env(url), capture_output=True,
                       text=True, timeout=600)
    ok = check(r.returncode == 0 and "all checks passed" in r.stdout,
               f"contract test over {what}: exit {r.returncode}")
    if not ok:
        print(r.stdout[-3000:], r.stderr[-3000:])
    return r


def contract(srv, tmp):
    run_contract(f"redis://:{PASSWORD}@127.0.0.1:{srv.port}/3", "redis:// (db 3, password)")
    # The contract's TTL session expired before its last append: appends prune the
    # index of sessions by expiry, with nobody scraping /metrics.
    r = srv.client(db=3)
    try:
        now_ms = int(time.time() * 1000)
        stale = r.cmd("ZCOUNT", "valerie:sessions", "-inf", now_ms)
        live = r.cmd("ZCOUNT", "valerie:sessions", now_ms, "+inf")
    finally:
        r.close()
    check(stale == 0 and live > 0, f"appends drop expired sessions from valerie:sessions: "
          f"{stale} expired entries left, {live} live")
    run_contract(f"unix://:{PASSWORD}@{srv.sock}?db=2", "unix:// (db 2, password)")

    if os.environ.get("VALERIE_SANITIZERS") == "yes":
        print("skip: valgrind in a sanitizer build")
        return
    if not shutil.which("valgrind"):
        check(False, "valgrind is installed (apt-get install valgrind)")
        return
    logs = os.path.join(tmp, "vg")
    os.makedirs(logs)
    run_contract(f"redis://:{PASSWORD}@127.0.0.1:{srv.port}/4", "redis:// under valgrind",
                 ["valgrind", "--quiet", "--leak-check=full",
                  "--show-leak-kinds=definite,indirect,possible",
                  "--errors-for-leak-kinds=definite,indirect,possible", "--error-exitcode=99",
                  f"--log-file={logs}/vg.%p.log"])
    reports = "".join(open(os.path.join(logs, f)).read() for f in sorted(os.listdir(logs)))
    check(reports.strip() == "", "valgrind: no error and no leak in test_store and its children")
    if reports.strip():
        print(reports[:5000])


def bad_urls():
    secret = "Zq9" + secrets.token_hex(6)
    bad = [
        f"redis://:{secret}@127.0.0.1:0/1",
        f"redis://:{secret}@127.0.0.1:99999",
        f"redis://:{secret}@127.0.0.1:63x79",
        f"redis://:{secret}@127.0.0.1:",
        f"redis://:{secret}@127.0.0.1/abc",
        f"redis://:{secret}@127.0.0.1/1/2",
        f"redis://:{secret}@127.0.0.1/-1",
        f"redis://:{secret}@127.0.0.1/1000001",
        f"redis://:{secret}@127.0.0.1?db=1",
        f"redis://:{secret}@127.0.0.1/1#x",
        f"redis://{secret}@127.0.0.1",
        "redis://:@127.0.0.1",
        f"redis://:{secret}@",
        f"redis://:{secret}@[::1",
        f"redis://:{secret}@bad%host",
        f"redis://:{secret}@a@b",
        f"redis://:{secret}%zz@127.0.0.1",
        f"redis://:{secret}%00@127.0.0.1",
        f"redis://:{secret}/x@127.0.0.1",
        "unix://relative/redis.sock",
        "unix://",
        f"unix://:{secret}@/tmp/x.sock?db=x",
        f"unix://:{secret}@/tmp/x.sock?password=y",
        f"unix://:{secret}@/tmp/x.sock?db=1&x=2",
        f"unix://:{secret}@/" + "a" * 200,
        f"http://:{secret}@127.0.0.1",
    ]
    for url in bad:
        r = subprocess.run([FAULTS, "open"], env=store_env(url), capture_output=True,
                           text=True, timeout=30)
        out = r.stdout.strip()
        shown = url.replace(secret, "<secret>")
        check(out.startswith("open failed:") and URL_VAR in out and secret not in out
              and secret not in r.stderr, f"bad URL refused at open, variable named, no "
              f"password: {shown} -> {out.replace(secret, '<LEAK>')[:150]}")
    good = [
        "redis://127.0.0.1",
        "redis://192.0.2.1:6380/15",
        f"redis://:{secret}@127.0.0.1:6380/15",
        f"redis://default:{secret}@localhost/0",
        f"redis://:{secret}%40%2F@redis.example/",
        "redis://[::1]:6379/2",
        "unix:///tmp/redis.sock",
        "unix:///tmp/redis.sock?db=3",
        f"unix://:{secret}@/tmp/redis.sock?db=1",
    ]
    for url in good:
        r = subprocess.run([FAULTS, "open"], env=store_env(url), capture_output=True,
                           text=True, timeout=30)
        out = r.stdout.split()
        check(len(out) >= 4 and out[:2] == ["open", "ok"] and float(out[2]) < 50
              and out[3] == "redis", f"good URL opens without touching the network: "
              f"{url.replace(secret, '<secret>')} -> {r.stdout.strip()[:120]}")


def key_layout(srv, sid, db):
    r = srv.client(db)
    try:
        keys = sorted(k.decode() for k in r.cmd("KEYS", f"*{sid}*"))
        want = [f"valerie:{{{sid}}}:{k}" for k in ("idem", "meta", "turns")]
        check(keys == want, f"keys of one session, all tagged {{sid}}: {keys}")
        types = [r.cmd("TYPE", k) for k in want]
        check(types == ["hash", "hash", "list"], f"idem hash, meta hash, turns list: {types}")
        ttls = [r.cmd("PTTL", k) for k in want]
        check(all(86_000_000 < t <= 86_400_000 for t in ttls),
              f"every key expires in VALERIE_SESSION_TTL (86400 s): {ttls}")
        meta = r.cmd("HGETALL", want[1])
        meta = dict(zip(meta[::2], meta[1::2]))
        check(meta.get(b"turns") == b"3" and meta.get(b"owner") == b"owner-1"
              and set(meta) == {b"owner", b"created_ms", b"updated_ms", b"turns"},
              f"meta hash: {sorted(meta)}")
        first = r.cmd("LINDEX", want[2], 0)
        check(first.startswith(b'{"turn":1,"messages":[{"role":"user"'),
              f"turn text is {{\"turn\":N,\"messages\":[...]}}: {first[:40]!r}")
    finally:
        r.close()


def faults(srv):
    tcp = f"redis://:{PASSWORD}@127.0.0.1:{srv.port}/5"
    repl = Repl(tcp)
    where = f"127.0.0.1:{srv.port}"
    try:
        r = repl.cmd("ping")
        check(r["status"] == "ok", f"ping: {r}")
        turns = [repl.cmd(f"append s1 {k} 10")["result"].get("turn") for k in ("k1", "-", "-")]
        check(turns == ["1", "2", "3"], f"three appends: turns {turns}")
        key_layout(srv, "s1", 5)

        # Redis restarts while the connection is idle: the next call just works.
        srv.stop()
        srv.start()
        r = repl.cmd("ping")
        check(r["status"] == "ok", f"first call after a restart under an idle connection: {r}")

        # Redis stopped: quick 503s that say why, without the password.
        srv.stop()
        r = repl.cmd("ping")
        check(r["status"] == "unavailable" and r["ms"] < FAST_MS,
              f"ping with Redis stopped: unavailable in {r['ms']} ms")
        check(where in r["err"] and "refused" in r["err"].lower() and PASSWORD not in r["err"],
              f"the error says where and why, no password: {r['err']}")
        r = repl.cmd("append s1 - 10")
        check(r["status"] == "unavailable" and r["ms"] < FAST_MS and PASSWORD not in r["err"],
              f"append with Redis stopped: unavailable in {r['ms']} ms: {r['err']}")
        slow, backing_off = 0, 0
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end:
            r = repl.cmd("ping")
            slow += r["status"] != "unavailable" or r["ms"] > FAST_MS
            backing_off += "next attempt in" in r["err"]
            time.sleep(0.02)
        check(slow == 0, "every call while Redis is down answers unavailable at once")
        check(backing_off > 0, "between attempts the store backs off (no connect storm)")

        # Redis back on the same port with its AOF: the same connection recovers.
        srv.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10 and repl.cmd("ping")["status"] != "ok":
            time.sleep(0.05)
        took = time.monotonic() - t0
        check(took < 10, f"recovered on its own in {took:.2f} s")
        r = repl.cmd("load s1 0 0")
        check(r["status"] == "ok" and r["result"].get("list") == "1,2,3"
              and r["result"].get("owner") == "owner-1",
              f"turns appended before the restart are still there: {r['result']}")
        r = repl.cmd("idem s1 k1")
        check(r["status"] == "ok" and r["result"].get("turn") == "1", f"idem key kept: {r}")
        r = repl.cmd("append s1 - 10")
        check(r["status"] == "ok" and r["result"].get("turn") == "4", f"append goes on: {r}")
        c = srv.client()
        c.cmd("SCRIPT", "FLUSH")
        c.close()
        r = repl.cmd("load s1 0 0")
        check(r["status"] == "ok" and r["result"].get("list") == "1,2,3,4",
              f"scripts flushed: EVALSHA falls back to EVAL: {r['status']} {r['err']}")

        # Redis paused: the command timeout, then recovery.
        srv.signal(signal.SIGSTOP)
        r = repl.cmd("ping")
        check(r["status"] == "unavailable" and COMMAND_TIMEOUT_MS - 100 <= r["ms"]
              <= COMMAND_TIMEOUT_MS + 5000 and "no reply within" in r["err"],
              f"paused Redis: unavailable after the command timeout ({r['ms']} ms): {r['err']}")
        srv.signal(signal.SIGCONT)
        ok = wait_until(lambda: repl.cmd("ping")["status"] == "ok", 10, 0.05)
        check(ok, "recovered after the pause")
        r = repl.cmd("load s1 0 0")
        check(r["status"] == "ok" and r["result"].get("list") == "1,2,3,4", f"after pause: {r}")

        # Windows and single turns over the wire.
        r = repl.cmd("load s1 2 0")
        check(r["result"].get("list") == "3,4" and r["result"].get("turns") == "4",
              f"window of 2 turns: {r['result']}")
        r = repl.cmd("load s1 0 1")
        check(r["result"].get("list") == "4", f"window of 1 char: newest only: {r['result']}")
        r = repl.cmd("get s1 3")
        check(r["status"] == "ok" and r["result"].get("head", "").startswith('{"turn":3,'),
              f"get turn 3: {r}")

        # A session whose turn list is gone while its meta stays (evicted under a volatile-*
        # maxmemory-policy, or expiring a moment before it): no session, and the next turn
        # starts it afresh with its owner. It used to be 'corrupt' (a 500) at every turn
        # until the meta expired. A list that disagrees with its count is still corrupt.
        for k in ("e1", "-"):
            repl.cmd(f"append ev {k} 10")
        c = srv.client(5)
        c.cmd("DEL", "valerie:{ev}:turns")
        c.close()
        r = repl.cmd("load ev 0 0")
        check(r["status"] == "not_found", f"meta without its list: no session: {r}")
        r = repl.cmd("append ev e1 10")
        check(r["status"] == "ok" and r["result"].get("turn") == "1",
              f"... the next turn starts it afresh, its old idempotency keys gone: {r}")
        r = repl.cmd("load ev 0 0")
        check(r["status"] == "ok" and r["result"].get("list") == "1"
              and r["result"].get("owner") == "owner-1", f"... and loads: {r['result']}")
        repl.cmd("append ev - 10")
        c = srv.client(5)
        c.cmd("RPOP", "valerie:{ev}:turns")
        c.close()
        for verb in ("load ev 0 0", "append ev - 10"):
            r = repl.cmd(verb)
            check(r["status"] == "corrupt" and "1 turns stored, 2 counted" in r["err"],
                  f"a list shorter than its count: {verb}: corrupt: {r['status']} {r['err']}")

        # The reply cap (1 MiB in this build): refused, and the connection comes back.
        for i in range(3):
            r = repl.cmd("append big - 400000")
            check(r["status"] == "ok", f"append 400 kB turn {i + 1}: {r['status']} {r['err']}")
        r = repl.cmd("load big 0 0")
        check(r["status"] == "corrupt" and "larger than" in r["err"],
              f"a reply over the cap is refused: {r['status']}: {r['err']}")
        r = repl.cmd("ping")
        check(r["status"] == "ok", f"the next call reconnects at once: {r}")
        r = repl.cmd("load big 2 0")
        check(r["status"] == "ok" and r["result"].get("list") == "2,3",
              f"a window under the cap loads: {r['status']} {r['result'].get('list')}")
        r = repl.cmd("append big - 1100000")
        check(r["status"] == "corrupt" and "cap" in r["err"],
              f"a turn over the cap is refused before sending: {r}")
        c = srv.client(5)
        c.cmd("CONFIG", "RESETSTAT")
        r = repl.cmd("delete big")
        check(r["status"] == "ok", f"delete: {r}")
        stats = c.cmd("INFO", "commandstats").decode()
        c.close()
        # UNLINK frees a long session's list in the background; DEL would block Redis meanwhile
        check("cmdstat_unlink:calls=1," in stats and "cmdstat_del:" not in stats,
              f"a session is deleted with UNLINK, not DEL: "
              f"{[x for x in stats.splitlines() if x.startswith('cmdstat_')]}")
        r = repl.cmd("delete big")
        check(r["status"] == "not_found", f"second delete: {r}")
        r = repl.cmd("delete s1")
        c = srv.client(5)
        left = c.cmd("KEYS", "*{s1}*")
        c.close()
        check(r["status"] == "ok" and left == [], f"delete leaves no key of the session: {left}")
        r = repl.cmd("idem s1 k1")
        check(r["status"] == "not_found", f"idempotency records go with the session: {r}")
    finally:
        rc = repl.close()
    check(rc == 0, f"faults program exited cleanly ({rc})")

    # A wrong password, and no password against a server that wants one.
    wrong = "wrong-" + secrets.token_hex(8)
    repl = Repl(f"redis://:{wrong}@127.0.0.1:{srv.port}/5")
    try:
        r = repl.cmd("ping")
        check(r["status"] == "unavailable" and "AUTH" in r["err"] and wrong not in r["err"]
              and ("WRONGPASS" in r["err"] or "invalid" in r["err"]),
              f"wrong password: unavailable, says AUTH failed, no password: {r['err']}")
        r = repl.cmd("ping")
        check(r["status"] == "unavailable" and wrong not in r["err"],
              f"still refused, still no password: {r['err']}")
    finally:
        repl.close()
    repl = Repl(f"unix://{srv.sock}?db=2")
    try:
        r = repl.cmd("ping")
        check(r["status"] == "unavailable" and "NOAUTH" in r["err"],
              f"no password for a server that wants one: {r['err']}")
    finally:
        repl.close()


def export_under_traffic(srv, tmp):
    """valerie redis-export while turns are appended: every session it wrote must restore
    whole. Its turn list and turn count were taken a moment apart (SCAN lists a session's
    keys at different places), so a restored session could be corrupt for good."""
    src, dst = f"redis://:{PASSWORD}@127.0.0.1:{srv.port}/7", f"redis://:{PASSWORD}@127.0.0.1:{srv.port}/8"
    sids = [f"ex{i}" for i in range(150)]
    setup = Repl(src)
    try:
        for sid in sids:
            setup.cmd(f"append {sid} - 10")
    finally:
        setup.close()
    stop = threading.Event()
    writes = [0]

    def writer():
        w = Repl(src)
        try:
            i = 0
            while not stop.is_set():
                if w.cmd(f"append {sids[i % len(sids)]} - 10")["status"] == "ok":
                    writes[0] += 1
                i += 7
        finally:
            w.close()

    t = threading.Thread(target=writer)
    t.start()
    files = []
    try:
        for n in range(3):
            f = os.path.join(tmp, f"export-{n}.bin")
            r = subprocess.run([BIN, "redis-export", f], env=dict(os.environ, **{URL_VAR: src}),
                               capture_output=True, text=True, timeout=120)
            check(r.returncode == 0, f"redis-export {n} under traffic: {r.returncode} {r.stderr.strip()}")
            files.append(f)
    finally:
        stop.set()
        t.join(60)
    check(writes[0] > 0, f"turns were appended during the exports: {writes[0]}")
    for f in files:
        c = srv.client(8)
        c.cmd("FLUSHDB")
        c.close()
        r = subprocess.run([BIN, "redis-import", f], env=dict(os.environ, **{URL_VAR: dst}),
                           capture_output=True, text=True, timeout=120)
        check(r.returncode == 0, f"redis-import {os.path.basename(f)}: {r.returncode} {r.stderr.strip()}")
        repl = Repl(dst)
        try:
            bad = [(sid, x["err"]) for sid in sids
                   for x in [repl.cmd(f"load {sid} 0 0")] if x["status"] != "ok"]
        finally:
            repl.close()
        check(not bad, f"{os.path.basename(f)}: all {len(sids)} sessions restore whole: "
              f"{len(bad)} do not: {bad[:3]}")


def main():
    for prog in (TEST_STORE, FAULTS):
        if not os.access(prog, os.X_OK):
            print(f"FAIL: {prog} is not built (make check builds it)")
            sys.exit(1)
    if not shutil.which(REDIS):
        print(f"FAIL: {REDIS} not found (apt-get install redis-server)")
        sys.exit(1)
    tmp = temp_dir("valerie-redis-")
    srv = RedisServer(tmp, PASSWORD)
    try:
        bad_urls()
        srv.start()
        contract(srv, tmp)
        faults(srv)
        export_under_traffic(srv, tmp)
    finally:
        srv.stop()
        remove_temp(tmp)
    done("test_store_redis")


if __name__ == "__main__":
    main()
