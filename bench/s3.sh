#!/usr/bin/env bash
# The S3 front door against s3s-fs 0.14.1, in the same run, with the same client (issue 18).
#
#   bash bench/s3.sh                                      # 1 GiB x5, 10 000 x 4 KiB at 32 x5
#   BENCH_S3_BIG_MIB=256 BENCH_S3_SMALL_COUNT=2000 BENCH_S3_RUNS=3 bash bench/s3.sh   # quick
#   BENCH_S3_SERVER=s3s-fs bash bench/s3.sh               # under test: a second s3s-fs (a check of
#                                                         # the script itself; ratios near 1.0x)
#   BENCH_S3_ENDPOINT=http://127.0.0.1:9000 BENCH_S3_ACCESS_KEY=… BENCH_S3_SECRET_KEY=… \
#       bash bench/s3.sh                                  # under test: a server already running
#
# What it measures, on two servers side by side: the peer, s3s-fs 0.14.1 (a complete S3 server
# on the s3s crate, storing plain files), and the server under test: by default `tiercache serve
# --s3-listen` on a fresh data directory, credentials from TIERCACHE_S3_ACCESS_KEY /
# TIERCACHE_S3_SECRET_KEY; the script stops with a clear error if this build of tiercache has no
# `--s3-listen` yet. Both on 127.0.0.1, data under /var/tmp (disk, not tmpfs). The client is the
# same for both: crates/tiers/examples/s3_load.rs (OpenDAL's S3 service, path style,
# `UNSIGNED-PAYLOAD`, streaming), so the client hashes nothing and the time is the server's:
#   1. PUT of a BENCH_S3_BIG_MIB MiB object in one PutObject, then GET of it in one streaming
#      GetObject (bytes discarded; the object was just written, so both servers read it from the
#      page cache); MB/s (10^6 bytes per second), median of BENCH_S3_RUNS;
#   2. BENCH_S3_SMALL_COUNT PutObjects of 4 KiB (distinct contents, new keys each run) with
#      BENCH_S3_CONCURRENCY (32) in flight, then a GetObject of each (bytes checked); operations
#      per second, median of BENCH_S3_RUNS.
# Which server goes first rotates between runs. Before measuring, one object is put and read back
# with curl (--aws-sigv4) and compared, on each server. Prints each run, then the medians, the
# ratios under test / s3s-fs, and the ratios to seed 001's published 25 MB/s up / 35 MB/s down.
# Goals: >= 1.0x s3s-fs on every line; >= 20x seed 001 (500 MB/s up, 700 MB/s down).
#
# Needs: cargo, curl (7.75 or newer, for --aws-sigv4), s3s-fs (on PATH or in
# /var/tmp/tiercache-tools/bin: `bash .ci/run` installs it, or `cargo install s3s-fs --version
# 0.14.1 --features binary --locked`). Free disk under /var/tmp: about 2 x BENCH_S3_BIG_MIB MiB plus
# 2 x RUNS x SMALL_COUNT small files. Runs in a scratch directory, removed on exit (BENCH_KEEP=1
# keeps it). The load generator shares the machine's CPUs with both servers: on 2 CPUs, the
# figures measure the pair, and a busy machine makes them noisy (the header says how busy it was).
set -euo pipefail

BIG_MIB=${BENCH_S3_BIG_MIB:-1024}          # size of the big object
SMALL_COUNT=${BENCH_S3_SMALL_COUNT:-10000} # small objects per run and server
SMALL_KIB=${BENCH_S3_SMALL_KIB:-4}
CONCURRENCY=${BENCH_S3_CONCURRENCY:-32}
RUNS=${BENCH_S3_RUNS:-5}
SERVER=${BENCH_S3_SERVER:-tiercache}        # the server under test: tiercache or s3s-fs
ENDPOINT=${BENCH_S3_ENDPOINT:-}             # or one already running (then SERVER is not started)
BUCKET=${BENCH_S3_BUCKET:-bench}
PEER_PORT_BASE=${BENCH_S3_PEER_PORT:-18620}
TEST_PORT_BASE=${BENCH_S3_TEST_PORT:-18630}
KEEP=${BENCH_KEEP:-0}
SEED_UP=25   # seed 001's published MB/s
SEED_DOWN=35
PEER_KEY=bench-access-key PEER_SECRET=bench-secret-key-0123456789

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- tools and settings --------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust, e.g. from https://rustup.rs)"
for t in curl awk sort cmp head; do command -v "$t" >/dev/null 2>&1 || die "$t not found"; done
curl --help all 2>/dev/null | grep -q -- --aws-sigv4 || die "this curl has no --aws-sigv4 (7.75 or newer needed)"
S3S=${TIERCACHE_S3_SERVER:-$(command -v s3s-fs 2>/dev/null || true)}
[ -n "$S3S" ] || { [ -x /var/tmp/tiercache-tools/bin/s3s-fs ] && S3S=/var/tmp/tiercache-tools/bin/s3s-fs; } || true
[ -n "$S3S" ] || die "s3s-fs not found: run 'bash .ci/run' once, or cargo install s3s-fs --version 0.14.1 --features binary --locked"
[ "$BIG_MIB" -ge 1 ] && [ "$SMALL_COUNT" -ge 1 ] && [ "$RUNS" -ge 1 ] && [ "$CONCURRENCY" -ge 1 ] ||
    die "BENCH_S3_BIG_MIB, BENCH_S3_SMALL_COUNT, BENCH_S3_RUNS and BENCH_S3_CONCURRENCY must be >= 1"
