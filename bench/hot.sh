#!/usr/bin/env bash
# Hot small entries over HTTP: tiercache against nginx, in the same run.
#
#   bash bench/hot.sh                                          # 1000 x 4 KiB, wrk 5 x 10 s per server
#   BENCH_WRK_SECONDS=3 BENCH_WRK_RUNS=1 bash bench/hot.sh     # quick
#
# What it measures: BENCH_HOT_COUNT files of BENCH_HOT_KIB KiB of random bytes, served by nginx
# straight from a scratch directory, which is also the source of the namespace `web` of a fresh
# tiercache data directory (serve --revalidate-after 1h, so nothing is revalidated during the run).
# Every entry is read once (fetched from the source), then once more (a disk hit, which puts small
# blobs into the memory tier). Then wrk (-t2 -c64) cycles through all keys against:
#   a. nginx, combined access log (Debian's default), and nginx without an access log (tiercache
#      writes none): both in the same run unless BENCH_NGINX_LOG=on or off says one
#                                              GET /<file>
#   b. tiercache, memory tier on (the default) GET /ns/web/<file>, without its access log (as
#      measured before it had one) and with it (the default, written to a file like nginx's)
#   c. tiercache --no-cache (same data dir)    GET /ns/web/<file>
#   d. a bare axum handler (the floor: crates/server/examples/bare_axum.rs, every file in a
#      HashMap, no lookup, validation, conditional or range handling, metrics or logging)
#                                              GET /ns/web/<file>
# and, unless BENCH_HOT_BLOBS=0, the same blobs by digest, to tell the entry path (namespace and
# entry lookup) from the HTTP layer:
#   b'. tiercache, memory tier                 GET /blobs/sha256:<hex>
#   c'. tiercache --no-cache                   GET /blobs/sha256:<hex>
# Each run measures every server once; which server goes first rotates between runs (a tiercache
# server is restarted in the other mode, warmed with one pass over all keys and a short wrk run
# before it is measured; nginx gets the same warm-up). Reports the median of BENCH_WRK_RUNS runs,
# and the ratios to each nginx.
# Goal: tiercache (memory tier) >= 1.2x nginx (the verdict is given against each nginx measured).
#
# Needs: cargo, curl, nginx, wrk (nginx-light and wrk are apt-get installed if missing, as root).
# Everything runs on 127.0.0.1 in a scratch directory under ${TMPDIR:-/tmp}, removed on exit
# (BENCH_KEEP=1 keeps it). No system nginx configuration, log or pid path is touched.
set -euo pipefail

COUNT=${BENCH_HOT_COUNT:-1000}            # number of files / entries
KIB=${BENCH_HOT_KIB:-4}                   # size of each
WRK_SECONDS=${BENCH_WRK_SECONDS:-10}      # duration of each measured wrk run
WRK_WARM=${BENCH_WRK_WARM:-2}             # duration of the wrk warm-up before each measured run
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_CONNS=${BENCH_WRK_CONNS:-64}
WRK_RUNS=${BENCH_WRK_RUNS:-5}             # measured wrk runs per server (median reported)
BLOBS=${BENCH_HOT_BLOBS:-1}               # also measure /blobs/sha256:<hex> (diagnosis)
GOAL=${BENCH_HOT_GOAL:-1.2}               # tiercache (memory tier) / nginx
NGINX_LOG=${BENCH_NGINX_LOG:-both}        # nginx's access log: both (two nginx), on or off
NGINX_PORT_BASE=${BENCH_NGINX_PORT:-18580}
TC_PORT_BASE=${BENCH_TIERCACHE_PORT:-18590}
KEEP=${BENCH_KEEP:-0}
# "Memory tier on" means the default: no leftover setting from the environment.
unset TIERCACHE_CACHE_ENABLED TIERCACHE_CACHE_TTL

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- tools ---------------------------------------------------------------------------------------
need_web_tools
command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust, e.g. from https://rustup.rs)"
for t in awk sha256sum split sort head find cmp; do command -v "$t" >/dev/null 2>&1 || die "$t not found"; done
[ "$COUNT" -ge 1 ] && [ "$KIB" -ge 1 ] && [ "$WRK_RUNS" -ge 1 ] || die "BENCH_HOT_COUNT, BENCH_HOT_KIB and BENCH_WRK_RUNS must be >= 1"
# The nginx servers measured: ng with the access log, ngoff without.
case $NGINX_LOG in
both) NGS=(ng ngoff) ;;
on) NGS=(ng) ;;
off) NGS=(ngoff) ;;
*) die "BENCH_NGINX_LOG must be both, on or off (got '$NGINX_LOG')" ;;
esac

