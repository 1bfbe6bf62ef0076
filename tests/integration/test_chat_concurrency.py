"""test_chat_concurrency: 50 clients appending to one session at once, through three
worker processes, lose no turn: the session ends with exactly as many turns as were
answered 200, numbered 1..N without gaps or duplicates, each answer's turn holding that
client's message. And retries of one Idempotency-Key that arrive while the first is
still being answered make one turn, not several. For each store (lmdb, redis)."""
import contextlib
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from harness import (TEST_STORES, RedisServer, Stack, access_lines, answer_problems,  # noqa: E402
                     check, done, is_error_doc, log_time, peak_overlap, post_chat,
                     session_exchanges, store_env)

CLIENTS = 50
TURNS_EACH = 2
WORKERS = 3


def run_together(n, fn):
    """Runs fn(i) in n threads released at once; returns their results in order."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def one(i):
        try:
            barrier.wait(30)
            results[i] = fn(i)
        except Exception as e:  # a transport error is a result too
            results[i] = ("exception", repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results


def same_session(st, kind):
    L = f"[{kind}]"
    sid = f"crowd-{kind}"

    def client(i):
        out = []
        for k in range(TURNS_EACH):
            msg = f"client {i} says {k}"
            s, h, doc = post_chat(st, {"message": msg, "session_id": sid}, timeout=120)
            out.append((msg, s, h, doc))
        return out

    results = run_together(CLIENTS, client)
    flat = [r for res in results if isinstance(res, list) for r in res]
    broken = [res for res in results if not isinstance(res, list)]
    check(not broken, f"{L} no client failed at the transport level: {broken[:3]}")
    ok = [r for r in flat if r[1] == 200]
    bad = [(r[0], r[1], r[3]) for r in flat if r[1] != 200]
    check(len(ok) == CLIENTS * TURNS_EACH,
          f"{L} all {CLIENTS * TURNS_EACH} turns answered 200: {len(ok)}; others {bad[:3]}")
    probs = [p for r in ok for p in answer_problems(r[3], r[2], sid)]
    check(not probs, f"{L} every 200 is an answer document: {probs[:3]}")
    turns = [r[3].get("turn") for r in ok if isinstance(r[3], dict)]
    check(len(set(turns)) == len(turns), f"{L} every 200 answer has its own turn number: "
          f"{len(turns)} answers, {len(set(turns))} distinct")
    check(sorted(turns) == list(range(1, len(ok) + 1)),
          f"{L} the answered turn numbers are 1..{len(ok)}: "
          f"missing {sorted(set(range(1, len(ok) + 1)) - set(turns))[:10]}")

    s, h, doc = st.json("GET", f"/api/v1/sessions/{sid}")
    stored, p = session_exchanges(doc)
    check(s == 200 and not p, f"{L} the session reads back whole: {s} {p[:3]}")
    check(stored == list(range(1, len(ok) + 1)),
          f"{L} the session holds exactly the {len(ok)} turns answered 200, 1..N: "
          f"{len(stored)} turns")
    by_turn = {}
    for m in (doc or {}).get("messages", []):
        by_turn.setdefault(m.get("turn"), {})[m.get("role")] = m.get("content")
    wrong = [(r[3]["turn"], r[0], by_turn.get(r[3]["turn"], {}).get("user")) for r in ok
             if by_turn.get(r[3]["turn"], {}).get("user") != r[0]
             or by_turn.get(r[3]["turn"], {}).get("assistant") != r[3].get("reply")]
    check(not wrong, f"{L} each answer's turn holds that client's message and that reply: "
          f"{wrong[:3]}")

    # Server evidence: several processes answered, and the turns overlapped.
    ids = {r[2].get("x-request-id") for r in ok}
    lines = [d for d in access_lines(st, "/api/v1/chat") if d.get("request_id") in ids]
    pids = {d.get("pid") for d in lines}
    check(len(lines) == len(ok), f"{L} the worker logged every turn: {len(lines)}")
    check(len(pids) >= 2, f"{L} the turns went through several worker processes: {pids}")
    spans = [(log_time(d["time"]) - d["duration_ms"] / 1e3, log_time(d["time"])) for d in lines]
    peak = peak_overlap(spans)
    check(peak >= 5, f"{L} turns were in flight together (peak {peak} at once, by the logs)")


def idempotent_retries(st, kind):
    L = f"[{kind}]"
    sid = f"retry-{kind}"
    s, h, doc = post_chat(st, {"message": "before", "session_id": sid})
    check(s == 200 and doc.get("turn") == 1, f"{L} a first turn: {s}")
    body = {"message": "charge my card", "session_id": sid}
    results = run_together(8, lambda i: post_chat(st, body, {"Idempotency-Key": "pay-77"},
                                                  timeout=120))
    ok = [r for r in results if isinstance(r, tuple) and r[0] == 200]
    other = [r for r in results if not (isinstance(r, tuple) and r[0] == 200)]
    check(ok, f"{L} at least one of 8 simultaneous retries of one key is answered: "
          f"{[r[0] for r in results]}")
    check({(r[2].get("turn"), r[2].get("reply")) for r in ok} == {(2, ok[0][2].get("reply"))}
          if ok else False,
          f"{L} every retry answered 200 carries the same turn (2) and reply: "
          f"{sorted({r[2].get('turn') for r in ok})}")
    check(all(r[0] == 409 and is_error_doc(r[2]) for r in other),
          f"{L} a retry not answered with the stored answer gets a 409 JSON error (in "
          f"progress): {[(r[0], r[2]) for r in other][:3]}")
    s, h, doc = st.json("GET", f"/api/v1/sessions/{sid}")
    stored, p = session_exchanges(doc)
    check(stored == [1, 2] and not p,
          f"{L} simultaneous retries of one Idempotency-Key made one turn: turns {stored}")


for kind in TEST_STORES:
    with contextlib.ExitStack() as es:
        rs = es.enter_context(RedisServer()) if kind == "redis" else None
        env = store_env(kind, rs)
        # A little provider latency, so that turns overlap between load and append.
        env["VALERIE_OFFLINE_DELAY_MS"] = "50"
        st = es.enter_context(Stack(workers=WORKERS, threads=8, env=env))
        check(len(st.worker_pids()) == WORKERS, f"[{kind}] {WORKERS} worker processes: "
              f"{st.worker_pids()}")
        same_session(st, kind)
        idempotent_retries(st, kind)

done("test_chat_concurrency")
