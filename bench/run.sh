#!/bin/bash
# bench/run.sh: GET /health through nginx to Valerie's worker pool, against
# two references behind the same nginx configuration, in one run.
#
# Usage: bench/run.sh            (from the build tree, after make)
#
# What it does (bench/README.md explains why and shows one run):
#   0. generates the local stack's nginx configuration with
#      `scripts/run-local.sh configtest` (the same template, snippets and
#      settings as `run-local.sh start`, with the per-IP rate limit raised) and
#      makes two copies of it in the run dir, each with two additions:
#        location = /bench/static    nginx answers `return 200` with the
#                                    same 53-byte body as /health, by itself
#        location = /bench/fcgi-min  fastcgi_pass to a second pool running
#                                    bench/fcgi-min.c (single-threaded
#                                    libfcgi, fixed body)
#      "off" is the configuration as shipped (fastcgi_keep_conn off); "on"
#      has fastcgi_keep_conn on and `keepalive N` in both upstreams.
#   1. builds bench/fcgi-min.c with cc -O2 ... -lfcgi into the run dir;
#   2. starts both pools with scripts/valerie-pool.sh (spawn-fcgi +
#      multiwatch, VALERIE_WORKERS processes each) and nginx ("off"), then at
#      each connection count runs wrk against nginx-static, fcgi-min and
#      Valerie's GET /health (VALERIE_THREADS threads per process),
#      interleaved, BENCH_ROUNDS times;
#   3. thread sweep: Valerie's pool restarted with each BENCH_THREAD_SWEEP
#      thread count, plus runs with the access log off (LOG_LEVEL=warning)
#      to show what the per-request JSON log line costs;
#   4. keep-conn: fresh pools; at each connection count, fcgi-min and Valerie
#      with nginx "off", then at once with nginx "on"; then how long the pool
#      takes to stop while nginx "on" holds its idle connections; then the
#      same off/on pairs for Valerie with BENCH_KEEPCONN_THREADS threads;
#   5. pool memory (sum of VmRSS and Pss of multiwatch and its workers, from
#      /proc) after each pool's runs;
#   and prints the tables (also written as RUN/summary.md), the ratios, and
#   the raw numbers (RUN/results.tsv, RUN/wrk/*.txt).
#   Besides wrk's figures, each run records the CPU time the pool and nginx
#   used (/proc/PID/stat) per request, which a busy machine disturbs far less
#   than requests/s, and from nginx's access log the requests slower than
#   1 s (stalls wrk cannot see when they last past its end).
#
# Every process it starts it stops by pid on exit (also on error or ^C).
# Timings are never asserted anywhere; this only reports.
#
# Environment:
#   VALERIE_WORKERS        processes per pool, both pools (default 2)
#   VALERIE_THREADS        Valerie threads per process (default 8)
#   BENCH_DURATION         seconds per measured wrk run (default 10)
#   BENCH_WARMUP           seconds of unrecorded wrk before each run (default 1;
#                          0 for none)
#   BENCH_CONNS            connection counts (default "1 16 64")
#   BENCH_ROUNDS           rounds of the main comparison; the median round by
#                          requests/s is reported (default 3)
#   BENCH_WRK_THREADS      wrk threads (default 2; never more than connections)
#   BENCH_WRK_TIMEOUT      seconds after which wrk counts a request as a
#                          timeout (default 5; such requests are not in p99)
#   BENCH_THREAD_SWEEP     Valerie thread counts to try (default
#                          "1 2 4 8 16 32"; empty to skip the sweep)
#   BENCH_SWEEP_CONNS      connection counts of the sweep (default "16 64")
#   BENCH_LOG_PROBE        1: measure Valerie with LOG_LEVEL=warning too, with
#                          1 and VALERIE_THREADS threads (default 1)
#   BENCH_KEEPCONN         1: run the keep-conn comparison (default 1)
#   BENCH_KEEPALIVE        `keepalive` of the upstreams in "on" (default 16)
#   BENCH_KEEPCONN_THREADS Valerie threads per process for the second keep-conn
#                          run (default: enough that every connection nginx
#                          can hold has a thread: (largest BENCH_CONNS +
#                          nginx workers * BENCH_KEEPALIVE) / VALERIE_WORKERS,
#                          rounded up)
#   BENCH_HTTP_PORT, BENCH_HTTPS_PORT
#                          loopback ports (default: random free ones)
#   BENCH_RUN_DIR          run dir (default: a new /tmp/valerie-bench.XXXXXX);
#                          kept at the end with the results, logs truncated
#   BENCH_LOG_LEVEL        Valerie's LOG_LEVEL for the measured runs (default
#                          info: one JSON access line per request, as shipped)
#   VALERIE_BIN            the worker (default fcgi/valerie of this tree)
#   CC, BENCH_CFLAGS       compiler and flags for fcgi-min (cc, -O2)
#   BENCH_REPORT_ONLY      1: only print the report of the run in BENCH_RUN_DIR
#
# The whole run takes about 13 minutes with the defaults. A quick look (about
# a minute):
#   BENCH_DURATION=3 BENCH_WARMUP=0 BENCH_ROUNDS=1 BENCH_THREAD_SWEEP= \
#       BENCH_LOG_PROBE=0 BENCH_KEEPCONN=0 bench/run.sh
set -euo pipefail

me=bench
script_dir=$(cd "$(dirname -- "$0")" && pwd -P)
src_dir=$(cd "$script_dir/.." && pwd -P)

say() { printf '%s: %s\n' "$me" "$*" >&2; }
die() {
    say "$*"
    exit 1
}

