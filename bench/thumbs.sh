#!/usr/bin/env bash
# Thumbnails: tiercache's derivation workers against vipsthumbnail and ImageMagick, in the same
# run, on the same photos and the same parallelism (issue 20).
#
#   bash bench/thumbs.sh                                             # 200 photos of 12 MP, 3 runs
#   BENCH_THUMBS_PHOTOS=20 BENCH_THUMBS_RUNS=1 bash bench/thumbs.sh   # quick
#
# The photos: BENCH_THUMBS_DISTINCT (default 20) distinct 4000x3000 JPEGs (quality about 90, 4:2:0,
# as cameras write them) made by ffmpeg from its test pattern with grain and a hue turned per photo
# (detail and smooth areas, like a photo), each copied to BENCH_THUMBS_PHOTOS / DISTINCT files with
# a few bytes of its own after the JPEG's end marker, so that every file is an input of its own (a
# digest of its own) and decodes to the same picture. Made once into bench/data/thumbs/ (kept
# between runs; `rm -r bench/data/thumbs` to make them again).
# Measured, each over every photo to 300 px (longest side), JPEG out, P = BENCH_THUMBS_PARALLEL
# (default: the number of CPUs) at once:
#   1. tiercache: `tiercache derive --ns photos --recipe thumbnail --size 300 --param format=jpeg
#      --worker-threads P`, on a fresh data directory indexed beforehand (`tiercache index`, not
#      timed): photos read in place, thumbnails stored in the disk tier;
#   2. vipsthumbnail (libvips-tools): `xargs -P P -n 10 vipsthumbnail -s 300 -o OUT/%s.jpg`
#      (libvips' shrink-on-load: the JPEG decoded at a reduced scale);
#   3. ImageMagick: `xargs -P P -n 1 convert IN -thumbnail 300x300 OUT.jpg` (its usual use, no
#      size hint to the decoder);
# medians of BENCH_THUMBS_RUNS runs, as photos per second. Then a thumbnail already made, over HTTP
# (`tiercache serve` on the same data directory): wrk -t2 -c64 for BENCH_WRK_SECONDS on
#   a. GET /ns/photos/<photo>?derive=thumbnail&size=300&format=jpeg   (the derivation's lookup)
#   b. GET /blobs/sha256:<the thumbnail's digest>                     (the same bytes, hot)
#   c. GET /ns/small/<4 KiB file>                                     (a hot entry)
# Goals: tiercache >= 0.8x vipsthumbnail's photos/s and >= 3x ImageMagick's; a cached thumbnail at
# the hot-entry rate (a against c).
#
# Needs: cargo, ffmpeg, vipsthumbnail, convert, wrk, curl (`bash .ci/run` installs ffmpeg,
# libvips-tools and imagemagick; wrk is apt-get installed if missing, as root). Runs in a scratch
# directory under /var/tmp, removed on exit (BENCH_KEEP=1 keeps it).
set -euo pipefail

PHOTOS=${BENCH_THUMBS_PHOTOS:-200}
DISTINCT=${BENCH_THUMBS_DISTINCT:-20}
RUNS=${BENCH_THUMBS_RUNS:-3}
SIZE=${BENCH_THUMBS_SIZE:-300}
PARALLEL=${BENCH_THUMBS_PARALLEL:-$(nproc)}
WRK_SECONDS=${BENCH_WRK_SECONDS:-5}
PORT_BASE=${BENCH_THUMBS_PORT:-18720}
KEEP=${BENCH_KEEP:-0}

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- tools and settings --------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust, e.g. from https://rustup.rs)"
for t in ffmpeg vipsthumbnail; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found: apt-get install ffmpeg libvips-tools imagemagick (or run 'bash .ci/run' once)"
done
# ImageMagick's own binary: a `convert` earlier on PATH may be another program of that name.
CONVERT=$(command -v convert-im6.q16 || command -v convert-im6 || command -v convert || true)
[ -n "$CONVERT" ] && "$CONVERT" -version 2>/dev/null | grep -q ImageMagick ||
    die "ImageMagick's convert not found: apt-get install imagemagick"
export CONVERT
need_web_tools
for v in PHOTOS DISTINCT RUNS PARALLEL WRK_SECONDS; do
    [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -ge 1 ] || die "BENCH_THUMBS_$v must be a number >= 1 (got '${!v}')"
done
[ "$PHOTOS" -le 100000 ] && [ "$DISTINCT" -le "$PHOTOS" ] || die "BENCH_THUMBS_DISTINCT must be <= BENCH_THUMBS_PHOTOS <= 100000"

