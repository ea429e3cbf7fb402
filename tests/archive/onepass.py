#!/usr/bin/env python3
"""onepass.py: `thinimg extract` reads (and decompresses) a layer blob once.

1. A gzip'd layer of incompressible data is extracted into an empty root under
   `strace -y`: the bytes read from the blob's file descriptors, summed, must stay within a
   small margin of its size (detecting the format in a walk of its own, then applying, read
   it twice: once to tell a layer from a docker-archive or OCI layout, once to apply it).
   The files are checked byte for byte.
2. A docker-archive, plain and gzip'd, given as a LAYER into an empty root (applied as it is
   read, then found to be an outer tar once its manifest.json was read): its members are
   removed again and its layers applied, so the tree equals the one made in a root that
   already held an entry (where the format is detected first); an empty lost+found is kept.
3. `--scan-only` of the gzip'd layer reads it once too.

Needs strace (exit 77, skipped, when it is missing or cannot trace).
Run: THINIMG_BIN=build/thinimg THINIMG_BUILD_DIR=build python3 tests/archive/onepass.py
"""
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import treecmp  # noqa: E402
from tarlib import BLOCK, header, pad, remove_tree, report, summary, thinimg_bin  # noqa: E402

FILES = 8
FILE_BYTES = 1 << 20  # 8 MiB of random data: gzip cannot shrink it, so 8 MiB are read
# What one read may add to the blob's size: the format sniff (one 512-byte block, and the
# first 64 KiB read of a compressed stream to see a tar header in it) and the read-ahead of
# libarchive's last 1 MiB block. A second read of the blob would add all of it again.
MARGIN_BYTES = (1 << 20) + (64 << 10) + 512


def blob_bytes_read(argv, blob):
    """Run argv under strace; return (exit code, bytes read from fds open on blob)."""
    log = blob + '.strace'
    # LeakSanitizer stops the world with ptrace, which a traced process cannot: off here.
    env = dict(os.environ, ASAN_OPTIONS=os.environ.get('ASAN_OPTIONS', '') + ':detect_leaks=0')
    p = subprocess.run(['strace', '-f', '-y', '-e', 'trace=read,pread64', '-o', log] + argv,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    total = 0
    pat = re.compile(r'(?:read|pread64)\(\d+<' + re.escape(os.path.realpath(blob)) +
                     r'>.*\)\s+=\s+(\d+)')
    with open(log, errors='replace') as f:
        for line in f:
            m = pat.search(line)
            if m:
                total += int(m.group(1))
    os.unlink(log)
    return p.returncode, total


def write_layer(path):
    data = []
    with gzip.open(path, 'wb', compresslevel=1) as f:
        for i in range(FILES):
            d = os.urandom(FILE_BYTES)
            data.append(d)
            f.write(header(b'f%d.bin' % i, size=len(d)) + pad(d))
        f.write(b'\0' * (2 * BLOCK))
    return data


def extract(root, blob, flags=()):
    p = subprocess.run([thinimg_bin(), '-q', 'extract', '--root', root] + list(flags) + [blob],
                       capture_output=True)
    return p.returncode, p.stderr.decode(errors='replace')


def main():
    try:
        ok = subprocess.run(['strace', '-o', os.devnull, 'true'],
                            stderr=subprocess.DEVNULL).returncode == 0
    except FileNotFoundError:
        ok = False
    if not ok:
        print('skipped: strace is missing or cannot trace here')
        return 77
    base = tempfile.mkdtemp(prefix='thinimg-onepass-')
    passed = failed = 0
    try:
        # 1. a gzip'd layer, read once
        blob = os.path.join(base, 'layer.tar.gz')
        data = write_layer(blob)
        size = os.path.getsize(blob)
        root = os.path.join(base, 'root')
        rc, got = blob_bytes_read([thinimg_bin(), '-q', 'extract', '--root', root, blob], blob)
        problems = [] if rc == 0 else ['exit %d' % rc]
        if got > size + MARGIN_BYTES:
            problems.append('%d bytes read from a %d-byte blob (%.2f times; at most %d more)'
                            % (got, size, got / size, MARGIN_BYTES))
        for i, d in enumerate(data):
            p = os.path.join(root, 'f%d.bin' % i)
            if not os.path.exists(p) or open(p, 'rb').read() != d:
                problems.append('f%d.bin differs from the layer' % i)
        p, f = report(problems, 'extract of a .tar.gz into an empty root',
                      'extract of a %d-byte .tar.gz read %d bytes of it (%.2f times)'
                      % (size, got, got / size))
        passed, failed = passed + p, failed + f

        # 3. --scan-only, read once
        rc, got = blob_bytes_read([thinimg_bin(), '-q', 'extract', '--scan-only', blob], blob)
        problems = [] if rc == 0 else ['exit %d' % rc]
        if got > size + MARGIN_BYTES:
            problems.append('%d bytes read from a %d-byte blob (%.2f times)'
                            % (got, size, got / size))
        p, f = report(problems, 'extract --scan-only of a .tar.gz',
                      'extract --scan-only read %d bytes of %d' % (got, size))
        passed, failed = passed + p, failed + f

        # 2. docker-archives into an empty root: the outer tar's members do not stay
        build = os.environ.get('THINIMG_BUILD_DIR', 'build')
        docker = os.path.join(build, 'example', 'archives', 'busybox.docker.tar')
        if not os.path.exists(docker):
            sys.exit('no %s (build the example target)' % docker)
        dgz = os.path.join(base, 'busybox.docker.tar.gz')
        with open(docker, 'rb') as i, gzip.open(dgz, 'wb', compresslevel=1) as o:
            shutil.copyfileobj(i, o)
        held = os.path.join(base, 'held')
        os.makedirs(os.path.join(held, 'lower-entry'))
        rc, err = extract(held, docker)
        assert rc == 0, 'docker-archive into a root with an entry: exit %d: %s' % (rc, err)
        os.rmdir(os.path.join(held, 'lower-entry'))
        for name, arch in (('docker-archive', docker), ('gzip\'d docker-archive', dgz)):
            for lost_found in (False, True):
                r = os.path.join(base, 'fresh')
                os.makedirs(r)
                if lost_found:
                    os.mkdir(os.path.join(r, 'lost+found'))
                rc, err = extract(r, arch)
                problems = [] if rc == 0 else ['exit %d: %s' % (rc, err)]
                if lost_found:
                    if not os.path.isdir(os.path.join(r, 'lost+found')):
                        problems.append('lost+found was removed')
                    else:
                        os.rmdir(os.path.join(r, 'lost+found'))
                for member in ('manifest.json', 'repositories'):
                    if os.path.lexists(os.path.join(r, member)):
                        problems.append('the outer tar\'s %s is in the root' % member)
                diff = (treecmp.diff(treecmp.describe(r, dir_mtime=False),
                                     treecmp.describe(held, dir_mtime=False))
                        if not problems else [])
                problems += ['differs from the root the format was detected first for: %s' % d
                             for d in diff[:5]]
                p, f = report(problems, '%s into an empty root%s' % (
                    name, ' with lost+found' if lost_found else ''),
                    '%s into an empty root%s: its layers only, as when detected first' % (
                    name, ' (lost+found kept)' if lost_found else ''))
                passed, failed = passed + p, failed + f
                remove_tree(r)
    finally:
        remove_tree(base)
    return summary(passed, failed, 0)


if __name__ == '__main__':
    sys.exit(main())