# --- machine -------------------------------------------------------------------------------------
echo "tiercache hot-entry benchmark — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
machine_lines
web_tools_line
echo "sizes   : ${COUNT} x ${KIB} KiB, wrk -t${WRK_THREADS} -c${WRK_CONNS} -d${WRK_SECONDS}s x${WRK_RUNS} per server (after a ${WRK_WARM}s warm-up each)"
echo "nginx   : access log $NGINX_LOG$([ "$NGINX_LOG" != both ] || echo ' (two nginx: one writing a combined access log, one writing none)')"
echo "note    : load generator (wrk), nginx and tiercache all share these $(nproc) CPUs"
echo "before  : $(background_load)"
echo

# --- build ---------------------------------------------------------------------------------------
log "building (cargo build --release -p tiercache, and the bare_axum example)"
cargo build --release -p tiercache
cargo build --release -p tiercache-server --example bare_axum
find_release tiercache examples/bare_axum
built_line
echo

# --- scratch, processes, cleanup -----------------------------------------------------------------
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/tiercache-hot.XXXXXX")
NGINX_PIDS=""
TC_PID=""
BARE_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in $TC_PID $NGINX_PIDS $BARE_PID; do
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

# A private copy, so a concurrent rebuild of target/ cannot change the binary mid-run.
mkdir -p "$SCRATCH/bin"
cp "$TARGET/release/tiercache" "$TARGET/release/examples/bare_axum" "$SCRATCH/bin/"
TC="$SCRATCH/bin/tiercache"


pick_ports

