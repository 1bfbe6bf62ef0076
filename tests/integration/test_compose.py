"""test_compose: the compose files, checked without a Docker engine. Each passes
`docker-compose config -q` with .env.production.example as its env file, alone (the
base, observability, langfuse) and in the combinations it is meant for (dev and prod
are overrides of the base). In the merged configurations: every bind mount exists in
the repository (or is a documented host path), every image is pinned to a version,
every long-running service has a healthcheck, restart policy and rotated logs, prod
runs 3 api replicas with limits, the api has the Redis session settings, the metrics
port Prometheus expects and every variable of .env.production.example; the nginx
configuration compose mounts passes `nginx -t` with the service's own environment."""
import os
import re
import shlex
import shutil
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRCDIR, check, done, read_text, remove_temp, temp_dir  # noqa: E402
from deployharness import ProdNginx, parse_dockerfile  # noqa: E402

DC = shutil.which("docker-compose")
ENV = os.path.join(SRCDIR, ".env.production.example")
C = lambda name: os.path.join(SRCDIR, "compose", name)  # noqa: E731
BASE, DEV, PROD, OBS, LF = (C("docker-compose.yml"), C("docker-compose.dev.yml"),
                            C("docker-compose.prod.yml"), C("docker-compose.observability.yml"),
                            C("docker-compose.langfuse.yml"))
if not check(DC is not None, "docker-compose is installed (Debian's docker-compose package)"):
    done("test_compose")


def compose(files, *args):
    cmd = [DC]
    for f in files:
        cmd += ["-f", f]
    cmd += ["--env-file", ENV, *args]
    env = {k: v for k, v in os.environ.items()
           if not re.match(r"(VALERIE_|LANGFUSE_|GRAFANA_|PROMETHEUS_|COMPOSE_)", k)}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=SRCDIR, env=env, timeout=120)


def short(fs):
    """base+prod+... for a list of compose files."""
    return "+".join(os.path.basename(f)[len("docker-compose"):-len(".yml")].strip(".") or "base"
                    for f in fs)

# Standalone files, then the combinations: dev and prod only override the base.
for f in (BASE, OBS, LF):
    r = compose([f], "config", "-q")
    check(r.returncode == 0, f"config -q {os.path.basename(f)}: {r.stderr.strip()[:300]}")
combos = [[BASE], [BASE, DEV], [BASE, PROD], [BASE, PROD, OBS], [BASE, PROD, LF],
          [BASE, DEV, OBS, LF], [BASE, PROD, OBS, LF]]
configs = {}
for fs in combos:
    r = compose(fs, "config", "-q")
    check(r.returncode == 0, f"config -q {short(fs)}: {r.stderr.strip()[:300]}")
    r = compose(fs, "--profile", "certbot", "--profile", "cadvisor", "config")
    configs[short(fs)] = yaml.safe_load(r.stdout) if r.returncode == 0 else {}

# Mounted files and directories exist. Host paths outside the repository are the
# operator's (certbot's tree and webroot) or the host's (cAdvisor reads them);
# run/letsencrypt is made by `scripts/deploy.sh --dev-cert`.
HOST_PATHS = {"/etc/letsencrypt", "/var/www/certbot", "/", "/var/run", "/sys", "/var/lib/docker"}
# NOTE: compared as real paths: under make distcheck SRCDIR is "<build>/../.." while
# docker-compose resolves the files' own directory.
ROOT = os.path.realpath(SRCDIR)
GENERATED = {os.path.join(ROOT, "run", "letsencrypt")}
PINNED = re.compile(r"^[\w./-]+:(v?\d+\.\d+[\w.-]*|RELEASE\.\d{4}-\d\d-\d\dT[\w-]+)$")
for name, cfg in configs.items():
    volumes = set((cfg.get("volumes") or {}).keys())
    for svc, s in (cfg.get("services") or {}).items():
        image = s.get("image", "")
        check(PINNED.match(image) and ":latest" not in image,
              f"[{name}] {svc}: image pinned to a version: {image!r}")
        for v in s.get("volumes", []):
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith("/"):
                real = os.path.realpath(src)
                if real.startswith(ROOT + "/"):
                    ok = os.path.exists(real) or real in GENERATED
                    check(ok, f"[{name}] {svc}: mounted {os.path.relpath(real, ROOT)} exists in the repository")
                else:
                    check(src in HOST_PATHS, f"[{name}] {svc}: host path {src} is a documented one")
            else:
                check(src in volumes, f"[{name}] {svc}: named volume {src} declared")

