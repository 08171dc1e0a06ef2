#!/usr/bin/env bash
# A directory namespace of a million small files: index, update and serving, against find and nginx.
#
#   bash bench/dir_serve.sh                    # 1,000,000 files of 1 KiB, wrk 5 x 10 s per server
#   BENCH_QUICK=1 BENCH_WRK_SECONDS=3 BENCH_WRK_RUNS=1 bash bench/dir_serve.sh    # smoke run
#   BENCH_SERVE=0 bash bench/dir_serve.sh      # only index and update
#
# What it measures (one run; every timed command is printed before it runs):
#   0. A tree of BENCH_FILES files of BENCH_SMALL_MIN_KIB-BENCH_SMALL_MAX_KIB KiB, BENCH_TOTAL_MIB
#      MiB in all (bench/gen_tree.py; 100 files a directory, two levels down, and whatever the small
#      files leave in one large file), generated once under BENCH_DIR and reused by every later run
#      with the same settings. Not timed. Read into the page cache before the timed commands.
#   1. `tiercache index TREE --ns big` into a fresh data directory (median of BENCH_INDEX_REPS), and
#      `tiercache update --ns big` with no change against a bare stat walk of the same tree,
#      `find TREE -printf '%s %T@ %C@ %i\n'` (BENCH_REPS interleaved runs each, median), each with
#      its peak RSS (GNU time's %M, else its VmHWM sampled until it exits). Files/s and ratios; no goal.
#   2. Serving the same tree over HTTP, tiercache `serve` (release build, memory tier on, the data
#      directory of test 1; GET /ns/big/<path>) against nginx (root = the tree, sendfile on,
#      tcp_nopush on, keep-alive with keepalive_requests 1000000, access log off, worker_processes
#      auto; tiercache writes no access log either), with wrk -t2 -c64:
#        a. one hot file;
#        b. random paths: each request picks one of BENCH_RANDOM_PATHS files of the tree at random
#           (a wrk Lua script over a list file; both servers get the same list and seeds).
#      Before measuring, every listed path must answer 200 from both servers, and a sample of paths
#      the same bytes from both as the file on disk. Each run measures each server once per test
#      (a wrk warm-up of BENCH_WRK_WARM s first), the order rotating between runs; medians of
#      BENCH_WRK_RUNS runs. Goal: tiercache >= 0.8x nginx on both.
#
# Settings (BENCH_QUICK=1 changes the defaults marked *):
#   BENCH_DIR=/var/tmp/tiercache-bench-dirserve   the trees (kept, one per setting), data dirs and
#                                  this run's files
#   BENCH_FILES=1000000*           files in the tree (quick: 20000)
#   BENCH_TOTAL_MIB=1000*          their total size (quick: 20)
#   BENCH_SMALL_MIN_KIB=1          bounds of the small files' sizes (log-uniform)
#   BENCH_SMALL_MAX_KIB=1
#   BENCH_LARGE_MIB=32             about the size of a large file (what the small ones leave)
#   BENCH_INDEX_REPS=3             runs of index, each into a fresh data directory
#   BENCH_REPS=5                   runs of update and of find
#   BENCH_SERVE=1                  0 skips test 2
#   BENCH_RANDOM_PATHS=20000       files in the random-path list (small files only)
#   BENCH_WRK_SECONDS=10           duration of each measured wrk run
#   BENCH_WRK_WARM=2               duration of the wrk warm-up before each measured run
#   BENCH_WRK_RUNS=5               measured runs per server and test (median reported)
#   BENCH_WRK_THREADS=2  BENCH_WRK_CONNS=64
#   BENCH_GOAL=0.8                 tiercache / nginx, both tests
#   BENCH_NGINX_PORT=18780  BENCH_TIERCACHE_PORT=18790   first ports tried
#   BENCH_KEEP=0                   1 keeps the data directories (the tree is always kept)
#
# Needs: cargo, python3 (bench/gen_tree.py, the path list), find, awk, curl, nginx, wrk, and GNU
# time for the peak RSS (nginx-light, wrk and time are apt-get installed if missing, as root; without
# GNU time a python wrapper samples the child's VmHWM). Scratch disk: the tree (at 1,000,000 files
# of 1 KiB about 4.5 GB on a 4 KiB-block file system, and 1,000,000 inodes) and one data directory
# (about 200 MB). Everything listens on 127.0.0.1; no system nginx configuration, log or pid path is
# touched.
set -euo pipefail

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    q_files=20000 q_mib=20
else
    q_files=1000000 q_mib=1000
