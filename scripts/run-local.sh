#!/bin/bash
# run-local.sh: run a local Valerie stack (nginx + FastCGI worker pool) from
# the build tree, without installing anything.
#
# Usage: scripts/run-local.sh start|stop|status|configtest
#
#   start       generate the nginx configuration and (once) a self-signed
#               certificate in the run dir, start the pool
#               (scripts/valerie-pool.sh) and nginx, and return 0 once
#               GET /health/ready answers 200. Otherwise print why, stop
#               what was started and return non-zero.
#   stop        stop nginx and the pool of the run dir, and what of them
#               outlived a parent that died: workers of a dead multiwatch
#               (found by the FastCGI socket they hold), nginx workers of a
#               dead master (found by the run dir's logs they hold, and
#               their name); by PID, never by name alone; 0 even if nothing
#               ran, 1 if a process of the run dir is still there after
#               SIGKILL (it says which).
#   status      what runs: 0 all running, 3 nothing running, 1 half of it
#               (or processes left without their parent).
#   configtest  generate the configuration and run `nginx -t` on it.
#
# Environment (the whole environment is passed on to the workers):
#   VALERIE_RUN_DIR          default ./run: sockets, pids, logs, nginx config,
#                            certificate, data
#   VALERIE_HTTP_PORT        plain HTTP on 127.0.0.1 (default 8080)
#   VALERIE_HTTPS_PORT       HTTPS on 127.0.0.1 (default 8443)
#   VALERIE_WORKERS          worker processes (default 2)
#   VALERIE_THREADS          threads per worker process (default 8)
#   VALERIE_NGINX_RATE       per-IP requests/s at nginx (default 20)
#   VALERIE_NGINX_BURST      per-IP burst at nginx (default 40)
#   VALERIE_NGINX_CONN       per-IP concurrent requests at nginx (default 1024)
#   VALERIE_MAX_BODY_BYTES   largest request body (default 1048576)
#   VALERIE_DATA_DIR         worker data (LMDB); default RUN/data
#   VALERIE_METRICS_PORT     off (0) by default; set, every worker also serves
#                            GET /metrics over plain HTTP on it (and
#                            VALERIE_METRICS_ADDR, default 127.0.0.1): use a
#                            different port per stack
#   VALERIE_BIN              worker binary; default ./fcgi/valerie, else
#                            fcgi/valerie next to this script's tree
#   VALERIE_START_TIMEOUT    seconds `start` waits for /health/ready (15)
#   VALERIE_STOP_TIMEOUT     seconds `stop` lets the workers drain before
#                            SIGTERM, then SIGKILL (default: the workers'
#                            VALERIE_SHUTDOWN_TIMEOUT, 30, plus 5)
#
# Several stacks can run at once in different run dirs on different ports.
set -eu

# NOTE: nginx reads NGINX from its environment as the list of listening sockets
# inherited across a binary upgrade; any other value (a path, say) makes it
# misbehave at start. Nothing of ours means that.
unset NGINX

me=run-local
script_dir=$(cd "$(dirname -- "$0")" && pwd -P)
src_dir=$(cd "$script_dir/.." && pwd -P)
template=$src_dir/nginx/local.conf.in
snippets=$src_dir/nginx/snippets
pool_script=$script_dir/valerie-pool.sh

say() { printf '%s: %s\n' "$me" "$*"; }
warn() { printf '%s: %s\n' "$me" "$*" >&2; }
die() {
    warn "$*"
    exit 1
}

is_uint() {
    case "$1" in
        '' | *[!0-9]*) return 1 ;;
        *) return 0 ;;
    esac
}

# need_uint NAME VALUE MIN [MAX]
need_uint() {
    if ! { is_uint "$2" && [ "${#2}" -le 10 ] && [ "$2" -ge "$3" ] &&
        { [ -z "${4:-}" ] || [ "$2" -le "$4" ]; }; }; then
        die "$1 must be a whole number >= $3${4:+ and <= $4}, not '$2'"
    fi
}

# ---------------------------------------------------------------- run dir ---

