#!/usr/bin/env bash
# rclone (Debian's package) as a real S3 client of an S3-compatible endpoint (issue 18).
#
#   bash rclone.sh ENDPOINT ACCESS_KEY SECRET_KEY BUCKET [--part basic|multipart|all]
#
# ENDPOINT is http://HOST:PORT; rclone is configured by environment variables only (remote `tc`:
# type s3, provider Other, path style, region us-east-1; an empty config file in a temp dir), so
# no configuration of the machine is read or written. BUCKET must not exist yet: the suite makes
# it (`rclone mkdir`) and removes it (`rclone rmdir`). Parts:
# The tree goes to the bucket's root: rclone asks for HEAD of a path it is given below a bucket,
# to tell a file from a directory, so a root needs no server answer about keys that are prefixes.
#   basic     copy of a small tree (nested directories, an empty file, spaces and non-ASCII in
#             names; every file below rclone's multipart cutoff), check (rclone compares sizes and
#             MD5s: the ETag of a single-part object), lsf -R against the local list, copy back
#             (diff -r), a changed file copied again and checked, delete, lsf empty
#   multipart copy of a 12 MiB file with a 5 MiB cutoff and 5 MiB chunks (3 parts), check (rclone
#             keeps the MD5 of a multipart upload in the object's metadata), check --download
#             (compares the bytes), copy back (cmp), delete
# Exits 0 when every step passed; on the first failure, exits 1 with the step, the command and
# what it said. `--skip recursive-listing` makes every command walk the bucket one directory at a
# time (`--disable ListR`) instead of asking for one recursive listing (`delimiter=`, empty), for
# servers that do not list recursively. Needs: rclone (apt-get install rclone), cmp, diff.
set -euo pipefail

usage() { echo "usage: $0 ENDPOINT ACCESS_KEY SECRET_KEY BUCKET [--part basic|multipart|all] [--skip recursive-listing]" >&2; exit 2; }
[ $# -ge 4 ] || usage
EP=$1 AK=$2 SK=$3 BUCKET=$4
shift 4
PART=all
LISTR=""
while [ $# -gt 0 ]; do
    case $1 in
    --part) [ $# -ge 2 ] || usage; PART=$2; shift 2 ;;
    --skip) [ "${2:-}" = recursive-listing ] || usage; LISTR=ListR; shift 2 ;;
    *) usage ;;
    esac
done
case $PART in basic | multipart | all) ;; *) usage ;; esac

NAME="rclone suite ($PART)"
STEP="setup"
step() { STEP=$1; echo "$NAME: $STEP"; }
fail() { echo "$NAME FAILED at step '$STEP': $*" >&2; exit 1; }
for tool in rclone cmp diff; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (rclone: apt-get install rclone)"
done

T=$(mktemp -d "${TMPDIR:-/tmp}/tiercache-rclone.XXXXXX")
trap 'rm -rf "$T"' EXIT

for v in $(env | awk -F= '/^(AWS_|RCLONE_)/ {print $1}'); do unset "$v"; done
: >"$T/rclone.conf"
export RCLONE_CONFIG=$T/rclone.conf RCLONE_CACHE_DIR=$T/cache
export RCLONE_CONFIG_TC_TYPE=s3 RCLONE_CONFIG_TC_PROVIDER=Other RCLONE_CONFIG_TC_ENV_AUTH=false
export RCLONE_CONFIG_TC_ACCESS_KEY_ID=$AK RCLONE_CONFIG_TC_SECRET_ACCESS_KEY=$SK
export RCLONE_CONFIG_TC_ENDPOINT=$EP RCLONE_CONFIG_TC_REGION=us-east-1 RCLONE_CONFIG_TC_FORCE_PATH_STYLE=true
if [ -n "$LISTR" ]; then
    export RCLONE_DISABLE=ListR
    echo "$NAME: recursive listings left out (--disable ListR): rclone walks the bucket a directory at a time"
fi

# Runs rclone; on failure the suite fails with what it said. Its standard output is left in $T/out.
rc() {
    if ! rclone --retries 1 --low-level-retries 1 "$@" >"$T/out" 2>"$T/err"; then
        fail "\`rclone $*\` exited non-zero: $(tail -c 3000 "$T/err") $(tail -c 1000 "$T/out")"
    fi
}

