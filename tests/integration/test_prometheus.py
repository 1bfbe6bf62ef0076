"""test_prometheus: prometheus/ is valid and works. promtool accepts prometheus.yml and
alert-rules.yml, and alert-rules.test.yml's unit tests pass; then a real Prometheus
(the Debian package), on prometheus.yml pointed at a real pool, scrapes it while
traffic runs: the target is up, its values are the pool's own, rates and quantiles
come out, and every alert rule evaluates without error (the error-rate alert goes
pending on the 502s the traffic provoked)."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, done, wait_until  # noqa: E402
import promstack  # noqa: E402
from promstack import JOB, finite_values, observed_pool, promtool  # noqa: E402

if not check(bool(promstack.PROMTOOL and promstack.PROMETHEUS),
             "prometheus and promtool are installed (apt-get install prometheus)"):
    done("test_prometheus")

# --- promtool ----------------------------------------------------------------------
rc, out = promtool("check", "config", "prometheus.yml")
check(rc == 0 and "SUCCESS" in out, f"promtool check config prometheus.yml: {out[-400:]}")
rc, out = promtool("check", "rules", "alert-rules.yml")
m = re.search(r"SUCCESS: (\d+) rules found", out)
check(rc == 0 and m is not None, f"promtool check rules alert-rules.yml: {out[-400:]}")
nrules = int(m.group(1)) if m else 0
rc, out = promtool("test", "rules", "alert-rules.test.yml")
check(rc == 0 and "SUCCESS" in out, f"promtool test rules alert-rules.test.yml: {out[-1500:]}")

# Every alert has a firing case and a quiet one in the unit tests.
with open(os.path.join(promstack.PROM_DIR, "alert-rules.yml")) as f:
    alerts = re.findall(r"^\s*- alert: (\w+)", f.read(), re.M)
with open(os.path.join(promstack.PROM_DIR, "alert-rules.test.yml")) as f:
    tests = f.read()
for a in alerts:
    fires = re.search(rf"alertname: {a}\n\s*exp_alerts:\n\s*- exp_labels", tests)
    quiet = re.search(rf"alertname: {a}\n\s*exp_alerts: \[\]", tests)
    check(fires and quiet, f"{a}: a unit test where it fires and one where it stays quiet")
    check(re.search(rf"^### {a}$", open(os.path.join(promstack.PROM_DIR, "README.md")).read(),
                    re.M) is not None, f"{a}: its runbook section in prometheus/README.md")


def one(prom, expr):
    """The value of a query that should give one sample (None otherwise)."""
    r = prom.query(expr)
    return float(r[0]["value"][1]) if len(r) == 1 else None


def scrape_values(st, name):
    """{labels string: value} of a metric in a direct scrape of the pool's /metrics."""
    _, _, body = st.request("GET", "/metrics")
    out = {}
    for line in body.decode().splitlines():
        mm = re.match(rf"^{name}(\{{.*\}})? (\S+)$", line)
        if mm:
            out[mm.group(1) or ""] = float(mm.group(2))
    return out


def labels_key(metric, drop=("__name__", "job", "instance", "deployment")):
    kv = {k: v for k, v in metric.items() if k not in drop}
    return kv