# --- build ---------------------------------------------------------------------------------------
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tiercache-target}
log "building (release): tiercache"
cargo build --release --locked -q -p tiercache --bin tiercache
find_release tiercache
"$TARGET/release/tiercache" derive --help >/dev/null 2>&1 || die "this tiercache has no derive command yet (issue 20)"

make_scratch thumbs
mkdir -p "$SCRATCH/bin"
cp "$TARGET/release/tiercache" "$SCRATCH/bin/"
TC=$SCRATCH/bin/tiercache

# --- the photos ----------------------------------------------------------------------------------
DATA=$REPO/bench/data/thumbs/$PHOTOS-$DISTINCT
if [ ! -f "$DATA/.done" ]; then
    log "making $PHOTOS photos ($DISTINCT distinct pictures of 4000x3000) into $DATA"
    rm -rf "$DATA"
    mkdir -p "$DATA"
    for ((i = 0; i < DISTINCT; i++)); do
        ffmpeg -nostdin -hide_banner -loglevel error -f lavfi \
            -i "testsrc2=size=4000x3000:rate=1,hue=h=$((i * 360 / DISTINCT)),noise=alls=12:allf=t:all_seed=$i" \
            -frames:v 1 -q:v 3 -pix_fmt yuvj420p "$DATA/base-$i.jpg"
    done
    for ((i = 0; i < PHOTOS; i++)); do
        { cat "$DATA/base-$((i % DISTINCT)).jpg"; printf 'photo %08d' "$i"; } >"$DATA/p$(printf '%06d' "$i").jpg"
    done
    rm -f "$DATA"/base-*.jpg
    touch "$DATA/.done"
fi
PHOTO_BYTES=$(find "$DATA" -name 'p*.jpg' -printf '%s\n' | awk '{s += $1} END {print s}')

# --- header --------------------------------------------------------------------------------------
echo "tiercache thumbnail benchmark — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
machine_lines
built_line
echo "tools   : $(vipsthumbnail --vips-version 2>/dev/null | head -1 || echo vips), $("$CONVERT" -version | head -1 | cut -d' ' -f2-3) ($CONVERT), $(ffmpeg -version | head -1 | cut -d' ' -f1-3)"
echo "photos  : $PHOTOS JPEGs of 4000x3000 ($DISTINCT distinct pictures), $(calc '%.1f' "$PHOTO_BYTES / 1048576") MiB in all; to ${SIZE} px, JPEG out; $PARALLEL at once; $RUNS runs, medians"
echo "before  : $(background_load)"
echo

: >"$SCRATCH/r.tc"
: >"$SCRATCH/r.vips"
: >"$SCRATCH/r.im"
# Seconds to run "$@"; its output goes to $SCRATCH/last.log.
seconds_of() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >"$SCRATCH/last.log" 2>&1 || { tail -20 "$SCRATCH/last.log" >&2; die "failed: $*"; }
    t1=$(date +%s.%N)
    calc '%.3f' "$t1 - $t0"
}
tc_run() { # DATA-DIR
    "$TC" --data-dir "$1" derive --ns photos --recipe thumbnail --size "$SIZE" --param format=jpeg \
        --worker-threads "$PARALLEL" --json
}
vips_run() { # OUT
    find "$DATA" -name 'p*.jpg' -print0 | xargs -0 -P "$PARALLEL" -n 10 vipsthumbnail -s "$SIZE" -o "$1/%s.jpg"
}
im_run() { # OUT
    find "$DATA" -name 'p*.jpg' -print0 |
        xargs -0 -P "$PARALLEL" -I{} sh -c '"$CONVERT" "$1" -thumbnail '"${SIZE}x${SIZE}"' "$2/$(basename "$1")"' _ {} "$1"
}
# Times a peer's FUNCTION into a fresh output directory, checks that it made every thumbnail, and
# records the seconds under KEY.
timed_peer() { # KEY LABEL FUNCTION
    local out=$SCRATCH/$1-$r s
    mkdir -p "$out"
    s=$(seconds_of "$3" "$out")
    [ "$(find "$out" -name '*.jpg' | wc -l)" = "$PHOTOS" ] || die "$2 did not make $PHOTOS thumbnails"
    echo "$s" >>"$SCRATCH/r.$1"
    rm -rf "$out"
}
for ((r = 0; r < RUNS; r++)); do
    quiet_check
    dd=$SCRATCH/tc-$r
    "$TC" --data-dir "$dd" index "$DATA" --ns photos >/dev/null
    s=$(seconds_of tc_run "$dd")
    made=$(grep -o '"made":[0-9]*' "$SCRATCH/last.log" | cut -d: -f2)
    [ "$made" = "$PHOTOS" ] || { cat "$SCRATCH/last.log" >&2; die "tiercache made $made thumbnails, not $PHOTOS"; }
    echo "$s" >>"$SCRATCH/r.tc"
    [ "$r" = $((RUNS - 1)) ] || rm -rf "$dd"

    timed_peer vips vipsthumbnail vips_run
    timed_peer im ImageMagick im_run
    printf 'run %d  tiercache %6ss  vipsthumbnail %6ss  ImageMagick %6ss\n' "$((r + 1))" \
        "$(tail -1 "$SCRATCH/r.tc")" "$(tail -1 "$SCRATCH/r.vips")" "$(tail -1 "$SCRATCH/r.im")"
