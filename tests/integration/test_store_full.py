"""test_store_full: a session store that is full (LMDB at VALERIE_LMDB_MAP_MB, here its
16 MB floor; Redis at maxmemory with the default noeviction) is a store that refuses new
data, not a store that is down. A turn then answers 507 `store_full` (a stream: an
`error` event saying so), the worker log says "session store full" and how to make room,
reads and readiness go on, `valerie_store_up` stays 1 in every scrape while turns are
refused concurrently (it used to flip with each refused write and each read), and
`valerie_store_full` is 1 until a turn is stored again once room is made, and
/health/detailed says so: the store `full` (not plainly `ok`), the service `degraded` (turns
fail) but 200 (the store answers; no instance is to be pulled or restarted for it)."""
import contextlib
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (TEST_STORES, RedisServer, SseStream, Stack, check, done,  # noqa: E402
                     is_error_doc, post_chat, store_env)

BIG = 256 * 1024         # characters of one message: a 16 MB map holds a few dozen turns
FILL_MAX = 400           # turns before the test gives up filling
REDIS_ROOM = 8 << 20     # bytes Redis may grow by before maxmemory


def value(text, name, labels=None):
    """The sample of `name` whose labels include all of `labels` (dict); None if absent."""
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in (labels or {}).items()):
            return float(m.group(4))
    return None


def scrape(st):
    s, _, body = st.request("GET", "/metrics")
    return body.decode() if s == 200 else ""


def detailed(st):
    """(status code, the document, its dependencies.store) of /health/detailed."""
    s, _, doc = st.json("GET", "/health/detailed")
    return s, doc or {}, ((doc or {}).get("dependencies") or {}).get("store") or {}


def turn(st, sid, size=BIG, fill="x"):
    return post_chat(st, {"message": fill * size, "session_id": sid}, timeout=60)


def redis_used(redis):
    return int(re.search(r"used_memory:(\d+)", redis.command("INFO", "memory")).group(1))


