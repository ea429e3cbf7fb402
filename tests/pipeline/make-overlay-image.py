#!/usr/bin/env python3
"""Two-layer image for the overlay backend test (tests/pipeline/overlay.sh), as a dir: bucket.

  OUT/images/ovl/1.tar  base: dirs with odd modes and owners, files with a user.* and a
                        security.capability xattr, a hardlink pair, symlinks, a FIFO
  OUT/images/ovl/2.tar  upper: whiteouts (a file, a whole directory), an opaque directory that
                        gets a new file after its marker and, before it, a lower
                        subdirectory re-listed with a new file, a hardlink to a lower
                        file (copied up), a file in a lower directory the layer does not
                        list (its metadata stays the lower's), a lower directory's mode
                        and owner changed, a file replaced by a directory and a directory
                        replaced by a symlink
Deterministic (fixed times), so digests are stable. Usage: make-overlay-image.py OUT
"""
import io
import os
import sys
import tarfile

MTIME = 1_700_000_000


def entry(tf, name, kind="file", data=b"", mode=0o644, target=None, uid=0, gid=0, xattrs=None):
    ti = tarfile.TarInfo(name)
    ti.mtime = MTIME
    ti.uid, ti.gid, ti.mode = uid, gid, mode
    if xattrs:
        ti.pax_headers = {"SCHILY.xattr." + k: v for k, v in xattrs.items()}
    if kind == "dir":
        ti.type = tarfile.DIRTYPE
    elif kind == "symlink":
        ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, target, 0o777
    elif kind == "hardlink":
        ti.type, ti.linkname = tarfile.LNKTYPE, target
    elif kind == "fifo":
        ti.type = tarfile.FIFOTYPE
    else:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
        return
    tf.addfile(ti)


def layer(path, build):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        build(tf)


def base(tf):
    entry(tf, "./", "dir", mode=0o755)
    entry(tf, "etc/", "dir", mode=0o755)
    entry(tf, "etc/hostname", data=b"base\n")
    entry(tf, "etc/gone", data=b"whited out\n")
    entry(tf, "etc/shadow", data=b"root:*:1::::::\n", mode=0o640, gid=42)
    entry(tf, "srv/", "dir", mode=0o750, uid=1000, gid=1000)
    entry(tf, "srv/data", data=b"x" * 5000, uid=1000, gid=1000, xattrs={"user.origin": "base"})
    entry(tf, "srv/link", "hardlink", target="srv/data")
    entry(tf, "srv/sym", "symlink", target="data")
    entry(tf, "srv/fifo", "fifo", mode=0o600)
    entry(tf, "opt/", "dir", mode=0o755)
    entry(tf, "opt/old-a", data=b"a\n")
    entry(tf, "opt/sub/", "dir", mode=0o700)
    entry(tf, "opt/sub/old-b", data=b"b\n")
    entry(tf, "cache/", "dir", mode=0o1777)
    entry(tf, "cache/tmpfile", data=b"t\n")
    entry(tf, "lib/", "dir", mode=0o755)
    entry(tf, "lib/keep/", "dir", mode=0o711, uid=7, gid=7)
    entry(tf, "lib/keep/f", data=b"keep\n")
    entry(tf, "bin/", "dir", mode=0o755)
    entry(tf, "bin/ping", data=b"\x7fELF", mode=0o755,
          xattrs={"security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"})
    entry(tf, "was-file", data=b"file\n")
    entry(tf, "was-dir/", "dir", mode=0o755)
    entry(tf, "was-dir/inside", data=b"in\n")


def upper(tf):
    entry(tf, "etc/.wh.gone")
    entry(tf, ".wh.cache")
    entry(tf, "opt/", "dir", mode=0o755)
    entry(tf, "opt/sub/", "dir", mode=0o750)
    entry(tf, "opt/sub/before", data=b"written before the opaque marker\n")
    entry(tf, "opt/.wh..wh..opq")
    entry(tf, "opt/new", data=b"new\n")
    entry(tf, "srv/third", "hardlink", target="srv/data")
    entry(tf, "lib/keep/added", data=b"added\n")
    entry(tf, "etc/", "dir", mode=0o700, uid=3, gid=3)
    entry(tf, "etc/hostname", data=b"upper\n", mode=0o600)
    entry(tf, "was-file/", "dir", mode=0o755)
    entry(tf, "was-file/now-dir", data=b"d\n")
    entry(tf, "was-dir", "symlink", target="was-file")


def main():
    out = os.path.join(sys.argv[1], "images", "ovl")
    os.makedirs(out, exist_ok=True)
    layer(os.path.join(out, "1.tar"), base)
    layer(os.path.join(out, "2.tar"), upper)


if __name__ == "__main__":
    main()
