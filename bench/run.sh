#!/usr/bin/env bash
# tiercache benchmark suite: tiercache against nginx (the peer), the source, and raw hashing.
#
#   bash bench/run.sh                 # full sizes (about 5 minutes on 2 cores, ~4 GiB of scratch disk)
#   BENCH_BIG_MIB=64 BENCH_SMALL_COUNT=200 BENCH_WRK_SECONDS=2 BENCH_REPS=3 bash bench/run.sh   # quick
#
# What it measures (see BENCHMARKS.md for the figures and what limits each):
#   1. disk-tier hit, one big blob: curl download throughput from GET /blobs/sha256:<hex>, against
#      nginx serving the same file (sendfile). Median of BENCH_REPS. Goal: >= 0.8x nginx.
#   2. disk-tier hit, BENCH_SMALL_COUNT small blobs: wrk requests/s cycling through all of them,
#      against nginx serving the same files. Median of BENCH_WRK_RUNS. Goal: >= 0.7x nginx.
#   3. cold miss of the big blob through a namespace whose source is the nginx server, with a fresh
#      data directory each repetition; against max(curl straight from nginx, single-core SHA-256 of
#      the same number of bytes). Goal: ratio <= 1.2. MD5 speed is reported for context.
#   4. BENCH_HERD concurrent cold reads of one key: exactly one GET must reach the source.
#
# Needs: cargo, curl, nginx, wrk (nginx-light and wrk are apt-get installed if missing, as root).
# Everything runs on 127.0.0.1 in a scratch directory under ${TMPDIR:-/tmp}, removed on exit
# (BENCH_KEEP=1 keeps it). No system nginx configuration, log or pid path is touched.
set -euo pipefail

BIG_MIB=${BENCH_BIG_MIB:-1024}            # size of the big blob (tests 1 and 3)
SMALL_COUNT=${BENCH_SMALL_COUNT:-1000}    # number of small blobs (test 2)
SMALL_KIB=${BENCH_SMALL_KIB:-4}           # size of each small blob
WRK_SECONDS=${BENCH_WRK_SECONDS:-10}      # duration of each measured wrk run
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_CONNS=${BENCH_WRK_CONNS:-64}
WRK_RUNS=${BENCH_WRK_RUNS:-3}             # measured wrk runs per server (median reported)
REPS=${BENCH_REPS:-5}                     # repetitions of the big downloads and cold misses
HERD=${BENCH_HERD:-64}                    # concurrent cold readers (test 4)
HERD_MIB=${BENCH_HERD_MIB:-64}            # size of the object they read
FIRST_HITS=${BENCH_FIRST_HITS:-8}         # concurrent first reads of a just-fetched entry (context)
NGINX_PORT_BASE=${BENCH_NGINX_PORT:-18480}
TC_PORT_BASE=${BENCH_TIERCACHE_PORT:-18490}
WRITE_TOKEN=bench-write-token-0123456789  # the uploads below need a write token
KEEP=${BENCH_KEEP:-0}

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- tools ---------------------------------------------------------------------------------------
need_web_tools
command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust, e.g. from https://rustup.rs)"
for t in awk sha256sum split sort head find; do command -v "$t" >/dev/null 2>&1 || die "$t not found"; done

# --- machine -------------------------------------------------------------------------------------
echo "tiercache benchmarks — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
machine_lines
web_tools_line
echo "sizes   : big ${BIG_MIB} MiB x${REPS}, ${SMALL_COUNT} x ${SMALL_KIB} KiB, wrk -t${WRK_THREADS} -c${WRK_CONNS} -d${WRK_SECONDS}s x${WRK_RUNS}, herd ${HERD} x ${HERD_MIB} MiB"
echo "note    : load generator (curl/wrk), nginx and tiercache all share these $(nproc) CPUs"
echo "before  : $(background_load)"
echo

# --- build ---------------------------------------------------------------------------------------
log "building (cargo build --release)"
cargo build --release -p tiercache
cargo build --release -p tiercache-core --example sha256_speed
find_release tiercache examples/sha256_speed
built_line
echo

