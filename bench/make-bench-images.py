#!/usr/bin/env python3
"""make-bench-images.py OUT [FILES] [MIB]: two independent two-layer images for
bench/unpack_concurrency.sh, laid out like a bucket (OUT/images/{alpha,beta}/{1,2}.tar).

make-bench-images.py --entries N OUT.tar: one layer of N entries (directories of 100 small
files of 0-256 bytes each, PAX), for the many-entries extract rows of bench/extract.sh.

Deterministic: the same arguments give the same bytes (fixed seeds, fixed times and owners),
so runs are comparable. Layer 1 holds FILES small files (1-8 KiB) in 100-file directories and
MIB MiB of incompressible data in 1 MiB files; layer 2 changes a tenth of the small files and
deletes one directory with a whiteout. The two images share no layer (different seeds)."""
import io
import os
import random
import sys
import tarfile

MTIME = 1700000000


def add_dir(tar, name):
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = 0o755
    ti.mtime = MTIME
    tar.addfile(ti)


def add_file(tar, name, data):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    ti.mtime = MTIME
    tar.addfile(ti, io.BytesIO(data))


def image(out, name, seed, files, mib):
    rng = random.Random(seed)
    d = os.path.join(out, "images", name)
    os.makedirs(d, exist_ok=True)
    ndirs = (files + 99) // 100
    with tarfile.open(os.path.join(d, "1.tar"), "w", format=tarfile.PAX_FORMAT) as tar:
        add_dir(tar, "srv")
        for i in range(ndirs):
            add_dir(tar, f"srv/d{i:03d}")
        for i in range(files):
            add_file(tar, f"srv/d{i // 100:03d}/f{i:05d}", rng.randbytes(rng.randint(1024, 8192)))
        add_dir(tar, "blob")
        for i in range(mib):
            add_file(tar, f"blob/{name}-{i:03d}.bin", rng.randbytes(1 << 20))
    with tarfile.open(os.path.join(d, "2.tar"), "w", format=tarfile.PAX_FORMAT) as tar:
        add_dir(tar, "srv")
        for i in range(0, files, 10):
            add_file(tar, f"srv/d{i // 100:03d}/f{i:05d}", rng.randbytes(2048))
        add_file(tar, "srv/.wh.d000", b"")


def many_entries(path, entries):
    rng = random.Random(3)
    with tarfile.open(path + ".tmp", "w", format=tarfile.PAX_FORMAT) as tar:
        n = 0
        d = 0
        while n < entries:
            add_dir(tar, f"d{d:05d}")
            n += 1
            for i in range(min(99, entries - n)):
                add_file(tar, f"d{d:05d}/f{i:02d}", rng.randbytes(rng.randint(0, 256)))
                n += 1
            d += 1
    os.rename(path + ".tmp", path)


def main():
    if sys.argv[1] == "--entries":
        many_entries(sys.argv[3], int(sys.argv[2]))
        return
    out = sys.argv[1]
    files = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    mib = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    image(out, "alpha", 1, files, mib)
    image(out, "beta", 2, files, mib)


if __name__ == "__main__":
    main()