run_dir=${VALERIE_RUN_DIR:-$PWD/run}
case "$run_dir" in
    /*) ;;
    *) run_dir=$PWD/$run_dir ;;
esac
# NOTE: /proc/net/unix is read line by line, so no run dir may hold a newline.
# Any other character is fine for stop and status (they find processes by the
# run dir's paths); start and configtest write it into nginx.conf and through
# sed, and want it plain (plain_run_dir).
case "$run_dir" in
    *$'\n'*) die "VALERIE_RUN_DIR must not contain a newline" ;;
esac
# One name per run dir, whichever way it is reached: start writes it into nginx's
# command line (-c) and the pool's environment, and status and stop look for those, so
# a stack started through a symlink is found through its real path and the reverse.
# realpath -m: the run dir (or its parents) need not exist yet.
run_dir=$(realpath -m -- "$run_dir") || die "VALERIE_RUN_DIR: cannot resolve $run_dir"
run_dir=${run_dir%/}
[ -n "$run_dir" ] || die "VALERIE_RUN_DIR must not be /"
run_dir_q=$(printf '%q' "$run_dir")  # for the commands we suggest

socket=$run_dir/valerie.sock
pool_pidfile=$run_dir/pool.pid
nginx_dir=$run_dir/nginx
nginx_conf=$nginx_dir/nginx.conf
nginx_pidfile=$nginx_dir/nginx.pid
logs=$run_dir/logs
tls=$run_dir/tls
stack_env=$run_dir/stack.env

# ---------------------------------------------------------------- processes ---

# nginx's configuration syntax and sed: a run dir start writes into nginx.conf.
plain_run_dir() {
    case "$run_dir" in
        *[[:space:]\;\{\}\'\"\$\\\#]*) die "VALERIE_RUN_DIR must not contain spaces, quotes or any of ; { } \$ \\ # to start a stack (stop and status take it): $run_dir" ;;
    esac
}

pid_from() { # pid_from FILE: the pid in FILE, or nothing
    local pid=""
    if [ -f "$1" ]; then
        pid=$(head -n 1 -- "$1" 2>/dev/null | tr -dc '0-9') || pid=""
    fi
    printf '%s' "$pid"
}

# alive PID COMM: PID is a live (not zombie) process whose command is COMM.
# The name check keeps a stale pid file from ever aiming at a reused pid.
alive() {
    local stat comm
    [ -n "$1" ] || return 1
    stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    case "${stat#"${stat%%[! ]*}"}" in Z*) return 1 ;; esac
    comm=$(ps -o comm= -p "$1" 2>/dev/null) || return 1
    [ "${comm%% *}" = "$2" ]
}

children() { pgrep -P "$1" 2>/dev/null | tr '\n' ' ' | sed 's/ $//' || true; }

# wait_gone PID COMM SECONDS
wait_gone() {
    local i=0 n=$(($3 * 10))
    while alive "$1" "$2"; do
        [ "$i" -lt "$n" ] || return 1
        sleep 0.1
        i=$((i + 1))
    done
}

# kill_hard PID: SIGKILL the process and everything in its process group
# (valerie-pool.sh starts the pool with setsid and nginx's master calls
# setsid(), so each leads a group of its own: multiwatch and the workers,
# nginx and its workers).
kill_hard() {
    local pgid
    pgid=$(ps -o pgid= -p "$1" 2>/dev/null | tr -d ' ') || pgid=""
    if [ "$pgid" = "$1" ]; then
        kill -KILL -- "-$1" 2>/dev/null || true
    else
        local kids
        kids=$(children "$1")
        kill -KILL "$1" 2>/dev/null || true
        # shellcheck disable=SC2086 # a list of pids
        [ -z "$kids" ] || kill -KILL $kids 2>/dev/null || true
    fi
}

# The pid files are trusted only for processes of this run dir: an nginx
# whose command line names our nginx.conf, a multiwatch whose environment
# has our VALERIE_RUN_DIR (exported by do_start). Another stack's processes
# are never touched, whatever a stale pid file says.
nginx_pid() {
    local pid
    pid=$(pid_from "$nginx_pidfile")
    if alive "$pid" nginx && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null |
        grep -qF -- "-c $nginx_conf "; then
        printf '%s' "$pid"
    fi
}

pool_pid() {
    local pid
    pid=$(pid_from "$pool_pidfile")
    if alive "$pid" multiwatch && tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null |
        grep -qxF -- "VALERIE_RUN_DIR=$run_dir"; then
        printf '%s' "$pid"
    fi
}

stop_nginx() { # quiet=1 to say nothing
    local pid
    pid=$(nginx_pid)
    if [ -n "$pid" ]; then
        # QUIT: stop accepting, finish the requests in flight. A chat stream
        # may last minutes, so after a while TERM (close them), then KILL.
        kill -QUIT "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" nginx 10; then
            kill -TERM "$pid" 2>/dev/null || true
            if ! wait_gone "$pid" nginx 3; then
                kill_hard "$pid"
                wait_gone "$pid" nginx 2 || true
            fi
        fi
        [ "${1:-0}" = 1 ] || say "nginx stopped (pid $pid)"
    fi
    # nginx workers whose master died, still serving the run dir's ports.
    stop_left "nginx processes" nginx_left QUIT 10 "${1:-0}"
    rm -f -- "$nginx_pidfile"
}

# pids_holding TEXT...: the pids (sorted, on one line) of the processes with
# a descriptor whose /proc/PID/fd link reads exactly one of TEXTs. Every
# process we may look at is searched; others' fds are unreadable (and not
# ours to stop).
# NOTE: TEXTs reach awk through its environment: `awk -v` would take the
# backslashes of a run dir for escapes, and find no process.
pids_holding() {
    [ "$#" -gt 0 ] || return 0
    find /proc/[0-9]*/fd -maxdepth 1 -type l -printf '%h %l\n' 2>/dev/null |
        WANT="$(printf '%s\n' "$@")" awk '
            BEGIN { n = split(ENVIRON["WANT"], a, "\n"); for (i = 1; i <= n; i++) if (a[i] != "") want[a[i]] = 1 }
            { sp = index($0, " ") }
            (substr($0, sp + 1) in want) { split(substr($0, 1, sp - 1), f, "/"); print f[3] }' |
        sort -un | tr '\n' ' ' | sed 's/ $//' || true
}