# --- test data -----------------------------------------------------------------------------------
WWW="$SCRATCH/www"
mkdir -p "$WWW"
log "generating ${COUNT} x ${KIB} KiB files"
echo ok >"$WWW/ok"
head -c $((COUNT * KIB * 1024)) /dev/urandom | split -b $((KIB * 1024)) -d -a 7 - "$WWW/h"
(cd "$WWW" && find . -type f -name 'h*' | sort | xargs sha256sum) >"$SCRATCH/hot.sha256"
[ "$(wc -l <"$SCRATCH/hot.sha256")" = "$COUNT" ] || die "expected $COUNT files"
FIRST_HEX=$(head -1 "$SCRATCH/hot.sha256" | cut -d' ' -f1)
FIRST_NAME=$(head -1 "$SCRATCH/hot.sha256" | awk '{print $2}')
FIRST_NAME=${FIRST_NAME#./}

# --- nginx ---------------------------------------------------------------------------------------
# One nginx per access-log choice; the first is also the namespace's source.
declare -A NGURL=()
port=$NGINX_PORT
for s in "${NGS[@]}"; do
    if [ -n "$NGINX_PIDS" ]; then
        port=$(pick_port $((port + 1)))
        [ "$port" != "$TC_PORT" ] || port=$(pick_port $((port + 1)))
    fi
    start_nginx "$WWW" "$port" "$SCRATCH/$s" "$([ "$s" = ng ] && echo on || echo off)"
    NGINX_PIDS+=" $NGINX_PID"
    NGURL[$s]="http://127.0.0.1:$port"
done
NG_URL=${NGURL[${NGS[0]}]}

BARE_PORT=$(pick_port $((TC_PORT + 1)))
BARE_URL="http://127.0.0.1:$BARE_PORT"
log "starting the bare axum handler on $BARE_URL"
"$SCRATCH/bin/bare_axum" "$WWW" "127.0.0.1:$BARE_PORT" &
BARE_PID=$!
wait_http "$BARE_URL/ns/web/$FIRST_NAME" || die "bare_axum did not start"

# --- tiercache -----------------------------------------------------------------------------------
DATA="$SCRATCH/data"
"$TC" --data-dir "$DATA" ns create web --source "$NG_URL/" >/dev/null
TC_MODE=""
tc_start() { # mem|memlog|nocache
    local extra=(--access-log false)
    [ "$1" = nocache ] && extra+=(--no-cache)
    # No access log but in memlog: the figures compare with nginx's both ways, and with earlier
    # runs (before tiercache had one); memlog is the default, logging each request like nginx.
    [ "$1" = memlog ] && extra=()
    "$TC" --data-dir "$DATA" serve --listen "127.0.0.1:$TC_PORT" --revalidate-after 1h "${extra[@]}" \
        >>"$SCRATCH/tiercache.log" 2>&1 &
    TC_PID=$!
    TC_MODE=$1
    wait_http "$TC_URL/healthz" || { tail -20 "$SCRATCH/tiercache.log" >&2; die "tiercache did not start"; }
}
tc_stop() {
    if [ -n "$TC_PID" ]; then
        kill "$TC_PID" 2>/dev/null || true
        wait "$TC_PID" 2>/dev/null || true
        TC_PID=""
        TC_MODE=""
    fi
}
# Reads served by a tier ("memory", "disk", "source"; any outcome) since the server started.
reads() { # TIER
    curl -fsS "$TC_URL/metrics" | awk -v t="tier=\"$1\"" '/^tiercache_reads_total\{/ && index($0, t) {s += $NF} END {printf "%d\n", s}'
}

# curl config files: every key once, on one connection.
curl_cfg() { # FILE URL-PREFIX hex|name
    local hex name
    : >"$1"
    while read -r hex name; do
        if [ "$3" = hex ]; then
            printf 'url = "%s%s"\noutput = "/dev/null"\n' "$2" "$hex" >>"$1"
        else
            printf 'url = "%s%s"\noutput = "/dev/null"\n' "$2" "${name#./}" >>"$1"
        fi
    done <"$SCRATCH/hot.sha256"
}
curl_cfg "$SCRATCH/ns.curl" "$TC_URL/ns/web/" name
curl_cfg "$SCRATCH/blobs.curl" "$TC_URL/blobs/sha256:" hex
for s in "${NGS[@]}"; do curl_cfg "$SCRATCH/$s.curl" "${NGURL[$s]}/" name; done
curl_cfg "$SCRATCH/bare.curl" "$BARE_URL/ns/web/" name
pass() { # CURL-CONFIG WHAT: one pass over every key; every answer must be 200
    local codes
    codes=$(curl -sS -K "$1" -w '%{http_code}\n' | sort | uniq -c | awk '{printf "%s x%s ", $2, $1}')
    [ "$codes" = "200 x$COUNT " ] || die "$2: answers $codes"
}

log "starting tiercache on $TC_URL (memory tier on), first pass over all ${COUNT} keys"
tc_start mem
t0=$(date +%s.%N)
pass "$SCRATCH/ns.curl" "first pass (from the source)"
t1=$(date +%s.%N)
COLD_RPS=$(calc '%.0f' "$COUNT / ($t1 - $t0)")
wait_idle "$TC_PID" # the server computes new blobs' MD5 in the background
pass "$SCRATCH/ns.curl" "second pass"
log "   first pass: ${COLD_RPS} entries/s; served so far: source $(reads source), disk $(reads disk), memory $(reads memory)"

# Correctness, once, before measuring: bytes and tier of one entry and its blob.
curl -fsS -D "$SCRATCH/h" -o "$SCRATCH/body" "$TC_URL/ns/web/$FIRST_NAME"
cmp "$SCRATCH/body" "$WWW/$FIRST_NAME" || die "GET /ns/web/$FIRST_NAME differs from the file"
MEM_TIER=$(awk -F': *' 'tolower($1) == "x-tiercache-tier" {print $2}' "$SCRATCH/h" | tr -d '\r')
curl -fsS -o "$SCRATCH/body" "$TC_URL/blobs/sha256:$FIRST_HEX"
cmp "$SCRATCH/body" "$WWW/$FIRST_NAME" || die "GET /blobs/sha256:$FIRST_HEX differs from the file"
if [ "$KIB" -le 64 ] && [ "$MEM_TIER" != memory ]; then
    log "warning: a hot ${KIB} KiB entry was served by the '$MEM_TIER' tier, not 'memory'"
fi
tc_stop
tc_start nocache
pass "$SCRATCH/ns.curl" "pass with --no-cache"
curl -fsS -D "$SCRATCH/h" -o "$SCRATCH/body" "$TC_URL/ns/web/$FIRST_NAME"
cmp "$SCRATCH/body" "$WWW/$FIRST_NAME" || die "GET /ns/web/$FIRST_NAME (--no-cache) differs from the file"
NOCACHE_TIER=$(awk -F': *' 'tolower($1) == "x-tiercache-tier" {print $2}' "$SCRATCH/h" | tr -d '\r')
[ "$(reads source)" = 0 ] || die "--no-cache server fetched from the source: the data dir is not warm"
log "   bodies equal the files (cmp); tier of a hot entry: memory tier on '$MEM_TIER', --no-cache '$NOCACHE_TIER'"
tc_stop

# --- wrk -----------------------------------------------------------------------------------------
lua_script() { # FILE hex|name PREFIX: a wrk script cycling through every key's path
    {
        echo 'local paths = {'
        while read -r hex name; do
            if [ "$2" = hex ]; then echo "  \"$3$hex\","; else echo "  \"$3${name#./}\","; fi
        done <"$SCRATCH/hot.sha256"
        echo '}'
        echo 'local n, i = #paths, 0'
        echo 'function request()'
        echo '  i = i % n + 1'
        echo '  return wrk.format("GET", paths[i])'
        echo 'end'
    } >"$1"
}
lua_script "$SCRATCH/ng.lua" name /
lua_script "$SCRATCH/ns.lua" name /ns/web/
lua_script "$SCRATCH/blobs.lua" hex /blobs/sha256:
WARNINGS=()
run_wrk() { # URL LUA SECONDS OUT -> requests/s; fails on errors, warns on non-2xx answers
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$3"s --latency -s "$2" "$1" >"$4" 2>&1 || die "wrk failed: $(cat "$4")"
    if grep -q -e 'Non-2xx' -e 'Socket errors' "$4"; then
        WARNINGS+=("$(basename "$4"): $(grep -e 'Non-2xx' -e 'Socket errors' "$4" | tr -s ' ' | tr '\n' ' ')")
        log "warning: ${WARNINGS[-1]}"
    fi
    awk '/^Requests\/sec:/ {print $2}' "$4"
}

# Servers (labels) and how to measure each.
SERVERS=("${NGS[@]}" bare mem_ns memlog_ns nocache_ns)
[ "$BLOBS" = 1 ] && SERVERS=("${NGS[@]}" bare mem_ns memlog_ns mem_blobs nocache_ns nocache_blobs)
is_tc() { case $1 in *_ns | *_blobs) return 0 ;; *) return 1 ;; esac }
declare -A LABEL=(
    [ng]="nginx (files, access log)"
    [ngoff]="nginx (files, no access log)"
    [bare]="bare axum handler (files in a HashMap)"
    [mem_ns]="tiercache, memory tier: /ns/web/<key>"
    [memlog_ns]="tiercache, memory tier, access log (default): /ns/web/<key>"
    [nocache_ns]="tiercache --no-cache: /ns/web/<key>"
    [mem_blobs]="tiercache, memory tier: /blobs/sha256:<hex>"
    [nocache_blobs]="tiercache --no-cache: /blobs/sha256:<hex>"
)
declare -A SHARE=()
for s in "${SERVERS[@]}"; do : >"$SCRATCH/r.$s"; done

