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
#   3. the cold path, BENCH_COLD_REPS rounds (default 3), page cache dropped before each cold read
#      when run as root: a cold read of the big file through a namespace whose source is the nginx
#      server (fresh data directory), against nginx proxy_cache + proxy_cache_lock in front of the
#      same nginx (empty cache). Goal: <= 1.0x nginx's time. Also the old ratio, against
#      max(curl straight from the origin, single-core SHA-256 of the same bytes): goal <= 1.2.
#   4. the second read, started as each cold read completes: >= 0.9x nginx proxy_cache's throughput.
#   5. warm reads of the same entry through both (context).
#   6. BENCH_HERD concurrent cold readers of one key, through both: source GETs (origin access log;
#      exactly one for tiercache) and the time for all.
#
# Needs: cargo, curl, nginx, wrk (nginx-light and wrk are apt-get installed if missing, as root).
# Everything runs on 127.0.0.1 in a scratch directory under ${TMPDIR:-/tmp}, removed on exit
# (BENCH_KEEP=1 keeps it). No system nginx configuration, log or pid path is touched.
set -euo pipefail

BIG_MIB=${BENCH_BIG_MIB:-1024}            # size of the big blob (tests 1, 3, 4 and 5)
SMALL_COUNT=${BENCH_SMALL_COUNT:-1000}    # number of small blobs (test 2)
SMALL_KIB=${BENCH_SMALL_KIB:-4}           # size of each small blob
WRK_SECONDS=${BENCH_WRK_SECONDS:-10}      # duration of each measured wrk run
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_CONNS=${BENCH_WRK_CONNS:-64}
WRK_RUNS=${BENCH_WRK_RUNS:-3}             # measured wrk runs per server (median reported)
REPS=${BENCH_REPS:-5}                     # repetitions of the big downloads and cold misses
HERD=${BENCH_HERD:-64}                    # concurrent cold readers (test 6)
HERD_MIB=${BENCH_HERD_MIB:-64}            # size of the object they read
FIRST_HITS=${BENCH_FIRST_HITS:-8}         # concurrent first reads of a just-fetched entry (context)
NGINX_PORT_BASE=${BENCH_NGINX_PORT:-18480}
TC_PORT_BASE=${BENCH_TIERCACHE_PORT:-18490}
WRITE_TOKEN=bench-write-token-0123456789  # the uploads below need a write token
KEEP=${BENCH_KEEP:-0}
SKIP_HITS=${BENCH_SKIP_HITS:-0}          # 1: only the cold path (tests 3 to 6)

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
    for pid in $TC_PID ${PX_PID:-} $NGINX_PID; do
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
log "starting tiercache on $TC_URL"
tc_start "$SCRATCH/data"

ROWS=()
row() { ROWS+=("$(printf '%-44s|%16s|%16s|%8s|%8s|%s' "$@")"); }
verdict() { awk -v r="$1" -v op="$2" -v g="$3" 'BEGIN {ok = (op == ">=") ? r >= g : r <= g; print ok ? "PASS" : "FAIL"}'; }

download() { # URL HEADERS_FILE -> seconds; checks status and size
    local out code size secs
    out=$(curl -sS -o /dev/null -D "$2" -w '%{http_code} %{size_download} %{time_total}' "$1")
    read -r code size secs <<<"$out"
    [ "$code" = 200 ] && [ "$size" = "$3" ] || die "GET $1: status $code, $size bytes (expected 200, $3 bytes)"
    echo "$secs"
}

if [ "$SKIP_HITS" != 1 ]; then
# --- 1. disk-tier hit, big blob ------------------------------------------------------------------
log "1. PUT the ${BIG_MIB} MiB blob"
out=$(curl -sS -o /dev/null -H 'Expect:' -H "Authorization: Bearer $WRITE_TOKEN" -T "$WWW/big.bin" -w '%{http_code} %{time_total}' "$TC_URL/blobs/sha256:$BIG_HEX")
read -r code put_s <<<"$out"
[ "$code" = 201 ] || die "PUT of the big blob answered $code"
PUT_GBS=$(calc '%.2f' "$BIG_BYTES / $put_s / 1e9")
wait_idle "$TC_PID" # the server computes the new blob's MD5 in the background

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
fi