fi
BENCH_DIR=${BENCH_DIR:-/var/tmp/tiercache-bench-dirserve}
FILES=${BENCH_FILES:-$q_files}
TOTAL_MIB=${BENCH_TOTAL_MIB:-$q_mib}
SMALL_MIN_KIB=${BENCH_SMALL_MIN_KIB:-1}
SMALL_MAX_KIB=${BENCH_SMALL_MAX_KIB:-1}
LARGE_MIB=${BENCH_LARGE_MIB:-32}
INDEX_REPS=${BENCH_INDEX_REPS:-3}
REPS=${BENCH_REPS:-5}
SERVE=${BENCH_SERVE:-1}
RANDOM_PATHS=${BENCH_RANDOM_PATHS:-20000}
WRK_SECONDS=${BENCH_WRK_SECONDS:-10}
WRK_WARM=${BENCH_WRK_WARM:-2}
WRK_RUNS=${BENCH_WRK_RUNS:-5}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_CONNS=${BENCH_WRK_CONNS:-64}
GOAL=${BENCH_GOAL:-0.8}
NGINX_PORT_BASE=${BENCH_NGINX_PORT:-18780}
TC_PORT_BASE=${BENCH_TIERCACHE_PORT:-18790}
KEEP=${BENCH_KEEP:-0}
NS=big
SAMPLE=50 # paths whose bytes are compared between the servers and the file before measuring
# The server runs with its defaults (memory tier on, no watch), whatever the environment says.
unset TIERCACHE_CACHE_ENABLED TIERCACHE_CACHE_TTL TIERCACHE_WATCH TIERCACHE_READ_TOKEN

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for v in FILES TOTAL_MIB SMALL_MIN_KIB SMALL_MAX_KIB LARGE_MIB INDEX_REPS REPS RANDOM_PATHS WRK_SECONDS WRK_RUNS WRK_THREADS WRK_CONNS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
[[ $WRK_WARM =~ ^[0-9]+$ ]] || die "BENCH_WRK_WARM must be a whole number of seconds (got '$WRK_WARM')"
[ "$SERVE" = 0 ] || [ "$SERVE" = 1 ] || die "BENCH_SERVE must be 0 or 1 (got '$SERVE')"

# --- tools ---------------------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust, e.g. from https://rustup.rs)"
command -v python3 >/dev/null 2>&1 || die "python3 not found (it generates the tree and the path list)"
for t in awk find sort xargs cat df cmp; do command -v "$t" >/dev/null 2>&1 || die "$t not found"; done
[ "$SERVE" = 0 ] || need_web_tools
# Peak RSS: GNU time if it is there (or can be installed), else the VmHWM of /proc/PID/status, sampled by python.
gnu_time() { [ -x /usr/bin/time ] && /usr/bin/time -f '%M' -o /dev/null true 2>/dev/null; }
if ! gnu_time && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing time (GNU time, for the peak RSS)"
    apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y time >&2 || log "could not install time"
fi
if gnu_time; then GNU_TIME=1 RSS_TOOL="GNU time (%M)"; else GNU_TIME=0 RSS_TOOL="VmHWM sampled every 2 ms"; fi

# --- machine -------------------------------------------------------------------------------------
mkdir -p "$BENCH_DIR"
echo "tiercache directory-serving benchmark — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
machine_lines
echo "bench fs: $BENCH_DIR: $(df -T "$BENCH_DIR" | awk 'NR == 2 {printf "%s (%s on %s, %s 1K-blocks free)", $2, $1, $7, $5}')"
[ "$SERVE" = 0 ] || web_tools_line
echo "sizes   : tree ${FILES} files / ${TOTAL_MIB} MiB (${SMALL_MIN_KIB}-${SMALL_MAX_KIB} KiB), index x${INDEX_REPS}, update/find x${REPS}$(
    [ "$SERVE" = 0 ] || echo ", wrk -t${WRK_THREADS} -c${WRK_CONNS} -d${WRK_SECONDS}s x${WRK_RUNS} per server and test (after a ${WRK_WARM}s warm-up each), ${RANDOM_PATHS} random paths")$(
    [ "$QUICK" = 1 ] && echo ' (BENCH_QUICK)')"