# One measured wrk run of server S (run I): warm-up pass and short wrk run, then the measured one.
measure() { # S I
    local s=$1 i=$2 mode url lua cfg m0 d0 m1 d1
    case $s in
    ng | ngoff) url=${NGURL[$s]} lua=$SCRATCH/ng.lua cfg=$SCRATCH/$s.curl ;;
    bare) url=$BARE_URL lua=$SCRATCH/ns.lua cfg=$SCRATCH/bare.curl ;;
    *_ns) url=$TC_URL lua=$SCRATCH/ns.lua cfg=$SCRATCH/ns.curl ;;
    *_blobs) url=$TC_URL lua=$SCRATCH/blobs.lua cfg=$SCRATCH/blobs.curl ;;
    esac
    if is_tc "$s"; then
        mode=${s%%_*}
        if [ "$TC_MODE" != "$mode" ]; then
            tc_stop
            tc_start "$mode"
        fi
    fi
    pass "$cfg" "warm-up pass of ${LABEL[$s]}"
    run_wrk "$url" "$lua" "$WRK_WARM" "$SCRATCH/wrk.warm" >/dev/null
    [ -z "$TC_PID" ] || wait_idle "$TC_PID"
    ! is_tc "$s" || { m0=$(reads memory); d0=$(reads disk); }
    run_wrk "$url" "$lua" "$WRK_SECONDS" "$SCRATCH/wrk.$s.$i" >>"$SCRATCH/r.$s"
    if is_tc "$s"; then
        m1=$(reads memory)
        d1=$(reads disk)
        SHARE[$s]="memory $((m1 - m0)), disk $((d1 - d0))"
    fi
    log "   run $((i + 1)): ${LABEL[$s]}: $(tail -1 "$SCRATCH/r.$s") req/s${SHARE[$s]:+ (reads: ${SHARE[$s]})}"
}

