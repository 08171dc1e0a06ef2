#!/usr/bin/env bash
# Disk-tier eviction policy benchmark: hit ratio on zipf workloads, tiercache's EvictionPolicy
# (S3-FIFO) against a plain LRU and moka (TinyLFU), on the same traces in the same run.
#
#   bash bench/evict.sh                                        # 100,000 keys, 2,000,000 requests
#   BENCH_EVICT_REQUESTS=200000 bash bench/evict.sh            # quick
#
# What it measures (crates/tiers/examples/evict_zipf.rs has the details): zipf exponents 0.9 and
# 1.0, caches of 1%, 5% and 10% of the key space, each request counted after the same warm-up;
# equal-size objects (object hit ratio) and sizes log-uniform between 4 KiB and 4 MiB fixed per key
# (byte hit ratio). Goal: tiercache >= LRU in every row, and near moka. Pure computation, one core.
#
# Settings: BENCH_EVICT_KEYS=100000, BENCH_EVICT_REQUESTS=2000000, BENCH_EVICT_WARMUP=500000,
# BENCH_EVICT_SEED=42.
set -euo pipefail

KEYS=${BENCH_EVICT_KEYS:-100000}
REQUESTS=${BENCH_EVICT_REQUESTS:-2000000}
WARMUP=${BENCH_EVICT_WARMUP:-500000}
SEED=${BENCH_EVICT_SEED:-42}

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tiercache-target}
log "building (release)"
cargo build --release --locked -q -p tiercache-tiers --example evict_zipf
log "machine: $(nproc) CPUs; $(background_load)"
log "running: evict_zipf --keys $KEYS --requests $REQUESTS --warmup $WARMUP --seed $SEED"

echo
echo "eviction policy hit ratios, $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
"$CARGO_TARGET_DIR/release/examples/evict_zipf" --keys "$KEYS" --requests "$REQUESTS" --warmup "$WARMUP" --seed "$SEED"
