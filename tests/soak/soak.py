#!/usr/bin/env python3
"""soak: Valerie under hours-shaped load, in minutes: what a user and an operator would see.

A real stack (nginx, spawn-fcgi, multiwatch, the worker pool; LMDB or a real redis-server)
in front of the fake OpenAI upstream (tests/fakes/fake_llm.py) that fails a share of its
calls at random, with the offline provider as the fallback. Client threads run a mix of
what users do for SOAK_SECONDS:
  - chat turns on /api/v1/chat, whole and streamed (SSE), each client on its own sessions;
  - OpenAI-compatible completions with X-Session-Id (server-side memory), whole and streamed;
  - streams the client leaves after the first event;
  - session reads, /v1/models, /health/ready; a /metrics scrape every few seconds.
Halfway through, one worker process is killed with SIGKILL (multiwatch must replace it).

It checks, at the end:
  - chat turns answered 200 with a well-formed answer: at least 99% outside the second
    around the kill (the fallback covers the upstream's failures);
  - nothing lost, nothing doubled: every session's stored turns are 1..N without gaps and
    N is the number of turns its client saw answered (a session touched by a failed or
    abandoned turn may hold that turn too: N may then be larger by those, never smaller);
  - turn numbers in answers follow each other per session;
  - the pool is whole again after the kill, and no other worker died;
  - per surviving worker, private resident memory (RssAnon: heap and stacks, where a leak
    shows) and open files from the end of the warm-up
    (a third of the run) to the end grow by less than the limits below (runs of
    120 s and more, without sanitizers, only: shorter runs have no plateau to compare
    against);
  - /metrics answered every scrape, and nginx's error log holds no alert or crit line.
It prints the figures (requests per action and status, RSS and fds per worker over time).

    python3 tests/soak/soak.py [--seconds 600] [--clients 12] [--store lmdb|redis]
    make soak                     # SOAK_SECONDS (600), SOAK_CLIENTS (12), SOAK_STORE (lmdb)

Never asserts a timing: the figures are printed, and memory is compared with memory.
"""
import argparse
import http.client
import json
import os
import random
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from harness import (FakeLLM, RedisServer, SseParser, Stack, answer_problems,  # noqa: E402
                     check, children, done, is_error_doc, read_text, session_exchanges,
                     store_env, wait_until)

RSS_GROWTH_MAX_KB = 8 * 1024    # per worker, warm-up end to run end: about 100 bytes a
                                # request over a 600 s run
FD_GROWTH_MAX = 16              # per worker
SESSIONS_PER_CLIENT = 4
TURNS_PER_SESSION = 25          # then the client moves on to a new session, as users do
ACTIONS = (                     # (name, weight)
    ("chat", 30), ("chat_stream", 20), ("oai", 15), ("oai_stream", 5),
    ("abandon", 5), ("session_get", 15), ("models", 5), ("ready", 5),
)


