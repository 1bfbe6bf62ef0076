#!/bin/bash
# bench/provider.sh: what Valerie adds to a chat completion, and what 1,000 calls in flight
# cost in memory. Run from the build tree after make; only reports, never asserts.
#  1. added latency: POST /v1/chat/completions (no session, openai provider) through nginx
#     and the pool to a fast mock upstream (nginx returning a fixed completion), against
#     calling the mock directly, at 1 and 64 connections, in the same run;
#  2. memory: 1,000 calls in flight through the pool to a slow HTTPS upstream
#     (tests/fakes/fake_llm.py with a delay), the pool's resident memory while they wait
#     (the sum of RSS, and of PSS, which splits shared pages among the processes).
#     At 1 connection also in pairs (bench/pairlat.c, built with cc): every pass calls the
#     mock and Valerie once each, in random order, so a stall of the host falls on both
#     with the same odds; wrk's alternating 10 s runs let one window's stalls land on one side.
#     The floors in the same run, paired against the mock alike: a bare nginx reverse proxy
#     in front of the mock (bench/proxy-floor.conf.in), what one more process in the path
#     costs on this host; and that nginx passing over FastCGI to bench/fcgi-relay.c, which
#     relays to the mock: Valerie's chain of processes with no gateway work in it.
# Environment: BENCH_DURATION (s per run, default 10), BENCH_ROUNDS (3: direct and valerie
# alternate, each round gives the added p50 and p99, the summary is their median),
# BENCH_MEMORY (1; 0 skips part 2), BENCH_INFLIGHT (1000), BENCH_DELAY_MS (15000),
# VALERIE_WORKERS (2), VALERIE_THREADS (8; the memory part uses 4 x 256).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
dur=${BENCH_DURATION:-10}
rounds=${BENCH_ROUNDS:-3}
inflight=${BENCH_INFLIGHT:-1000}
delay=${BENCH_DELAY_MS:-15000}
run=$(mktemp -d /tmp/valerie-bench-provider.XXXXXX)
mock_pid="" proxy_pid="" fake_pid="" relay_pidfile=""
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cleanup() {
	VALERIE_RUN_DIR=$run/stack bash "$src/scripts/run-local.sh" stop >/dev/null 2>&1 || true
	if [ -n "$mock_pid" ]; then kill "$mock_pid" 2>/dev/null || true; fi
	if [ -n "$proxy_pid" ]; then kill "$proxy_pid" 2>/dev/null || true; fi
	if [ -n "$relay_pidfile" ] && [ -s "$relay_pidfile" ]; then
		kill "$(cat "$relay_pidfile")" 2>/dev/null || true
		sleep 0.5
	fi
	if [ -n "$fake_pid" ]; then kill "$fake_pid" 2>/dev/null || true; fi
	rm -rf "$run"
}
trap cleanup EXIT

export VALERIE_NGINX_RATE=1000000 VALERIE_NGINX_BURST=1000000 VALERIE_NGINX_CONN=65535
export RATE_LIMIT_REQUESTS_PER_MINUTE=1000000 RATE_LIMIT_BURST=1000000
export LOG_LEVEL=warning VALERIE_RUN_DIR=$run/stack VALERIE_DATA_DIR=$run/data
export VALERIE_LLM_PROVIDER=openai OPENAI_API_KEY=sk-test OPENAI_MODEL=gpt-test
export VALERIE_HTTP_PORT VALERIE_HTTPS_PORT

# --- 1. added latency against the mock upstream ---
mport=$(port)
mkdir -p "$run/mock"
sed -e "s|@DIR@|$run/mock|g" -e "s|@PORT@|$mport|g" "$here/mock-upstream.conf.in" >"$run/mock/nginx.conf"
nginx -p "$run/mock" -c "$run/mock/nginx.conf" -g 'daemon off;' 2>/dev/null &
mock_pid=$!
# The FastCGI floor: bench/fcgi-relay.c, 2 processes started as the worker is.
cc -O2 -Wall -o "$run/fcgi-relay" "$here/fcgi-relay.c" -lfcgi
relay_pidfile=$run/mock/relay.pid
VALERIE_BIN=$run/fcgi-relay VALERIE_LISTEN=$run/mock/relay.sock VALERIE_WORKERS=2 \
	VALERIE_POOL_PIDFILE=$relay_pidfile VALERIE_POOL_LOG=$run/mock/relay.log \
	BENCH_UPSTREAM_PORT=$mport bash "$src/scripts/valerie-pool.sh" >/dev/null
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"
pport=$(port)
sed -e "s|@DIR@|$run/mock|g" -e "s|@PORT@|$pport|g" -e "s|@MOCK_PORT@|$mport|g" \
	-e "s|@RELAY_SOCK@|$run/mock/relay.sock|g" -e "s|@USER_LINE@|$user_line|g" \
	"$here/proxy-floor.conf.in" >"$run/mock/proxy.conf"
