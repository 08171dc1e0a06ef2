#!/usr/bin/env bash
# Soak: tiercache under wrk at 256 connections on hot keys, on cold keys, and over its connection
# limit, with the server's RSS sampled every second.
#
#   bash bench/soak.sh                                           # 60 s hot, 60 s cold, 30 s over the limit
#   SOAK_SECONDS=10 SOAK_LIMIT_SECONDS=5 bash bench/soak.sh      # quick
#
# What it does: nginx serves a scratch directory of SOAK_HOT_COUNT hot files and SOAK_COLD_COUNT
# cold files of SOAK_KIB KiB each; it is the source of namespace `web` of a fresh tiercache data
# directory, served with a small disk quota (SOAK_QUOTA, far below the cold files' total, so the
# cold phase fetches, stores and evicts all along) and the default limits. Then wrk
# (-t2 -cSOAK_CONNS) runs:
#   1. hot:   SOAK_SECONDS on the hot keys, cycling (memory-tier hits after the first pass);
#   2. cold:  SOAK_SECONDS walking the cold keys, each thread from its own offset (fetches from
#             the source, disk writes, evictions);
#   3. limit: SOAK_LIMIT_SECONDS on the hot keys against a server restarted with
#             --max-connections SOAK_LIMIT (below SOAK_CONNS): the limits answer (503 from the
#             reserve, connections closed beyond it) while /healthz keeps answering.
# The server's RSS (VmRSS in /proc) is sampled every second throughout, and its open descriptors at
# the end of each phase. Reports, per phase: requests/s, answers by status, socket errors by kind,
# RSS at start / max / end, and what the limits counted. Passes if every answer of phases 1 and 2
# is 200 with no socket error, phase 3 has only 200s and 503s (and the connection errors of
# refused connections), /healthz answered 200 during phase 3, and RSS at the end of the soak is
# below SOAK_RSS_LIMIT_MIB.
#
# Needs: cargo, curl, nginx, wrk (nginx-light and wrk are apt-get installed if missing, as root).
# Everything runs on 127.0.0.1 in a scratch directory under ${TMPDIR:-/tmp}, removed on exit
# (BENCH_KEEP=1 keeps it).
set -euo pipefail

SECONDS_=${SOAK_SECONDS:-60}              # each of the hot and cold phases
LIMIT_SECONDS=${SOAK_LIMIT_SECONDS:-30}   # the over-the-limit phase (0 skips it)
CONNS=${SOAK_CONNS:-256}
THREADS=${SOAK_THREADS:-2}
HOT_COUNT=${SOAK_HOT_COUNT:-100}
COLD_COUNT=${SOAK_COLD_COUNT:-20000}
KIB=${SOAK_KIB:-8}
QUOTA=${SOAK_QUOTA:-32MiB}
LIMIT=${SOAK_LIMIT:-64}                   # --max-connections of phase 3
RSS_LIMIT_MIB=${SOAK_RSS_LIMIT_MIB:-512}  # RSS at the end must stay below this
NGINX_PORT_BASE=${BENCH_NGINX_PORT:-18680}
TC_PORT_BASE=${BENCH_TIERCACHE_PORT:-18690}
KEEP=${BENCH_KEEP:-0}
unset TIERCACHE_CACHE_ENABLED TIERCACHE_CACHE_TTL TIERCACHE_MAX_CONNECTIONS TIERCACHE_HEADER_READ_TIMEOUT \
    TIERCACHE_KEEP_ALIVE_TIMEOUT TIERCACHE_BODY_IDLE_TIMEOUT TIERCACHE_DISK_QUOTA

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- tools ---------------------------------------------------------------------------------------
need_web_tools
command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust, e.g. from https://rustup.rs)"
for t in awk split sort head; do command -v "$t" >/dev/null 2>&1 || die "$t not found"; done

echo "tiercache soak — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
machine_lines
web_tools_line
echo "load    : wrk -t${THREADS} -c${CONNS}; hot ${HOT_COUNT} x ${KIB} KiB for ${SECONDS_}s, cold ${COLD_COUNT} x ${KIB} KiB for ${SECONDS_}s, over the limit (--max-connections ${LIMIT}) for ${LIMIT_SECONDS}s"
echo "server  : serve --disk-quota ${QUOTA} --revalidate-after 1h, default limits (phase 3: --max-connections ${LIMIT})"
echo "note    : load generator (wrk), nginx and tiercache all share these $(nproc) CPUs"
echo "before  : $(background_load)"
echo

# --- build ---------------------------------------------------------------------------------------
log "building (cargo build --release -p tiercache)"
cargo build --release -p tiercache
find_release tiercache
built_line
echo

# --- scratch, processes, cleanup -----------------------------------------------------------------
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/tiercache-soak.XXXXXX")
NGINX_PID=""
TC_PID=""
SAMPLER_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in $SAMPLER_PID $TC_PID $NGINX_PID; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ]; then log "kept $SCRATCH"; else rm -rf "$SCRATCH"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$SCRATCH/bin"
cp "$TARGET/release/tiercache" "$SCRATCH/bin/"
TC="$SCRATCH/bin/tiercache"
pick_ports

