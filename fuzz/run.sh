#!/usr/bin/env bash
# Builds every fuzz target (cargo fuzz, on nightly) and runs each for RUNS executions (default
# 1 000 000), one after the other; prints per target the executions done, the seconds taken and
# whether it crashed (then the crash's report, and the input is kept in fuzz/artifacts/<target>/).
# Exits non-zero if any target crashed. Usage: fuzz/run.sh [RUNS]
#
# Built with optimisations, debug assertions and overflow checks (-O -a), without a sanitizer
# (-s none): the code under test is safe Rust, so a sanitizer would find nothing more and halve
# the speed. The build goes to $TIERCACHE_FUZZ_TARGET_DIR (default /var/tmp/tiercache-fuzz-target),
# outside the clone, so repeated runs reuse it.
set -euo pipefail
cd "$(dirname "$0")"
runs="${1:-1000000}"
target_dir="${TIERCACHE_FUZZ_TARGET_DIR:-/var/tmp/tiercache-fuzz-target}"
flags=(-O -a -s none --target-dir "$target_dir")

cargo +nightly fuzz build "${flags[@]}"
status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in $(cargo +nightly fuzz list); do
  start=$(date +%s)
  if cargo +nightly fuzz run "${flags[@]}" "$target" -- -runs="$runs" -max_len=4096 >"$log" 2>&1; then
    result=ok
  else
    result=CRASH
    status=1
  fi
  done_runs=$(grep -o 'Done [0-9]* runs' "$log" | awk '{print $2}' || true)
  echo "$target: ${done_runs:-?} runs in $(($(date +%s) - start)) s: $result"
  if [ "$result" != ok ]; then
    tail -40 "$log"
  fi
done
exit "$status"