if [ -n "$ENDPOINT" ]; then
    SERVER=endpoint
    TEST_KEY=${BENCH_S3_ACCESS_KEY:-${AWS_ACCESS_KEY_ID:-}}
    TEST_SECRET=${BENCH_S3_SECRET_KEY:-${AWS_SECRET_ACCESS_KEY:-}}
    [ -n "$TEST_KEY" ] && [ -n "$TEST_SECRET" ] || die "BENCH_S3_ENDPOINT needs BENCH_S3_ACCESS_KEY and BENCH_S3_SECRET_KEY"
else
    case $SERVER in
    tiercache | s3s-fs) ;;
    *) die "BENCH_S3_SERVER must be tiercache or s3s-fs (got '$SERVER')" ;;
    esac
    TEST_KEY=bench-tiercache-key TEST_SECRET=bench-tiercache-secret-0123456789
fi
BIG_BYTES=$((BIG_MIB * 1024 * 1024))

# --- build ---------------------------------------------------------------------------------------
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tiercache-target}
log "building (release): the s3_load client$([ "$SERVER" != tiercache ] || echo ' and tiercache')"
# Two builds: `--example` alone would select only the example, leaving an old `tiercache` in place.
[ "$SERVER" != tiercache ] || cargo build --release --locked -q -p tiercache --bin tiercache
cargo build --release --locked -q -p tiercache-tiers --example s3_load
find_release examples/s3_load
[ "$SERVER" != tiercache ] || find_release tiercache examples/s3_load
if [ "$SERVER" = tiercache ] && ! "$TARGET/release/tiercache" serve --help 2>&1 | grep -q -- '--s3-listen'; then
    die "this tiercache has no 'serve --s3-listen' yet (the S3 front door of issue 18); measure a second s3s-fs with BENCH_S3_SERVER=s3s-fs, or a running server with BENCH_S3_ENDPOINT=…"
fi

# --- scratch, processes, cleanup -----------------------------------------------------------------
make_scratch s3
# Private copies, so a concurrent rebuild of the target directory cannot change a binary mid-run.
mkdir -p "$SCRATCH/bin"
cp "$TARGET/release/examples/s3_load" "$SCRATCH/bin/"
[ "$SERVER" != tiercache ] || cp "$TARGET/release/tiercache" "$SCRATCH/bin/"
LOAD=$SCRATCH/bin/s3_load

# --- servers -------------------------------------------------------------------------------------
start_s3s() { # DIR PORT KEY SECRET
    mkdir -p "$1/data"
    "$S3S" --host 127.0.0.1 --port "$2" --access-key "$3" --secret-key "$4" "$1/data" >"$1/log" 2>&1 &
    PIDS+=($!)
    wait_answer "http://127.0.0.1:$2/" || { tail -20 "$1/log" >&2; die "s3s-fs did not start on port $2"; }
}
PEER_PORT=$(pick_port "$PEER_PORT_BASE")
PEER_URL=http://127.0.0.1:$PEER_PORT
log "starting the peer, s3s-fs, on $PEER_URL"
start_s3s "$SCRATCH/peer" "$PEER_PORT" "$PEER_KEY" "$PEER_SECRET"
case $SERVER in
tiercache)
    TEST_PORT=$(pick_port "$TEST_PORT_BASE")
    [ "$TEST_PORT" != "$PEER_PORT" ] || TEST_PORT=$(pick_port $((PEER_PORT + 1)))
    HTTP_PORT=$(pick_port $((TEST_PORT + 1)))
    TEST_URL=http://127.0.0.1:$TEST_PORT
    log "starting tiercache serve --s3-listen on $TEST_URL"
    TIERCACHE_S3_ACCESS_KEY=$TEST_KEY TIERCACHE_S3_SECRET_KEY=$TEST_SECRET \
        TIERCACHE_WRITE_TOKEN=bench-write-token-0123456789 \
        "$SCRATCH/bin/tiercache" --data-dir "$SCRATCH/tiercache" serve --listen "127.0.0.1:$HTTP_PORT" \
        --s3-listen "127.0.0.1:$TEST_PORT" >"$SCRATCH/tiercache.log" 2>&1 &
    PIDS+=($!)
    wait_answer "$TEST_URL/" || { tail -20 "$SCRATCH/tiercache.log" >&2; die "tiercache did not answer on $TEST_URL"; }
    TEST_LABEL="tiercache serve --s3-listen"
    ;;
