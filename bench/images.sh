#!/usr/bin/env bash
# Files inside images: one small file near the end of a large gzip layer, read through
# `tiercache serve` (`/images/…/files/…`), against the pull-first approach (download the whole
# layer and gunzip it), in the same run (issue 21).
#
#   bash bench/images.sh                        # a 250 MiB layer, 3 runs
#   BENCH_IMAGES_MIB=50 BENCH_IMAGES_RUNS=1 bash bench/images.sh   # quick
#
# The image: one gzip layer of BENCH_IMAGES_MIB MiB (default 250) of files of incompressible
# bytes, with a small file last in the tar stream (crates/testkit/examples/build_big_layer.rs),
# pushed with skopeo to Debian's docker-registry on 127.0.0.1. Timed, median of
# BENCH_IMAGES_RUNS runs (the upstream's blob read once first, so it is in the page cache):
#   pull-first: `curl BLOB | gzip -dc | tar -xOf - FILE` (and with `pigz -dc` when installed);
#   (a) cold, a fresh cluster: `tiercache serve` with a fresh data directory and a fresh shared
#       tier (a directory), `curl` of the file: the manifest, the layer fetched once, its
#       derivations (tar-index, layer-seek) made, the file read. Goal <= 1.0x pull-first (gzip);
#   (b) node B, a fresh data directory on the shared tier node A filled, after the layer itself
#       was deleted from the shared tier (its derivations stay): the indexes from the shared tier,
#       the file's span from the registry by a ranged GET. Goal <= 0.25x pull-first;
#   (c) the same read warm on node B: curl's `time_total`, median of 200. Goal <= 5 ms; and
#       through `tiercache mount` (FUSE, as root) when this build has it: open+read+close of the
#       file, median of 200.
#
# Needs: cargo, skopeo, docker-registry, curl, gzip, tar (`bash .ci/run` installs them). Runs in a
# scratch directory under /var/tmp, removed on exit (BENCH_KEEP=1 keeps it).
set -euo pipefail

MIB=${BENCH_IMAGES_MIB:-250}
RUNS=${BENCH_IMAGES_RUNS:-3}
KEEP=${BENCH_KEEP:-0}
NAME=bench/big
TAG=v1

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for t in cargo curl gzip tar skopeo awk; do command -v "$t" >/dev/null 2>&1 || die "$t not found (bash .ci/run installs it)"; done
REGISTRY=$(command -v docker-registry 2>/dev/null || true)
[ -n "$REGISTRY" ] || die "docker-registry not found: apt-get install docker-registry"
[[ $MIB =~ ^[0-9]+$ ]] && [ "$MIB" -ge 1 ] && [ "$MIB" -le 4096 ] || die "BENCH_IMAGES_MIB must be 1 to 4096"
[[ $RUNS =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] && [ "$RUNS" -le 50 ] || die "BENCH_IMAGES_RUNS must be 1 to 50"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tiercache-target}
log "building (release): tiercache and the build_big_layer example"
cargo build --release --locked -q -p tiercache --bin tiercache
cargo build --release --locked -q -p tiercache-testkit --example build_big_layer
find_release tiercache examples/build_big_layer

make_scratch images
mkdir -p "$SCRATCH/bin" "$SCRATCH/home"
cp "$TARGET/release/tiercache" "$TARGET/release/examples/build_big_layer" "$SCRATCH/bin/"
TC=$SCRATCH/bin/tiercache
export HOME=$SCRATCH/home

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
UP_PORT=$(pick_port 18750)
A_PORT=$(pick_port $((UP_PORT + 1)))
B_PORT=$(pick_port $((A_PORT + 1)))

log "building a $MIB MiB gzip layer image and pushing it"
read -r LAYOUT_TAG FILE LAYER LAYER_BYTES < <("$SCRATCH/bin/build_big_layer" "$SCRATCH/layout" "$MIB" 1)
mkdir -p "$SCRATCH/upstream/storage"
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$SCRATCH/upstream/storage" "$UP_PORT" >"$SCRATCH/upstream/config.yml"
"$REGISTRY" serve "$SCRATCH/upstream/config.yml" >"$SCRATCH/upstream/log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
wait_answer "http://127.0.0.1:$UP_PORT/v2/" || die "docker-registry did not start"
skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$SCRATCH/layout:$LAYOUT_TAG" \
    "docker://127.0.0.1:$UP_PORT/$NAME:$TAG" >/dev/null
rm -rf "$SCRATCH/layout"
BLOB_URL="http://127.0.0.1:$UP_PORT/v2/$NAME/blobs/$LAYER"
curl -sf "$BLOB_URL" -o /dev/null # into the page cache
WANT=$(curl -sf "$BLOB_URL" | gzip -dc | tar -xOf - "$FILE" | sha256sum | cut -d' ' -f1)