# The processes holding this run dir's FastCGI socket: the listening socket
# spawn-fcgi bound (every worker has it as fd 0) and the connections
# accepted on it, all named by our socket path in /proc/net/unix, even once
# the file is unlinked. They are multiwatch and its workers, or workers
# whose multiwatch died (killed, crashed): still accepting on the socket and
# holding the LMDB environment open. nginx's end of a connection has no
# name, so nginx is never among them, nor is any process of another run dir
# (another path). Holding the socket is also what identifies a worker at
# each step of stop_left, so a pid reused by an unrelated process is never
# signalled.
# NOTE: the path is the rest of the line after the seventh field, as the
# kernel prints it (spaces and backslashes as they are), and reaches awk
# through its environment (`awk -v` would take backslashes for escapes).
socket_holders() {
    local inode targets=()
    [ -r /proc/net/unix ] || return 0
    while read -r inode; do
        targets+=("socket:[$inode]")
    done < <(SOCK=$socket awk 'NR > 1 && match($0, /^[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +[0-9]+ /) &&
        substr($0, RLENGTH + 1) == ENVIRON["SOCK"] { print $7 }' /proc/net/unix)
    [ "${#targets[@]}" -gt 0 ] || return 0
    pids_holding "${targets[@]}"
}

# nginx processes writing this run dir's logs: after its master was killed
# (SIGKILL, a crash), nginx's workers go on serving the run dir's ports.
# Only nginx holds error.log and access.log open (the pool writes
# valerie.log), and the command name is checked too.
# NOTE: a /proc/PID/fd link reads the path the kernel resolved, with no
# symlink in it, so the logs' paths are resolved too: a run dir reached
# through a symlink (or with one in its parents) would find nothing otherwise.
nginx_left() {
    local pid out="" paths=()
    mapfile -t paths < <(realpath -m -- "$logs/error.log" "$logs/access.log" 2>/dev/null)
    [ "${#paths[@]}" -eq 2 ] || paths=("$logs/error.log" "$logs/access.log")
    for pid in $(pids_holding "${paths[@]}"); do
        if [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = nginx ]; then out="$out $pid"; fi
    done
    printf '%s' "${out# }"
}

# stop_left WHAT LISTER SIGNAL TIMEOUT [quiet]: stops the processes LISTER
# (socket_holders, nginx_left) finds once their parent is gone: SIGNAL first
# (TERM: a worker drains as with multiwatch's own signal; QUIT: nginx
# finishes its requests), SIGKILL after TIMEOUT seconds. LISTER is asked
# again before each signal, so only what still holds the run dir's files is
# signalled. What SIGKILL did not end is named, and sets `survivors`.
survivors=0
stop_left() {
    local what=$1 lister=$2 sig=$3 timeout=$4 pids left="" stopped="" pid i=0
    pids=$("$lister")
    [ -n "$pids" ] || return 0
    warn "$what of $run_dir still running without their parent (pids $pids): stopping them"
    # shellcheck disable=SC2086 # a list of pids
    kill -"$sig" $pids 2>/dev/null || true
    while left=$("$lister") && [ -n "$left" ]; do
        if [ "$i" -ge $((timeout * 10)) ]; then
            warn "$what (pids $left) still running after ${timeout}s: killing them"
            # shellcheck disable=SC2086 # a list of pids
            kill -KILL $left 2>/dev/null || true
            i=0
            while left=$("$lister") && [ -n "$left" ] && [ "$i" -lt 20 ]; do
                sleep 0.1
                i=$((i + 1))
            done
            if [ -n "$left" ]; then
                warn "$what (pids $left) survived SIGKILL"
                survivors=1
            fi
            break
        fi
        sleep 0.1
        i=$((i + 1))
    done
    # Only those no longer there are said to be stopped.
    for pid in $pids; do
        case " $left " in *" $pid "*) ;; *) stopped="$stopped $pid" ;; esac
    done
    [ "${5:-0}" = 1 ] || [ -z "$stopped" ] || say "left-over $what stopped (pids ${stopped# })"
}

