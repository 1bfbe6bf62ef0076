#!/bin/bash
# deploy.sh: operate a Valerie deployment (seed 003's verbs).
#
# Usage: scripts/deploy.sh VERB   (from anywhere; it works from the repository root)
#   --check          prerequisites: docker client, compose, a reachable engine, the env
#                    file (present, mode 600, no CHANGEME left, a JWT secret of 32+
#                    bytes unless auth is off), `compose config -q`
#   --build          build the image valerie:$VALERIE_VERSION (compose build api)
#   --up             start or update the stack (up -d), then reload nginx so it
#                    resolves the api replicas again
#   --down           stop and remove the containers (volumes are kept)
#   --restart        restart the services
#   --status         the services and their health (compose ps)
#   --logs           follow the logs (compose logs -f --tail=100)
#   --dev-cert       a self-signed certificate for localhost in run/letsencrypt/live/
#                    localhost/ (compose/docker-compose.dev.yml mounts it)
#   --backup         back up the session data into $VALERIE_BACKUP_DIR/
#                    valerie-backup-DATE.tar.gz: the LMDB environment (mdb_copy -c,
#                    consistent while the pool runs) and/or Redis: Valerie's keys
#                    (`valerie redis-export`: DUMP and TTL of each, over the network)
#                    and an RDB snapshot of the whole server (redis-cli --rdb)
#   --restore FILE   put the data of a backup back: LMDB (the pool must be stopped;
#                    the current data.mdb is kept as data.mdb.before-restore) and
#                    Valerie's Redis keys (`valerie redis-import`, over the network,
#                    while everything runs: keys of the backup replace keys of the
#                    same name, others stay); the RDB snapshot is a fallback for
#                    a whole-server restore, by hand
#
# Environment:
#   VALERIE_ENV_FILE       settings (default .env.production); --backup/--restore read
#                          VALERIE_DATA_DIR, VALERIE_SESSION_STORE and
#                          VALERIE_SESSION_REDIS_URL from it unless already set
#   VALERIE_COMPOSE_FILES  compose files, space-separated (default
#                          "compose/docker-compose.yml compose/docker-compose.prod.yml")
#   VALERIE_BACKUP_DIR     where backups go (default ./backups)
#   VALERIE_BIN            the worker binary, for redis-export/-import on a local
#                          target (default: `valerie` in PATH)
#   VALERIE_BACKUP_TARGET  local: the data of this host (LMDB dir, Redis URL);
#                          compose: the stack's containers. Default: compose when a
#                          Docker engine answers and the stack runs, else local.
#
# Exit status: 0 done, 1 failed (the message says why), 2 usage, 3 no Docker engine.
set -eu

me=deploy
say() { printf '%s: %s\n' "$me" "$*"; }
warn() { printf '%s: %s\n' "$me" "$*" >&2; }
die() {
    warn "$*"
    exit 1
}

top=$(cd "$(dirname -- "$0")/.." && pwd -P)
cd "$top"
env_file=${VALERIE_ENV_FILE:-.env.production}
read -r -a compose_files <<<"${VALERIE_COMPOSE_FILES:-compose/docker-compose.yml compose/docker-compose.prod.yml}"
backup_dir=${VALERIE_BACKUP_DIR:-$top/backups}

# --- compose -------------------------------------------------------------------
compose_cmd=()
find_compose() {
    command -v docker >/dev/null 2>&1 || {
        warn "docker not found: install Docker (https://docs.docker.com/engine/install/debian/)"
        exit 3
    }
    if docker compose version >/dev/null 2>&1; then
        compose_cmd=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        compose_cmd=(docker-compose)
    else
        warn "neither 'docker compose' nor docker-compose found (apt-get install docker-compose-plugin or docker-compose)"
        exit 3
    fi
}

engine_ok() { docker info >/dev/null 2>&1; }

need_engine() {
    find_compose
    if ! engine_ok; then
        local why
        why=$(docker info 2>&1 | grep -iE 'cannot connect|error|permission' | head -n 1) || true
        warn "no Docker engine reachable: ${why:-docker info failed}"
        warn "start one (systemctl start docker) or point DOCKER_HOST at one; this verb needs it"
        exit 3
    fi
}

compose() {
    local args=() f
    for f in "${compose_files[@]}"; do args+=(-f "$f"); done
    [ -f "$env_file" ] || die "env file $env_file not found: cp .env.production.example .env.production and fill it in (or set VALERIE_ENV_FILE)"
    "${compose_cmd[@]}" "${args[@]}" --env-file "$env_file" "$@"
}

