"""test_chat_persistence: a session keeps its turns across a restart of the whole pool
(`run-local.sh stop` then `start`, same run dir and VALERIE_DATA_DIR for lmdb, same
redis-server for redis), and with redis across a restart of redis-server itself
(persistence on: AOF, stopped by PID and started again on the same port and dir). After
each restart the conversation goes on where it was: the next turn number follows and
the reply remembers the first turn. LMDB in each VALERIE_LMDB_SYNC mode (periodic, intact,
full)."""
import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (TEST_STORES, RedisServer, Stack, alive, check, done, post_chat,  # noqa: E402
                     session_exchanges, store_env, wait_until)


def snapshot(st, sid):
    s, h, doc = st.json("GET", f"/api/v1/sessions/{sid}")
    turns, p = session_exchanges(doc)
    msgs = [(m.get("turn"), m.get("role"), m.get("content"), m.get("ts"))
            for m in (doc or {}).get("messages", [])]
    return s, turns, p, msgs, doc


def talk(st, L, sid, n_from, n_to, first_words):
    for n in range(n_from, n_to + 1):
        s, h, doc = post_chat(st, {"message": f"{first_words if n == 1 else 'and'} {n}",
                                   "session_id": sid})
        check(s == 200 and doc.get("turn") == n, f"{L} {sid}: turn {n}: {s} "
              f"{doc and doc.get('turn')}")
        if n > 1:
            check(first_words in doc.get("reply", ""),
                  f"{L} {sid}: turn {n} remembers the first turn")


def same_after(st, L, what, before):
    for sid, (s0, t0, p0, m0, d0) in before.items():
        s, turns, p, msgs, doc = snapshot(st, sid)
        check(s == 200 and turns == t0 and not p, f"{L} after {what}: {sid} still has turns "
              f"{t0}: {s} {turns} {p}")
        check(msgs == m0 and doc.get("created_at") == d0.get("created_at")
              and doc.get("owner") == d0.get("owner"),
              f"{L} after {what}: {sid} reads back identical (messages, times, owner)")


def ready(st):
    try:
        return st.json("GET", "/health/ready")[0] == 200
    except OSError:
        return False


def restart_pool(st, L):
    old = st.worker_pids()
    st.stop()
    check(not any(alive(p) for p in old), f"{L} the pool is gone after stop: {old}")
    st.start()
    new = st.worker_pids()
    check(new and not set(new) & set(old), f"{L} new worker processes after start: {old} -> {new}")


for kind in TEST_STORES:
    L = f"[{kind}]"
    with contextlib.ExitStack() as es:
        rs = es.enter_context(RedisServer()) if kind == "redis" else None
        st = es.enter_context(Stack(workers=2, threads=4, env=store_env(kind, rs)))
        sids = {f"keep-{kind}-a": "marmalade", f"keep-{kind}-b": "quince"}
        for sid, w in sids.items():
            talk(st, L, sid, 1, 3, w)
        before = {sid: snapshot(st, sid) for sid in sids}

        restart_pool(st, L)
        same_after(st, L, "a restart of the pool", before)
        for sid, w in sids.items():
            talk(st, L, sid, 4, 4, w)
        if kind == "lmdb":
            check(os.path.exists(os.path.join(st.dir, "data", "data.mdb")),
                  f"{L} the sessions live in VALERIE_DATA_DIR")

        if kind == "redis":
            before = {sid: snapshot(st, sid) for sid in sids}
            old_pid = rs.pid
            rs.stop()
            check(not alive(old_pid), f"{L} redis-server (pid {old_pid}) stopped")
            rs.start()
            check(rs.pid != old_pid, f"{L} redis-server started again on port {rs.port} "
                  f"(pid {rs.pid})")
            check(wait_until(lambda: ready(st), 30, 0.2),
                  f"{L} the pool is ready again after redis-server's restart")
            same_after(st, L, "a restart of redis-server", before)
            # (test_chat_faults holds the pool to account for how soon every thread
            # is back; here a chat on another session waits for one to be.)
            wait_until(lambda: post_chat(st, {"message": "ping", "session_id": "warm"})[0]
                       == 200, 30, 0.2)
            for sid, w in sids.items():
                talk(st, L, sid, 5, 5, w)

            # Both at once: the pool and redis-server.
            before = {sid: snapshot(st, sid) for sid in sids}
            st.stop()
            rs.stop()
            rs.start()
            st.start()
            same_after(st, L, "a restart of both the pool and redis-server", before)
            for sid, w in sids.items():
                talk(st, L, sid, 6, 6, w)

# The other LMDB sync modes keep sessions across a restart the same way.
for sync in (("intact", "full") if "lmdb" in TEST_STORES else ()):
    L = f"[lmdb, VALERIE_LMDB_SYNC={sync}]"
    with Stack(workers=2, threads=2, env={"VALERIE_SESSION_STORE": "lmdb",
                                          "VALERIE_LMDB_SYNC": sync}) as st:
        sids = {f"keep-{sync}": "medlar"}
        talk(st, L, f"keep-{sync}", 1, 2, "medlar")
        before = {sid: snapshot(st, sid) for sid in sids}
        restart_pool(st, L)
        same_after(st, L, "a restart of the pool", before)
        talk(st, L, f"keep-{sync}", 3, 3, "medlar")

done("test_chat_persistence")
