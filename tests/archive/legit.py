#!/usr/bin/env python3
"""legit.py: legitimate but tricky layer content must come out exactly.

Two comparisons, entry by entry (type, mode, owner, size, content hash, link target, device
numbers, xattrs, mtime, hardlink groups):

 1. one layer with absolute symlinks (etc/alternatives/*), usr/bin/X11 -> ., hardlink groups,
    setuid/setgid binaries, sticky and 0500/0000 directories with children, xattrs
    (security.capability, user.*), owners, nanosecond times, long and UTF-8 names, FIFOs,
    devices, duplicate entries: thinimg's extraction against GNU tar's;
 2. two layers, the upper one with whiteouts, an opaque directory, type changes and a
    hardlink to a lower file: thinimg's extraction against GNU tar's extraction of the lower
    layer with the upper layer's deletions applied by hand, then the upper layer extracted
    over it.

3. the same two layers as a docker-archive and as an OCI layout: expanded by `thinimg
    extract` into the same tree;
 4. GNU sparse files (old GNU and PAX sparse formats) come out exact and stay sparse.

Plus explicit checks of the expected tree (modes, targets, xattrs) described here, so a bug
shared with GNU tar would still show.

Run: THINIMG_BIN=build/thinimg python3 tests/archive/legit.py
"""
import os
import shutil
import stat
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import treecmp  # noqa: E402
from tarlib import (Tar, is_root, make_base, mode_of, read, remove_tree, report,  # noqa: E402
                    summary, thinimg_bin)

# VFS_CAP_REVISION_2 file capability: cap_net_raw (bit 13) permitted + effective.
CAP_NET_RAW = bytes([0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00]) + bytes(12)
GNU_TAR_XATTRS = ['--xattrs', '--xattrs-include=security.capability',
                  '--xattrs-include=user.*']


def xattr(name, value):
    return ('SCHILY.xattr.' + name, value)


def tricky_layer(root_user):
    t = Tar()
    t.dir('./', mode=0o755)
    t.dir('etc').dir('etc/alternatives')
    t.symlink('etc/alternatives/editor', '/usr/bin/vim.basic')
    t.symlink('etc/alternatives/awk', '/usr/bin/mawk')
    t.dir('etc/init.d').file('etc/init.d/x11-common', '#!/bin/sh\n', mode=0o755)
    t.dir('etc/rcS.d').symlink('etc/rcS.d/S01x11-common', '../init.d/x11-common')
    t.dir('usr').dir('usr/bin')
    t.symlink('usr/bin/X11', '.')
    t.file('usr/bin/vim.basic', b'\x7fELF vim' * 100, mode=0o755)
    t.file('usr/bin/perl', b'\x7fELF perl' * 1000, mode=0o755)
    t.hardlink('usr/bin/perl5.36.0', 'usr/bin/perl')
    t.hardlink('usr/bin/perl-again', 'usr/bin/perl')
    t.file('usr/bin/passwd', b'\x7fELF passwd', mode=0o4755)
    t.file('usr/bin/chage', b'\x7fELF chage', mode=0o2755, gid=42)
    t.pax(xattr('security.capability', CAP_NET_RAW)).file('usr/bin/ping', b'\x7fELF ping',
                                                          mode=0o755)
    t.pax(xattr('user.comment', 'hello'), xattr('user.bin', bytes(range(256)))) \
        .file('usr/bin/annotated', 'x', mode=0o644)
    t.pax(xattr('security.selinux', 'system_u:object_r:bin_t:s0')) \
        .file('usr/bin/labelled', 'x', mode=0o644)  # not on the allowlist: dropped
    long_dir = 'usr/share/' + 'd' * 120
    t.dir('usr/share').dir(long_dir).file(long_dir + '/' + 'f' * 200, 'long name')
    t.dir('usr/share/locale').file('usr/share/locale/日本語.mo', 'utf-8 name')
    t.file('usr/share/latin1-\xe9', 'x')  # as UTF-8 bytes
    t.dir('tmp', mode=0o1777)
    t.dir('var').dir('var/lib').dir('var/lib/private', mode=0o500)
    t.file('var/lib/private/secret', 's', mode=0o400)
    t.dir('var/lib/private/sub', mode=0o700).file('var/lib/private/sub/deeper', 'd')
    t.dir('var/lib/locked', mode=0o000).file('var/lib/locked/inside', 'i', mode=0o000)
    t.pax(xattr('user.dir', 'on a directory')).dir('var/lib/tagged', mode=0o750)
    t.dir('home').dir('home/user', uid=1000, gid=1000, mode=0o700)
    t.file('home/user/.profile', 'PATH=/usr/bin\n', uid=1000, gid=1000, mode=0o600)
    t.file('home/user/readonly', 'ro', uid=1000, gid=1000, mode=0o444)
    t.symlink('home/user/link', '/etc/passwd', uid=1000, gid=1000)
    t.pax(('mtime', '1700000000.123456789')).file('home/user/nanos', 'n', uid=1000, gid=1000)
    t.pax(('mtime', '-100')).file('home/user/before-1970', 'old')
    t.file('empty', '')
    t.file('big', os.urandom(3 << 20))
    t.file('dup', 'first').file('dup', 'second, wins', mode=0o600)
    t.dir('dev')
    t.node('dev/initctl', 'p', mode=0o600)
    if root_user:
        t.node('dev/null', 'c', 1, 3, mode=0o666).node('dev/sda', 'b', 8, 0, mode=0o660, gid=6)
    return t.end().bytes()


