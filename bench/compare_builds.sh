#!/usr/bin/env bash
# Hot memory-tier hits, CPU time a request, of two tiercache binaries (or more), alternately.
#
#   bash bench/compare_builds.sh OLD_BINARY NEW_BINARY [MORE...]     # 4 rounds of 8 s each
#   BENCH_ROUNDS=6 bash bench/compare_builds.sh ...
#
# For telling whether a change made the hot path dearer when requests/s alone (wrk shares the 2
# CPUs) is too noisy to say: BENCH_HOT_COUNT files of 4 KiB served by nginx are the source of a
# namespace `web`; each binary gets its own data directory (made by itself, so older and newer
# index schemas never meet), is warmed with two passes over every key, and is then measured with
# wrk -t2 -c64 for 8 s cycling over all keys: requests/s and the server's CPU time (user + system,
# all threads, /proc/PID/task/*/stat) divided by the requests answered. Binaries that know
# `--access-log` run with `--access-log false` (the older ones had no access log). Rounds
# alternate the binaries; the median of each is printed with every round's figure.
#
# Build an older commit's binary with, for example:
#   git worktree add /tmp/old COMMIT && (cd /tmp/old && cargo build --release -p tiercache)
# (its own target directory: a shared one can mix the two trees' workspace crates).
set -euo pipefail

ROUNDS=${BENCH_ROUNDS:-4}
COUNT=${BENCH_HOT_COUNT:-1000}
SECONDS_EACH=${BENCH_WRK_SECONDS:-8}
KEEP=${BENCH_KEEP:-0}
NGINX_PORT_BASE=${BENCH_NGINX_PORT:-18620}
TC_PORT_BASE=${BENCH_TIERCACHE_PORT:-18630}

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# >= 2)) || die "usage: bash bench/compare_builds.sh OLD_BINARY NEW_BINARY [MORE...]"
for b in "$@"; do [ -x "$b" ] || die "$b is not an executable"; done
need_web_tools

echo "tiercache build comparison — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
machine_lines
web_tools_line
make_scratch compare
pick_ports
WWW="$SCRATCH/www"
mkdir -p "$WWW"
echo ok >"$WWW/ok"
for ((i = 0; i < COUNT; i++)); do head -c 4096 /dev/urandom >"$WWW/$(printf 'h%05d' "$i")"; done
start_nginx "$WWW" "$NGINX_PORT" "$SCRATCH/ng" off
PIDS+=("$NGINX_PID")
SRC="http://127.0.0.1:$NGINX_PORT/"
{
    echo 'local i = 0'
    echo 'function request()'
    echo "  i = i % $COUNT + 1"
    echo '  return wrk.format("GET", string.format("/ns/web/h%05d", i - 1))'
    echo 'end'
} >"$SCRATCH/ns.lua"
for ((i = 0; i < COUNT; i++)); do printf 'url = "%s/ns/web/h%05d"\noutput = "/dev/null"\n' "$TC_URL" "$i"; done >"$SCRATCH/ns.curl"

cpu_ticks() { # PID -> user + system ticks of all its threads
    local s=0 t f
    for t in /proc/"$1"/task/*; do
        read -r -a f <"$t/stat"
        s=$((s + f[13] + f[14]))
    done
    echo "$s"
}
measure() { # INDEX BINARY -> appends "rps us" to $SCRATCH/r.INDEX
    local i=$1 bin=$2 data=$SCRATCH/data.$1 extra=() pid a b out n rps
    [ -d "$data" ] || "$bin" --data-dir "$data" ns create web --source "$SRC" >/dev/null
    "$bin" serve --help 2>/dev/null | grep -q -- --access-log && extra=(--access-log false)
    "$bin" --data-dir "$data" serve --listen "127.0.0.1:$TC_PORT" --revalidate-after 1h "${extra[@]}" \
        >>"$SCRATCH/tiercache.$i.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "$TC_URL/healthz" || die "$bin did not start: $(tail -5 "$SCRATCH/tiercache.$i.log")"
    curl -s -K "$SCRATCH/ns.curl"
    wait_idle "$pid"
    curl -s -K "$SCRATCH/ns.curl"
    wrk -t2 -c64 -d2s -s "$SCRATCH/ns.lua" "$TC_URL" >/dev/null
    a=$(cpu_ticks "$pid")
    out=$(wrk -t2 -c64 -d"${SECONDS_EACH}"s -s "$SCRATCH/ns.lua" "$TC_URL")
    b=$(cpu_ticks "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    ! grep -q -e 'Non-2xx' -e 'Socket errors' <<<"$out" || die "$bin: $(grep -e 'Non-2xx' -e 'Socket errors' <<<"$out")"
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    echo "$rps $(calc '%.2f' "($b - $a) / $(getconf CLK_TCK) * 1000000 / $n")" >>"$SCRATCH/r.$i"
    log "   $(basename "$bin"): $(tail -1 "$SCRATCH/r.$i" | awk '{printf "%.0f req/s, %s us CPU a request", $1, $2}')"
}
quiet_check
for ((r = 0; r < ROUNDS; r++)); do
    i=0
    for bin in "$@"; do
        measure "$i" "$bin"
        i=$((i + 1))
    done
done
quiet_check

echo
echo "hot 4 KiB memory-tier hits, ${COUNT} keys, wrk -t2 -c64 -d${SECONDS_EACH}s, ${ROUNDS} rounds, medians"
echo
echo "| binary | requests/s | CPU µs a request | rounds (µs) |"
echo "|---|---:|---:|---|"
i=0
for bin in "$@"; do
    printf '| %s | %s | %s | %s |\n' "$bin" "$(awk '{print $1}' "$SCRATCH/r.$i" | median | xargs printf '%.0f')" \
        "$(awk '{print $2}' "$SCRATCH/r.$i" | median)" "$(awk '{printf "%s%s", (NR > 1 ? ", " : ""), $2}' "$SCRATCH/r.$i")"
    i=$((i + 1))
done
echo "other work on the machine between measurements: at most ${OTHER_MAX}% of CPU"
