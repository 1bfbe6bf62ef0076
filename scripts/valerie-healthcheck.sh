#!/bin/bash
# valerie-healthcheck.sh: exit 0 when the pool of this machine answers GET /health/live
# with 200 on its metrics port (VALERIE_METRICS_PORT, served by every worker through
# libmicrohttpd), 1 otherwise. Needs nothing but bash (its /dev/tcp), so it works in
# the slim image, which has no curl: the container HEALTHCHECK (compose/Dockerfile)
# and the compose healthchecks call it.
#
# Environment: VALERIE_METRICS_PORT (default 9464; 0 or empty means the port is off and
# the check fails, saying so), VALERIE_HEALTHCHECK_HOST (default 127.0.0.1: the
# listener binds 127.0.0.1 or 0.0.0.0).
set -u
port=${VALERIE_METRICS_PORT:-9464}
host=${VALERIE_HEALTHCHECK_HOST:-127.0.0.1}
case "$port" in
    '' | 0 | *[!0-9]*)
        echo "valerie-healthcheck: VALERIE_METRICS_PORT is off ('$port'); the check needs it" >&2
        exit 1
        ;;
esac
# A connection that is refused fails here; one that hangs is cut by read's timeout.
if ! exec 3<>"/dev/tcp/$host/$port"; then
    echo "valerie-healthcheck: nothing listens on $host:$port" >&2
    exit 1
fi
printf 'GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
status=""
IFS= read -r -t 4 status <&3 || true
exec 3<&-
case "$status" in
    "HTTP/1."?" 200 "*) exit 0 ;;
esac
echo "valerie-healthcheck: GET /health/live on $host:$port answered '${status%$'\r'}'" >&2
exit 1
