"""test_slow_reader: a client that does not read its answer frees the worker thread by the
request's write deadline (VALERIE_TURN_TIMEOUT plus 5 s), where it used to hold the thread
for as long as it kept the connection open: a write blocked inside the provider's callback
let no timeout fire, not even the turn's. On a pool of one thread, a long stream (the fake
LLM echoes 100,000 words) goes to a FastCGI client that reads its first bytes and then
nothing, then to one that reads a trickle (its turn may instead end by the turn's own
timeout, with an error event), and a whole answer too large for the socket to one that
reads none of it; each time a request sent meanwhile is served once the deadline
has passed. The cut answer ends without a done event or an end record, the stream's access
line counts a client that went away, the upstream call is abandoned and the log says why.
A client that reads gets its whole stream.

A drain (SIGTERM, VALERIE_SHUTDOWN_TIMEOUT shorter than the write deadline) that begins
while such writes are blocked cuts them before its limit, where the worker used to wait
in them until the limit and exit 1 ("exiting anyway"): it stops cleanly, and one line
per answer says it was cut. Only generous upper bounds on time."""
import fcntl
import json
import os
import signal
import struct
import sys
import termios
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (FakeLLM, FcgiClient, Stack, alive, check, done, json_lines,  # noqa: E402
                     kill, wait_until)

TURN = 4                  # VALERIE_TURN_TIMEOUT, seconds
DEADLINE = TURN + 5       # the write deadline: turn plus the transport's margin
WORDS = 100000            # ~1 MB of SSE: far more than the socket buffers hold
PLAIN_WORDS = 400000      # an 800 KB reply: four times a unix socket's default buffer
DRAIN = 4                 # VALERIE_SHUTDOWN_TIMEOUT of the drain section, seconds
DRAIN_TURN = 60           # its VALERIE_TURN_TIMEOUT: a write deadline far past the drain
QUEUED = 150000           # bytes of a whole answer waiting in a unix socket (~200 KB fit)
QUEUED_EVENTS = 4000      # bytes of a stream's events waiting there: ~80 of the ~280 that fit


def stream_request(sock, sid, words):
    body = json.dumps({"message": " ".join(["w"] * words), "session_id": sid,
                       "stream": True}).encode()
    c = FcgiClient(sock, timeout=120)
    c.begin("POST", "/api/v1/chat", body_len=len(body), extra={"REQUEST_ID": sid})
    for i in range(0, len(body), 60000):
        c.send_body(body[i:i + 60000])
    c.end_body()
    return c


