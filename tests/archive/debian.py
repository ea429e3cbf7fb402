#!/usr/bin/env python3
"""debian.py: a real Debian root filesystem, plus an upper layer with deletions, through
`thinimg extract`, compared entry by entry with GNU tar.

The base layer is `mmdebstrap --variant=minbase bookworm` written as a tar (reproducible:
SOURCE_DATE_EPOCH fixes every time in it), built once and cached in ~/.cache/thinimg (or $XDG_CACHE_HOME/thinimg; $THINIMG_DEBIAN_TAR names an
existing tarball instead). The cache is atomic and checked: the tar is built under a
temporary name in the cache directory (with --format=tar: mmdebstrap would pick the format
from the name and write a directory for "X.tar.tmp"), checked (a regular file, a tar read to
its end, a Debian root with at least MIN_ENTRIES entries), renamed into place, and a marker
"<sha256> <size>" is written last next to it. At use the tar must match its marker; an entry
that does not (half-built, truncated, a directory, no marker) is rebuilt, except that a tar
without a marker that passes the full check is adopted (the marker is written). Nothing in
the cache is trusted unchecked. `debian.py --tar` only prints the cached tar's path (building
it if needed; bench/extract.sh uses it). The upper layer is generated from the base's own member list: it
whites out files and whole directories, makes a directory opaque, changes a file, replaces a
directory by a symlink, and hardlinks a lower file, as image layers do.

Reference: GNU tar extracts the base, the upper layer's deletions are applied by hand, then
GNU tar extracts the rest of the upper layer over it. Every entry must match (type, mode,
owner, size, content hash, link target, device numbers, xattrs, mtime, hardlink groups).

Run: THINIMG_BIN=build/thinimg python3 tests/archive/debian.py
"""
import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import treecmp  # noqa: E402
from legit import gnu_tar, reference_overlay, thinimg  # noqa: E402
from tarlib import Tar, make_base, report, summary  # noqa: E402


CACHE_NAME = 'debian-bookworm-minbase.tar'
# A minbase bookworm root has ~9k entries; far fewer means the tar is not one (a truncated or
# wrong entry whose headers still parse).
MIN_ENTRIES = 5000
HASH_CHUNK = 1 << 20
# The time mmdebstrap gives every file (and its reproducible mode); any fixed value would do.
SOURCE_DATE_EPOCH = 1700000000


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cache_dir():
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'thinimg')


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b''):
            h.update(chunk)
    return h.hexdigest()


def tar_problem(path):
    """Why path is not a complete Debian root tar (None when it is): a regular file that
    tarfile reads to its end, with MIN_ENTRIES entries and etc/debian_version."""
    if os.path.islink(path) or not os.path.isfile(path):
        return 'not a regular file'
    n = 0
    has_version = False
    try:
        with tarfile.open(path) as tf:
            for m in tf:
                n += 1
                has_version = has_version or m.name.lstrip('./') == 'etc/debian_version'
    except (tarfile.TarError, OSError, EOFError) as e:
        return 'unreadable tar (%s)' % e
    if n < MIN_ENTRIES:
        return 'only %d entries (want at least %d)' % (n, MIN_ENTRIES)
    if not has_version:
        return 'no etc/debian_version: not a Debian root'
    return None


def marker_of(path):
    return path + '.ok'


def write_marker(path):
    """The marker, written last (itself atomically): "<sha256> <size>" of the tar."""
    tmp = marker_of(path) + '.tmp'
    with open(tmp, 'w') as f:
        f.write('%s %d\n' % (file_sha256(path), os.path.getsize(path)))
    os.rename(tmp, marker_of(path))


def cache_entry_ok(path):
    """True when the cached tar can be used: it matches its marker, or it has none but passes
    the full check (then the marker is written)."""
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    try:
        with open(marker_of(path)) as f:
            want_sum, want_size = f.read().split()
        return (os.path.getsize(path) == int(want_size) and
                file_sha256(path) == want_sum)
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        return False
    problem = tar_problem(path)
    if problem:
        return False
    log('adopting %s (no marker, but a complete Debian root tar)' % path)
    write_marker(path)
    return True


