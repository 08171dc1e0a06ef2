#!/usr/bin/env python3
"""Writes the deterministic test tree for bench/dir.sh.

    python3 bench/gen_tree.py DEST --files N --total-mib M [--small-min-kib 1] [--small-max-kib 64]
                                   [--large-mib 32] [--per-dir 100] [--seed 1]

Exactly N files holding exactly M MiB in all. Most are small, log-uniform between the two small
bounds, 100 to a directory two levels down (`d00/s000/f0000000.bin`); whatever the small files
leave of the total goes to a few large files of about --large-mib each (`large/big000.bin`). If the
small files alone would exceed the total, they are scaled down and there are no large files.
Contents are slices of a pseudo-random pool (seeded), so every run with the same arguments writes
the same sizes and bytes. DEST must not exist; the tree is written to DEST.tmp and renamed, so an
interrupted run leaves nothing that looks finished. Prints the summary line `files N bytes B
small S large L`.
"""

import argparse
import math
import os
import random
import sys

POOL_BYTES = 64 << 20


def sizes(args):
    """Sizes of the small files and of the large ones, summing to exactly total."""
    rnd = random.Random(args.seed)
    total = args.total_mib << 20
    lo, hi = args.small_min_kib << 10, args.small_max_kib << 10
    large_avg = args.large_mib << 20
    n = args.files
    # The small files' expected total decides how many large files fit in what is left.
    small_mean = (hi - lo) / math.log(hi / lo) if hi > lo else lo
    n_large = 0
    if n > 1 and total - n * small_mean >= large_avg / 2:
        n_large = max(1, min(n - 1, round((total - (n - 1) * small_mean) / large_avg)))
    small = [int(math.exp(rnd.uniform(math.log(lo), math.log(hi)))) for _ in range(n - n_large)]
    budget = total - sum(small)
    if n_large and budget < n_large:
        n_large, small = 0, small + [int(math.exp(rnd.uniform(math.log(lo), math.log(hi)))) for _ in range(n_large)]
        budget = total - sum(small)
    if n_large == 0:
        # No large files: scale the small ones to the total exactly.
        scale = total / max(1, sum(small))
        small = [max(0, int(s * scale)) for s in small]
        small[-1] += total - sum(small)
        return small, []
    # Large files around the average (0.5x to 1.5x), scaled to the budget exactly.
    weights = [rnd.uniform(0.5, 1.5) for _ in range(n_large)]
    large = [int(budget * w / sum(weights)) for w in weights]
    large[-1] += budget - sum(large)
    return small, large


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dest")
    p.add_argument("--files", type=int, required=True)
    p.add_argument("--total-mib", type=int, required=True)
    p.add_argument("--small-min-kib", type=int, default=1)
    p.add_argument("--small-max-kib", type=int, default=64)
    p.add_argument("--large-mib", type=int, default=32)
    p.add_argument("--per-dir", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if args.files < 1 or args.total_mib < 1 or not 1 <= args.small_min_kib <= args.small_max_kib or args.large_mib < 1:
        p.error("need --files >= 1, --total-mib >= 1, 1 <= --small-min-kib <= --small-max-kib, --large-mib >= 1")
    if os.path.exists(args.dest):
        p.error(f"{args.dest} exists")

    small, large = sizes(args)
    pool = random.Random(args.seed ^ 0x5EED).randbytes(POOL_BYTES)
    view = memoryview(pool)
    tmp = args.dest + ".tmp"
    if os.path.exists(tmp):
        import shutil

        shutil.rmtree(tmp)
    os.makedirs(tmp)

    def write(path, size, salt):
        # A different slice of the pool for each file; files larger than the pool wrap around it.
        off = (salt * 1_000_003 * 4096) % POOL_BYTES
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            left = size
            while left:
                n = min(left, POOL_BYTES - off, 8 << 20)
                os.write(fd, view[off : off + n])
                left -= n
                off = (off + n) % POOL_BYTES
        finally:
            os.close(fd)

    made = set()
    for i, size in enumerate(small):
        d = os.path.join(tmp, f"d{i // (args.per_dir * 100):02d}", f"s{(i // args.per_dir) % 100:03d}")
        if d not in made:
            os.makedirs(d)
            made.add(d)
        write(os.path.join(d, f"f{i:07d}.bin"), size, i)
    if large:
        os.makedirs(os.path.join(tmp, "large"))
    for j, size in enumerate(large):
        write(os.path.join(tmp, "large", f"big{j:03d}.bin"), size, len(small) + j)
    os.rename(tmp, args.dest)
    print(f"files {len(small) + len(large)} bytes {sum(small) + sum(large)} small {len(small)} large {len(large)}")


if __name__ == "__main__":
    sys.exit(main())
