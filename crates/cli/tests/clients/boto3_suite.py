#!/usr/bin/env python3
"""boto3 as a real client of an S3-compatible endpoint (issue 18).

    python3 boto3_suite.py ENDPOINT ACCESS_KEY SECRET_KEY BUCKET [--part basic|multipart|all]
                           [--skip STEP]...

ENDPOINT is http://HOST:PORT, path-style, region us-east-1. BUCKET must not exist yet: the suite
creates it, fills it, empties it and deletes it.

Two clients are used. The first has boto3's default configuration: botocore >= 1.36 computes a
CRC32 of every upload and validates the checksums a GET returns; over plain HTTP it sends the
checksum in a header and signs the payload's SHA-256. The second is the same client sending uploads
as botocore does over HTTPS (the default against AWS): `aws-chunked` bodies with
`STREAMING-UNSIGNED-PAYLOAD-TRAILER` and the CRC32 in a trailer. Both go through every upload below.

Parts (steps named as `--skip` takes them):
  basic      bucket (create, head, list), put-get (bytes, ETag = MD5, CRC32 returned, metadata,
             content type), range, list (prefix, delimiter, pages of 2), copy, conditional-get
             (If-None-Match -> 304, If-Match mismatch -> 412, matching ones -> 200),
             bad-checksum (a wrong CRC32, in a header or in a trailer, is refused and nothing is
             stored), delete,
             delete-objects
  multipart  upload-file (upload_file with a 5 MiB threshold and 5 MiB parts: 4 parts; ETag
             MD5-of-MD5s-4; download_file in ranged parts; SHA-256 compared), copy-multipart (the
             copy's ETag is the MD5 of its bytes, as on AWS)
Exits 0 when every step passed; on the first failure, exits 1 naming the step and what differed.
"""

import argparse
import base64
import hashlib
import os
import sys
import tempfile
import zlib

try:
    import boto3
    import botocore
    import botocore.httpchecksum
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from botocore.exceptions import ClientError
except ImportError as e:  # pragma: no cover - the message is the point
    sys.exit(f"boto3 suite: cannot import boto3 ({e}); install it with: pip install boto3")

MIB = 1024 * 1024
STEP = "setup"


class Failed(Exception):
    """A step's check did not hold."""


def check(cond, what):
    if not cond:
        raise Failed(what)


def step(name, part):
    global STEP
    STEP = name
    print(f"boto3 suite ({part}): {name}", flush=True)


def md5_hex(data):
    return hashlib.md5(data).hexdigest()


def crc32_b64(data):
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def error_code(e):
    return e.response.get("Error", {}).get("Code"), e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def expect_error(call, codes, statuses, what):
    """Runs `call`; it must fail with one of `codes` (error codes) or `statuses` (HTTP statuses)."""
    try:
        call()
    except ClientError as e:
        code, status = error_code(e)
        check(code in codes or status in statuses, f"{what}: got {code} ({status}), expected one of {codes} / {statuses}")
        return
    raise Failed(f"{what}: the request succeeded")


def force_trailer(params, **_kwargs):
    """Makes botocore send the upload's checksum in an aws-chunked trailer, as it does over HTTPS."""
    algorithm = params.get("context", {}).get("checksum", {}).get("request_algorithm")
    if isinstance(algorithm, dict) and algorithm.get("in") == "header":
        algorithm["in"] = "trailer"


class WrongChecksum:
    """A checksum that has seen a few bytes more than the body: its trailer will not match."""

    def __init__(self, inner):
        self.inner = inner
        inner.update(b"not in the body")

    def update(self, chunk):
        self.inner.update(chunk)

    def digest(self):
        return self.inner.digest()

    def b64digest(self):
        return self.inner.b64digest()


def corrupt_trailer(request, **_kwargs):
    """Makes an aws-chunked upload end with a checksum trailer that is not its body's."""
    body = request.body
    check(isinstance(body, botocore.httpchecksum.AwsChunkedWrapper), f"the trailer client sent a {type(body).__name__} body")
    inner = body._checksum_cls
    body._checksum_cls = lambda: WrongChecksum(inner())
    body._reset()


def clients(endpoint, access_key, secret_key):
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name="us-east-1"
    )
    # Path-style is the only configuration given: everything else is boto3's default.
    config = Config(s3={"addressing_style": "path"})
    plain = session.client("s3", endpoint_url=endpoint, config=config)
    trailer = session.client("s3", endpoint_url=endpoint, config=config)
    for operation in ("PutObject", "UploadPart"):
        trailer.meta.events.register(f"before-call.s3.{operation}", force_trailer)
        for label, c in (("default", plain), ("trailer", trailer)):
            c.meta.events.register(f"before-send.s3.{operation}", lambda request, label=label, **_: SENT[label].add(payload_of(request)))
    return {"default": plain, "trailer": trailer}