prod = configs["base+prod+observability+langfuse"]
for svc, s in prod["services"].items():
    oneshot = "certbot" in s.get("profiles", [])
    if not oneshot:
        check(bool(s.get("healthcheck", {}).get("test")), f"[prod] {svc}: healthcheck")
        check(s.get("restart") in ("always", "unless-stopped"), f"[prod] {svc}: restart {s.get('restart')}")
    log = s.get("logging", {})
    check(log.get("driver") == "json-file" and {"max-size", "max-file"} <= set(log.get("options", {})),
          f"[prod] {svc}: rotated json-file logs")
# A healthcheck runs inside its own container: it may call only what that image
# ships, or the service stays "starting" for ever and what depends on it never starts.
# What each official image holds, from its Dockerfile: docker-nginx's debian image
# installs curl; redis ships redis-cli, postgres pg_isready, MinIO mc; Prometheus
# (busybox), cAdvisor, Grafana (Alpine) and Langfuse (Node on Alpine, no curl) have
# busybox's wget; the ClickHouse image installs wget (Langfuse's own compose probes
# it so). Our image: only what compose/Dockerfile's final stage copies in.
IMAGE_TOOLS = {
    "nginx": {"curl"}, "redis": {"redis-cli"}, "postgres": {"pg_isready"},
    "minio/minio": {"mc"}, "prom/prometheus": {"wget"}, "gcr.io/cadvisor/cadvisor": {"wget"},
    "grafana/grafana": {"wget"}, "langfuse/langfuse": {"wget"},
    "langfuse/langfuse-worker": {"wget"}, "clickhouse/clickhouse-server": {"wget"},
}
final = parse_dockerfile(read_text(os.path.join(SRCDIR, "compose", "Dockerfile")))[-1]
IMAGE_TOOLS["valerie"] = {shlex.split(arg)[-1] for kw, arg in final["ins"] if kw == "COPY"}
check("/usr/local/bin/valerie-healthcheck.sh" in IMAGE_TOOLS["valerie"],
      f"the image holds its healthcheck script: {IMAGE_TOOLS['valerie']}")
for svc, s in prod["services"].items():
    repo, _, tag = s.get("image", "").rpartition(":")
    # An exact release, not a series tag that moves (clickhouse-server:25.3 would):
    # three numbers at least, except postgres, whose releases are MAJOR.MINOR.
    nums = re.match(r"v?(\d+(?:\.\d+)*)", tag)
    check(tag.startswith("RELEASE.") or repo == "postgres" or (nums and nums.group(1).count(".") >= 2),
          f"[prod] {svc}: image tag {tag!r} is one exact release")
    test = (s.get("healthcheck") or {}).get("test")
    if not test:
        continue
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    tool = test[1] if test[0] == "CMD" else shlex.split(test[1])[0]
    check(tool in IMAGE_TOOLS.get(repo, set()),
          f"[prod] {svc}: healthcheck {tool!r} is in image {repo} ({sorted(IMAGE_TOOLS.get(repo, []))})")

p = configs["base+prod"]["services"]
check(p["api"].get("deploy", {}).get("replicas") == 3, "[prod] api: 3 replicas")
for svc in ("api", "redis", "nginx"):
    lim = p[svc].get("deploy", {}).get("resources", {}).get("limits", {})
    check(lim.get("cpus") and lim.get("memory"), f"[prod] {svc}: resource limits {lim}")
check(p["api"].get("stop_grace_period") and "container_name" not in p["api"],
      "[prod] api: stop grace period, no container_name (replicas)")