echo "rss     : peak RSS by ${RSS_TOOL}"
[ "$SERVE" = 0 ] || echo "note    : load generator (wrk), nginx and tiercache all share these $(nproc) CPUs"
BEFORE_LOAD=$(background_load)
echo "before  : $BEFORE_LOAD"
echo

# --- build ---------------------------------------------------------------------------------------
log "building (cargo build --release -p tiercache)"
cargo build --release -p tiercache
find_release tiercache
BUILT=$(built_line)
echo "$BUILT"
echo

# --- scratch, processes, cleanup -----------------------------------------------------------------
RUN="$BENCH_DIR/run" # this run's logs, lists and private binary (replaced by the next run)
rm -rf "$RUN" "$BENCH_DIR"/data-*
mkdir -p "$RUN/bin"
NGINX_PID=""
TC_PID=""
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in $TC_PID $NGINX_PID; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ]; then
        log "kept the data directories under $BENCH_DIR"
    else
        rm -rf "$BENCH_DIR"/data-*
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# A private copy, so a concurrent rebuild of the target directory cannot change it mid-run.
cp "$TARGET/release/tiercache" "$RUN/bin/"
TC="$RUN/bin/tiercache"

now() { date +%s.%N; }
json_field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
# show CMD...: prints the command as it could be pasted into a shell.
show() {
    local a out="+"
    for a in "$@"; do
        if [[ $a =~ ^[A-Za-z0-9_./=:@%+-]+$ ]]; then out+=" $a"; else out+=" '${a//\'/\'\\\'\'}'"; fi
    done
    printf '%s\n' "$out" >&2
}
# timed OUT CMD...: prints the command, runs it with stdout to OUT; prints "WALL_SECONDS PEAK_RSS_KIB".
timed() {
    local out=$1 t0 t1
    shift
    show "$@"
    if [ "$GNU_TIME" = 1 ]; then
        t0=$(now)
        /usr/bin/time -f '%M' -o "$RUN/rss" "$@" >"$out" 2>>"$RUN/stderr.log" || die "failed: $* (see $RUN/stderr.log)"
        t1=$(now)
        printf '%s %s\n' "$(calc '%.4f' "$t1 - $t0")" "$(tail -1 "$RUN/rss")"
    else
        # getrusage(RUSAGE_CHILDREN) would not do: a child forked by python keeps python's RSS as
        # its floor. The child's own high-water mark, sampled until it exits, has none.
        python3 -c '
import subprocess, sys, time
with open(sys.argv[1], "wb") as out:
    t0 = time.monotonic()
    child = subprocess.Popen(sys.argv[2:], stdout=out)
    hwm = 0
    while child.poll() is None:
        try:
            with open("/proc/%d/status" % child.pid) as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        hwm = int(line.split()[1])
        except OSError:
            pass
        time.sleep(0.002)
    t1 = time.monotonic()
if child.returncode:
    sys.exit(child.returncode)
print("%.4f %d" % (t1 - t0, hwm))
' "$out" "$@" 2>>"$RUN/stderr.log" || die "failed: $* (see $RUN/stderr.log)"
    fi
}
list_col() { awk -v c="$2" '{printf "%s%.3f", (NR > 1 ? ", " : ""), $c}' "$1"; } # FILE COLUMN
med_col() { awk -v c="$2" '{print $c}' "$1" | median; }                         # FILE COLUMN
mb() { calc '%.1f' "$1 / 1024"; }                                                # KiB -> MiB

# --- 0. the tree ---------------------------------------------------------------------------------
# One tree per setting, so a smoke run leaves the million-file tree in place.
TREE="$BENCH_DIR/tree-${FILES}-${TOTAL_MIB}m-${SMALL_MIN_KIB}-${SMALL_MAX_KIB}k-${LARGE_MIB}m"
PARAMS="files=$FILES total_mib=$TOTAL_MIB small_kib=$SMALL_MIN_KIB-$SMALL_MAX_KIB large_mib=$LARGE_MIB seed=1 gen=1"
tree_summary() { find "$TREE" -type f -printf '%s\n' | awk '{n++; b += $1} END {printf "files %d bytes %.0f", n, b}'; }
want_summary="files $FILES bytes $((TOTAL_MIB * 1048576))"
if [ -d "$TREE" ] && [ "$(cat "$TREE.params" 2>/dev/null || true)" = "$PARAMS" ] &&
    [ "$(tree_summary)" = "$want_summary" ]; then
    log "reusing the tree in $TREE ($PARAMS)"
