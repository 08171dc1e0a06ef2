#!/usr/bin/env bash
# Shared-tier benchmark: node B reads a blob that node A wrote back to a real S3-compatible store
# (s3s-fs) on loopback, the story of seed 004.
#
#   bash bench/shared.sh                                             # 256 MiB, 50 samples, 5 reads
#   BENCH_SHARED_MIB=64 BENCH_SAMPLES=10 BENCH_REPS=2 bash bench/shared.sh   # quick
#
# What it measures (BENCHMARKS.md has the figures):
#   1. first 4 KiB range: each sample starts a fresh node B (empty data directory, so the blob is
#      in neither its disk tier nor its memory) and times one 4 KiB range at a random offset of
#      GET /blobs/sha256:<hex> with curl (time_total). p50 and p99. Goal: <= 10 ms on S3, <= 2 ms on Redis.
#      For context, the same store's own latency for a plain OpenDAL read of 4 KiB and of one
#      chunk (1 MiB: what versions before the leaf tree read and verified for any range) at random
#      offsets, each on a new Operator. A range now reads its 16 KiB leaves, 2 KiB of leaf digests
#      and the blob's `.tree` (after a stat).
#   2. full read: a fresh node B downloads the whole blob (curl), against a plain OpenDAL read of
#      the same object from the same store in the same run (crates/tiers/examples/opendal_read.rs,
#      same chunk size and read-ahead, no verification). Medians of BENCH_REPS. Goal: >= 0.9x.
#      Node B's disk fill (and its SHA-256 of the blob) runs beside the read, as in use.
#   Both run on S3 (s3s-fs) and on Redis.
#
# Needs: cargo, curl, redis-server, and s3s-fs (on PATH or in /var/tmp/tiercache-tools/bin: `bash .ci/run` installs
# it, or `cargo install s3s-fs --version 0.14.1 --features binary --locked`). Runs on 127.0.0.1 in a
# scratch directory under /var/tmp (on disk, not tmpfs), removed on exit (BENCH_KEEP=1 keeps it).
set -euo pipefail

MIB=${BENCH_SHARED_MIB:-256}
SAMPLES=${BENCH_SAMPLES:-50}
REPS=${BENCH_REPS:-5}
S3_PORT=${BENCH_S3_PORT:-18510}
REDIS_PORT=${BENCH_REDIS_PORT:-18513}
A_PORT=${BENCH_A_PORT:-18511}
B_PORT=${BENCH_B_PORT:-18512}
KEEP=${BENCH_KEEP:-0}
WRITE_TOKEN=bench-write-token-0123456789  # node A's upload needs a write token

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

S3S=$(command -v s3s-fs 2>/dev/null || true)
[ -n "$S3S" ] || { [ -x /var/tmp/tiercache-tools/bin/s3s-fs ] && S3S=/var/tmp/tiercache-tools/bin/s3s-fs; } || true
[ -n "$S3S" ] || die "s3s-fs not found: run 'bash .ci/run' once, or cargo install s3s-fs --version 0.14.1 --features binary --locked"
REDIS=$(command -v redis-server 2>/dev/null || true)
[ -n "$REDIS" ] || die "redis-server not found (apt-get install redis-server)"
for t in curl sha256sum awk sort shuf; do command -v "$t" >/dev/null 2>&1 || die "$t not found"; done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tiercache-target}
log "building (release)"
# Two builds: `--example` alone would select only the example, leaving an old `tiercache` in place.
cargo build --release --locked -q -p tiercache --bin tiercache
cargo build --release --locked -q -p tiercache-tiers --example opendal_read
TC=$CARGO_TARGET_DIR/release/tiercache
PLAIN=$CARGO_TARGET_DIR/release/examples/opendal_read

SCRATCH=$(mktemp -d /var/tmp/tiercache-bench-shared.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ "$KEEP" = 1 ] && log "kept $SCRATCH" || rm -rf "$SCRATCH"
}
trap cleanup EXIT

wait_port() { # url
    for _ in $(seq 1 500); do curl -fs -o /dev/null "$1" && return 0; sleep 0.02; done
    die "$1 did not answer"
}

# --- the stores -----------------------------------------------------------------------------------
export AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret
start_stores() {
    mkdir -p "$SCRATCH/s3/bench"
    "$S3S" --host 127.0.0.1 --port "$S3_PORT" --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" \
        "$SCRATCH/s3" >"$SCRATCH/s3s.log" 2>&1 &
    pids+=($!)
    mkdir -p "$SCRATCH/redis"
    "$REDIS" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$SCRATCH/redis" \
        >"$SCRATCH/redis.log" 2>&1 &
    pids+=($!)
    for port in "$S3_PORT" "$REDIS_PORT"; do
        for _ in $(seq 1 500); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.02; done
    done
}

# A fresh node B (an empty data directory) on store URL $1.
start_b() {
    rm -rf "$SCRATCH/b"
    "$TC" --data-dir "$SCRATCH/b" serve --listen "127.0.0.1:$B_PORT" --shared "$1" 2>>"$SCRATCH/b.log" &
    B_PID=$!
    pids+=($B_PID)
    wait_port "http://127.0.0.1:$B_PORT/healthz"
}
stop_b() { kill "$B_PID"; wait "$B_PID" 2>/dev/null || true; }
pct() { sort -g "$1" | awk -v p="$2" '{v[NR] = $1} END {i = int((p * NR + 99) / 100); if (i < 1) i = 1; printf "%.2f", v[i] * 1000}'; }