def check_expected(root):
    """What the layer means, independent of any extractor."""
    problems = []

    def want(cond, what):
        if not cond:
            problems.append(what)
    want(os.readlink(root + '/etc/alternatives/editor') == '/usr/bin/vim.basic', 'alt link')
    want(os.readlink(root + '/usr/bin/X11') == '.', 'X11 -> .')
    want(os.readlink(root + '/etc/rcS.d/S01x11-common') == '../init.d/x11-common', 'rel link')
    st = os.stat(root + '/usr/bin/perl')
    want(st.st_nlink == 3, 'perl has 3 links (%d)' % st.st_nlink)
    want(os.stat(root + '/usr/bin/perl5.36.0').st_ino == st.st_ino, 'hardlink group')
    want(mode_of(root + '/usr/bin/passwd') == 0o4755, 'setuid %o' % mode_of(root + '/usr/bin/passwd'))
    want(mode_of(root + '/usr/bin/chage') == 0o2755, 'setgid')
    want(mode_of(root + '/tmp') == 0o1777, 'sticky')
    want(mode_of(root + '/var/lib/private') == 0o500, 'dir 0500')
    want(mode_of(root + '/var/lib/locked') == 0o000, 'dir 0000')
    want(read(root + '/var/lib/private/sub/deeper') == b'd', 'child of 0500 dir')
    want(os.getxattr(root + '/usr/bin/ping', 'security.capability') == CAP_NET_RAW, 'capability')
    want(os.getxattr(root + '/usr/bin/annotated', 'user.bin') == bytes(range(256)), 'user xattr')
    want(os.getxattr(root + '/var/lib/tagged', 'user.dir') == b'on a directory', 'dir xattr')
    want('security.selinux' not in os.listxattr(root + '/usr/bin/labelled'), 'selinux dropped')
    want(os.lstat(root + '/home/user/nanos').st_mtime_ns == 1700000000123456789, 'ns mtime')
    want(os.lstat(root + '/home/user/before-1970').st_mtime == -100, 'negative mtime')
    want(read(root + '/dup') == b'second, wins' and mode_of(root + '/dup') == 0o600, 'dup')
    want(stat.S_ISFIFO(os.lstat(root + '/dev/initctl').st_mode), 'fifo')
    if is_root():
        want(os.lstat(root + '/home/user/.profile').st_uid == 1000, 'owner')
        want(os.lstat(root + '/home/user/link').st_uid == 1000, 'symlink owner')
        want(os.lstat(root + '/usr/bin/chage').st_gid == 42, 'group')
        want(os.lstat(root + '/dev/null').st_rdev == os.makedev(1, 3), 'char dev')
    return problems