is_uint() {
    case "$1" in
        '' | *[!0-9]*) return 1 ;;
        *) return 0 ;;
    esac
}

need_uint() { # NAME VALUE MIN
    if ! { is_uint "$2" && [ "${#2}" -le 6 ] && [ "$2" -ge "$3" ]; }; then
        die "$1 must be a whole number >= $3, not '$2'"
    fi
}

need_list() { # NAME VALUE MIN: a space-separated list of whole numbers
    local v
    for v in $2; do need_uint "$1" "$v" "$3"; done
}

# ---------------------------------------------------------------- settings ---

workers=${VALERIE_WORKERS:-2}
threads=${VALERIE_THREADS:-8}
duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-1}
conns_list=${BENCH_CONNS:-1 16 64}
rounds=${BENCH_ROUNDS:-3}
wrk_threads=${BENCH_WRK_THREADS:-2}
wrk_timeout=${BENCH_WRK_TIMEOUT:-5}
sweep=${BENCH_THREAD_SWEEP-1 2 4 8 16 32}
sweep_conns=${BENCH_SWEEP_CONNS:-16 64}
log_probe=${BENCH_LOG_PROBE:-1}
keepconn=${BENCH_KEEPCONN:-1}
keepalive=${BENCH_KEEPALIVE:-16}
log_level=${BENCH_LOG_LEVEL:-info}

need_uint VALERIE_WORKERS "$workers" 1
need_uint VALERIE_THREADS "$threads" 1
need_uint BENCH_DURATION "$duration" 1
need_uint BENCH_WARMUP "$warmup" 0
need_list BENCH_CONNS "$conns_list" 1
[ -n "${conns_list// /}" ] || die "BENCH_CONNS must not be empty"
need_uint BENCH_ROUNDS "$rounds" 1
need_uint BENCH_WRK_THREADS "$wrk_threads" 1
need_uint BENCH_WRK_TIMEOUT "$wrk_timeout" 1
need_list BENCH_THREAD_SWEEP "$sweep" 1
need_list BENCH_SWEEP_CONNS "$sweep_conns" 1
need_uint BENCH_KEEPALIVE "$keepalive" 1
case "$log_probe" in 0 | 1) ;; *) die "BENCH_LOG_PROBE must be 0 or 1" ;; esac
case "$keepconn" in 0 | 1) ;; *) die "BENCH_KEEPCONN must be 0 or 1" ;; esac

# The command as given, for the report: the settings that were set.
cmd=""
printf -v q '\047'
for v in VALERIE_WORKERS VALERIE_THREADS VALERIE_BIN BENCH_DURATION BENCH_WARMUP BENCH_CONNS \
    BENCH_ROUNDS BENCH_WRK_THREADS BENCH_WRK_TIMEOUT BENCH_THREAD_SWEEP BENCH_SWEEP_CONNS \
    BENCH_LOG_PROBE BENCH_KEEPCONN BENCH_KEEPALIVE BENCH_KEEPCONN_THREADS BENCH_LOG_LEVEL CC \
    BENCH_CFLAGS; do
    if [ -n "${!v+x}" ]; then
        case "${!v}" in
            *[!A-Za-z0-9_./-]* | '') cmd="$cmd$v=$q${!v}$q " ;;
            *) cmd="$cmd$v=${!v} " ;;
        esac
    fi
done
cmd="${cmd}bench/run.sh"

max_conns=0
for c in $conns_list; do [ "$c" -le "$max_conns" ] || max_conns=$c; done
nginx_workers=$(nproc) # worker_processes auto in nginx/local.conf.in
if [ -n "${BENCH_KEEPCONN_THREADS:-}" ]; then
    kc_threads=$BENCH_KEEPCONN_THREADS
    need_uint BENCH_KEEPCONN_THREADS "$kc_threads" 1
else
    kc_threads=$(((max_conns + nginx_workers * keepalive + workers - 1) / workers))
fi

for tool in nginx wrk curl spawn-fcgi multiwatch ss awk; do
    command -v "$tool" >/dev/null || die "$tool not found (see bench/README.md)"
done
cc=${CC:-cc}
cflags=${BENCH_CFLAGS:--O2}
command -v "$cc" >/dev/null || die "C compiler '$cc' not found"