stop_pool() {
    local pid timeout
    timeout=$(stop_timeout)
    pid=$(pool_pid)
    if [ -n "$pid" ]; then
        # SIGTERM to multiwatch: it sends the workers SIGUSR1 (graceful:
        # finish what is in flight) and exits when they are gone. A second
        # SIGTERM makes it forward SIGTERM; after that, SIGKILL for the whole
        # process group (multiwatch and workers). See valerie-pool.sh.
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" multiwatch "$timeout"; then
            warn "pool (pid $pid) still running after ${timeout}s: sending its workers SIGTERM"
            kill -TERM "$pid" 2>/dev/null || true
            if ! wait_gone "$pid" multiwatch 3; then
                warn "pool (pid $pid) still running: killing it and its workers"
                kill_hard "$pid"
                wait_gone "$pid" multiwatch 2 || true
            fi
        fi
        [ "${1:-0}" = 1 ] || say "pool stopped (multiwatch pid $pid)"
    fi
    # Workers whose multiwatch died, or that outlived it.
    stop_left workers socket_holders TERM "$timeout" "${1:-0}"
    rm -f -- "$pool_pidfile" "$socket"
}

# How long `stop` lets the workers drain: VALERIE_STOP_TIMEOUT, else 5 s
# more than the worker's own drain limit (VALERIE_SHUTDOWN_TIMEOUT as it was
# when the stack started, recorded in stack.env; the worker's default is 30).
stop_timeout() {
    local t=${VALERIE_STOP_TIMEOUT:-} drain=""
    if [ -n "$t" ]; then # checked by check_stop_timeout before anything stops
        printf '%s' "$t"
        return
    fi
    if [ -f "$stack_env" ]; then drain=$(sed -n 's/^SHUTDOWN_TIMEOUT=//p' "$stack_env"); fi
    if ! { is_uint "$drain" && [ "${#drain}" -le 6 ]; }; then drain=30; fi
    printf '%s' "$((drain + 5))"
}

# A VALERIE_STOP_TIMEOUT that is set must be seconds: checked before anything
# is stopped (a typo must neither be ignored nor stop half a stack).
check_stop_timeout() {
    if [ -n "${VALERIE_STOP_TIMEOUT:-}" ]; then
        need_uint VALERIE_STOP_TIMEOUT "$VALERIE_STOP_TIMEOUT" 0 86400
    fi
}

stop_stack() {
    # nginx first: no new requests reach a pool that is going away.
    stop_nginx "${1:-0}"
    stop_pool "${1:-0}"
}

# ---------------------------------------------------------------- lock ---