else
    log "generating the tree in $TREE ($PARAMS); not timed"
    rm -rf "$TREE" "$TREE.tmp" "$TREE.params"
    t0=$(now)
    show python3 "$REPO/bench/gen_tree.py" "$TREE" --files "$FILES" --total-mib "$TOTAL_MIB" \
        --small-min-kib "$SMALL_MIN_KIB" --small-max-kib "$SMALL_MAX_KIB" --large-mib "$LARGE_MIB" --seed 1
    python3 "$REPO/bench/gen_tree.py" "$TREE" --files "$FILES" --total-mib "$TOTAL_MIB" \
        --small-min-kib "$SMALL_MIN_KIB" --small-max-kib "$SMALL_MAX_KIB" --large-mib "$LARGE_MIB" --seed 1 >&2
    [ "$(tree_summary)" = "$want_summary" ] || die "generated tree: $(tree_summary), expected $want_summary"
    echo "$PARAMS" >"$TREE.params"
    log "generated in $(calc '%.1f' "$(now) - $t0") s"
    # Files changed within 100 ms before they are hashed are "racily clean" and would be read again.
    sleep 1
fi
TOTAL_BYTES=$((TOTAL_MIB * 1048576))
N_LARGE=$(find "$TREE" -type f -size +1M | wc -l)

log "reading the whole tree into the page cache"
t0=$(now)
find "$TREE" -type f -print0 | xargs -0 cat >/dev/null
log "   read in $(calc '%.1f' "$(now) - $t0") s"

# --- 1a. index -----------------------------------------------------------------------------------
log "1. index into a fresh data directory (${INDEX_REPS}x)"
: >"$RUN/index.t"
for ((i = 1; i <= INDEX_REPS; i++)); do
    rm -rf "$BENCH_DIR"/data-*
    D="$BENCH_DIR/data-$i"
    timed "$RUN/index.$i.json" "$TC" --data-dir "$D" index "$TREE" --ns "$NS" --json >>"$RUN/index.t"
    added=$(json_field "$RUN/index.$i.json" n_added)
    hashed=$(json_field "$RUN/index.$i.json" n_hashed)
    [ "$added" = "$FILES" ] && [ "$hashed" = "$FILES" ] ||
        die "index $i: $added added, $hashed hashed, expected $FILES (see $RUN/index.$i.json)"
    log "   $(tail -1 "$RUN/index.t" | awk '{printf "%s s, peak RSS %.1f MiB", $1, $2 / 1024}')"
done
T_INDEX=$(med_col "$RUN/index.t" 1)
RSS_INDEX=$(med_col "$RUN/index.t" 2)
D="$BENCH_DIR/data-$INDEX_REPS" # the last one stays for update and serving

# --- 1b. update with no change, and find -------------------------------------------------------
log "1. update with no change against find (one settling update, one warm-up each, then ${REPS}x interleaved)"
# Files written shortly before they were hashed are rehashed once; this settles them.
timed "$RUN/update.settle.json" "$TC" --data-dir "$D" update --ns "$NS" --json >/dev/null
SETTLE_HASHED=$(json_field "$RUN/update.settle.json" n_hashed)
FIND_CMD=(find "$TREE" -printf '%s %T@ %C@ %i\n')
timed /dev/null "${FIND_CMD[@]}" >/dev/null
timed "$RUN/update.warm.json" "$TC" --data-dir "$D" update --ns "$NS" --json >/dev/null
: >"$RUN/find.t"
: >"$RUN/update.t"
for ((i = 1; i <= REPS; i++)); do
    timed /dev/null "${FIND_CMD[@]}" >>"$RUN/find.t"
    timed "$RUN/update.$i.json" "$TC" --data-dir "$D" update --ns "$NS" --json >>"$RUN/update.t"
    for f in n_added n_changed n_removed n_hashed; do
        [ "$(json_field "$RUN/update.$i.json" "$f")" = 0 ] || die "update $i: $f is not 0 (see $RUN/update.$i.json)"
    done
    [ "$(json_field "$RUN/update.$i.json" n_unchanged)" = "$FILES" ] || die "update $i: not all $FILES files unchanged"
