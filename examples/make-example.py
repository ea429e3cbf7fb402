#!/usr/bin/env python3
"""Build the bundled example image source for `make demo` and the pipeline tests.

Writes a folder laid out like a bucket (use it as `dir:OUT`):

  OUT/images/busybox/1.tar   base: busybox-static, its applet symlinks, /etc, /tmp (sticky)
  OUT/images/busybox/2.tar   adds a script, a setuid file, a hardlinked pair, changes /etc/motd
  OUT/images/busybox/3.tar   whiteout of /etc/motd, opaque /usr/share/doc, a new /etc/issue
  OUT/images/busybox-extra/1.tar .. 3.tar   byte-identical to busybox/1..2 + a different layer 3
  OUT/archives/busybox.docker.tar   the busybox layers 1..3 as a `docker save` archive

Everything is deterministic (fixed owners and times), so digests and chain ids are stable.
Usage: make-example.py OUT [--busybox PATH]
"""
import hashlib
import io
import json
import os
import sys
import tarfile

MTIME = 1_700_000_000  # fixed: stable digests


def add(tf, name, kind="file", data=b"", mode=0o644, target=None, uid=0, gid=0):
    ti = tarfile.TarInfo(name)
    ti.mtime = MTIME
    ti.uid, ti.gid = uid, gid
    ti.uname = ti.gname = "root" if uid == 0 else ""
    ti.mode = mode
    if kind == "dir":
        ti.type = tarfile.DIRTYPE
        tf.addfile(ti)
    elif kind == "symlink":
        ti.type = tarfile.SYMTYPE
        ti.linkname = target
        ti.mode = 0o777
        tf.addfile(ti)
    elif kind == "hardlink":
        ti.type = tarfile.LNKTYPE
        ti.linkname = target
        tf.addfile(ti)
    else:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))


def layer(build):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        build(tf)
    return buf.getvalue()


def base_layer(busybox):
    def build(tf):
        for d, mode in [("bin/", 0o755), ("etc/", 0o755), ("tmp/", 0o1777), ("root/", 0o700),
                        ("usr/", 0o755), ("usr/bin/", 0o755), ("usr/share/", 0o755),
                        ("usr/share/doc/", 0o755), ("var/", 0o755), ("dev/", 0o755),
                        ("proc/", 0o555), ("sys/", 0o555)]:
            add(tf, d, "dir", mode=mode)
        add(tf, "bin/busybox", data=busybox, mode=0o755)
        for applet in ["sh", "ls", "cat", "echo", "mount", "sleep", "stat"]:
            add(tf, "bin/" + applet, "symlink", target="busybox")
        add(tf, "usr/bin/env", "symlink", target="/bin/busybox")  # absolute: resolves in the image
        add(tf, "usr/bin/X11", "symlink", target=".")             # self loop, legitimate
        add(tf, "etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n")
        add(tf, "etc/group", data=b"root:x:0:\n")
        add(tf, "etc/hostname", data=b"thinimg-example\n")
        add(tf, "etc/motd", data=b"layer 1 motd\n")
        add(tf, "usr/share/doc/README", data=b"base documentation\n")
        add(tf, "usr/share/doc/busybox.txt", data=b"busybox documentation\n")
    return layer(build)


def second_layer():
    def build(tf):
        add(tf, "usr/bin/hello", data=b"#!/bin/sh\necho hello from thinimg\n", mode=0o755)
        add(tf, "usr/bin/suid-example", data=b"#!/bin/sh\nid\n", mode=0o4755)
        add(tf, "usr/lib/", "dir", mode=0o755)
        add(tf, "usr/lib/data.txt", data=b"shared by two names\n" * 100)
        add(tf, "usr/lib/data-link.txt", "hardlink", target="usr/lib/data.txt")
        add(tf, "etc/motd", data=b"layer 2 motd\n")
    return layer(build)


def third_layer(variant):
    def build(tf):
        add(tf, "etc/.wh.motd")                        # whiteout: /etc/motd is gone
        add(tf, "usr/share/doc/", "dir", mode=0o755)
        add(tf, "usr/share/doc/.wh..wh..opq")          # opaque: lower docs hidden
        add(tf, "usr/share/doc/NEW", data=b"only this remains\n")
        add(tf, "etc/issue", data=("thinimg example (%s)\n" % variant).encode())
    return layer(build)


def docker_archive(layers):
    buf = io.BytesIO()
    diff_ids, names = [], []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for data in layers:
            hexd = hashlib.sha256(data).hexdigest()
            diff_ids.append("sha256:" + hexd)
            names.append(hexd + "/layer.tar")
            add(tf, hexd + "/", "dir", mode=0o755)
            add(tf, hexd + "/layer.tar", data=data)
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        cfg_name = hashlib.sha256(config).hexdigest() + ".json"
        add(tf, cfg_name, data=config)
        manifest = json.dumps([{"Config": cfg_name, "RepoTags": ["busybox:example"],
                                "Layers": names}]).encode()
        add(tf, "manifest.json", data=manifest)
    return buf.getvalue()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    out = args[0]
    busybox_path = "/bin/busybox"
    if "--busybox" in args:
        busybox_path = args[args.index("--busybox") + 1]
    with open(busybox_path, "rb") as f:
        busybox = f.read()
    l1, l2 = base_layer(busybox), second_layer()
    l3, l3x = third_layer("busybox"), third_layer("busybox-extra")
    for i, data in enumerate([l1, l2, l3], 1):
        write(os.path.join(out, "images/busybox/%d.tar" % i), data)
    for i, data in enumerate([l1, l2, l3x], 1):
        write(os.path.join(out, "images/busybox-extra/%d.tar" % i), data)
    write(os.path.join(out, "archives/busybox.docker.tar"), docker_archive([l1, l2, l3]))
    for i, data in enumerate([l1, l2, l3], 1):
        print("busybox/%d.tar sha256:%s %d bytes" % (i, hashlib.sha256(data).hexdigest(), len(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