# The x-amz-content-sha256 of each client's uploads, to check that the trailer client really sent
# aws-chunked bodies with trailers and the default one signed payloads.
SENT = {"default": set(), "trailer": set()}


def payload_of(request):
    value = request.headers.get("x-amz-content-sha256", b"")
    value = value.decode() if isinstance(value, bytes) else value
    return value if not all(ch in "0123456789abcdef" for ch in value) or not value else "<sha256 of the payload>"


def check_sent(label, expected):
    check(SENT[label] == {expected}, f"the {label} client's uploads were sent as {SENT[label]}, expected {expected}")


def keys_of(s3, bucket, prefix=""):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def basic(cs, bucket, skip):
    s3 = cs["default"]
    run = lambda name: name not in skip  # noqa: E731

    if run("put-get"):
        for label, c in cs.items():
            step(f"put-get ({label} client)", "basic")
            data = os.urandom(MIB + 17)
            key = f"objects/{label}.bin"
            r = c.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType="application/x-test", Metadata={"colour": "blue"}
            )
            check(r["ETag"] == f'"{md5_hex(data)}"', f"PutObject ETag {r['ETag']}, expected the quoted MD5")
            check(r.get("ChecksumCRC32") == crc32_b64(data), f"PutObject returned ChecksumCRC32 {r.get('ChecksumCRC32')}")
            g = c.get_object(Bucket=bucket, Key=key)
            body = g["Body"].read()
            check(body == data, f"GetObject returned {len(body)} bytes that differ from the {len(data)} put")
            check(g["ETag"] == r["ETag"], f"GetObject ETag {g['ETag']} differs from PutObject's {r['ETag']}")
            check(g["ContentLength"] == len(data), f"GetObject ContentLength {g['ContentLength']}")
            check(g["ContentType"] == "application/x-test", f"GetObject ContentType {g.get('ContentType')}")
            check(g.get("Metadata") == {"colour": "blue"}, f"GetObject Metadata {g.get('Metadata')}")
            h = c.head_object(Bucket=bucket, Key=key)
            check(h["ContentLength"] == len(data) and h["ETag"] == r["ETag"], f"HeadObject {h}")
        check_sent("default", "<sha256 of the payload>")
        check_sent("trailer", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
        s3.put_object(Bucket=bucket, Key="objects/empty", Body=b"")
        check(s3.get_object(Bucket=bucket, Key="objects/empty")["Body"].read() == b"", "an empty object is not empty")
        expect_error(lambda: s3.head_object(Bucket=bucket, Key="objects/missing"), [], [404], "HeadObject of a missing key")
        expect_error(lambda: s3.get_object(Bucket=bucket, Key="objects/missing"), ["NoSuchKey"], [], "GetObject of a missing key")

    if run("range"):
        step("range", "basic")
        data = bytes(range(256)) * 100
        s3.put_object(Bucket=bucket, Key="range.bin", Body=data)
        g = s3.get_object(Bucket=bucket, Key="range.bin", Range="bytes=10-19")
        check(g["ResponseMetadata"]["HTTPStatusCode"] == 206, f"status {g['ResponseMetadata']['HTTPStatusCode']}, expected 206")
        check(g["ContentRange"] == f"bytes 10-19/{len(data)}", f"ContentRange {g.get('ContentRange')}")
        check(g["Body"].read() == data[10:20], "the range's bytes differ")
        g = s3.get_object(Bucket=bucket, Key="range.bin", Range="bytes=-5")
        check(g["Body"].read() == data[-5:], "the suffix range's bytes differ")

    if run("list"):
        step("list", "basic")
        names = ["list/a", "list/b", "list/sub/c", "list/sub/d", "list/z"]
        for k in names:
            s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
        r = s3.list_objects_v2(Bucket=bucket, Prefix="list/", Delimiter="/")
        check([o["Key"] for o in r.get("Contents", [])] == ["list/a", "list/b", "list/z"], f"Contents {r.get('Contents')}")
        check([p["Prefix"] for p in r.get("CommonPrefixes", [])] == ["list/sub/"], f"CommonPrefixes {r.get('CommonPrefixes')}")
        pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="list/", PaginationConfig={"PageSize": 2}))
        got = [o["Key"] for p in pages for o in p.get("Contents", [])]
        check(got == names, f"pages of 2 listed {got}")
        check(len(pages) == 3, f"{len(pages)} pages of 2 for 5 keys")
        sizes = {o["Key"]: o["Size"] for p in pages for o in p.get("Contents", [])}
        check(all(sizes[k] == len(k) for k in names), f"listed sizes {sizes}")
        v1 = s3.get_paginator("list_objects").paginate(Bucket=bucket, Prefix="list/", PaginationConfig={"PageSize": 2})
        got = [o["Key"] for p in v1 for o in p.get("Contents", [])]
        check(got == names, f"ListObjects (v1) pages of 2 listed {got}")

    if run("copy"):
        step("copy", "basic")
        data = os.urandom(300_000)
        src = s3.put_object(Bucket=bucket, Key="copy/src", Body=data, Metadata={"k": "v"})
        r = s3.copy_object(Bucket=bucket, Key="copy/dst", CopySource={"Bucket": bucket, "Key": "copy/src"})
        check(r["CopyObjectResult"]["ETag"] == src["ETag"], f"CopyObject ETag {r['CopyObjectResult']['ETag']}")
        g = s3.get_object(Bucket=bucket, Key="copy/dst")
        check(g["Body"].read() == data, "the copy's bytes differ from the source's")
        check(g.get("Metadata") == {"k": "v"}, f"the copy's metadata {g.get('Metadata')}")
        s3.copy(CopySource={"Bucket": bucket, "Key": "copy/src"}, Bucket=bucket, Key="copy/managed")
        check(s3.get_object(Bucket=bucket, Key="copy/managed")["Body"].read() == data, "a managed copy's bytes differ")

    if run("conditional-get"):
        step("conditional-get", "basic")
        r = s3.put_object(Bucket=bucket, Key="cond", Body=b"conditional")
        etag = r["ETag"]
        expect_error(lambda: s3.get_object(Bucket=bucket, Key="cond", IfNoneMatch=etag), ["304"], [304], "If-None-Match with the ETag")
        expect_error(
            lambda: s3.get_object(Bucket=bucket, Key="cond", IfMatch='"00000000000000000000000000000000"'),
            ["PreconditionFailed"],
            [412],
            "If-Match with another ETag",
        )
        check(s3.get_object(Bucket=bucket, Key="cond", IfMatch=etag)["Body"].read() == b"conditional", "If-Match with the ETag")
        g = s3.get_object(Bucket=bucket, Key="cond", IfNoneMatch='"00000000000000000000000000000000"')
        check(g["Body"].read() == b"conditional", "If-None-Match with another ETag")
        expect_error(lambda: s3.head_object(Bucket=bucket, Key="cond", IfNoneMatch=etag), [], [304], "HEAD If-None-Match")

    if run("bad-checksum"):
        step("bad-checksum (default client: a wrong x-amz-checksum-crc32 header)", "basic")
        data = b"the checksum sent with this body is not its own"
        expect_error(
            lambda: s3.put_object(Bucket=bucket, Key="bad/header", Body=data, ChecksumCRC32=crc32_b64(b"other")),
            ["BadDigest", "InvalidRequest", "XAmzContentChecksumMismatch"],
            [],
            "PutObject with a wrong x-amz-checksum-crc32 header",
        )
        expect_error(lambda: s3.head_object(Bucket=bucket, Key="bad/header"), [], [404], "HeadObject after a refused PutObject")
        step("bad-checksum (trailer client: a wrong x-amz-checksum-crc32 trailer)", "basic")
        t = cs["trailer"]
        t.meta.events.register("before-send.s3.PutObject", corrupt_trailer, unique_id="corrupt-trailer")
        try:
            expect_error(
                lambda: t.put_object(Bucket=bucket, Key="bad/trailer", Body=data),
                ["BadDigest", "InvalidRequest", "XAmzContentChecksumMismatch"],
                [],
                "PutObject with a wrong x-amz-checksum-crc32 trailer",
            )
        finally:
            t.meta.events.unregister("before-send.s3.PutObject", unique_id="corrupt-trailer")
        expect_error(lambda: s3.head_object(Bucket=bucket, Key="bad/trailer"), [], [404], "HeadObject after a refused PutObject")

    if run("delete"):
        step("delete", "basic")
        s3.put_object(Bucket=bucket, Key="del/one", Body=b"1")
        s3.delete_object(Bucket=bucket, Key="del/one")
        expect_error(lambda: s3.head_object(Bucket=bucket, Key="del/one"), [], [404], "HeadObject after DeleteObject")
        s3.delete_object(Bucket=bucket, Key="del/never-was")  # deleting a missing key succeeds

    if run("delete-objects"):
        step("delete-objects", "basic")
        ks = [f"many/{i:03}" for i in range(30)]
        for k in ks:
            s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
        r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in ks]})
        check(sorted(d["Key"] for d in r.get("Deleted", [])) == ks, f"Deleted {r.get('Deleted')}, Errors {r.get('Errors')}")
        check(not r.get("Errors"), f"Errors {r.get('Errors')}")
        check(keys_of(s3, bucket, "many/") == [], "keys left after DeleteObjects")