# One run-local.sh at a time per run dir. The daemons do not inherit fd 9
# (valerie-pool.sh and close_fds close it), so the lock dies with this
# script, not with nginx.
take_lock() {
    exec 9>"$run_dir/.lock"
    # A start in progress takes a few seconds; wait for it rather than fail.
    flock -w 60 9 || die "another run-local.sh has been working on $run_dir for a minute; giving up"
}

# ---------------------------------------------------------------- config ---

find_bin() {
    local bin
    if [ -n "${VALERIE_BIN:-}" ]; then
        bin=$VALERIE_BIN
        case "$bin" in
            */*) ;;
            *) bin=$(command -v -- "$bin") || die "VALERIE_BIN=$VALERIE_BIN: not found in PATH" ;;
        esac
    elif [ -x fcgi/valerie ]; then
        bin=fcgi/valerie
    elif [ -x "$src_dir/fcgi/valerie" ]; then
        bin=$src_dir/fcgi/valerie
    else
        die "no worker binary: neither ./fcgi/valerie nor $src_dir/fcgi/valerie exists (run make, or set VALERIE_BIN)"
    fi
    if ! { [ -f "$bin" ] && [ -x "$bin" ]; }; then
        die "worker binary $bin is not an executable file"
    fi
    case "$bin" in
        /*) printf '%s' "$bin" ;;
        *) printf '%s/%s' "$(cd "$(dirname -- "$bin")" && pwd -P)" "$(basename -- "$bin")" ;;
    esac
}

read_settings() {
    http_port=${VALERIE_HTTP_PORT:-8080}
    https_port=${VALERIE_HTTPS_PORT:-8443}
    need_uint VALERIE_HTTP_PORT "$http_port" 1 65535
    need_uint VALERIE_HTTPS_PORT "$https_port" 1 65535
    [ "$http_port" != "$https_port" ] || die "VALERIE_HTTP_PORT and VALERIE_HTTPS_PORT must differ"
    workers=${VALERIE_WORKERS:-2}
    need_uint VALERIE_WORKERS "$workers" 1
    threads=${VALERIE_THREADS:-8}
    need_uint VALERIE_THREADS "$threads" 1
    rate=${VALERIE_NGINX_RATE:-20}
    need_uint VALERIE_NGINX_RATE "$rate" 1
    burst=${VALERIE_NGINX_BURST:-40}
    need_uint VALERIE_NGINX_BURST "$burst" 0
    conn=${VALERIE_NGINX_CONN:-1024}
    need_uint VALERIE_NGINX_CONN "$conn" 1 65535
    # 0 would mean "no limit" to nginx.
    max_body=${VALERIE_MAX_BODY_BYTES:-1048576}
    need_uint VALERIE_MAX_BODY_BYTES "$max_body" 1
    start_timeout=${VALERIE_START_TIMEOUT:-15}
    need_uint VALERIE_START_TIMEOUT "$start_timeout" 1
    # A start that fails stops what it started, with this timeout.
    check_stop_timeout

    # The chat locations read for 300 s (nginx/snippets/valerie-locations.conf):
    # longer than a turn may last.
    if is_uint "${VALERIE_TURN_TIMEOUT:-}" && [ "${#VALERIE_TURN_TIMEOUT}" -le 6 ] &&
        [ "$VALERIE_TURN_TIMEOUT" -ge 300 ]; then
        warn "VALERIE_TURN_TIMEOUT=$VALERIE_TURN_TIMEOUT is not below nginx's 300 s read timeout of the chat routes; long turns will end in 504"
    fi

    # Open files: two per proxied request, plus spares; never above the hard
    # limit (nginx could not raise it).
    local hard
    hard=$(ulimit -Hn)
    nofile=16384
    if [ "$hard" != unlimited ] && [ "$hard" -lt "$nofile" ]; then nofile=$hard; fi
    worker_connections=$((nofile / 2))
    [ "$worker_connections" -le 8192 ] || worker_connections=8192
    [ "$worker_connections" -ge 64 ] || worker_connections=64

    # See the comment at @USER_LINE@ in nginx/local.conf.in.
    if [ "$(id -u)" = 0 ]; then user_line='user root;'; else user_line=''; fi
}

# sed replacement text: escape the delimiter, & and backslash.
sed_escape() { printf '%s' "$1" | sed -e 's/[|&\\]/\\&/g'; }

make_cert() {
    [ -s "$tls/cert.pem" ] && [ -s "$tls/key.pem" ] && return 0
    command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
    mkdir -p -- "$tls"
    chmod 700 "$tls"
    if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$tls/key.pem.tmp" -out "$tls/cert.pem.tmp" -days 825 \
        -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
        -addext "keyUsage=critical,digitalSignature" \
        -addext "extendedKeyUsage=serverAuth" >"$logs/openssl.log" 2>&1; then
        cat -- "$logs/openssl.log" >&2
        die "could not create the self-signed certificate"
    fi
    chmod 600 "$tls/key.pem.tmp"
    mv -f -- "$tls/key.pem.tmp" "$tls/key.pem"
    mv -f -- "$tls/cert.pem.tmp" "$tls/cert.pem"
    say "self-signed certificate for localhost created: $tls/cert.pem"
}

write_config() {
    [ -r "$template" ] || die "nginx template not found: $template"
    [ -d "$snippets" ] || die "nginx snippets not found: $snippets"
    command -v nginx >/dev/null || die "nginx not found (apt-get install nginx-light)"
    mkdir -p -- "$nginx_dir/snippets" "$logs"
    # A private copy: the run dir is self-contained, and relative includes
    # (snippets/...) resolve against the directory of nginx.conf.
    rm -f -- "$nginx_dir"/snippets/*.conf
    cp -- "$snippets"/*.conf "$nginx_dir/snippets/"
    sed -e "s|@USER_LINE@|$(sed_escape "$user_line")|g" \
        -e "s|@RUN_DIR@|$(sed_escape "$run_dir")|g" \
        -e "s|@SOCKET@|$(sed_escape "$socket")|g" \
        -e "s|@HTTP_PORT@|$http_port|g" \
        -e "s|@HTTPS_PORT@|$https_port|g" \
        -e "s|@RATE@|$rate|g" \
        -e "s|@BURST@|$burst|g" \
        -e "s|@CONN@|$conn|g" \
        -e "s|@MAX_BODY@|$max_body|g" \
        -e "s|@NOFILE@|$nofile|g" \
        -e "s|@WORKER_CONNECTIONS@|$worker_connections|g" \
        "$template" >"$nginx_conf.tmp"
    if grep -n '@[A-Z_]*@' "$nginx_conf.tmp" | grep -v '^[0-9]*:[[:space:]]*#' >&2; then
        die "placeholders left unreplaced in $nginx_conf.tmp (template and script disagree)"
    fi
    mv -f -- "$nginx_conf.tmp" "$nginx_conf"
}

nginx_cmd() { nginx -p "$nginx_dir/" -c "$nginx_conf" -e "$logs/error.log" "$@"; }

# Close every descriptor above 2 in this (sub)shell, so that the daemons
# started from it keep neither the lock nor a caller's pipe open.
close_fds() {
    local fd
    for fd in "/proc/$BASHPID/fd"/*; do
        fd=${fd##*/}
        case "$fd" in '' | *[!0-9]*) continue ;; esac
        if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
}