# --- a real Prometheus on a real pool ---------------------------------------------
with observed_pool(rounds=3) as (st, prom, counts):
    print("traffic:", dict(sorted(counts.items())))
    t = prom.target()
    check(t is not None and t["health"] == "up" and t["scrapeUrl"].endswith(f":{st.http_port}/metrics")
          and t["labels"].get("deployment") == "local",
          f"the {JOB} target scrapes the stack's nginx /metrics and is up: "
          f"{t and (t['scrapeUrl'], t['health'], t.get('lastError'))}")
    check(one(prom, f'up{{job="{JOB}"}}') == 1, "up == 1")
    check(one(prom, f'valerie_workers{{job="{JOB}"}}') == 2, "valerie_workers is 2 in Prometheus")
    check(one(prom, 'count(valerie_build_info{version=~".+"})') == 1, "valerie_build_info carries a version")

    # What Prometheus holds is what the pool counted.
    sent_404 = counts.get("session 404", 0)
    check(one(prom, 'sum(valerie_http_requests_total{route="/api/v1/sessions/{id}",code="404"})') == sent_404,
          f"{sent_404} session 404s counted, by route template")
    check(one(prom, 'sum(valerie_http_requests_total{route="unmatched",code="404"})') == counts.get("unmatched 404"),
          "404s on no route are counted as route=\"unmatched\"")
    check(one(prom, 'sum(valerie_http_requests_total{route="/api/v1/chat",code="502"})') == counts.get("chat 502"),
          f"{counts.get('chat 502')} chat turns both providers failed: 502s counted")
    hits = counts.get("blast 429", 0)
    check(hits > 0 and one(prom, 'sum(valerie_ratelimit_rejections_total{scope="address"})') == hits,
          f"{hits} requests over the address's bucket: 429s counted as rate-limit rejections")
    check(counts.get("tool call 200 tool_calls", 0) == 4, "a tool call answered in every round")
    agent_calls = counts.get("agent turn 200 1", 0)
    check(agent_calls == 8 and one(prom, 'sum(valerie_agent_calls_total{agent="demo"})') == 8,
          f"{agent_calls} agent tool calls in chat turns, all counted by agent")
    check(one(prom, 'valerie_circuit_state{target="agent:demo"}') == 0,
          "the agent's circuit is reported, closed")
    direct = scrape_values(st, "valerie_llm_requests_total")
    got = {}
    for s in prom.query("valerie_llm_requests_total"):
        lk = labels_key(s["metric"])
        key = "{" + ",".join(f'{k}="{lk[k]}"' for k in ("provider", "model", "outcome")) + "}"
        got[key] = float(s["value"][1])
    check(got == direct and len(got) == 10,
          f"every valerie_llm_requests_total series in Prometheus equals the pool's /metrics "
          f"({len(got)} series): {sorted(set(got.items()) ^ set(direct.items()))[:6]}")
    check(one(prom, 'sum(valerie_llm_fallbacks_total{provider="anthropic"})') == 4,
          "4 turns answered by the fallback (anthropic)")
    check((one(prom, 'sum(valerie_llm_retries_total{provider="openai"})') or 0) >= 4,
          "openai's retries are counted")

    # Rates and quantiles over the scrapes.
    rate = one(prom, 'sum(rate(valerie_http_requests_total{route="/api/v1/chat"}[1m]))')
    check(rate is not None and rate > 0, f"chat request rate > 0: {rate}")
    p95 = one(prom, 'histogram_quantile(0.95, sum by (le) '
                    '(rate(valerie_http_request_duration_seconds_bucket{route="/api/v1/chat"}[1m])))')
    check(p95 is not None and 0 < p95 < 10, f"chat p95 latency is a finite number of seconds: {p95}")
    ratio = one(prom, 'sum(rate(valerie_http_requests_total{code=~"5..",route!~"/metrics|/health.*"}[1m])) '
                      '/ sum(rate(valerie_http_requests_total{route!~"/metrics|/health.*"}[1m]))')
    check(ratio is not None and 0.05 < ratio < 0.5, f"5xx share of user requests over 5%: {ratio}")
    ttft = finite_values(prom.query('histogram_quantile(0.5, sum by (provider, le) '
                                    '(rate(valerie_llm_time_to_first_token_seconds_bucket[1m])))'))
    check(len(ttft) >= 1, f"time to first token of streamed calls: {ttft}")
    tok = one(prom, 'sum(rate(valerie_llm_tokens_total{direction="output"}[1m]))')
    check(tok is not None and tok > 0, f"output tokens per second > 0: {tok}")

    # The rules run against real data: all loaded, none failing.
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    check(len(rules) == nrules == len(alerts), f"Prometheus loaded the {nrules} rules: {len(rules)}")
    bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
    check(not bad and all(r.get("health") == "ok" for r in rules) and rules,
          f"every rule evaluated without error: {bad}")

    def alert_states():
        return {(a["labels"]["alertname"], a["state"]) for a in prom.api("alerts")["alerts"]}
    wait_until(lambda: ("ValerieHighErrorRate", "pending") in alert_states(), 5, 0.2)
    states = alert_states()
    check(("ValerieHighErrorRate", "pending") in states,
          f"ValerieHighErrorRate is pending on the traffic's 502s (fires after 5 minutes): {states}")
    check(not any(a == "ValerieNoWorkers" for a, _ in states), "ValerieNoWorkers is quiet")
    check(not any(a == "ValerieStoreDown" for a, _ in states), "ValerieStoreDown is quiet")

done("test_prometheus")