done

# --- a thumbnail already made, over HTTP ---------------------------------------------------------
dd=$SCRATCH/tc-$((RUNS - 1))
mkdir -p "$SCRATCH/small"
head -c 4096 /dev/urandom >"$SCRATCH/small/f"
"$TC" --data-dir "$dd" index "$SCRATCH/small" --ns small >/dev/null
PORT=$(pick_port "$PORT_BASE")
"$TC" --data-dir "$dd" serve --listen "127.0.0.1:$PORT" --no-worker >"$SCRATCH/serve.log" 2>&1 &
SERVE_PID=$!
PIDS+=("$SERVE_PID")
wait_answer "http://127.0.0.1:$PORT/healthz" || { tail -20 "$SCRATCH/serve.log" >&2; die "tiercache serve did not start"; }
THUMB="/ns/photos/p000000.jpg?derive=thumbnail&size=$SIZE&format=jpeg"
curl -fsS -D "$SCRATCH/thumb.headers" -o "$SCRATCH/thumb.jpg" "http://127.0.0.1:$PORT$THUMB" ||
    die "the thumbnail made by derive is not served"
OUT_DIGEST=$(tr -d '\r' <"$SCRATCH/thumb.headers" | awk -F'"' 'tolower($1) ~ /^etag:/ {print $2}')
THUMB_BYTES=$(stat -c %s "$SCRATCH/thumb.jpg")
rate_of() { # PATH: requests per second, after a 1 s warm-up
    wrk -t2 -c64 -d1s "http://127.0.0.1:$PORT$1" >/dev/null
    wrk -t2 -c64 -d"${WRK_SECONDS}s" "http://127.0.0.1:$PORT$1" | awk '/^Requests\/sec/ {printf "%.0f", $2}'
}
RATE_THUMB=$(rate_of "$THUMB")
RATE_BLOB=$(rate_of "/blobs/$OUT_DIGEST")
RATE_HOT=$(rate_of "/ns/small/f")

# --- results -------------------------------------------------------------------------------------
med() { median <"$SCRATCH/r.$1"; }
per_sec() { calc '%.1f' "$PHOTOS / $1"; }
TCS=$(med tc)
VIPS=$(med vips)
IM=$(med im)
echo
printf '%-28s %10s %10s %14s\n' "median of $RUNS, $PHOTOS photos" seconds photos/s "tiercache is"
printf '%-28s %10s %10s %14s\n' "tiercache derive" "$TCS" "$(per_sec "$TCS")" ""
printf '%-28s %10s %10s %13sx\n' "vipsthumbnail" "$VIPS" "$(per_sec "$VIPS")" "$(calc '%.2f' "$VIPS / $TCS")"
printf '%-28s %10s %10s %13sx\n' "ImageMagick convert" "$IM" "$(per_sec "$IM")" "$(calc '%.2f' "$IM / $TCS")"
echo
printf '%-50s %10s\n' "a thumbnail already made ($THUMB_BYTES bytes), over HTTP" "requests/s"
printf '%-50s %10s\n' "GET /ns/photos/…?derive=thumbnail…" "$RATE_THUMB"
printf '%-50s %10s\n' "GET /blobs/<the thumbnail's digest>" "$RATE_BLOB"
printf '%-50s %10s\n' "GET /ns/small/f (a hot 4 KiB entry)" "$RATE_HOT"
echo
VR=$(calc '%.2f' "$VIPS / $TCS")
IR=$(calc '%.2f' "$IM / $TCS")
HR=$(calc '%.2f' "$RATE_THUMB / $RATE_HOT")
echo "tiercache / vipsthumbnail throughput: ${VR}x (goal >= 0.8x): $(awk -v r="$VR" 'BEGIN {print (r >= 0.8) ? "met" : "NOT met"}')"
echo "tiercache / ImageMagick throughput: ${IR}x (goal >= 3x): $(awk -v r="$IR" 'BEGIN {print (r >= 3) ? "met" : "NOT met"}')"
echo "cached thumbnail / hot entry rate: ${HR}x"
echo "after   : busiest sample of other work between measurements: ${OTHER_MAX}% of CPU$([ "$OTHER_MAX" -le 10 ] || echo '  WARNING: not a quiet machine; figures are noisy')"
