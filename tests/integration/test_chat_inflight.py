"""test_chat_inflight: requests do not wait for one another inside a process. One worker
process with 256 threads, the offline provider at 1 s latency, 200 chat turns sent at
once (different sessions): the worker's own access log shows them in flight together.
Each access line is written when its request ends ("time") and says how long it took
("duration_ms"), so start = end - duration; the peak number of overlapping
[start, end] intervals must be well above 100 (a process that served requests one
at a time, or a few at a time, would show a peak of 1 or a few)."""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Stack, access_lines, answer_problems, check, done, log_time,  # noqa: E402
                     peak_overlap, post_chat)

N = 200
DELAY_MS = 1000
PEAK_MIN = 150

env = {"VALERIE_OFFLINE_DELAY_MS": str(DELAY_MS), "VALERIE_NGINX_RATE": "100000",
       "VALERIE_NGINX_BURST": "100000", "VALERIE_NGINX_CONN": "10000",
       "VALERIE_SOCKET_BACKLOG": "1024"}
with Stack(workers=1, threads=256, env=env) as st:
    pids = st.worker_pids()
    check(len(pids) == 1, f"one worker process: {pids}")
    barrier = threading.Barrier(N)
    results = [None] * N

    def client(i):
        try:
            barrier.wait(60)
            results[i] = post_chat(st, {"message": f"in flight {i}", "session_id": f"fly-{i}"},
                                   timeout=120)
        except Exception as e:
            results[i] = ("exception", repr(e), None)

    # Small stacks: 200 client threads should cost the client little.
    threading.stack_size(256 * 1024)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)

    ok = [r for r in results if r and r[0] == 200]
    check(len(ok) == N, f"all {N} turns answered 200: {len(ok)}; others "
          f"{[r for r in results if not r or r[0] != 200][:3]}")
    check(all(not answer_problems(r[2], r[1]) and r[2].get("turn") == 1 for r in ok),
          "every answer is a turn-1 answer document")

    ids = {r[1].get("x-request-id") for r in ok}
    lines = [d for d in access_lines(st, "/api/v1/chat") if d.get("request_id") in ids]
    check(len(lines) == len(ok), f"the worker logged every turn: {len(lines)} of {len(ok)}")
    check({d.get("pid") for d in lines} <= set(pids), "all were served by the one process")
    check(all(d.get("duration_ms", 0) >= DELAY_MS for d in lines),
          f"each turn spent the provider's {DELAY_MS} ms in the worker (log durations): "
          f"min {min((d.get('duration_ms', 0) for d in lines), default=None)}")
    spans = [(log_time(d["time"]) - d["duration_ms"] / 1e3, log_time(d["time"])) for d in lines]
    peak = peak_overlap(spans)
    check(peak >= PEAK_MIN, f"the worker's log shows {peak} turns in flight at once "
          f"(at least {PEAK_MIN} of {N})")
    check(st.worker_pids() == pids, "the worker did not restart")

done("test_chat_inflight")
