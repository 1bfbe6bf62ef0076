"""test_dockerfile: compose/Dockerfile's build and run steps, exercised on this machine
(no Docker engine here). The builder stage installs exactly scripts/bootstrap.sh's
BUILD_PKGS and its other RUN commands, run in a copy of the tree made through
.dockerignore, build the worker. The final stage installs real Debian 12 packages, no
compiler or headers, and every library the built worker links directly; images are
pinned. Then the final stage's CMD starts (with the ENV it sets, as its USER 10001)
a pool that answers, and the HEALTHCHECK command fails before and succeeds after, both
with a PATH holding only the programs the final image has (no curl, no ps)."""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from harness import (SRCDIR, alive, check, children, done, free_port, kill,  # noqa: E402
                     remove_temp, temp_dir, wait_until)
from deployharness import copy_context, parse_dockerfile  # noqa: E402

DOCKERFILE = os.path.join(SRCDIR, "compose", "Dockerfile")
stages = parse_dockerfile(open(DOCKERFILE).read())
check(len(stages) == 2, f"two stages: {[s['from'] for s in stages]}")
builder, final = stages[0], stages[-1]
check(builder["name"] == "builder", f"first stage is named builder: {builder['name']}")

# --- images pinned ---
for st in stages:
    image = st["from"]
    m = re.fullmatch(r"debian:(12\.\d+)(-slim)?", image)
    check(m is not None, f"FROM {image}: Debian 12 pinned to a point release")
check(final["from"].endswith("-slim"), f"final stage is slim: {final['from']}")


def apt_packages(stage):
    pkgs = []
    for kw, arg in stage["ins"]:
        if kw == "RUN" and "apt-get install" in arg:
            words = shlex.split(arg.split("apt-get install", 1)[1].split("&&")[0])
            pkgs += [w for w in words if not w.startswith("-")]
    return pkgs


boot = open(os.path.join(SRCDIR, "scripts", "bootstrap.sh")).read()
build_pkgs = re.search(r'^BUILD_PKGS="([^"]*)"', boot, re.M).group(1).split()
check(sorted(apt_packages(builder)) == sorted(build_pkgs),
      f"builder installs bootstrap.sh's BUILD_PKGS: {apt_packages(builder)}")
run_pkgs = apt_packages(final)
check(len(run_pkgs) >= 10, f"final stage packages: {run_pkgs}")
missing = [p for p in run_pkgs
           if subprocess.run(["apt-cache", "show", p], capture_output=True).returncode != 0]
check(not missing, f"every final-stage package exists in Debian 12 (apt-cache show): missing {missing}")
compilers = {"gcc", "g++", "cpp", "clang", "make", "build-essential", "autoconf", "automake",
             "libtool", "pkg-config", "binutils", "libc6-dev"}
bad = [p for p in run_pkgs if p in compilers or p.endswith("-dev") or re.match(r"(gcc|g\+\+|clang)-", p)]
check(not bad, f"no compiler, build tool or headers in the final stage: {bad}")
check(not any(kw == "COPY" and "--from" not in arg for kw, arg in final["ins"]),
      "the final stage copies only from the builder (no source tree)")
users = [arg for kw, arg in final["ins"] if kw == "USER"]
check(users and users[-1].split(":")[0] == "10001", f"runs as UID 10001: USER {users}")

# --- builder: the project's own build commands, in a copy made through .dockerignore ---
tmp = temp_dir("valerie-dockerfile-")
os.chmod(tmp, 0o755)
src = os.path.join(tmp, "src")
n = copy_context(SRCDIR, src, os.path.join(SRCDIR, ".dockerignore"))
check(n > 50 and not os.path.exists(os.path.join(src, "config.status"))
      and not os.path.exists(os.path.join(src, "fcgi", "valerie")),
      f"build context copied through .dockerignore ({n} files, no build products)")
workdir = None
build_cmds = []
for kw, arg in builder["ins"]:
    if kw == "WORKDIR":
        workdir = arg
    elif kw == "RUN" and "apt-get" not in arg:
        build_cmds.append(arg)
check(workdir == "/src" and build_cmds == ['./autogen.sh && ./configure && make -j"$(nproc)"'],
      f"builder's build command is the project's: {build_cmds}")
for cmd in build_cmds:
    r = subprocess.run(["sh", "-c", cmd], cwd=src, capture_output=True, text=True, timeout=900)
    check(r.returncode == 0, f"builder RUN {cmd!r}: exit {r.returncode} {r.stderr[-1500:]}")
built = os.path.join(src, "fcgi", "valerie")
check(os.access(built, os.X_OK), "the builder made fcgi/valerie")

# --- every library the worker links directly comes from a final-stage package ---
needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                    subprocess.run(["readelf", "-d", built], capture_output=True, text=True).stdout)
ldd = dict(re.findall(r"^\s*(\S+) => (\S+)", subprocess.run(["ldd", built], capture_output=True,
                                                             text=True).stdout, re.M))
base = {"libc6"}  # in debian:12-slim already
unowned = []
for lib in needed:
    path = ldd.get(lib, "")
    owner = None
    for p in {path, os.path.realpath(path), path.replace("/usr/lib/", "/lib/"),
              path.replace("/lib/", "/usr/lib/", 1)}:
        r = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            owner = r.stdout.split(":")[0]
            break
    if owner not in base and owner not in run_pkgs:
        unowned.append((lib, owner))
