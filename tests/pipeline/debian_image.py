#!/usr/bin/env python3
"""debian_image.py: a real two-layer Debian image, and its reference root file system by umoci.

Layer 1 is tests/archive/debian.py's cached `mmdebstrap --variant=minbase bookworm` tar
(reproducible: SOURCE_DATE_EPOCH). Layer 2 is generated from layer 1's member list, the
change set of an image layer at its hardest:

  whiteouts      files, whole directories, a symlink, a hardlink group's member, a name the
                 lower layers never had, and a whiteout with the same name made again
  opaque dirs    usr/share/zoneinfo (re-owned; new entries, some with lower names: UTC,
                 Europe/Berlin) and one made opaque with nothing in it
  hardlinks      a lower group split by changing one member, with a new link to the changed
                 file and one to the unchanged lower file; a new group spanning three
                 directories (one of them the opaque one)
  symlinks       absolute, relative, dangling (both), a 300-byte target, a lower file and a
                 lower non-empty directory replaced by symlinks
  xattrs         user.* on a file (binary value), on a directory and on a changed lower file;
                 security.capability
  modes, owners  setuid, setgid, sticky, mode 0, owners 65534, 1000000 and 123456789:987654321
                 (PAX), a lower directory re-moded and re-owned
  others         a FIFO, a character and a block device, a 255-byte name, a 1,000-byte deep
                 path, a UTF-8 name, a nanosecond mtime, a lower file replaced by a directory, a
                 file in a lower directory the layer does not list, a parent the layer does
                 not list

The image is written twice over the same bytes (hardlinks): as a family of plain layer tars
(ENTRY/images/deb/1.tar, 2.tar: `dir:ENTRY/images/deb/` for thinimg) and as an OCI image
layout (ENTRY/oci, tag deb). The reference is `umoci raw unpack` of the layout (as root), kept
as its description (ENTRY/ref.json, tests/pipeline/imgcmp.py's format) with what layer 2 is
meant to do (ENTRY/picks.json, for `check`).

Cached in $XDG_CACHE_HOME/thinimg (else ~/.cache/thinimg) as ENTRY = debian-image-<key>, the
key hashing layer 1's digest, this script, the comparer, the tar writer and umoci's version
(a change to any builds a new entry). The cache is atomic and checked like tests/vm/run's:
built under a temporary name, a marker written last ("<key> <layer digests and sizes>"),
renamed into place; at use the marker must match the files (sizes, layer 2's digest, layer 1
the same inode as the checked base tar), else the entry is built again.

  debian_image.py             build the entry if needed; print its path
  debian_image.py --no-build  print its path, or fail (the test VM: it has no network, so its
                              entry is built on the host first, by the ctest fixture)
  debian_image.py check TREE ENTRY
                              TREE shows what layer 2 is meant to do (independent of any
                              reference: guards against a reference wrong the same way)
"""
import fcntl
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'archive'))
import debian  # noqa: E402
import imgcmp  # noqa: E402
from tarlib import Tar  # noqa: E402

PREFIX = 'debian-image-'
TAG = 'deb'
# Layer 2's times: a day after layer 1's (SOURCE_DATE_EPOCH), so a time taken from the wrong
# layer shows.
MTIME = debian.SOURCE_DATE_EPOCH + 86400
# security.capability, struct vfs_cap_data (little endian): magic VFS_CAP_REVISION_2 with the
# effective flag (0x02000001), then permitted/inheritable words: cap_net_raw (bit 13) permitted.
CAP_NET_RAW = bytes([1, 0, 0, 2, 0, 0x20, 0, 0]) + bytes(12)
DEEP_LEVELS = 24  # 24 directories of 40 bytes: a path of about 1,000 bytes
NAME_MAX = 255
BLOB_SIZE = 1 << 20
Z = 'usr/share/zoneinfo'


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def die(msg):
    log('debian_image.py: ' + msg)
    sys.exit(1)


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def file_sha(path):
    return debian.file_sha256(path)


# ---- layer 2 ----------------------------------------------------------------------------------

def base_members(base):
    """{name: TarInfo} of layer 1, names without './' or a trailing '/'."""
    out = {}
    with tarfile.open(base) as tf:
        for m in tf:
            n = m.name[2:] if m.name.startswith('./') else m.name
            n = n.rstrip('/')
            if n and n != '.':
                out[n] = m
    return out


