#!/usr/bin/env bash
# tiercache directory-namespace benchmark: update and index of a real tree, and lookup by path.
#
#   bash bench/dir.sh                 # full sizes: 100,000 files / 3 GiB, 1,000,000 lookup rows
#   BENCH_QUICK=1 bash bench/dir.sh   # smoke run: 2,000 files / 64 MiB, 50,000 lookup rows
#
# What it measures (one run; every timed command is printed before it runs):
#   1. `tiercache update` of an indexed tree in which nothing changed, against a bare stat walk of
#      the same tree (`find DIR -printf '%s %T@ %C@ %i\n'`), both with warm page and dentry caches.
#      Median wall time of BENCH_REPS interleaved runs of each. Goal: update <= 1.5x find.
#   2. `tiercache index` of the whole tree into a fresh data directory, with the tree in the page
#      cache, against the hashing limit: total bytes / (single-core MD5+SHA-256 throughput x nproc).
#      The throughput is measured in the same run by crates/core/examples/sha256_speed.rs (its md5+sha256 line) (median
#      of 3). Median wall time of BENCH_INDEX_REPS runs. Goal: index <= 1.3x the limit.
#   3. `Index::get_file` by path in a read cache of BENCH_LOOKUP_ROWS rows written straight through
#      tiercache_index (no real tree): crates/engine/examples/dir_lookup.rs. One thread, random
#      existing paths (and a tenth as many missing ones). Goal: p99 < 100 us. Also reports the
#      database size per row after VACUUM (the seed quotes about 200 bytes) and the same lookups
#      through spawn_blocking, the hop the engine's reads make.
#
# Settings (BENCH_QUICK=1 changes the defaults marked *):
#   BENCH_DIR=/var/tmp/tiercache-bench-dir   where the tree, lookup database and data dirs live
#   BENCH_FILES=100000*            files in the tree
#   BENCH_TOTAL_MIB=3072*          their total size; small files (log-uniform between the two bounds
#   BENCH_SMALL_MIN_KIB=1          below) take what they take, a few large files of about
#   BENCH_SMALL_MAX_KIB=64         BENCH_LARGE_MIB each the rest (100,000 x ~15 KiB = ~1.5 GiB small,
#   BENCH_LARGE_MIB=32             ~50 large files in the default mix)
#   BENCH_REPS=5                   runs of update and of find (test 1)
#   BENCH_INDEX_REPS=3             runs of index (test 2)
#   BENCH_HASH_MIB=256*            in-memory buffer for the hashing speed
#   BENCH_LOOKUP_ROWS=1000000*     rows in the lookup database (test 3)
#   BENCH_LOOKUPS=100000*          timed lookups of existing paths
#   BENCH_KEEP=0                   1 keeps the data directories (the tree and lookup database are
#                                  always kept, and reused by the next run with the same settings)
#
# Needs: cargo, python3 (tree generator bench/gen_tree.py), find, awk. Generating the tree and the
# lookup database is not timed. Scratch disk: the tree (BENCH_TOTAL_MIB), the lookup database
# (~150 MB at 1,000,000 rows), one data directory at a time.
set -euo pipefail

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    q_files=2000 q_mib=64 q_hash=64 q_rows=50000 q_lookups=20000
else
    q_files=100000 q_mib=3072 q_hash=256 q_rows=1000000 q_lookups=100000
fi
BENCH_DIR=${BENCH_DIR:-/var/tmp/tiercache-bench-dir}
FILES=${BENCH_FILES:-$q_files}
TOTAL_MIB=${BENCH_TOTAL_MIB:-$q_mib}
SMALL_MIN_KIB=${BENCH_SMALL_MIN_KIB:-1}
SMALL_MAX_KIB=${BENCH_SMALL_MAX_KIB:-64}
LARGE_MIB=${BENCH_LARGE_MIB:-32}
REPS=${BENCH_REPS:-5}
INDEX_REPS=${BENCH_INDEX_REPS:-3}
HASH_MIB=${BENCH_HASH_MIB:-$q_hash}
LOOKUP_ROWS=${BENCH_LOOKUP_ROWS:-$q_rows}
LOOKUPS=${BENCH_LOOKUPS:-$q_lookups}
KEEP=${BENCH_KEEP:-0}
NS=bench

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"