api_env = configs["base"]["services"]["api"]["environment"]
for k, v in {"VALERIE_SESSION_STORE": "redis", "VALERIE_SESSION_REDIS_URL": "redis://redis:6379",
             "VALERIE_SESSION_TTL": "3600", "VALERIE_METRICS_PORT": "9464",
             "VALERIE_METRICS_ADDR": "0.0.0.0"}.items():
    check(str(api_env.get(k)) == v, f"api: {k}={api_env.get(k)}")
check(configs["base"]["services"]["api"]["depends_on"]["redis"]["condition"] == "service_healthy",
      "api depends on redis being healthy")
redis_cmd = configs["base"]["services"]["redis"]["command"]
check("--appendonly" in redis_cmd and redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes",
      "redis persists (appendonly yes)")
prom = yaml.safe_load(read_text(os.path.join(SRCDIR, "prometheus", "prometheus.yml")))
job = [j for j in prom["scrape_configs"] if j["job_name"] == "valerie-replicas"][0]
sd = job["dns_sd_configs"][0]
check(sd["names"] == ["api"] and str(sd["port"]) == api_env.get("VALERIE_METRICS_PORT"),
      f"Prometheus's replica job finds service api on the replicas' metrics port: {sd}")
check("backend" in configs["base+prod+observability"]["services"]["prometheus"]["networks"],
      "Prometheus shares the api replicas' network")
fcgi_allow = api_env.get("FCGI_WEB_SERVER_ADDRS")
nginx_ip = configs["base"]["services"]["nginx"]["networks"]["backend"]["ipv4_address"]
check(fcgi_allow == nginx_ip, f"workers accept FastCGI from nginx's fixed address only: {fcgi_allow} = {nginx_ip}")

example = read_text(ENV).split("# === compose", 1)[0]
names = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", example, re.M))
missing = sorted(names - set(api_env))
check(not missing, f"api receives every worker variable of .env.production.example: missing {missing}")

# nginx -t on what the nginx service would run: its template, snippets and upstream
# file from the mounts, rendered with its environment. The upstream names `api`,
# which only Docker's DNS knows: in a private mount namespace (unshare -m) /etc/hosts
# is replaced by one that maps it to 127.0.0.1, so the file is tested as it is; without
# unshare the test variant writes 127.0.0.1 instead of `api` (and says so).
for name in ("base+prod", "base+dev"):
    ng_svc = configs[name]["services"]["nginx"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in ng_svc["volumes"]}
    template = mounts["/etc/nginx/templates/nginx.conf.template"]
    snippets = mounts["/etc/nginx/snippets"]
    upstream = read_text(mounts["/etc/nginx/valerie-upstream.conf"])
    values = {k: str(v) for k, v in ng_svc["environment"].items() if k.startswith("VALERIE_")}
    check(ng_svc["environment"].get("NGINX_ENVSUBST_OUTPUT_DIR") == "/etc/nginx",
          f"[{name}] the image renders the template into /etc/nginx/nginx.conf")
    values.pop("VALERIE_NGINX_USER")  # `nginx` exists in the image, not here
    tmp = temp_dir("valerie-compose-nginx-")
    ng = ProdNginx(tmp, [line for line in upstream.splitlines()], values, template, snippets)
    wrap = ()
    hosts = os.path.join(tmp, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost api\n")
    if os.getuid() == 0 and shutil.which("unshare") and subprocess.run(
            ["unshare", "-m", "true"], capture_output=True).returncode == 0:
        wrap = ("unshare", "-m", "sh", "-c", f'mount --bind "{hosts}" /etc/hosts && exec "$@"', "sh")
    else:
        print("(no unshare: the upstream file's `api` is written as 127.0.0.1 for nginx -t)")
        ng.write([line.replace("server api:", "server 127.0.0.1:") for line in upstream.splitlines()])
    r = ng.test(wrap=wrap)
    check(r.returncode == 0, f"[{name}] nginx -t on compose's nginx configuration: {r.stderr.strip()[-400:]}")
    remove_temp(tmp)
done("test_compose")