def queued(c):
    """Bytes the peer wrote that wait, unread, in the client's socket."""
    return struct.unpack("i", fcntl.ioctl(c.s.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def first_record(c):
    """Reads the stream's first record whole (so that later reads stay aligned)."""
    head = b""
    while len(head) < 8:
        b = c.s.recv(8 - len(head))
        if not b:
            break
        head += b
    if len(head) < 8:
        return head
    n = int.from_bytes(head[4:6], "big") + head[6]
    rec = head
    while len(rec) < 8 + n:
        b = c.s.recv(8 + n - len(rec))
        if not b:
            break
        rec += b
    return rec


def health_after(sock):
    """Sends GET /health now; returns (status, seconds until its answer)."""
    t0 = time.monotonic()
    c = FcgiClient(sock, timeout=90)
    c.begin("GET", "/health")
    c.end_body()
    try:
        status, _, _ = c.response()
    except OSError as e:
        status = type(e).__name__
    return status, time.monotonic() - t0


def records(raw):
    """FastCGI records read from a record boundary: (the STDOUT bytes, END_REQUEST seen)."""
    out, ended = b"", False
    while len(raw) >= 8:
        n, pad = int.from_bytes(raw[4:6], "big"), raw[6]
        if raw[1] == 6:
            out += raw[8:8 + n]
        ended = ended or raw[1] == 3
        raw = raw[8 + n + pad:]
    return out, ended


def rest(c):
    """What the client still gets once it reads again, up to the end of the connection:
    (the STDOUT bytes, END_REQUEST seen)."""
    c.s.settimeout(30)
    raw = b""
    try:
        while True:
            b = c.s.recv(65536)
            if not b:
                break
            raw += b
    except OSError as e:
        return type(e).__name__.encode(), False
    return records(raw)


def access(st, rid):
    docs, _ = json_lines(st.worker_log())
    return [d for d in docs if isinstance(d, dict) and d.get("msg") == "request"
            and d.get("request_id") == rid]


def cut_lines(st, rid):
    docs, _ = json_lines(st.worker_log())
    return [d for d in docs if isinstance(d, dict) and d.get("request_id") == rid
            and "stopped reading" in str(d.get("msg"))]


fake = FakeLLM()
env = {"VALERIE_LLM_PROVIDER": "openai", "OPENAI_BASE_URL": f"http://127.0.0.1:{fake.port}/v1",
       "OPENAI_API_KEY": "sk-test", "OPENAI_MAX_RETRIES": "0",
       "VALERIE_TURN_TIMEOUT": str(TURN), "VALERIE_MAX_MESSAGE_CHARS": "1000000"}
try:
    with Stack(workers=1, threads=1, env=env) as st:
        sock = st.socket_path()

        # A client that reads: its whole stream, done event and end record.
        c = stream_request(sock, "reader", 3000)
        status, _, body = c.response()
        done_doc = body.partition(b"event: done\ndata: ")[2].partition(b"\n")[0]
        try:
            reply = json.loads(done_doc).get("reply")
        except ValueError:
            reply = None
        check(status == 200 and c.ended and reply == "echo: " + " ".join(["w"] * 3000),
              f"a client that reads gets the whole stream and its done event: {status} "
              f"ended={c.ended} {len(body)} bytes, reply of {len(reply or '')} characters")

        # A client that stops reading after the first bytes.
        fake.plan()
        c = stream_request(sock, "stopped", WORDS)
        first = first_record(c)
        check(first[:2] == b"\x01\x06" and b"Status: 200" in first, f"the stream began: {first[:40]!r}")
        t0 = time.monotonic()
        status, took = health_after(sock)
        check(status == 200, f"with the only thread's client not reading, GET /health is served: {status}")
        check(took < DEADLINE + 30, f"... within the write deadline ({DEADLINE} s) and a margin: {took:.1f} s")
        check(took > TURN, f"... and not before the turn's own timeout ({TURN} s): the stream held "
              f"the thread ({took:.1f} s)")
        body, ended = rest(c)
        check(not ended and b"event: delta" in body and b"event: done" not in body,
              f"the stream it stopped reading ends cut: no done event, no end record "
              f"(ended={ended}, {len(body)} bytes)")
        check(wait_until(lambda: access(st, "stopped"), 10)
              and access(st, "stopped")[0].get("client_gone") is True,
              f"the access line counts a client that went away: {access(st, 'stopped')}")
        check(len(cut_lines(st, "stopped")) == 1, f"one line says why: {cut_lines(st, 'stopped')}")
        check(wait_until(lambda: fake.stats()["disconnects"] >= 1, 10),
              f"the upstream call is abandoned ({fake.stats()['disconnects']} disconnects)")
        print(f"(freed after {time.monotonic() - t0:.1f} s)")

        # A client that keeps reading a trickle, never enough for the stream to end in time.
        fake.plan()
        c = stream_request(sock, "trickle", WORDS)
        first_record(c)
        got = [b""]
        stop = threading.Event()

        def trickle():
            c.s.settimeout(1)
            while not stop.is_set():
                try:
                    b = c.s.recv(1024)
                except OSError:
                    continue
                if not b:
                    return
                got[0] += b
                time.sleep(0.5)

        th = threading.Thread(target=trickle, daemon=True)
        th.start()
        status, took = health_after(sock)
        check(status == 200 and took < DEADLINE + 30,
              f"with the thread's client reading a trickle, GET /health is served within the "
              f"deadline and a margin: {status} {took:.1f} s ({len(got[0])} bytes read)")
        th.join(60)
        stop.set()
        out, ended = records(got[0])
        # NOTE: two right endings. The built-in HTTP client returns to its loop after every
        # read of the upstream, so the turn's own timeout (4 s) fires between two slow writes:
        # the stream ends with an error event and its end record. libcurl
        # (VALERIE_HTTP_CLIENT=libcurl) keeps calling back while the upstream has bytes, so
        # the write deadline cuts the connection instead, and a log line says so.
        timed_out = ended and out.rstrip().endswith(b"}") and \
            b"event: error" in out[-400:] and b"provider_timeout" in out[-400:]
        check(not th.is_alive() and b"event: done" not in out and (not ended or timed_out),
              f"... and the trickle reader meets the end of its answer, never a done event: cut "
              f"by the write deadline, or ended by the turn's timeout with an error event "
              f"(ended={ended}, {out[-160:]!r})")
        # NOTE: mostly the turn is abandoned as for a client gone (client_gone on the access
        # line); when the turn's own timeout won a race and only the end record was left to
        # write, the access line (written before it) cannot say so. The log line always does.
        if not ended:
            check(wait_until(lambda: cut_lines(st, "trickle"), 10) and
                  len(cut_lines(st, "trickle")) == 1,
                  f"... and one line says why: {cut_lines(st, 'trickle')}")
        c.close()

        # A whole (not streamed) answer too large for the socket, to a client that reads
        # none of it: the same deadline (the access line is written before the answer is).
        fake.plan()
        body = json.dumps({"message": " ".join(["w"] * PLAIN_WORDS), "session_id": "plain"}).encode()
        c = FcgiClient(sock, timeout=120)
        c.begin("POST", "/api/v1/chat", body_len=len(body), extra={"REQUEST_ID": "plain"})
        for i in range(0, len(body), 60000):
            c.send_body(body[i:i + 60000])
        c.end_body()
        status, took = health_after(sock)
        check(status == 200 and took < DEADLINE + 30,
              f"a whole answer of {PLAIN_WORDS} words nobody reads: GET /health is served within the "
              f"deadline and a margin: {status} {took:.1f} s")
        out, ended = rest(c)
        check(not ended and len(cut_lines(st, "plain")) == 1,
              f"... the answer cut ({len(out)} bytes, ended={ended}) and one line says why")

        # The thread serves on.
        for i in range(3):
            status, took = health_after(sock)
            check(status == 200 and took < 30, f"afterwards GET /health {i}: {status}")

    # A drain while both threads are blocked writing to clients that read nothing: a
    # whole answer (a session of 1.6 MB) and a stream, their write deadline 65 s away,
    # the drain limit 4 s (the stream's turn is told to end at 2.5 s: its error event
    # cannot go in either).
    fake.plan()
    denv = dict(env, VALERIE_TURN_TIMEOUT=str(DRAIN_TURN), VALERIE_SHUTDOWN_TIMEOUT=str(DRAIN))
    with Stack(workers=1, threads=2, env=denv) as st:
        sock = st.socket_path()
        body = json.dumps({"message": " ".join(["w"] * PLAIN_WORDS), "session_id": "big"}).encode()
        c = FcgiClient(sock, timeout=120)
        c.begin("POST", "/api/v1/chat", body_len=len(body))
        for i in range(0, len(body), 60000):
            c.send_body(body[i:i + 60000])
        c.end_body()
        status, _, _ = c.response()
        check(status == 200, f"drain: a turn of {PLAIN_WORDS} words stored: {status}")
        worker = st.worker_pids()[0]
        get = FcgiClient(sock, timeout=120)
        get.begin("GET", "/api/v1/sessions/big", extra={"REQUEST_ID": "drain-get"})
        get.end_body()
        first = first_record(get)
        check(b"Status: 200" in first, f"drain: the session's answer began: {first[:40]!r}")
        stream = stream_request(sock, "drain-stream", WORDS)
        first = first_record(stream)
        check(b"Status: 200" in first, f"drain: the stream began: {first[:40]!r}")
        # Both answers well under way: the rest of either cannot go in (no time measured).
        # NOTE: a unix socket counts the memory of each write, not its bytes: it holds
        # ~200 KB of a whole answer but only ~280 of a stream's small event writes.
        check(wait_until(lambda: queued(get) >= QUEUED and queued(stream) >= QUEUED_EVENTS, 60),
              f"drain: both answers fill their sockets: {queued(get)} and {queued(stream)} bytes")
        kill(worker, signal.SIGTERM)
        check(wait_until(lambda: not alive(worker), DRAIN + 30),
              f"drain: the worker exits after SIGTERM (VALERIE_SHUTDOWN_TIMEOUT={DRAIN})")
        log = st.worker_log()
        check("exiting anyway" not in log and "worker stopped" in log,
              "drain: it stopped cleanly (exit 0), not at the limit with requests in flight "
              f"(exit 1): {[ln for ln in log.splitlines() if 'anyway' in ln or 'stopped' in ln]}")
        for rid, c in (("drain-get", get), ("drain-stream", stream)):
            docs, _ = json_lines(log)
            lines = [d for d in docs if isinstance(d, dict) and d.get("request_id") == rid
                     and "drain limit" in str(d.get("msg"))]
            check(len(lines) == 1, f"drain: one line says {rid} was cut at the drain limit: {lines}")
            out, ended = rest(c)
            check(not ended, f"drain: {rid} ends cut, no end record ({len(out)} bytes more)")
finally:
    fake.stop()

done("test_slow_reader")
