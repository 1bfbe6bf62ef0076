"""test_verify_deployment: scripts/verify-deployment.sh passes against a local stack
(JWT auth, an admin token, over HTTPS with the stack's self-signed certificate) and
counts failures in its exit status when something is wrong; seed 001's own
verification script ("Script de Verificacion Automatica"), cut out of the seed's text
at test time and run unmodified, passes against a development stack
(VALERIE_AUTH=none, the application's rate limit raised)."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import BIN, SRCDIR, Stack, check, done, remove_temp, temp_dir  # noqa: E402

VERIFY = os.path.join(SRCDIR, "scripts", "verify-deployment.sh")
SEED = os.path.join(SRCDIR, "tests", "integration", "seeds", "001-deployment-guide.txt")


def run(args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(args, env=e, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


secret = os.urandom(32).hex()
with Stack(env={"VALERIE_AUTH": "jwt", "JWT_SECRET_KEY": secret}) as st:
    token = run([BIN, "token", "--sub", "ops", "--role", "admin"], st.env).stdout.strip()
    r = run(["bash", VERIFY, f"https://127.0.0.1:{st.https_port}"],
            {"VERIFY_TOKEN": token, "VERIFY_INSECURE": "1"})
    print(r.stdout)
    check(r.returncode == 0 and r.stdout.count("[OK]") == 5,
          f"verify-deployment.sh passes over HTTPS with an admin token: exit {r.returncode}")
    r = run(["bash", VERIFY, f"http://127.0.0.1:{st.http_port}"])
    print(r.stdout)
    check(r.returncode == 2 and "[FAIL] config" in r.stdout and "[FAIL] chat" in r.stdout,
          f"without a credential config and chat fail: exit status {r.returncode} = failures")
    r = run(["bash", VERIFY])
    check(r.returncode == 64, "no BASE_URL: usage, exit 64")
    for bad in ("30s", "-5", "abc"):
        r = run(["bash", VERIFY, f"http://127.0.0.1:{st.http_port}"], {"VERIFY_TIMEOUT": bad})
        check(r.returncode == 64 and "VERIFY_TIMEOUT" in r.stderr and "[FAIL]" not in r.stdout,
              f"VERIFY_TIMEOUT={bad}: refused with one line, exit 64 (not counted as failed "
              f"checks): exit {r.returncode}: {r.stderr.strip()[:200]}")
    r = run(["bash", VERIFY, f"http://127.0.0.1:{st.http_port}"], {"VERIFY_TIMEOUT": "2.5"})
    check("[OK]   health" in r.stdout, f"VERIFY_TIMEOUT=2.5 (curl takes fractions): {r.stdout[:200]}")

# Seed 001's script, as the seed prints it.
text = open(SEED).read()
m = re.search(r"### Script de Verificacion Automatica\s*```bash\n(.*?)```", text, re.S)
check(m is not None, "found the seed's verification script")
seed_dir = temp_dir("valerie-seed-")
script = os.path.join(seed_dir, "verify_deployment.sh")
with open(script, "w") as f:
    f.write(m.group(1))
with Stack(env={"VALERIE_AUTH": "none", "RATE_LIMIT_BURST": "1000000"}) as st:
    r = run(["bash", script, f"http://127.0.0.1:{st.http_port}"])
    print(r.stdout, r.stderr)
    check(r.returncode == 0 and "Deployment verificado exitosamente!" in r.stdout,
          f"seed 001's verification script passes unmodified: exit {r.returncode}")
remove_temp(seed_dir)
done("test_verify_deployment")