# --- scratch, processes, cleanup -----------------------------------------------------------------
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/tiercache-bench.XXXXXX")
NGINX_PID=""
TC_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in $TC_PID $NGINX_PID; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ]; then
        log "kept $SCRATCH"
    else
        rm -rf "$SCRATCH"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Private copies, so a concurrent rebuild of target/ cannot change the binaries mid-run.
mkdir -p "$SCRATCH/bin"
cp "$TARGET/release/tiercache" "$TARGET/release/examples/sha256_speed" "$SCRATCH/bin/"
TC="$SCRATCH/bin/tiercache"
SHA="$SCRATCH/bin/sha256_speed"


pick_ports

# --- test data -----------------------------------------------------------------------------------
WWW="$SCRATCH/www"
mkdir -p "$WWW/small"
log "generating a ${BIG_MIB} MiB file and ${SMALL_COUNT} x ${SMALL_KIB} KiB files"
echo ok >"$WWW/ok"
head -c $((BIG_MIB * 1048576)) /dev/urandom >"$WWW/big.bin"
BIG_BYTES=$((BIG_MIB * 1048576))
BIG_HEX=$(sha256sum "$WWW/big.bin" | cut -d' ' -f1)
head -c $((SMALL_COUNT * SMALL_KIB * 1024)) /dev/urandom | split -b $((SMALL_KIB * 1024)) -d -a 7 - "$WWW/small/s"
(cd "$WWW/small" && find . -type f -name 's*' | sort | xargs sha256sum) >"$SCRATCH/small.sha256"
[ "$(wc -l <"$SCRATCH/small.sha256")" = "$SMALL_COUNT" ] || die "expected $SMALL_COUNT small files"
head -c $((HERD_MIB * 1048576)) /dev/urandom >"$WWW/herd.bin"
HERD_BYTES=$((HERD_MIB * 1048576))
HERD_HEX=$(sha256sum "$WWW/herd.bin" | cut -d' ' -f1)

# --- nginx ---------------------------------------------------------------------------------------
NG="$SCRATCH/nginx"
start_nginx "$WWW" "$NGINX_PORT" "$NG"

# --- tiercache -----------------------------------------------------------------------------------
tc_start() { # DATA_DIR
    TIERCACHE_WRITE_TOKEN="$WRITE_TOKEN" "$TC" --data-dir "$1" serve --listen "127.0.0.1:$TC_PORT" \
        >>"$SCRATCH/tiercache.log" 2>&1 &
    TC_PID=$!
    wait_http "$TC_URL/healthz" || { tail -20 "$SCRATCH/tiercache.log" >&2; die "tiercache did not start"; }
}
tc_stop() {
    if [ -n "$TC_PID" ]; then
        kill "$TC_PID" 2>/dev/null || true
        wait "$TC_PID" 2>/dev/null || true
        TC_PID=""
    fi
}
fetches_ok() {
    curl -fsS "$TC_URL/metrics" | awk '/^tiercache_source_fetches_total\{/ && /result="ok"/ {s += $NF} END {print s + 0}'
}
log "starting tiercache on $TC_URL"
tc_start "$SCRATCH/data"

ROWS=()
row() { ROWS+=("$(printf '%-44s|%16s|%16s|%8s|%8s|%s' "$@")"); }
verdict() { awk -v r="$1" -v op="$2" -v g="$3" 'BEGIN {ok = (op == ">=") ? r >= g : r <= g; print ok ? "PASS" : "FAIL"}'; }

# --- 1. disk-tier hit, big blob ------------------------------------------------------------------
log "1. PUT the ${BIG_MIB} MiB blob"
out=$(curl -sS -o /dev/null -H 'Expect:' -H "Authorization: Bearer $WRITE_TOKEN" -T "$WWW/big.bin" -w '%{http_code} %{time_total}' "$TC_URL/blobs/sha256:$BIG_HEX")
read -r code put_s <<<"$out"
[ "$code" = 201 ] || die "PUT of the big blob answered $code"
PUT_GBS=$(calc '%.2f' "$BIG_BYTES / $put_s / 1e9")
wait_idle "$TC_PID" # the server computes the new blob's MD5 in the background

