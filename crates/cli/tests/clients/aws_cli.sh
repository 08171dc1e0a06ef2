#!/usr/bin/env bash
# The aws CLI (v1, pip `awscli`) as a real client of an S3-compatible endpoint (issue 18).
#
#   bash aws_cli.sh ENDPOINT ACCESS_KEY SECRET_KEY BUCKET [--part basic|multipart|all]
#
# ENDPOINT is http://HOST:PORT, path-style, region us-east-1. BUCKET must not exist yet: the suite
# makes it (`s3 mb`), fills it, empties it and removes it (`s3 rb`). Parts:
#   basic     (no multipart upload: every file is below the CLI's 8 MiB threshold)
#             s3 mb; s3 cp of a 1 MiB file up and down (SHA-256 compared); s3api head-object (size,
#             ETag = MD5); s3api get-object --range; s3 presign (SigV2, the CLI's default, and
#             SigV4) fetched with curl, and refused with a damaged signature; s3 sync of a
#             small tree up and down (diff -r), a second sync uploading nothing, a sync --delete;
#             s3 sync of 2 500 small files and s3 ls --recursive of them (three pages of 1 000);
#             s3 rm --recursive; s3 rb
#   multipart s3 mb; s3 cp of a 100 MiB file up (13 parts of 8 MiB) and down (ranged GETs), SHA-256
#             compared; head-object (ETag of the form MD5-13); get-object --range across a part
#             boundary; s3 rm; s3 rb
# Exits 0 when every step passed; on the first failure, exits 1 with the step, the command and
# what it said. Needs: aws (pip install awscli), curl, sha256sum, md5sum, cmp, diff. No
# configuration of the machine is read or written: the CLI gets a config file in a temp dir.
set -euo pipefail