test_config() {
    local out
    if ! out=$(nginx_cmd -t -q 2>&1 </dev/null); then
        printf '%s\n' "$out" >&2
        die "nginx rejects the generated configuration $nginx_conf"
    fi
    # nginx -t leaves an empty pid file behind.
    [ -s "$nginx_pidfile" ] || rm -f -- "$nginx_pidfile"
}

# ---------------------------------------------------------------- verbs ---

starting=0
on_exit() {
    local rc=$?
    if [ "$starting" = 1 ] && [ "$rc" != 0 ]; then
        stop_stack 1
        warn "start failed; stopped what it had started"
    fi
}

# Sizes of the logs when this start began: fail_start shows only what this
# attempt wrote.
log_size() { if [ -f "$1" ]; then wc -c <"$1" | tr -d ' '; else echo 0; fi; }

show_new_lines() { # FILE OFFSET LINES
    local new
    [ -f "$1" ] || return 0
    new=$(tail -c +"$(($2 + 1))" -- "$1" | tail -n "$3")
    [ -n "$new" ] || return 0
    printf -- '--- %s (last lines)\n%s\n' "$1" "$new" >&2
}

fail_start() {
    warn "$*"
    show_new_lines "$logs/valerie.log" "$pool_log_at" 20
    show_new_lines "$logs/error.log" "$error_log_at" 10
    exit 1
}