# env_value NAME: NAME from the environment, else from the env file, else empty.
env_value() {
    local v
    if [ -n "${!1+x}" ]; then
        printf '%s' "${!1}"
        return
    fi
    [ -f "$env_file" ] || return 0
    v=$(sed -n "s/^$1=//p" "$env_file" | tail -n 1)
    v=${v%\"}
    v=${v#\"}
    printf '%s' "$v"
}

# find_valerie: the worker binary into $valerie_bin (VALERIE_BIN, else valerie in PATH),
# as valerie-pool.sh finds it.
valerie_bin=""
find_valerie() {
    local b=${VALERIE_BIN:-valerie}
    case "$b" in
        */*) [ -x "$b" ] || die "VALERIE_BIN=$b is not an executable" ;;
        *) b=$(command -v -- "$b") || die "the valerie binary is not in PATH (set VALERIE_BIN)" ;;
    esac
    valerie_bin=$b
}

# valerie_redis VERB ARG URL: `valerie redis-export|redis-import ARG` against URL. Only
# the URL is passed from the env file: the rest of the worker's settings keep their
# defaults, and VALERIE_ENV_FILE (the launcher's, checked for its mode) is not passed.
valerie_redis() {
    env -u VALERIE_ENV_FILE VALERIE_SESSION_STORE=redis VALERIE_SESSION_REDIS_URL="$3" \
        "$valerie_bin" "$1" "$2"
}

# The temp dir of --backup/--restore (global: the EXIT trap runs after the function).
work=""
cleanup() { if [ -n "$work" ]; then rm -rf -- "$work"; fi; }
trap cleanup EXIT

# --- verbs -----------------------------------------------------------------------
do_check() {
    local fails=0 mode secret auth
    ok() { printf '[OK]   %s\n' "$*"; }
    bad() {
        printf '[FAIL] %s\n' "$*"
        fails=$((fails + 1))
    }
    if command -v docker >/dev/null 2>&1; then ok "docker client: $(command -v docker)"; else bad "docker client not found"; fi
    if docker compose version >/dev/null 2>&1; then
        ok "compose: docker compose"
        compose_cmd=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        ok "compose: docker-compose $(docker-compose version --short 2>/dev/null)"
        compose_cmd=(docker-compose)
    else bad "compose not found (docker compose plugin or docker-compose)"; fi
    if command -v docker >/dev/null 2>&1 && engine_ok; then ok "Docker engine reachable"; else bad "no Docker engine reachable (docker info fails)"; fi
    if [ -f "$env_file" ]; then
        ok "env file $env_file"
        mode=$(stat -c %a "$env_file")
        if [ "$mode" = 600 ] || [ "$mode" = 400 ]; then ok "env file mode $mode"; else bad "env file mode $mode: chmod 600 $env_file"; fi
        if grep -q 'CHANGEME' "$env_file"; then bad "env file still has CHANGEME values: $(grep -o '^[A-Z_]*=CHANGEME' "$env_file" | cut -d= -f1 | tr '\n' ' ')"; else ok "no CHANGEME values"; fi
        auth=$(env_value VALERIE_AUTH)
        secret=$(env_value JWT_SECRET_KEY)
        case "$auth" in
            *jwt*) if [ "${#secret}" -ge 32 ]; then ok "JWT_SECRET_KEY is ${#secret} bytes"; else bad "JWT_SECRET_KEY shorter than 32 bytes (openssl rand -hex 32)"; fi ;;
            none) bad "VALERIE_AUTH=none: development only" ;;
            *) ok "VALERIE_AUTH=$auth" ;;
        esac
        if [ "${#compose_cmd[@]}" -gt 0 ]; then
            if compose config -q; then ok "compose files valid: ${compose_files[*]}"; else bad "compose config failed"; fi
        fi
    else
        bad "env file $env_file not found: cp .env.production.example $env_file && chmod 600 $env_file"
    fi
    if [ "$fails" -eq 0 ]; then say "all checks passed"; else say "$fails check(s) failed"; fi
    [ "$fails" -eq 0 ]
}

do_dev_cert() {
    local dir=$top/run/letsencrypt/live/localhost
    if [ -s "$dir/fullchain.pem" ] && [ -s "$dir/privkey.pem" ]; then
        say "certificate already there: $dir"
        return 0
    fi
    mkdir -p -- "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
        -keyout "$dir/privkey.pem" -out "$dir/fullchain.pem" -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1 ||
        die "openssl could not make the certificate"
    chmod 644 "$dir/privkey.pem" # read by nginx's master in the container (root)
    say "self-signed certificate for localhost: $dir"
}

backup_target() {
    local t=${VALERIE_BACKUP_TARGET:-}
    if [ -z "$t" ]; then
        t=local
        if command -v docker >/dev/null 2>&1 && engine_ok; then
            find_compose
            if [ -n "$(compose ps -q redis 2>/dev/null)" ]; then t=compose; fi
        fi
    fi
    case "$t" in local | compose) printf '%s' "$t" ;; *) die "VALERIE_BACKUP_TARGET must be local or compose, not '$t'" ;; esac
}

do_backup() {
    local target stamp name data store url n=0
    target=$(backup_target)
    stamp=$(date -u +%Y%m%d-%H%M%S)
    name=valerie-backup-$stamp
    mkdir -p -- "$backup_dir"
    work=$(mktemp -d)
    mkdir -p -- "$work/$name"
    {
        printf 'created=%s\ntarget=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$target"
    } >"$work/$name/MANIFEST"
    if [ "$target" = compose ]; then
        need_engine
        local cid
        cid=$(compose ps -q redis)
        [ -n "$cid" ] || die "the stack's redis is not running"
        compose exec -T redis redis-cli --rdb /data/valerie-backup.rdb >/dev/null || die "redis-cli --rdb failed in the redis container"
        mkdir -p -- "$work/$name/redis"
        docker cp "$cid:/data/valerie-backup.rdb" "$work/$name/redis/dump.rdb" || die "docker cp of the snapshot failed"
        compose exec -T redis rm -f /data/valerie-backup.rdb || true
        echo "redis=redis/dump.rdb" >>"$work/$name/MANIFEST"
        compose exec -T api valerie redis-export - >"$work/$name/redis/valerie-keys.bin" 2>"$work/export.err" ||
            die "valerie redis-export in the api container failed: $(cat "$work/export.err")"
        echo "redis_keys=redis/valerie-keys.bin" >>"$work/$name/MANIFEST"
        say "Redis: $(cat "$work/export.err")"
        n=$((n + 1))
    else
        store=$(env_value VALERIE_SESSION_STORE)
        data=$(env_value VALERIE_DATA_DIR)
        if [ -n "$data" ] && [ -f "$data/data.mdb" ]; then
            command -v mdb_copy >/dev/null || die "mdb_copy not found (apt-get install lmdb-utils)"
            mkdir -p -- "$work/$name/lmdb"
            # -c: compacted, consistent (a read transaction), safe while the pool writes.
            mdb_copy -c "$data" "$work/$name/lmdb" || die "mdb_copy -c $data failed"
            echo "lmdb=lmdb/data.mdb" >>"$work/$name/MANIFEST"
            say "LMDB: copied $data"
            n=$((n + 1))
        fi
        if [ "$store" = redis ]; then
            url=$(env_value VALERIE_SESSION_REDIS_URL)
            command -v redis-cli >/dev/null || die "redis-cli not found (apt-get install redis-tools)"
            mkdir -p -- "$work/$name/redis"
            # The server forks a snapshot and streams it: consistent, nothing to read
            # on the Redis host's disk.
            redis-cli -u "$url" --rdb "$work/$name/redis/dump.rdb" >/dev/null 2>"$work/redis.err" ||
                die "redis-cli --rdb from $(redact_url "$url") failed: $(cat "$work/redis.err")"
            echo "redis=redis/dump.rdb" >>"$work/$name/MANIFEST"
            say "Redis: snapshot of $(redact_url "$url")"
            find_valerie
            valerie_redis redis-export "$work/$name/redis/valerie-keys.bin" "$url" 2>"$work/export.err" ||
                die "valerie redis-export failed: $(cat "$work/export.err")"
            echo "redis_keys=redis/valerie-keys.bin" >>"$work/$name/MANIFEST"
            say "Redis: $(cat "$work/export.err")"
            n=$((n + 1))
        fi
    fi
    [ "$n" -gt 0 ] || die "nothing to back up: no LMDB data in VALERIE_DATA_DIR='${data:-}' and VALERIE_SESSION_STORE is not redis"
    tar -C "$work" -czf "$backup_dir/$name.tar.gz.tmp" "$name"
    mv -f -- "$backup_dir/$name.tar.gz.tmp" "$backup_dir/$name.tar.gz"
    chmod 600 "$backup_dir/$name.tar.gz"
    say "backup written: $backup_dir/$name.tar.gz"
}

# redact_url URL: the URL without its password (redis://:secret@host -> redis://***@host).
redact_url() { printf '%s' "$1" | sed -E 's#//[^@/]*@#//***@#'; }

# maps_open PATH: some process has PATH mapped (LMDB maps data.mdb).
# -q: grep's status is 0 on a match even when some process vanished meanwhile.
maps_open() { grep -qsF -- "$1" /proc/[0-9]*/maps 2>/dev/null; }

do_restore() {
    local file=$1 dir data target url
    [ -f "$file" ] || die "no such backup: $file"
    work=$(mktemp -d)
    tar -C "$work" -xzf "$file" || die "$file is not a backup archive (tar failed)"
    dir=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'valerie-backup-*' | head -n 1)
    [ -n "$dir" ] && [ -f "$dir/MANIFEST" ] || die "$file holds no valerie-backup-*/MANIFEST"
    target=$(backup_target)
    if [ -f "$dir/lmdb/data.mdb" ]; then
        data=$(env_value VALERIE_DATA_DIR)
        [ -n "$data" ] || die "VALERIE_DATA_DIR is not set (environment or $env_file)"
        mkdir -p -- "$data"
        if maps_open "$data/data.mdb"; then
            die "the pool still has $data/data.mdb open: stop it first (systemctl stop valerie, or run-local.sh stop)"
        fi
        if [ -f "$data/data.mdb" ]; then mv -f -- "$data/data.mdb" "$data/data.mdb.before-restore"; fi
        cp -- "$dir/lmdb/data.mdb" "$data/data.mdb.tmp"
        mv -f -- "$data/data.mdb.tmp" "$data/data.mdb"
        # The lock file describes readers of the old file; LMDB makes a new one.
        rm -f -- "$data/lock.mdb"
        say "LMDB restored into $data (previous data: data.mdb.before-restore); start the pool"
    fi
    if [ -f "$dir/redis/valerie-keys.bin" ]; then
        if [ "$target" = compose ]; then
            need_engine
            compose exec -T api valerie redis-import - <"$dir/redis/valerie-keys.bin" 2>"$work/import.err" ||
                die "valerie redis-import in the api container failed: $(cat "$work/import.err")"
        else
            url=$(env_value VALERIE_SESSION_REDIS_URL)
            [ -n "$url" ] || die "VALERIE_SESSION_REDIS_URL is not set (environment or $env_file)"
            find_valerie
            valerie_redis redis-import "$dir/redis/valerie-keys.bin" "$url" 2>"$work/import.err" ||
                die "valerie redis-import failed: $(cat "$work/import.err")"
        fi
        say "Redis: $(cat "$work/import.err")"
        say "(for a whole-server restore instead, the archive's redis/dump.rdb is an RDB snapshot:"
        say " stop Redis, replace dump.rdb, move appendonlydir away, start it with --appendonly no,"
        say " then redis-cli CONFIG SET appendonly yes)"
    elif [ -f "$dir/redis/dump.rdb" ]; then
        # A backup from before redis-export: only the snapshot, loaded by hand.
        cp -- "$dir/redis/dump.rdb" "$backup_dir/restore-dump.rdb" 2>/dev/null ||
            { mkdir -p -- "$backup_dir" && cp -- "$dir/redis/dump.rdb" "$backup_dir/restore-dump.rdb"; }
        say "Redis snapshot extracted: $backup_dir/restore-dump.rdb"
        say "to load it, stop Redis, replace dump.rdb in its dir, move its appendonlydir away, start it with"
        say "  --appendonly no, then: redis-cli CONFIG SET appendonly yes (rewrites the AOF from the data)"
        if [ "$target" = compose ]; then
            say "(compose: docker-compose ... stop redis; the volume is redis-data, mounted at /data)"
        fi
    fi
}

verb=${1:-}
case "$verb" in
    --check) do_check ;;
    --build) need_engine && compose build api ;;
    --up)
        need_engine
        compose up -d --remove-orphans
        # nginx resolves `api` at load: new replica addresses need a reload.
        compose exec -T nginx nginx -s reload || warn "nginx reload failed; check: $0 --logs"
        compose ps
        ;;
    --down) need_engine && compose down ;;
    --restart) need_engine && compose restart ;;
    --status) need_engine && compose ps ;;
    --logs) need_engine && compose logs -f --tail=100 ;;
    --dev-cert) do_dev_cert ;;
    --backup) do_backup ;;
    --restore)
        [ -n "${2:-}" ] || {
            warn "usage: $0 --restore FILE"
            exit 2
        }
        do_restore "$2"
        ;;
    -h | --help) sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' ;;
    *)
        warn "usage: $0 --check|--build|--up|--down|--restart|--status|--logs|--dev-cert|--backup|--restore FILE"
        exit 2
        ;;
esac