for v in FILES TOTAL_MIB SMALL_MIN_KIB SMALL_MAX_KIB LARGE_MIB REPS INDEX_REPS HASH_MIB LOOKUP_ROWS LOOKUPS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust, e.g. from https://rustup.rs)"
command -v python3 >/dev/null 2>&1 || die "python3 not found (it generates the test tree)"
for t in awk find sort xargs cat df nproc; do command -v "$t" >/dev/null 2>&1 || die "$t not found"; done

# --- machine -------------------------------------------------------------------------------------
mkdir -p "$BENCH_DIR"
CORES=$(nproc)
cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
cpu_flags=$(grep -m1 -o -w -e sha_ni -e avx2 -e avx512f /proc/cpuinfo | sort -u | tr '\n' ' ' || true)
mem_total=$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
mem_avail=$(awk '/^MemAvailable/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
fs_line=$(df -T "$BENCH_DIR" | awk 'NR == 2 {printf "%s (%s on %s, %s 1K-blocks free)", $2, $1, $7, $5}')
echo "tiercache directory benchmark — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine : ${CORES} CPUs (nproc), ${cpu_model:-unknown CPU} (${cpu_flags% }), kernel $(uname -r)"
echo "memory  : ${mem_total} total, ${mem_avail} available"
echo "bench fs: $BENCH_DIR: $fs_line"
echo "sizes   : tree ${FILES} files / ${TOTAL_MIB} MiB (small ${SMALL_MIN_KIB}-${SMALL_MAX_KIB} KiB, large ~${LARGE_MIB} MiB)," \
    "update/find x${REPS}, index x${INDEX_REPS}, hash ${HASH_MIB} MiB x3, lookup ${LOOKUP_ROWS} rows / ${LOOKUPS} lookups$([ "$QUICK" = 1 ] && echo ' (BENCH_QUICK)')"
BEFORE_LOAD=$(background_load)
echo "before  : $BEFORE_LOAD"
echo

# --- build ---------------------------------------------------------------------------------------
log "building (release): tiercache, examples sha256_speed and dir_lookup"
cargo build --release -p tiercache
cargo build --release -p tiercache-core --example sha256_speed
cargo build --release -p tiercache-engine --example dir_lookup
find_release tiercache examples/sha256_speed examples/dir_lookup
dirty=$(git status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null | awk '{print $2}' | tr '\n' ' ' || true)
BUILT="$(git rev-parse --short HEAD 2>/dev/null || echo '?')${dirty:+ + uncommitted changes to ${dirty% }}"
echo "built   : $BUILT"
echo

# --- scratch, cleanup ----------------------------------------------------------------------------
RUN="$BENCH_DIR/run" # this run's logs and private binaries (replaced by the next run)
rm -rf "$RUN"
mkdir -p "$RUN/bin"
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$KEEP" = 1 ]; then
        log "kept data directories under $BENCH_DIR"
    else
        rm -rf "$BENCH_DIR"/data-*
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Private copies, so a concurrent rebuild of the target directory cannot change them mid-run.
cp "$TARGET/release/tiercache" "$TARGET/release/examples/sha256_speed" "$TARGET/release/examples/dir_lookup" "$RUN/bin/"
TC="$RUN/bin/tiercache"

now() { date +%s.%N; }
verdict() { awk -v r="$1" -v op="$2" -v g="$3" 'BEGIN {ok = (op == "<") ? r < g : r <= g; print ok ? "PASS" : "MISS"}'; }
json_field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
# kv FILE LABEL KEY: the value after KEY on the line of FILE that starts with LABEL.
kv() { awk -v l="$2" -v k="$3" '$1 == l {for (i = 2; i < NF; i++) if ($i == k) {print $(i + 1); exit}}' "$1"; }
# show CMD...: prints the command as it could be pasted into a shell.
show() {
    local a out="+"
    for a in "$@"; do
        if [[ $a =~ ^[A-Za-z0-9_./=:@%+-]+$ ]]; then out+=" $a"; else out+=" '${a//\'/\'\\\'\'}'"; fi
    done
    printf '%s\n' "$out" >&2
}
# timed OUT_FILE CMD...: prints the command, runs it with stdout to OUT_FILE, prints wall seconds.
timed() {
    local out=$1 t0 t1
    shift
    show "$@"
    t0=$(now)
    "$@" >"$out" 2>>"$RUN/stderr.log" || die "failed: $* (see $RUN/stderr.log)"
    t1=$(now)
    printf '%s\n' "$(calc '%.4f' "$t1 - $t0")"
}
list_times() { awk '{printf "%s%.3f", (NR > 1 ? ", " : ""), $1}' "$1"; }

# --- the tree ------------------------------------------------------------------------------------
TREE="$BENCH_DIR/tree"
PARAMS="files=$FILES total_mib=$TOTAL_MIB small_kib=$SMALL_MIN_KIB-$SMALL_MAX_KIB large_mib=$LARGE_MIB seed=1 gen=1"
tree_summary() { find "$TREE" -type f -printf '%s\n' | awk '{n++; b += $1} END {printf "files %d bytes %.0f", n, b}'; }
want_summary="files $FILES bytes $((TOTAL_MIB * 1048576))"
if [ -d "$TREE" ] && [ "$(cat "$BENCH_DIR/tree.params" 2>/dev/null || true)" = "$PARAMS" ] &&
    [ "$(tree_summary)" = "$want_summary" ]; then
    log "reusing the tree in $TREE ($PARAMS)"
else
    log "generating the tree in $TREE ($PARAMS); not timed"
    rm -rf "$TREE" "$TREE.tmp" "$BENCH_DIR/tree.params"
    t0=$(now)
    python3 "$REPO/bench/gen_tree.py" "$TREE" --files "$FILES" --total-mib "$TOTAL_MIB" \
        --small-min-kib "$SMALL_MIN_KIB" --small-max-kib "$SMALL_MAX_KIB" --large-mib "$LARGE_MIB" --seed 1 >&2
    [ "$(tree_summary)" = "$want_summary" ] || die "generated tree: $(tree_summary), expected $want_summary"
    echo "$PARAMS" >"$BENCH_DIR/tree.params"
    log "generated in $(calc '%.1f' "$(now) - $t0") s"
    # Files changed within 100 ms before they are hashed are "racily clean" and would be read again.
    sleep 1
fi
TOTAL_BYTES=$((TOTAL_MIB * 1048576))
N_LARGE=$(find "$TREE" -type f -size +1M | wc -l)

log "reading the whole tree into the page cache"
warm_tree() { find "$TREE" -type f -print0 | xargs -0 cat >/dev/null; }
warm_tree

# --- hashing speed -------------------------------------------------------------------------------
log "single-core MD5+SHA-256 speed over ${HASH_MIB} MiB in memory (3x)"
: >"$RUN/hash.out"
for i in 1 2 3; do
    show "$RUN/bin/sha256_speed" "$HASH_MIB"
    "$RUN/bin/sha256_speed" "$HASH_MIB" 2>>"$RUN/stderr.log" | grep '^md5+sha256 ' >>"$RUN/hash.out"
done
HASH_BPS=$(awk '{for (i = 1; i < NF; i++) if ($(i + 1) == "bytes/s") print $i}' "$RUN/hash.out" | median)
LIMIT_S=$(calc '%.4f' "$TOTAL_BYTES / ($HASH_BPS * $CORES)")
log "   $(calc '%.3f' "$HASH_BPS / 1e9") GB/s per core; limit for ${TOTAL_MIB} MiB on ${CORES} cores: ${LIMIT_S} s"

# --- 2. full index -------------------------------------------------------------------------------
log "2. index into a fresh data directory (${INDEX_REPS}x, tree in the page cache)"
: >"$RUN/t2"
: >"$RUN/t2.elapsed"
for ((i = 1; i <= INDEX_REPS; i++)); do
    rm -rf "$BENCH_DIR"/data-*
    D="$BENCH_DIR/data-$i"
    warm_tree
    s=$(timed "$RUN/index.$i.json" "$TC" --data-dir "$D" index "$TREE" --ns "$NS" --json)
    added=$(json_field "$RUN/index.$i.json" n_added)
    hashed=$(json_field "$RUN/index.$i.json" n_hashed)
    [ "$added" = "$FILES" ] && [ "$hashed" = "$FILES" ] ||
        die "index $i: $added added, $hashed hashed, expected $FILES (see $RUN/index.$i.json)"
    [ "$(json_field "$RUN/index.$i.json" bytes_hashed)" = "$TOTAL_BYTES" ] || die "index $i: bytes_hashed differs from the tree"
    echo "$s" >>"$RUN/t2"
    json_field "$RUN/index.$i.json" elapsed_ms >>"$RUN/t2.elapsed"
    log "   $s s (its own elapsed_ms $(tail -1 "$RUN/t2.elapsed"))"
done
T2=$(median <"$RUN/t2")
T2_OWN=$(median <"$RUN/t2.elapsed")
R2=$(calc '%.2f' "$T2 / $LIMIT_S")
INDEX_MBS=$(calc '%.0f' "$TOTAL_BYTES / $T2 / 1e6")
D="$BENCH_DIR/data-$INDEX_REPS" # the last one stays for test 1

# --- 1. update with no change --------------------------------------------------------------------
log "1. update with no change against find (one settling update, one warm-up each, then ${REPS}x interleaved)"
# Files written shortly before they were hashed are rehashed once; this settles them.
s=$(timed "$RUN/update.settle.json" "$TC" --data-dir "$D" update --ns "$NS" --json)
SETTLE_HASHED=$(json_field "$RUN/update.settle.json" n_hashed)
log "   settling update: $s s, rehashed $SETTLE_HASHED files"
FIND_CMD=(find "$TREE" -printf '%s %T@ %C@ %i\n')
timed /dev/null "${FIND_CMD[@]}" >/dev/null
timed "$RUN/update.warm.json" "$TC" --data-dir "$D" update --ns "$NS" --json >/dev/null
: >"$RUN/t1.find"
: >"$RUN/t1.update"
for ((i = 1; i <= REPS; i++)); do
    timed /dev/null "${FIND_CMD[@]}" >>"$RUN/t1.find"
    timed "$RUN/update.$i.json" "$TC" --data-dir "$D" update --ns "$NS" --json >>"$RUN/t1.update"
    for f in n_added n_changed n_removed n_hashed; do
        [ "$(json_field "$RUN/update.$i.json" "$f")" = 0 ] || die "update $i: $f is not 0 (see $RUN/update.$i.json)"
    done
    [ "$(json_field "$RUN/update.$i.json" n_unchanged)" = "$FILES" ] || die "update $i: not all $FILES files unchanged"
done
T1_FIND=$(median <"$RUN/t1.find")
T1_UPD=$(median <"$RUN/t1.update")
R1=$(calc '%.2f' "$T1_UPD / $T1_FIND")
log "   update $(list_times "$RUN/t1.update") s; find $(list_times "$RUN/t1.find") s"

# --- 3. lookup by path ---------------------------------------------------------------------------
LDIR="$BENCH_DIR/lookup-$LOOKUP_ROWS"
log "3. get_file lookups in a ${LOOKUP_ROWS}-row read cache ($LDIR; built once, then reused)"
show "$RUN/bin/dir_lookup" "$LDIR" "$LOOKUP_ROWS" "$LOOKUPS"
"$RUN/bin/dir_lookup" "$LDIR" "$LOOKUP_ROWS" "$LOOKUPS" >"$RUN/lookup.out" 2>>"$RUN/stderr.log" ||
    die "dir_lookup failed: $(tail -3 "$RUN/stderr.log")"
sed 's/^/   /' "$RUN/lookup.out" >&2
L=$RUN/lookup.out
P50=$(kv "$L" lookup_hit p50_us)
P99=$(kv "$L" lookup_hit p99_us)
P999=$(kv "$L" lookup_hit p999_us)
PER_S=$(kv "$L" lookup_hit per_s)
M99=$(kv "$L" lookup_miss p99_us)
M50=$(kv "$L" lookup_miss p50_us)
SB50=$(kv "$L" lookup_spawn_blocking p50_us)
SB99=$(kv "$L" lookup_spawn_blocking p99_us)
BPE=$(kv "$L" index_bytes bytes_per_entry)
DB_BYTES=$(awk '$1 == "index_bytes" {print $2}' "$L")
AVG_PATH=$(awk '$1 == "avg_path_bytes" {print $2}' "$L")
BUILD=$(awk '$1 == "rows" {print ($3 == "reused") ? "reused from an earlier run" : sprintf("built in %.1f s + VACUUM %.1f s", $6, $10)}' "$L")
[ -n "$P99" ] && [ -n "$BPE" ] || die "could not read dir_lookup's output ($L)"

# --- report --------------------------------------------------------------------------------------
after_load=$(background_load)
human_mib() { calc '%.0f MiB' "$1 / 1048576"; }
V1=$(verdict "$R1" '<=' 1.5)
V2=$(verdict "$R2" '<=' 1.3)
V3=$(verdict "$P99" '<' 100)
echo
echo "## Directory namespaces ($(date -u '+%Y-%m-%d'), ${BUILT}, release build)"
echo
echo "Machine: ${CORES} CPUs, ${cpu_model:-unknown CPU}, kernel $(uname -r), ${mem_total} RAM (${mem_avail} available at start); BENCH_DIR on $(df -T "$BENCH_DIR" | awk 'NR == 2 {print $2}')."
echo "Tree: ${FILES} files, $(human_mib "$TOTAL_BYTES") ($((FILES - N_LARGE)) of ${SMALL_MIN_KIB}–${SMALL_MAX_KIB} KiB, ${N_LARGE} large of ~${LARGE_MIB} MiB). Other work on the machine: ${BEFORE_LOAD%% *} of CPU busy before, ${after_load%% *} after."
echo
echo "| # | test | tiercache | reference | ratio | goal | verdict |"
echo "|---|------|-----------|-----------|-------|------|---------|"
echo "| 1 | \`update\`, no change, median of ${REPS} | $(calc '%.3f' "$T1_UPD") s | \`find -printf '%s %T@ %C@ %i\\n'\` $(calc '%.3f' "$T1_FIND") s | ${R1} | ≤ 1.5 | ${V1} |"
echo "| 2 | \`index\`, fresh data dir, tree in page cache, median of ${INDEX_REPS} | $(calc '%.3f' "$T2") s (${INDEX_MBS} MB/s) | hashing limit $(calc '%.3f' "$LIMIT_S") s = $(human_mib "$TOTAL_BYTES") / ($(calc '%.3f' "$HASH_BPS / 1e9") GB/s × ${CORES}) | ${R2} | ≤ 1.3 | ${V2} |"
echo "| 3 | \`Index::get_file\` at ${LOOKUP_ROWS} rows, ${LOOKUPS} random hits, one thread | p99 ${P99} µs (p50 ${P50}, p99.9 ${P999}) | — | — | p99 < 100 µs | ${V3} |"
echo "| 3a | index size per row after VACUUM | ${BPE} B | seed: ~200 B | $(calc '%.2f' "$BPE / 200") | — | info |"
echo
echo "Ratios: 1 update/find wall time; 2 index wall time / hashing limit; 3a bytes per row / 200. GB = 10⁹ bytes. Wall times include process start."
[ "$QUICK" != 1 ] || echo "BENCH_QUICK=1: smoke-test sizes. Times of a few ms are mostly process start, and with ~1 large file test 2 waits on one core; not comparable with the goals."
echo
echo "Context (no goal):"
echo
echo "- single-core MD5+SHA-256 (\`sha256_speed ${HASH_MIB}\`, md5+sha256 line, median of 3): $(calc '%.3f' "$HASH_BPS / 1e9") GB/s; runs: $(awk '{printf "%s%s", (NR > 1 ? ", " : ""), $2}' "$RUN/hash.out") GB/s"
echo "- test 1 runs: update $(list_times "$RUN/t1.update") s; find $(list_times "$RUN/t1.find") s; the settling update rehashed ${SETTLE_HASHED} files"
echo "- test 2 runs: $(list_times "$RUN/t2") s wall; the report's own elapsed_ms median ${T2_OWN}"
echo "- test 3: misses p50 ${M50} µs, p99 ${M99} µs; hits ${PER_S} lookups/s; through \`spawn_blocking\` (the engine's hop) p50 ${SB50} µs, p99 ${SB99} µs"
echo "- test 3: database $(calc '%.1f' "$DB_BYTES / 1e6") MB for ${LOOKUP_ROWS} rows, average path ${AVG_PATH} bytes; ${BUILD}"
echo "- test 3 goes through \`tiercache_index::Index\` directly: \`tiercache_engine::Cache\` has no public per-file lookup (its reads open the real file first, then make this call)"
