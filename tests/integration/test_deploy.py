"""test_deploy: scripts/deploy.sh on this machine. The compose verbs say clearly that
no Docker engine answers and exit 3. --backup then --restore round-trips a session of
a local stack's LMDB store (created through the API, backed up while the pool runs,
deleted, restored with the pool stopped, read back); --restore refuses while the pool
has the data open. With Redis sessions --backup then --restore round-trips a session
over the network (valerie redis-export / redis-import: DELETE, FLUSHALL, restore, the
session reads back with its turns and a TTL, and takes a next turn), and the backup's
RDB snapshot, loaded into a fresh redis-server, holds the session too; redis-import
refuses a truncated or foreign file and an unreachable Redis with distinct exit codes
and a clear message. First, what DEPLOYMENT.md and README.md tell an
operator to type exists: every deploy.sh verb, valerie subcommand and flag, run-local.sh
verb, repository path and variable they name; every compose command's files pass
`docker-compose config -q`; DEPLOYMENT.md has the sections issue 8 asks for."""
import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import (BIN, SRCDIR, RedisServer, Stack, check, done,  # noqa: E402
                     free_port, post_chat, remove_temp, temp_dir)

DEPLOY = os.path.join(SRCDIR, "scripts", "deploy.sh")
tmp = temp_dir("valerie-deploy-")

# --- the documents' commands name things that exist ---
rd = lambda *p: open(os.path.join(SRCDIR, *p)).read()  # noqa: E731
docs = {name: rd(name) for name in ("DEPLOYMENT.md", "README.md")}
deploy_sh, main_c, local_sh = rd("scripts", "deploy.sh"), rd("fcgi", "main.c"), rd("scripts", "run-local.sh")
verbs = {v.strip() for arm in re.findall(r"^\s+(-[-a-z| ]+)\)", deploy_sh, re.M) for v in arm.split("|")}
usage = re.search(r"usage\(FILE \*f\)\s*\{(.*?)\n\}", main_c, re.S).group(1)
sub_usage = dict(re.findall(r'"\s*(?:usage: )?valerie (\[?[a-z-]+(?: new)?)\]?\s([^"]*)', usage))
local_verbs = set(re.search(r"Usage: scripts/run-local.sh ([a-z|]+)", local_sh).group(1).split("|"))
known_vars = set()
for path in (glob.glob(os.path.join(SRCDIR, "scripts", "*")) + glob.glob(os.path.join(SRCDIR, "compose", "*"))
             + glob.glob(os.path.join(SRCDIR, "app", "*.c")) + [os.path.join(SRCDIR, ".env.production.example")]):
    known_vars |= set(re.findall(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9])\b", open(path).read()))
VAR = re.compile(r"`((?:VALERIE|OPENAI|ANTHROPIC|JWT|MCP|RATE_LIMIT|LANGFUSE|OTEL|CORS|FCGI|GRAFANA|"
                 r"PROMETHEUS|CONTEXTO|VERIFY|LOG)_[A-Z0-9_]*[A-Z0-9])`")