check(needed and not unowned, f"final stage has the package of every NEEDED library ({len(needed)}): missing {unowned}")

# --- final: CMD with the stage's ENV, as its USER; HEALTHCHECK against it ---
paths = {}
for kw, arg in final["ins"]:
    if kw == "COPY":
        parts = [a for a in shlex.split(arg) if not a.startswith("--")]
        assert parts[0].startswith("/src/")
        paths[parts[1]] = os.path.join(src, parts[0][len("/src/"):])
env_img = {}
for kw, arg in final["ins"]:
    if kw == "ENV":
        for pair in shlex.split(arg):
            k, v = pair.split("=", 1)
            env_img[k] = v


def mapped(word):
    return paths.get(word, word)


cmd = [mapped(w) for w in json.loads([a for k, a in final["ins"] if k == "CMD"][-1])]
hc_line = [a for k, a in final["ins"] if k == "HEALTHCHECK"][-1]
hc = [mapped(w) for w in json.loads(hc_line[hc_line.index("CMD") + 3:].strip())]
check(env_img.get("VALERIE_BIN") in paths, f"VALERIE_BIN is the copied worker: {env_img.get('VALERIE_BIN')}")

# What the test machine changes, and only that: container paths to the temp copy,
# ports to free loopback ones (the container's 0.0.0.0 would open them to every
# interface of this machine).
# The programs the final image holds: debian slim's (the Essential packages and apt)
# and those of the final stage's packages. The CMD and the HEALTHCHECK run here with a
# PATH of only these, so a launcher or healthcheck that needs curl, ps or python fails
# here as it would in the container (no curl in the image: BRIEF section 11).
image_bin = os.path.join(tmp, "image-bin")
os.makedirs(image_bin)
essential = [line.split("\t")[0] for line in subprocess.run(
    ["dpkg-query", "-W", "-f", "${Package}\t${Essential}\n"], capture_output=True,
    text=True).stdout.splitlines() if line.endswith("\tyes")]
for pkg in essential + ["apt"] + run_pkgs:
    listing = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True).stdout
    for f in listing.splitlines():
        link = os.path.join(image_bin, os.path.basename(f))
        if (os.path.dirname(f) in ("/bin", "/sbin", "/usr/bin", "/usr/sbin") and os.path.isfile(f)
                and os.access(f, os.X_OK) and not os.path.lexists(link)):
            os.symlink(f, link)
for tool, there in (("bash", True), ("spawn-fcgi", True), ("multiwatch", True), ("curl", False),
                    ("ps", False), ("gcc", False)):
    check(os.path.exists(os.path.join(image_bin, tool)) == there,
          f"the image's programs {'include' if there else 'lack'} {tool}")

data = os.path.join(tmp, "data")
os.makedirs(data)
metrics_port = free_port()
env = {"PATH": image_bin}
env.update(env_img)
env.update({"VALERIE_BIN": mapped(env_img["VALERIE_BIN"]),
            "VALERIE_LISTEN": f"127.0.0.1:{free_port()}",
            "VALERIE_DATA_DIR": data,
            "VALERIE_METRICS_PORT": str(metrics_port),
            "VALERIE_METRICS_ADDR": "127.0.0.1"})
print("final stage ENV as run here:", {k: env[k] for k in sorted(env_img)})

uid = int(users[-1].split(":")[0])
prefix = []
if os.getuid() == 0 and shutil.which("setpriv"):
    os.chown(data, uid, uid)
    # Docker switches to USER itself: setpriv stands in for it, from this machine.
    prefix = [shutil.which("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
else:
    print("(not root: the pool runs as this user, not UID 10001)")


def healthcheck():
    return subprocess.run(prefix + hc, env=env, capture_output=True, text=True, timeout=15)


r = healthcheck()
check(r.returncode != 0, f"HEALTHCHECK fails while nothing runs: {r.returncode} {r.stderr.strip()}")
proc = subprocess.Popen(prefix + cmd, env=env, stdin=subprocess.DEVNULL,
                        stdout=open(os.path.join(tmp, "pool.log"), "w"), stderr=subprocess.STDOUT,
                        cwd=data)
try:
    ok = wait_until(lambda: proc.poll() is not None or healthcheck().returncode == 0, 30, 0.2)
    check(ok and proc.poll() is None, f"CMD {cmd} runs and HEALTHCHECK {hc} succeeds")
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    check("valerie_workers" in body, "the pool serves its metrics on VALERIE_METRICS_PORT")
    workers = children(proc.pid)
    uids = set()
    for w in workers:
        for line in open(f"/proc/{w}/status"):
            if line.startswith("Uid:"):
                uids.add(int(line.split()[1]))
    if prefix:
        check(workers and uids == {uid}, f"workers run as UID {uid}: {uids}")
    # docker stop: SIGTERM to PID 1 (multiwatch); the pool drains and exits.
    kill(proc.pid, signal.SIGTERM)
    check(wait_until(lambda: proc.poll() is not None, 40),
          f"SIGTERM (docker stop) ends the pool: exit {proc.poll()}")
    check(wait_until(lambda: not any(alive(w) for w in workers), 10), "no worker left behind")
finally:
    if proc.poll() is None:
        for p in [proc.pid] + children(proc.pid):
            kill(p, signal.SIGKILL)
        proc.wait(10)
remove_temp(tmp)
done("test_dockerfile")