do_start() {
    local bin npid ppid lpids
    plain_run_dir
    read_settings
    bin=$(find_bin)
    command -v curl >/dev/null || die "curl not found (apt-get install curl)"
    command -v flock >/dev/null || die "flock not found (util-linux)"
    [ -x "$pool_script" ] || die "pool launcher not found or not executable: $pool_script"

    mkdir -p -- "$run_dir" "$logs" "$nginx_dir"
    take_lock

    npid=$(nginx_pid)
    ppid=$(pool_pid)
    if [ -n "$npid" ] || [ -n "$ppid" ]; then
        die "a stack is already running in $run_dir (nginx pid ${npid:-none}, pool pid ${ppid:-none}); stop it first: VALERIE_RUN_DIR=$run_dir_q $0 stop"
    fi
    # Workers a dead multiwatch left would go on beside the new pool, unseen;
    # nginx workers a dead master left hold the ports.
    lpids=$(socket_holders)
    if [ -n "$lpids" ]; then
        die "workers of a previous pool still run in $run_dir without their multiwatch (pids $lpids); stop them first: VALERIE_RUN_DIR=$run_dir_q $0 stop"
    fi
    lpids=$(nginx_left)
    if [ -n "$lpids" ]; then
        die "nginx processes of a previous start still run in $run_dir without their master (pids $lpids); stop them first: VALERIE_RUN_DIR=$run_dir_q $0 stop"
    fi
    # Nothing runs: leftovers of a crash go.
    rm -f -- "$nginx_pidfile" "$pool_pidfile" "$socket"
    [ "${#socket}" -le 107 ] || die "run dir path too long for a unix socket (${#socket} > 107 bytes): $socket"

    # Passed on to the workers (the whole environment is): the settings as
    # this script resolved them, so nginx and the workers agree.
    export VALERIE_WORKERS="$workers" VALERIE_THREADS="$threads" \
        VALERIE_MAX_BODY_BYTES="$max_body" VALERIE_NGINX_RATE="$rate" \
        VALERIE_NGINX_BURST="$burst" VALERIE_HTTP_PORT="$http_port" \
        VALERIE_HTTPS_PORT="$https_port" VALERIE_RUN_DIR="$run_dir" VALERIE_BIN="$bin"
    export VALERIE_DATA_DIR="${VALERIE_DATA_DIR:-$run_dir/data}"
    mkdir -p -- "$VALERIE_DATA_DIR"

    make_cert
    write_config
    test_config

    {
        printf 'HTTP_PORT=%s\nHTTPS_PORT=%s\nBIN=%s\nWORKERS=%s\n' "$http_port" "$https_port" "$bin" "$workers"
        printf 'SHUTDOWN_TIMEOUT=%s\n' "${VALERIE_SHUTDOWN_TIMEOUT:-}"
    } >"$stack_env"

    pool_log_at=$(log_size "$logs/valerie.log")
    error_log_at=$(log_size "$logs/error.log")
    starting=1
    trap on_exit EXIT

    # The pool: the same launch steps as the Dockerfile and the systemd unit.
    # check-config runs first; its one-line complaint goes to our stderr.
    # logs/valerie.log gets the workers' stderr (JSON lines) and the few
    # plain-text lines of spawn-fcgi and multiwatch ("Child[0] died, ...").
    local rc=0
    VALERIE_LISTEN="$socket" VALERIE_POOL_PIDFILE="$pool_pidfile" \
        VALERIE_POOL_LOG="$logs/valerie.log" VALERIE_SOCKET_MODE=0660 \
        "$pool_script" </dev/null || rc=$?
    case "$rc" in
        0) ;;
        78)
            starting=0
            die "not started: the configuration is invalid"
            ;;
        *) fail_start "the worker pool did not start" ;;
    esac

    if ! (close_fds && exec nginx -p "$nginx_dir/" -c "$nginx_conf" -e "$logs/error.log") \
        </dev/null >/dev/null 2>&1; then
        # Its complaints are in the error log, which fail_start shows.
        fail_start "nginx did not start"
    fi

    local deadline=$((SECONDS + start_timeout)) code="" body=$run_dir/.ready
    while :; do
        [ -n "$(pool_pid)" ] || fail_start "the worker pool exited"
        [ -n "$(nginx_pid)" ] || fail_start "nginx exited"
        code=$(curl -s --noproxy '*' --max-time 2 -o "$body" -w '%{http_code}' \
            "http://127.0.0.1:$http_port/health/ready" 2>/dev/null) || true
        [ "$code" != 200 ] || break
        if [ "$SECONDS" -ge "$deadline" ]; then
            if [ -s "$body" ]; then
                printf -- '--- last answer of /health/ready (HTTP %s)\n' "$code" >&2
                head -c 2000 -- "$body" >&2
                echo >&2
            fi
            fail_start "GET /health/ready did not answer 200 within ${start_timeout}s (last: ${code:-no answer})"
        fi
        sleep 0.2
    done
    rm -f -- "$body"
    starting=0

    say "Valerie is running (run dir $run_dir)"
    printf '  http://127.0.0.1:%s/\n' "$http_port"
    printf '  https://localhost:%s/  (self-signed: curl --cacert %s)\n' "$https_port" "$tls/cert.pem"
    printf '  logs: %s/{valerie.log,access.log,error.log}\n' "$logs"
    printf '  stop: VALERIE_RUN_DIR=%s %s stop\n' "$run_dir" "$0"
}

