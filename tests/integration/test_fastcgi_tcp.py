"""test_fastcgi_tcp: a pool on a TCP socket (scripts/valerie-pool.sh, VALERIE_LISTEN=
127.0.0.1:PORT), spoken to straight over FastCGI. Idle threads wake every 250 ms
(ACCEPTOR_WAKE_MS) to look at the stop flag; that wake-up must not reach the
connections they accept. So a request whose first bytes come late (the connection made
and the records sent 600 ms later, or the header cut in two with a pause between) is
answered whole, where it used to be dropped. A connection closed before any record costs
nothing. FCGI_WEB_SERVER_ADDRS still refuses another address (and the worker says so),
an entry in it that is no address stops the pool at start (exit 78, naming it), and
SIGTERM still stops the idle workers at once, cleanly."""
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (FcgiClient, check, done, free_port, json_lines,  # noqa: E402
                     read_text, remove_temp, temp_dir, wait_until)
from deployharness import POOL_SH, Pool  # noqa: E402

LATE = 0.6  # seconds: well past the 250 ms wake-up of the listening socket


def answer(c, timeout=20):
    """(status, body, END_REQUEST seen), or (error name, b"", False)."""
    c.s.settimeout(timeout)
    try:
        status, _, body = c.response()
        return status, body, c.ended
    except OSError as e:
        return type(e).__name__, b"", False


tmp = temp_dir("valerie-fcgi-tcp-")
port = free_port()
addr = ("127.0.0.1", port)
pool = Pool(tmp, f"127.0.0.1:{port}", {"FCGI_WEB_SERVER_ADDRS": "127.0.0.1"},
            workers=2, threads=2)
try:
    bad = Pool(os.path.join(tmp, "bad"), f"127.0.0.1:{free_port()}",
               {"FCGI_WEB_SERVER_ADDRS": "127.0.0.1,nginx"})
    r = subprocess.run(["bash", POOL_SH], env=bad.env, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    check(r.returncode == 78 and "FCGI_WEB_SERVER_ADDRS: 'nginx'" in r.stderr and bad.pid is None,
          f"FCGI_WEB_SERVER_ADDRS=127.0.0.1,nginx: the pool does not start (exit 78, naming it): "
          f"{r.returncode} {r.stderr.strip()!r}")
    bad.stop()

    pool.start()
    up = wait_until(lambda: read_text(pool.log).count("worker ready") >= 2, 30)
    check(up, "a TCP pool of two workers is up")

    c = FcgiClient(addr)
    c.begin("GET", "/health")
    c.end_body()
    s, b, ended = answer(c)
    check(s == 200 and ended and b.startswith(b"{"), f"GET /health at once: 200 whole: {s} {b[:80]!r}")

    # Connected, then silent for longer than the wake-up period, then the whole request.
    for i in range(4):
        c = FcgiClient(addr)
        time.sleep(LATE)
        c.begin("GET", "/health")
        c.end_body()
        s, b, ended = answer(c)
        check(s == 200 and ended and b.startswith(b"{"),
              f"records sent {LATE} s after the connect ({i}): 200 whole: {s} {b[:80]!r}")

    # The header cut in two: half the BEGIN_REQUEST record, a pause, the rest.
    head = FcgiClient.head("GET", "/health")
    for cut in (4, 20, len(head) - 3):
        c = FcgiClient(addr)
        c.s.sendall(head[:cut])
        time.sleep(LATE)
        c.s.sendall(head[cut:])
        c.end_body()
        s, b, ended = answer(c)
        check(s == 200 and ended, f"header paused after {cut} bytes for {LATE} s: 200 whole: {s}")

    # A body that comes late (the header on time): served as before.
    body = b'{"message": "late body", "session_id": "tcp-late"}'
    c = FcgiClient(addr)
    c.begin("POST", "/api/v1/chat", body_len=len(body))
    time.sleep(LATE)
    c.send_body(body)
    c.end_body()
    s, b, ended = answer(c)
    check(s == 200 and ended and b'"turn":1' in b, f"chat whose body comes {LATE} s late: {s} {b[:120]!r}")

    # Connections that close before sending anything, or after part of a header: the
    # threads go on serving.
    for i in range(6):
        with socket.create_connection(addr) as raw:
            if i % 2:
                raw.sendall(head[:5])
    for i in range(4):
        c = FcgiClient(addr)
        c.begin("GET", "/health")
        c.end_body()
        s, b, ended = answer(c)
        check(s == 200 and ended, f"after connections closed early, GET /health {i}: {s}")

    # FCGI_WEB_SERVER_ADDRS=127.0.0.1: a connection from 127.0.0.2 is closed unanswered.
    c = FcgiClient(addr, source="127.0.0.2")
    try:
        c.begin("GET", "/health")
        c.end_body()
    except OSError:
        pass
    s, b, ended = answer(c)
    check(s in (None, "ConnectionResetError") and not ended and b == b"",
          f"a connection from 127.0.0.2 (not in FCGI_WEB_SERVER_ADDRS) gets no answer: {s} {b[:80]!r}")
    check(wait_until(lambda: "127.0.0.2" in read_text(pool.log), 5),
          "... and the worker log names the refused address")

    # Slow and on-time requests at once, on every thread.
    cs = [FcgiClient(addr) for _ in range(4)]
    for i, c in enumerate(cs):
        if i % 2 == 0:
            c.begin("GET", "/health")
            c.end_body()
    time.sleep(LATE)
    for i, c in enumerate(cs):
        if i % 2:
            c.begin("GET", "/health")
            c.end_body()
    got = [answer(c)[0] for c in cs]
    check(got == [200] * 4, f"four requests at once, two of them late: {got}")

    # SIGTERM: the idle threads of both workers look at the stop flag and leave.
    workers = pool.workers()
    t0 = time.monotonic()
    pool.stop()
    took = time.monotonic() - t0
    log = read_text(pool.log)
    docs, _ = json_lines(log)
    stopped = sum(1 for d in docs if isinstance(d, dict) and d.get("msg") == "worker stopped")
    check(len(workers) == 2 and stopped == 2 and "exiting anyway" not in log,
          f"SIGTERM: both workers stopped cleanly ({stopped} of {len(workers)})")
    check(took < 15, f"... promptly ({took:.1f} s)")

    # IPv6: the same, and the allow list applies to IPv6 peers too.
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        v6 = True
    except OSError:
        v6 = False
        print("(no IPv6 loopback here: the IPv6 part is skipped)")
    if v6:
        port6 = free_port()
        pool = Pool(os.path.join(tmp, "v6"), f"[::1]:{port6}", {"FCGI_WEB_SERVER_ADDRS": "::1"},
                    workers=1, threads=1)
        pool.start()
        check(wait_until(lambda: "worker ready" in read_text(pool.log), 30), "an IPv6 pool is up")
        c = FcgiClient(("::1", port6))
        time.sleep(LATE)
        c.begin("GET", "/health")
        c.end_body()
        s, b, ended = answer(c)
        check(s == 200 and ended, f"IPv6: records sent {LATE} s after the connect: 200 whole: {s}")
finally:
    pool.stop()
    remove_temp(tmp)

done("test_fastcgi_tcp")