def run(kind, redis=None):
    L = kind
    env = store_env(kind, redis)
    env.update({"VALERIE_LMDB_MAP_MB": "16", "VALERIE_MAX_MESSAGE_CHARS": "1000000"})
    with Stack(workers=2, threads=4, env=env) as st:
        check(value(scrape(st), "valerie_store_full") == 0,
              f"{L}: valerie_store_full starts at 0")
        s, doc, store = detailed(st)
        check(s == 200 and doc.get("status") == "ok" and store.get("status") == "ok"
              and store.get("full") is False,
              f"{L}: /health/detailed: the store ok, not full: {s} {doc}")
        stored, s, doc = 0, None, None
        for i in range(FILL_MAX):
            s, _, doc = turn(st, f"full-{i}")
            if s != 200:
                break
            stored += 1
        print(f"{L}: turns stored before the store was full: {stored}")
        check(stored > 3 and s == 507 and is_error_doc(doc, "store_full")
              and "not stored" in doc["error"].get("message", ""),
              f"{L}: a turn the full store refuses answers 507 store_full, saying it was not "
              f"stored: {s} {doc}")

        # A stream that reaches the append ends with an error event saying so.
        sse = SseStream(st, {"message": "y" * BIG, "session_id": "full-stream",
                             "stream": True})
        events = sse.read_all()
        sse.close()
        last = events[-1] if events else {}
        check(sse.status == 200 and last.get("event") == "error"
              and "store_full" in last.get("data", "")
              and not any(e["event"] == "done" for e in events),
              f"{L}: a stream refused by the full store ends with an error event store_full: "
              f"{sse.status} {[e['event'] for e in events][-3:]} {last.get('data', '')[:200]}")

        # Refused turns from several clients while scraping: the store stays up.
        # NOTE: Redis near maxmemory takes a turn now and then (client buffers come
        # and go); below it, none: that phase must refuse every turn.
        if redis is not None:
            redis.command("CONFIG", "SET", "maxmemory", str(redis_used(redis) // 2))
        stop, codes = threading.Event(), []

        def refused(n):
            while not stop.is_set():
                codes.append(turn(st, f"full-more-{n}")[0])

        clients = [threading.Thread(target=refused, args=(n,)) for n in range(4)]
        for t in clients:
            t.start()
        ups, fulls = [], []
        deadline = time.monotonic() + 4
        try:
            while time.monotonic() < deadline:
                text = scrape(st)
                ups.append(value(text, "valerie_store_up"))
                fulls.append(value(text, "valerie_store_full"))
                s, _, _ = st.request("GET", "/api/v1/sessions/full-0")
                ups.append(value(scrape(st), "valerie_store_up"))
        finally:
            stop.set()
            for t in clients:
                t.join(60)
        check(codes and set(codes) == {507}, f"{L}: every concurrent turn answered 507: "
              f"{sorted(set(codes))} ({len(codes)} turns)")
        check(len(ups) > 5 and set(ups) == {1.0},
              f"{L}: valerie_store_up is 1 in every scrape while turns are refused and reads "
              f"served ({len(ups)} scrapes: {sorted(set(map(str, ups)))})")
        check(set(fulls) == {1.0}, f"{L}: valerie_store_full is 1 while turns are refused: "
              f"{sorted(set(map(str, fulls)))}")
        text = scrape(st)
        check((value(text, "valerie_store_errors_total", {"op": "append"}) or 0) >= 1,
              f"{L}: the refused appends count as store errors of op append")

        # Reads and readiness go on.
        s, _, doc = st.json("GET", "/api/v1/sessions/full-0")
        check(s == 200 and len((doc or {}).get("messages", [])) == 2,
              f"{L}: a stored session still reads: {s}")
        s, _, doc = st.json("GET", "/health/ready")
        check(s == 200, f"{L}: still ready (the store answers): {s} {doc}")
        # Whichever worker answers (the other one may never have met the full store).
        for i in range(4):
            s, doc, store = detailed(st)
            check(s == 200 and doc.get("status") == "degraded" and store.get("status") == "full"
                  and store.get("full") is True and "room" in store.get("error", ""),
                  f"{L}: /health/detailed: the store full, the service degraded, still 200: "
                  f"{s} {doc}")
        log = st.worker_log()
        hint = "VALERIE_LMDB_MAP_MB" if kind == "lmdb" else "maxmemory"
        full_lines = [ln for ln in log.splitlines() if "session store full" in ln]
        check(full_lines and hint in full_lines[-1],
              f"{L}: the worker log says the store is full and names {hint}: "
              f"{full_lines[-1][:300] if full_lines else log[-300:]}")

        # Room made (sessions deleted): turns are stored again, the gauge says so.
        if redis is not None:
            redis.command("CONFIG", "SET", "maxmemory", str(redis.maxmemory))
        for i in range(min(stored, 20)):
            st.request("DELETE", f"/api/v1/sessions/full-{i}")
        s, _, doc = turn(st, "after-room", size=1000)
        check(s == 200 and doc.get("turn") == 1,
              f"{L}: once sessions are deleted a turn is stored again: {s} {doc}")
        check(value(scrape(st), "valerie_store_full") == 0,
              f"{L}: valerie_store_full is back to 0 after a stored turn")
        s, doc, store = detailed(st)
        check(s == 200 and doc.get("status") == "ok" and store.get("status") == "ok"
              and store.get("full") is False,
              f"{L}: /health/detailed: the store ok again once a turn is stored: {s} {doc}")


for kind in TEST_STORES:
    with contextlib.ExitStack() as stack:
        redis = None
        if kind == "redis":
            redis = stack.enter_context(RedisServer())
            redis.maxmemory = redis_used(redis) + REDIS_ROOM
            redis.command("CONFIG", "SET", "maxmemory", str(redis.maxmemory))
            check(redis.command("CONFIG", "GET", "maxmemory-policy")[1] == "noeviction",
                  "redis: maxmemory-policy is noeviction (sessions are never evicted)")
        run(kind, redis)

done("test_store_full")
