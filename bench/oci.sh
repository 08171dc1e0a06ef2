#!/usr/bin/env bash
# The registry mirror against direct pulls and against Debian's docker-registry as a pull-through
# cache, in the same run, with the same client (issue 19).
#
#   bash bench/oci.sh                                       # a 250 MiB image (4 layers), 3 runs
#   BENCH_OCI_LAYERS="20 10" BENCH_OCI_RUNS=1 bash bench/oci.sh   # quick
#
# The image: one linux/amd64 manifest whose layers (BENCH_OCI_LAYERS, MiB each, default
# "100 80 50 20") are gzip-compressed tars of incompressible bytes, built by
# crates/testkit/examples/build_image.rs and pushed with skopeo to an upstream docker-registry on
# 127.0.0.1 (Debian's, distribution 2.8, filesystem storage under /var/tmp, access log on). The
# client, the same everywhere: `skopeo copy --all docker://HOST/bench/app:v1 oci:DIR` (plain HTTP;
# the copy is written to disk and removed after each pull). Timed, as median seconds of
# BENCH_OCI_RUNS runs:
#   1. direct from the upstream registry;
#   2. through `tiercache serve` with a fresh data directory and one namespace
#      `--source oci+http://UPSTREAM` (cold), then the same pull again (warm);
#   3. through a second docker-registry configured as a pull-through cache (`proxy: remoteurl:
#      http://UPSTREAM`) with fresh storage (cold), then again (warm).
# Before measuring, one untimed direct pull puts the upstream's blobs in the page cache, and the
# first cold pull through tiercache is compared file by file with a direct pull.
# Then BENCH_OCI_CONCURRENT (8) cold pulls at once of the same image, through a fresh tiercache and
# through a fresh proxy registry: wall time, and the upstream blob GETs they caused, counted from
# the upstream's access log (lines `"GET /v2/bench/app/blobs/…`).
# Beside each time, the CPU seconds each party used (the client, the upstream registry, the cache
# in between), from /proc and bash's `time`: on a machine whose CPUs all three share, the cache's
# CPU is time taken from the client.
# BENCH_OCI_PIN=1 gives the cache its own CPU, as a mirror on its own host has: the client and the
# upstream registry run on CPU 0 (`taskset`), tiercache and the proxy registry on CPU 1, in every
# line, the direct pulls included (needs 2 CPUs or more).
# Goals: tiercache cold <= 1.1x direct; tiercache warm >= 1.0x the proxy registry warm (speed);
# the concurrent cold pulls make one upstream GET per blob (the proxy registry makes several).
#
# Needs: cargo, skopeo, docker-registry (`bash .ci/run` installs both: apt-get install skopeo
# docker-registry), curl. Free disk under /var/tmp: about (4 + BENCH_OCI_CONCURRENT) x the image.
# Runs in a scratch directory, removed on exit (BENCH_KEEP=1 keeps it). Client, registries and
# tiercache share the machine's CPUs (the header says how many and how busy they were).
set -euo pipefail