# --- 3. the cold path, against nginx proxy_cache ------------------------------------------------
# The peer: a second nginx with proxy_cache and proxy_cache_lock on, in front of the same origin
# nginx, with its own scratch cache directory and no access log. Each round starts both caches
# empty (a fresh tiercache data directory; the proxy restarted with an empty cache), drops the page
# cache first (as root), and alternates which goes first.
log "3. single-core hashing speed over ${BIG_MIB} MiB (${REPS}x)"
: >"$SCRATCH/sha.out"
for ((i = 0; i < REPS; i++)); do "$SHA" "$BIG_MIB" >>"$SCRATCH/sha.out" 2>/dev/null; done
SHA_S=$(awk '$1 == "sha256" {print $4}' "$SCRATCH/sha.out" | median)
MD5_S=$(awk '$1 == "md5" {print $4}' "$SCRATCH/sha.out" | median)
SHA_GBS=$(calc '%.2f' "$BIG_BYTES / $SHA_S / 1e9")
MD5_GBS=$(calc '%.2f' "$BIG_BYTES / $MD5_S / 1e9")

if [ "$(id -u)" = 0 ] && [ -w /proc/sys/vm/drop_caches ]; then
    DROPS="page cache dropped before each cold read"
    drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
else
    DROPS="page cache NOT dropped (not root): cold reads of the origin's file may come from memory"
    drop_caches() { sync; }
fi
log "3. $DROPS"

PX="$SCRATCH/proxy"
PX_PID=""
px_start() { # a fresh nginx proxy_cache in front of the origin, with an empty cache
    px_stop
    rm -rf "$PX"
    mkdir -p "$PX/cache" "$PX/tmp"
    cat >"$PX/nginx.conf" <<CONF
# Generated by bench/run.sh: nginx proxy_cache + proxy_cache_lock in front of the origin nginx.
$([ "$(id -u)" = 0 ] && echo 'user root;  # the scratch directory is private to root')
worker_processes auto;
daemon off;
pid $PX/nginx.pid;
lock_file $PX/nginx.lock;
error_log $PX/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $PX/tmp/body;
    proxy_temp_path $PX/tmp/proxy;
    proxy_cache_path $PX/cache levels=1:2 keys_zone=bench:16m max_size=64g inactive=1d use_temp_path=off;
    server {
        listen 127.0.0.1:$PX_PORT;
        location / {
            proxy_pass $NG_URL;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_key \$uri;
            proxy_cache_valid 200 1d;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 600s;
            proxy_cache_lock_age 600s;
            add_header X-Cache \$upstream_cache_status;
        }
    }
}
CONF
    "$NGINX" -p "$PX/" -c "$PX/nginx.conf" -e "$PX/error.log" &
    PX_PID=$!
    wait_http "$PX_URL/ok" || { cat "$PX/error.log" >&2; die "nginx proxy_cache did not start"; }
    curl -fsS -o /dev/null "$PX_URL/ok" # /ok is now cached; nothing else is
}
px_stop() {
    if [ -n "$PX_PID" ]; then
        kill "$PX_PID" 2>/dev/null || true
        wait "$PX_PID" 2>/dev/null || true
        PX_PID=""
    fi
}
tc_fresh() { # a fresh tiercache data directory with namespace bench over the origin
    tc_stop
    rm -rf "$SCRATCH/data" "$SCRATCH/cold"
    "$TC" --data-dir "$SCRATCH/cold" ns create bench --source "$NG_URL/" >/dev/null
    tc_start "$SCRATCH/cold"
}
origin_gets() { grep -c "\"GET $1 " "$NG/access.log" || true; }
PX_PORT=$(pick_port $((TC_PORT + 1)))
PX_URL="http://127.0.0.1:$PX_PORT"

