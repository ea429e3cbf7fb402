#!/usr/bin/env python3
"""bytes.py: file names are bytes, and a layer may end at an entry boundary.

1. Names that are not UTF-8, the way real layers carry them: a PAX path with Latin-1 bytes
   (no hdrcharset: Go's archive/tar writes these), a PAX header with hdrcharset=BINARY
   (libarchive's test_pax_filename_encoding.tar), raw bytes in a ustar header and in a GNU
   tar (GNU long names too), a directory, a symlink target, a hardlink and a hardlink target
   with such names. `thinimg extract` must create exactly the bytes GNU tar creates from the
   same layer (compared entry by entry), and `--scan-only` (the fetch machine's validate
   step) must accept every layer.
2. Whiteouts and opaque directories naming non-UTF-8 entries of a lower layer remove exactly
   those entries; the path rules still hold for such names (traversal, control characters).
3. End of archive: a tar (and a gzip-compressed tar) that ends exactly at an entry boundary
   without the end-of-archive marker, or with a single zero block, is a complete layer:
   the tree equals GNU tar's. A single zero block alone is an empty layer.
   (Streams cut inside a header or inside data are rejected: hostile.py.)

GNU tar runs with LC_ALL=C, where it keeps every name's bytes.

Run: THINIMG_BIN=build/thinimg python3 tests/archive/bytes.py
"""
import gzip
import io
import os
import subprocess
import sys
import tarfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import treecmp  # noqa: E402
from tarlib import (BLOCK, Tar, header, is_root, make_base, pad, read, remove_tree,  # noqa
                    report, summary, thinimg_bin, write_file)

LATIN1 = b'caf\xe9'                   # "café" in Latin-1: not UTF-8
MIXED = b'abc\xcc\x8cmno\xfcxyz'      # libarchive's test name: valid UTF-8, then \xfc
NFD = 'cafe\u0301-nfd'.encode()       # "café" decomposed: e + combining acute (valid UTF-8)


def gnu_tar_layer():
    """A GNU-format tar written by Python's tarfile with raw (surrogate-escaped) names."""
    buf = io.BytesIO()

    def name(b):
        return b.decode('utf-8', 'surrogateescape')
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.GNU_FORMAT, encoding='utf-8',
                      errors='surrogateescape') as tf:
        for n, data in ((b'gnu-' + LATIN1, b'gnu'), (b'long-' + b'\xff' * 120, b'long')):
            ti = tarfile.TarInfo(name(n))
            ti.size, ti.mtime, ti.mode = len(data), 1700000000, 0o644
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def names_layer():
    t = Tar()
    t.dir('./')
    t.file(b'pax-' + LATIN1, 'pax, no hdrcharset')  # Tar() writes a PAX path record
    t.pax(('hdrcharset', 'BINARY')).file(b'binary-' + LATIN1, 'pax, hdrcharset=BINARY')
    t.file(MIXED, 'mixed')
    # Valid UTF-8 in decomposed form (NFD), PAX path and symlink target: kept as it is, not
    # composed to NFC (libarchive composes when it converts to a UTF-8 locale).
    t.file(NFD, 'nfd')
    t.file('caf\u00e9-nfc'.encode(), 'nfc')
    t.raw(header(b'ustar-' + LATIN1, b'0', size=5) + pad(b'ustar'))
    t.dir(b'dir-\xff').file(b'dir-\xff/inner-' + LATIN1, 'inner')
    t.symlink(b'link-' + LATIN1, b'target-\xfe')  # PAX linkpath, dangling
    t.symlink(b'link-' + NFD, NFD)  # an NFD symlink and target
    t.hardlink(b'hard-' + LATIN1, b'pax-' + LATIN1)  # PAX path and linkpath
    t.hardlink('hard-ascii', b'binary-' + LATIN1)
    return t.end().bytes()


def lower_layer():
    t = Tar().dir('./')
    t.file(LATIN1, 'lower').file(b'keep-' + LATIN1, 'kept')
    t.dir(b'opq-\xff').file(b'opq-\xff/old-' + LATIN1, 'old')
    return t.end().bytes()


def upper_layer():
    t = Tar().dir('./')
    t.file(b'.wh.' + LATIN1)  # PAX path ".wh.caf\xe9"
    t.dir(b'opq-\xff').file(b'opq-\xff/.wh..wh..opq').file(b'opq-\xff/new-' + LATIN1, 'new')
    return t.end().bytes()