download() { # URL HEADERS_FILE -> seconds; checks status and size
    local out code size secs
    out=$(curl -sS -o /dev/null -D "$2" -w '%{http_code} %{size_download} %{time_total}' "$1")
    read -r code size secs <<<"$out"
    [ "$code" = 200 ] && [ "$size" = "$3" ] || die "GET $1: status $code, $size bytes (expected 200, $3 bytes)"
    echo "$secs"
}
log "1. downloading it ${REPS}x from each (interleaved, after one warm-up each)"
download "$TC_URL/blobs/sha256:$BIG_HEX" "$SCRATCH/h" "$BIG_BYTES" >/dev/null
grep -qi '^x-tiercache-tier: disk' "$SCRATCH/h" || die "big blob was not served from the disk tier"
[ "$(curl -fsS "$TC_URL/blobs/sha256:$BIG_HEX" | sha256sum | cut -d' ' -f1)" = "$BIG_HEX" ] ||
    die "the big blob's bytes do not match its digest"
download "$NG_URL/big.bin" "$SCRATCH/h" "$BIG_BYTES" >/dev/null
: >"$SCRATCH/t1.tc"
: >"$SCRATCH/t1.ng"
for ((i = 0; i < REPS; i++)); do
    download "$TC_URL/blobs/sha256:$BIG_HEX" "$SCRATCH/h" "$BIG_BYTES" >>"$SCRATCH/t1.tc"
    download "$NG_URL/big.bin" "$SCRATCH/h" "$BIG_BYTES" >>"$SCRATCH/t1.ng"
done
T1_TC=$(median <"$SCRATCH/t1.tc")
T1_NG=$(median <"$SCRATCH/t1.ng")
G1_TC=$(calc '%.2f' "$BIG_BYTES / $T1_TC / 1e9")
G1_NG=$(calc '%.2f' "$BIG_BYTES / $T1_NG / 1e9")
R1=$(calc '%.2f' "$T1_NG / $T1_TC")
row "1. disk hit, ${BIG_MIB} MiB blob (GB/s, median)" "$G1_TC" "$G1_NG (nginx)" "$R1" ">= 0.80" "$(verdict "$R1" '>=' 0.8)"
log "   tiercache $(tr '\n' ' ' <"$SCRATCH/t1.tc")s; nginx $(tr '\n' ' ' <"$SCRATCH/t1.ng")s"

quiet_check

# --- 2. disk-tier hit, small blobs ---------------------------------------------------------------
log "2. PUT ${SMALL_COUNT} x ${SMALL_KIB} KiB blobs"
: >"$SCRATCH/put.cfg"
while read -r hex name; do
    printf 'url = "%s/blobs/sha256:%s"\nupload-file = "%s"\noutput = "/dev/null"\n' \
        "$TC_URL" "$hex" "$WWW/small/${name#./}" >>"$SCRATCH/put.cfg"
done <"$SCRATCH/small.sha256"
t0=$(date +%s.%N)
codes=$(curl -sS -H 'Expect:' -H "Authorization: Bearer $WRITE_TOKEN" -K "$SCRATCH/put.cfg" -w '%{http_code}\n' | sort | uniq -c | awk '{printf "%s x%s ", $2, $1}')
t1=$(date +%s.%N)
[ "$codes" = "201 x$SMALL_COUNT " ] || die "small PUTs answered: $codes"
PUT_SMALL_RPS=$(calc '%.0f' "$SMALL_COUNT / ($t1 - $t0)")
wait_idle "$TC_PID"

