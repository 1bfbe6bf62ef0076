"""test_local_stop: `scripts/run-local.sh stop` stops the workers of its run dir even when
their multiwatch is gone (killed with SIGKILL: the workers go on, holding the FastCGI
socket and the LMDB environment). `status` says they are there, `start` refuses to start
a second pool beside them, `stop` finds them by the socket they hold and stops them by
PID (SIGTERM, then SIGKILL for one that does not stop in VALERIE_STOP_TIMEOUT), says so,
and removes the socket; another stack running meanwhile is untouched, and the run dir
starts again afterwards with its sessions. Likewise nginx's workers once their master is
killed: they go on serving the run dir's ports until `stop` finds them (by the run dir's
logs they hold) and stops them, also when the run dir is reached through a symlink (the
logs' paths in /proc are resolved, and used to be compared with the path as written).

A process that SIGKILL does not end (here one `stop`'s kill is told to spare, as a process
stuck in the kernel would be) is named as still running, is not said to be stopped, and
`stop` exits 1. A run dir whose path holds a space and a backslash (start refuses to write
one into nginx.conf, but a pool started by scripts/valerie-pool.sh, or nginx by hand, may
use it) has its left-over workers and nginx processes found and stopped all the same:
they used to be missed (`awk -v` took the backslash for an escape, the space split the
path in /proc/net/unix, and stop refused the run dir outright)."""
import os
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (BIN, RUN_LOCAL, SRCDIR, Stack, alive, check, children, done,  # noqa: E402
                     free_port, kill, post_chat, read_pid, temp_dir, wait_until)

# A bash function `kill` (bash takes exported functions from its environment, and a
# function comes before the builtin) that never sends SIGKILL to $UNKILLABLE.
SPARING_KILL = ('() { local a s="" args=(); for a in "$@"; do case "$a" in -KILL | -9 | -SIGKILL) '
                's=KILL ;; esac; done; if [ "$s" = KILL ]; then for a in "$@"; do '
                '[ "$a" = "$UNKILLABLE" ] || args+=("$a"); done; builtin kill "${args[@]}"; '
                'else builtin kill "$@"; fi; }')


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def socket_named(path):
    """Whether any unix socket bound to `path` is still open (listening or accepted)."""
    with open("/proc/net/unix") as f:
        return any(line.split()[7:8] == [path] for line in f.readlines()[1:])


def orphaned_nginx(st, where, nworkers):
    """Kills nginx's master of `st`: its workers go on serving the run dir's ports; status
    names them, stop stops them and frees the ports. `nworkers` gets their pids (for the
    caller's clean-up); `where` is said in the checks."""
    master = st.nginx_pid()
    nworkers[:] = children(master)
    kill(master, signal.SIGKILL)
    check(wait_until(lambda: not alive(master), 10),
          f"nginx's master{where} is gone after SIGKILL")
    check(nworkers and all(alive(p) for p in nworkers), f"its workers go on: {nworkers}")
    r = st.script("status")
    check(r.returncode == 1 and all(str(p) in r.stdout for p in nworkers),
          f"status{where} names the nginx processes left (exit 1): {r.returncode} "
          f"{r.stdout!r}")
    r = st.script("stop")
    out = r.stdout + r.stderr
    check(r.returncode == 0 and "left-over nginx processes stopped" in out
          and all(str(p) in out for p in nworkers),
          f"stop{where} stops them and says which: {r.returncode} {out!r}")
    check(wait_until(lambda: not any(alive(p) for p in nworkers), 10),
          f"no nginx process of the run dir is left: {[p for p in nworkers if alive(p)]}")
    check(port_free(st.http_port) and port_free(st.https_port),
          f"the run dir's ports are free{where}")


