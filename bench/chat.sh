#!/bin/bash
# bench/chat.sh: chat turns per second through nginx and the pool with the offline provider
# at zero latency, for the lmdb and the redis store, against the same turn with no store
# (/v1/chat/completions without a session), and the store's share of the server's time
# from the pool's own metrics. Run from the build tree after make. Only reports.
#
# Environment: BENCH_DURATION (s, default 10), BENCH_CONNS (default 16),
# VALERIE_WORKERS (2), VALERIE_THREADS (8), SESSIONS (200), BENCH_LMDB_SYNCS (the
# VALERIE_LMDB_SYNC modes to run, default "periodic"; e.g. "periodic intact full").
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
dur=${BENCH_DURATION:-10}
conns=${BENCH_CONNS:-16}
run=$(mktemp -d /tmp/valerie-bench-chat.XXXXXX)
redis_pid=""
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cleanup() {
	VALERIE_RUN_DIR=$run/stack bash "$src/scripts/run-local.sh" stop >/dev/null 2>&1 || true
	if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; fi
	rm -rf "$run"
}
trap cleanup EXIT

export VALERIE_WORKERS=${VALERIE_WORKERS:-2} VALERIE_THREADS=${VALERIE_THREADS:-8}
export VALERIE_NGINX_RATE=1000000 VALERIE_NGINX_BURST=1000000 LOG_LEVEL=warning
export RATE_LIMIT_REQUESTS_PER_MINUTE=1000000 RATE_LIMIT_BURST=1000000
export VALERIE_HTTP_PORT VALERIE_HTTPS_PORT VALERIE_RUN_DIR=$run/stack

# Sums a metric's samples (all label sets) from a scrape.
metric_sum() { awk -v n="$1" '$1 ~ "^"n"({|$)" {s += $NF} END {printf "%.6f", s}' "$2"; }

measure() {   # label, extra env...
	local label=$1 out
	shift
	VALERIE_HTTP_PORT=$(port)
	VALERIE_HTTPS_PORT=$(port)
	rm -rf "$run/stack" "$run/data"
	env "$@" VALERIE_DATA_DIR="$run/data" bash "$src/scripts/run-local.sh" start >/dev/null
	wrk -t2 -c"$conns" -d1s -s "$here/chat.lua" "http://127.0.0.1:$VALERIE_HTTP_PORT" >/dev/null
	out=$(wrk -t2 -c"$conns" -d"${dur}s" --latency -s "$here/chat.lua" \
		"http://127.0.0.1:$VALERIE_HTTP_PORT" | grep '^RESULT')
	curl -s "http://127.0.0.1:$VALERIE_HTTP_PORT/metrics" >"$run/metrics"
	local store http
	store=$(metric_sum valerie_store_op_duration_seconds_sum "$run/metrics")
	http=$(awk '/^valerie_http_request_duration_seconds_sum\{route="\/api\/v1\/chat"\}/ {print $NF}' "$run/metrics")
	printf '%-24s %s store_s=%s chat_http_s=%s\n' "$label" "${out#RESULT }" "$store" "${http:-0}"
	bash "$src/scripts/run-local.sh" stop >/dev/null
}

echo "chat turns, offline provider (0 ms), $VALERIE_WORKERS workers x $VALERIE_THREADS threads, $conns connections, ${dur}s"
STATELESS=1 measure "no store (stateless)"
for sync in ${BENCH_LMDB_SYNCS:-periodic}; do
	STATELESS=0 measure "lmdb ($sync)" VALERIE_SESSION_STORE=lmdb VALERIE_LMDB_SYNC="$sync"
done
rport=$(port)
mkdir -p "$run/redis"
redis-server --port "$rport" --bind 127.0.0.1 --dir "$run/redis" --appendonly yes \
	--save '' --daemonize no >/dev/null 2>&1 &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
STATELESS=0 measure "redis (appendonly)" VALERIE_SESSION_STORE=redis \
	VALERIE_SESSION_REDIS_URL="redis://127.0.0.1:$rport/0"
