"""test_metrics_port_live: on the metrics port, GET /health/live answers at once while a
scrape waits on a session store that does not answer (a redis-server the test stops with
SIGSTOP): a scrape pings and counts the store, which can take the store's whole command
timeout, and a liveness probe held up behind it would restart the replica because a
dependency is down. The scrapes still answer once the store's timeout passes (store down),
and again normally once it answers. Every process started here is stopped by its PID."""
import http.client
import os
import re
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (RedisServer, Stack, check, done, free_port, kill,  # noqa: E402
                     store_env, wait_until)


def value(text, name):
    """The first sample of `name` (no labels); None if absent."""
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def get(port, path, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


class Scrape(threading.Thread):
    """GET /metrics on its own connection, in the background: the request is sent
    before start() returns; `status`, `body` and `ended` (monotonic) once answered."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        self.status, self.body, self.ended = None, "", None

    def run(self):
        data = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        self.ended = time.monotonic()
        self.sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.match(rb"HTTP/1\.[01] (\d+)", head)
        self.status = int(m.group(1)) if m else None
        self.body = body.decode(errors="replace")


port = free_port()
with RedisServer() as redis:
    stopped = False
    try:
        env = dict(store_env("redis", redis), VALERIE_METRICS_PORT=str(port))
        # One worker: every connection to the port lands on the process whose scrape waits.
        with Stack(workers=1, threads=2, env=env) as st:
            check(wait_until(lambda: value(get(port, "/metrics")[1], "valerie_store_up") == 1, 30),
                  "the metrics port answers, the store up")

            kill(redis.pid, signal.SIGSTOP)
            stopped = True
            scrapes = [Scrape(port), Scrape(port)]
            for s in scrapes:
                s.start()
            time.sleep(0.5)   # both requests read by the worker, the first waiting on the store
            check(all(s.is_alive() for s in scrapes), "the scrapes wait on the stopped store")
            lives = []
            for i in range(3):
                status, body = get(port, "/health/live")
                lives.append((status, time.monotonic(), '"status":"ok"' in body))
            pending = scrapes[0].is_alive()
            for s in scrapes:
                s.join(60)
            first_end = scrapes[0].ended
            check(all(st_ == 200 and ok for st_, _, ok in lives),
                  f"GET /health/live on the port: 200 ok while scrapes wait: {lives}")
            check(pending and first_end is not None and all(t < first_end for _, t, _ in lives),
                  "/health/live answered before the scrape waiting on the store ended "
                  f"(scrape still pending when the probes were done: {pending})")
            check(all(s.status == 200 and value(s.body, "valerie_store_up") == 0 for s in scrapes),
                  f"the waiting scrapes answer once the store times out, store down: "
                  f"{[(s.status, value(s.body, 'valerie_store_up')) for s in scrapes]}")

            kill(redis.pid, signal.SIGCONT)
            stopped = False
            check(wait_until(lambda: value(get(port, "/metrics")[1], "valerie_store_up") == 1, 30),
                  "once the store answers again, a scrape says it is up")
            status, body = get(port, "/health/live")
            check(status == 200, f"GET /health/live after: {status}")
    finally:
        if stopped:
            kill(redis.pid, signal.SIGCONT)

done("test_metrics_port_live")
