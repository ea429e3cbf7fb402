#!/usr/bin/env python3
"""Build the image sources of the fault-matrix tests.

Writes folders laid out like a bucket (use them as `dir:OUT/...`). Everything is deterministic
(fixed owners, times and seeded pseudo-random data), so digests and chain ids are stable.

  make-images.py OUT faults    (build time, used by tests/faults/*.sh inside the VM)
    images/f/1.tar      base: /etc, 200 small files under /many, /data/big.bin (256 KiB of
                        pseudo-random bytes)
    images/f/2.tar      changes /etc/motd, whites out /many/file-000, adds /data/layer2.txt
    images/h/1.tar, 2.tar  the same with a 16 MiB /data/big.bin: download and extraction take
                        long enough under TCG to be killed in the middle
    images/g/1.tar      byte-identical to f/1.tar (shared base), g/2.tar: another top
    images/small/1.tar  one small layer
    images/fill/1.tar   one layer with /data/fill.bin (48 MiB pseudo-random): fills a small pool
    expect.sh           shell variables with what the activations must contain
"""
import hashlib
import io
import os
import random
import sys
import tarfile

MTIME = 1_700_000_000  # fixed: stable digests


def add(tf, name, kind="file", data=b"", mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.mtime = MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.mode = mode
    if kind == "dir":
        ti.type = tarfile.DIRTYPE
        tf.addfile(ti)
    else:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))


def layer(build):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        build(tf)
    return buf.getvalue()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def small_file(rng, i):
    return ("file %d\n" % i).encode() + rng.randbytes(rng.randint(1024, 4096))


def two_layer_image(out, name, seed, big_bytes, expect, prefix):
    """images/NAME/{1,2}.tar: a base with 200 small files and /data/big.bin, a top that changes
    /etc/motd, whites out /many/file-000 and adds /data/layer2.txt."""
    rng = random.Random(seed)
    big = rng.randbytes(big_bytes)
    many = [small_file(rng, i) for i in range(200)]

    def base(tf):
        for d in ("etc/", "many/", "data/"):
            add(tf, d, "dir", mode=0o755)
        add(tf, "etc/motd", data=b"layer 1\n")
        add(tf, "etc/os-release", data=b"NAME=thinimg-faults\n")
        for i, data in enumerate(many):
            add(tf, "many/file-%03d" % i, data=data)
        add(tf, "data/big.bin", data=big)

    def top(tf):
        add(tf, "etc/motd", data=b"layer 2\n")
        add(tf, "many/.wh.file-000")
        add(tf, "data/layer2.txt", data=b"layer 2 data\n")

    l1 = layer(base)
    write(os.path.join(out, "images/%s/1.tar" % name), l1)
    write(os.path.join(out, "images/%s/2.tar" % name), layer(top))
    expect += ["%s_BIG_SHA256=%s" % (prefix, hashlib.sha256(big).hexdigest()),
               "%s_FILE199_SHA256=%s" % (prefix, hashlib.sha256(many[199]).hexdigest()),
               "%s_LAYER1_BYTES=%d" % (prefix, len(l1))]
    return l1


def faults(out):
    expect = []
    # f: light, for the kill points where nothing long runs; h: heavy (16 MiB), so download and
    # extraction take long enough under TCG to be killed in the middle.
    l1 = two_layer_image(out, "f", 7, 256 << 10, expect, "F")
    two_layer_image(out, "h", 8, 16 << 20, expect, "H")

    def g_top(tf):
        add(tf, "etc/motd", data=b"g layer 2\n")
        add(tf, "data/g.txt", data=b"g only\n")

    def small(tf):
        add(tf, "etc/", "dir", mode=0o755)
        add(tf, "etc/motd", data=b"small\n")
        for i in range(20):
            add(tf, "etc/small-%02d" % i, data=("small %d\n" % i).encode())

    fill_data = random.Random(11).randbytes(48 << 20)

    def fill(tf):
        add(tf, "data/", "dir", mode=0o755)
        add(tf, "data/fill.bin", data=fill_data)

    write(os.path.join(out, "images/g/1.tar"), l1)   # shares its base with f
    write(os.path.join(out, "images/g/2.tar"), layer(g_top))
    write(os.path.join(out, "images/small/1.tar"), layer(small))
    write(os.path.join(out, "images/fill/1.tar"), layer(fill))
    expect.append("FILL_BYTES=%d" % len(fill_data))
    write(os.path.join(out, "expect.sh"), ("\n".join(expect) + "\n").encode())


def main():
    args = sys.argv[1:]
    if len(args) != 2 or args[1] != "faults":
        print(__doc__)
        return 2
    faults(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