lua_script() { # FILE hex|name PREFIX: a wrk script cycling through every small blob's path
    {
        echo 'local paths = {'
        while read -r hex name; do
            if [ "$2" = hex ]; then echo "  \"$3$hex\","; else echo "  \"$3${name#./}\","; fi
        done <"$SCRATCH/small.sha256"
        echo '}'
        echo 'local n, i = #paths, 0'
        echo 'function request()'
        echo '  i = i % n + 1'
        echo '  return wrk.format("GET", paths[i])'
        echo 'end'
    } >"$1"
}
lua_script "$SCRATCH/tc.lua" hex /blobs/sha256:
lua_script "$SCRATCH/ng.lua" name /small/
run_wrk() { # URL LUA SECONDS OUT -> requests/s; fails on errors or non-2xx answers
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$3"s --latency -s "$2" "$1" >"$4" 2>&1 || die "wrk failed: $(cat "$4")"
    if grep -q -e 'Non-2xx' -e 'Socket errors' "$4"; then
        log "warning: $(grep -e 'Non-2xx' -e 'Socket errors' "$4" | tr -s ' ')"
    fi
    awk '/^Requests\/sec:/ {print $2}' "$4"
}
log "2. wrk warm-up, then ${WRK_RUNS} x ${WRK_SECONDS}s against each (interleaved)"
curl -fsS -o /dev/null "$TC_URL/blobs/sha256:$(head -1 "$SCRATCH/small.sha256" | cut -d' ' -f1)"
run_wrk "$TC_URL" "$SCRATCH/tc.lua" 2 "$SCRATCH/wrk.warm" >/dev/null
run_wrk "$NG_URL" "$SCRATCH/ng.lua" 2 "$SCRATCH/wrk.warm" >/dev/null
: >"$SCRATCH/r2.tc"
: >"$SCRATCH/r2.ng"
for ((i = 0; i < WRK_RUNS; i++)); do
    wait_idle "$TC_PID"
    run_wrk "$TC_URL" "$SCRATCH/tc.lua" "$WRK_SECONDS" "$SCRATCH/wrk.tc.$i" >>"$SCRATCH/r2.tc"
    run_wrk "$NG_URL" "$SCRATCH/ng.lua" "$WRK_SECONDS" "$SCRATCH/wrk.ng.$i" >>"$SCRATCH/r2.ng"
done
Q2_TC=$(median <"$SCRATCH/r2.tc")
Q2_NG=$(median <"$SCRATCH/r2.ng")
R2=$(calc '%.2f' "$Q2_TC / $Q2_NG")
p50() { awk '/^ +50%/ {print $2}' "$1"; }
p99() { awk '/^ +99%/ {print $2}' "$1"; }
row "2. disk hit, ${SMALL_KIB} KiB blobs, ${WRK_CONNS} conns (req/s)" "$(calc '%.0f' "$Q2_TC")" "$(calc '%.0f' "$Q2_NG") (nginx)" "$R2" ">= 0.70" "$(verdict "$R2" '>=' 0.7)"
log "   tiercache $(tr '\n' ' ' <"$SCRATCH/r2.tc")req/s (p50 $(p50 "$SCRATCH/wrk.tc.0"), p99 $(p99 "$SCRATCH/wrk.tc.0"));" \
    "nginx $(tr '\n' ' ' <"$SCRATCH/r2.ng")req/s (p50 $(p50 "$SCRATCH/wrk.ng.0"), p99 $(p99 "$SCRATCH/wrk.ng.0"))"

wait_idle "$TC_PID"
quiet_check

# --- 3. cold miss of the big blob ----------------------------------------------------------------
log "3. single-core hashing speed over ${BIG_MIB} MiB (${REPS}x)"
: >"$SCRATCH/sha.out"
for ((i = 0; i < REPS; i++)); do "$SHA" "$BIG_MIB" >>"$SCRATCH/sha.out" 2>/dev/null; done
SHA_S=$(awk '$1 == "sha256" {print $4}' "$SCRATCH/sha.out" | median)
MD5_S=$(awk '$1 == "md5" {print $4}' "$SCRATCH/sha.out" | median)
SHA_GBS=$(calc '%.2f' "$BIG_BYTES / $SHA_S / 1e9")
MD5_GBS=$(calc '%.2f' "$BIG_BYTES / $MD5_S / 1e9")