# One round for one server: cold read of big.bin, then the second read started as it completes.
# Appends "cold_s second_s source_gets" to FILE; the second read's headers are in $SCRATCH/h2.
cold_round() { # NAME URL FILE
    local g0 cold second
    g0=$(origin_gets /big.bin)
    drop_caches
    cold=$(download "$2/big.bin" "$SCRATCH/h" "$BIG_BYTES")
    second=$(download "$2/big.bin" "$SCRATCH/h2" "$BIG_BYTES")
    echo "$cold $second $(($(origin_gets /big.bin) - g0))" >>"$3"
    log "   $1: cold ${cold}s, second at once ${second}s ($(grep -i -m1 -e '^x-tiercache-tier' -e '^x-cache' "$SCRATCH/h2" | tr -d '\r'))"
}
COLD_REPS=${BENCH_COLD_REPS:-3}
log "3. cold reads of the ${BIG_MIB} MiB file, each followed at once by a second read (${COLD_REPS} rounds)"
: >"$SCRATCH/t3.tc"
: >"$SCRATCH/t3.px"
: >"$SCRATCH/t3.direct"
for ((i = 0; i < COLD_REPS; i++)); do
    tc_fresh
    px_start
    wait_idle "$TC_PID"
    if ((i % 2 == 0)); then
        cold_round tiercache "$TC_URL/ns/bench" "$SCRATCH/t3.tc"
        cold_round "nginx proxy_cache" "$PX_URL" "$SCRATCH/t3.px"
    else
        cold_round "nginx proxy_cache" "$PX_URL" "$SCRATCH/t3.px"
        cold_round tiercache "$TC_URL/ns/bench" "$SCRATCH/t3.tc"
    fi
    drop_caches
    download "$NG_URL/big.bin" "$SCRATCH/h" "$BIG_BYTES" >>"$SCRATCH/t3.direct"
done
T3_TC=$(awk '{print $1}' "$SCRATCH/t3.tc" | median)
T3_PX=$(awk '{print $1}' "$SCRATCH/t3.px" | median)
T3S_TC=$(awk '{print $2}' "$SCRATCH/t3.tc" | median)
T3S_PX=$(awk '{print $2}' "$SCRATCH/t3.px" | median)
T3_DIRECT=$(median <"$SCRATCH/t3.direct")
G3_TC=$(awk '{s += $3} END {print s}' "$SCRATCH/t3.tc")
G3_PX=$(awk '{s += $3} END {print s}' "$SCRATCH/t3.px")
R3=$(calc '%.2f' "$T3_TC / $T3_PX")
R3S=$(calc '%.2f' "$T3S_PX / $T3S_TC")
T3_OLD_PEER=$(awk -v a="$T3_DIRECT" -v b="$SHA_S" 'BEGIN {print (a > b) ? a : b}')
R3_OLD=$(calc '%.2f' "$T3_TC / $T3_OLD_PEER")
row "3. cold miss, ${BIG_MIB} MiB (s, median)" "$(calc '%.3f' "$T3_TC")" "$(calc '%.3f' "$T3_PX") (proxy)" "$R3" "<= 1.00" "$(verdict "$R3" '<=' 1.0)"
row "   3a. old ratio: / max(direct, SHA-256) (s)" "$(calc '%.3f' "$T3_TC")" "$(calc '%.3f' "$T3_OLD_PEER") (max)" "$R3_OLD" "<= 1.20" "$(verdict "$R3_OLD" '<=' 1.2)"
row "   3b. same file straight from the origin (s)" "" "$(calc '%.3f' "$T3_DIRECT")" "" "" ""
row "   3c. SHA-256, one core (s; GB/s)" "" "$(calc '%.3f' "$SHA_S"); $SHA_GBS" "" "" ""
row "   3d. MD5, one core (s; GB/s), context" "" "$(calc '%.3f' "$MD5_S"); $MD5_GBS" "" "" ""
row "4. second read at once, ${BIG_MIB} MiB (GB/s)" "$(calc '%.2f' "$BIG_BYTES / $T3S_TC / 1e9")" "$(calc '%.2f' "$BIG_BYTES / $T3S_PX / 1e9") (proxy)" "$R3S" ">= 0.90" "$(verdict "$R3S" '>=' 0.9)"
log "   tiercache cold/second/GETs: $(tr '\n' ';' <"$SCRATCH/t3.tc")"
log "   nginx proxy_cache cold/second/GETs: $(tr '\n' ';' <"$SCRATCH/t3.px")"
log "   straight from the origin: $(tr '\n' ' ' <"$SCRATCH/t3.direct")s; source GETs in all: tiercache $G3_TC, proxy $G3_PX"

