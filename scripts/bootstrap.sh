#!/bin/sh
# bootstrap.sh: the set-up of a fresh Debian 12 machine, as root: `run` installs, builds and
# starts the local stack; `test` installs what the tests need and runs the whole suite.
set -eu

cd "$(dirname "$0")/.."
TOP=$(pwd)

# Build and run dependencies (Debian 12 package names).
BUILD_PKGS="build-essential autoconf automake libtool pkg-config libfcgi-dev libjson-c-dev liblmdb-dev libhiredis-dev libcurl4-openssl-dev libssl-dev libjwt-dev libmicrohttpd-dev"
RUN_PKGS="spawn-fcgi multiwatch openssl curl libmicrohttpd12 libjwt0"
TEST_PKGS="python3 valgrind clang redis-server prometheus docker-compose lmdb-utils logrotate"

say() { printf 'bootstrap: %s\n' "$*"; }

install_pkgs() {
	missing=""
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing="$missing $p"
	done
	# Any nginx flavour will do; install the light one only when none is there.
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx-light"
	# Node for the SDK tests: Debian's nodejs and npm unless a node and npm are there
	# (a NodeSource nodejs bundles npm and conflicts with Debian's npm package).
	if [ "${BOOTSTRAP_NODE:-}" = yes ]; then
		command -v node >/dev/null 2>&1 || missing="$missing nodejs"
		command -v npm >/dev/null 2>&1 || missing="$missing npm"
	fi
	if [ -n "$missing" ]; then
		say "installing:$missing"
		if [ "$(id -u)" -ne 0 ]; then
			echo "bootstrap: run as root to install packages (or install:$missing)" >&2
			exit 1
		fi
		apt-get update -qq
		# shellcheck disable=SC2086 # a list of package names, split on purpose
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
	fi
}

# Builds in $1 (a directory under the tree) with configure flags $2...
build() {
	dir=$1
	shift
	[ -x "$TOP/configure" ] || (cd "$TOP" && ./autogen.sh)
	mkdir -p "$dir"
	(cd "$dir" && "$TOP/configure" -q "$@" && make -j"$(nproc)" >/dev/null)
}

# Adds the counts of an automake test-suite.log to the totals.
count() {
	log=$1
	[ -f "$log" ] || { FAILED=$((FAILED + 1)); return; }
	p=$(sed -n 's/^# PASS: *//p' "$log" | head -n1)
	f=$(sed -n 's/^# FAIL: *//p' "$log" | head -n1)
	e=$(sed -n 's/^# ERROR: *//p' "$log" | head -n1)
	PASSED=$((PASSED + ${p:-0}))
	FAILED=$((FAILED + ${f:-0} + ${e:-0}))
}

# Runs make check in $1; never stops the script, so every suite reports.
check_in() {
	dir=$1
	label=$2
	say "make check ($label)"
	if (cd "$dir" && make -j2 check >"$dir/check.out" 2>&1); then
		say "$label: ok"
	else
		say "$label: FAILED"; grep -E '^(FAIL|ERROR):' "$dir/check.out" || true
		grep -lE '^(FAIL|ERROR)' "$dir"/tests/*/*.log 2>/dev/null | while read -r l; do
			echo "----- $l"; tail -n 40 "$l"
		done
	fi
	count "$dir/test-suite.log"
}

case "${1:-}" in
run)
	# shellcheck disable=SC2086 # lists of package names
	install_pkgs $BUILD_PKGS $RUN_PKGS
	build "$TOP/build"
	cd "$TOP/build"
	exec "$TOP/scripts/run-local.sh" start
	;;
test)
	# shellcheck disable=SC2086 # lists of package names
	install_pkgs $BUILD_PKGS $RUN_PKGS $TEST_PKGS
	PASSED=0
	FAILED=0
	(cd "$TOP" && ./autogen.sh >/dev/null 2>&1)
	build "$TOP/build-test"
	check_in "$TOP/build-test" "default build"
	build "$TOP/build-asan" --enable-sanitizers
	check_in "$TOP/build-asan" "ASan+UBSan build"
	say "make distcheck"
	if (cd "$TOP/build-test" && make distcheck >"$TOP/build-test/distcheck.out" 2>&1); then
		PASSED=$((PASSED + 1)); say "distcheck: ok"
	else
		FAILED=$((FAILED + 1)); say "distcheck: FAILED"; tail -n 40 "$TOP/build-test/distcheck.out"
		# the failing tests' own logs, left in distcheck's build directory
		grep -lE '^(FAIL|ERROR)' "$TOP"/build-test/valerie-*/_build/sub/tests/*/*.log \
			2>/dev/null | while read -r l; do
			echo "----- $l"; tail -n 40 "$l"
		done
	fi
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ]
	;;
*)
	echo "usage: scripts/bootstrap.sh run|test" >&2
	exit 2
	;;
esac