# --- test data and the source --------------------------------------------------------------------
WWW="$SCRATCH/www"
mkdir -p "$WWW/hot" "$WWW/cold"
log "generating ${HOT_COUNT} hot and ${COLD_COUNT} cold files of ${KIB} KiB"
echo ok >"$WWW/ok"
head -c $((HOT_COUNT * KIB * 1024)) /dev/urandom | split -b $((KIB * 1024)) -d -a 7 - "$WWW/hot/h"
head -c $((COLD_COUNT * KIB * 1024)) /dev/urandom | split -b $((KIB * 1024)) -d -a 7 - "$WWW/cold/c"
start_nginx "$WWW" "$NGINX_PORT" "$SCRATCH/nginx"

# --- tiercache -----------------------------------------------------------------------------------
DATA="$SCRATCH/data"
"$TC" --data-dir "$DATA" ns create web --source "$NG_URL/" >/dev/null
tc_start() { # extra serve flags...
    "$TC" --data-dir "$DATA" serve --listen "127.0.0.1:$TC_PORT" --revalidate-after 1h --disk-quota "$QUOTA" "$@" \
        >>"$SCRATCH/tiercache.log" 2>&1 &
    TC_PID=$!
    wait_http "$TC_URL/healthz" || { tail -20 "$SCRATCH/tiercache.log" >&2; die "tiercache did not start"; }
    # RSS in KiB, one line per second: "<unix time> <rss>".
    (while [ -r "/proc/$TC_PID/status" ]; do
        awk -v t="$(date +%s)" '/^VmRSS:/ {print t, $2}' "/proc/$TC_PID/status" 2>/dev/null || true
        sleep 1
    done) >>"$SCRATCH/rss" &
    SAMPLER_PID=$!
}
tc_stop() {
    kill "$TC_PID" 2>/dev/null || true
    wait "$TC_PID" 2>/dev/null || true
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    TC_PID="" SAMPLER_PID=""
}
rss_now() { awk '/^VmRSS:/ {print $2}' "/proc/$TC_PID/status"; }
fds_now() { find "/proc/$TC_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# The sum of metric series whose line starts with $1 (name and labels as exported).
metric() { curl -fsS "$TC_URL/metrics" | awk -v p="$1" 'index($0, p) == 1 {s += $NF} END {printf "%d\n", s}'; }

# --- wrk scripts ---------------------------------------------------------------------------------
# Each thread walks the keys from its own offset; answers are counted by status and printed at
# the end as "status <code> <count>" lines.
lua_script() { # FILE PREFIX COUNT
    cat >"$1" <<LUA
local prefix, count = "$2", $3
local threads, n = {}, 0
function setup(thread)
  n = n + 1
  thread:set("id", n)
  table.insert(threads, thread)
end
function init(args)
  statuses = {}
  i = math.floor((id - 1) * count / $THREADS)
end
function request()
  i = i % count + 1
  return wrk.format("GET", string.format("%s%07d", prefix, i - 1))
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("status %s %d\n", k, v)) end
end
LUA
}
lua_script "$SCRATCH/hot.lua" /ns/web/hot/h "$HOT_COUNT"
lua_script "$SCRATCH/cold.lua" /ns/web/cold/c "$COLD_COUNT"