log "3. cold reads of the ${BIG_MIB} MiB file through a namespace (fresh data directory each time)"
: >"$SCRATCH/t3.tc"
for ((i = 0; i < REPS; i++)); do
    tc_stop
    rm -rf "$SCRATCH/data" "$SCRATCH/cold"
    "$TC" --data-dir "$SCRATCH/cold" ns create bench --source "$NG_URL/" >/dev/null
    tc_start "$SCRATCH/cold"
    download "$TC_URL/ns/bench/big.bin" "$SCRATCH/h" "$BIG_BYTES" >>"$SCRATCH/t3.tc"
    grep -qi '^x-tiercache-tier: source' "$SCRATCH/h" || die "cold read was not served from the source"
done
T3_TC=$(median <"$SCRATCH/t3.tc")
T3_PEER=$(awk -v a="$T1_NG" -v b="$SHA_S" 'BEGIN {print (a > b) ? a : b}')
R3=$(calc '%.2f' "$T3_TC / $T3_PEER")
row "3. cold miss, ${BIG_MIB} MiB via ns (s, median)" "$(calc '%.3f' "$T3_TC")" "$(calc '%.3f' "$T3_PEER") (max)" "$R3" "<= 1.20" "$(verdict "$R3" '<=' 1.2)"
row "   3a. same file straight from nginx (s)" "" "$(calc '%.3f' "$T1_NG")" "" "" ""
row "   3b. SHA-256, one core (s; GB/s)" "" "$(calc '%.3f' "$SHA_S"); $SHA_GBS" "" "" ""
row "   3c. MD5, one core (s; GB/s), context" "" "$(calc '%.3f' "$MD5_S"); $MD5_GBS" "" "" ""
log "   cold $(tr '\n' ' ' <"$SCRATCH/t3.tc")s"

# Informational: one more cold fetch, then FIRST_HITS concurrent HEADs as soon as the entry is in
# the index (its MD5 is then still being computed in the background), then a GET once idle.
tc_stop
rm -rf "$SCRATCH/cold"
"$TC" --data-dir "$SCRATCH/cold" ns create bench --source "$NG_URL/" >/dev/null
tc_start "$SCRATCH/cold"
download "$TC_URL/ns/bench/big.bin" "$SCRATCH/h" "$BIG_BYTES" >/dev/null
for ((i = 0; i < 600; i++)); do
    "$TC" --data-dir "$SCRATCH/cold" stats --json 2>/dev/null | grep -q '"n_entries": *1\b' && break
    sleep 0.05
done
cpu0=$(awk '{print $14 + $15}' "/proc/$TC_PID/stat")
(
    for ((i = 0; i < FIRST_HITS; i++)); do
        curl -sS -I -o "$SCRATCH/first.$i.h" -w '%{time_total}\n' "$TC_URL/ns/bench/big.bin" &
    done
    wait
) >"$SCRATCH/first.t"
cpu1=$(awk '{print $14 + $15}' "/proc/$TC_PID/stat")
FIRST_MAX=$(sort -g "$SCRATCH/first.t" | tail -1)
FIRST_CPU=$(calc '%.1f' "($cpu1 - $cpu0) / $(getconf CLK_TCK)")
FIRST_DISK=$(cat "$SCRATCH"/first.*.h | grep -ci '^x-tiercache-tier: disk' || true)
wait_idle "$TC_PID"
T3_HEAD=$(curl -sS -I -o /dev/null -w '%{time_total}' "$TC_URL/ns/bench/big.bin")
T3_WARM=$(download "$TC_URL/ns/bench/big.bin" "$SCRATCH/h" "$BIG_BYTES")
grep -qi '^x-tiercache-tier: disk' "$SCRATCH/h" || die "warm entry read was not served from the disk tier"
[ "$(curl -fsS "$TC_URL/ns/bench/big.bin" | sha256sum | cut -d' ' -f1)" = "$BIG_HEX" ] ||
    die "the fetched entry's bytes differ from the source's"
quiet_check