nginx -p "$run/mock" -c "$run/mock/proxy.conf" -g 'daemon off;' 2>/dev/null &
proxy_pid=$!
sleep 0.5
VALERIE_HTTP_PORT=$(port)
VALERIE_HTTPS_PORT=$(port)
export VALERIE_WORKERS=${VALERIE_WORKERS:-2} VALERIE_THREADS=${VALERIE_THREADS:-8}
OPENAI_BASE_URL="http://127.0.0.1:$mport/v1" bash "$src/scripts/run-local.sh" start >/dev/null
# A VM's idle policy moves these figures by about 0.1 ms (bench/README.md, "Measured in pairs").
hp=/sys/module/haltpoll/parameters/guest_halt_poll_ns
halt=""
[ -r "$hp" ] && halt=", guest_halt_poll_ns $(cat "$hp")"
echo "added latency: POST /v1/chat/completions, ${dur}s per run, $rounds rounds, $VALERIE_WORKERS workers x $VALERIE_THREADS threads (load $(cut -d' ' -f1 /proc/loadavg)$halt)"
printf '%-6s %-6s %-10s %s\n' conns round target result
: >"$run/rounds"
for c in 1 64; do
	t=2
	[ "$c" -lt 2 ] && t=1
	for target in direct valerie; do
		url="http://127.0.0.1:$mport/v1/chat/completions"
		[ "$target" = valerie ] && url="http://127.0.0.1:$VALERIE_HTTP_PORT/v1/chat/completions"
		wrk -t"$t" -c"$c" -d1s -s "$here/completion.lua" "$url" >/dev/null
	done
	for r in $(seq "$rounds"); do
		for target in direct valerie; do
			url="http://127.0.0.1:$mport/v1/chat/completions"
			[ "$target" = valerie ] && url="http://127.0.0.1:$VALERIE_HTTP_PORT/v1/chat/completions"
			res=$(wrk -t"$t" -c"$c" -d"${dur}s" --latency -s "$here/completion.lua" "$url" | grep '^RESULT')
			printf '%-6s %-6s %-10s %s\n' "$c" "$r" "$target" "${res#RESULT }"
			echo "$c $r $target ${res#RESULT }" >>"$run/rounds"
		done
	done
done
# The same at 1 connection, measured in pairs (bench/pairlat.c): each pass calls the mock
# and Valerie once, in random order, so host stalls fall on both alike.
cc -O2 -Wall -o "$run/pairlat" "$here/pairlat.c"
body='{"model":"gpt-test","messages":[{"role":"user","content":"hello bench"}]}'
# A warm-up first, discarded: the first round after the 64-connection runs was the worst
# of three in both runs of 2026-12-06 13:53 and 13:56 (bench/README.md, "The floor").
"$run/pairlat" 3 10000000 "$body" "$mport" /v1/chat/completions \
	"$VALERIE_HTTP_PORT" /v1/chat/completions >/dev/null
"$run/pairlat" 2 10000000 "$body" "$mport" /v1/chat/completions \
	"$pport" /v1/chat/completions >/dev/null
"$run/pairlat" 2 10000000 "$body" "$mport" /v1/chat/completions \
	"$pport" /relay/v1/chat/completions >/dev/null
: >"$run/pairs"
: >"$run/floor"
: >"$run/relay"
for r in $(seq "$rounds"); do
	res=$("$run/pairlat" "$dur" 10000000 "$body" "$mport" /v1/chat/completions \
		"$VALERIE_HTTP_PORT" /v1/chat/completions)
	printf '%-6s %-6s %-10s %s\n' 1 "$r" paired "${res#RESULT }"
	echo "${res#RESULT }" >>"$run/pairs"
	res=$("$run/pairlat" "$dur" 10000000 "$body" "$mport" /v1/chat/completions \
		"$pport" /v1/chat/completions)
	printf '%-6s %-6s %-10s %s\n' 1 "$r" floor "${res#RESULT }"
	echo "${res#RESULT }" >>"$run/floor"
	res=$("$run/pairlat" "$dur" 10000000 "$body" "$mport" /v1/chat/completions \
		"$pport" /relay/v1/chat/completions)
	printf '%-6s %-6s %-10s %s\n' 1 "$r" relay "${res#RESULT }"
	echo "${res#RESULT }" >>"$run/relay"
done
python3 - "$run/rounds" "$run/pairs" "$run/floor" "$run/relay" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    c, r, target, *kv = line.split()
    runs.setdefault((int(c), int(r)), {})[target] = {k: float(v) for k, v in (x.split("=") for x in kv)}
