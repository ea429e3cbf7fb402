#!/usr/bin/env python3
"""Write one blob of every format the fetch machine must recognise, for the fetch tests.

Usage: make_blobs.py OUT

  OUT/layers/1.tar        an uncompressed ustar layer (dirs, files, absolute symlink)
  OUT/layers/2.tar        a second layer
  OUT/layers/copy.tar     the same bytes as 1.tar under another key (stored once)
  OUT/formats/gzip.tar    layer 1 gzip-compressed (the key says .tar: content decides)
  OUT/formats/zstd.tar    layer 1 zstd-compressed (needs the zstd tool)
  OUT/formats/docker.tar  a `docker save` archive of layers 1 and 2 (+ RepoTags demo:2)
  OUT/formats/oci.tar     an OCI image layout of layers 1 and 2 (ref.name demo:oci)
  OUT/garbage/empty.tar   zero bytes
  OUT/garbage/error.tar   an S3 XML error body
  OUT/garbage/page.tar    an HTML page
  OUT/garbage/cut.tar     layer 1 truncated in the middle of an entry
  OUT/garbage/png.tar     a PNG header

Deterministic (fixed times and owners), so digests are stable between runs.
"""
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

MTIME = 1_700_000_000


def tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, kind, data in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = MTIME
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
            elif kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = data
                ti.mode = 0o777
                tf.addfile(ti)
            else:
                ti.mode = 0o644
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def main():
    out = sys.argv[1]
    l1 = tar([("etc/", "dir", b""), ("etc/hostname", "file", b"thinimg\n"),
              ("usr/", "dir", b""), ("usr/bin/", "dir", b""),
              ("usr/bin/tool", "file", b"#!/bin/sh\necho tool\n" * 200),
              ("bin", "symlink", "/usr/bin")])
    l2 = tar([("etc/", "dir", b""), ("etc/motd", "file", b"layer two\n"),
              ("etc/.wh.hostname", "file", b"")])
    write(f"{out}/layers/1.tar", l1)
    write(f"{out}/layers/2.tar", l2)
    write(f"{out}/layers/copy.tar", l1)
    write(f"{out}/formats/gzip.tar", gzip.compress(l1, mtime=0))
    try:
        z = subprocess.run(["zstd", "-q", "-c"], input=l1, stdout=subprocess.PIPE, check=True).stdout
        write(f"{out}/formats/zstd.tar", z)
    except (OSError, subprocess.CalledProcessError):
        pass

    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers",
                                 "diff_ids": ["sha256:" + sha(l1), "sha256:" + sha(l2)]}}).encode()
    docker = tar([("manifest.json", "file", json.dumps(
                      [{"Config": "config.json", "RepoTags": ["demo:2"],
                        "Layers": ["aaa/layer.tar", "bbb/layer.tar"]}]).encode()),
                  ("config.json", "file", cfg),
                  ("aaa/", "dir", b""), ("aaa/layer.tar", "file", l1),
                  ("bbb/", "dir", b""), ("bbb/layer.tar", "file", l2)])
    write(f"{out}/formats/docker.tar", docker)

    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + sha(cfg), "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + sha(l), "size": len(l)} for l in (l1, l2)]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + sha(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "demo:oci"}}]}).encode()
    oci = tar([("oci-layout", "file", b'{"imageLayoutVersion":"1.0.0"}'),
               ("index.json", "file", index),
               ("blobs/", "dir", b""), ("blobs/sha256/", "dir", b""),
               ("blobs/sha256/" + sha(manifest), "file", manifest),
               ("blobs/sha256/" + sha(cfg), "file", cfg),
               ("blobs/sha256/" + sha(l1), "file", l1),
               ("blobs/sha256/" + sha(l2), "file", l2)])
    write(f"{out}/formats/oci.tar", oci)

    write(f"{out}/garbage/empty.tar", b"")
    write(f"{out}/garbage/error.tar",
          b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
          b"<Message>Access Denied</Message><RequestId>X</RequestId></Error>")
    write(f"{out}/garbage/page.tar",
          b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body></body></html>\n")
    write(f"{out}/garbage/cut.tar", l1[:1700])
    write(f"{out}/garbage/png.tar", b"\x89PNG\r\n\x1a\n" + b"\0" * 600)


if __name__ == "__main__":
    main()
