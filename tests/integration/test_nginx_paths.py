"""test_nginx_paths: nginx applies its per-route rules to every spelling of a path the
application serves. The worker's router takes `/metrics/` for `/metrics` and
`/api/v1/chat/` for `/api/v1/chat` (a trailing slash is ignored), so nginx's exact
locations must cover both: otherwise `/metrics/` escapes the internal-only allow list,
and a chat turn at `/api/v1/chat/` gets the 60 s read timeout of the short routes
instead of the chat routes' longer one and ends in a 504 while the worker still stores
it. Shown on a real stack whose copies of the allow list (deny all) and of the short
routes' read timeout (2 s) are tightened, then nginx reloaded."""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Stack, check, done, is_error_doc, post_chat,  # noqa: E402
                     read_text, wait_until)

DELAY_MS = 4000  # a turn longer than the tightened short-route timeout (2 s)

with Stack(workers=1, threads=4, env={"VALERIE_OFFLINE_DELAY_MS": str(DELAY_MS)}) as st:
    snip = os.path.join(st.run_dir, "nginx", "snippets")
    with open(os.path.join(snip, "metrics-access.conf"), "w") as f:
        f.write("deny all;\n")
    path = os.path.join(snip, "valerie-fastcgi.conf")
    text = read_text(path)
    short = re.sub(r"^fastcgi_read_timeout \d+s;", "fastcgi_read_timeout 2s;", text, flags=re.M)
    check(short != text, "the short routes' fastcgi_read_timeout is in valerie-fastcgi.conf")
    with open(path, "w") as f:
        f.write(short)
    conf = os.path.join(st.run_dir, "nginx", "nginx.conf")
    old_workers = subprocess.run(["pgrep", "-P", str(st.nginx_pid())], capture_output=True,
                                 text=True).stdout.split()
    r = subprocess.run(["nginx", "-p", os.path.join(st.run_dir, "nginx") + "/", "-c", conf,
                        "-e", os.path.join(st.run_dir, "logs", "error.log"), "-s", "reload"],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, f"nginx reloads the tightened configuration: {r.stderr.strip()}")

    def reloaded():
        s, _, _ = st.request("GET", "/metrics")
        return s == 403
    check(wait_until(reloaded, 10), "after the reload /metrics is refused (deny all)")
    # Old workers may still hold keep-alive connections; new requests go to new ones.
    wait_until(lambda: not any(os.path.exists(f"/proc/{p}") for p in old_workers), 10)

    for p in ("/metrics", "/metrics/", "//metrics", "/metrics//"):
        s, h, b = st.request("GET", p)
        check(s == 403 and b"valerie_" not in b,
              f"GET {p}: 403, the metrics stay internal: {s} {b[:60]!r}")

    for p in ("/api/v1/chat", "/api/v1/chat/"):
        t0 = time.time()
        s, h, doc = post_chat(st, {"message": "slow", "session_id": "slash" + str(len(p))},
                              path=p)
        check(s == 200 and isinstance(doc, dict) and doc.get("turn") == 1,
              f"POST {p}: a turn longer than the short routes' timeout is answered: {s} "
              f"{str(doc)[:120]} in {time.time() - t0:.1f}s")
    s, h, doc = st.json("GET", "/health/live")
    check(s == 200 and not is_error_doc(doc), f"the short routes still answer: {s}")

done("test_nginx_paths")
