#!/bin/bash
# bench/instructions.sh: user-space instructions one worker spends per non-streaming chat
# completion (POST /v1/chat/completions, no session, openai provider, the fast mock upstream
# of bench/provider.sh), counted by callgrind. Deterministic where timings on a shared
# machine are not: use it to compare two trees. Run from the build tree after make.
# Environment: BENCH_CALLS (sequential calls, default 300); BENCH_SESSION=1 sends each call
# with its own X-Session-Id, so each completion also loads and appends a turn in LMDB.
# Prints: instructions per completion, and the callgrind file for callgrind_annotate.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
bin=${VALERIE_BIN:-$PWD/fcgi/valerie}
[ -x "$bin" ] || bin=$src/fcgi/valerie
n=${BENCH_CALLS:-300}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
run=$(mktemp -d /tmp/valerie-bench-instr.XXXXXX)
mock_pid=""
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() {
	VALERIE_RUN_DIR=$run/stack bash "$src/scripts/run-local.sh" stop >/dev/null 2>&1 || true
	if [ -n "$mock_pid" ]; then kill "$mock_pid" 2>/dev/null || true; fi
	rm -rf "$run/stack" "$run/data" "$run/mock"
}
trap cleanup EXIT

export VALERIE_NGINX_RATE=1000000 VALERIE_NGINX_BURST=1000000 VALERIE_NGINX_CONN=65535
export RATE_LIMIT_REQUESTS_PER_MINUTE=1000000 RATE_LIMIT_BURST=1000000
export LOG_LEVEL=warning VALERIE_RUN_DIR=$run/stack VALERIE_DATA_DIR=$run/data
export VALERIE_LLM_PROVIDER=openai OPENAI_API_KEY=sk-test OPENAI_MODEL=gpt-test
mport=$(port)
mkdir -p "$run/mock"
sed -e "s|@DIR@|$run/mock|g" -e "s|@PORT@|$mport|g" "$here/mock-upstream.conf.in" >"$run/mock/nginx.conf"
nginx -p "$run/mock" -c "$run/mock/nginx.conf" -g 'daemon off;' 2>/dev/null &
mock_pid=$!
sleep 0.5
# One worker under callgrind, counting only its request threads (thread_main).
cat >"$run/wrap.sh" <<W
#!/bin/sh
exec valgrind -q --tool=callgrind --callgrind-out-file=$run/callgrind.out.%p --toggle-collect=thread_main $bin "\$@"
W
chmod +x "$run/wrap.sh"
export VALERIE_BIN=$run/wrap.sh VALERIE_WORKERS=1 VALERIE_THREADS=8
export VALERIE_HTTP_PORT VALERIE_HTTPS_PORT
VALERIE_HTTP_PORT=$(port)
VALERIE_HTTPS_PORT=$(port)
OPENAI_BASE_URL="http://127.0.0.1:$mport/v1" bash "$src/scripts/run-local.sh" start >/dev/null
python3 - "$VALERIE_HTTP_PORT" "$n" "${BENCH_SESSION:-0}" <<'PY'
import http.client, sys
port, n, session = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
body = '{"model":"gpt-test","messages":[{"role":"user","content":"hello bench"}]}'
c = http.client.HTTPConnection("127.0.0.1", port)
for i in range(n):
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-test"}
    if session:
        headers["X-Session-Id"] = f"bench-{i}"
    c.request("POST", "/v1/chat/completions", body, headers)
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"a completion answered {r.status}")
PY
VALERIE_RUN_DIR=$run/stack bash "$src/scripts/run-local.sh" stop >/dev/null
sleep 1
# The worker's file is the largest (check-config runs under the wrapper too).
f=$(ls -S "$run"/callgrind.out.* | head -1)
total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "instructions per completion: $((total / n)) ($n sequential calls, one worker; user space)"
echo "callgrind file: $f (callgrind_annotate --inclusive=yes $f)"