PRODUCTS = {"fcgi/valerie"}  # made by the build
compose_runs = set()
for name, text in docs.items():
    for v in sorted(set(re.findall(r"deploy\.sh (--[a-z-]+)", text))):
        check(v in verbs, f"{name}: scripts/deploy.sh {v} is a verb of deploy.sh ({sorted(verbs)})")
    for v in sorted(set(re.findall(r"run-local\.sh ([a-z]+)", text))):
        check(v in local_verbs, f"{name}: run-local.sh {v} is a verb ({sorted(local_verbs)})")
    for cmd, flags in set(re.findall(r"\bvalerie (check-config|token|apikey new|redis-export|redis-import|version|serve)((?: \[?--[a-z]+ [^\s\]`)]+\]?)*)", text)):
        line = sub_usage.get(cmd) if cmd != "serve" else ""
        check(line is not None, f"{name}: `valerie {cmd}` is a subcommand ({sorted(sub_usage)})")
        bad = [f for f in re.findall(r"--[a-z]+", flags) if f not in (line or "")]
        check(not bad, f"{name}: `valerie {cmd}` takes {re.findall(r'--[a-z]+', flags)}: unknown {bad}")
    for path in sorted(set(re.findall(r"(?<![\w/.$-])((?:compose|nginx|scripts|prometheus|grafana|bench|tests|fcgi)"
                                      r"/[\w.*/-]*[\w*/])", text))):
        ok = path in PRODUCTS or glob.glob(os.path.join(SRCDIR, path))
        check(ok, f"{name}: {path} exists in the repository")
    for v in sorted(set(VAR.findall(text))):
        check(v in known_vars, f"{name}: {v} is a variable something reads (example, scripts, compose, app)")
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for cmd in re.sub(r"\\\n\s*", " ", block).splitlines():
            if re.search(r"docker[ -]compose", cmd) and "..." not in cmd:
                files = tuple(f.replace("$PWD/", "") for f in re.findall(r"-f (\S+)", cmd))
                check(files and all(os.path.exists(os.path.join(SRCDIR, f)) for f in files),
                      f"{name}: compose files of `{cmd.strip()[:90]}` exist")
                compose_runs.add(files)
dc = shutil.which("docker-compose")
for files in sorted(compose_runs):
    if dc and files:
        args = [dc] + [a for f in files for a in ("-f", f)]
        r = subprocess.run(args + ["--env-file", ".env.production.example", "config", "-q"], cwd=SRCDIR,
                           capture_output=True, text=True, timeout=120,
                           env={k: v for k, v in os.environ.items() if not k.startswith(("VALERIE_", "LANGFUSE_"))})
        check(r.returncode == 0, f"DEPLOYMENT.md's compose files {files}: config -q {r.stderr.strip()[:200]}")
headings = "\n".join(re.findall(r"^#+ (.*)$", docs["DEPLOYMENT.md"], re.M)).lower()
for want in ("architecture", "quick start", "production", "providers", "observability", "langfuse",
             "scaling", "security checklist", "troubleshooting", "backup"):
    check(want in headings, f"DEPLOYMENT.md has a section on {want}")


