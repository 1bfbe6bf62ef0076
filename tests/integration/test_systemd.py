"""test_systemd: scripts/valerie.service passes `systemd-analyze verify` (its ExecStart
pointed at the repository's launcher, the only path that differs on this machine), runs
the pool as a non-root user with the hardening options, and stops it the way
multiwatch and the workers expect (SIGTERM to multiwatch alone, a stop timeout longer
than VALERIE_SHUTDOWN_TIMEOUT). scripts/valerie.logrotate passes `logrotate -d` and,
pointed at a temp dir, really rotates a log in place (copytruncate)."""
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRCDIR, check, done, read_text, remove_temp, temp_dir  # noqa: E402

UNIT = os.path.join(SRCDIR, "scripts", "valerie.service")
ROTATE = os.path.join(SRCDIR, "scripts", "valerie.logrotate")
unit = read_text(UNIT)
tmp = temp_dir("valerie-systemd-")

settings = {}
section = None
for line in unit.splitlines():
    line = line.strip()
    if not line or line.startswith(("#", ";")):
        continue
    if line.startswith("["):
        section = line.strip("[]")
        continue
    k, _, v = line.partition("=")
    settings.setdefault((section, k), []).append(v)


def get(k, section="Service"):
    return settings.get((section, k), [None])[-1]


sad = shutil.which("systemd-analyze")
if sad:
    variant = os.path.join(tmp, "valerie.service")
    with open(variant, "w") as f:
        f.write(unit.replace("/usr/local/bin/valerie-pool.sh",
                             os.path.join(SRCDIR, "scripts", "valerie-pool.sh")))
    r = subprocess.run([sad, "verify", variant], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0 and not r.stderr.strip(), f"systemd-analyze verify: {r.returncode} {r.stderr.strip()}")
else:
    print("(no systemd-analyze: structural checks only)")
    check({"Unit", "Service", "Install"} <= {s for s, _ in settings}, "unit has its three sections")

check(get("ExecStart") == "/usr/local/bin/valerie-pool.sh --foreground",
      f"ExecStart is the one launcher, in the foreground: {get('ExecStart')}")
check(get("Type") == "simple", "Type=simple (the launcher execs into multiwatch)")
check(get("User") and get("User") != "root" and get("Group"), f"non-root User={get('User')}")
check(get("EnvironmentFile"), f"EnvironmentFile={get('EnvironmentFile')}")
env = dict(e.split("=", 1) for e in settings.get(("Service", "Environment"), []))
# systemd lets EnvironmentFile= win over Environment=: the operator's copy of the example
# must not quietly move what the unit decides (a data dir outside ReadWritePaths, a
# socket nginx does not look for).
example = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$",
                          read_text(os.path.join(SRCDIR, ".env.production.example")), re.M))
clash = {k: (v, example[k]) for k, v in env.items() if k in example and example[k] != v}
check(not clash, f"the env file agrees with the unit's Environment= lines (the file wins): {clash}")
check(env.get("VALERIE_ENV_FILE") == get("EnvironmentFile").lstrip("-"),
      f"VALERIE_ENV_FILE names the EnvironmentFile, for the production mode check: "
      f"{env.get('VALERIE_ENV_FILE')}")
data = env.get("VALERIE_DATA_DIR")
check(data and data in (get("ReadWritePaths") or "").split(),
      f"the data dir {data} is writable under ProtectSystem=strict")
check(os.path.dirname(env.get("VALERIE_LISTEN", "")) in (get("ReadWritePaths") or "").split(),
      "the socket's directory is writable")
for k, want in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                ("ProtectHome", "yes"), ("PrivateDevices", "yes"), ("RestrictSUIDSGID", "yes"),
                ("CapabilityBoundingSet", ""), ("MemoryDenyWriteExecute", "yes")):
    check(get(k) == want, f"hardening {k}={want} ({get(k)!r})")
# multiwatch: SIGTERM = "stop: send the workers SIGUSR1, wait for them".
check(get("KillSignal") == "SIGTERM" and get("KillMode") == "mixed",
      f"SIGTERM to multiwatch alone: KillSignal={get('KillSignal')} KillMode={get('KillMode')}")
drain = int(re.search(r"^VALERIE_SHUTDOWN_TIMEOUT=(\d+)",
                      read_text(os.path.join(SRCDIR, ".env.production.example")), re.M).group(1))
stop = int(re.match(r"(\d+)s?$", get("TimeoutStopSec")).group(1))
check(stop > drain, f"TimeoutStopSec {stop}s > VALERIE_SHUTDOWN_TIMEOUT {drain}s")
check(get("RestartPreventExitStatus") == "78", "an invalid configuration (exit 78) is not restarted in a loop")

# A pool whose workers all keep dying (a data dir it cannot write, a port taken): multiwatch
# gives up on each ("died to often, not forking again") and then exits 0, as if stopped on
# purpose. Restart=on-failure would leave the host without a pool and the unit "inactive
# (dead)"; the unit must restart a clean exit too (the 78 above still stops it).
fake = os.path.join(tmp, "dying-valerie")
with open(fake, "w") as f:
    f.write("#!/bin/sh\n[ \"$1\" = check-config ] && exit 0\nexit 1\n")
os.chmod(fake, 0o755)
penv = dict(os.environ, VALERIE_BIN=fake, VALERIE_LISTEN=os.path.join(tmp, "pool.sock"),
            VALERIE_WORKERS="2", VALERIE_POOL_RETRIES="1", VALERIE_POOL_RETRY_MS="10000")
try:
    r = subprocess.run(["bash", os.path.join(SRCDIR, "scripts", "valerie-pool.sh"), "--foreground"],
                       env=penv, capture_output=True, text=True, timeout=60)
    check(r.returncode == 0 and "not forking again" in r.stderr,
          f"multiwatch gives up on workers that keep dying and exits {r.returncode}: "
          f"{r.stderr.strip()[-200:]!r}")
except subprocess.TimeoutExpired:
    check(False, "multiwatch gives up on workers that keep dying (it still ran after 60 s)")
check(get("Restart") == "always",
      f"Restart=always: a pool that exited 0 after its workers kept dying is restarted "
      f"(Restart={get('Restart')})")

# --- logrotate ---
lr = shutil.which("logrotate") or "/usr/sbin/logrotate"
if check(os.path.exists(lr), "logrotate is installed"):
    r = subprocess.run([lr, "-d", "-s", os.path.join(tmp, "state"), ROTATE],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    check(r.returncode == 0 and "error" not in out.lower(), f"logrotate -d: {r.returncode} {out.strip()[-300:]}")
    logs = os.path.join(tmp, "log")
    os.makedirs(logs)
    with open(os.path.join(logs, "valerie.log"), "w") as f:
        f.write('{"level":"info","msg":"request"}\n' * 100)
    conf = os.path.join(tmp, "valerie.logrotate")
    with open(conf, "w") as f:
        f.write(read_text(ROTATE).replace("/var/log/valerie/", logs + "/"))
    r = subprocess.run([lr, "-f", "-s", os.path.join(tmp, "state2"), conf],
                       capture_output=True, text=True, timeout=60)
    rotated = [n for n in os.listdir(logs) if n.startswith("valerie.log-")]
    check(r.returncode == 0 and rotated and os.path.getsize(os.path.join(logs, "valerie.log")) == 0,
          f"a forced rotation copies and truncates in place: {r.returncode} {sorted(os.listdir(logs))} {r.stderr.strip()}")
remove_temp(tmp)
done("test_systemd")