# --- 4. concurrent cold reads of one key ---------------------------------------------------------
log "4. ${HERD} concurrent cold reads of a ${HERD_MIB} MiB key"
wait_idle "$TC_PID"
: >"$SCRATCH/herd.cfg"
for ((i = 0; i < HERD; i++)); do
    out=/dev/null
    [ "$i" = 0 ] && out="$SCRATCH/herd.body"
    printf 'url = "%s/ns/bench/herd.bin"\noutput = "%s"\n' "$TC_URL" "$out" >>"$SCRATCH/herd.cfg"
done
before=$(fetches_ok)
ng_before=$(grep -c '"GET /herd.bin ' "$NG/access.log" || true)
t0=$(date +%s.%N)
curl -sS --no-progress-meter --parallel --parallel-immediate --parallel-max "$HERD" -K "$SCRATCH/herd.cfg" \
    -w '%{http_code} %{size_download}\n' >"$SCRATCH/herd.out" 2>"$SCRATCH/herd.err" || true
t1=$(date +%s.%N)
after=$(fetches_ok)
ng_gets=$(( $(grep -c '"GET /herd.bin ' "$NG/access.log" || true) - ng_before ))
n_ok=$(grep -c "^200 $HERD_BYTES\$" "$SCRATCH/herd.out" || true)
body_ok=no
[ -f "$SCRATCH/herd.body" ] && [ "$(sha256sum "$SCRATCH/herd.body" | cut -d' ' -f1)" = "$HERD_HEX" ] && body_ok=yes
herd_verdict=FAIL
[ "$ng_gets" = 1 ] && [ $((after - before)) = 1 ] && [ "$n_ok" = "$HERD" ] && [ "$body_ok" = yes ] && herd_verdict=PASS
row "4. ${HERD} concurrent cold reads: source GETs" "$ng_gets (fetches +$((after - before)))" "1" "" "== 1" "$herd_verdict"
[ ! -s "$SCRATCH/herd.err" ] || log "   curl said: $(sort "$SCRATCH/herd.err" | uniq -c | head -5)"
log "   ${n_ok}/${HERD} complete 200 answers, body digest ok: $body_ok, $(calc '%.2f' "$t1 - $t0") s in all"

# --- report --------------------------------------------------------------------------------------
wait_idle "$TC_PID"
quiet_check
echo
printf '%-44s|%16s|%16s|%8s|%8s|%s\n' "test" "tiercache" "peer" "ratio" "goal" "verdict"
printf '%s\n' "--------------------------------------------+----------------+----------------+--------+--------+--------"
printf '%s\n' "${ROWS[@]}"
echo
echo "context (no goal):"
ctx() { printf '  %-52s %s\n' "$1" "$2"; }
ctx "PUT of the ${BIG_MIB} MiB blob" "$(calc '%.3f' "$put_s") s = $PUT_GBS GB/s (receive, hash, write, fsync)"
ctx "PUT of ${SMALL_COUNT} x ${SMALL_KIB} KiB blobs on one connection" "$PUT_SMALL_RPS blobs/s"
ctx "${FIRST_HITS} concurrent HEADs of a just-stored ${BIG_MIB} MiB entry" "slowest $(calc '%.3f' "$FIRST_MAX") s; tiercache used $FIRST_CPU CPU-s; $FIRST_DISK of ${FIRST_HITS} from the disk tier"
ctx "the same HEAD once the server is idle" "$(calc '%.3f' "$T3_HEAD") s (a GET of it: $(calc '%.3f' "$T3_WARM") s)"
ctx "${HERD} concurrent cold reads of ${HERD_MIB} MiB (test 4)" "$(calc '%.2f' "$t1 - $t0") s for all, ${n_ok}/${HERD} complete, first body's digest ok: $body_ok"
echo "other work on the machine between tests: at most ${OTHER_MAX}% of CPU$( [ "$OTHER_MAX" -le 10 ] || echo '  WARNING: figures may be skewed')"
echo "GB = 10^9 bytes; ratios: 1 and 2 tiercache/nginx throughput, 3 tiercache time / max(nginx time, SHA-256 time)."