def layer2(members):
    """Layer 2's bytes and what it is meant to do (picks, for check())."""
    names = sorted(members)

    def need(name, what, cond=lambda m: True):
        if name not in members or not cond(members[name]):
            raise RuntimeError('layer 1 has no %s %s for layer 2 to use' % (what, name))
        return name

    def first(cond, what, n=1):
        found = [x for x in names if cond(x, members[x])][:n]
        if len(found) < n:
            raise RuntimeError('layer 1 has no %s for layer 2 to use' % what)
        return found

    def children(d):
        return [x for x in names if x.startswith(d + '/')]

    def is_dir(m):
        return m.isdir()

    doc_gone = first(lambda x, m: x.startswith('usr/share/doc/') and x.count('/') == 3 and
                     m.isdir() and len(children(x)) > 1, 'usr/share/doc dir', 6)
    doc_symlinked = doc_gone.pop()  # the 6th: a non-empty directory replaced by a symlink
    share_gone = first(lambda x, m: x.startswith('usr/share/') and x.count('/') == 2 and
                       m.isdir() and x not in (Z, 'usr/share/doc') and
                       any(members[c].isdir() for c in children(x)),
                       'usr/share dir with subdirs')[0]
    etc_sym_gone = first(lambda x, m: x.startswith('etc/') and x.count('/') == 1 and m.issym(),
                         'symlink in etc')[0]
    links = [x for x in names if members[x].islnk()]
    if len(links) < 2:
        raise RuntimeError('layer 1 has %d hardlinks; layer 2 needs 2 groups' % len(links))
    split, split_target = links[0], members[links[0]].linkname.lstrip('./').lstrip('/')
    cut, cut_target = links[1], members[links[1]].linkname.lstrip('./').lstrip('/')
    need(Z, 'directory', is_dir)
    need(Z + '/UTC', 'file')
    need(Z + '/Europe/Berlin', 'file')
    empty_opaque = first(lambda x, m: x.startswith('var/cache/') and x.count('/') == 2 and
                         m.isdir() and children(x), 'non-empty var/cache dir')[0]
    for f in ('etc/issue', 'etc/issue.net', 'etc/motd', 'etc/hostname', 'etc/host.conf',
              'etc/debian_version'):
        need(f, 'file', lambda m: m.isfile())
    need('var/local', 'directory', is_dir)
    need('opt', 'directory', is_dir)
    need('usr/lib', 'directory', is_dir)

    t = Tar()
    m = dict(mtime=MTIME)
    # whiteouts (first in their directories, as image builders write them)
    for f in ('etc/issue', 'etc/issue.net', etc_sym_gone, 'etc/never-existed', 'etc/motd'):
        d, b = os.path.split(f)
        t.file('%s/.wh.%s' % (d, b), **m)
    t.file('etc/motd', 'made again in the layer that whites it out\n', **m)
    for d in doc_gone:
        t.file('usr/share/doc/.wh.' + os.path.basename(d), **m)
    t.file('usr/share/.wh.' + os.path.basename(share_gone), **m)
    d, b = os.path.split(cut_target)
    t.file('%s/.wh.%s' % (d, b), **m)  # a hardlink group's member: the other name stays
    # opaque directories
    t.dir(Z, mode=0o750, gid=50, **m)
    t.file(Z + '/.wh..wh..opq', **m)
    t.file(Z + '/UTC', 'UTC, new\n', **m)
    t.dir(Z + '/Europe', **m)
    t.file(Z + '/Europe/Berlin', 'Berlin, new\n', **m)
    t.dir(Z + '/Custom', mode=0o700, uid=7, gid=7, **m)
    t.file(Z + '/Custom/Zone', 'custom\n', **m)
    t.file(empty_opaque + '/.wh..wh..opq', **m)
    # hardlinks
    t.file(split, 'the changed member of a lower hardlink group\n', mode=0o755, **m)
    t.dir('usr/local/bin', **m)  # in layer 1 already: listed again (its time changes)
    t.hardlink('usr/local/bin/changed-again', split, **m)
    t.hardlink('usr/local/bin/lower-again', split_target, **m)
    t.pax(('SCHILY.xattr.user.dir', b'yes'))
    t.dir('opt/hl', **m)
    t.file('opt/hl/a', b'hardlinked three times\n' * 100, uid=1000, gid=1000, **m)
    t.hardlink('usr/local/bin/hl-b', 'opt/hl/a', **m)
    t.hardlink(Z + '/Custom/Link', 'opt/hl/a', **m)
    # symlinks
    t.symlink('usr/local/bin/abs', '/' + split_target, **m)
    t.symlink('usr/local/bin/rel', '../../bin/' + os.path.basename(split_target), **m)
    t.symlink('usr/local/bin/dangling-abs', '/nonexistent/target', **m)
    t.symlink('usr/local/bin/dangling-rel', '../nowhere/at/all', **m)
    long_target = '/' + 'x' * 99 + '/' + 'y' * 200
    t.symlink('opt/long-target', long_target, **m)
    t.symlink('etc/hostname', '/proc/sys/kernel/hostname', uid=3, gid=3, **m)
    t.symlink(doc_symlinked, '/usr/share/doc-moved', **m)
    # xattrs
    t.pax(('SCHILY.xattr.security.capability', CAP_NET_RAW))
    t.file('usr/local/bin/capped', b'\x7fELF not really\n', mode=0o755, **m)
    t.pax(('SCHILY.xattr.user.comment', b'hello'), ('SCHILY.xattr.user.bin', b'\x01\xfe\x00\xff'))
    t.file('opt/tagged', 'tagged\n', **m)
    t.pax(('SCHILY.xattr.user.tag', b'changed'))
    t.file('etc/debian_version', '12.99\n', **m)
    # modes and owners
    t.file('usr/local/bin/suid', 'setuid\n', mode=0o4755, **m)
    t.file('usr/local/bin/sgid', 'setgid\n', mode=0o2711, gid=42, **m)
    t.dir('opt/sticky', mode=0o1777, **m)
    t.dir('opt/sgid-dir', mode=0o2775, gid=50, **m)
    t.file('opt/nomode', 'mode 0\n', mode=0, **m)
    t.dir('opt/owners', **m)
    t.file('opt/owners/nobody', 'n\n', uid=65534, gid=65534, **m)
    t.file('opt/owners/big', 'b\n', uid=1000000, gid=1000000, **m)
    t.pax(('uid', '123456789'), ('gid', '987654321'))
    t.file('opt/owners/huge', 'h\n', **m)
    t.dir('var/local', mode=0o700, uid=1234, gid=5678, **m)  # lower dir: metadata only
    # other types, names, times
    t.node('run/test.fifo', 'p', mode=0o620, uid=1, gid=5, **m)
    t.node('dev/test-char', 'c', 10, 200, mode=0o600, **m)
    t.node('dev/test-block', 'b', 7, 9, mode=0o660, gid=6, **m)
    long_name = 'opt/' + 'L' * NAME_MAX
    t.file(long_name, 'a 255-byte name\n', **m)
    deep = 'opt/deep'
    t.dir(deep, **m)
    for i in range(DEEP_LEVELS):
        deep += '/d%02d-%s' % (i, 'x' * 36)
        t.dir(deep, **m)
    deep += '/deepest'
    t.file(deep, 'deep\n', **m)
    t.file('opt/ünïcødé-名前', 'utf-8\n', **m)
    t.pax(('mtime', '%d.123456789' % MTIME))
    t.file('opt/ns-time', 'a nanosecond mtime\n', **m)
    blob = b''
    seed = b'thinimg'
    while len(blob) < BLOB_SIZE:
        seed = hashlib.sha256(seed).digest()
        blob += seed
    t.file('opt/blob.bin', blob[:BLOB_SIZE], **m)
    t.dir('etc/host.conf', mode=0o755, **m)  # a lower file replaced by a directory
    t.file('etc/host.conf/inside', 'inside\n', **m)
    t.file('usr/lib/new-in-lower-dir', 'the lower dir is not listed\n', **m)
    t.file('opt/implicit/child', 'my parent is not in the layer\n', **m)
    t.end()
    # The directories whose entries layer 2 changes without listing them: umoci puts their
    # layer-1 mtime back, thinimg (like containerd's applier) leaves the time of the change;
    # the image has no time for them (a layer generator would list a changed directory).
    # (Every entry changes its parent but a directory listed again over a lower directory.)
    listed = set()
    parents = set()
    with tarfile.open(fileobj=io.BytesIO(t.bytes())) as tf:
        for mem in tf:
            n = mem.name.rstrip('/')
            if mem.isdir():
                listed.add(n)
            if not (mem.isdir() and n in members and members[n].isdir()):
                parents.add(os.path.dirname(n) or '.')
    why = ('layer 2 changes its entries without listing it: no image time (umoci puts back '
           "layer 1's, thinimg leaves the change's)")
    no_mtime = {d: why for d in sorted(parents - listed)}
    picks = {
        'gone': ['etc/issue', 'etc/issue.net', etc_sym_gone, share_gone, cut_target] + doc_gone,
        'opaque': {Z: ['Custom', 'Europe', 'UTC'], empty_opaque: []},
        'groups': [sorted([split, 'usr/local/bin/changed-again']),
                   sorted([split_target, 'usr/local/bin/lower-again']),
                   sorted(['opt/hl/a', 'usr/local/bin/hl-b', Z + '/Custom/Link'])],
        'alone': [cut],
        'symlinks': {'usr/local/bin/dangling-abs': '/nonexistent/target',
                     'opt/long-target': long_target, 'etc/hostname': '/proc/sys/kernel/hostname',
                     doc_symlinked: '/usr/share/doc-moved'},
        'modes': {'usr/local/bin/suid': '4755', 'usr/local/bin/sgid': '2711',
                  'opt/sticky': '1777', 'opt/nomode': '0', 'var/local': '700', Z: '750'},
        'owners': {'opt/owners/huge': '123456789:987654321', 'var/local': '1234:5678'},
        'xattrs': {'usr/local/bin/capped': ['security.capability', CAP_NET_RAW.hex()],
                   'opt/tagged': ['user.bin', '01fe00ff'], 'opt/hl': ['user.dir', b'yes'.hex()]},
        'contents': {'etc/motd': 'made again in the layer that whites it out\n',
                     Z + '/UTC': 'UTC, new\n', deep: 'deep\n', long_name: 'a 255-byte name\n'},
        'types': {'run/test.fifo': 'fifo', 'dev/test-char': 'char 10:200',
                  'dev/test-block': 'block 7:9', 'etc/host.conf': 'dir'},
    }
    return t.bytes(), picks, no_mtime