def lower_layer():
    t = Tar()
    t.dir('./').dir('etc').file('etc/keep', 'keep').file('etc/gone', 'gone')
    t.dir('etc/conf.d').file('etc/conf.d/a', 'a').file('etc/conf.d/b', 'b')
    t.dir('opaque').file('opaque/old1', '1').dir('opaque/olddir').file('opaque/olddir/f', 'f')
    t.dir('opaque/kept').file('opaque/kept/lower', 'lower')
    t.dir('whole').dir('whole/tree').file('whole/tree/f', 'f')
    t.file('becomes-dir', 'file').dir('becomes-link').file('replaced', 'old', mode=0o600)
    t.dir('bin').file('bin/busybox', b'\x7fELF' * 50, mode=0o755)
    return t.end().bytes()


def upper_layer():
    t = Tar()
    t.dir('./')
    t.dir('etc').file('etc/.wh.gone').file('etc/new', 'new')
    t.dir('etc/conf.d').file('etc/conf.d/.wh.a')
    t.dir('opaque').file('opaque/.wh..wh..opq').file('opaque/fresh', 'fresh')
    t.dir('opaque/kept').file('opaque/kept/upper', 'upper')
    t.file('.wh.whole')
    t.dir('becomes-dir').file('becomes-dir/inside', 'x')  # file -> dir
    t.symlink('becomes-link', '/bin')  # empty dir -> symlink
    t.file('replaced', 'new', mode=0o644)
    t.dir('bin').hardlink('bin/sh', 'bin/busybox')  # a hardlink to a lower layer's file
    return t.end().bytes()


def docker_archive(lower, upper):
    """A `docker save` tar: manifest.json, <id>/layer.tar (the upper one gzip-compressed)."""
    import gzip
    import json
    man = json.dumps([{'Config': 'cfg.json', 'RepoTags': ['legit:1'],
                       'Layers': ['aaa/layer.tar', 'bbb/layer.tar']}])
    return Tar().dir('aaa').file('aaa/layer.tar', lower).dir('bbb') \
        .file('bbb/layer.tar', gzip.compress(upper)).file('cfg.json', '{}') \
        .file('manifest.json', man).end().bytes()


def oci_layout(lower, upper):
    """An OCI image layout in a tar: index.json -> manifest -> layers by digest."""
    import hashlib
    import json

    def digest(b):
        return 'sha256:' + hashlib.sha256(b).hexdigest()
    cfg = b'{}'
    man = json.dumps({'schemaVersion': 2, 'config': {'digest': digest(cfg), 'size': len(cfg)},
                      'layers': [{'digest': digest(x), 'size': len(x)} for x in (lower, upper)]
                      }).encode()
    idx = json.dumps({'schemaVersion': 2, 'manifests': [{'digest': digest(man)}]})
    t = Tar().dir('blobs').dir('blobs/sha256')
    for b in (lower, upper, cfg, man):
        t.file('blobs/sha256/' + digest(b)[7:], b)
    return t.file('oci-layout', '{"imageLayoutVersion": "1.0.0"}').file('index.json', idx) \
        .end().bytes()


def reference_overlay(ref, upper_path, upper_bytes):
    """Apply the upper layer's deletions by hand, then let GNU tar extract the rest."""
    import tarfile
    import io
    with tarfile.open(fileobj=io.BytesIO(upper_bytes)) as tf:
        for m in tf.getmembers():
            d, base = os.path.split(m.name.rstrip('/'))
            if base == '.wh..wh..opq':
                target = os.path.join(ref, d)
                for n in os.listdir(target):
                    p = os.path.join(target, n)
                    shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
            elif base.startswith('.wh.'):
                p = os.path.join(ref, d, base[4:])
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
    gnu_tar(ref, upper_path, ['--exclude=.wh.*'])


def gnu_tar(dest, blob, extra=()):
    owner = ['--same-owner'] if is_root() else ['--no-same-owner']
    subprocess.run(['tar', '-xpf', blob, '-C', dest, '--warning=no-timestamp'] + owner +
                   GNU_TAR_XATTRS + list(extra), check=True)