LAYERS=${BENCH_OCI_LAYERS:-100 80 50 20} # MiB per layer
RUNS=${BENCH_OCI_RUNS:-3}
CONCURRENT=${BENCH_OCI_CONCURRENT:-8}
PORT_BASE=${BENCH_OCI_PORT:-18650}
KEEP=${BENCH_KEEP:-0}
PIN=${BENCH_OCI_PIN:-0}
NAME=bench/app
TAG=v1

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- tools and settings --------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust, e.g. from https://rustup.rs)"
for t in curl awk sort grep date; do command -v "$t" >/dev/null 2>&1 || die "$t not found"; done
command -v skopeo >/dev/null 2>&1 || die "skopeo not found: apt-get install skopeo (or run 'bash .ci/run' once)"
REGISTRY=$(command -v docker-registry 2>/dev/null || true)
[ -n "$REGISTRY" ] || die "docker-registry not found: apt-get install docker-registry (or run 'bash .ci/run' once)"
[[ $RUNS =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] && [ "$RUNS" -le 100 ] || die "BENCH_OCI_RUNS must be 1 to 100 (got '$RUNS')"
[[ $CONCURRENT =~ ^[0-9]+$ ]] && [ "$CONCURRENT" -ge 2 ] && [ "$CONCURRENT" -le 64 ] ||
    die "BENCH_OCI_CONCURRENT must be 2 to 64 (got '$CONCURRENT')"
[ "$PIN" = 0 ] || [ "$PIN" = 1 ] || die "BENCH_OCI_PIN must be 0 or 1 (got '$PIN')"
if [ "$PIN" = 1 ]; then
    command -v taskset >/dev/null 2>&1 || die "taskset not found (util-linux)"
    [ "$(nproc)" -ge 2 ] || die "BENCH_OCI_PIN=1 needs 2 CPUs or more"
fi
# Command prefixes that run a command on the client's CPU (the client, the upstream registry) or
# the cache's, when pinned (taskset execs the command: `$!` is still its process).
ON_CLIENT=() ON_CACHE=()
[ "$PIN" = 0 ] || { ON_CLIENT=(taskset -c 0) ON_CACHE=(taskset -c 1); }
# CPU seconds a running process has used so far.
TICKS=$(getconf CLK_TCK)
cpu_of() { awk -v t="$TICKS" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
read -ra LAYER_MIB <<<"$LAYERS"
((${#LAYER_MIB[@]} >= 1 && ${#LAYER_MIB[@]} <= 32)) || die "BENCH_OCI_LAYERS must name 1 to 32 layer sizes (got '$LAYERS')"
TOTAL_MIB=0
for l in "${LAYER_MIB[@]}"; do
    [[ $l =~ ^[0-9]+$ ]] && [ "$l" -ge 1 ] && [ "$l" -le 2048 ] || die "a layer size is 1 to 2048 MiB (got '$l')"
    TOTAL_MIB=$((TOTAL_MIB + l))
done
N_BLOBS=$((${#LAYER_MIB[@]} + 1)) # the layers and the config

# --- build ---------------------------------------------------------------------------------------
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tiercache-target}
log "building (release): tiercache and the build_image example"
# Two builds: `--example` alone would select only the example, leaving an old `tiercache` in place.
cargo build --release --locked -q -p tiercache --bin tiercache
cargo build --release --locked -q -p tiercache-testkit --example build_image
find_release tiercache examples/build_image
"$TARGET/release/tiercache" serve --help 2>&1 | grep -q -- '--oci-tag-ttl' ||
    die "this tiercache has no registry mirror yet (serve --oci-tag-ttl, issue 19)"

# --- scratch, processes, cleanup -----------------------------------------------------------------
make_scratch oci
# Private copies, so a concurrent rebuild of the target directory cannot change a binary mid-run.
mkdir -p "$SCRATCH/bin" "$SCRATCH/home"
cp "$TARGET/release/tiercache" "$TARGET/release/examples/build_image" "$SCRATCH/bin/"
TC=$SCRATCH/bin/tiercache
export HOME=$SCRATCH/home # skopeo reads no credentials or policy of the user's

# Stops a process this script started (and forgets it).
stop() { # PID
    local pid=$1 keep=() p
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}
# Starts a docker-registry on 127.0.0.1:PORT storing in DIR (a pull-through cache of REMOTE if
# given, on the cache's CPU; the access log on for the upstream only); sets STARTED_PID.
start_registry() { # DIR PORT [REMOTE]
    local dir=$1 port=$2 remote=${3:-}
    mkdir -p "$dir/storage"
    {
        printf 'version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: %s\n' "$([ -z "$remote" ] && echo false || echo true)"
        printf 'storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n' "$dir/storage"
        printf 'http:\n  addr: 127.0.0.1:%s\n' "$port"
        [ -z "$remote" ] || printf 'proxy:\n  remoteurl: %s\n' "$remote"
    } >"$dir/config.yml"
    if [ -z "$remote" ]; then
        "${ON_CLIENT[@]}" "$REGISTRY" serve "$dir/config.yml" >"$dir/log" 2>&1 &
    else
        "${ON_CACHE[@]}" "$REGISTRY" serve "$dir/config.yml" >"$dir/log" 2>&1 &
    fi
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    wait_answer "http://127.0.0.1:$port/v2/" || { tail -20 "$dir/log" >&2; die "docker-registry did not start on port $port"; }
}
# Starts `tiercache serve` on 127.0.0.1:PORT with a fresh data directory DIR and one registry
# namespace whose source is the upstream; sets STARTED_PID.
start_tiercache() { # DIR PORT
    local dir=$1 port=$2
    "$TC" --data-dir "$dir" ns create hub --source "oci+http://127.0.0.1:$UP_PORT" >/dev/null ||
        die "tiercache ns create failed"
    TIERCACHE_WRITE_TOKEN=bench-write-token-0123456789 \
        "${ON_CACHE[@]}" "$TC" --data-dir "$dir" serve --listen "127.0.0.1:$port" >"$dir.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    wait_answer "http://127.0.0.1:$port/healthz" || { tail -20 "$dir.log" >&2; die "tiercache did not start on port $port"; }
}
# `skopeo copy --all` of the image from HOST:PORT into the OCI layout DEST; prints the seconds
# and the CPU seconds skopeo used.
pull() { # HOST:PORT DEST
    local t0 t1 cpu TIMEFORMAT='%U %S'
    t0=$(date +%s.%N)
    cpu=$({ time "${ON_CLIENT[@]}" skopeo --insecure-policy copy --all --quiet --src-tls-verify=false \
        "docker://$1/$NAME:$TAG" "oci:$2:$TAG" >"$2.log" 2>&1; } 2>&1) || { cat "$2.log" >&2; die "skopeo copy from $1 failed"; }
    t1=$(date +%s.%N)
    echo "$(calc '%.2f' "$t1 - $t0") $(calc '%.2f' "${cpu% *} + ${cpu#* }")"
}
# Blob GETs the upstream registry has answered so far (its access log).
upstream_blob_gets() { grep -c "\"GET /v2/$NAME/blobs/" "$SCRATCH/upstream/log" || true; }

# --- the image and the upstream ------------------------------------------------------------------
log "building a ${TOTAL_MIB} MiB image (layers of ${LAYER_MIB[*]} MiB)"
"$SCRATCH/bin/build_image" "$SCRATCH/image" "$TAG" 19 "${LAYER_MIB[@]}" >/dev/null
UP_PORT=$(pick_port "$PORT_BASE")
log "starting the upstream docker-registry on 127.0.0.1:$UP_PORT"
start_registry "$SCRATCH/upstream" "$UP_PORT"
UP_PID=$STARTED_PID
skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$SCRATCH/image:$TAG" \
    "docker://127.0.0.1:$UP_PORT/$NAME:$TAG" >"$SCRATCH/push.log" 2>&1 || { cat "$SCRATCH/push.log" >&2; die "pushing the image failed"; }
rm -rf "$SCRATCH/image"
TC_PORT=$(pick_port $((PORT_BASE + 10)))
PROXY_PORT=$(pick_port $((PORT_BASE + 20)))

# Correctness, once: a pull through tiercache is the direct pull, file for file.
pull "127.0.0.1:$UP_PORT" "$SCRATCH/check-direct" >/dev/null
start_tiercache "$SCRATCH/tc-check" "$TC_PORT"
pull "127.0.0.1:$TC_PORT" "$SCRATCH/check-tc" >/dev/null
stop "$STARTED_PID"
diff -r "$SCRATCH/check-direct" "$SCRATCH/check-tc" >/dev/null || die "a pull through tiercache differs from the direct pull"
rm -rf "$SCRATCH/check-direct" "$SCRATCH/check-tc" "$SCRATCH/tc-check"

# --- header --------------------------------------------------------------------------------------
echo "tiercache registry mirror benchmark — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
machine_lines
built_line
echo "tools   : $(skopeo --version), docker-registry $("$REGISTRY" --version | awk '{print $NF}') (upstream and pull-through proxy)"
echo "image   : ${TOTAL_MIB} MiB, ${#LAYER_MIB[@]} gzip layers (${LAYER_MIB[*]} MiB) + config, linux/amd64; ${RUNS} runs, medians"
echo "client  : skopeo copy --all docker://… oci:DIR (written to /var/tmp, removed after each pull)"
if [ "$PIN" = 1 ]; then
    echo "note    : pinned (BENCH_OCI_PIN=1): client and upstream registry on CPU 0, tiercache and proxy registry on CPU 1"
else
    echo "note    : client, registries and tiercache share these $(nproc) CPUs"
fi
echo "before  : $(background_load)"
echo

# --- sequential pulls ----------------------------------------------------------------------------
for k in direct tc_cold tc_warm px_cold px_warm; do : >"$SCRATCH/r.$k"; : >"$SCRATCH/cpu.$k"; done
# Times one pull from HOST:PORT through the cache process CACHE_PID (0: none) and records its
# seconds under KEY, and the CPU seconds of the client, the upstream registry and the cache.
timed() { # KEY HOST:PORT CACHE_PID
    local out up0 cache0=0 cache1=0
    up0=$(cpu_of "$UP_PID")
    [ "$3" = 0 ] || cache0=$(cpu_of "$3")
    out=$(pull "$2" "$SCRATCH/out")
    [ "$3" = 0 ] || cache1=$(cpu_of "$3")
    rm -rf "$SCRATCH/out"
    echo "${out% *}" >>"$SCRATCH/r.$1"
    echo "${out#* } $(calc '%.2f' "$(cpu_of "$UP_PID") - $up0") $(calc '%.2f' "$cache1 - $cache0")" >>"$SCRATCH/cpu.$1"
}
for ((i = 0; i < RUNS; i++)); do
    quiet_check
    timed direct "127.0.0.1:$UP_PORT" 0

    start_tiercache "$SCRATCH/tc-$i" "$TC_PORT"
    timed tc_cold "127.0.0.1:$TC_PORT" "$STARTED_PID"
    timed tc_warm "127.0.0.1:$TC_PORT" "$STARTED_PID"
    stop "$STARTED_PID"
    rm -rf "$SCRATCH/tc-$i" "$SCRATCH/tc-$i.log"

    start_registry "$SCRATCH/px-$i" "$PROXY_PORT" "http://127.0.0.1:$UP_PORT"
    timed px_cold "127.0.0.1:$PROXY_PORT" "$STARTED_PID"
    timed px_warm "127.0.0.1:$PROXY_PORT" "$STARTED_PID"
    stop "$STARTED_PID"
    rm -rf "$SCRATCH/px-$i"

    printf 'run %d  direct %6ss  tiercache cold %6ss warm %6ss  proxy registry cold %6ss warm %6ss\n' "$((i + 1))" \
        "$(tail -1 "$SCRATCH/r.direct")" "$(tail -1 "$SCRATCH/r.tc_cold")" "$(tail -1 "$SCRATCH/r.tc_warm")" \
        "$(tail -1 "$SCRATCH/r.px_cold")" "$(tail -1 "$SCRATCH/r.px_warm")"
done

# --- concurrent cold pulls -----------------------------------------------------------------------
# CONCURRENT pulls at once through HOST:PORT; prints `seconds upstream-blob-GETs`.
concurrent() { # HOST:PORT
    local before t0 t1 j pids=()
    before=$(upstream_blob_gets)
    t0=$(date +%s.%N)
    for ((j = 0; j < CONCURRENT; j++)); do
        pull "$1" "$SCRATCH/c$j" >/dev/null &
        pids+=($!)
    done
    for j in "${pids[@]}"; do wait "$j" || die "a concurrent pull through $1 failed"; done
    t1=$(date +%s.%N)
    rm -rf "$SCRATCH"/c[0-9]*
    echo "$(calc '%.2f' "$t1 - $t0") $(($(upstream_blob_gets) - before))"
}
quiet_check
start_tiercache "$SCRATCH/tc-concurrent" "$TC_PORT"
out=$(concurrent "127.0.0.1:$TC_PORT")
read -r TC_C_SECONDS TC_C_GETS <<<"$out"
stop "$STARTED_PID"
start_registry "$SCRATCH/px-concurrent" "$PROXY_PORT" "http://127.0.0.1:$UP_PORT"
out=$(concurrent "127.0.0.1:$PROXY_PORT")
read -r PX_C_SECONDS PX_C_GETS <<<"$out"
stop "$STARTED_PID"

# --- results -------------------------------------------------------------------------------------
med() { median <"$SCRATCH/r.$1"; }
DIRECT=$(med direct)
echo
printf '%-34s %9s %11s   %s\n' "median of $RUNS, ${TOTAL_MIB} MiB" "seconds" "vs direct" "CPU s: client  upstream  cache"
# Median CPU seconds of column N (1 client, 2 upstream, 3 cache) of KEY's pulls.
cpu_med() { awk -v n="$2" '{print $n}' "$SCRATCH/cpu.$1" | median; }
row() { # LABEL KEY
    printf '%-34s %9s %10sx   %13s %9s %6s\n' "$1" "$(med "$2")" "$(calc '%.2f' "$(med "$2") / $DIRECT")" \
        "$(cpu_med "$2" 1)" "$(cpu_med "$2" 2)" "$(cpu_med "$2" 3)"
}
row "direct from the registry" direct
row "tiercache, cold" tc_cold
row "tiercache, warm" tc_warm
row "docker-registry proxy, cold" px_cold
row "docker-registry proxy, warm" px_warm
echo
printf '%-34s %9s %19s\n' "$CONCURRENT concurrent cold pulls" "seconds" "upstream blob GETs"
printf '%-34s %9s %10s (%d blobs)\n' "through tiercache" "$TC_C_SECONDS" "$TC_C_GETS" "$N_BLOBS"
printf '%-34s %9s %10s (%d blobs)\n' "through docker-registry proxy" "$PX_C_SECONDS" "$PX_C_GETS" "$N_BLOBS"
echo
COLD=$(calc '%.2f' "$(med tc_cold) / $DIRECT")
WARM=$(calc '%.2f' "$(med px_warm) / $(med tc_warm)")
echo "tiercache cold / direct: ${COLD}x (goal <= 1.1x): $(awk -v r="$COLD" 'BEGIN {print (r <= 1.1) ? "met" : "NOT met"}')"
echo "tiercache warm speed / proxy registry warm speed: ${WARM}x (goal >= 1.0x): $(awk -v r="$WARM" 'BEGIN {print (r >= 1.0) ? "met" : "NOT met"}')"
echo "one upstream GET per blob with $CONCURRENT concurrent cold pulls: $([ "$TC_C_GETS" = "$N_BLOBS" ] && echo met || echo 'NOT met') (tiercache $TC_C_GETS, proxy registry $PX_C_GETS, for $N_BLOBS blobs)"
echo "after   : busiest sample of other work between measurements: ${OTHER_MAX}% of CPU$([ "$OTHER_MAX" -le 10 ] || echo '  WARNING: not a quiet machine; figures are noisy')"