valerie_bin=${VALERIE_BIN:-$src_dir/fcgi/valerie}
case "$valerie_bin" in
    /*) ;;
    *) valerie_bin=$PWD/$valerie_bin ;;
esac
[ -x "$valerie_bin" ] || die "no worker binary $valerie_bin (run make first, or set VALERIE_BIN)"
pool_script=$src_dir/scripts/valerie-pool.sh
run_local=$src_dir/scripts/run-local.sh
if ! [ -x "$pool_script" ] || ! [ -x "$run_local" ]; then
    die "scripts/valerie-pool.sh or scripts/run-local.sh missing"
fi

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
random_port() {
    local p i
    for i in $(seq 1 100); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        if port_free "$p" && [ "$p" != "${1:-}" ]; then
            printf '%s' "$p"
            return 0
        fi
        : "$i"
    done
    die "no free loopback port found"
}
http_port=${BENCH_HTTP_PORT:-$(random_port)}
https_port=${BENCH_HTTPS_PORT:-$(random_port "$http_port")}
need_uint BENCH_HTTP_PORT "$http_port" 1
need_uint BENCH_HTTPS_PORT "$https_port" 1

if [ -n "${BENCH_RUN_DIR:-}" ]; then
    run=$BENCH_RUN_DIR
    case "$run" in /*) ;; *) run=$PWD/$run ;; esac
    mkdir -p -- "$run"
else
    run=$(mktemp -d /tmp/valerie-bench.XXXXXX)
fi
run=${run%/}
stack=$run/stack # VALERIE_RUN_DIR of `run-local.sh configtest`
logs=$stack/logs
mkdir -p -- "$run/bin" "$run/wrk" "$run/data" "$logs"
results=$run/results.tsv
memory=$run/memory.tsv
stops=$run/stops.tsv
summary=$run/summary.md

valerie_sock=$stack/valerie.sock # @SOCKET@ of the generated configuration
min_sock=$stack/fcgi-min.sock
[ "${#valerie_sock}" -le 100 ] || die "run dir path too long for unix sockets: $run"

# ---------------------------------------------------------------- processes ---

nginx_pid=""
declare -A pool_pids=()

# alive PID COMM: PID is a live (not zombie) process named COMM. Read from
# /proc, which is quick enough to poll every 0.1 s while timing a stop.
alive() {
    local stat comm
    [ -n "$1" ] || return 1
    comm=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
    [ "$comm" = "$2" ] || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    case "$stat" in Z* | X*) return 1 ;; esac
    return 0
}

now_ms() { local t=${EPOCHREALTIME/[!0-9]/}; printf '%s' "${t%???}"; }

wait_gone() { # PID COMM TENTHS: wait until PID is gone, at most TENTHS/10 s
    local end=$(($(now_ms) + $3 * 100))
    while alive "$1" "$2"; do
        [ "$(now_ms)" -lt "$end" ] || return 1
        sleep 0.05
    done
}

stop_nginx() {
    [ -n "$nginx_pid" ] || return 0
    if alive "$nginx_pid" nginx; then
        kill -QUIT "$nginx_pid" 2>/dev/null || true
        if ! wait_gone "$nginx_pid" nginx 100; then
            kill -TERM "$nginx_pid" 2>/dev/null || true
            if ! wait_gone "$nginx_pid" nginx 30; then
                # nginx's master is a process group leader (it calls setsid).
                kill -KILL -- "-$nginx_pid" 2>/dev/null || true
                wait_gone "$nginx_pid" nginx 20 || true
            fi
        fi
    fi
    nginx_pid=""
}

# stop_pool NAME [WHY]: with WHY, how long the pool took to stop goes to
# RUN/stops.tsv (and the report).
stop_pool() {
    local pid=${pool_pids[$1]:-} t0 how=graceful secs
    [ -n "$pid" ] || return 0
    t0=$(now_ms)
    if alive "$pid" multiwatch; then
        # As run-local.sh: TERM (multiwatch sends the workers SIGUSR1), a
        # second TERM (forwarded as SIGTERM), then SIGKILL to the pool's
        # process group (valerie-pool.sh started it with setsid).
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" multiwatch 100; then
            how="second SIGTERM after 10 s"
            kill -TERM "$pid" 2>/dev/null || true
            if ! wait_gone "$pid" multiwatch 30; then
                how="SIGKILL after 13 s"
                kill -KILL -- "-$pid" 2>/dev/null || true
                wait_gone "$pid" multiwatch 20 || true
            fi
            say "pool $1 (pid $pid) did not drain within 10 s: $how"
        fi
    fi
    unset "pool_pids[$1]"
    if [ -n "${2:-}" ]; then
        secs=$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
        printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$secs" "$how" >>"$stops"
    fi
}

cleanup() {
    local rc=$? name
    trap - EXIT INT TERM
    stop_nginx
    for name in "${!pool_pids[@]}"; do stop_pool "$name"; done
    if [ -d "$logs" ]; then
        # Keep the run dir small: the per-request logs were already counted.
        find "$logs" -maxdepth 1 -name '*.log' -size +1M -exec truncate -s 0 {} + 2>/dev/null || true
    fi
    [ "$rc" = 0 ] || say "failed (exit $rc); run dir kept: $run"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_pool NAME BIN THREADS SOCKET [ENV=VALUE ...]
start_pool() {
    local name=$1 bin=$2 nthreads=$3 sock=$4 pid i kids
    shift 4
    stop_pool "$name"
    rm -f -- "$sock" "$run/$name.pid"
    # The same launcher as run-local.sh, the Dockerfile and the systemd unit.
    env VALERIE_BIN="$bin" VALERIE_LISTEN="$sock" VALERIE_WORKERS="$workers" \
        VALERIE_THREADS="$nthreads" VALERIE_POOL_PIDFILE="$run/$name.pid" \
        VALERIE_POOL_LOG="$logs/$name.log" VALERIE_SOCKET_MODE=0660 \
        VALERIE_RUN_DIR="$run" VALERIE_DATA_DIR="$run/data" LOG_LEVEL="$log_level" \
        "$@" "$pool_script" </dev/null >>"$logs/$name.log" 2>&1 ||
        die "pool $name did not start; see $logs/$name.log"
    pid=$(tr -dc '0-9' <"$run/$name.pid")
    alive "$pid" multiwatch || die "pool $name: no multiwatch at pid '$pid'"
    pool_pids[$name]=$pid
    for i in $(seq 1 100); do
        kids=$(pgrep -P "$pid" | wc -l)
        [ "$kids" -lt "$workers" ] || [ ! -S "$sock" ] || return 0
        sleep 0.1
        : "$i"
    done
    die "pool $name: $workers workers did not come up; see $logs/$name.log"
}

start_nginx() { # MODE
    local dir=$run/nginx-$1 i pid=""
    stop_nginx
    rm -f -- "$stack/nginx/nginx.pid"
    nginx -p "$dir/" -c "$dir/nginx.conf" -e "$logs/error.log" </dev/null >/dev/null 2>&1 ||
        die "nginx ($1) did not start; see $logs/error.log"
    for i in $(seq 1 50); do
        pid=$(tr -dc '0-9' <"$stack/nginx/nginx.pid" 2>/dev/null) || pid=""
        if alive "$pid" nginx; then break; fi
        sleep 0.1
        : "$i"
    done
    alive "$pid" nginx || die "nginx ($1) did not write its pid file"
    nginx_pid=$pid
}

wait_ok() { # PATH: until nginx answers 200 there
    local i code
    for i in $(seq 1 50); do
        code=$(curl -s --noproxy '*' --max-time 2 -o /dev/null -w '%{http_code}' \
            "http://127.0.0.1:$http_port$1") || code=""
        [ "$code" != 200 ] || return 0
        sleep 0.2
        : "$i"
    done
    die "http://127.0.0.1:$http_port$1 does not answer 200 (last: ${code:-none}); see $logs"
}

# pool_memory NAME LABEL THREADS: the pool's resident memory, from /proc.
# RSS counts each process's pages of shared libraries (libc, json-c, libfcgi
# ...) in full, and how many of them are mapped varies from start to start;
# RssAnon is the private memory (heaps, stacks), what threads and requests
# make grow; Pss shares the shared pages out among the processes using them.
pool_memory() {
    local pid=${pool_pids[$1]} p rss=0 anon=0 pss=0 v n=0
    for p in "$pid" $(pgrep -P "$pid"); do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null) || v=0
        rss=$((rss + ${v:-0}))
        v=$(awk '/^RssAnon:/ {print $2}' "/proc/$p/status" 2>/dev/null) || v=0
        anon=$((anon + ${v:-0}))
        v=$(awk '/^Pss:/ {print $2; exit}' "/proc/$p/smaps_rollup" 2>/dev/null) || v=0
        pss=$((pss + ${v:-0}))
        n=$((n + 1))
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$2" "$workers" "$3" "$rss" "$pss" "$n" "$anon" >>"$memory"
}

# ---------------------------------------------------------------- wrk ---

lua=$run/report.lua
cat >"$lua" <<'EOF'
-- bench/run.sh: one machine-readable line at the end of a wrk run.
-- Only done() is defined, so wrk runs no Lua per request.
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("BENCH_RESULT %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\n",
        summary.requests, summary.duration, latency:percentile(50),
        latency:percentile(99), latency.max, e.status, e.connect, e.read,
        e.write, e.timeout))
end
EOF

clk_tck=$(getconf CLK_TCK)

# cpu_ticks PID...: user + system time of these processes (all their
# threads), in clock ticks, from /proc/PID/stat.
cpu_ticks() {
    local p v total=0
    for p in "$@"; do
        v=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null) || v=0
        total=$((total + ${v:-0}))
    done
    printf '%s' "$total"
}

# pids_of PID: PID and its children (multiwatch and its workers, nginx's
# master and its workers).
pids_of() { [ -z "$1" ] || printf '%s %s' "$1" "$(pgrep -P "$1" | tr '\n' ' ')"; }

truncate_logs() {
    local f
    for f in "$logs"/*.log; do [ -f "$f" ] && : >"$f"; done
}

# run_wrk MODE PHASE TARGET THREADS CONNS ROUND POOL URLPATH
run_wrk() {
    local mode=$1 phase=$2 target=$3 nthreads=$4 c=$5 round=$6 pool=$7 path=$8
    local t=$wrk_threads raw line url ngx_err pool_err acc pool_procs ngx_procs
    local pool_t0 pool_t1 ngx_t0 ngx_t1
    [ "$t" -le "$c" ] || t=$c
    url=http://127.0.0.1:$http_port$path
    raw=$run/wrk/$mode-$phase-$target-t$nthreads-c$c-r$round.txt
    if [ "$warmup" -gt 0 ]; then
        wrk -t"$t" -c"$c" -d"${warmup}s" --timeout "${wrk_timeout}s" "$url" >/dev/null 2>&1 || true
    fi
    truncate_logs
    printf '%s: %-4s %-6s %-13s threads %-3s conns %-3s round %s ... ' "$me" "$mode" \
        "$phase" "$target" "$nthreads" "$c" "$round" >&2
    # CPU time of the pool and of nginx over the run: what one request costs
    # each, whatever else runs on the machine.
    pool_procs="" ngx_procs=$(pids_of "$nginx_pid")
    [ -z "$pool" ] || pool_procs=$(pids_of "${pool_pids[$pool]}")
    # shellcheck disable=SC2086 # lists of pids
    pool_t0=$(cpu_ticks $pool_procs) ngx_t0=$(cpu_ticks $ngx_procs)
    wrk -t"$t" -c"$c" -d"${duration}s" --timeout "${wrk_timeout}s" --latency -s "$lua" \
        "$url" >"$raw" 2>&1 || true
    # The requests still in flight when wrk stops end in nginx's log a
    # moment later.
    sleep 0.3
    # shellcheck disable=SC2086 # lists of pids
    pool_t1=$(cpu_ticks $pool_procs) ngx_t1=$(cpu_ticks $ngx_procs)
    line=$(sed -n 's/^BENCH_RESULT //p' "$raw" | tail -n 1)
    [ -n "$line" ] || {
        cat "$raw" >&2
        die "wrk gave no result for $url"
    }
    # nginx's JSON access log: requests slower than 1 s, those the client
    # gave up on (499: wrk stopped or timed out), the slowest request_time.
    # wrk never sees a request that is still stuck when it stops.
    acc=$(awk -F'"request_time":' '
        NF > 1 { split($2, a, ","); t = a[1] + 0; if (t >= 1) slow++; if (t > max) max = t }
        /"status":499/ { c499++ }
        END { printf "%d %d %.3f", slow, c499, max }' "$logs/access.log")
    ngx_err=$(grep -c '\[\(error\|crit\|alert\|emerg\)\]' "$logs/error.log" 2>/dev/null) || ngx_err=0
    pool_err=0
    if [ -n "$pool" ]; then
        pool_err=$(grep -c '"level":"error"\|died' "$logs/$pool.log" 2>/dev/null) || pool_err=0
        if [ "$pool_err" -gt 0 ]; then grep '"level":"error"\|died' "$logs/$pool.log" | head -n 5 >>"$raw.errors" || true; fi
    fi
    if [ "$ngx_err" -gt 0 ]; then grep '\[\(error\|crit\|alert\|emerg\)\]' "$logs/error.log" | head -n 5 >>"$raw.errors" || true; fi
    # shellcheck disable=SC2086 # split the numbers
    set -- $line $acc
    # requests duration_us p50 p99 max status connect read write timeout slow 499 maxrt
    awk -v mode="$mode" -v phase="$phase" -v target="$target" -v th="$nthreads" \
        -v c="$c" -v round="$round" -v ne="$ngx_err" -v pe="$pool_err" \
        -v req="$1" -v dur="$2" -v p50="$3" -v p99="$4" -v mx="$5" -v st="$6" \
        -v sc="$7" -v sr="$8" -v sw="$9" -v to="${10}" -v slow="${11}" -v c499="${12}" \
        -v maxrt="${13}" -v pcpu=$((pool_t1 - pool_t0)) -v ncpu=$((ngx_t1 - ngx_t0)) \
        -v hz="$clk_tck" -v haspool="${pool:+1}" 'BEGIN {
            rps = dur > 0 ? req / (dur / 1e6) : 0
            pus = haspool && req > 0 ? sprintf("%.1f", pcpu * 1e6 / hz / req) : "-"
            nus = req > 0 ? sprintf("%.1f", ncpu * 1e6 / hz / req) : "-"
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
                mode, phase, target, th, c, round, rps, p50, p99, mx, st, sc + sr + sw,
                to, req, slow, c499, maxrt, ne, pe, pus, nus
        }' >>"$results"
    tail -n 1 "$results" | awk -F'\t' '{ printf "%8d req/s  p50 %.2f ms  p99 %.2f ms  non-2xx %d  sock %d  timeouts %d  slow %d  cpu us/req pool %s nginx %s\n",
        $7, $8 / 1000, $9 / 1000, $11, $12, $13, $15, $20, $21 }' >&2
    truncate_logs
}

# ---------------------------------------------------------------- report ---

# The median round (by requests/s) of each measurement.
median=$run/median.tsv
make_median() {
    sort -t"$(printf '\t')" -k1,1 -k2,2 -k3,3 -k4,4n -k5,5n -k7,7n "$results" | awk -F'\t' '
    { key = $1 FS $2 FS $3 FS $4 FS $5; n[key]++; row[key, n[key]] = $0; if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
    END { for (i = 1; i <= k; i++) { key = order[i]; print row[key, int((n[key] + 1) / 2)] } }' >"$median"
}

report() {
    printf '## Run of %s\n\n' "$(sed -n 's/^date: //p' "$run/machine.txt")"
    printf '%s\n%s\n%s\n\n' '```' "$cmd" '```'
    printf '```\n'
    cat "$run/machine.txt"
    printf 'pools: %s processes each; Valerie %s threads per process; wrk -t%s, %ss per run' \
        "$workers" "$threads" "$wrk_threads" "$duration"
    printf ' (%ss warm-up), --timeout %ss, %s round(s), median reported\n' "$warmup" "$wrk_timeout" "$rounds"
    printf '```\n\n'
    printf 'CPU us/req: user + system CPU time of the pool (multiwatch and its workers)\n'
    printf 'or of nginx (master and workers) during the run, from /proc, divided by the\n'
    printf 'requests wrk completed.\n\n'
    awk -F'\t' -v conns="$conns_list" '
        function ms(us) { return sprintf("%.2f", us / 1000) }
        function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "-" }
        $1 == "off" && $2 == "main" { r[$3, $5] = $0 }
        END {
            n = split(conns, cs, " ")
            print "### Throughput and latency (fastcgi_keep_conn off, as shipped)\n"
            print "| conns | target | req/s | p50 ms | p99 ms | max ms | non-2xx | socket errors | timeouts | nginx slow >= 1 s | pool CPU us/req | nginx CPU us/req |"
            print "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            for (i = 1; i <= n; i++) {
                split("nginx-static fcgi-min valerie", ts, " ")
                for (j = 1; j <= 3; j++) {
                    if (!((ts[j], cs[i]) in r)) continue
                    split(r[ts[j], cs[i]], f, "\t")
                    name = ts[j] == "valerie" ? "valerie /health (" f[4] " threads)" : ts[j]
                    printf "| %s | %s | %d | %s | %s | %s | %d | %d | %d | %d | %s | %s |\n", cs[i], name,
                        f[7], ms(f[8]), ms(f[9]), ms(f[10]), f[11], f[12], f[13], f[15], f[20], f[21]
                }
            }
        }' "$median"
    # Ratios within each round (the targets of a round ran one after the
    # other, so a neighbour's load hits them alike), then the median.
    awk -F'\t' -v conns="$conns_list" '
        function med(list,    n, a, i, j, t) {
            n = split(list, a, " ")
            if (n == 0) return "-"
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
            return n % 2 ? a[(n + 1) / 2] : sprintf("%.2f", (a[n / 2] + a[n / 2 + 1]) / 2)
        }
        function add(k, a, b) { if (a != "" && b > 0) l[k, c] = l[k, c] " " sprintf("%.2f", a / b) }
        $1 == "off" && $2 == "main" { rps[$3, $5, $6] = $7; cpu[$3, $5, $6] = $20; if ($6 > nr) nr = $6 }
        END {
            n = split(conns, cs, " ")
            print "\n### Ratios (median over the rounds of the ratio within each round)\n"
            print "| conns | req/s valerie / fcgi-min | req/s fcgi-min / nginx-static | req/s valerie / nginx-static | pool CPU per request valerie / fcgi-min |"
            print "|---:|---:|---:|---:|---:|"
            for (i = 1; i <= n; i++) {
                c = cs[i]
                for (r = 1; r <= nr; r++) {
                    add("vm", rps["valerie", c, r], rps["fcgi-min", c, r])
                    add("ms", rps["fcgi-min", c, r], rps["nginx-static", c, r])
                    add("vs", rps["valerie", c, r], rps["nginx-static", c, r])
                    add("cpu", cpu["valerie", c, r], cpu["fcgi-min", c, r])
                }
                printf "| %s | %s | %s | %s | %s |\n", c, med(l["vm", c]), med(l["ms", c]),
                    med(l["vs", c]), med(l["cpu", c])
            }
        }' "$results"
    if grep -q $'^off\tsweep' "$median" || grep -q $'^off\tnolog' "$median"; then
        awk -F'\t' '
            function ms(us) { return sprintf("%.2f", us / 1000) }
            function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "-" }
            $1 == "off" && $2 == "main" && $3 == "fcgi-min" { ref[$5] = $7 }
            $1 == "off" && $2 == "nolog" && $3 == "fcgi-min" { refn[$5] = $7; refcpu[$5] = $20 }
            $1 == "off" && ($2 == "sweep" || $2 == "nolog") && $3 == "valerie" { rows[++n] = $0 }
            END {
                print "\n### Valerie: threads per process, and the access log line\n"
                print "`/ fcgi-min` compares with fcgi-min at the same connection count: the main"
                print "run for the `info` rows; for the `warning` rows (no JSON access line per"
                print "request), a fcgi-min run made right after them."
                print ""
                print "| threads/process | LOG_LEVEL | conns | req/s | p50 ms | p99 ms | timeouts | pool CPU us/req | req/s / fcgi-min |"
                print "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
                for (i = 1; i <= n; i++) {
                    split(rows[i], f, "\t")
                    m = f[2] == "nolog" ? refn[f[5]] : ref[f[5]]
                    printf "| %s | %s | %s | %d | %s | %s | %d | %s | %s |\n", f[4],
                        f[2] == "nolog" ? "warning" : "info", f[5], f[7],
                        ms(f[8]), ms(f[9]), f[13], f[20], ratio(f[7], m)
                }
                for (c in refn)
                    printf "| fcgi-min (1) | - | %s | %d | | | | %s | |\n", c, refn[c], refcpu[c]
            }' "$median"
    fi
    if grep -q $'^on\t' "$median"; then
        awk -F'\t' '
            function ms(us) { return sprintf("%.2f", us / 1000) }
            $1 == "off" && $2 == "kc" { off[$3, $4, $5] = $0 }
            $1 == "on" { rows[++n] = $0 }
            END {
                print "\n### fastcgi_keep_conn on (with `keepalive` in the upstreams) against off\n"
                print "Each on run follows its off run at once (nginx restarted with the other configuration)."
                print ""
                print "| target | threads/process | conns | off req/s | off p99 ms | off pool CPU us/req | on req/s | on p99 ms | on max ms | on timeouts | on nginx slow >= 1 s | on slowest request s | on pool CPU us/req |"
                print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
                for (i = 1; i <= n; i++) {
                    split(rows[i], f, "\t")
                    k = f[3] SUBSEP f[4] SUBSEP f[5]
                    if (k in off) { split(off[k], o, "\t"); orps = o[7]; op99 = ms(o[9]); ocpu = o[20] }
                    else { orps = "-"; op99 = "-"; ocpu = "-" }
                    printf "| %s | %s | %s | %s | %s | %s | %d | %s | %s | %d | %d | %s | %s |\n", f[3], f[4], f[5],
                        orps, op99, ocpu, f[7], ms(f[9]), ms(f[10]), f[13], f[15], f[17], f[20]
                }
            }' "$median"
        printf '\nkeepalive %s per upstream and nginx worker; nginx runs %s workers.\n' "$keepalive" "$nginx_workers"
    fi
    printf '\n### Pool memory after its runs (multiwatch + workers, from /proc)\n\n'
    printf '| pool | processes x threads | RSS sum MB | RssAnon sum MB | Pss sum MB |\n|---|---:|---:|---:|---:|\n'
    awk -F'\t' '{ printf "| %s | %s x %s | %.1f | %.1f | %.1f |\n", $1, $2, $3, $4 / 1024, $7 / 1024, $5 / 1024 }' "$memory"
    if [ -s "$stops" ]; then
        printf '\n### Pool stop (SIGTERM to multiwatch: drain, then exit)\n\n'
        printf '| pool | when | seconds | how |\n|---|---|---:|---|\n'
        awk -F'\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$stops"
    fi
    local errs
    errs=$(awk -F'\t' '$18 > 0 || $19 > 0 { n++ } END { print n + 0 }' "$results")
    if [ "$errs" -gt 0 ]; then
        printf '\n%s run(s) logged errors (nginx error.log or the pool log): see %s/wrk/*.errors\n' "$errs" "$run"
    fi
}
# The settings the report needs, for BENCH_REPORT_ONLY.
settings=$run/settings.sh
if [ "${BENCH_REPORT_ONLY:-0}" = 1 ]; then
    if ! [ -f "$settings" ] || ! [ -s "$results" ]; then
        die "BENCH_REPORT_ONLY: no results in $run (set BENCH_RUN_DIR)"
    fi
    # shellcheck source=/dev/null # written by an earlier run of this script
    . "$settings"
    make_median
    report >"$summary"
    cat "$summary"
    exit 0
fi
: >"$results"
: >"$memory"
: >"$stops"
declare -p cmd workers threads duration warmup conns_list rounds wrk_threads wrk_timeout \
    keepalive nginx_workers >"$settings"

# ---------------------------------------------------------------- build ---

say "run dir $run; nginx on 127.0.0.1:$http_port (HTTPS $https_port)"
# A copy of the worker: a rebuild of the tree during the run (the sweep
# restarts the pool) must not change what is measured.
cp -- "$valerie_bin" "$run/bin/valerie"
valerie_src=$valerie_bin
valerie_bin=$run/bin/valerie

say "building fcgi-min"
# shellcheck disable=SC2086 # flags are a list
"$cc" $cflags -Wall -o "$run/bin/fcgi-min" "$script_dir/fcgi-min.c" -lfcgi ||
    die "could not build bench/fcgi-min.c (apt-get install libfcgi-dev)"

# ---------------------------------------------------------------- config ---

# The local stack's configuration, generated by run-local.sh itself. The rate
# limit is raised so that it never rejects (it is still evaluated, for every
# target alike); everything else is as shipped.
say "generating the nginx configuration with scripts/run-local.sh configtest"
VALERIE_RUN_DIR=$stack VALERIE_HTTP_PORT=$http_port VALERIE_HTTPS_PORT=$https_port \
    VALERIE_NGINX_RATE=10000000 VALERIE_NGINX_BURST=10000000 VALERIE_WORKERS=$workers \
    VALERIE_THREADS=$threads "$run_local" configtest >"$run/configtest.log" 2>&1 || {
    cat "$run/configtest.log" >&2
    die "run-local.sh configtest failed"
}
[ -f "$stack/nginx/nginx.conf" ] || die "run-local.sh wrote no $stack/nginx/nginx.conf"

# make_config MODE KEEPALIVE: RUN/nginx-MODE/, a copy of the generated
# configuration plus the two bench locations and the fcgi-min upstream;
# KEEPALIVE > 0 also turns fastcgi_keep_conn on and adds `keepalive` to both
# upstreams.
make_config() {
    local mode=$1 ka=$2 dir=$run/nginx-$1
    rm -rf -- "$dir"
    mkdir -p -- "$dir"
    cp -R -- "$stack/nginx/snippets" "$dir/snippets"
    awk -v ka="$ka" -v sock="$min_sock" '
        /^[[:space:]]*upstream valerie_pool[[:space:]]*\{/ { up = 1 }
        up && /^[[:space:]]*\}/ {
            if (ka > 0) print "        keepalive " ka ";   # bench/run.sh"
            print
            print ""
            print "    # bench/run.sh: the minimal libfcgi program (bench/fcgi-min.c)."
            print "    upstream bench_fcgi_min {"
            print "        server unix:" sock ";"
            if (ka > 0) print "        keepalive " ka ";"
            print "    }"
            up = 0; ups++
            next
        }
        /^[[:space:]]*include snippets\/valerie-locations\.conf;/ {
            print "        # bench/run.sh: nginx answers by itself, the body of /health."
            print "        location = /bench/static {"
            print "            return 200 '\''{\"status\":\"ok\",\"service\":\"valerie\",\"version\":\"0.1.0\"}'\'';"
            print "        }"
            print "        # bench/run.sh: the minimal libfcgi program, same FastCGI settings."
            print "        location = /bench/fcgi-min {"
            print "            fastcgi_pass bench_fcgi_min;"
            print "        }"
            locs++
        }
        { print }
        END { if (ups != 1 || locs != 1) exit 3 }
    ' "$stack/nginx/nginx.conf" >"$dir/nginx.conf" ||
        die "nginx/local.conf.in changed shape: cannot add the bench upstream and locations (bench/run.sh make_config)"
    if [ "$ka" -gt 0 ]; then
        sed -i -e 's/^\([[:space:]]*fastcgi_keep_conn\)[[:space:]]\{1,\}off;/\1 on;  # bench\/run.sh/' \
            "$dir/snippets/valerie-fastcgi.conf"
        grep -q '^[[:space:]]*fastcgi_keep_conn on;' "$dir/snippets/valerie-fastcgi.conf" ||
            die "nginx/snippets/valerie-fastcgi.conf has no 'fastcgi_keep_conn off;' to turn on"
    else
        grep -q '^[[:space:]]*fastcgi_keep_conn off;' "$dir/snippets/valerie-fastcgi.conf" ||
            say "note: the shipped configuration does not say 'fastcgi_keep_conn off;'"
    fi
    nginx -p "$dir/" -c "$dir/nginx.conf" -e "$logs/error.log" -t -q </dev/null >"$run/nginx-$mode.test" 2>&1 || {
        cat "$run/nginx-$mode.test" >&2
        die "nginx rejects the bench configuration $dir/nginx.conf"
    }
    rm -f -- "$stack/nginx/nginx.pid"
}
make_config off 0
[ "$keepconn" = 0 ] || make_config on "$keepalive"

# ---------------------------------------------------------------- machine ---

{
    printf 'date: %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'cpu: %s x %s\n' "$(nproc)" "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    printf 'memory: %s MB\n' "$(awk '/^MemTotal:/ {printf "%d", $2 / 1024}' /proc/meminfo)"
    printf 'kernel: %s\n' "$(uname -sr)"
    printf 'os: %s\n' "$(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release 2>/dev/null)"
    printf 'nginx: %s\n' "$(nginx -v 2>&1 | sed 's/^nginx version: //')"
    printf 'wrk: %s\n' "$(wrk -v 2>&1 | head -n 1 | awk '{print $2}')"
    printf 'libfcgi: %s\n' "$(dpkg-query -W -f '${Version}' libfcgi0ldbl 2>/dev/null || echo unknown)"
    printf 'valerie: %s (%s, sha256 %.12s)\n' "$("$valerie_bin" version 2>/dev/null || echo unknown)" \
        "$valerie_src" "$(sha256sum "$valerie_bin" | cut -d' ' -f1)"
    printf 'tree: %s\n' "$(git -C "$src_dir" describe --always --dirty 2>/dev/null || echo unknown)"
    printf 'load average at start: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$run/machine.txt"

# ---------------------------------------------------------------- runs ---

say "starting the pools ($workers processes each) and nginx"
start_pool fcgi-min "$run/bin/fcgi-min" 1 "$min_sock"
start_pool valerie "$valerie_bin" "$threads" "$valerie_sock"
start_nginx off
wait_ok /bench/static
wait_ok /bench/fcgi-min
wait_ok /health

# 1-3: the three targets, interleaved at each connection count so that a
# noisy neighbour hits them alike; each round starts with another target.
targets=(nginx-static fcgi-min valerie)
for r in $(seq 1 "$rounds"); do
    for c in $conns_list; do
        for i in 0 1 2; do
            case "${targets[$(((i + r - 1) % 3))]}" in
                nginx-static) run_wrk off main nginx-static - "$c" "$r" "" /bench/static ;;
                fcgi-min) run_wrk off main fcgi-min 1 "$c" "$r" fcgi-min /bench/fcgi-min ;;
                valerie) run_wrk off main valerie "$threads" "$c" "$r" valerie /health ;;
            esac
        done
    done
done
pool_memory fcgi-min "fcgi-min" 1
pool_memory valerie "valerie" "$threads"
stop_pool valerie "with nginx (keep-conn off) still running"

# Thread sweep (and the cost of the access log line).
if [ -n "${sweep// /}" ] || [ "$log_probe" = 1 ]; then
    for t in $sweep; do
        start_pool valerie "$valerie_bin" "$t" "$valerie_sock"
        wait_ok /health
        for c in $sweep_conns; do
            run_wrk off sweep valerie "$t" "$c" 1 valerie /health
        done
        pool_memory valerie "valerie" "$t"
    done
    if [ "$log_probe" = 1 ]; then
        for t in $(printf '%s\n' 1 "$threads" | sort -nu); do
            start_pool valerie "$valerie_bin" "$t" "$valerie_sock" LOG_LEVEL=warning
            wait_ok /health
            for c in $sweep_conns; do
                run_wrk off nolog valerie "$t" "$c" 1 valerie /health
            done
        done
        # fcgi-min again at the same moment, for a fair ratio.
        for c in $sweep_conns; do
            run_wrk off nolog fcgi-min 1 "$c" 1 fcgi-min /bench/fcgi-min
        done
    fi
fi

# 4: keep-conn on against off, run by run: nginx is restarted with the "on"
# or the "off" configuration before each run (fresh pools first), so each
# pair is measured at nearly the same moment.
if [ "$keepconn" = 1 ]; then
    stop_nginx
    start_pool fcgi-min "$run/bin/fcgi-min" 1 "$min_sock"
    start_pool valerie "$valerie_bin" "$threads" "$valerie_sock"
    for c in $conns_list; do
        for mode in off on; do
            start_nginx "$mode"
            wait_ok /bench/fcgi-min
            wait_ok /health
            run_wrk "$mode" kc fcgi-min 1 "$c" 1 fcgi-min /bench/fcgi-min
            run_wrk "$mode" kc valerie "$threads" "$c" 1 valerie /health
        done
    done
    # nginx "on" still holds its idle connections to the pool: can the pool
    # drain (SIGTERM to multiwatch) while they stay open?
    stop_pool valerie "with nginx (keep-conn on) still running"
    stop_nginx
    # Enough threads for every connection nginx can hold open.
    start_pool valerie "$valerie_bin" "$kc_threads" "$valerie_sock"
    for c in $conns_list; do
        for mode in off on; do
            start_nginx "$mode"
            wait_ok /health
            run_wrk "$mode" kc valerie "$kc_threads" "$c" 1 valerie /health
        done
    done
    pool_memory valerie "valerie (keep-conn threads)" "$kc_threads"
    stop_nginx
fi
printf 'load average at end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$run/machine.txt"

make_median
report >"$summary"
cat "$summary"
say "results: $summary, $results, raw wrk output in $run/wrk/"