s3s-fs)
    TEST_PORT=$(pick_port "$TEST_PORT_BASE")
    [ "$TEST_PORT" != "$PEER_PORT" ] || TEST_PORT=$(pick_port $((PEER_PORT + 1)))
    TEST_URL=http://127.0.0.1:$TEST_PORT
    log "starting a second s3s-fs as the server under test on $TEST_URL"
    start_s3s "$SCRATCH/second" "$TEST_PORT" "$TEST_KEY" "$TEST_SECRET"
    TEST_LABEL="s3s-fs (a second one)"
    ;;
endpoint)
    TEST_URL=${ENDPOINT%/}
    wait_answer "$TEST_URL/" || die "nothing answers at $TEST_URL"
    TEST_LABEL="the server at $TEST_URL"
    ;;
esac

# --- clients -------------------------------------------------------------------------------------
declare -A URL=([peer]=$PEER_URL [test]=$TEST_URL)
declare -A KEY=([peer]=$PEER_KEY [test]=$TEST_KEY)
declare -A SECRET=([peer]=$PEER_SECRET [test]=$TEST_SECRET)
declare -A LABEL=([peer]="s3s-fs 0.14.1 (peer)" [test]=$TEST_LABEL)
# curl signing with SigV4 as server S; s3s-fs wants x-amz-content-sha256 on every request.
s3curl() { # S CURL-ARGS...
    local s=$1
    shift
    curl -sS --aws-sigv4 "aws:amz:us-east-1:s3" --user "${KEY[$s]}:${SECRET[$s]}" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}
load() { # S ARGS...
    local s=$1
    shift
    AWS_ACCESS_KEY_ID=${KEY[$s]} AWS_SECRET_ACCESS_KEY=${SECRET[$s]} \
        "$LOAD" "s3://$BUCKET?endpoint=${URL[$s]}&region=us-east-1" "$@"
}

for s in peer test; do
    code=$(s3curl "$s" -o "$SCRATCH/create.out" -w '%{http_code}' -X PUT "${URL[$s]}/$BUCKET")
    case $code in
    200) ;;
    409) grep -q -e BucketAlreadyOwnedByYou -e BucketAlreadyExists "$SCRATCH/create.out" ||
        die "${LABEL[$s]}: CreateBucket $BUCKET answered 409: $(cat "$SCRATCH/create.out")" ;;
    *) die "${LABEL[$s]}: CreateBucket $BUCKET answered $code: $(cat "$SCRATCH/create.out")" ;;
    esac
    # Correctness, once: a 1 MiB object put and read back with another client.
    head -c $((1024 * 1024)) /dev/urandom >"$SCRATCH/check.bin"
    code=$(s3curl "$s" -o /dev/null -w '%{http_code}' -T "$SCRATCH/check.bin" "${URL[$s]}/$BUCKET/check.bin")
    [ "$code" = 200 ] || die "${LABEL[$s]}: PUT of a 1 MiB object answered $code"
    s3curl "$s" -f -o "$SCRATCH/check.back" "${URL[$s]}/$BUCKET/check.bin" || die "${LABEL[$s]}: GET of the 1 MiB object failed"
    cmp -s "$SCRATCH/check.bin" "$SCRATCH/check.back" || die "${LABEL[$s]}: the 1 MiB object read back differs"
done

# --- header --------------------------------------------------------------------------------------
echo "tiercache S3 benchmark — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
machine_lines
built_line
echo "servers : under test: $TEST_LABEL; peer: $("$S3S" --version 2>&1 | head -1)"
echo "client  : crates/tiers/examples/s3_load.rs (OpenDAL S3, UNSIGNED-PAYLOAD), the same for both"
echo "sizes   : PUT and GET of ${BIG_MIB} MiB (one request each); ${SMALL_COUNT} x ${SMALL_KIB} KiB PUT then GET at ${CONCURRENCY} in flight; ${RUNS} runs, medians"
echo "note    : client and both servers share these $(nproc) CPUs"
echo "before  : $(background_load)"
echo