def deploy(*args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("VALERIE_")}
    e.update({"VALERIE_ENV_FILE": os.path.join(tmp, "no-such.env"),
              "VALERIE_BACKUP_DIR": os.path.join(tmp, "backups"),
              "VALERIE_BACKUP_TARGET": "local"})
    e.update(env or {})
    return subprocess.run(["bash", DEPLOY, *args], env=e, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


engine = shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
if not engine:
    r = deploy("--status")
    check(r.returncode == 3 and "no Docker engine" in r.stderr, f"--status without an engine: exit {r.returncode}: {r.stderr.strip()}")
    r = deploy("--up")
    check(r.returncode == 3 and "no Docker engine" in r.stderr, f"--up without an engine: exit {r.returncode}")
r = deploy("--nonsense")
check(r.returncode == 2 and "usage" in r.stderr, f"unknown verb: usage, exit 2 ({r.returncode})")
r = deploy("--restore", os.path.join(tmp, "missing.tar.gz"))
check(r.returncode == 1 and "no such backup" in r.stderr, f"--restore of a missing file: {r.stderr.strip()}")

# --- LMDB round trip ---
sid = "deploy-backup-1"
st = Stack()
data = st.env["VALERIE_DATA_DIR"]
benv = {"VALERIE_DATA_DIR": data, "VALERIE_SESSION_STORE": "lmdb"}
try:
    st.start()
    for m in ("first", "second"):
        s, _, doc = post_chat(st, {"message": m, "session_id": sid})
        check(s == 200, f"chat turn '{m}': {s}")
    r = deploy("--backup", env=benv)
    archives = glob.glob(os.path.join(tmp, "backups", "valerie-backup-*.tar.gz"))
    check(r.returncode == 0 and len(archives) == 1, f"--backup while the pool runs: {r.returncode} {r.stdout.strip()} {r.stderr.strip()}")
    with tarfile.open(archives[0]) as t:
        names = t.getnames()
    check(any(n.endswith("lmdb/data.mdb") for n in names) and any(n.endswith("MANIFEST") for n in names),
          f"the archive holds the LMDB copy and a manifest: {names}")
    s, _, _ = st.json("DELETE", f"/api/v1/sessions/{sid}")
    s2, _, _ = st.json("GET", f"/api/v1/sessions/{sid}")
    check(s in (200, 204) and s2 == 404, f"session deleted through the API: {s}, then GET {s2}")
    r = deploy("--restore", archives[0], env=benv)
    check(r.returncode == 1 and "stop it first" in r.stderr, f"--restore refuses while the pool runs: {r.stderr.strip()}")
    st.stop()
    r = deploy("--restore", archives[0], env=benv)
    check(r.returncode == 0 and os.path.exists(os.path.join(data, "data.mdb.before-restore")),
          f"--restore with the pool stopped: {r.returncode} {r.stdout.strip()} {r.stderr.strip()}")
    st.start()
    s, _, doc = st.json("GET", f"/api/v1/sessions/{sid}")
    msgs = [m.get("content") for m in (doc or {}).get("messages", []) if m.get("role") == "user"]
    check(s == 200 and msgs == ["first", "second"], f"the session is back after the restore: {s} {msgs}")
finally:
    st.stop()
    remove_temp(st.dir, "stack files")

# --- Redis: --backup exports Valerie's keys, --restore loads them back over the network ---
rsid = "deploy-redis-1"
with RedisServer() as redis:
    env = {"VALERIE_SESSION_STORE": "redis", "VALERIE_SESSION_REDIS_URL": redis.url()}
    benv = dict(env, VALERIE_BIN=BIN)
    with Stack(env=env) as st:
        for m in ("kept in redis", "and restored"):
            s, _, doc = post_chat(st, {"message": m, "session_id": rsid})
            check(s == 200, f"chat turn '{m}' with Redis sessions: {s}")
        s, _, before = st.json("GET", f"/api/v1/sessions/{rsid}")
        check(s == 200, f"the Redis session reads before the backup: {s}")
        for a in glob.glob(os.path.join(tmp, "backups", "*.tar.gz")):
            os.unlink(a)
        r = deploy("--backup", env=benv)
        archives = glob.glob(os.path.join(tmp, "backups", "valerie-backup-*.tar.gz"))
        check(r.returncode == 0 and len(archives) == 1, f"--backup of Redis: {r.returncode} {r.stderr.strip()}")
        check("key(s) exported" in r.stdout, f"--backup says how many keys it exported: {r.stdout.strip()}")
        with tarfile.open(archives[0]) as t:
            names = t.getnames()
            manifest = t.extractfile([n for n in names if n.endswith("MANIFEST")][0]).read().decode()
        check(any(n.endswith("redis/valerie-keys.bin") for n in names) and any(n.endswith("redis/dump.rdb") for n in names),
              f"the archive holds Valerie's keys and the RDB snapshot: {names}")
        check("redis_keys=redis/valerie-keys.bin" in manifest and "redis=redis/dump.rdb" in manifest,
              f"the MANIFEST names both: {manifest!r}")
        s, _, _ = st.json("DELETE", f"/api/v1/sessions/{rsid}")
        redis.command("FLUSHALL")
        s2, _, _ = st.json("GET", f"/api/v1/sessions/{rsid}")
        left = redis.command("KEYS", f"*{rsid}*")
        check(s in (200, 204) and s2 == 404 and not left,
              f"session deleted and Redis flushed: DELETE {s}, GET {s2}, keys {left}")
        # The pool keeps running: the import goes over the network, no file of Redis's is touched.
        r = deploy("--restore", archives[0], env=benv)
        check(r.returncode == 0 and "key(s) restored" in r.stdout,
              f"--restore of Redis keys while everything runs: {r.returncode} {r.stdout.strip()} {r.stderr.strip()}")
        s, _, after = st.json("GET", f"/api/v1/sessions/{rsid}")
        msgs = [m.get("content") for m in (after or {}).get("messages", []) if m.get("role") == "user"]
        check(s == 200 and msgs == ["kept in redis", "and restored"],
              f"the Redis session is back with its turns: {s} {msgs}")
        check(s == 200 and after.get("messages") == (before or {}).get("messages"),
              "the restored session's messages are the ones backed up")
        for kind in ("meta", "turns"):
            ttl = redis.command("PTTL", f"valerie:{{{rsid}}}:{kind}")
            check(isinstance(ttl, int) and ttl > 0, f"restored valerie:{{{rsid}}}:{kind} still expires: PTTL {ttl}")
        check(redis.command("ZSCORE", "valerie:sessions", rsid) is not None, "the sessions index is restored")
        s, _, doc = post_chat(st, {"message": "after the restore", "session_id": rsid})
        check(s == 200 and (doc or {}).get("turn") == 3, f"the restored session takes turn 3: {s} {(doc or {}).get('turn')}")

    # redis-import on its own: a truncated export, a foreign file, no Redis.
    out = os.path.join(tmp, "redis-keys")
    with tarfile.open(archives[0]) as t:
        t.extractall(out)
    keys_file = glob.glob(os.path.join(out, "*", "redis", "valerie-keys.bin"))[0]
    whole = open(keys_file, "rb").read()
    cut = os.path.join(tmp, "cut.bin")
    foreign = os.path.join(tmp, "foreign.bin")
    with open(cut, "wb") as f:
        f.write(whole[:len(whole) - 20])
    with open(foreign, "wb") as f:
        f.write(b"REDIS0011 not an export\n")
    venv = {k: v for k, v in os.environ.items() if not k.startswith("VALERIE_")}
    venv.update(env)
    redis.command("FLUSHALL")
    imp = lambda path, e=venv: subprocess.run([BIN, "redis-import", path], env=e,  # noqa: E731
                                              capture_output=True, text=True, timeout=60)
    r = imp(cut)
    check(r.returncode == 65 and "truncated export" in r.stderr,
          f"redis-import of a truncated export: exit {r.returncode}: {r.stderr.strip()}")
    redis.command("FLUSHALL")
    r = imp(foreign)
    check(r.returncode == 65 and "not a valerie redis-export file" in r.stderr and redis.command("DBSIZE") == 0,
          f"redis-import of a foreign file writes nothing: exit {r.returncode}: {r.stderr.strip()}")
    r = imp(keys_file, dict(venv, VALERIE_SESSION_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"))
    check(r.returncode == 69 and "cannot connect" in r.stderr,
          f"redis-import with no Redis: exit {r.returncode}: {r.stderr.strip()}")
    r = imp(keys_file)
    check(r.returncode == 0 and redis.command("EXISTS", f"valerie:{{{rsid}}}:turns") == 1,
          f"redis-import of the whole export: exit {r.returncode}: {r.stderr.strip()}")
    out = os.path.join(tmp, "redis-restore")
    with tarfile.open(archives[0]) as t:
        t.extractall(out)
    rdb = glob.glob(os.path.join(out, "*", "redis", "dump.rdb"))
    check(len(rdb) == 1, f"the archive holds redis/dump.rdb: {rdb}")
    fresh = temp_dir("valerie-redis-fresh-")
    shutil.copy(rdb[0], os.path.join(fresh, "dump.rdb"))
    port = free_port()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", fresh,
                          "--appendonly", "no", "--save", ""], stdout=subprocess.DEVNULL)
    try:
        probe = RedisServer(port=port, dir=fresh)
        from harness import wait_until  # noqa: E402
        wait_until(probe.ping, 10)
        keys = probe.command("KEYS", "*deploy-redis-1*")
        check(keys and any("deploy-redis-1" in (k if isinstance(k, str) else k.decode()) for k in keys),
              f"a fresh redis-server loading the snapshot has the session: {keys}")
    finally:
        p.terminate()
        p.wait(10)
        remove_temp(fresh, "redis files")
remove_temp(tmp)
done("test_deploy")