mkbucket() {
    step "mkdir tc:$BUCKET"
    rc mkdir "tc:$BUCKET"
    rc lsd tc:
    grep -q -- " $BUCKET\$" "$T/out" || fail "lsd tc: does not list the new bucket: $(cat "$T/out")"
}

rmbucket() {
    step "rmdir tc:$BUCKET"
    rc rmdir "tc:$BUCKET"
    rc lsd tc:
    ! grep -q -- " $BUCKET\$" "$T/out" || fail "the bucket is still listed after rmdir: $(cat "$T/out")"
}

basic() {
    step "copy of a small tree"
    mkdir -p "$T/src/a/b" "$T/src/c"
    head -c 3000 /dev/urandom >"$T/src/a/b/deep.bin"
    head -c 1500000 /dev/urandom >"$T/src/c/middle.bin"
    echo "hello" >"$T/src/top.txt"
    echo "spaces and ünïcode" >"$T/src/c/name with spaces ü.txt"
    : >"$T/src/empty"
    rc copy "$T/src" "tc:$BUCKET"

    step "check (sizes and MD5s)"
    rc check "$T/src" "tc:$BUCKET"
    grep -q "0 differences found" "$T/err" || fail "check did not report 0 differences: $(cat "$T/err")"
    ! grep -qi "hash.*not\|no hashes" "$T/err" || fail "check compared no hashes: $(cat "$T/err")"

    step "lsf -R"
    rc lsf -R --files-only "tc:$BUCKET"
    sort "$T/out" >"$T/listed"
    (cd "$T/src" && find . -type f | sed 's|^\./||' | sort) >"$T/expected"
    diff "$T/expected" "$T/listed" >"$T/diff" || fail "lsf lists other files than copied: $(cat "$T/diff")"

    step "copy back"
    rc copy "tc:$BUCKET" "$T/back"
    diff -r "$T/src" "$T/back" >"$T/diff" 2>&1 || fail "the tree copied back differs: $(cat "$T/diff")"

    step "a changed file copied again"
    echo "changed" >>"$T/src/top.txt"
    rc copy "$T/src" "tc:$BUCKET"
    rc check "$T/src" "tc:$BUCKET"
    rc cat "tc:$BUCKET/top.txt"
    cmp -s "$T/out" "$T/src/top.txt" || fail "cat of the changed file: $(cat "$T/out")"

    step "delete"
    rc delete "tc:$BUCKET"
    rc lsf -R --files-only "tc:$BUCKET"
    [ ! -s "$T/out" ] || fail "left after delete: $(cat "$T/out")"
}

multipart() {
    step "copy of a 12 MiB file in 5 MiB chunks"
    mkdir -p "$T/big"
    head -c $((12 * 1024 * 1024)) /dev/urandom >"$T/big/big.bin"
    rc copy --s3-upload-cutoff 5M --s3-chunk-size 5M "$T/big" "tc:$BUCKET"

    step "check (MD5 from the object's metadata)"
    rc check "$T/big" "tc:$BUCKET"
    grep -q "0 differences found" "$T/err" || fail "check did not report 0 differences: $(cat "$T/err")"
    rc md5sum "tc:$BUCKET"
    [ "$(cut -c1-32 "$T/out")" = "$(md5sum <"$T/big/big.bin" | cut -c1-32)" ] || fail "md5sum says $(cat "$T/out")"

    step "check --download"
    rc check --download "$T/big" "tc:$BUCKET"

    step "copy back"
    rc copy "tc:$BUCKET" "$T/big.back"
    cmp -s "$T/big/big.bin" "$T/big.back/big.bin" || fail "the file copied back differs"

    step "delete"
    rc delete "tc:$BUCKET"
    rc lsf -R --files-only "tc:$BUCKET"
    [ ! -s "$T/out" ] || fail "left after delete: $(cat "$T/out")"
}

mkbucket
case $PART in
basic) basic ;;
multipart) multipart ;;
all) basic && multipart ;;
esac
rmbucket
echo "$NAME: all steps passed"