done
T_FIND=$(med_col "$RUN/find.t" 1)
RSS_FIND=$(med_col "$RUN/find.t" 2)
T_UPD=$(med_col "$RUN/update.t" 1)
RSS_UPD=$(med_col "$RUN/update.t" 2)
log "   update $(list_col "$RUN/update.t" 1) s; find $(list_col "$RUN/find.t" 1) s"

# --- 2. serving ----------------------------------------------------------------------------------
if [ "$SERVE" = 1 ]; then
    pick_ports
    # The random-path list: small files only, the same for both servers, percent-encoded where a
    # byte is not safe in a URL path.
    log "2. listing ${RANDOM_PATHS} random paths of the tree"
    python3 - "$TREE" "$RANDOM_PATHS" "$RUN/paths" "$SAMPLE" <<'PY'
import os, random, sys
from urllib.parse import quote
tree, want, out, sample = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
paths = []
for d, dirs, files in os.walk(tree):
    dirs.sort()
    rel = os.path.relpath(d, tree)
    if rel.split(os.sep)[0] == "large":
        continue
    for f in sorted(files):
        paths.append(f if rel == "." else os.path.join(rel, f))
rnd = random.Random(1)
picked = rnd.sample(paths, min(want, len(paths)))
with open(out + ".txt", "w") as raw, open(out + ".url", "w") as url:
    for p in picked:
        raw.write(p + "\n")
        url.write(quote(p, safe="/") + "\n")
with open(out + ".sample", "w") as s:
    for i in rnd.sample(range(len(picked)), min(sample, len(picked))):
        s.write(picked[i] + "\t" + quote(picked[i], safe="/") + "\n")
PY
    N_PATHS=$(wc -l <"$RUN/paths.url")
    HOT_RAW=$(head -1 "$RUN/paths.txt")
    HOT=$(head -1 "$RUN/paths.url")
    HOT_BYTES=$(stat -c %s "$TREE/$HOT_RAW")

    start_nginx "$TREE" "$NGINX_PORT" "$RUN/nginx" off "$HOT"
    log "starting tiercache serve on $TC_URL (data dir $D, memory tier on)"
    # No access log, as nginx here.
    "$TC" --data-dir "$D" serve --listen "127.0.0.1:$TC_PORT" --access-log false >>"$RUN/tiercache.log" 2>&1 &
    TC_PID=$!
    wait_http "$TC_URL/healthz" || { tail -20 "$RUN/tiercache.log" >&2; die "tiercache did not start"; }

    declare -A HOST=([ng]="$NG_URL" [tc]="$TC_URL")
    declare -A PREFIX=([ng]="/" [tc]="/ns/$NS/")
    declare -A BASE=([ng]="$NG_URL/" [tc]="$TC_URL/ns/$NS/")
    declare -A LABEL=([ng]="nginx (files, sendfile, no access log)" [tc]="tiercache serve: /ns/$NS/<path>")
    # Every listed path once, on one connection: every answer must be 200.
    for s in ng tc; do
        awk -v b="${BASE[$s]}" '{printf "url = \"%s%s\"\noutput = \"/dev/null\"\n", b, $0}' "$RUN/paths.url" >"$RUN/$s.curl"
        log "   first pass over ${N_PATHS} paths: ${LABEL[$s]}"
        t0=$(now)
        codes=$(curl -sS -K "$RUN/$s.curl" -w '%{http_code}\n' | sort | uniq -c | awk '{printf "%s x%s ", $2, $1}')
        [ "$codes" = "200 x$N_PATHS " ] || die "${LABEL[$s]}: answers $codes"
        log "   ${N_PATHS} x 200 in $(calc '%.1f' "$(now) - $t0") s"
    done
    # The same bytes from both, and the file's.
    log "   comparing the bytes of $(wc -l <"$RUN/paths.sample") sample paths and the hot file"
    { printf '%s\t%s\n' "$HOT_RAW" "$HOT"; cat "$RUN/paths.sample"; } >"$RUN/compare"
    while IFS=$'\t' read -r raw enc; do
        for s in ng tc; do
            code=$(curl -sS -o "$RUN/body.$s" -w '%{http_code}' "${BASE[$s]}$enc")
            [ "$code" = 200 ] || die "${LABEL[$s]}: GET $enc answered $code"
            cmp -s "$RUN/body.$s" "$TREE/$raw" || die "${LABEL[$s]}: GET $enc differs from the file"
        done
    done <"$RUN/compare"
    curl -fsS -D "$RUN/h" -o /dev/null "$TC_URL/ns/$NS/$HOT"
    TC_TIER=$(awk -F': *' 'tolower($1) == "x-tiercache-tier" {print $2}' "$RUN/h" | tr -d '\r')

    # wrk scripts: the random test picks a path of the list per request (seeded per thread, the
    # same seeds for both servers).
    for s in ng tc; do
        cat >"$RUN/$s.random.lua" <<LUA
