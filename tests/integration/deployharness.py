"""deployharness: the pieces the deployment tests share: a worker pool started by
scripts/valerie-pool.sh on its own (no nginx), the production nginx configuration
(nginx/production.conf.template) rendered as envsubst renders it and run on loopback,
a throwaway self-signed certificate, and the compose and Dockerfile readers."""
import grp
import os
import pwd
import re
import shutil
import signal
import ssl
import subprocess
import http.client

from harness import BIN, SRCDIR, alive, children, free_port, kill, read_pid, read_text, wait_until

POOL_SH = os.path.join(SRCDIR, "scripts", "valerie-pool.sh")
NGINX = os.environ.get("NGINX_BIN") or shutil.which("nginx") or "/usr/sbin/nginx"
TEMPLATE = os.path.join(SRCDIR, "nginx", "production.conf.template")
SNIPPETS = os.path.join(SRCDIR, "nginx", "snippets")

# The variables the production template takes (its header comment lists them).
TEMPLATE_VARS = ["VALERIE_DOMAIN", "VALERIE_NGINX_USER", "VALERIE_NGINX_RATE",
                 "VALERIE_NGINX_BURST", "VALERIE_NGINX_CONN", "VALERIE_MAX_BODY_BYTES"]


def base_env(extra=None):
    """A clean environment for a worker: PATH and friends, no VALERIE_* of the caller."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VALERIE_", "OPENAI_", "ANTHROPIC_", "LANGFUSE_", "JWT_",
                                "RATE_LIMIT_", "MCP_", "FCGI_", "NGINX"))}
    env.update(extra or {})
    return env


class Pool:
    """scripts/valerie-pool.sh in the background: VALERIE_LISTEN, its own data dir and
    log in `dir`; stop() or kill() by PID."""

    def __init__(self, dir, listen, env=None, workers=2, threads=4):
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        self.pidfile = os.path.join(dir, "pool.pid")
        self.log = os.path.join(dir, "valerie.log")
        self.env = base_env({
            "VALERIE_BIN": BIN,
            "VALERIE_LISTEN": listen,
            "VALERIE_POOL_PIDFILE": self.pidfile,
            "VALERIE_POOL_LOG": self.log,
            "VALERIE_WORKERS": str(workers),
            "VALERIE_THREADS": str(threads),
            "VALERIE_DATA_DIR": os.path.join(dir, "data"),
            "RATE_LIMIT_REQUESTS_PER_MINUTE": "1000000",
            "RATE_LIMIT_BURST": "1000000",
        })
        self.env.update(env or {})
        os.makedirs(self.env["VALERIE_DATA_DIR"], exist_ok=True)

    def start(self, args=()):
        r = subprocess.run(["bash", POOL_SH, *args], env=self.env, capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"valerie-pool.sh failed ({r.returncode}): {r.stderr}\n"
                               f"{read_text(self.log)[-2000:]}")
        return self

    @property
    def pid(self):
        return read_pid(self.pidfile)

    def workers(self):
        return children(self.pid) if self.pid else []

    def kill(self):
        """SIGKILL multiwatch and its workers (a pool that dies, not one that drains)."""
        pid = self.pid
        if not pid:
            return
        victims = [pid] + self.workers()
        for p in victims:
            kill(p, signal.SIGKILL)
        wait_until(lambda: not any(alive(p) for p in victims), 10)

    def stop(self, timeout=20):
        pid = self.pid
        if not pid or not alive(pid):
            return
        kids = self.workers()
        kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not alive(pid), timeout):
            self.kill()
        wait_until(lambda: not any(alive(p) for p in kids), 10)


def make_cert(dir, name="localhost"):
    """A self-signed certificate as certbot lays it out: DIR/fullchain.pem, privkey.pem."""
    os.makedirs(dir, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-keyout", os.path.join(dir, "privkey.pem"),
                    "-out", os.path.join(dir, "fullchain.pem"),
                    "-subj", f"/CN={name}", "-addext",
                    f"subjectAltName=DNS:{name},IP:127.0.0.1"],
                   check=True, capture_output=True)
    return dir


def envsubst(text, values):
    """What envsubst '${A} ${B} ...' does: replace exactly those ${NAME}s, nothing else.
    Runs the real envsubst (gettext-base) when it is there."""
    names = " ".join("${%s}" % k for k in values)
    exe = shutil.which("envsubst")
    if exe:
        env = dict(os.environ)
        env.update(values)
        return subprocess.run([exe, names], input=text, env=env, capture_output=True,
                              text=True, check=True).stdout
    for k, v in values.items():
        text = text.replace("${%s}" % k, v)
    return text


def sub(text, old, new, count=None):
    """Replaces `old` (which must be there: a test variant never silently drifts from the
    file it tests)."""
    n = text.count(old)
    if n == 0 or (count is not None and n != count):
        raise AssertionError(f"test variant: expected {count or 'some'} of {old!r}, found {n}")
    return text.replace(old, new)


class ProdNginx:
    """nginx/production.conf.template, rendered with `values` as envsubst does, run on
    127.0.0.1 in a temp prefix. The test variant changes only where the file points at
    the machine: the listen ports (80/443 -> random loopback ports), the certificate
    directory (certbot's /etc/letsencrypt/live/DOMAIN -> a test certificate), the ACME
    webroot, the pid, log and temp paths; everything else is the production file."""

    def __init__(self, dir, upstream_lines, values=None, template=TEMPLATE, snippets=SNIPPETS):
        self.dir = dir
        self.template = template
        self.snippets = snippets
        self.conf_dir = os.path.join(dir, "conf")
        self.logs = os.path.join(dir, "logs")
        self.www = os.path.join(dir, "www")
        for d in (self.conf_dir, self.logs, self.www, os.path.join(dir, "tmp")):
            os.makedirs(d, exist_ok=True)
        self.http_port = free_port()
        self.https_port = free_port()
        # The workers run as the test's own user: a temp dir is private to it.
        me = f"{pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name}"
        self.values = {"VALERIE_DOMAIN": "localhost", "VALERIE_NGINX_USER": me,
                       "VALERIE_NGINX_RATE": "10000", "VALERIE_NGINX_BURST": "10000",
                       "VALERIE_NGINX_CONN": "1024", "VALERIE_MAX_BODY_BYTES": "1048576"}
        self.values.update(values or {})
        self.tls = make_cert(os.path.join(dir, "tls"))
        self.conf = os.path.join(self.conf_dir, "nginx.conf")
        self.pidfile = os.path.join(dir, "nginx.pid")
        self.write(upstream_lines)

    def rendered(self):
        return envsubst(read_text(self.template), self.values)

    def write(self, upstream_lines):
        text = self.rendered()
        d = self.dir
        domain = self.values["VALERIE_DOMAIN"]
        text = sub(text, "listen 80 default_server;",
                   f"listen 127.0.0.1:{self.http_port} default_server;", 1)
        text = sub(text, "listen 443 ssl http2 default_server;",
                   f"listen 127.0.0.1:{self.https_port} ssl http2 default_server;", 1)
        text = sub(text, f"/etc/letsencrypt/live/{domain}/", self.tls + "/")
        text = sub(text, "root /var/www/certbot;", f"root {self.www};", 1)
        text = sub(text, "pid /run/nginx.pid;", f"pid {self.pidfile};", 1)
        text = sub(text, "error_log /var/log/nginx/error.log warn;",
                   f"error_log {self.logs}/error.log warn;", 1)
        text = sub(text, "access_log /var/log/nginx/access.log valerie_json;",
                   f"access_log {self.logs}/access.log valerie_json;\n"
                   f"    client_body_temp_path {d}/tmp/body;\n"
                   f"    fastcgi_temp_path {d}/tmp/fastcgi;\n"
                   f"    proxy_temp_path {d}/tmp/proxy;\n"
                   f"    uwsgi_temp_path {d}/tmp/uwsgi;\n"
                   f"    scgi_temp_path {d}/tmp/scgi;", 1)
        if os.getuid() != 0:  # only root may switch users
            text = re.sub(r"^user [^;]+;", "", text, flags=re.M)
        with open(self.conf, "w") as f:
            f.write(text)
        snip = os.path.join(self.conf_dir, "snippets")
        shutil.rmtree(snip, ignore_errors=True)
        shutil.copytree(self.snippets, snip)
        with open(os.path.join(self.conf_dir, "valerie-upstream.conf"), "w") as f:
            f.write("".join(line + "\n" for line in upstream_lines))

    def cmd(self, *args, wrap=()):
        return subprocess.run([*wrap, NGINX, "-p", self.dir + "/", "-c", self.conf,
                               "-e", os.path.join(self.logs, "error.log"), *args],
                              capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)

    def test(self, wrap=()):
        return self.cmd("-t", wrap=wrap)

    def start(self):
        r = self.cmd()
        if r.returncode != 0:
            raise RuntimeError(f"nginx did not start: {r.stderr}\n"
                               f"{read_text(os.path.join(self.logs, 'error.log'))[-2000:]}")
        wait_until(lambda: read_pid(self.pidfile) is not None, 10)
        return self

    def stop(self):
        pid = read_pid(self.pidfile)
        if pid and alive(pid):
            kids = children(pid)
            kill(pid, signal.SIGTERM)
            if not wait_until(lambda: not alive(pid), 10):
                for p in [pid] + kids:
                    kill(p, signal.SIGKILL)
            wait_until(lambda: not any(alive(p) for p in kids), 10)

    def request(self, method, path, body=None, headers=None, https=True, source=None,
                timeout=30):
        """(status, headers lower-case, body bytes); `source` a loopback address to
        send from (127.0.0.2 is "not this host" to nginx's allow lists)."""
        src = (source, 0) if source else None
        if https:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            c = http.client.HTTPSConnection("127.0.0.1", self.https_port, timeout=timeout,
                                            context=ctx, source_address=src)
        else:
            c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout,
                                           source_address=src)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def access_log(self):
        return read_text(os.path.join(self.logs, "access.log"))


# --- Dockerfile and build context ------------------------------------------------
def parse_dockerfile(text):
    """[{from, name, ins: [(KEYWORD, args)]}] per stage; continuation lines joined,
    comments dropped."""
    lines, cur = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if s.startswith("#") or (not s and not cur):
            continue
        if s.endswith("\\"):
            cur += s[:-1].strip() + " "
            continue
        cur += s
        lines.append(cur.strip())
        cur = ""
    stages = []
    for line in lines:
        kw, _, arg = line.partition(" ")
        kw, arg = kw.upper(), arg.strip()
        if kw == "FROM":
            words = arg.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append({"from": words[0], "name": name, "ins": []})
        elif stages:
            stages[-1]["ins"].append((kw, arg))
    return stages


def _ignore_rules(path):
    rules = []
    for line in read_text(path).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = line[1:] if neg else line
        pat = pat.strip("/")
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif pat.startswith("**", i):
                rx += ".*"
                i += 2
            elif pat[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pat[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pat[i])
                i += 1
        rules.append((re.compile(rx + r"\Z"), neg))
    return rules


def ignored(rel, rules):
    """Docker's .dockerignore rule: the last pattern matching the path or one of its
    parent directories decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for rx, neg in rules:
        if any(rx.match(p) for p in prefixes):
            result = not neg
    return result


def copy_context(srcdir, dest, dockerignore):
    """Copies the build context (srcdir through its .dockerignore) to dest; returns the
    number of files copied."""
    rules = _ignore_rules(dockerignore)
    n = 0
    for root, dirs, files in os.walk(srcdir):
        relroot = os.path.relpath(root, srcdir)
        relroot = "" if relroot == "." else relroot + "/"
        dirs[:] = [d for d in dirs if d not in (".git", "node_modules")]
        for f in files:
            rel = relroot + f
            if ignored(rel, rules):
                continue
            os.makedirs(os.path.join(dest, relroot), exist_ok=True)
            shutil.copy2(os.path.join(root, f), os.path.join(dest, rel), follow_symlinks=False)
            n += 1
    return n