# Warm: both caches hold the file and have settled (tiercache's MD5 is in); page cache warm.
log "5. warm reads of the ${BIG_MIB} MiB entry (${REPS}x each, interleaved)"
wait_idle "$TC_PID"
: >"$SCRATCH/t5.tc"
: >"$SCRATCH/t5.px"
for ((i = 0; i < REPS; i++)); do
    download "$TC_URL/ns/bench/big.bin" "$SCRATCH/h" "$BIG_BYTES" >>"$SCRATCH/t5.tc"
    grep -qi '^x-tiercache-tier: \(disk\|memory\)' "$SCRATCH/h" || die "a warm tiercache read was not a hit"
    download "$PX_URL/big.bin" "$SCRATCH/h" "$BIG_BYTES" >>"$SCRATCH/t5.px"
    grep -qi '^x-cache: HIT' "$SCRATCH/h" || die "a warm nginx proxy_cache read was not a HIT"
done
T5_TC=$(median <"$SCRATCH/t5.tc")
T5_PX=$(median <"$SCRATCH/t5.px")
R5=$(calc '%.2f' "$T5_PX / $T5_TC")
row "5. warm read, ${BIG_MIB} MiB (GB/s, median)" "$(calc '%.2f' "$BIG_BYTES / $T5_TC / 1e9")" "$(calc '%.2f' "$BIG_BYTES / $T5_PX / 1e9") (proxy)" "$R5" "" "info"
[ "$(curl -fsS "$TC_URL/ns/bench/big.bin" | sha256sum | cut -d' ' -f1)" = "$BIG_HEX" ] ||
    die "the fetched entry's bytes differ from the source's"

# Informational: FIRST_HITS concurrent HEADs right after a cold fetch is stored (its MD5 may still
# be being computed: no HEAD waits for it), then a HEAD and a GET once idle.
tc_fresh
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
FIRST_WEAK=$(cat "$SCRATCH"/first.*.h | grep -ci '^etag: W/' || true)
wait_idle "$TC_PID"
T3_HEAD=$(curl -sS -I -o /dev/null -w '%{time_total}' "$TC_URL/ns/bench/big.bin")
T3_WARM=$(download "$TC_URL/ns/bench/big.bin" "$SCRATCH/h" "$BIG_BYTES")
grep -qi '^x-tiercache-tier: disk' "$SCRATCH/h" || die "warm entry read was not served from the disk tier"
quiet_check