with Stack(workers=2, threads=2) as other, \
        Stack(workers=2, threads=2, env={"VALERIE_STOP_TIMEOUT": "3"}) as st:
    s, _, doc = post_chat(st, {"message": "remember me", "session_id": "orphans"})
    check(s == 200 and doc.get("turn") == 1, f"a turn before the pool's supervisor dies: {s}")
    others = [other.pool_pid()] + other.worker_pids()
    pool, workers = st.pool_pid(), st.worker_pids()
    check(len(workers) == 2, f"two workers: {workers}")

    kill(pool, signal.SIGKILL)
    check(wait_until(lambda: not alive(pool), 10), "multiwatch is gone after SIGKILL")
    check(all(alive(p) for p in workers), f"its workers go on without it: {workers}")

    r = st.script("status")
    check(r.returncode == 1 and all(str(p) in r.stdout for p in workers)
          and "still hold the socket" in r.stdout,
          f"status says workers are left and names them (exit 1): {r.returncode} {r.stdout!r}")

    # Without nginx and multiwatch, start must not put a second pool beside them.
    nginx = st.nginx_pid()
    kill(nginx, signal.SIGQUIT)
    check(wait_until(lambda: not alive(nginx), 15), "nginx stopped by its pid")
    r = st.script("start")
    check(r.returncode != 0 and all(str(p) in r.stderr for p in workers) and "stop" in r.stderr,
          f"start refuses while the left workers run, naming them: {r.returncode} {r.stderr!r}")
    check(all(alive(p) for p in workers) and st.pool_pid() in (None, pool),
          f"start touched nothing: workers {workers} alive, no new pool ({st.pool_pid()})")

    # One worker stopped (SIGSTOP) does not act on SIGTERM: stop must escalate.
    kill(workers[1], signal.SIGSTOP)
    r = st.script("stop")
    out = r.stdout + r.stderr
    check(r.returncode == 0 and "left-over workers stopped" in out
          and all(str(p) in out for p in workers),
          f"stop stops the left workers and says which: {r.returncode} {out!r}")
    check("killing them" in out, f"the one that ignored SIGTERM was killed: {out!r}")
    check(not any(alive(p) for p in workers), f"no worker of the run dir is left: {workers}")
    check(not os.path.exists(st.socket_path()) and not socket_named(st.socket_path()),
          "the socket is gone: no file, nothing holds it")
    r = st.script("status")
    check(r.returncode == 3, f"status: nothing runs (exit 3): {r.returncode} {r.stdout!r}")

    check(all(alive(p) for p in others), f"the other stack's pool and workers are untouched: "
          f"{others}")
    s, _, _ = other.json("GET", "/health/ready")
    check(s == 200, f"the other stack still answers: {s}")

    st.start()
    s, _, doc = post_chat(st, {"message": "still there?", "session_id": "orphans"})
    check(s == 200 and doc.get("turn") == 2,
          f"the run dir starts again and the session goes on: {s} {doc and doc.get('turn')}")

    # nginx's master killed: its workers go on serving the run dir's ports.
    orphaned_nginx(st, "", [])
    check(all(alive(p) for p in others), "the other stack is still untouched")

    # A left-over worker that SIGKILL does not end: named as such, not "stopped", exit 1.
    st.start()
    pool, workers = st.pool_pid(), st.worker_pids()
    kill(pool, signal.SIGKILL)
    check(wait_until(lambda: not alive(pool), 10), "multiwatch is gone after SIGKILL (again)")
    kill(workers[1], signal.SIGSTOP)
    env = dict(st.env, VALERIE_STOP_TIMEOUT="1", UNKILLABLE=str(workers[1]))
    env["BASH_FUNC_kill%%"] = SPARING_KILL
    r = subprocess.run(["bash", RUN_LOCAL, "stop"], env=env, cwd=st.dir, capture_output=True,
                       text=True, timeout=120)
    out = r.stdout + r.stderr
    stopped = [ln for ln in out.splitlines() if "left-over workers stopped" in ln]
    check(r.returncode == 1 and f"(pids {workers[1]}) survived SIGKILL" in out,
          f"stop names the worker that survived SIGKILL and exits 1: {r.returncode} {out!r}")
    check(stopped == [f"run-local: left-over workers stopped (pids {workers[0]})"],
          f"... and says stopped only of the one that is gone: {stopped}")
    check(not alive(workers[0]) and alive(workers[1]), f"as it is: {workers}")
    kill(workers[1], signal.SIGKILL)
    check(wait_until(lambda: not alive(workers[1]), 10), "the survivor killed by the test")
    r = st.script("stop")
    check(r.returncode == 0, f"then stop exits 0: {r.returncode} {r.stdout!r} {r.stderr!r}")


# A run dir reached through a symlink: /proc/PID/fd links read the resolved path of the
# logs nginx holds, and stop used to compare them with the path as written, missing nginx's
# workers once their master was gone.
linked = Stack(workers=1, threads=2)
real_run = os.path.join(linked.dir, "real-run")
os.makedirs(real_run)
link_run = os.path.join(linked.dir, "run-link")
os.symlink(real_run, link_run)
linked.env["VALERIE_RUN_DIR"] = linked.run_dir = link_run
nworkers = []
try:
    with linked:
        check(os.path.exists(os.path.join(real_run, "logs", "error.log")),
              "the stack runs in the symlink's target")
        orphaned_nginx(linked, " (run dir through a symlink)", nworkers)
finally:
    for p in nworkers:
        if alive(p):
            kill(p, signal.SIGKILL)


# One run dir, two names: a stack started through its real path is found by status and
# stop through a symlink to it, and one started through the symlink by its real path.
# Each used to compare the path as written with the one the stack was started with
# (nginx's `-c` and multiwatch's VALERIE_RUN_DIR), said "not running" and left it all up.
def by_other_name(start_dir, other_dir, label):
    st = Stack(workers=1, threads=2)
    st.env["VALERIE_RUN_DIR"] = st.run_dir = start_dir
    try:
        with st:
            pool = st.pool_pid()
            master = read_pid(os.path.join(start_dir, "nginx", "nginx.pid"))
            procs = [pool, master] + children(pool) + children(master)
            check(len(procs) >= 4 and all(alive(p) for p in procs),
                  f"{label}: a stack started: {procs}")
            st.env["VALERIE_RUN_DIR"] = other_dir
            r = st.script("status")
            check(r.returncode == 0 and "not running" not in r.stdout,
                  f"{label}: status through the other name sees it: {r.returncode} {r.stdout!r}")
            r = st.script("stop")
            check(r.returncode == 0, f"{label}: stop through the other name: {r.returncode} "
                  f"{r.stdout!r} {r.stderr!r}")
            check(wait_until(lambda: not any(alive(p) for p in procs), 15),
                  f"{label}: ... stops all of it: {[p for p in procs if alive(p)]}")
            check(not os.path.exists(os.path.join(start_dir, "valerie.sock")),
                  f"{label}: ... and removes the socket")
    finally:
        for p in [read_pid(os.path.join(start_dir, "pool.pid")),
                  read_pid(os.path.join(start_dir, "nginx", "nginx.pid"))]:
            if p and alive(p):
                kill(p, signal.SIGKILL)