-- Generated by bench/dir_serve.sh: GET one of the listed paths at random, per request.
local prefix = "${PREFIX[$s]}"
local paths = {}
for line in io.lines("$RUN/paths.url") do paths[#paths + 1] = prefix .. line end
local n = #paths
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end
function init(args)
  math.randomseed(seed or 1)
end
function request()
  return wrk.format("GET", paths[math.random(n)])
end
LUA
    done
    WARNINGS=()
    run_wrk() { # URL SECONDS OUT [LUA] -> requests/s; fails on errors, warns on non-2xx answers
        local script=()
        [ -z "${4:-}" ] || script=(-s "$4")
        wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$2"s --latency "${script[@]}" "$1" >"$3" 2>&1 || die "wrk failed: $(cat "$3")"
        if grep -q -e 'Non-2xx' -e 'Socket errors' "$3"; then
            WARNINGS+=("$(basename "$3"): $(grep -e 'Non-2xx' -e 'Socket errors' "$3" | tr -s ' ' | tr '\n' ' ')")
            log "warning: ${WARNINGS[-1]}"
        fi
        awk '/^Requests\/sec:/ {print $2}' "$3"
    }
    measure() { # TEST SERVER RUN
        local t=$1 s=$2 i=$3 url lua=""
        case $t in
        hot) url="${BASE[$s]}$HOT" ;;
        random) url="${HOST[$s]}" lua="$RUN/$s.random.lua" ;;
        esac
        [ "$WRK_WARM" = 0 ] || run_wrk "$url" "$WRK_WARM" "$RUN/wrk.warm" "$lua" >/dev/null
        run_wrk "$url" "$WRK_SECONDS" "$RUN/wrk.$t.$s.$i" "$lua" >>"$RUN/r.$t.$s"
        log "   run $((i + 1)), $t: ${LABEL[$s]}: $(tail -1 "$RUN/r.$t.$s") req/s"
    }
    TESTS=(hot random)
    for t in "${TESTS[@]}"; do for s in ng tc; do : >"$RUN/r.$t.$s"; done; done
    wait_idle "$TC_PID"
    quiet_check
    log "wrk: ${WRK_RUNS} run(s); each measures both servers on both tests, ${WRK_SECONDS}s each (after a ${WRK_WARM}s warm-up)"
    for ((i = 0; i < WRK_RUNS; i++)); do
        for t in "${TESTS[@]}"; do
            if ((i % 2 == 0)); then order=(ng tc); else order=(tc ng); fi
            for s in "${order[@]}"; do measure "$t" "$s" "$i"; done
        done
        quiet_check
    done
    TC_HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$TC_PID/status")
fi