class Tally:
    """What the clients saw, shared by the client threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.status = {}          # (action, status) -> count
        self.problems = []        # (monotonic time, what): malformed or cut answers
        self.turn_fail = []       # (monotonic time, action, status) of chat turns not 200
        self.turn_ok = 0
        self.seen = {}            # session -> turns answered 200 as the client saw them
        self.uncertain = {}       # session -> turns that may or may not have been stored

    def count(self, action, status):
        with self.lock:
            self.status[(action, status)] = self.status.get((action, status), 0) + 1

    def problem(self, what):
        with self.lock:
            self.problems.append((time.monotonic(), what))


class Client(threading.Thread):
    def __init__(self, idx, st, tally, deadline, seed):
        super().__init__(daemon=True)
        self.idx, self.st, self.tally, self.deadline = idx, st, tally, deadline
        self.rng = random.Random(seed)
        self.sessions = [f"soak-{idx}-{k}-0" for k in range(SESSIONS_PER_CLIENT)]
        self.oai_sessions = [f"soakoai-{idx}-{k}-0" for k in range(SESSIONS_PER_CLIENT)]
        self.next_turn = {}       # session -> the turn number the next answer must carry
        self.used = {}            # session -> turns sent on it
        self.n = 0

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.st.http_port, timeout=60)

    def post(self, path, body, headers=None):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        c = self.conn()
        try:
            c.request("POST", path, body=json.dumps(body), headers=h)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def get(self, path):
        c = self.conn()
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def turn_result(self, action, sid, status, turn):
        """Books one chat turn: 200 with its turn number, or a failure."""
        t = self.tally
        with t.lock:
            if status == 200:
                t.turn_ok += 1
                t.seen[sid] = t.seen.get(sid, 0) + 1
            else:
                t.turn_fail.append((time.monotonic(), action, status))
                t.uncertain[sid] = t.uncertain.get(sid, 0) + 1
        if status != 200:
            self.next_turn.pop(sid, None)   # a failed turn may have been stored
            return
        want = self.next_turn.get(sid)
        if want is not None and turn != want:
            t.problem(f"{action} {sid}: turn {turn}, expected {want}")
        self.next_turn[sid] = turn + 1 if isinstance(turn, int) else None

    def message(self, sid):
        self.n += 1
        return f"soak message {self.n} from client {self.idx} on {sid}"

    def pick(self, pool):
        """A session of `pool` for the next turn; one that had its TURNS_PER_SESSION is
        replaced by a new one, so that sessions stay the size users make them."""
        k = self.rng.randrange(len(pool))
        sid = pool[k]
        self.used[sid] = self.used.get(sid, 0) + 1
        if self.used[sid] >= TURNS_PER_SESSION:
            base, _, gen = sid.rpartition("-")
            pool[k] = f"{base}-{int(gen) + 1}"
        return sid

    def chat(self):
        sid = self.pick(self.sessions)
        s, h, raw = self.post("/api/v1/chat", {"message": self.message(sid), "session_id": sid})
        self.tally.count("chat", s)
        doc = _json(raw)
        if s == 200:
            p = answer_problems(doc, h, sid)
            if p:
                self.tally.problem(f"chat {sid}: {p}")
        elif not is_error_doc(doc):
            self.tally.problem(f"chat {sid}: {s} without a JSON error: {raw[:200]!r}")
        self.turn_result("chat", sid, s, doc.get("turn") if isinstance(doc, dict) else None)

    def stream(self, sid, path, body, headers, action):
        """Reads a whole SSE answer; returns (status, events)."""
        c = self.conn()
        try:
            c.request("POST", path, body=json.dumps(body),
                      headers=dict({"Content-Type": "application/json"}, **headers))
            r = c.getresponse()
            if r.status != 200:
                raw = r.read()
                if not is_error_doc(_json(raw)):
                    self.tally.problem(f"{action} {sid}: {r.status} without a JSON error")
                return r.status, []
            p = SseParser()
            evs = []
            while True:
                chunk = r.read1(65536)
                if not chunk:
                    evs += p.feed(b"", final=True)
                    break
                evs += p.feed(chunk)
            return 200, evs
        finally:
            c.close()

    def chat_stream(self):
        sid = self.pick(self.sessions)
        s, evs = self.stream(sid, "/api/v1/chat",
                             {"message": self.message(sid), "session_id": sid, "stream": True},
                             {}, "chat_stream")
        turn = None
        if s == 200:
            names = [e["event"] for e in evs]
            if not names or names[-1] not in ("done", "error") or \
                    any(n not in ("delta", "done", "error") for n in names):
                self.tally.problem(f"chat_stream {sid}: events {names[:10]}")
            if names and names[-1] == "done":
                doc = _json(evs[-1]["data"])
                p = answer_problems(doc, None, sid)
                if p:
                    self.tally.problem(f"chat_stream {sid}: done {p}")
                turn = doc.get("turn") if isinstance(doc, dict) else None
            else:
                s = 299   # a stream that ended with an error event: a failed turn
        self.tally.count("chat_stream", s)
        self.turn_result("chat_stream", sid, s, turn)

    def oai(self):
        sid = self.pick(self.oai_sessions)
        body = {"model": "gpt-test", "messages": [{"role": "user", "content": self.message(sid)}]}
        s, h, raw = self.post("/v1/chat/completions", body, {"X-Session-Id": sid})
        self.tally.count("oai", s)
        doc = _json(raw)
        turn = None
        if s == 200:
            try:
                ok = (doc["object"] == "chat.completion" and
                      isinstance(doc["choices"][0]["message"]["content"], str))
                turn = int(h.get("x-session-turn", ""))
            except (KeyError, IndexError, TypeError, ValueError):
                ok = False
            if not ok:
                self.tally.problem(f"oai {sid}: {raw[:200]!r} turn header {h.get('x-session-turn')}")
        elif not isinstance(doc, dict) or "error" not in doc:
            self.tally.problem(f"oai {sid}: {s} without an error document: {raw[:200]!r}")
        self.turn_result("oai", sid, s, turn)

    def oai_stream(self):
        body = {"model": "gpt-test", "stream": True,
                "messages": [{"role": "user", "content": self.message("-")}]}
        s, evs = self.stream("-", "/v1/chat/completions", body, {}, "oai_stream")
        if s == 200:
            data = [e["data"] for e in evs]
            if not data or data[-1] != "[DONE]":
                if not any('"error"' in d for d in data):
                    self.tally.problem(f"oai_stream: did not end with [DONE]: {data[-2:]}")
                s = 299
        self.tally.count("oai_stream", s)

    def abandon(self):
        """A stream the client leaves after its first event: whether that turn was
        stored is the server's choice, so its session is one of its own."""
        sid = f"soakgone-{self.idx}-{self.n}"
        c = self.conn()
        try:
            c.request("POST", "/api/v1/chat", body=json.dumps(
                {"message": self.message(sid), "session_id": sid, "stream": True}),
                headers={"Content-Type": "application/json"})
            r = c.getresponse()
            if r.status == 200:
                r.read1(1)
            self.tally.count("abandon", r.status)
        finally:
            c.close()

    def session_get(self):
        sid = self.rng.choice(self.sessions)
        s, raw = self.get(f"/api/v1/sessions/{sid}")
        self.tally.count("session_get", s)
        if s == 200:
            doc = _json(raw)
            turns, p = session_exchanges(doc)
            if p:
                self.tally.problem(f"session_get {sid}: {p[:3]}")
        elif s != 404:
            self.tally.problem(f"session_get {sid}: {s}")

    def simple(self, action, path):
        s, raw = self.get(path)
        self.tally.count(action, s)
        if s != 200:
            self.tally.problem(f"{action}: {s} {raw[:200]!r}")

    def run(self):
        names = [a for a, _ in ACTIONS]
        weights = [w for _, w in ACTIONS]
        while time.monotonic() < self.deadline:
            a = self.rng.choices(names, weights)[0]
            try:
                if a == "models":
                    self.simple(a, "/v1/models")
                elif a == "ready":
                    self.simple(a, "/health/ready")
                else:
                    getattr(self, a)()
            except (OSError, http.client.HTTPException) as e:
                # A connection cut (the killed worker's requests end so at nginx: 502).
                self.tally.count(a, type(e).__name__)
                if a in ("chat", "chat_stream", "oai"):
                    with self.tally.lock:
                        self.tally.turn_fail.append((time.monotonic(), a, type(e).__name__))
                    for sid in self.sessions + self.oai_sessions:
                        self.next_turn.pop(sid, None)
                        with self.tally.lock:
                            self.tally.uncertain[sid] = self.tally.uncertain.get(sid, 0) + 1