names = temp_dir("valerie-it-")
for n, (first, second) in enumerate((("real", "link"), ("link", "real"))):
    real = os.path.join(names, f"real-{n}")
    os.makedirs(real)
    link = os.path.join(names, f"link-{n}")
    os.symlink(real, link)
    path = {"real": real, "link": link}
    by_other_name(path[first], path[second], f"started as {first}, stopped as {second}")


def run_local(verb, run_dir):
    return subprocess.run(["bash", RUN_LOCAL, verb], env=dict(os.environ, VALERIE_RUN_DIR=run_dir),
                          cwd=SRCDIR, capture_output=True, text=True, timeout=120)


def nginx_quoted(path):
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Left-over workers and nginx processes of a run dir named with a space and a backslash.
base = temp_dir("valerie-it-")
odd = os.path.join(base, "odd run\\dir")
os.makedirs(os.path.join(odd, "logs"))
os.makedirs(os.path.join(odd, "nginx"))
r = run_local("start", odd)
check(r.returncode != 0 and "must not contain" in r.stderr,
      f"start refuses to write such a run dir into nginx.conf: {r.returncode} {r.stderr!r}")
started = []
try:
    pool_pidfile = os.path.join(odd, "pool.pid")
    env = dict(os.environ, VALERIE_BIN=BIN, VALERIE_RUN_DIR=odd,
               VALERIE_LISTEN=os.path.join(odd, "valerie.sock"),
               VALERIE_POOL_PIDFILE=pool_pidfile, VALERIE_POOL_LOG=os.path.join(odd, "logs",
                                                                               "valerie.log"),
               VALERIE_WORKERS="2", VALERIE_THREADS="2", VALERIE_DATA_DIR=os.path.join(odd, "data"))
    subprocess.run(["bash", os.path.join(SRCDIR, "scripts", "valerie-pool.sh")], env=env,
                   stdin=subprocess.DEVNULL, check=True, timeout=60)
    pool = read_pid(pool_pidfile)
    check(wait_until(lambda: len(children(pool)) == 2, 15), f"a pool in {odd!r}: {pool}")
    workers = children(pool)
    started += [pool] + workers
    conf = os.path.join(odd, "nginx", "nginx.conf")
    logs = os.path.join(odd, "logs")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
pid {nginx_quoted(os.path.join(odd, "nginx", "nginx.pid"))};
error_log {nginx_quoted(os.path.join(logs, "error.log"))} warn;
events {{ worker_connections 64; }}
http {{
    access_log {nginx_quoted(os.path.join(logs, "access.log"))};
    server {{ listen 127.0.0.1:{free_port()}; return 204; }}
}}
""")
    subprocess.run(["nginx", "-p", os.path.join(odd, "nginx") + "/", "-c", conf, "-e",
                    os.path.join(logs, "error.log")], check=True, timeout=30,
                   stdin=subprocess.DEVNULL, capture_output=True)
    master = read_pid(os.path.join(odd, "nginx", "nginx.pid"))
    check(wait_until(lambda: len(children(master)) == 1, 15), f"nginx in {odd!r}: {master}")
    nworkers = children(master)
    started += [master] + nworkers

    kill(pool, signal.SIGKILL)
    kill(master, signal.SIGKILL)
    check(wait_until(lambda: not alive(pool) and not alive(master), 10),
          "multiwatch and nginx's master are gone after SIGKILL")
    left = workers + nworkers
    check(left and all(alive(p) for p in left), f"their workers go on: {left}")
    r = run_local("status", odd)
    check(r.returncode == 1 and all(str(p) in r.stdout for p in left),
          f"status names them (exit 1): {r.returncode} {r.stdout!r} {r.stderr!r}")
    r = run_local("stop", odd)
    out = r.stdout + r.stderr
    check(r.returncode == 0 and "left-over workers stopped" in out
          and "left-over nginx processes stopped" in out and all(str(p) in out for p in left),
          f"stop finds and stops them: {r.returncode} {out!r}")
    check(wait_until(lambda: not any(alive(p) for p in left), 10),
          f"nothing of the run dir is left: {[p for p in left if alive(p)]}")
finally:
    for p in started:
        if alive(p):
            kill(p, signal.SIGKILL)

done("test_local_stop")
