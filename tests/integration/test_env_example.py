"""test_env_example: .env.production.example documents every variable the worker reads
(the configuration table in app/conf.c and any getenv in app/ and fcgi/), and every family
of variables read by scanning the environment (app/agents.c: MCP_<NAME>_URL and
MCP_<NAME>_ENABLED, written so in the code's comments)."""
import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRCDIR, check, done  # noqa: E402

example = open(os.path.join(SRCDIR, ".env.production.example")).read()
documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.M))
read = set()
patterns = set()
for path in glob.glob(os.path.join(SRCDIR, "app", "*.c")) + glob.glob(os.path.join(SRCDIR, "fcgi", "*.c")):
    text = open(path).read()
    read |= set(re.findall(r'getenv\("([A-Z][A-Z0-9_]+)"\)', text))
    patterns |= set(re.findall(r"\b([A-Z]+_<NAME>_[A-Z]+)\b", text))
    if path.endswith("conf.c"):
        for env, alias in re.findall(r'^\s*\{"([A-Z][A-Z0-9_]+)", (?:"([A-Z][A-Z0-9_]+)"|NULL),', text, re.M):
            read.add(env)
            if alias:
                read.add(alias)
check(len(read) > 30, f"found the variables the code reads ({len(read)})")

# The value on each line is the code's default (empty: unset), numerically, except the
# production choices, whose comment names the default instead.
table = open(os.path.join(SRCDIR, "app", "conf.c")).read()
defaults = dict(re.findall(r'^\s*\{"([A-Z][A-Z0-9_]+)", (?:"[A-Z0-9_]+"|NULL),\s*CFG_[A-Z]+,\s*'
                           r'(NULL|"[^"]*"),', table, re.M))
check(len(defaults) > 30, f"found the defaults of the configuration table ({len(defaults)})")
values = dict(re.findall(r"^([A-Z][A-Z0-9_]+)=(.*)$", example, re.M))
production = {"VALERIE_ENV": "development", "VALERIE_AUTH": "none", "VALERIE_METRICS_PORT": "0"}
for name, default in sorted(defaults.items()):
    default = "" if default == "NULL" else default.strip('"')
    if name in production:
        check(default == production[name] and re.search(
              rf"^#[^\n]*\b{re.escape(default)}\b[^\n]*\bdefault\b[^\n]*\n(?:#[^\n]*\n)*{name}=",
              example, re.M) is not None,
              f"{name}: the comment above the production choice names the default {default!r}")
        continue
    if name not in values and default == "" and f"#{name}=" in example:
        continue  # set by the launcher, shown commented out (VALERIE_ENV_FILE)
    check(name in values and values[name] == default,
          f"{name}={values.get(name)!r} in the example is the code's default {default!r}")
aliases_ok = {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}  # documented in the comment of their Valerie name
missing = sorted(v for v in read - documented if v not in aliases_ok or v not in example)
check(not missing, f".env.production.example lacks {missing}")
check("MCP_<NAME>_URL" in patterns and "MCP_<NAME>_ENABLED" in patterns,
      f"found the variable families read by scanning the environment: {sorted(patterns)}")
undocumented = sorted(p for p in patterns if p + "=" not in example)
check(not undocumented, f".env.production.example documents the families {undocumented} "
      f"(as NAME_<NAME>_X=... lines)")
# The example is the systemd host's env file too (/etc/valerie/valerie.env): the metrics
# port, which no authentication guards, stays on loopback there; compose sets 0.0.0.0
# for its containers itself.
m = re.search(r"^VALERIE_METRICS_ADDR=(.*)$", example, re.M)
check(m is not None and m.group(1) in ("", "127.0.0.1", "::1"),
      f"the example keeps the metrics port on loopback: VALERIE_METRICS_ADDR={m and m.group(1)!r}")
done("test_env_example")
