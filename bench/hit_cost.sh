#!/usr/bin/env bash
# What one hot hit costs the server, tiercache against the bare axum handler (a diagnosis of
# bench/hot.sh's figures, not a goal):
#   1. CPU time per request (user and system, from /proc/<pid>/stat) over a wrk run, and the
#      context switches per request the server's threads took;
#   2. instructions per request on the server's tokio worker threads, under
#      valgrind --tool=callgrind (user space only; slow, so a short wrk run with few connections).
#
#   bash bench/hit_cost.sh                           # 1000 x 4 KiB, wrk -t2 -c64 5 s, callgrind 15 s
#   BENCH_CALLGRIND=0 bash bench/hit_cost.sh         # CPU time only
#
# Needs: cargo, curl, nginx, wrk (apt-get installed if missing, as root), and for step 2 valgrind
# (apt-get installed if missing, as root). Everything runs on 127.0.0.1 in a scratch directory.
set -euo pipefail

COUNT=${BENCH_HOT_COUNT:-1000}
SECONDS_CPU=${BENCH_WRK_SECONDS:-5}
SECONDS_CG=${BENCH_CALLGRIND_SECONDS:-15}
CALLGRIND=${BENCH_CALLGRIND:-1}

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_web_tools
if [ "$CALLGRIND" = 1 ] && ! command -v valgrind >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "valgrind not found (or run with BENCH_CALLGRIND=0)"
    log "installing valgrind"
    apt-get install -y -qq valgrind >/dev/null
fi
echo "tiercache hit-cost diagnosis — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
machine_lines
cargo build --release -p tiercache
cargo build --release -p tiercache-server --example bare_axum
find_release tiercache examples/bare_axum
built_line
echo

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/tiercache-hitcost.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

WWW="$SCRATCH/www"
mkdir -p "$WWW"
echo ok >"$WWW/ok"
head -c $((COUNT * 4096)) /dev/urandom | split -b 4096 -d -a 7 - "$WWW/h"
{
    echo 'local paths = {'
    for f in "$WWW"/h*; do echo "  \"/ns/web/$(basename "$f")\","; done
    echo '}'
    echo 'local n, i = #paths, 0'
    echo 'function request() i = i % n + 1; return wrk.format("GET", paths[i]) end'
} >"$SCRATCH/ns.lua"

NG_PORT=$(pick_port 18680)
start_nginx "$WWW" "$NG_PORT" "$SCRATCH/nginx"
PIDS+=("$NGINX_PID")
BARE_PORT=$(pick_port $((NG_PORT + 1)))
"$TARGET/release/examples/bare_axum" "$WWW" "127.0.0.1:$BARE_PORT" &
PIDS+=($!)
wait_http "http://127.0.0.1:$BARE_PORT/ns/web/h0000000" || die "bare_axum did not start"

DATA="$SCRATCH/data"
"$TARGET/release/tiercache" --data-dir "$DATA" ns create web --source "http://127.0.0.1:$NG_PORT/" >/dev/null
TC_PORT=$(pick_port $((BARE_PORT + 1)))
tc_serve() { # [WRAPPER...]: starts tiercache on TC_PORT, warmed (every entry read twice)
    "$@" "$TARGET/release/tiercache" --data-dir "$DATA" serve --listen "127.0.0.1:$TC_PORT" \
        --revalidate-after 1h >>"$SCRATCH/tiercache.log" 2>&1 &
    TC_PID=$!
    PIDS+=("$TC_PID")
    wait_http "http://127.0.0.1:$TC_PORT/healthz" 120 || die "tiercache did not start"
    local p f
    for p in 1 2; do
        for f in "$WWW"/h*; do printf 'url = "http://127.0.0.1:%s/ns/web/%s"\noutput = "/dev/null"\n' "$TC_PORT" "$(basename "$f")"; done |
            curl -sS -K -
    done
}
memory_hits() {
    curl -fsS "http://127.0.0.1:$TC_PORT/metrics" |
        awk '/^tiercache_reads_total\{tier="memory",outcome="hit"\}/ {print $2; f = 1} END {if (!f) print 0}'
}