# Node A uploads the blob and writes it back to store URL $1; then fresh nodes B read it.
run_store() { # NAME URL GOAL_MS (the first range's p50 goal on this store)
    local name=$1 url=$2 goal_ms=$3 size=$((MIB << 20))
    rm -rf "$SCRATCH/a"
    TIERCACHE_WRITE_TOKEN="$WRITE_TOKEN" "$TC" --data-dir "$SCRATCH/a" serve --listen "127.0.0.1:$A_PORT" \
        --shared "$url" 2>"$SCRATCH/a.log" &
    local a_pid=$!
    pids+=($a_pid)
    wait_port "http://127.0.0.1:$A_PORT/healthz"
    curl -fsS -o /dev/null -H 'Expect:' -H "Authorization: Bearer $WRITE_TOKEN" -T "$SCRATCH/blob" \
        "http://127.0.0.1:$A_PORT/blobs/sha256:$HEX"
    local done_line='^tiercache_shared_write_backs_total{result="done"} 1'
    for _ in $(seq 1 3000); do
        curl -fs "http://127.0.0.1:$A_PORT/metrics" | grep -q "$done_line" && break
        sleep 0.05
    done
    curl -fs "http://127.0.0.1:$A_PORT/metrics" | grep -q "$done_line" || die "node A did not write back (see $SCRATCH/a.log)"
    kill "$a_pid"
    log "$name: node A wrote back the blob"

    log "$name: 1. first 4 KiB range, $SAMPLES fresh nodes; plain OpenDAL 4 KiB and one-chunk ranges"
    : >"$SCRATCH/lat"
    for _ in $(seq 1 "$SAMPLES"); do
        start_b "$url"
        local off=$(( ($(shuf -i 0-1000000000 -n 1) * 4096) % (size - 4096) ))
        local out
        out=$(curl -fs -o "$SCRATCH/range" -w '%{http_code} %{time_total}' -H "Range: bytes=$off-$((off + 4095))" \
            "http://127.0.0.1:$B_PORT/blobs/sha256:$HEX")
        [ "${out%% *}" = 206 ] || die "range read answered ${out%% *}"
        cmp -s "$SCRATCH/range" <(tail -c +$((off + 1)) "$SCRATCH/blob" | head -c 4096) || die "wrong bytes at $off"
        echo "${out#* }" >>"$SCRATCH/lat"
        stop_b
    done
    "$PLAIN" "$url" "blobs/sha256/$HEX" "$SAMPLES" 4096 >"$SCRATCH/plain4k"
    "$PLAIN" "$url" "blobs/sha256/$HEX" "$SAMPLES" $((1 << 20)) >"$SCRATCH/plain1m"

    log "$name: 2. full read, $REPS fresh nodes, and $REPS plain OpenDAL reads"
    : >"$SCRATCH/full"
    for _ in $(seq 1 "$REPS"); do
        start_b "$url"
        curl -fs -o /dev/null -w '%{size_download} %{time_total}\n' "http://127.0.0.1:$B_PORT/blobs/sha256:$HEX" >>"$SCRATCH/full"
        stop_b
    done
    "$PLAIN" "$url" "blobs/sha256/$HEX" "$REPS" >"$SCRATCH/plain"
    local tc_bps plain_bps
    tc_bps=$(awk '{print $1 / $2}' "$SCRATCH/full" | median)
    plain_bps=$(awk '{print $1 / $2}' "$SCRATCH/plain" | median)
    results+=("$name, $MIB MiB blob:
  first 4 KiB range on a fresh node: p50 $(pct "$SCRATCH/lat" 50) ms, p99 $(pct "$SCRATCH/lat" 99) ms over $SAMPLES samples (goal <= $goal_ms ms)
    plain OpenDAL, new Operator each: 4 KiB range p50 $(pct "$SCRATCH/plain4k" 50) ms p99 $(pct "$SCRATCH/plain4k" 99) ms; 1 MiB range (one chunk) p50 $(pct "$SCRATCH/plain1m" 50) ms p99 $(pct "$SCRATCH/plain1m" 99) ms
  full read: tiercache $(calc '%.0f' "$tc_bps / 1048576") MiB/s, plain OpenDAL $(calc '%.0f' "$plain_bps / 1048576") MiB/s, ratio $(calc '%.2f' "$tc_bps / $plain_bps") (goal >= 0.9)")
}

log "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); $(background_load)"
head -c $((MIB << 20)) /dev/urandom >"$SCRATCH/blob"
HEX=$(sha256sum "$SCRATCH/blob" | cut -d' ' -f1)
start_stores
results=()
run_store "S3 (s3s-fs $("$S3S" --version 2>/dev/null | awk '{print $NF}'))" "s3://bench/shared?endpoint=http://127.0.0.1:$S3_PORT&region=us-east-1" 10
run_store "Redis ($("$REDIS" --version | awk '{print $3}'))" "redis://127.0.0.1:$REDIS_PORT/0" 2

echo
echo "shared tier on loopback, $(nproc) CPUs, $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
for r in "${results[@]}"; do echo "$r"; done