# --- 6. concurrent cold reads of one key ---------------------------------------------------------
log "6. ${HERD} concurrent cold reads of a ${HERD_MIB} MiB key (${COLD_REPS} rounds each)"
: >"$SCRATCH/herd.cfg"
herd_round() { # NAME URL FILE: appends "seconds source_gets complete_answers body_ok"
    local g0 t0 t1 gets n_ok body_ok=no i out
    : >"$SCRATCH/herd.cfg"
    for ((i = 0; i < HERD; i++)); do
        out=/dev/null
        [ "$i" = 0 ] && out="$SCRATCH/herd.body"
        printf 'url = "%s/herd.bin"\noutput = "%s"\n' "$2" "$out" >>"$SCRATCH/herd.cfg"
    done
    rm -f "$SCRATCH/herd.body"
    g0=$(origin_gets /herd.bin)
    drop_caches
    t0=$(date +%s.%N)
    curl -sS --no-progress-meter --parallel --parallel-immediate --parallel-max "$HERD" -K "$SCRATCH/herd.cfg" \
        -w '%{http_code} %{size_download}\n' >"$SCRATCH/herd.out" 2>"$SCRATCH/herd.err" || true
    t1=$(date +%s.%N)
    gets=$(($(origin_gets /herd.bin) - g0))
    n_ok=$(grep -c "^200 $HERD_BYTES\$" "$SCRATCH/herd.out" || true)
    [ -f "$SCRATCH/herd.body" ] && [ "$(sha256sum "$SCRATCH/herd.body" | cut -d' ' -f1)" = "$HERD_HEX" ] && body_ok=yes
    echo "$(calc '%.3f' "$t1 - $t0") $gets $n_ok $body_ok" >>"$3"
    [ ! -s "$SCRATCH/herd.err" ] || log "   $1: curl said: $(sort "$SCRATCH/herd.err" | uniq -c | head -3)"
    log "   $1: $(tail -1 "$3") (seconds, source GETs, complete answers, body ok)"
}
: >"$SCRATCH/t6.tc"
: >"$SCRATCH/t6.px"
for ((i = 0; i < COLD_REPS; i++)); do
    tc_fresh
    px_start
    wait_idle "$TC_PID"
    herd_round tiercache "$TC_URL/ns/bench" "$SCRATCH/t6.tc"
    herd_round "nginx proxy_cache" "$PX_URL" "$SCRATCH/t6.px"
done
px_stop
T6_TC=$(awk '{print $1}' "$SCRATCH/t6.tc" | median)
T6_PX=$(awk '{print $1}' "$SCRATCH/t6.px" | median)
herd_gets() { awk '{print $2}' "$1" | sort -u | tr '\n' ' ' | sed 's/ $//'; }
herd_ok() { awk -v n="$HERD" '$3 != n || $4 != "yes" {bad = 1} END {print bad ? "no" : "yes"}' "$1"; }
herd_verdict=FAIL
[ "$(herd_gets "$SCRATCH/t6.tc")" = 1 ] && [ "$(herd_ok "$SCRATCH/t6.tc")" = yes ] && herd_verdict=PASS
row "6. ${HERD} cold readers, ${HERD_MIB} MiB: source GETs" "$(herd_gets "$SCRATCH/t6.tc")" "$(herd_gets "$SCRATCH/t6.px") (proxy)" "" "== 1" "$herd_verdict"
row "   6a. time for all ${HERD} (s, median)" "$(calc '%.3f' "$T6_TC")" "$(calc '%.3f' "$T6_PX") (proxy)" "$(calc '%.2f' "$T6_TC / $T6_PX")" "" "info"
log "   every answer complete and first body's digest ok: tiercache $(herd_ok "$SCRATCH/t6.tc"), proxy $(herd_ok "$SCRATCH/t6.px")"

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
if [ "$SKIP_HITS" != 1 ]; then
    ctx "PUT of the ${BIG_MIB} MiB blob" "$(calc '%.3f' "$put_s") s = $PUT_GBS GB/s (receive, hash, write, fsync)"
    ctx "PUT of ${SMALL_COUNT} x ${SMALL_KIB} KiB blobs on one connection" "$PUT_SMALL_RPS blobs/s"
fi
ctx "${FIRST_HITS} concurrent HEADs of a just-stored ${BIG_MIB} MiB entry" "slowest $(calc '%.3f' "$FIRST_MAX") s; tiercache used $FIRST_CPU CPU-s; $FIRST_DISK of ${FIRST_HITS} from the disk tier, $FIRST_WEAK with a weak ETag (MD5 not in yet)"
ctx "the same HEAD once the server is idle" "$(calc '%.3f' "$T3_HEAD") s (a GET of it: $(calc '%.3f' "$T3_WARM") s)"
ctx "cold reads" "$DROPS"
echo "other work on the machine between tests: at most ${OTHER_MAX}% of CPU$( [ "$OTHER_MAX" -le 10 ] || echo '  WARNING: figures may be skewed')"
echo "GB = 10^9 bytes; ratios: 1, 2, 4 and 5 tiercache/nginx throughput; 3 tiercache time / nginx proxy_cache time (3a: / max(origin read, SHA-256)); 6a tiercache time / nginx proxy_cache time."