timed() { # COMMAND... : prints the seconds it took
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    calc '%.3f\n' "$t1 - $t0"
}
pull_first() { curl -sf "$BLOB_URL" | $1 -dc | tar -xOf - "$FILE" >/dev/null; }
start_node() { # DATA PORT SHARED: sets NODE_PID
    "$TC" --data-dir "$1" ns create reg --source "oci+http://127.0.0.1:$UP_PORT" >/dev/null
    "$TC" --data-dir "$1" serve --listen "127.0.0.1:$2" --shared "$3" >"$1.log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    wait_answer "http://127.0.0.1:$2/healthz" || { tail -20 "$1.log" >&2; die "tiercache did not start"; }
}
read_file() { # PORT: fails unless the bytes are the file's
    local got
    got=$(curl -sf "http://127.0.0.1:$1/images/reg/$NAME:$TAG/files/$FILE" | sha256sum | cut -d' ' -f1)
    [ "$got" = "$WANT" ] || die "the file read through tiercache is not the file (got $got)"
}

log "pull-first, $RUNS runs"
GZ=$(for _ in $(seq "$RUNS"); do timed pull_first gzip; done | median)
PIGZ=-
! command -v pigz >/dev/null 2>&1 || PIGZ=$(for _ in $(seq "$RUNS"); do timed pull_first pigz; done | median)

log "(a) cold on a fresh cluster, $RUNS runs"
A=()
for i in $(seq "$RUNS"); do
    rm -rf "$SCRATCH/shared" "$SCRATCH/a"
    mkdir -p "$SCRATCH/shared"
    start_node "$SCRATCH/a" "$A_PORT" "fs://$SCRATCH/shared"
    A+=("$(timed read_file "$A_PORT")")
    # The derivations' records reach the shared tier after their write-back.
    for _ in $(seq 100); do
        [ "$(find "$SCRATCH/shared" -path '*derived*' -type f | wc -l)" -ge 2 ] && break
        sleep 0.1
    done
    stop "$NODE_PID"
done
COLD=$(printf '%s\n' "${A[@]}" | median)

log "(b) node B, indexes in the shared tier, the layer not cached anywhere, $RUNS runs"
find "$SCRATCH/shared" -name "${LAYER#sha256:}*" -delete
B=()
for i in $(seq "$RUNS"); do
    rm -rf "$SCRATCH/b"
    start_node "$SCRATCH/b" "$B_PORT" "fs://$SCRATCH/shared"
    B+=("$(timed read_file "$B_PORT")")
    [ "$i" = "$RUNS" ] || stop "$NODE_PID"
done
NODE_B=$(printf '%s\n' "${B[@]}" | median)

log "(c) warm on node B: 200 reads over HTTP"
URL="http://127.0.0.1:$B_PORT/images/reg/$NAME:$TAG/files/$FILE"
WARM_HTTP=$(for _ in $(seq 200); do curl -sf -o /dev/null -w '%{time_total}\n' "$URL"; done | median)
WARM_FUSE=-
if "$TC" mount --help >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && [ -e /dev/fuse ]; then
    mkdir -p "$SCRATCH/mnt"
    "$TC" --data-dir "$SCRATCH/b" mount "reg/$NAME:$TAG" "$SCRATCH/mnt" >"$SCRATCH/mount.log" 2>&1 &
    MOUNT_PID=$!
    PIDS+=("$MOUNT_PID")
    for _ in $(seq 100); do [ -e "$SCRATCH/mnt/$FILE" ] && break; sleep 0.1; done
    WARM_FUSE=$(python3 - "$SCRATCH/mnt/$FILE" <<'PY'
import sys, time
path = sys.argv[1]
open(path, "rb").read()
samples = []
for _ in range(200):
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        f.read()
    samples.append(time.perf_counter() - t0)
samples.sort()
print(f"{samples[len(samples) // 2]:.6f}")
PY
)
    stop "$MOUNT_PID"
fi

machine_lines
echo "layer: $MIB MiB of files ($LAYER_BYTES bytes gzip), the file: $FILE, last in the stream; median of $RUNS runs"
printf '%-58s %8s s\n' "pull-first: download + gzip -dc + tar" "$GZ"
printf '%-58s %8s s\n' "pull-first: download + pigz -dc + tar" "$PIGZ"
printf '%-58s %8s s  %5sx pull-first (goal <= 1.0)\n' "(a) cold, fresh cluster (fetch, index, read)" "$COLD" "$(calc '%.2f' "$COLD / $GZ")"
printf '%-58s %8s s  %5sx pull-first (goal <= 0.25)\n' "(b) node B: shared indexes, ranged registry read" "$NODE_B" "$(calc '%.2f' "$NODE_B / $GZ")"
printf '%-58s %8s ms (goal <= 5)\n' "(c) warm over HTTP (curl time_total)" "$(calc '%.2f' "$WARM_HTTP * 1000")"
[ "$WARM_FUSE" = - ] || printf '%-58s %8s ms (goal <= 5)\n' "(c) warm through FUSE (open, read, close)" "$(calc '%.3f' "$WARM_FUSE * 1000")"