def remove_entry(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def debian_tar():
    given = os.environ.get('THINIMG_DEBIAN_TAR')
    if given:
        return given
    path = os.path.join(cache_dir(), CACHE_NAME)
    os.makedirs(cache_dir(), exist_ok=True)
    # Checking and building are serialized between processes by a lock on the cache (so the
    # sweep below never takes another build's temporary file).
    with open(os.path.join(cache_dir(), '.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cache_entry_ok(path):
            build_cached_tar(path)
    return path


def build_cached_tar(path):
    if os.path.lexists(path):
        log('the cached %s does not check out; building it again' % path)
        remove_entry(path)
    if os.path.lexists(marker_of(path)):
        os.unlink(marker_of(path))
    # Leftovers of builds cut short (any process), then this build's temporary name: ends in
    # .tar, and the format is given too (mmdebstrap picks it from the name otherwise).
    for name in os.listdir(cache_dir()):
        if name.startswith(CACHE_NAME + '.tmp-'):
            remove_entry(os.path.join(cache_dir(), name))
    tmp = '%s.tmp-%d.tar' % (path, os.getpid())
    log('building %s with mmdebstrap (once; cached)' % path)
    t0 = time.monotonic()
    try:
        # SOURCE_DATE_EPOCH: every time in the tar is this one (mmdebstrap's reproducible
        # mode), so two builds from the same mirror state are the same bytes.
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH))
        rc = subprocess.run(['mmdebstrap', '--variant=minbase', '--format=tar', '--quiet',
                             'bookworm', tmp], env=env).returncode
        if rc != 0:
            sys.exit('debian.py: mmdebstrap could not build the bookworm minbase tar (exit %d, '
                     'its messages above). It downloads the packages from deb.debian.org, '
                     "which must be reachable (as apt reaches it: apt's proxy settings, "
                     'http_proxy); or set THINIMG_DEBIAN_TAR to such a tar.' % rc)
        problem = tar_problem(tmp)
        if problem:
            raise RuntimeError('mmdebstrap wrote %s: %s; the cache is left empty' % (tmp, problem))
        os.rename(tmp, path)
        write_marker(path)
    finally:
        remove_entry(tmp)
    log('built in %.0fs' % (time.monotonic() - t0))


def upper_from(base_path):
    """Build an upper layer from the base's member list."""
    with tarfile.open(base_path) as tf:
        members = {}
        for m in tf.getmembers():
            n = m.name[2:] if m.name.startswith('./') else m.name
            members[n.rstrip('/')] = m
    members.pop('', None)
    members.pop('.', None)
    names = set(members)

    def pick(cond, n=1):
        found = sorted(x for x in names if cond(x))[:n]
        if len(found) < n:
            raise RuntimeError('the base has no member for the upper layer to use')
        return found

    def isdir(x):
        return members[x].isdir()

    def isreg(x):
        return members[x].isfile()

    doc_dirs = pick(lambda x: x.startswith('usr/share/doc/') and x.count('/') == 3 and isdir(x), 5)
    etc_files = pick(lambda x: x.startswith('etc/') and x.count('/') == 1 and isreg(x), 3)
    opaque = 'usr/share/zoneinfo' if 'usr/share/zoneinfo' in names else \
        pick(lambda x: x.startswith('usr/share/') and x.count('/') == 2 and isdir(x))[0]
    empty_dir = pick(lambda x: isdir(x) and x.count('/') == 0 and
                     not any(y.startswith(x + '/') for y in names))[0]
    victim_bin = pick(lambda x: x.startswith('usr/bin/') and isreg(x))[0]

    t = Tar()
    t.dir('./')
    t.dir('etc')
    for f in etc_files[:2]:
        t.file(os.path.dirname(f) + '/.wh.' + os.path.basename(f))
    t.file(etc_files[2], 'changed by the upper layer\n', mode=0o640)
    t.file('etc/new-in-upper', 'hello\n')
    t.dir('usr').dir('usr/share').dir('usr/share/doc')
    for d in doc_dirs:
        t.file('usr/share/doc/.wh.' + os.path.basename(d))
    t.dir(opaque).file(opaque + '/.wh..wh..opq').file(opaque + '/only-this', 'UTC\n')
    t.symlink(empty_dir, '/var/' + empty_dir)  # an empty directory becomes a symlink
    t.dir('usr/bin').file('usr/bin/.wh.' + os.path.basename(victim_bin))
    t.hardlink('usr/bin/bash-again', 'usr/bin/bash')
    t.end()
    return t.bytes(), dict(doc_dirs=doc_dirs, etc_files=etc_files, opaque=opaque,
                           empty_dir=empty_dir, victim_bin=victim_bin)


def main():
    if os.environ.get('THINIMG_SKIP_DEBIAN') == '1':
        print('skipped: THINIMG_SKIP_DEBIAN=1')
        return summary(0, 0, 1)
    base_tar = debian_tar()
    work = make_base()
    passed = failed = 0
    try:
        upper_bytes, picked = upper_from(base_tar)
        upper = os.path.join(work, 'upper.tar')
        with open(upper, 'wb') as f:
            f.write(upper_bytes)

        # 1. the base alone
        mine, ref = os.path.join(work, 'mine'), os.path.join(work, 'ref')
        os.mkdir(ref)
        t0 = time.monotonic()
        thinimg(mine, base_tar)
        t1 = time.monotonic()
        gnu_tar(ref, base_tar)
        t2 = time.monotonic()
        a, b = treecmp.describe(mine), treecmp.describe(ref)
        problems = treecmp.diff(a, b)
        if len(a) < 5000:
            problems.append('only %d entries: not a Debian root?' % len(a))
        print('base: %d entries; thinimg %.2fs, GNU tar %.2fs' % (len(a), t1 - t0, t2 - t1))
        d = report(problems, 'debian base vs GNU tar',
                   'debian base: identical to GNU tar')
        passed, failed = passed + d[0], failed + d[1]

        # 2. base + upper with deletions
        thinimg(mine, upper)
        reference_overlay(ref, upper, upper_bytes)
        a, b = treecmp.describe(mine), treecmp.describe(ref)
        problems = treecmp.diff(a, b)
        gone = picked['doc_dirs'] + picked['etc_files'][:2] + [picked['victim_bin']]
        for p in gone:
            if os.path.lexists(os.path.join(mine, p)):
                problems.append('%s should have been whited out' % p)
        if os.listdir(os.path.join(mine, picked['opaque'])) != ['only-this']:
            problems.append('%s is not opaque' % picked['opaque'])
        if not os.path.islink(os.path.join(mine, picked['empty_dir'])):
            problems.append('%s did not become a symlink' % picked['empty_dir'])
        d = report(problems, 'debian base + upper vs reference',
                   'debian base + upper layer (whiteouts %s, opaque %s): %d entries '
                   'identical to the reference' % (len(gone), picked['opaque'], len(a)))
        passed, failed = passed + d[0], failed + d[1]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary(passed, failed, 0)


if __name__ == '__main__':
    if sys.argv[1:] == ['--tar']:
        print(debian_tar())
        sys.exit(0)
    sys.exit(main())