# --- measurements --------------------------------------------------------------------------------
for s in peer test; do for m in put get sput sget; do : >"$SCRATCH/r.$s.$m"; done; done
# Each load prints `bytes seconds` (big) or `ops seconds` (small): MB/s and ops/s from those.
measure() { # S RUN
    local s=$1 i=$2 out
    out=$(load "$s" put-big big.bin "$BIG_BYTES" "$i") || die "${LABEL[$s]}: put-big failed: $out"
    [ "${out%% *}" = "$BIG_BYTES" ] || die "${LABEL[$s]}: put-big wrote $out"
    awk '{printf "%.1f\n", $1 / $2 / 1e6}' <<<"$out" >>"$SCRATCH/r.$s.put"
    out=$(load "$s" get-big big.bin) || die "${LABEL[$s]}: get-big failed: $out"
    [ "${out%% *}" = "$BIG_BYTES" ] || die "${LABEL[$s]}: get-big read $out, expected $BIG_BYTES bytes"
    awk '{printf "%.1f\n", $1 / $2 / 1e6}' <<<"$out" >>"$SCRATCH/r.$s.get"
    out=$(load "$s" put-small "small/$i/" "$SMALL_COUNT" $((SMALL_KIB * 1024)) "$CONCURRENCY") ||
        die "${LABEL[$s]}: put-small failed: $out"
    awk '{printf "%.0f\n", $1 / $2}' <<<"$out" >>"$SCRATCH/r.$s.sput"
    out=$(load "$s" get-small "small/$i/" "$SMALL_COUNT" $((SMALL_KIB * 1024)) "$CONCURRENCY") ||
        die "${LABEL[$s]}: get-small failed: $out"
    awk '{printf "%.0f\n", $1 / $2}' <<<"$out" >>"$SCRATCH/r.$s.sget"
    printf 'run %d  %-32s PUT %8s MB/s  GET %8s MB/s  PUT %4d KiB %7s ops/s  GET %7s ops/s\n' "$((i + 1))" "${LABEL[$s]}" \
        "$(tail -1 "$SCRATCH/r.$s.put")" "$(tail -1 "$SCRATCH/r.$s.get")" "$SMALL_KIB" \
        "$(tail -1 "$SCRATCH/r.$s.sput")" "$(tail -1 "$SCRATCH/r.$s.sget")"
}
for ((i = 0; i < RUNS; i++)); do
    quiet_check
    if ((i % 2 == 0)); then order=(peer test); else order=(test peer); fi
    for s in "${order[@]}"; do measure "$s" "$i"; done
done

# --- results -------------------------------------------------------------------------------------
med() { median <"$SCRATCH/r.$1.$2"; }
echo
printf '%-30s %14s %14s %9s\n' "median of $RUNS" "s3s-fs (peer)" "under test" "ratio"
all_met=1
line() { # METRIC LABEL UNIT
    local p t r
    p=$(med peer "$1")
    t=$(med test "$1")
    r=$(calc '%.2f' "$t / $p")
    awk -v r="$r" 'BEGIN {exit !(r < 1.0)}' && all_met=0
    printf '%-30s %14s %14s %8sx\n' "$2 ($3)" "$p" "$t" "$r"
}
line put "PUT ${BIG_MIB} MiB" "MB/s"
line get "GET ${BIG_MIB} MiB" "MB/s"
line sput "PUT ${SMALL_KIB} KiB at ${CONCURRENCY}" "ops/s"
line sget "GET ${SMALL_KIB} KiB at ${CONCURRENCY}" "ops/s"
up=$(calc '%.1f' "$(med test put) / $SEED_UP")
down=$(calc '%.1f' "$(med test get) / $SEED_DOWN")
echo
echo "seed 001 (published ${SEED_UP} MB/s up, ${SEED_DOWN} MB/s down): under test ${up}x up, ${down}x down (goal >= 20x)"
echo "goal >= 1.0x s3s-fs on every line: $([ "$all_met" = 1 ] && echo met || echo 'NOT met')"
echo "goal >= 20x seed 001: $(awk -v u="$up" -v d="$down" 'BEGIN {print (u >= 20 && d >= 20) ? "met" : "NOT met"}')"
echo "after   : busiest sample of other work between measurements: ${OTHER_MAX}% of CPU$([ "$OTHER_MAX" -le 10 ] || echo '  WARNING: not a quiet machine; figures are noisy')"
