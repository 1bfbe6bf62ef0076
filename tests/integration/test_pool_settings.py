"""test_pool_settings: scripts/valerie-pool.sh refuses each malformed setting of its own
(VALERIE_WORKERS, VALERIE_LISTEN, VALERIE_SOCKET_MODE, VALERIE_POOL_RETRIES, ...) with
one line naming it and exit 78, as check-config does for the worker's, and starts
nothing: systemd's RestartPreventExitStatus=78 then does not restart it in a loop."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import BIN, check, done, read_pid, remove_temp, temp_dir  # noqa: E402
from deployharness import POOL_SH, base_env  # noqa: E402

tmp = temp_dir("valerie-pool-settings-")
pidfile = os.path.join(tmp, "pool.pid")
sock = os.path.join(tmp, "v.sock")

cases = [
    ("VALERIE_WORKERS", "0"),
    ("VALERIE_WORKERS", "2x"),
    ("VALERIE_WORKERS", "300"),                   # the worker's own range: 1 to 256
    ("VALERIE_WORKERS", "99999999999999999999"),  # beyond test(1)'s integers
    ("VALERIE_POOL_RETRIES", "99999999999999999999"),
    ("VALERIE_POOL_RETRY_MS", "10s"),
    ("VALERIE_SOCKET_BACKLOG", "-1"),
    ("VALERIE_SOCKET_MODE", "rw"),
    ("VALERIE_LISTEN", "127.0.0.1:99999999999999999999"),
    ("VALERIE_LISTEN", "127.0.0.1:0"),
    ("VALERIE_LISTEN", ":9000"),
    ("VALERIE_LISTEN", "valerie.sock"),
]
for name, value in cases:
    env = base_env({"VALERIE_BIN": BIN, "VALERIE_LISTEN": sock, "VALERIE_POOL_PIDFILE": pidfile,
                    "VALERIE_DATA_DIR": os.path.join(tmp, "data")})
    env[name] = value
    r = subprocess.run(["bash", POOL_SH], env=env, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    lines = r.stderr.strip().splitlines()
    check(r.returncode == 78 and len(lines) == 1 and name in lines[0] and value in lines[0],
          f"{name}={value}: exit 78 with one line naming it: exit {r.returncode}: {r.stderr.strip()!r}")
    check(read_pid(pidfile) is None and not os.path.exists(sock),
          f"{name}={value}: nothing started")

remove_temp(tmp)
done("test_pool_settings")