for c in sorted({k[0] for k in runs}):
    rs = [v for k, v in sorted(runs.items()) if k[0] == c and len(v) == 2]
    add50 = [v["valerie"]["p50_ms"] - v["direct"]["p50_ms"] for v in rs]
    add99 = [v["valerie"]["p99_ms"] - v["direct"]["p99_ms"] for v in rs]
    rps = [v["valerie"]["rps"] for v in rs]
    print(f"{c} conn(s): added p50 {statistics.median(add50):.3f} ms, p99 {statistics.median(add99):.3f} ms "
          f"(median of {len(rs)} rounds; p99 per round: {' '.join(f'{x:.3f}' for x in add99)}); "
          f"valerie {statistics.median(rps):.0f} req/s")
for label, path, b in (("paired", sys.argv[2], "valerie"),
                       ("nginx proxy_pass alone (the floor)", sys.argv[3], "proxy"),
                       ("nginx + fcgi-relay (the FastCGI floor)", sys.argv[4], "relay")):
    pairs = [{k: float(v) for k, v in (x.split("=") for x in line.split())} for line in open(path)]
    if not pairs:
        continue
    med = lambda key: statistics.median(p[key] for p in pairs)
    print(f"1 conn, {label}: added p50 {med('added_p50_ms'):.3f} ms, p90 {med('added_p90_ms'):.3f} ms, "
          f"p99 {med('added_p99_ms'):.3f} ms (median of {len(pairs)} rounds; p99 per round: "
          f"{' '.join(format(p['added_p99_ms'], '.3f') for p in pairs)}); "
          f"mock p99 {med('a_p99_ms'):.3f} ms, {b} p99 {med('b_p99_ms'):.3f} ms, "
          f"{sum(p['passes'] for p in pairs):.0f} pairs, {sum(p['errors'] for p in pairs):.0f} errors")
PY
bash "$src/scripts/run-local.sh" stop >/dev/null
[ "${BENCH_MEMORY:-1}" = 0 ] && exit 0

# --- 2. memory with $inflight calls in flight to a slow HTTPS upstream ---
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
	-addext subjectAltName=IP:127.0.0.1 -keyout "$run/k.pem" -out "$run/c.pem" 2>/dev/null
python3 "$src/tests/fakes/fake_llm.py" --port 0 --port-file "$run/fake.port" \
	--tls-cert "$run/c.pem" --tls-key "$run/k.pem" --delay-ms "$delay" >/dev/null 2>&1 &
fake_pid=$!
for _ in $(seq 50); do [ -s "$run/fake.port" ] && break; sleep 0.1; done
fport=$(cat "$run/fake.port")
VALERIE_HTTP_PORT=$(port)
VALERIE_HTTPS_PORT=$(port)
export VALERIE_WORKERS=4 VALERIE_THREADS=256
OPENAI_BASE_URL="https://127.0.0.1:$fport/v1" VALERIE_CA_BUNDLE="$run/c.pem" OPENAI_TIMEOUT=120 \
	OPENAI_FIRST_TOKEN_TIMEOUT_MS=120000 VALERIE_TURN_TIMEOUT=200 \
	bash "$src/scripts/run-local.sh" start >/dev/null
rss() {  # resident kB of multiwatch and its workers: "RSS PSS" (PSS splits shared pages)
	local pool total=0 pss=0 p
	pool=$(cat "$run/stack/pool.pid")
	for p in $pool $(cat "/proc/$pool/task/$pool/children"); do
		total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")))
		pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")))
	done
	echo "$total $pss"
}
read -r idle idle_pss <<<"$(rss)"
python3 - "$VALERIE_HTTP_PORT" "$inflight" <<'PY' &
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
body = b'{"model":"gpt-test","messages":[{"role":"user","content":"slow"}]}'
req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
       b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(req)
    socks.append(s)
ok = 0
for s in socks:
    s.settimeout(180)
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    ok += data.startswith(b"HTTP/1.1 200")
    s.close()
print(f"clients: {ok}/{n} answered 200")
PY
client=$!
peak_in=0 peak_rss=0 peak_pss=0
for _ in $(seq $((delay / 250))); do
	cur=$(curl -sk "https://127.0.0.1:$fport/_control/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["in_flight"])')
	read -r r p <<<"$(rss)"
	[ "$cur" -gt "$peak_in" ] && peak_in=$cur
	[ "$r" -gt "$peak_rss" ] && peak_rss=$r
	[ "$p" -gt "$peak_pss" ] && peak_pss=$p
	sleep 0.25
done
wait "$client"
echo "memory: $inflight calls to a slow HTTPS upstream (${delay} ms), 4 workers x 256 threads"
echo "  pool idle: $((idle / 1024)) MB; peak with calls in flight: $((peak_rss / 1024)) MB; upstream saw $peak_in in flight at once"
echo "  the same as PSS (shared pages split among the processes): idle $((idle_pss / 1024)) MB, peak $((peak_pss / 1024)) MB"
