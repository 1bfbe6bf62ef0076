"""test_errors: every error a client can meet is JSON with the right status: nginx's own
(400, 413, 414, 429, 501, 502, 505) and the worker's (400, 404, 405, 413) for malformed requests
sent straight over FastCGI."""
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (FcgiClient, Stack, alive, check, done, fcgi_get, is_error_doc,  # noqa: E402
                     kill, wait_until)
import http.client  # noqa: E402
import json  # noqa: E402


def raw(port, data, timeout=5):
    """Sends raw bytes to nginx and returns (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else None
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def as_json(body):
    try:
        return json.loads(body)
    except ValueError:
        return None


with Stack(env={"VALERIE_MAX_BODY_BYTES": "4096"}) as st:
    # nginx answers these itself: still JSON.
    s, h, doc = st.json("POST", "/health", body=b"x" * 10000,
                        headers={"Content-Type": "application/json"})
    check(s == 413 and is_error_doc(doc) and h.get("content-type", "").startswith("application/json"),
          f"413 from nginx is JSON: {s} {doc}")
    s, h, body = raw(st.http_port, b"GARBAGE\r\n\r\n")
    check(s == 400 and is_error_doc(as_json(body)), f"malformed HTTP: 400 JSON: {s} {body[:80]!r}")
    s, h, doc = st.json("GET", "/" + "a" * 20000)
    check(s == 414 and is_error_doc(doc), f"huge URI: 414 JSON: {s} {doc}")
    s, h, doc = st.json("GET", "/health", headers={"X-Big": "b" * 20000})
    check(s in (400, 431, 494) and is_error_doc(doc), f"huge header: JSON error: {s} {doc}")
    # An encoding nginx cannot decode (501) and an HTTP version it does not speak on
    # this port (505): nginx's stock pages are HTML.
    s, h, body = raw(st.http_port, b"POST /api/v1/chat HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: gzip\r\nConnection: close\r\n\r\n")
    check(s == 501 and is_error_doc(as_json(body), "not_implemented") and
          h.get("content-type", "").startswith("application/json"),
          f"unknown Transfer-Encoding: 501 JSON: {s} {h.get('content-type')} {body[:80]!r}")
    s, h, body = raw(st.http_port, b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n")
    check(s == 505 and is_error_doc(as_json(body), "http_version_not_supported") and
          h.get("content-type", "").startswith("application/json"),
          f"HTTP/2.0 request line: 505 JSON: {s} {h.get('content-type')} {body[:80]!r}")

    # The worker's own checks, reached without nginx in front.
    sock = st.socket_path()
    s, h, b = fcgi_get(sock, "/nowhere")
    check(s == 404 and is_error_doc(as_json(b), "not_found"), f"worker 404: {s} {b[:80]!r}")
    s, h, b = fcgi_get(sock, "/health", method="DELETE")
    check(s == 405 and is_error_doc(as_json(b), "method_not_allowed") and h.get("allow"),
          f"worker 405 with Allow: {s} {h}")
    c = FcgiClient(sock)
    c.begin("POST", "/health", body_len=10 ** 7)
    c.end_body()
    s, h, b = c.response()
    check(s == 413 and is_error_doc(as_json(b), "payload_too_large"), f"worker 413: {s} {b[:80]!r}")
    c = FcgiClient(sock)
    c.begin("POST", "/health", extra={"CONTENT_LENGTH": "12abc"})
    c.end_body()
    s, h, b = c.response()
    check(s == 400 and is_error_doc(as_json(b), "bad_request"), f"bad Content-Length: {s} {b[:80]!r}")
    c = FcgiClient(sock)
    c.begin("POST", "/health", body_len=100)
    c.send_body(b"{" * 10)
    c.end_body()
    s, h, b = c.response()
    check(s == 400 and is_error_doc(as_json(b), "bad_request"), f"short body: {s} {b[:80]!r}")
    c = FcgiClient(sock)
    c.begin("", "/health")
    c.end_body()
    s, h, b = c.response()
    check(s == 400 and is_error_doc(as_json(b)), f"no method: {s} {b[:80]!r}")

    # The worker takes "/metrics/" for "/metrics": nginx must give the trailing-slash
    # spelling the same location (its allow list), not the open catch-all.
    for path in ("/metrics", "/metrics/"):
        c = http.client.HTTPConnection("127.0.0.1", st.http_port, timeout=10,
                                       source_address=("127.0.0.2", 0))
        c.request("GET", path)
        r = c.getresponse()
        b = r.read()
        c.close()
        check(r.status == 403 and is_error_doc(as_json(b)),
              f"{path} from another address: JSON 403 ({r.status} {b[:60]!r})")

    # With the pool gone, nginx's 502 is JSON.
    workers = st.worker_pids()
    kill(st.pool_pid(), signal.SIGKILL)
    for p in workers:
        kill(p, signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in workers), 5)
    s, h, doc = st.json("GET", "/health")
    check(s == 502 and is_error_doc(doc), f"pool down: 502 JSON: {s} {doc}")

# nginx's per-IP rate limit answers 429 JSON with Retry-After.
with Stack(env={"VALERIE_NGINX_RATE": "1", "VALERIE_NGINX_BURST": "1"}) as st:
    statuses, limited = [], None
    for _ in range(10):
        s, h, doc = st.json("GET", "/health")
        statuses.append(s)
        if s == 429:
            limited = (h, doc)
    check(statuses.count(429) >= 5, f"rate limit rejects the excess: {statuses}")
    check(limited is not None and is_error_doc(limited[1]) and limited[0].get("retry-after"),
          f"429 is JSON with Retry-After: {limited}")
    time.sleep(1.1)
    s, _, _ = st.json("GET", "/health")
    check(s == 200, f"after a second the limit lets requests through again: {s}")

done("test_errors")