# 1. CPU time and context switches per request.
switches() { # PID -> "voluntary nonvoluntary", summed over its threads
    awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v, n}' /proc/"$1"/task/*/status
}
cpu_ticks() { awk '{print $14, $15}' /proc/"$1"/stat; } # user, system (clock ticks)
TICK_US=$((1000000 / $(getconf CLK_TCK)))
cpu_row() { # LABEL PID PORT
    local v0 n0 u0 s0 v1 n1 u1 s1 rps n
    read -r v0 n0 < <(switches "$2")
    read -r u0 s0 < <(cpu_ticks "$2")
    rps=$(wrk -t2 -c64 -d"${SECONDS_CPU}"s -s "$SCRATCH/ns.lua" "http://127.0.0.1:$3" | awk '/^Requests\/sec:/ {print $2}')
    read -r v1 n1 < <(switches "$2")
    read -r u1 s1 < <(cpu_ticks "$2")
    n=$(calc '%.0f' "$rps * $SECONDS_CPU")
    printf '| %s | %.0f | %.2f | %.2f | %.3f | %.3f |\n' "$1" "$rps" \
        "$(calc '%f' "($u1 - $u0) * $TICK_US / $n")" "$(calc '%f' "($s1 - $s0) * $TICK_US / $n")" \
        "$(calc '%f' "($v1 - $v0) / $n")" "$(calc '%f' "($n1 - $n0) / $n")"
}
tc_serve
echo "CPU per request (wrk -t2 -c64 -d${SECONDS_CPU}s; wrk shares the CPUs; switches are summed over the"
echo "threads alive at each end, so a thread that exits meanwhile takes its count with it):"
echo
echo "| server | req/s | user µs/req | system µs/req | voluntary switches/req | preemptions/req |"
echo "|---|---:|---:|---:|---:|---:|"
for _ in 1 2; do
    cpu_row "bare axum handler" "${PIDS[1]}" "$BARE_PORT"
    cpu_row "tiercache /ns (memory tier)" "$TC_PID" "$TC_PORT"
done
kill "$TC_PID"
wait "$TC_PID" 2>/dev/null || true
echo

# 2. Instructions per request on the tokio worker threads.
[ "$CALLGRIND" = 1 ] || exit 0
dumped() { # OUT-PREFIX -> the first dump's file, once written (callgrind_control returns before)
    local i f
    for ((i = 0; i < 300; i++)); do
        f=$(compgen -G "$1.*.1" | head -1 || true)
        [ -n "$f" ] && [ -s "$f" ] && { sleep 1; echo "$f"; return 0; }
        sleep 0.1
    done
    die "no callgrind dump at $1.*.1"
}
worker_instructions() { # CALLGRIND-OUT -> instructions under tokio's worker loop
    callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$1" 2>/dev/null |
        awk '/multi_thread::worker::run \[/ && !done {gsub(",", "", $1); print $1; done = 1}' # no early exit: SIGPIPE
}
cg_row() { # LABEL PORT PID OUT-PREFIX HITS-FN
    local h0 h1 out instr
    callgrind_control -z "$3" >/dev/null 2>&1
    h0=$($5)
    wrk -t2 -c16 -d"${SECONDS_CG}"s -s "$SCRATCH/ns.lua" "http://127.0.0.1:$2" >/dev/null
    h1=$($5)
    callgrind_control -d "$3" >/dev/null 2>&1
    out=$(dumped "$4")
    instr=$(worker_instructions "$out")
    [ -n "$instr" ] && [ "$((h1 - h0))" -gt 0 ] || die "no callgrind figures for $1"
    printf '| %s | %d | %d |\n' "$1" "$((h1 - h0))" "$((instr / (h1 - h0)))"
}
log "callgrind: tiercache"
tc_serve valgrind --tool=callgrind --callgrind-out-file="$SCRATCH/cg.tc.%p"
sleep 3
echo "Instructions per request on the server's worker threads (valgrind --tool=callgrind, wrk -t2 -c16 -d${SECONDS_CG}s):"
echo
echo "| server | requests | instructions per request |"
echo "|---|---:|---:|"
cg_row "tiercache /ns (memory tier)" "$TC_PORT" "$TC_PID" "$SCRATCH/cg.tc" memory_hits
log "callgrind: bare axum handler"
CG_BARE_PORT=$(pick_port $((TC_PORT + 1)))
valgrind --tool=callgrind --callgrind-out-file="$SCRATCH/cg.bare.%p" \
    "$TARGET/release/examples/bare_axum" "$WWW" "127.0.0.1:$CG_BARE_PORT" >/dev/null 2>&1 &
CG_BARE_PID=$!
PIDS+=("$CG_BARE_PID")
wait_http "http://127.0.0.1:$CG_BARE_PORT/ns/web/h0000000" 120 || die "bare_axum under valgrind did not start"
# The bare handler has no metrics: its requests are wrk's count.
callgrind_control -z "$CG_BARE_PID" >/dev/null 2>&1
n=$(wrk -t2 -c16 -d"${SECONDS_CG}"s -s "$SCRATCH/ns.lua" "http://127.0.0.1:$CG_BARE_PORT" | awk '/requests in/ {print $1}')
callgrind_control -d "$CG_BARE_PID" >/dev/null 2>&1
instr=$(worker_instructions "$(dumped "$SCRATCH/cg.bare")")
[ -n "$instr" ] && [ "${n:-0}" -gt 0 ] || die "no callgrind figures for the bare handler"
printf '| %s | %d | %d |\n' "bare axum handler" "$n" "$((instr / n))"