usage() { echo "usage: $0 ENDPOINT ACCESS_KEY SECRET_KEY BUCKET [--part basic|multipart|all]" >&2; exit 2; }
[ $# -ge 4 ] || usage
EP=$1 BUCKET=$4
PART=all
if [ $# -ge 5 ]; then
    [ "$5" = --part ] && [ $# -eq 6 ] || usage
    PART=$6
fi
case $PART in basic | multipart | all) ;; *) usage ;; esac

NAME="aws-cli suite ($PART)"
STEP="setup"
step() { STEP=$1; echo "$NAME: $STEP"; }
fail() { echo "$NAME FAILED at step '$STEP': $*" >&2; exit 1; }
for tool in aws curl sha256sum md5sum cmp diff; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (aws: pip install awscli)"
done

T=$(mktemp -d "${TMPDIR:-/tmp}/tiercache-aws-cli.XXXXXX")
trap 'rm -rf "$T"' EXIT

# Only what this suite sets: no profile, session token, endpoint or config from the machine.
for v in $(env | awk -F= '/^AWS_/ {print $1}'); do unset "$v"; done
export AWS_ACCESS_KEY_ID=$2 AWS_SECRET_ACCESS_KEY=$3 AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE=$T/config AWS_SHARED_CREDENTIALS_FILE=$T/credentials
export AWS_EC2_METADATA_DISABLED=true AWS_PAGER=""
cat >"$T/config" <<'EOF'
[default]
region = us-east-1
s3 =
    addressing_style = path
EOF
sed 's/addressing_style = path/&\n    signature_version = s3v4/' "$T/config" >"$T/config-v4"
: >"$T/credentials"

# Runs the aws CLI against the endpoint; on failure the suite fails with what it said. Its
# standard output is left in $T/out.
aws_() {
    if ! aws --endpoint-url "$EP" "$@" >"$T/out" 2>"$T/err"; then
        fail "\`aws $*\` exited non-zero: $(tail -c 3000 "$T/err") $(tail -c 1000 "$T/out")"
    fi
}
sha() { sha256sum "$1" | cut -c1-64; }
# One field of the JSON in $T/out (a top-level string or number), without quotes.
field() { python3 -c 'import json, sys; v = json.load(open(sys.argv[1])).get(sys.argv[2]); print("" if v is None else v)' "$T/out" "$1"; }

mb() {
    step "s3 mb s3://$BUCKET"
    aws_ s3 mb "s3://$BUCKET"
    aws_ s3api head-bucket --bucket "$BUCKET"
    aws_ s3 ls
    grep -qw -- "$BUCKET" "$T/out" || fail "s3 ls does not list the new bucket: $(cat "$T/out")"
}

rb() {
    step "s3 rb s3://$BUCKET"
    aws_ s3 rb "s3://$BUCKET"
    if aws --endpoint-url "$EP" s3api head-bucket --bucket "$BUCKET" >"$T/out" 2>&1; then
        fail "head-bucket still succeeds after s3 rb"
    fi
}

basic() {
    step "s3 cp of a 1 MiB file up and down"
    head -c $((1024 * 1024)) /dev/urandom >"$T/one.bin"
    aws_ s3 cp --only-show-errors "$T/one.bin" "s3://$BUCKET/files/one.bin"
    aws_ s3 cp --only-show-errors "s3://$BUCKET/files/one.bin" "$T/one.back"
    [ "$(sha "$T/one.back")" = "$(sha "$T/one.bin")" ] || fail "the downloaded file's SHA-256 differs from the uploaded one"

    step "s3api head-object"
    aws_ s3api head-object --bucket "$BUCKET" --key files/one.bin
    [ "$(field ContentLength)" = $((1024 * 1024)) ] || fail "ContentLength $(field ContentLength), expected 1048576: $(cat "$T/out")"
    [ "$(field ETag)" = "\"$(md5sum <"$T/one.bin" | cut -c1-32)\"" ] || fail "ETag $(field ETag) is not the quoted MD5 of the file"

    step "s3api get-object --range bytes=1000-1999"
    aws_ s3api get-object --bucket "$BUCKET" --key files/one.bin --range bytes=1000-1999 "$T/range.out"
    [ "$(field ContentRange)" = "bytes 1000-1999/1048576" ] || fail "ContentRange '$(field ContentRange)': $(cat "$T/out")"
    cmp -s "$T/range.out" <(tail -c +1001 "$T/one.bin" | head -c 1000) || fail "the range's bytes differ from the file's bytes 1000-1999"

    # The CLI's default presigned URL is signed with SigV2 (AWSAccessKeyId, Signature, Expires);
    # with `signature_version = s3v4` it is SigV4 (X-Amz-Signature, ...).
    for sig in default s3v4; do
        step "s3 presign ($sig), fetched with curl"
        if [ "$sig" = s3v4 ]; then
            AWS_CONFIG_FILE=$T/config-v4 aws_ s3 presign "s3://$BUCKET/files/one.bin" --expires-in 300
            grep -q 'X-Amz-Signature=' "$T/out" || fail "not a SigV4 presigned URL: $(cat "$T/out")"
        else
            aws_ s3 presign "s3://$BUCKET/files/one.bin" --expires-in 300
        fi
        url=$(cat "$T/out")
        curl -fsS -o "$T/presigned.out" "$url" 2>"$T/err" || fail "curl of the presigned URL failed: $(cat "$T/err") (URL: $url)"
        [ "$(sha "$T/presigned.out")" = "$(sha "$T/one.bin")" ] || fail "the presigned GET's body differs from the file"
        bad=$(sed -E 's/(Signature=)a/\1b/; t; s/(Signature=)./\1a/' <<<"$url")
        [ "$bad" != "$url" ] || fail "no Signature= in the presigned URL $url"
        code=$(curl -sS -o /dev/null -w '%{http_code}' "$bad") || true
        [ "$code" = 403 ] || fail "a presigned URL with a damaged signature answered $code, not 403"
    done

    step "s3 sync of a small tree up, down, again (nothing to do) and with --delete"
    mkdir -p "$T/tree/a/b" "$T/tree/c"
    head -c 3000 /dev/urandom >"$T/tree/a/b/deep.bin"
    head -c 100000 /dev/urandom >"$T/tree/c/middle.bin"
    echo "hello" >"$T/tree/top.txt"
    echo "spaces and ünïcode" >"$T/tree/c/name with spaces ü.txt"
    : >"$T/tree/empty"
    aws_ s3 sync --only-show-errors "$T/tree" "s3://$BUCKET/tree"
    aws_ s3 sync --only-show-errors "s3://$BUCKET/tree" "$T/tree.back"
    diff -r "$T/tree" "$T/tree.back" >"$T/diff" 2>&1 || fail "the tree synced down differs: $(cat "$T/diff")"
    aws_ s3 sync "$T/tree" "s3://$BUCKET/tree"
    [ ! -s "$T/out" ] || fail "a second sync of an unchanged tree transferred something: $(cat "$T/out")"
    rm "$T/tree/top.txt"
    aws_ s3 sync --only-show-errors --delete "$T/tree" "s3://$BUCKET/tree"
    aws_ s3 ls --recursive "s3://$BUCKET/tree/"
    [ "$(wc -l <"$T/out")" = 4 ] || fail "after sync --delete, expected 4 keys under tree/: $(cat "$T/out")"
    ! grep -q 'tree/top.txt' "$T/out" || fail "sync --delete left tree/top.txt: $(cat "$T/out")"

    step "s3 sync of 2 500 small files, s3 ls --recursive of them (paging)"
    mkdir -p "$T/many"
    (
        cd "$T/many"
        for d in $(seq -w 0 24); do
            mkdir "d$d"
            for f in $(seq -w 0 99); do printf '%s/%s\n' "$d" "$f" >"d$d/f$f.txt"; done
        done
    )
    aws_ s3 sync --only-show-errors "$T/many" "s3://$BUCKET/many"
    aws_ s3 ls --recursive "s3://$BUCKET/many/"
    awk '{print $4}' "$T/out" | sort >"$T/listed"
    (cd "$T/many" && find . -type f | sed 's|^\./|many/|' | sort) >"$T/expected"
    [ "$(wc -l <"$T/listed")" = 2500 ] || fail "s3 ls --recursive listed $(wc -l <"$T/listed") keys, expected 2500"
    diff "$T/expected" "$T/listed" >"$T/diff" || fail "s3 ls --recursive lists other keys than uploaded: $(head -20 "$T/diff")"
    aws_ s3api list-objects-v2 --bucket "$BUCKET" --prefix many/ --max-items 1001 --page-size 1000
    [ "$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["Contents"]))' "$T/out")" = 1001 ] ||
        fail "list-objects-v2 over two pages of 1 000 did not return 1 001 keys"

    step "s3 rm --recursive"
    aws_ s3 rm --only-show-errors --recursive "s3://$BUCKET/"
    aws_ s3 ls --recursive "s3://$BUCKET/"
    [ ! -s "$T/out" ] || fail "keys left after s3 rm --recursive: $(head -5 "$T/out")"
}

multipart() {
    step "s3 cp of a 100 MiB file up (multipart) and down"
    head -c $((100 * 1024 * 1024)) /dev/urandom >"$T/big.bin"
    aws_ s3 cp --only-show-errors "$T/big.bin" "s3://$BUCKET/big/big.bin"
    aws_ s3 cp --only-show-errors "s3://$BUCKET/big/big.bin" "$T/big.back"
    [ "$(sha "$T/big.back")" = "$(sha "$T/big.bin")" ] || fail "the downloaded 100 MiB file's SHA-256 differs from the uploaded one"

    step "s3api head-object of the multipart object"
    aws_ s3api head-object --bucket "$BUCKET" --key big/big.bin
    [ "$(field ContentLength)" = $((100 * 1024 * 1024)) ] || fail "ContentLength $(field ContentLength), expected 104857600"
    # The ETag of a multipart object: the MD5 of the parts' MD5s, then "-" and the number of parts.
    expected=$(python3 -c '
import hashlib, sys
parts = hashlib.md5()
with open(sys.argv[1], "rb") as f:
    while chunk := f.read(8 * 1024 * 1024):
        parts.update(hashlib.md5(chunk).digest())
print(parts.hexdigest())' "$T/big.bin")
    [ "$(field ETag)" = "\"$expected-13\"" ] || fail "ETag $(field ETag), expected \"$expected-13\" (13 parts of 8 MiB)"

    step "s3api get-object --range across a part boundary"
    start=$((8 * 1024 * 1024 - 50))
    aws_ s3api get-object --bucket "$BUCKET" --key big/big.bin --range "bytes=$start-$((start + 99))" "$T/range.out"
    cmp -s "$T/range.out" <(tail -c +$((start + 1)) "$T/big.bin" | head -c 100) || fail "the range's bytes differ from the file's"

    step "s3 rm"
    aws_ s3 rm --only-show-errors "s3://$BUCKET/big/big.bin"
    aws_ s3 ls --recursive "s3://$BUCKET/"
    [ ! -s "$T/out" ] || fail "keys left after s3 rm: $(cat "$T/out")"
}

mb
case $PART in
basic) basic ;;
multipart) multipart ;;
all) basic && multipart ;;
esac
rb
echo "$NAME: all steps passed"