do_stop() {
    check_stop_timeout
    if [ ! -d "$run_dir" ]; then
        say "nothing runs in $run_dir"
        return 0
    fi
    take_lock
    local npid ppid lpids
    npid=$(nginx_pid)
    ppid=$(pool_pid)
    lpids="$(socket_holders)$(nginx_left)"
    stop_stack 0
    if [ -z "$npid" ] && [ -z "$ppid" ] && [ -z "$lpids" ]; then
        say "nothing was running in $run_dir"
    fi
    if [ "$survivors" = 1 ]; then
        warn "processes of $run_dir are still running (see above)"
        return 1
    fi
    return 0
}

do_status() {
    local npid ppid kids left=0 http_port="" https_port=""
    if [ -f "$stack_env" ]; then
        http_port=$(sed -n 's/^HTTP_PORT=//p' "$stack_env")
        https_port=$(sed -n 's/^HTTPS_PORT=//p' "$stack_env")
    fi
    npid=$(nginx_pid)
    ppid=$(pool_pid)
    if [ -n "$npid" ]; then
        kids=$(children "$npid")
        say "nginx running: master pid $npid, workers ${kids:-none}; http://127.0.0.1:$http_port/ https://localhost:$https_port/"
    else
        kids=$(nginx_left)
        if [ -n "$kids" ]; then
            say "nginx not running, but processes left by its master still serve: pids $kids (stop them: VALERIE_RUN_DIR=$run_dir_q $0 stop)"
            left=1
        else
            say "nginx not running"
        fi
    fi
    if [ -n "$ppid" ]; then
        kids=$(children "$ppid")
        say "pool running: multiwatch pid $ppid, workers ${kids:-none}; socket $socket"
    else
        kids=$(socket_holders)
        if [ -n "$kids" ]; then
            say "pool not running, but workers left by its multiwatch still hold the socket: pids $kids (stop them: VALERIE_RUN_DIR=$run_dir_q $0 stop)"
            left=1
        else
            say "pool not running"
        fi
    fi
    if [ "$left" = 1 ]; then return 1; fi
    if [ -n "$npid" ] && [ -n "$ppid" ]; then return 0; fi
    if [ -z "$npid" ] && [ -z "$ppid" ]; then return 3; fi
    return 1
}

do_configtest() {
    plain_run_dir
    read_settings
    mkdir -p -- "$run_dir" "$logs" "$nginx_dir"
    take_lock
    make_cert
    write_config
    test_config
    say "nginx configuration OK: $nginx_conf"
}

case "${1:-}" in
    start) do_start ;;
    stop) do_stop ;;
    status)
        rc=0
        do_status || rc=$?
        exit "$rc"
        ;;
    configtest) do_configtest ;;
    -h | --help | help)
        sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
        ;;
    *)
        warn "usage: $0 start|stop|status|configtest"
        exit 2
        ;;
esac