# Measurement groups, rotated between runs; a tiercache group keeps one server process.
GROUPS_=("${NGS[@]}" bare mem memlog nocache)
group_members() { # G -> servers
    local s
    for s in "${SERVERS[@]}"; do
        case $1 in
        ng | ngoff | bare) [ "$s" = "$1" ] && echo "$s" ;;
        *) [ "${s%%_*}" = "$1" ] && echo "$s" ;;
        esac
    done
}
quiet_check
log "wrk: ${WRK_RUNS} run(s); each measures every server once, ${WRK_SECONDS}s each (after a ${WRK_WARM}s warm-up)"
for ((i = 0; i < WRK_RUNS; i++)); do
    for ((g = 0; g < ${#GROUPS_[@]}; g++)); do
        grp=${GROUPS_[$(((g + i) % ${#GROUPS_[@]}))]}
        mapfile -t members < <(group_members "$grp")
        # Within a tiercache group, alternate which path goes first.
        ((i % 2 == 0)) || mapfile -t members < <(printf '%s\n' "${members[@]}" | tac)
        for s in "${members[@]}"; do measure "$s" "$i"; done
    done
    tc_stop
    quiet_check
done

# --- report --------------------------------------------------------------------------------------
p50() { awk '/^ +50%/ {print $2}' "$1"; }
p99() { awk '/^ +99%/ {print $2}' "$1"; }
declare -A MED=()
for s in "${SERVERS[@]}"; do MED[$s]=$(median <"$SCRATCH/r.$s"); done
ratio() { calc '%.2f' "${MED[$1]} / ${MED[${2:-${NGS[0]}}]}"; } # SERVER [NGINX]
declare -A RCOL=([ng]="ratio to nginx (access log)" [ngoff]="ratio to nginx (no access log)")
echo
echo "hot ${KIB} KiB entries, ${COUNT} keys, wrk -t${WRK_THREADS} -c${WRK_CONNS} -d${WRK_SECONDS}s, median of ${WRK_RUNS}"
echo
printf '| server | requests/s (median) |'
for n in "${NGS[@]}"; do printf ' %s |' "${RCOL[$n]}"; done
printf ' runs (req/s) | p50 / p99 (run 1) |\n|---|---:|'
for n in "${NGS[@]}"; do printf -- '---:|'; done
printf -- '---|---|\n'
for s in "${SERVERS[@]}"; do
    printf '| %s | %s |' "${LABEL[$s]}" "$(calc '%.0f' "${MED[$s]}")"
    for n in "${NGS[@]}"; do printf ' %s |' "$(ratio "$s" "$n")"; done
    printf ' %s | %s / %s |\n' "$(awk '{printf "%s%.0f", (NR > 1 ? ", " : ""), $1}' "$SCRATCH/r.$s")" \
        "$(p50 "$SCRATCH/wrk.$s.0")" "$(p99 "$SCRATCH/wrk.$s.0")"
done
echo
verdict() { awk -v r="$1" -v g="$GOAL" 'BEGIN {print (r >= g) ? "PASS" : "FAIL"}'; }
for n in "${NGS[@]}"; do
    r=$(ratio mem_ns "$n")
    echo "goal: tiercache (memory tier) ≥ ${GOAL}× ${LABEL[$n]} — $r× — $(verdict "$r")"
done
# Like against like: both servers writing a line a request.
if [ "${NGS[0]}" = ng ]; then
    r=$(ratio memlog_ns ng)
    echo "goal: tiercache (memory tier, access log) ≥ ${GOAL}× ${LABEL[ng]} — $r× — $(verdict "$r")"
fi
echo
echo "context (no goal):"
ctx() { printf '  %-52s %s\n' "$1" "$2"; }
ctx "first pass, ${COUNT} cold reads on one connection" "${COLD_RPS} entries/s"
ctx "tier of a hot entry (x-tiercache-tier)" "memory tier on: $MEM_TIER; --no-cache: $NOCACHE_TIER"
for s in "${SERVERS[@]}"; do
    [ -z "${SHARE[$s]:-}" ] || ctx "reads during the last measured run, ${s}" "${SHARE[$s]}"
done
if [ "$BLOBS" = 1 ]; then
    # > 1: the namespace and entry lookup costs that much on top of the HTTP layer and blob read.
    ctx "/blobs req/s ÷ /ns req/s, memory tier" "$(calc '%.2f' "${MED[mem_blobs]} / ${MED[mem_ns]}")×"
    ctx "/blobs req/s ÷ /ns req/s, --no-cache" "$(calc '%.2f' "${MED[nocache_blobs]} / ${MED[nocache_ns]}")×"
fi
ctx "tiercache /ns (memory tier) ÷ bare axum handler" "$(calc '%.2f' "${MED[mem_ns]} / ${MED[bare]}")×"
ctx "tiercache /ns with ÷ without its access log" "$(calc '%.2f' "${MED[memlog_ns]} / ${MED[mem_ns]}")×"
for n in "${NGS[@]}"; do ctx "bare axum handler ÷ ${LABEL[$n]}" "$(ratio bare "$n")×"; done
[ "$NGINX_LOG" != both ] || ctx "nginx without ÷ with its access log" "$(ratio ngoff ng)×"
((${#WARNINGS[@]} == 0)) || printf '  wrk warning: %s\n' "${WARNINGS[@]}"
echo "after   : $(background_load)"
echo "other work on the machine between measurements: at most ${OTHER_MAX}% of CPU$( [ "$OTHER_MAX" -le 10 ] || echo '  WARNING: figures may be skewed')"