# One phase: wrk for $3 seconds with script $2; the RSS samples of the phase go to rss.$1.
declare -A RPS=() STATUSES=() SOCKERR=() RSS=() FDS=() HEALTH=()
phase() { # NAME LUA SECONDS
    local name=$1 t0 t1 rss0 health_ok=0 health_all=0 hp
    rss0=$(rss_now)
    t0=$(date +%s)
    log "phase ${name}: wrk -t${THREADS} -c${CONNS} -d${3}s"
    if [ "$name" = limit ]; then
        # /healthz on a fresh connection every 0.5 s while the limit is hit.
        (while sleep 0.5; do
            curl -s -o /dev/null -m 5 -w '%{http_code}\n' "$TC_URL/healthz" || echo 000
        done) >"$SCRATCH/health" &
        hp=$!
    fi
    wrk -t"$THREADS" -c"$CONNS" -d"$3"s --timeout 10s -s "$2" "$TC_URL" >"$SCRATCH/wrk.$name" 2>&1 ||
        die "wrk failed: $(cat "$SCRATCH/wrk.$name")"
    if [ "$name" = limit ]; then
        kill "$hp" 2>/dev/null || true
        wait "$hp" 2>/dev/null || true
        health_all=$(wc -l <"$SCRATCH/health")
        health_ok=$(grep -c '^200$' "$SCRATCH/health" || true)
        HEALTH[$name]="/healthz: ${health_ok} of ${health_all} answered 200 ($(sort "$SCRATCH/health" | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}'))"
    fi
    t1=$(date +%s)
    RPS[$name]=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$SCRATCH/wrk.$name")
    STATUSES[$name]=$(awk '/^status / {printf "%s%s x%s", (n++ ? ", " : ""), $2, $3}' "$SCRATCH/wrk.$name")
    SOCKERR[$name]=$(awk '/Socket errors:/ {sub(/.*Socket errors: /, ""); print}' "$SCRATCH/wrk.$name")
    RSS[$name]=$(awk -v a="$t0" -v b="$t1" -v s="$rss0" '$1 >= a && $1 <= b {if ($2 > m) m = $2; e = $2}
        END {printf "%.0f / %.0f / %.0f MiB", s / 1024, (m > s ? m : s) / 1024, e / 1024}' "$SCRATCH/rss")
    FDS[$name]=$(fds_now)
    log "   ${RPS[$name]} req/s; ${STATUSES[$name]}; socket errors: ${SOCKERR[$name]:-none}; RSS start/max/end ${RSS[$name]}; fds ${FDS[$name]}"
}

log "starting tiercache on $TC_URL"
tc_start
RSS_START=$(rss_now)
quiet_check
phase hot "$SCRATCH/hot.lua" "$SECONDS_"
phase cold "$SCRATCH/cold.lua" "$SECONDS_"
sleep 5 # let fetches and evictions settle before the last sample
RSS_END=$(rss_now)
RSS_MAX=$(awk '{if ($2 > m) m = $2} END {print m + 0}' "$SCRATCH/rss")
EVICTED=$(metric tiercache_disk_evicted_blobs_total)
USED=$(metric tiercache_disk_used_bytes)
FETCHES=$(metric 'tiercache_reads_total{' )
tc_stop

if [ "$LIMIT_SECONDS" -gt 0 ]; then
    log "restarting tiercache with --max-connections $LIMIT"
    tc_start --max-connections "$LIMIT"
    phase limit "$SCRATCH/hot.lua" "$LIMIT_SECONDS"
    REFUSED_FULL=$(metric 'tiercache_http_connections_refused_total{reason="full"}')
    REFUSED_503=$(metric 'tiercache_http_connections_refused_total{reason="overloaded"}')
    RECLAIMED=$(metric tiercache_http_connections_reclaimed_total)
    tc_stop
fi

# --- report --------------------------------------------------------------------------------------
echo
echo "| phase | requests/s | answers by status | socket errors | RSS start / max / end | fds at end |"
echo "|---|---:|---|---|---|---:|"
for p in hot cold limit; do
    [ -n "${RPS[$p]:-}" ] || continue
    printf '| %s | %s | %s | %s | %s | %s |\n' "$p" "${RPS[$p]}" "${STATUSES[$p]}" "${SOCKERR[$p]:-none}" "${RSS[$p]}" "${FDS[$p]}"
done
echo
printf '  %-48s %s\n' "RSS at start / max / end (hot and cold)" \
    "$((RSS_START / 1024)) / $((RSS_MAX / 1024)) / $((RSS_END / 1024)) MiB (limit ${RSS_LIMIT_MIB} MiB)"
printf '  %-48s %s\n' "disk tier after the cold phase" "$((USED / 1048576)) MiB used of ${QUOTA}; ${EVICTED} blobs evicted; ${FETCHES} reads"
if [ "$LIMIT_SECONDS" -gt 0 ]; then
    printf '  %-48s %s\n' "over the limit: limits' own answers" "${REFUSED_503} answered 503 from the reserve, ${REFUSED_FULL} connections closed at once, ${RECLAIMED} idle closed"
    printf '  %-48s %s\n' "over the limit: health checks" "${HEALTH[limit]}"
fi
echo "after   : $(background_load)"

# --- verdict -------------------------------------------------------------------------------------
FAIL=()
for p in hot cold; do
    [[ "${STATUSES[$p]}" =~ ^200\ x[0-9]+$ ]] || FAIL+=("$p: answers other than 200: ${STATUSES[$p]}")
    [ -z "${SOCKERR[$p]}" ] || FAIL+=("$p: socket errors: ${SOCKERR[$p]}")
done
if [ "$LIMIT_SECONDS" -gt 0 ]; then
    others=$(awk '/^status / && $2 != 200 && $2 != 503' "$SCRATCH/wrk.limit")
    [ -z "$others" ] || FAIL+=("limit: answers other than 200 and 503: $others")
    grep -q '^200$' "$SCRATCH/health" || FAIL+=("limit: /healthz never answered 200")
    ! grep -qv '^200$' "$SCRATCH/health" || FAIL+=("limit: ${HEALTH[limit]}")
    # A timeout would be a client left hanging; connect/read/write errors are refused connections.
    ! grep -q 'timeout [1-9]' <<<"${SOCKERR[limit]}" || FAIL+=("limit: wrk timeouts: ${SOCKERR[limit]}")
fi
[ "$((RSS_END / 1024))" -lt "$RSS_LIMIT_MIB" ] || FAIL+=("RSS at the end $((RSS_END / 1024)) MiB >= ${RSS_LIMIT_MIB} MiB")
if ((${#FAIL[@]})); then
    printf 'FAIL: %s\n' "${FAIL[@]}"
    exit 1
fi
echo "PASS: only 200s in the hot and cold phases, only the limits' own answers over the limit, RSS bounded"