def multipart(cs, bucket, skip, tmp):
    run = lambda name: name not in skip  # noqa: E731
    s3 = cs["default"]
    small = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=4)
    src = os.path.join(tmp, "upload.bin")
    data = os.urandom(18 * MIB + 12345)
    with open(src, "wb") as f:
        f.write(data)
    part_md5s = b"".join(hashlib.md5(data[i : i + 5 * MIB]).digest() for i in range(0, len(data), 5 * MIB))
    expected_etag = f'"{hashlib.md5(part_md5s).hexdigest()}-4"'

    if run("upload-file"):
        for label, c in cs.items():
            step(f"upload-file ({label} client)", "multipart")
            key = f"mp/{label}.bin"
            c.upload_file(src, bucket, key, Config=small)
            h = c.head_object(Bucket=bucket, Key=key)
            check(h["ContentLength"] == len(data), f"ContentLength {h['ContentLength']}, expected {len(data)}")
            check(h["ETag"] == expected_etag, f"ETag {h['ETag']}, expected {expected_etag} (4 parts of 5 MiB)")
            dst = os.path.join(tmp, f"download-{label}.bin")
            c.download_file(bucket, key, dst, Config=small)
            with open(dst, "rb") as f:
                back = f.read()
            check(hashlib.sha256(back).digest() == hashlib.sha256(data).digest(), "the downloaded file's SHA-256 differs")
            g = c.get_object(Bucket=bucket, Key=key, Range=f"bytes={5 * MIB - 10}-{5 * MIB + 9}")
            check(g["Body"].read() == data[5 * MIB - 10 : 5 * MIB + 10], "a range across a part boundary differs")
        check_sent("default", "<sha256 of the payload>")
        check_sent("trailer", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")

    if run("copy-multipart"):
        step("copy-multipart", "multipart")
        s3.upload_file(src, bucket, "mp/src.bin", Config=small)
        r = s3.copy_object(Bucket=bucket, Key="mp/copy.bin", CopySource={"Bucket": bucket, "Key": "mp/src.bin"})
        # As on AWS: an object made by CopyObject has the MD5 of its bytes as its ETag, whatever
        # made the source (a multipart ETag comes only from a multipart upload or part copy).
        whole = f'"{hashlib.md5(data).hexdigest()}"'
        check(r["CopyObjectResult"]["ETag"] == whole, f"CopyObject ETag {r['CopyObjectResult']['ETag']}, not {whole}")
        back = s3.get_object(Bucket=bucket, Key="mp/copy.bin")["Body"].read()
        check(back == data, "the copy of a multipart object differs")


def main():
    p = argparse.ArgumentParser(description="boto3 against an S3-compatible endpoint")
    p.add_argument("endpoint")
    p.add_argument("access_key")
    p.add_argument("secret_key")
    p.add_argument("bucket")
    p.add_argument("--part", choices=["basic", "multipart", "all"], default="all")
    p.add_argument("--skip", action="append", default=[], help="a step to leave out (repeatable)")
    a = p.parse_args()
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        del os.environ[var]
    with tempfile.TemporaryDirectory(prefix="tiercache-boto3-") as tmp:
        os.environ["AWS_CONFIG_FILE"] = os.path.join(tmp, "config")
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.path.join(tmp, "credentials")
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        print(f"boto3 suite ({a.part}): boto3 {boto3.__version__}, botocore {botocore.__version__}", flush=True)
        try:
            cs = clients(a.endpoint, a.access_key, a.secret_key)
            s3 = cs["default"]
            step("bucket", a.part)
            s3.create_bucket(Bucket=a.bucket)
            s3.head_bucket(Bucket=a.bucket)
            names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
            check(a.bucket in names, f"ListBuckets does not list {a.bucket}: {names}")
            if a.part in ("basic", "all"):
                basic(cs, a.bucket, set(a.skip))
            if a.part in ("multipart", "all"):
                multipart(cs, a.bucket, set(a.skip), tmp)
            step("delete bucket", a.part)
            left = keys_of(s3, a.bucket)
            for i in range(0, len(left), 1000):
                s3.delete_objects(Bucket=a.bucket, Delete={"Objects": [{"Key": k} for k in left[i : i + 1000]]})
            s3.delete_bucket(Bucket=a.bucket)
            expect_error(lambda: s3.head_bucket(Bucket=a.bucket), [], [404], "HeadBucket after DeleteBucket")
        except Failed as e:
            sys.exit(f"boto3 suite ({a.part}) FAILED at step '{STEP}': {e}")
        except (ClientError, botocore.exceptions.BotoCoreError) as e:
            sys.exit(f"boto3 suite ({a.part}) FAILED at step '{STEP}': {type(e).__name__}: {e}")
    print(f"boto3 suite ({a.part}): all steps passed" + (f" (skipped: {', '.join(a.skip)})" if a.skip else ""))


if __name__ == "__main__":
    main()
