#!/bin/bash
# valerie-pool.sh: start the Valerie FastCGI worker pool.
#
# The one place that knows how the pool is launched: scripts/run-local.sh,
# the integration tests, the Dockerfile and the systemd unit all call this
# script instead of repeating the steps:
#
#   1. `$VALERIE_BIN check-config`: an invalid setting stops here, with the
#      worker's one-line message (naming the variable) on stderr;
#   2. spawn-fcgi binds the FastCGI socket and hands it (as fd 0) to
#   3. multiwatch, which forks VALERIE_WORKERS copies of the worker and
#      restarts the ones that die.
#
# Stopping (what the worker must honour): send SIGTERM to multiwatch (the pid
# in VALERIE_POOL_PIDFILE, or the service's main pid). multiwatch then sends
# every worker SIGUSR1: stop accepting, finish the requests in flight, exit.
# A second SIGTERM to multiwatch forwards SIGTERM to the workers; multiwatch
# exits once every worker has. So a worker treats SIGUSR1 and SIGTERM alike
# as "graceful shutdown" (libfcgi's FCGX_Init installs handlers for both, plus
# SIGPIPE).
#
# Why not `multiwatch -s TERM`: Debian 12's multiwatch 1.0 maps the -s name
# to its position in the list HUP,INT,QUIT,TERM,USR1,USR2 instead of the
# signal number, so `-s TERM` sends SIGQUIT (3, default action: core dump),
# `-s INT` SIGHUP and `-s USR1` SIGILL (checked with strace here). Its
# default, SIGUSR1, is a real constant and correct.
#
# Usage:
#   valerie-pool.sh               start the pool in the background (its own
#                                 session); multiwatch's pid goes to
#                                 $VALERIE_POOL_PIDFILE (required), the
#                                 workers' output to $VALERIE_POOL_LOG
#   valerie-pool.sh --foreground  become the pool (exec), for systemd
#                                 (Type=simple) and containers; stop it with
#                                 SIGTERM
#
# Environment (the whole environment reaches the workers):
#   VALERIE_BIN             worker binary (default: `valerie` in PATH)
#   VALERIE_LISTEN          where to accept FastCGI: a unix socket path
#                           (starting with /) or HOST:PORT ([::]:9000 for
#                           IPv6); default /run/valerie/valerie.sock
#   VALERIE_WORKERS         worker processes (default 2)
#   VALERIE_THREADS         threads per worker, read by the worker itself
#   VALERIE_POOL_PIDFILE    background mode: where multiwatch's pid goes
#   VALERIE_POOL_LOG        background mode: file that gets the workers'
#                           stdout and stderr (appended; default: this
#                           script's stdout and stderr)
#   VALERIE_SOCKET_MODE     unix socket mode (default 0660)
#   VALERIE_SOCKET_USER, VALERIE_SOCKET_GROUP
#                           (root only) socket owner, e.g. the group nginx
#                           runs as
#   VALERIE_POOL_USER, VALERIE_POOL_GROUP
#                           (root only) run the workers as this user/group
#   VALERIE_SOCKET_BACKLOG  listen backlog (default 1024)
#   VALERIE_POOL_RETRIES    restarts multiwatch allows a worker that keeps
#                           dying within VALERIE_POOL_RETRY_MS (defaults 10
#                           and 10000; multiwatch's own 3 gives up too soon)
#
# Exit status: 0 started (or, --foreground, the pool's own), 78 the
# configuration is invalid (a setting above, or check-config failed), 1
# anything else.
set -eu

me=valerie-pool
die() {
    printf '%s: %s\n' "$me" "$*" >&2
    exit 1
}
# A malformed setting: exit 78 like check-config, so that systemd
# (RestartPreventExitStatus=78) and callers do not retry what cannot work.
bad_setting() {
    printf '%s: %s\n' "$me" "$*" >&2
    exit 78
}

