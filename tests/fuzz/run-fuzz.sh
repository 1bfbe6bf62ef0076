#!/bin/sh
# run-fuzz.sh: runs every libFuzzer target for FUZZ_SECONDS (default 20) from its seeds;
# a crash, a leak or a sanitizer report fails the test. `make fuzz` runs them for an hour.
set -eu
builddir=${VALERIE_BUILDDIR:?}
srcdir=${VALERIE_SRCDIR:?}
seconds=${FUZZ_SECONDS:-20}
if [ ! -x "$builddir/tests/fuzz/fuzz_request" ]; then
	echo "FAIL: fuzz targets not built (clang with libFuzzer is needed: apt-get install clang)"
	exit 1
fi
# Everything a run writes (corpora, logs, the targets' own data dirs through TMPDIR) goes
# in one temp dir, removed on the way out even when a target crashes or the run is stopped.
work=$(mktemp -d "${TMPDIR:-/tmp}/valerie-fuzz-run.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
trap 'exit 1' HUP INT TERM
status=0
for target in "$builddir"/tests/fuzz/fuzz_*; do
	[ -x "$target" ] || continue
	name=$(basename "$target")
	seeds="$srcdir/tests/fuzz/seeds/${name#fuzz_}"
	corpus="$work/$name"
	mkdir "$corpus" "$corpus.tmp"
	echo "fuzzing $name for ${seconds}s"
	if ! TMPDIR="$corpus.tmp" "$target" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
		-artifact_prefix="$builddir/tests/fuzz/$name-" "$corpus" "$seeds" >"$corpus.log" 2>&1; then
		tail -n 40 "$corpus.log"
		status=1
	else
		grep -E '^#[0-9]+.*DONE|Done [0-9]+ runs' "$corpus.log" | tail -n 1
	fi
	rm -rf -- "$corpus" "$corpus.tmp" "$corpus.log"
done
exit $status