def thinimg(dest, *blobs):
    p = subprocess.run([thinimg_bin(), 'extract', '--root', dest] + list(blobs),
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError('thinimg extract failed (%d): %s' % (p.returncode, p.stderr))


def compare(a, b):
    return treecmp.diff(treecmp.describe(a), treecmp.describe(b))


def main():
    base = make_base()
    passed = failed = 0
    try:
        # 1. one tricky layer
        blob = os.path.join(base, 'tricky.tar')
        with open(blob, 'wb') as f:
            f.write(tricky_layer(is_root()))
        mine, ref = os.path.join(base, 'mine'), os.path.join(base, 'ref')
        os.mkdir(ref)
        thinimg(mine, blob)
        gnu_tar(ref, blob)
        problems = check_expected(mine) + compare(mine, ref)
        n = len(treecmp.describe(mine))
        d = report(problems, 'tricky layer vs GNU tar (%d entries)' % n,
                   'tricky layer: %d entries identical to GNU tar, expected tree holds' % n)
        passed, failed = passed + d[0], failed + d[1]

        # 2. overlay
        lower, upper = os.path.join(base, 'lower.tar'), os.path.join(base, 'upper.tar')
        ub = upper_layer()
        with open(lower, 'wb') as f:
            f.write(lower_layer())
        with open(upper, 'wb') as f:
            f.write(ub)
        mine2, ref2 = os.path.join(base, 'mine2'), os.path.join(base, 'ref2')
        os.mkdir(ref2)
        thinimg(mine2, lower, upper)
        gnu_tar(ref2, lower)
        reference_overlay(ref2, upper, ub)
        problems = compare(mine2, ref2)
        expect = {'etc/gone': False, 'etc/conf.d/a': False, 'etc/conf.d/b': True,
                  'opaque/old1': False, 'opaque/olddir': False, 'opaque/kept/lower': False,
                  'opaque/kept/upper': True, 'opaque/fresh': True, 'whole': False,
                  'becomes-dir/inside': True, 'etc/.wh.gone': False}
        for p, present in expect.items():
            if os.path.lexists(os.path.join(mine2, p)) != present:
                problems.append('%s should %sexist' % (p, '' if present else 'not '))
        if os.stat(mine2 + '/bin/sh').st_ino != os.stat(mine2 + '/bin/busybox').st_ino:
            problems.append('bin/sh is not a hardlink of the lower bin/busybox')
        d = report(problems, 'overlay with whiteouts vs reference',
                   'overlay: %d entries identical to the reference'
                   % len(treecmp.describe(mine2)))
        passed, failed = passed + d[0], failed + d[1]
        # 3. the same two layers in a docker-archive (with a gzip layer) and an OCI layout
        for kind, outer in (('docker-archive', docker_archive(lower_layer(), ub)),
                            ('oci-layout', oci_layout(lower_layer(), ub))):
            blob = os.path.join(base, kind + '.tar')
            with open(blob, 'wb') as f:
                f.write(outer)
            mine4 = os.path.join(base, 'mine-' + kind)
            thinimg(mine4, blob)
            problems = compare(mine4, mine2)
            d = report(problems, '%s vs the same layers applied one by one' % kind,
                       '%s: expanded into its layers, identical to applying them one by one'
                       % kind)
            passed, failed = passed + d[0], failed + d[1]

        # 4. GNU sparse files (old GNU and PAX sparse formats) stay sparse and exact
        src = os.path.join(base, 'sparse-src')
        os.mkdir(src)
        with open(os.path.join(src, 'holes'), 'wb') as f:
            f.truncate(64 << 20)
            f.seek(5 << 20)
            f.write(b'data in the middle')
            f.seek((64 << 20) - 4)
            f.write(b'tail')
        for fmt in ('gnu', 'pax'):
            blob = os.path.join(base, 'sparse-%s.tar' % fmt)
            subprocess.run(['tar', '--format=' + fmt, '-cSf', blob, '-C', src, 'holes'],
                           check=True)
            mine3 = os.path.join(base, 'mine-sparse-' + fmt)
            thinimg(mine3, blob)
            got = os.path.join(mine3, 'holes')
            problems = []
            if read(got) != read(os.path.join(src, 'holes')):
                problems.append('content differs')
            if os.stat(got).st_blocks * 512 > (1 << 20):
                problems.append('not sparse: %d bytes allocated' % (os.stat(got).st_blocks * 512))
            d = report(problems, 'sparse file (%s format)' % fmt,
                       'sparse file (%s format): exact, %d KiB allocated of 64 MiB'
                       % (fmt, os.stat(got).st_blocks // 2))
            passed, failed = passed + d[0], failed + d[1]
    finally:
        remove_tree(base)
    return summary(passed, failed, 0)


if __name__ == '__main__':
    sys.exit(main())
