#!/usr/bin/env bash
# What the access log costs hot hits: `tiercache serve` with `--access-log true` (the default) and
# `--access-log false`, each serving one 4 KiB entry from the memory tier to `wrk -t2 -c64`,
# alternately, BENCH_ACCESS_RUNS times each; prints the requests/s and the server's CPU time a
# request (user + system, from /proc/PID/stat) of every run, their medians and the ratios. The
# log goes to a file, as a service's standard error would.
#
#   bash bench/access_log.sh                              # 3 runs of 5 s each way
#   BENCH_ACCESS_RUNS=1 BENCH_ACCESS_SECONDS=2 bash bench/access_log.sh   # quick
#
# Needs: cargo, curl, wrk (apt-get installed if missing, as root). Runs on 127.0.0.1 in a scratch
# directory under /var/tmp, removed on exit (BENCH_KEEP=1 keeps it).
set -euo pipefail

RUNS=${BENCH_ACCESS_RUNS:-3}
SECONDS_EACH=${BENCH_ACCESS_SECONDS:-5}
KEEP=${BENCH_KEEP:-0}
TOKEN=bench-access-log-write-token-0123

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $RUNS =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] && [ "$RUNS" -le 20 ] || die "BENCH_ACCESS_RUNS must be 1 to 20"
[[ $SECONDS_EACH =~ ^[0-9]+$ ]] && [ "$SECONDS_EACH" -ge 1 ] && [ "$SECONDS_EACH" -le 120 ] ||
    die "BENCH_ACCESS_SECONDS must be 1 to 120"
need_web_tools
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tiercache-target}
log "building (release): tiercache"
cargo build --release --locked -q -p tiercache --bin tiercache
find_release tiercache
make_scratch access-log
TC=$SCRATCH/tiercache
cp "$TARGET/release/tiercache" "$TC"
head -c 4096 /dev/urandom >"$SCRATCH/entry"
PORT=$(pick_port 18770)
URL="http://127.0.0.1:$PORT/ns/hot/entry"

TICKS=$(getconf CLK_TCK)
ticks_of() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system CPU of PID, in ticks

run() { # ACCESS_LOG: prints the requests/s of one wrk run and the server's CPU microseconds a request
    local data=$SCRATCH/data-$1 pid out t0 t1 n rps
    rm -rf "$data"
    "$TC" --data-dir "$data" ns create hot >/dev/null
    TIERCACHE_WRITE_TOKEN=$TOKEN "$TC" --data-dir "$data" serve --listen "127.0.0.1:$PORT" --access-log "$1" \
        >>"$SCRATCH/serve-$1.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$PORT/healthz" || die "tiercache did not start"
    curl -sf -X PUT -H "Authorization: Bearer $TOKEN" --data-binary @"$SCRATCH/entry" "$URL" -o /dev/null
    for _ in 1 2 3; do curl -sf "$URL" -o /dev/null; done # into the memory tier
    curl -sfD - "$URL" -o /dev/null | grep -qi '^x-tiercache-tier: memory' || die "the entry is not served from memory"
    t0=$(ticks_of "$pid")
    out=$(wrk -t2 -c64 -d"${SECONDS_EACH}s" "$URL")
    t1=$(ticks_of "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    n=$(awk '/ requests in / {print $1}' <<<"$out")
    echo "$rps $(calc '%.2f' "($t1 - $t0) * 1000000 / $TICKS / $n")"
}

declare -A RPS=([true]="" [false]="") CPU=([true]="" [false]="")
for i in $(seq "$RUNS"); do
    for mode in true false; do
        read -r rps cpu < <(run "$mode")
        log "run $i, access log $mode: $rps requests/s, $cpu µs of server CPU a request"
        RPS[$mode]+="$rps "
        CPU[$mode]+="$cpu "
    done
done
machine_lines
built_line
web_tools_line
med() { tr ' ' '\n' <<<"$1" | grep . | median; }
on=$(med "${RPS[true]}") off=$(med "${RPS[false]}")
cpu_on=$(med "${CPU[true]}") cpu_off=$(med "${CPU[false]}")
printf '%-26s %12s requests/s  %8s µs CPU/request   (runs: %s; %s)\n' "access log on (default)" "$on" "$cpu_on" \
    "${RPS[true]% }" "${CPU[true]% }"
printf '%-26s %12s requests/s  %8s µs CPU/request   (runs: %s; %s)\n' "access log off" "$off" "$cpu_off" \
    "${RPS[false]% }" "${CPU[false]% }"
printf '%-26s %12s               %8s\n' "on / off" "$(calc '%.2f' "$on / $off")" "$(calc '%.2f' "$cpu_on / $cpu_off")"