# --- report --------------------------------------------------------------------------------------
after_load=$(background_load)
per_s() { calc '%.0f' "$FILES / $1"; }
echo
echo "## A directory namespace of ${FILES} files ($(date -u '+%Y-%m-%d'), ${BUILT#built   : }, release build)"
echo
echo "Machine: $(nproc) CPUs, $(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r); BENCH_DIR on $(df -T "$BENCH_DIR" | awk 'NR == 2 {print $2}')."
echo "Tree: ${FILES} files, $(calc '%.0f' "$TOTAL_BYTES / 1048576") MiB ($((FILES - N_LARGE)) of ${SMALL_MIN_KIB}–${SMALL_MAX_KIB} KiB, ${N_LARGE} large), in the page cache. Other work on the machine: ${BEFORE_LOAD%% *} of CPU busy before, ${after_load%% *} after$( [ "$SERVE" = 0 ] || echo ", at most ${OTHER_MAX}% between measurements")."
echo
echo "| command | wall time (median) | files/s | peak RSS | runs (s) |"
echo "|---|---:|---:|---:|---|"
echo "| \`tiercache index TREE --ns ${NS}\`, fresh data dir, median of ${INDEX_REPS} | $(calc '%.3f' "$T_INDEX") s | $(per_s "$T_INDEX") | $(mb "$RSS_INDEX") MiB | $(list_col "$RUN/index.t" 1) |"
echo "| \`tiercache update --ns ${NS}\`, no change, median of ${REPS} | $(calc '%.3f' "$T_UPD") s | $(per_s "$T_UPD") | $(mb "$RSS_UPD") MiB | $(list_col "$RUN/update.t" 1) |"
echo "| \`find TREE -printf '%s %T@ %C@ %i\\n'\`, median of ${REPS} | $(calc '%.3f' "$T_FIND") s | $(per_s "$T_FIND") | $(mb "$RSS_FIND") MiB | $(list_col "$RUN/find.t" 1) |"
echo
rss_runs() { awk '{printf "%s%.1f", (NR > 1 ? ", " : ""), $2 / 1024}' "$1"; }
echo "Peak RSS of each run (MiB; the median is reported, as this kernel has been seen to report an absurd peak now and then): index $(rss_runs "$RUN/index.t"); update $(rss_runs "$RUN/update.t"); find $(rss_runs "$RUN/find.t")."
echo
echo "Ratios (no goal): update ÷ find $(calc '%.2f' "$T_UPD / $T_FIND")× in time, $(calc '%.2f' "$RSS_UPD / $RSS_FIND")× in peak RSS; index ÷ find $(calc '%.2f' "$T_INDEX / $T_FIND")× in time. Wall times include process start; peak RSS by ${RSS_TOOL}; the settling update before them rehashed ${SETTLE_HASHED} files."
if [ "$SERVE" = 1 ]; then
    declare -A MED=()
    for t in "${TESTS[@]}"; do for s in ng tc; do MED[$t.$s]=$(median <"$RUN/r.$t.$s"); done; done
    p50() { awk '/^ +50%/ {print $2}' "$1"; }
    p99() { awk '/^ +99%/ {print $2}' "$1"; }
    declare -A TITLE=([hot]="one hot file (${HOT}, ${HOT_BYTES} bytes)" [random]="random paths over ${N_PATHS} files")
    echo
    echo "Serving, wrk -t${WRK_THREADS} -c${WRK_CONNS} -d${WRK_SECONDS}s, median of ${WRK_RUNS} (after a ${WRK_WARM}s warm-up each, order rotating):"
    echo
    echo "| test | server | requests/s (median) | ratio to nginx | runs (req/s) | p50 / p99 (run 1) |"
    echo "|---|---|---:|---:|---|---|"
    for t in "${TESTS[@]}"; do
        for s in ng tc; do
            printf '| %s | %s | %s | %s | %s | %s / %s |\n' "${TITLE[$t]}" "${LABEL[$s]}" "$(calc '%.0f' "${MED[$t.$s]}")" \
                "$(calc '%.2f' "${MED[$t.$s]} / ${MED[$t.ng]}")" \
                "$(awk '{printf "%s%.0f", (NR > 1 ? ", " : ""), $1}' "$RUN/r.$t.$s")" \
                "$(p50 "$RUN/wrk.$t.$s.0")" "$(p99 "$RUN/wrk.$t.$s.0")"
        done
    done
    echo
    for t in "${TESTS[@]}"; do
        r=$(calc '%.2f' "${MED[$t.tc]} / ${MED[$t.ng]}")
        echo "goal: ${TITLE[$t]}: tiercache ≥ ${GOAL}× nginx — ${r}× — $(awk -v r="$r" -v g="$GOAL" 'BEGIN {print (r >= g) ? "PASS" : "FAIL"}')"
    done
    echo
    echo "context (no goal):"
    echo "  tier of the hot file (x-tiercache-tier): ${TC_TIER:-none}"
    echo "  tiercache serve peak RSS (VmHWM) after the runs: $(mb "${TC_HWM:-0}") MiB"
    echo "  before measuring: ${N_PATHS} paths answered 200 by both; $(wc -l <"$RUN/paths.sample") sample paths and the hot file gave the file's bytes from both"
    ((${#WARNINGS[@]} == 0)) || printf '  wrk warning: %s\n' "${WARNINGS[@]}"
fi
[ "$QUICK" != 1 ] || echo "BENCH_QUICK=1: smoke-test sizes; not the issue's million files."
echo "after   : $after_load"
