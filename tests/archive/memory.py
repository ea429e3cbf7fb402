#!/usr/bin/env python3
"""memory.py: peak RSS of `thinimg extract` does not grow with the names of a large layer.

A layer of 300,000 entries (3,000 directories of 99 empty files, names of ~40 bytes) is
extracted twice: into an empty directory (nothing a whiteout could hide: apply records only
directories) and into a directory that already holds an entry (apply records every path the
layer creates, as fixed-size hashes). Each run's peak RSS (the child's ru_maxrss) minus the
peak of extracting a one-entry layer is the layer's own cost; it must stay under the bounds
below (keeping every path as a string in a table grown at half load cost ~45 MiB here). Then
a whiteout layer over the second tree removes exactly what it names.

Run: THINIMG_BIN=build/thinimg python3 tests/archive/memory.py
"""
import os
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tarlib import (BLOCK, header, make_base, remove_tree, report, summary,  # noqa: E402
                    thinimg_bin)

ENTRIES = 300000
PER_DIR = 100
# The layer's own cost (MiB above a one-entry extract). Fresh root: the directories' set
# (3,000 nodes) and their deferred metadata. Root with a lower entry: 300k nodes of 16 bytes
# in a table grown at 3/4 load (8 MiB), the previous table while it grows (4 MiB), the
# directories' metadata.
FRESH_MAX_MIB = 8
TRACKED_MAX_MIB = 20
# An ASan build keeps freed memory in quarantine and pads every allocation: its RSS says
# nothing about thinimg's. There the bounds are not checked (the rest of the test runs).
SANITIZED = os.environ.get('THINIMG_SANITIZE', '').upper() in ('ON', '1', 'TRUE', 'YES')


def over(cost, bound):
    return [] if SANITIZED or cost <= bound else ['%.1f MiB over the bound of %d' % (cost, bound)]


def write_layer(path, entries):
    with open(path, 'wb') as f:
        n = d = 0
        while n < entries:
            dname = b'directory-%05d-with-a-longer-name' % d
            f.write(header(dname + b'/', typeflag=b'5', mode=0o755))
            n += 1
            for i in range(min(PER_DIR - 1, entries - n)):
                f.write(header(dname + b'/file-%02d' % i))
                n += 1
            d += 1
        f.write(b'\0' * (2 * BLOCK))


def peak_kib(args):
    """Run thinimg extract ARGS in a child; return (exit code, its peak RSS in KiB)."""
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.execv(thinimg_bin(), [thinimg_bin(), '-q', 'extract'] + args)
    _, status, ru = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), ru.ru_maxrss


def main():
    # 300k files: on a tmpfs when there is one (minutes on a shared disk, seconds there).
    shm = '/dev/shm'
    base = (tempfile.mkdtemp(prefix='thinimg-memory-', dir=shm)
            if os.path.isdir(shm) and os.access(shm, os.W_OK) else make_base())
    passed = failed = 0
    try:
        big = os.path.join(base, 'big.tar')
        write_layer(big, ENTRIES)
        tiny = os.path.join(base, 'tiny.tar')
        write_layer(tiny, 1)
        rc, floor = peak_kib(['--root', os.path.join(base, 'floor'), tiny])
        assert rc == 0, 'one-entry layer: exit %d' % rc

        rc, fresh = peak_kib(['--root', os.path.join(base, 'fresh'), big])
        cost = (fresh - floor) / 1024
        print('fresh root: peak %d KiB, %.1f MiB above a one-entry layer (bound %d)'
              % (fresh, cost, FRESH_MAX_MIB))
        problems = over(cost, FRESH_MAX_MIB) + ([] if rc == 0 else ['exit %d' % rc])
        p, f = report(problems, '300k entries into an empty root',
                      '300k entries into an empty root: %.1f MiB' % cost)
        passed, failed = passed + p, failed + f
        remove_tree(os.path.join(base, 'fresh'))

        lower = os.path.join(base, 'lower')
        os.makedirs(os.path.join(lower, 'keep'))
        rc, tracked = peak_kib(['--root', lower, big])
        cost = (tracked - floor) / 1024
        print('root with a lower entry: peak %d KiB, %.1f MiB above a one-entry layer (bound %d)'
              % (tracked, cost, TRACKED_MAX_MIB))
        problems = over(cost, TRACKED_MAX_MIB) + ([] if rc == 0 else ['exit %d' % rc])
        # The set still works at this size: a whiteout layer removes the lower entry it names
        # and one directory of the big layer, and nothing else.
        wh = os.path.join(base, 'wh.tar')
        with open(wh, 'wb') as f:
            f.write(header(b'.wh.keep'))
            f.write(header(b'.wh.directory-00007-with-a-longer-name'))
            f.write(b'\0' * (2 * BLOCK))
        rc2, _ = peak_kib(['--root', lower, wh])
        left = len(os.listdir(lower))
        want = ENTRIES // PER_DIR - 1
        if rc2 != 0 or left != want or os.path.exists(os.path.join(lower, 'keep')):
            problems.append('whiteout layer: exit %d, %d entries left (want %d)' % (rc2, left, want))
        p, f = report(problems, '300k entries over a lower entry',
                      '300k entries over a lower entry: %.1f MiB; whiteouts applied' % cost)
        passed, failed = passed + p, failed + f
    finally:
        remove_tree(base)
    if SANITIZED:
        print('sanitizer build: peak RSS printed, bounds not checked')
    return summary(passed, failed, 0)


if __name__ == '__main__':
    sys.exit(main())