# ---- the cache entry --------------------------------------------------------------------------

def umoci_version():
    try:
        return subprocess.run(['umoci', '--version'], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        die('umoci is needed for the reference unpack (%s); run scripts/install-deps.sh' % e)


def base_tar(build):
    """Layer 1's path and sha256: the checked cache entry of debian.py (built when asked), or
    what its marker says (--no-build: the marker was checked when the entry was built)."""
    if build:
        path = debian.debian_tar()
        if os.environ.get('THINIMG_DEBIAN_TAR'):
            return path, file_sha(path)
    else:
        path = os.environ.get('THINIMG_DEBIAN_TAR') or \
            os.path.join(debian.cache_dir(), debian.CACHE_NAME)
        if os.environ.get('THINIMG_DEBIAN_TAR'):
            return path, file_sha(path)
    try:
        with open(debian.marker_of(path)) as f:
            return path, f.read().split()[0]
    except (OSError, IndexError):
        die('no checked Debian tar at %s; build it on the host: python3 %s' % (path, __file__))


def entry_key(base_sha):
    h = hashlib.sha256()
    h.update(base_sha.encode())
    for f in (__file__, imgcmp.__file__, os.path.join(HERE, '..', 'archive', 'treecmp.py'),
              os.path.join(HERE, '..', 'archive', 'tarlib.py')):
        h.update(file_sha(f).encode())
    h.update(umoci_version().encode())
    return h.hexdigest()[:16]


def entry_ok(entry, key, base):
    """The entry matches its marker (written last) and its layer 1 is the checked base tar."""
    try:
        with open(os.path.join(entry, '.done')) as f:
            k, sha1, size1, sha2, size2 = f.read().split()
        l1 = os.path.join(entry, 'images', TAG, '1.tar')
        l2 = os.path.join(entry, 'images', TAG, '2.tar')
        ok = (k == key and os.path.getsize(l1) == int(size1) and
              os.path.samefile(l1, base) and
              os.path.samefile(l1, os.path.join(entry, 'oci/blobs/sha256', sha1)) and
              os.path.getsize(l2) == int(size2) and file_sha(l2) == sha2 and
              os.path.samefile(l2, os.path.join(entry, 'oci/blobs/sha256', sha2)))
        with open(os.path.join(entry, 'ref.json')) as f:
            ok = ok and len(json.load(f)) >= debian.MIN_ENTRIES
        for name in ('picks.json', 'no-mtime.json'):
            with open(os.path.join(entry, name)) as f:
                json.load(f)
        return ok
    except (OSError, ValueError):
        return False


def put_blob(oci, data=None, path=None, media=None):
    """Store a blob in the layout by digest (a hardlink of path, or data); its descriptor."""
    sha = file_sha(path) if path else sha256_bytes(data)
    dest = os.path.join(oci, 'blobs', 'sha256', sha)
    if path:
        os.link(path, dest)
        size = os.path.getsize(path)
    else:
        with open(dest, 'wb') as f:
            f.write(data)
        size = len(data)
    return {'mediaType': media, 'digest': 'sha256:' + sha, 'size': size}


def json_bytes(obj):
    return json.dumps(obj, sort_keys=True, separators=(',', ':')).encode()


def build_entry(tmp, base, base_sha, key):
    t0 = time.monotonic()
    layers = os.path.join(tmp, 'images', TAG)
    oci = os.path.join(tmp, 'oci')
    os.makedirs(layers)
    os.makedirs(os.path.join(oci, 'blobs', 'sha256'))
    l1, l2 = os.path.join(layers, '1.tar'), os.path.join(layers, '2.tar')
    os.link(base, l1)
    data, picks, no_mtime = layer2(base_members(base))
    with open(l2, 'wb') as f:
        f.write(data)
    media = 'application/vnd.oci.image.layer.v1.tar'
    descs = [put_blob(oci, path=l1, media=media), put_blob(oci, path=l2, media=media)]
    config = {'architecture': 'amd64', 'os': 'linux', 'config': {},
              'rootfs': {'type': 'layers', 'diff_ids': [d['digest'] for d in descs]}}
    manifest = {'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.manifest.v1+json',
                'config': put_blob(oci, json_bytes(config),
                                   media='application/vnd.oci.image.config.v1+json'),
                'layers': descs}
    mdesc = put_blob(oci, json_bytes(manifest), media=manifest['mediaType'])
    mdesc['annotations'] = {'org.opencontainers.image.ref.name': TAG}
    with open(os.path.join(oci, 'index.json'), 'wb') as f:
        f.write(json_bytes({'schemaVersion': 2, 'manifests': [mdesc]}))
    with open(os.path.join(oci, 'oci-layout'), 'wb') as f:
        f.write(json_bytes({'imageLayoutVersion': '1.0.0'}))
    # The reference: umoci as root keeps owners, devices and every xattr.
    rootfs = os.path.join(tmp, 'rootfs')
    p = subprocess.run(['umoci', 'raw', 'unpack', '--image', '%s:%s' % (oci, TAG), rootfs],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError('umoci raw unpack failed (%d): %s' % (p.returncode, p.stderr))
    t1 = time.monotonic()
    ref = imgcmp.describe(rootfs)
    shutil.rmtree(rootfs)
    with open(os.path.join(tmp, 'ref.json'), 'w') as f:
        json.dump(ref, f, sort_keys=True)
    for name, obj in (('picks.json', picks), ('no-mtime.json', no_mtime)):
        with open(os.path.join(tmp, name), 'w') as f:
            json.dump(obj, f, sort_keys=True, indent=1)
    with open(os.path.join(tmp, '.done'), 'w') as f:
        f.write('%s %s %d %s %d\n' % (key, descs[0]['digest'][7:], descs[0]['size'],
                                      descs[1]['digest'][7:], descs[1]['size']))
    log('built in %.0fs (umoci raw unpack %.0fs of it), reference: %d entries'
        % (time.monotonic() - t0, t1 - t0, len(ref)))


def sweep(cache, base):
    """Leftovers of builds cut short, and entries whose layer 1 is not the current base tar
    (each would hold a whole old copy). Called with the cache lock held."""
    for name in os.listdir(cache):
        p = os.path.join(cache, name)
        if name.startswith('.' + PREFIX):
            shutil.rmtree(p, ignore_errors=True)
        elif name.startswith(PREFIX):
            try:
                stale = not os.path.samefile(os.path.join(p, 'images', TAG, '1.tar'), base)
            except OSError:
                stale = True
            if stale:
                shutil.rmtree(p, ignore_errors=True)


def entry(build=True):
    base, base_sha = base_tar(build)
    cache = debian.cache_dir()
    key = entry_key(base_sha)
    path = os.path.join(cache, PREFIX + key)
    if not build:
        if not entry_ok(path, key, base):
            die('%s is not built (or does not check out); it is built on the host, where the '
                'mirror is reachable: python3 %s' % (path, os.path.abspath(__file__)))
        return path
    if os.geteuid() != 0:
        die('the reference unpack needs root (umoci keeps owners and devices only as root)')
    with open(os.path.join(cache, '.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if entry_ok(path, key, base):
            return path
        if os.path.lexists(path):
            log('the cached %s does not check out; building it again' % path)
        sweep(cache, base)
        shutil.rmtree(path, ignore_errors=True)
        tmp = os.path.join(cache, '.%s%s.tmp-%d' % (PREFIX, key, os.getpid()))
        log('building %s (layer 2, OCI layout, umoci reference; once, cached)' % path)
        try:
            build_entry(tmp, base, base_sha, key)
            if not entry_ok(tmp, key, base):
                raise RuntimeError('the new entry %s does not check out' % tmp)
            os.rename(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


# ---- check: what layer 2 is meant to do -------------------------------------------------------

def check(tree, picks):
    """Problems (a list of strings) of tree against what layer 2 is meant to do."""
    bad = []

    def p(rel):
        return os.path.join(tree, rel)

    for g in picks['gone']:
        if os.path.lexists(p(g)):
            bad.append('%s is whited out, yet there' % g)
    for d, want in picks['opaque'].items():
        got = sorted(os.listdir(p(d))) if os.path.isdir(p(d)) else None
        if got != want:
            bad.append('opaque %s holds %s, not %s' % (d, got, want))
    for g in picks['groups'] + [[a] for a in picks['alone']]:
        inos = {os.lstat(p(x)).st_ino for x in g if os.path.lexists(p(x))}
        if len(inos) != 1 or not all(os.path.lexists(p(x)) for x in g):
            bad.append('%s should be one inode (got %d)' % (g, len(inos)))
    for g1 in picks['groups']:
        for g2 in picks['groups']:
            if g1 < g2 and os.lstat(p(g1[0])).st_ino == os.lstat(p(g2[0])).st_ino:
                bad.append('%s and %s should be different inodes' % (g1, g2))
    for link, target in picks['symlinks'].items():
        got = os.readlink(p(link)) if os.path.islink(p(link)) else None
        if got != target:
            bad.append('%s -> %r, not %r' % (link, got, target))
    for f, mode in picks['modes'].items():
        got = '%o' % stat.S_IMODE(os.lstat(p(f)).st_mode)
        if got != mode:
            bad.append('%s mode %s, not %s' % (f, got, mode))
    for f, owner in picks['owners'].items():
        st = os.lstat(p(f))
        if '%d:%d' % (st.st_uid, st.st_gid) != owner:
            bad.append('%s owner %d:%d, not %s' % (f, st.st_uid, st.st_gid, owner))
    for f, (name, value) in picks['xattrs'].items():
        try:
            got = os.getxattr(p(f), name, follow_symlinks=False).hex()
        except OSError as e:
            got = str(e)
        if got != value:
            bad.append('%s xattr %s = %s, not %s' % (f, name, got, value))
    for f, text in picks['contents'].items():
        try:
            with open(p(f)) as fh:
                got = fh.read()
        except OSError as e:
            got = str(e)
        if got != text:
            bad.append('%s holds %r, not %r' % (f, got[:80], text))
    for f, kind in picks['types'].items():
        st = os.lstat(p(f))
        got = {stat.S_IFIFO: 'fifo', stat.S_IFDIR: 'dir'}.get(stat.S_IFMT(st.st_mode))
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            got = '%s %d:%d' % ('char' if stat.S_ISCHR(st.st_mode) else 'block',
                                os.major(st.st_rdev), os.minor(st.st_rdev))
        if got != kind:
            bad.append('%s is %s, not %s' % (f, got, kind))
    return bad


def main(argv):
    if argv[:1] == ['check'] and len(argv) == 3:
        with open(os.path.join(argv[2], 'picks.json')) as f:
            bad = check(argv[1], json.load(f))
        for b in bad:
            print('check: ' + b)
        print('check: %s: %s' % (argv[1], '%d problems' % len(bad) if bad else
                                  'every change of layer 2 is there'))
        return 1 if bad else 0
    if argv not in ([], ['--no-build']):
        sys.exit(__doc__.split('\n\n')[-1])
    print(entry(build=argv != ['--no-build']))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
