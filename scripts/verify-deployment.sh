#!/bin/bash
# verify-deployment.sh: checks a running Valerie from the outside, the way a user
# and an operator see it, and prints [OK] or [FAIL] per check.
#
# Usage: scripts/verify-deployment.sh BASE_URL     e.g. https://chat.example.com
#
#   health     GET /health answers 200 {"status":"ok","service":"valerie",...}
#   readiness  GET /health/ready answers 200 (store reachable, configuration valid)
#   config     GET /config answers the effective configuration (needs an admin
#              credential unless VALERIE_AUTH=none)
#   chat       POST /api/v1/chat answers a reply and keeps the turn
#              (GET /api/v1/sessions/ID shows it)
#   metrics    GET /metrics is Prometheus text with valerie_build_info (nginx lets
#              only internal addresses in: run this on the nginx host, or set
#              VERIFY_METRICS_URL to a replica's http://HOST:9464/metrics)
#
# Environment:
#   VERIFY_TOKEN      a JWT (valerie token --sub ops --role admin) sent as Bearer
#   VERIFY_API_KEY    or an API key (X-API-Key)
#   VERIFY_INSECURE   1: accept a self-signed certificate (curl -k)
#   VERIFY_METRICS_URL  where the metrics are read (default BASE_URL/metrics)
#   VERIFY_TIMEOUT    seconds per request (default 30)
#
# Exit status: the number of failed checks (0: all passed); 64 usage (or a bad
# VERIFY_TIMEOUT).
set -u

base=${1:-}
if [ -z "$base" ]; then
    echo "usage: $0 BASE_URL" >&2
    exit 64
fi
base=${base%/}
command -v curl >/dev/null || {
    echo "verify-deployment: curl not found" >&2
    exit 64
}
timeout=${VERIFY_TIMEOUT:-30}
# curl refuses anything else, and every check would then "fail" for it.
if ! [[ "$timeout" =~ ^[0-9]{1,6}(\.[0-9]+)?$ ]]; then
    echo "verify-deployment: VERIFY_TIMEOUT must be a number of seconds (curl's --max-time), not '$timeout'" >&2
    exit 64
fi
curl_args=(-sS --max-time "$timeout" --noproxy '*')
[ "${VERIFY_INSECURE:-0}" = 1 ] && curl_args+=(-k)
auth=()
if [ -n "${VERIFY_TOKEN:-}" ]; then
    auth=(-H "Authorization: Bearer $VERIFY_TOKEN")
elif [ -n "${VERIFY_API_KEY:-}" ]; then
    auth=(-H "X-API-Key: $VERIFY_API_KEY")
fi
fails=0
body=$(mktemp)
trap 'rm -f -- "$body" "$body.err"' EXIT

# req METHOD URL [curl args...]: sets $code, the answer in $body.
req() {
    local m=$1 u=$2
    shift 2
    code=$(curl "${curl_args[@]}" -X "$m" -o "$body" -w '%{http_code}' "$@" "$u" 2>"$body.err") || code=000
}
pass() { printf '[OK]   %s\n' "$*"; }
fail() {
    printf '[FAIL] %s\n' "$*"
    fails=$((fails + 1))
}
said() { head -c 300 "$body" | tr '\n' ' '; }

echo "Verifying $base"

req GET "$base/health"
if [ "$code" = 200 ] && grep -q '"status":"ok"' "$body"; then pass "health: $(said)"; else fail "health: HTTP $code $(said)$(cat "$body.err" 2>/dev/null)"; fi

req GET "$base/health/ready"
if [ "$code" = 200 ]; then pass "readiness"; else fail "readiness: HTTP $code $(said)"; fi

req GET "$base/config" "${auth[@]}"
if [ "$code" = 200 ] && grep -q '"openai_model"' "$body"; then
    pass "config: $(grep -o '"session_store":"[^"]*"' "$body") $(grep -o '"llm_provider":"[^"]*"' "$body")"
else
    fail "config: HTTP $code $(said) (an admin credential: VERIFY_TOKEN or VERIFY_API_KEY)"
fi

sid="verify-$(date +%s)-$$"
req POST "$base/api/v1/chat" "${auth[@]}" -H 'Content-Type: application/json' \
    --data "{\"message\":\"verify-deployment\",\"session_id\":\"$sid\"}"
if [ "$code" = 200 ] && grep -q '"reply"' "$body"; then
    req GET "$base/api/v1/sessions/$sid" "${auth[@]}"
    if [ "$code" = 200 ] && grep -q 'verify-deployment' "$body"; then
        pass "chat: a turn answered and stored (session $sid)"
    else
        fail "chat: answered, but GET /api/v1/sessions/$sid gave HTTP $code $(said)"
    fi
    req DELETE "$base/api/v1/sessions/$sid" "${auth[@]}"
else
    fail "chat: HTTP $code $(said)"
fi

req GET "${VERIFY_METRICS_URL:-$base/metrics}"
if [ "$code" = 200 ] && grep -q '^valerie_build_info' "$body"; then
    pass "metrics: $(grep -c '^valerie_' "$body") samples"
else
    fail "metrics: HTTP $code $(said)"
fi

if [ "$fails" -eq 0 ]; then echo "Deployment verified: all checks passed"; else echo "$fails check(s) failed"; fi
exit "$fails"