foreground=0
case "${1:-}" in
    --foreground | -n) foreground=1 ;;
    "") ;;
    -h | --help)
        sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (usage: $0 [--foreground])" ;;
esac

is_uint() {
    case "$1" in
        '' | *[!0-9]*) return 1 ;;
        *) return 0 ;;
    esac
}

# need_uint NAME VALUE MIN MAX: VALUE a whole number in [MIN, MAX], else one
# line naming NAME. (At most 10 digits first: test(1) complains on its own
# about numbers beyond 64 bits; multiwatch and spawn-fcgi take C ints.)
need_uint() {
    if ! { is_uint "$2" && [ "${#2}" -le 10 ] && [ "$2" -ge "$3" ] && [ "$2" -le "$4" ]; }; then
        bad_setting "$1 must be a whole number from $3 to $4, not '$2'"
    fi
}

bin=${VALERIE_BIN:-valerie}
case "$bin" in
    */*) ;;
    *) bin=$(command -v -- "$bin") || die "worker binary '$bin' not found in PATH (set VALERIE_BIN)" ;;
esac
if ! { [ -x "$bin" ] && [ -f "$bin" ]; }; then
    die "worker binary $bin is not an executable file (VALERIE_BIN)"
fi
# multiwatch does not search PATH: hand it an absolute path.
case "$bin" in
    /*) ;;
    *) bin="$(cd "$(dirname -- "$bin")" && pwd -P)/$(basename -- "$bin")" ;;
esac

spawn=$(command -v spawn-fcgi) || die "spawn-fcgi not found (apt-get install spawn-fcgi)"
multiwatch=$(command -v multiwatch) || die "multiwatch not found (apt-get install multiwatch)"

# The worker's own range for VALERIE_WORKERS (app/conf.c).
workers=${VALERIE_WORKERS:-2}
need_uint VALERIE_WORKERS "$workers" 1 256
export VALERIE_WORKERS="$workers"

retries=${VALERIE_POOL_RETRIES:-10}
need_uint VALERIE_POOL_RETRIES "$retries" 0 2147483647
retry_ms=${VALERIE_POOL_RETRY_MS:-10000}
need_uint VALERIE_POOL_RETRY_MS "$retry_ms" 0 2147483647
backlog=${VALERIE_SOCKET_BACKLOG:-1024}
need_uint VALERIE_SOCKET_BACKLOG "$backlog" 1 2147483647

listen=${VALERIE_LISTEN:-/run/valerie/valerie.sock}
set -- "$spawn" -b "$backlog"
case "$listen" in
    /*)
        # sun_path holds 108 bytes, the terminating NUL included.
        [ "${#listen}" -le 107 ] || bad_setting "VALERIE_LISTEN: socket path too long for a unix socket (${#listen} > 107 bytes): $listen"
        [ -d "$(dirname -- "$listen")" ] || die "directory of the socket does not exist: $(dirname -- "$listen")"
        mode=${VALERIE_SOCKET_MODE:-0660}
        case "$mode" in
            [0-7][0-7][0-7] | [0-7][0-7][0-7][0-7]) ;;
            *) bad_setting "VALERIE_SOCKET_MODE must be an octal mode such as 0660, not '$mode'" ;;
        esac
        set -- "$@" -s "$listen" -M "$mode"
        if [ -n "${VALERIE_SOCKET_USER:-}" ]; then set -- "$@" -U "$VALERIE_SOCKET_USER"; fi
        if [ -n "${VALERIE_SOCKET_GROUP:-}" ]; then set -- "$@" -G "$VALERIE_SOCKET_GROUP"; fi
        ;;
    *:*)
        port=${listen##*:}
        addr=${listen%:*}
        addr=${addr#[}
        addr=${addr%]}
        if ! { is_uint "$port" && [ "${#port}" -le 5 ] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ]; }; then
            bad_setting "VALERIE_LISTEN: bad port in '$listen' (1 to 65535)"
        fi
        [ -n "$addr" ] || bad_setting "VALERIE_LISTEN: missing address in '$listen' (0.0.0.0:PORT for every interface)"
        set -- "$@" -a "$addr" -p "$port"
        ;;
    *) bad_setting "VALERIE_LISTEN must be a socket path (/...) or HOST:PORT, not '$listen'" ;;
esac
if [ -n "${VALERIE_POOL_USER:-}" ]; then set -- "$@" -u "$VALERIE_POOL_USER"; fi
if [ -n "${VALERIE_POOL_GROUP:-}" ]; then set -- "$@" -g "$VALERIE_POOL_GROUP"; fi

# 1. Refuse to start on an invalid configuration. The worker prints the
# effective configuration on stdout (not wanted here) and, when a setting is
# invalid, one line naming it on stderr (passed on to our caller).
# Exit status 78 (EX_CONFIG) tells callers the configuration is at fault.
if ! "$bin" check-config >/dev/null; then
    printf '%s: configuration invalid (see above); pool not started\n' "$me" >&2
    exit 78
fi

# No -s: see "Why not multiwatch -s TERM" at the top.
mw_args=(-f "$workers" -r "$retries" -t "$retry_ms" -- "$bin")

# Daemons must not inherit our caller's descriptors beyond 0-2 (a test
# harness waiting for EOF on a pipe would wait for ever).
for fd in "/proc/$$/fd"/*; do
    fd=${fd##*/}
    case "$fd" in '' | *[!0-9]*) continue ;; esac
    if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
