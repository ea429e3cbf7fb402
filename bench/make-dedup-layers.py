#!/usr/bin/env python3
"""make-dedup-layers.py BASE.tar OUT: three images that share layers, laid out like a bucket,
for bench/vm.sh's pool-data row (OUT/images/...):

  debian/1.tar                       BASE (a Debian root)
  tools/1.tar, tools/2.tar           BASE, and a tools layer
  slim/1.tar, slim/2.tar, slim/3.tar BASE, the same tools layer, and a slimming layer

debian:1, tools:2 and slim:3 share the base layer and tools:2 and slim:3 the tools layer, so
three layers are unique. The tools layer adds 40 programs of 512 KiB (incompressible) and a
configuration file and replaces /etc/hostname; the slimming layer empties /usr/share/doc with
an opaque whiteout, removes half the programs with whiteouts and adds one small file.

Deterministic: fixed seeds, times and owners, so runs are comparable. The layers are written
under temporary names and renamed, so OUT holds only whole layers."""
import io
import os
import random
import shutil
import sys
import tarfile

MTIME = 1700000000
PROGRAMS = 40
PROGRAM_BYTES = 512 * 1024


def info(name, kind=tarfile.REGTYPE, size=0, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = size
    ti.mode = mode
    ti.mtime = MTIME
    return ti


def add_file(tar, name, data, mode=0o644):
    tar.addfile(info(name, size=len(data), mode=mode), io.BytesIO(data))


def add_dir(tar, name):
    tar.addfile(info(name, tarfile.DIRTYPE, mode=0o755))


def tools_layer(path):
    rng = random.Random(7)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("./usr/", "./usr/local/", "./usr/local/bin/", "./etc/"):
            add_dir(tar, d)
        for i in range(PROGRAMS):
            add_file(tar, f"./usr/local/bin/tool{i:02d}", rng.randbytes(PROGRAM_BYTES), 0o755)
        add_file(tar, "./etc/tools.conf", b"".join(b"option%d = %d\n" % (i, i) for i in range(200)))
        add_file(tar, "./etc/hostname", b"tools\n")


def slim_layer(path):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("./usr/", "./usr/share/", "./usr/share/doc/", "./usr/local/", "./usr/local/bin/"):
            add_dir(tar, d)
        add_file(tar, "./usr/share/doc/.wh..wh..opq", b"")
        for i in range(0, PROGRAMS, 2):
            add_file(tar, f"./usr/local/bin/.wh.tool{i:02d}", b"")
        add_file(tar, "./etc/slim", b"slimmed\n")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    base, out = sys.argv[1], sys.argv[2]
    imgs = os.path.join(out, "images")
    tmp = os.path.join(out, "tmp")
    os.makedirs(tmp, exist_ok=True)
    tools_layer(os.path.join(tmp, "tools.tar"))
    slim_layer(os.path.join(tmp, "slim.tar"))
    layout = {
        "debian/1.tar": base,
        "tools/1.tar": base,
        "tools/2.tar": os.path.join(tmp, "tools.tar"),
        "slim/1.tar": base,
        "slim/2.tar": os.path.join(tmp, "tools.tar"),
        "slim/3.tar": os.path.join(tmp, "slim.tar"),
    }
    for rel, src in layout.items():
        dst = os.path.join(imgs, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(src, dst + ".part")
        os.replace(dst + ".part", dst)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