def listing(root):
    """Every path below root, as bytes."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), os.fsencode(root)))
    return out


def gnu_tar(dest, blob):
    os.makedirs(dest, exist_ok=True)
    owner = ['--same-owner'] if is_root() else ['--no-same-owner']
    env = dict(os.environ, LC_ALL='C')
    p = subprocess.run(['tar', '-xpf', blob, '-C', dest, '--warning=no-timestamp'] + owner,
                       env=env, capture_output=True)
    return p.returncode, p.stderr.decode(errors='replace')


def thinimg(dest, *blobs, scan=False):
    cmd = [thinimg_bin(), 'extract'] + (['--scan-only'] if scan else ['--root', dest])
    p = subprocess.run(cmd + list(blobs), capture_output=True)
    return p.returncode, p.stderr.decode(errors='replace')


def versus_gnu_tar(base, label, data, want=None, dir_mtime=True):
    """Extract with thinimg and GNU tar; the trees must be equal (and hold `want` names).
    dir_mtime=False for layers without a './' entry (the root keeps its own time)."""
    blob = write_file(base, label + '.tar', data)
    mine, ref = os.path.join(base, label + '-mine'), os.path.join(base, label + '-ref')
    problems = []
    rc, err = thinimg(mine, blob)
    if rc != 0:
        problems.append('thinimg extract: exit %d: %s' % (rc, err.strip()))
    rc, err = thinimg(None, blob, scan=True)
    if rc != 0:
        problems.append('thinimg extract --scan-only: exit %d: %s' % (rc, err.strip()))
    grc, gerr = gnu_tar(ref, blob)
    if grc != 0:
        problems.append('GNU tar failed (%d): %s' % (grc, gerr.strip()))
    if not problems:
        problems += treecmp.diff(treecmp.describe(mine, dir_mtime),
                                 treecmp.describe(ref, dir_mtime))
        got = listing(mine)
        for w in want or ():
            if w not in got:
                problems.append('missing %r (have %r)' % (w, sorted(got)))
    n = len(listing(mine)) if os.path.isdir(mine) else 0
    return report(problems, '%s vs GNU tar' % label,
                  '%s: %d entries, byte for byte as GNU tar' % (label, n))


def main():
    base = make_base()
    passed = failed = 0

    def add(d):
        nonlocal passed, failed
        passed, failed = passed + d[0], failed + d[1]
    try:
        # 1. names as bytes
        add(versus_gnu_tar(base, 'names', names_layer(),
                           [b'pax-' + LATIN1, b'binary-' + LATIN1, MIXED, b'ustar-' + LATIN1,
                            b'dir-\xff/inner-' + LATIN1, b'link-' + LATIN1, b'hard-' + LATIN1]))
        add(versus_gnu_tar(base, 'names-gzip', gzip.compress(names_layer())))
        add(versus_gnu_tar(base, 'gnu-format', gnu_tar_layer(),
                           [b'gnu-' + LATIN1, b'long-' + b'\xff' * 120], dir_mtime=False))
        mine = os.fsencode(os.path.join(base, 'names-mine'))
        problems = []
        try:
            if os.readlink(os.path.join(mine, b'link-' + LATIN1)) != b'target-\xfe':
                problems.append('symlink target bytes')
            a = os.stat(os.path.join(mine, b'hard-' + LATIN1))
            b = os.stat(os.path.join(mine, b'pax-' + LATIN1))
            if a.st_ino != b.st_ino:
                problems.append('hardlink to a non-UTF-8 name is not a hardlink')
            if read(os.path.join(mine, b'hard-ascii')) != b'pax, hdrcharset=BINARY':
                problems.append('hardlink to a hdrcharset=BINARY name')
        except OSError as e:
            problems.append(str(e))
        add(report(problems, 'link targets as bytes', 'link targets: bytes kept exactly'))

        # 2. whiteouts with non-UTF-8 names; the scan accepts both layers
        lower, upper = write_file(base, 'lower.tar', lower_layer()), write_file(base, 'upper.tar',
                                                                       upper_layer())
        root = os.path.join(base, 'overlay')
        rc, err = thinimg(root, lower, upper)
        problems = [] if rc == 0 else ['exit %d: %s' % (rc, err.strip())]
        want = {b'keep-' + LATIN1, b'opq-\xff', b'opq-\xff/new-' + LATIN1}
        if rc == 0 and listing(root) != want:
            problems.append('tree %r, want %r' % (sorted(listing(root)), sorted(want)))
        rc, err = thinimg(None, lower, upper, scan=True)
        if rc != 0:
            problems.append('scan: exit %d: %s' % (rc, err.strip()))
        add(report(problems, 'whiteouts of non-UTF-8 names',
                   'whiteout and opaque directory remove exactly the non-UTF-8 lower entries'))

        # 3. end of archive
        body = Tar().dir('./').file('a', 'A' * 3000).dir('d').file('d/b', 'B' * 10).bytes()
        ends = {'no-end-marker': body, 'one-zero-block': body + b'\0' * BLOCK,
                'one-zero-block-then-garbage': body + b'\0' * BLOCK + b'garbage' * 100}
        for label, data in ends.items():
            add(versus_gnu_tar(base, label, data, [b'a', b'd/b']))
            add(versus_gnu_tar(base, label + '-gzip', gzip.compress(data), [b'a', b'd/b']))
        add(versus_gnu_tar(base, 'only-one-zero-block', b'\0' * BLOCK, dir_mtime=False))
        add(versus_gnu_tar(base, 'only-one-zero-block-gzip', gzip.compress(b'\0' * BLOCK),
                           dir_mtime=False))
    finally:
        remove_tree(base)
    return summary(passed, failed, 0)


if __name__ == '__main__':
    sys.exit(main())