done

if [ "$foreground" = 1 ]; then
    # spawn-fcgi -n binds the socket and execs multiwatch in this very
    # process: the supervisor's pid is ours. stdout/stderr stay as they are
    # (journal, container log).
    exec "$@" -n -- "$multiwatch" "${mw_args[@]}"
fi

pidfile=${VALERIE_POOL_PIDFILE:-}
[ -n "$pidfile" ] || die "VALERIE_POOL_PIDFILE must be set (or use --foreground)"
[ -d "$(dirname -- "$pidfile")" ] || die "directory of VALERIE_POOL_PIDFILE does not exist: $pidfile"
if [ -n "${VALERIE_POOL_LOG:-}" ]; then
    exec >>"$VALERIE_POOL_LOG" 2>&1 || die "cannot write VALERIE_POOL_LOG=$VALERIE_POOL_LOG"
fi

# Background: spawn-fcgi's own fork mode would send the workers' stdout and
# stderr (their JSON log) to /dev/null, so run it in no-fork mode as a
# background job in a session of its own (setsid: its own process group,
# no controlling terminal). setsid does not fork here (a background job of a
# script is no group leader), so $! becomes spawn-fcgi and then multiwatch.
setsid "$@" -n -- "$multiwatch" "${mw_args[@]}" </dev/null &
pid=$!
printf '%s\n' "$pid" >"$pidfile.tmp"
mv -f -- "$pidfile.tmp" "$pidfile"

# Up once the process is multiwatch: spawn-fcgi binds the socket first.
i=0
while :; do
    comm=$(ps -o comm= -p "$pid" 2>/dev/null) || comm=""
    stat=$(ps -o stat= -p "$pid" 2>/dev/null) || stat=""
    case "${stat#"${stat%%[! ]*}"}" in Z*) comm="" ;; esac
    [ "$comm" != multiwatch ] || break
    if [ -z "$comm" ]; then
        rc=0
        wait "$pid" || rc=$?
        rm -f -- "$pidfile"
        die "spawn-fcgi failed (exit $rc)"
    fi
    if [ "$i" -ge 100 ]; then
        kill -KILL "$pid" 2>/dev/null || true
        rm -f -- "$pidfile"
        die "spawn-fcgi did not become multiwatch within 10 s (pid $pid, killed)"
    fi
    sleep 0.1
    i=$((i + 1))
done
