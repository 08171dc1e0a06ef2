#!/usr/bin/env bash
# Memory-tier benchmark: hit throughput of MemoryTier::get against a raw moka::future::Cache with
# the same capacity and weigher, in the same process and run (crates/tiers/examples/memory_bench.rs).
#
#   bash bench/memory.sh                                              # 10 000 keys, 4M gets, 3 reps
#   BENCH_MEMORY_OPS=1000000 BENCH_REPS=1 bash bench/memory.sh        # quick
#
# What it measures: KEYS values of 4 KiB are put into both caches (all fit); then T tokio tasks
# (T = the number of CPUs, and 64) share OPS random hits, the two caches measured in alternating
# slices, which one goes first alternating between repetitions. Prints ops/s of each and the ratio
# tiercache/moka. Goal: >= 0.8x. Run twice: without a metrics recorder (metric increments are
# no-ops), and with one whose counters are shared atomics, as a server's Prometheus exporter has.
#
# Needs: cargo. Runs in memory only; nothing to clean up.
set -euo pipefail

KEYS=${BENCH_MEMORY_KEYS:-10000}
OPS=${BENCH_MEMORY_OPS:-4000000}
REPS=${BENCH_REPS:-3}
TASKS=${BENCH_MEMORY_TASKS:-"$(nproc) 64"}

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tiercache-target}
log "building (release)"
cargo build --release --locked -q -p tiercache-tiers --example memory_bench
BENCH=$CARGO_TARGET_DIR/release/examples/memory_bench

log "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); $(background_load)"
echo
echo "memory tier, $(nproc) CPUs, $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
for recorder in 0 1; do
    echo
    # TASKS is a list of task counts: split on purpose.
    # shellcheck disable=SC2086
    MEMORY_BENCH_RECORDER=$recorder "$BENCH" "$KEYS" "$OPS" "$REPS" $TASKS
done