def _json(raw):
    try:
        return json.loads(raw)
    except (ValueError, TypeError):
        return None


def proc_sample(pid):
    """(RssAnon kB, open fds, threads, VmRSS kB) of a process, or None when it is gone.
    RssAnon is the heap and the stacks, where a leak shows; VmRSS also counts the pages
    of the LMDB file the process has touched, which grow with the data."""
    try:
        f = {}
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                if k in ("RssAnon", "VmRSS", "Threads"):
                    f[k] = int(v.split()[0])
        return f["RssAnon"], len(os.listdir(f"/proc/{pid}/fd")), f["Threads"], f["VmRSS"]
    except (OSError, ValueError, KeyError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", "600")))
    ap.add_argument("--clients", type=int, default=int(os.environ.get("SOAK_CLIENTS", "12")))
    ap.add_argument("--store", choices=("lmdb", "redis"),
                    default=os.environ.get("SOAK_STORE", "lmdb"))
    ap.add_argument("--fail-rate", type=float, default=0.1,
                    help="share of upstream calls that fail with a 500 (default 0.1)")
    args = ap.parse_args()
    if args.seconds < 10 or args.clients < 1:
        ap.error("--seconds at least 10, --clients at least 1")
    name = "soak"
    redis = None
    fake = FakeLLM()
    try:
        if args.store == "redis":
            redis = RedisServer()
            redis.start()
        env = {
            "VALERIE_LLM_PROVIDER": "openai",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{fake.port}/v1",
            "OPENAI_API_KEY": "sk-test", "OPENAI_MODEL": "gpt-test",
            "VALERIE_LLM_FALLBACKS": "offline",
            # The circuit may open and close many times: that is part of what runs.
        }
        env.update(store_env(args.store, redis))
        fake.control("POST", "/_control/plan",
                     {"fail_rate": args.fail_rate, "fail_mode": "fail-500"})
        with Stack(workers=2, threads=8, env=env) as st:
            run(args, st, name)
    finally:
        fake.stop()
        if redis is not None:
            redis.stop()
    done(name)


def run(args, st, name):
    tally = Tally()
    start = time.monotonic()
    deadline = start + args.seconds
    clients = [Client(i, st, tally, deadline, 1000 + i) for i in range(args.clients)]
    first_workers = sorted(st.worker_pids())
    samples = []            # (t, {pid: (rss, fds, threads)})
    scrapes = [0, 0]        # answered, failed
    killed = None
    kill_at = start + args.seconds / 2
    warm = start + args.seconds / 3
    for c in clients:
        c.start()
    next_scrape = start
    while time.monotonic() < deadline:
        now = time.monotonic()
        samples.append((now - start, {p: proc_sample(p) for p in st.worker_pids()}))
        if now >= next_scrape:
            next_scrape = now + 5
            try:
                s, _, raw = st.request("GET", "/metrics", timeout=10)
                ok = s == 200 and b"valerie_http_requests_total" in raw
            except (OSError, http.client.HTTPException):
                ok = False
            scrapes[0 if ok else 1] += 1
        if killed is None and now >= kill_at:
            pids = st.worker_pids()
            if pids:
                killed = (now, pids[0])
                os.kill(pids[0], signal.SIGKILL)
        time.sleep(1.0)
    for c in clients:
        c.join(120)
    elapsed = time.monotonic() - start
    check(not any(c.is_alive() for c in clients), "every client finished its last request")

    # --- what the clients saw ---
    total = sum(tally.status.values())
    print(f"{total} requests in {elapsed:.0f} s ({total / elapsed:.0f}/s), "
          f"{args.clients} clients, store {args.store}, upstream failing "
          f"{args.fail_rate:.0%} of calls")
    for (a, s), n in sorted(tally.status.items(), key=lambda x: (x[0][0], str(x[0][1]))):
        print(f"  {a:12} {s!s:>22} {n}")
    kt = killed[0] if killed else None
    near_kill = [f for f in tally.turn_fail if kt is not None and kt - 1 <= f[0] <= kt + 5]
    other_fail = [f for f in tally.turn_fail if f not in near_kill]
    turns = tally.turn_ok + len(tally.turn_fail)
    print(f"chat turns: {tally.turn_ok} answered 200, {len(near_kill)} failed around the "
          f"kill, {len(other_fail)} failed otherwise: {other_fail[:5]}")
    check(turns > 0 and tally.turn_ok >= 0.99 * (turns - len(near_kill)),
          f"at least 99% of the chat turns away from the kill succeed "
          f"({tally.turn_ok} of {turns - len(near_kill)})")
    # The kill cuts the answers of the requests that worker held: nginx answers 502, or
    # cuts a stream it had begun. Those are the kill's, not problems.
    problems = [w for t, w in tally.problems if kt is None or not kt - 1 <= t <= kt + 5]
    print(f"answers cut or malformed around the kill: {len(tally.problems) - len(problems)}")
    for p in problems[:20]:
        print("  problem:", p)
    check(not problems, f"every answer away from the kill well formed, turn numbers in "
          f"order ({len(problems)} problems)")

    # --- what the store holds ---
    lost, doubled, bad = [], [], []
    for sid in sorted(set(tally.seen) | set(tally.uncertain)):
        s, _, doc = st.json("GET", f"/api/v1/sessions/{sid}")
        stored = 0
        if s == 200:
            got, p = session_exchanges(doc)
            stored = len(got)
            if p:
                bad.append((sid, p[:2]))
        elif s != 404:
            bad.append((sid, s))
        seen, unsure = tally.seen.get(sid, 0), tally.uncertain.get(sid, 0)
        if stored < seen:
            lost.append((sid, seen, stored))
        elif stored > seen + unsure:
            doubled.append((sid, seen, unsure, stored))
    nsessions = len(set(tally.seen) | set(tally.uncertain))
    check(not bad, f"every session reads back as turns 1..N ({nsessions} sessions): {bad[:3]}")
    check(not lost, f"no turn answered 200 is missing from its session: {lost[:3]}")
    check(not doubled, f"no session holds more turns than were sent: {doubled[:3]}")

    # --- the pool ---
    check(killed is not None, "a worker was killed halfway")
    if killed is not None:
        check(wait_until(lambda: len(st.worker_pids()) == len(first_workers), 15),
              f"multiwatch replaced the killed worker ({len(st.worker_pids())} of "
              f"{len(first_workers)} workers)")
    survivors = [p for p in first_workers if killed is None or p != killed[1]]
    check(all(p in st.worker_pids() for p in survivors),
          f"no other worker died (survivors {survivors}, now {st.worker_pids()})")
    check(scrapes[1] == 0 and scrapes[0] > 0, f"/metrics answered every scrape "
          f"({scrapes[0]} answered, {scrapes[1]} failed)")
    errlog = read_text(os.path.join(st.run_dir, "logs", "error.log"))
    bad_lines = [ln for ln in errlog.splitlines() if re.search(r"\[(alert|crit|emerg)\]", ln)]
    check(not bad_lines, f"nginx logged no alert or crit line: {bad_lines[:2]}")

    # --- memory and files of the workers that ran from start to end ---
    print("per worker, time: RssAnon MB / VmRSS MB / open fds / threads")
    for pid in survivors:
        row = [(t, s[pid]) for t, s in samples if s.get(pid)]
        pick = row[:: max(1, len(row) // 8)] + row[-1:]
        print(f"  {pid}: " + ", ".join(f"{t:.0f}s {v[0] / 1024:.1f}/{v[3] / 1024:.1f}/"
                                       f"{v[1]}/{v[2]}" for t, v in pick))
        after = [v for t, v in row if t >= warm - start]
        if args.seconds >= 120 and after and os.environ.get("VALERIE_SANITIZERS") != "yes":
            base, end = after[0], after[-1]
            check(end[0] - base[0] < RSS_GROWTH_MAX_KB,
                  f"worker {pid} RssAnon from {base[0] / 1024:.1f} MB after the warm-up to "
                  f"{end[0] / 1024:.1f} MB at the end (growth under "
                  f"{RSS_GROWTH_MAX_KB // 1024} MB)")
            check(end[1] - base[1] < FD_GROWTH_MAX,
                  f"worker {pid} open files {base[1]} after the warm-up, {end[1]} at the end")


if __name__ == "__main__":
    main()
