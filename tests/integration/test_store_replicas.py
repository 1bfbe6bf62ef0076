"""test_store_replicas: VALERIE_SESSION_REDIS_MIN_REPLICAS, with a real Redis primary and a
real replica on loopback. A turn is answered 200 only once the replica has it (the replica's
own keys show it); with the replica paused (SIGSTOP) a turn is written to the primary but
answered 503 `store_unreplicated` (a stream: an `error` event and no `done`), the log says
how many replicas confirmed; once the replica is back, the same request with the same
Idempotency-Key gets the stored answer (replayed, one turn, not two). The store stays up
(`valerie_store_up` 1, readiness 200). Without the setting nothing waits: a paused replica
changes nothing. Every process is stopped by its PID."""
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (RedisServer, SseStream, Stack, check, done, post_chat,  # noqa: E402
                     wait_until)


def metric(st, name):
    s, _, body = st.request("GET", "/metrics")
    for line in body.decode().splitlines() if s == 200 else []:
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def replica_has(replica, sid, turns):
    """Whether the replica holds `turns` turns of session `sid`."""
    try:
        return replica.command("LLEN", "valerie:{%s}:turns" % sid) == turns
    except (OSError, RuntimeError):
        return False


primary = RedisServer().start()
replica = RedisServer().start()
paused = False
try:
    replica.command("REPLICAOF", "127.0.0.1", primary.port)
    check(wait_until(lambda: primary.command("INFO", "replication").find(
        "connected_slaves:1") >= 0 and "state=online" in primary.command(
            "INFO", "replication"), 20), "the replica is online")
    env = {"VALERIE_SESSION_STORE": "redis", "VALERIE_SESSION_REDIS_URL": primary.url(),
           "VALERIE_SESSION_REDIS_MIN_REPLICAS": "1",
           "VALERIE_SESSION_REDIS_REPLICA_TIMEOUT_MS": "300"}
    with Stack(workers=1, threads=4, env=env) as st:
        # --- the replica confirms: 200, and the replica holds the turn ---
        s, h, d = post_chat(st, {"message": "kept twice", "session_id": "rep-1"})
        check(s == 200 and d.get("turn") == 1 and replica_has(replica, "rep-1", 1),
              f"a turn is answered once the replica has it: {s} {d} "
              f"{replica.command('LLEN', 'valerie:{rep-1}:turns')}")

        # --- the replica paused: written to the primary, answered 503 ---
        os.kill(replica.pid, signal.SIGSTOP)
        paused = True
        key = {"Idempotency-Key": "rep-key-1"}
        body = {"message": "not confirmed", "session_id": "rep-1"}
        s, h, d = post_chat(st, body, key)
        err = (d or {}).get("error") or {}
        check(s == 503 and err.get("code") == "store_unreplicated"
              and "Idempotency-Key" in err.get("message", ""),
              f"an unconfirmed turn is 503 store_unreplicated: {s} {d}")
        check(primary.command("LLEN", "valerie:{rep-1}:turns") == 2,
              "the turn is on the primary all the same")
        log = st.worker_log()
        check("replicas did not confirm" in log and "0 of the 1 replicas" in log,
              f"the log says how many replicas confirmed: {log[-600:]}")
        check(metric(st, "valerie_store_up") == 1.0 and st.request("GET", "/health/ready")[0] == 200,
              f"the store is up, readiness 200: {metric(st, 'valerie_store_up')}")
        # a stream: the answer went out, then an error event, never done
        sse = SseStream(st, {"message": "streamed, unconfirmed", "session_id": "rep-2",
                             "stream": True})
        evs = sse.read_all()
        sse.close()
        names = [e["event"] for e in evs]
        last = json.loads(evs[-1]["data"]) if names else {}
        check(names and names[-1] == "error" and "done" not in names
              and (last.get("error") or {}).get("code") == "store_unreplicated",
              f"a streamed turn ends with an error event store_unreplicated: {names} {last}")

        # --- the replica back: the same key replays the stored answer, one turn ---
        os.kill(replica.pid, signal.SIGCONT)
        paused = False
        check(wait_until(lambda: replica_has(replica, "rep-1", 2), 10),
              "the replica catches up")
        s, h, d = post_chat(st, body, key)
        s2, _, sd = st.json("GET", "/api/v1/sessions/rep-1")
        check(s == 200 and h.get("idempotent-replayed") == "true" and d.get("turn") == 2
              and s2 == 200 and sd.get("turns") == 2,
              f"the retry with the same key replays turn 2, no third turn: {s} "
              f"{h.get('idempotent-replayed')} {d and d.get('turn')} {sd and sd.get('turns')}")

    # --- without the setting: nothing waits on the replica ---
    env_off = {"VALERIE_SESSION_STORE": "redis", "VALERIE_SESSION_REDIS_URL": primary.url()}
    with Stack(workers=1, threads=2, env=env_off) as st:
        os.kill(replica.pid, signal.SIGSTOP)
        paused = True
        s, h, d = post_chat(st, {"message": "no waiting", "session_id": "rep-3"})
        check(s == 200 and d.get("turn") == 1,
              f"VALERIE_SESSION_REDIS_MIN_REPLICAS=0 (the default): 200 with the replica "
              f"paused: {s} {d}")
        os.kill(replica.pid, signal.SIGCONT)
        paused = False
finally:
    if paused:
        os.kill(replica.pid, signal.SIGCONT)
    replica.stop()
    primary.stop()
done("test_store_replicas")
