"""tarlib.py: byte-exact tar writing for the archive tests, and the test harness they share.

The hostile cases need headers no well-behaved writer produces (hardlinks with data, bad
checksums, overflowing size fields, NUL bytes in PAX records, truncation), so this module
writes ustar and PAX headers itself instead of going through the tarfile module.

Harness: each case runs `thinimg extract` in a fresh workspace

    W/            the workspace (its snapshot is compared before and after)
      root/       the extraction root (excluded from the snapshot)
      sibling/    a neighbour directory with a secret file
      canary.txt  a file an archive may name via ../canary.txt

and checks the exit code, the message (the rule in "(rule: X)"), that nothing outside the root
changed, and optionally the tree inside the root.
"""
import os
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import treecmp  # noqa: E402

BLOCK = 512
MTIME = 1700000000  # fixed, so expected trees are reproducible


def _octal(value, width):
    """NUL-terminated octal field of width bytes."""
    s = ('%0*o' % (width - 1, value)).encode()
    if len(s) > width - 1:
        raise ValueError('value %d does not fit %d bytes' % (value, width))
    return s + b'\0'


def _field(data, width):
    data = data if isinstance(data, bytes) else data.encode()
    if len(data) > width:
        raise ValueError('field too long: %r' % data)
    return data + b'\0' * (width - len(data))


def header(name, typeflag=b'0', size=0, mode=0o644, uid=0, gid=0, mtime=MTIME, linkname=b'',
           devmajor=0, devminor=0, prefix=b'', magic=b'ustar\x0000', size_field=None,
           uid_field=None, checksum=None):
    """One 512-byte ustar header. *_field overrides a raw field (e.g. base-256)."""
    h = bytearray(BLOCK)
    h[0:100] = _field(name, 100)
    h[100:108] = _octal(mode, 8)
    h[108:116] = uid_field if uid_field is not None else _octal(uid, 8)
    h[116:124] = _octal(gid, 8)
    h[124:136] = size_field if size_field is not None else _octal(size, 12)
    h[136:148] = _octal(mtime, 12)
    h[148:156] = b' ' * 8
    h[156:157] = typeflag
    h[157:257] = _field(linkname, 100)
    h[257:265] = magic
    # uname/gname stay empty: extractors then use the numeric ids (GNU tar prefers names).
    h[265:297] = _field(b'', 32)
    h[297:329] = _field(b'', 32)
    h[329:337] = _octal(devmajor, 8)
    h[337:345] = _octal(devminor, 8)
    h[345:500] = _field(prefix, 155)
    chk = sum(h) if checksum is None else checksum
    h[148:156] = ('%06o' % chk).encode() + b'\0 '
    return bytes(h)


def pad(data):
    return data + b'\0' * ((-len(data)) % BLOCK)


def pax_records(records):
    """Encode PAX records [(key, value-bytes)] with their self-describing lengths."""
    out = b''
    for key, value in records:
        key = key.encode() if isinstance(key, str) else key
        value = value.encode() if isinstance(value, str) else value
        body = b' ' + key + b'=' + value + b'\n'
        n = len(body) + 1
        while len(str(n).encode()) + len(body) != n:
            n = len(str(n).encode()) + len(body)
        out += str(n).encode() + body
    return out


class Tar:
    """Builds a tar byte by byte. Names (str, or bytes taken as they are) longer than ustar
    allows or non-ASCII get a PAX header automatically; pax() adds records to the next
    entry."""

    def __init__(self):
        self.out = b''
        self._pax = []

    def pax(self, *records):
        self._pax.extend(records)
        return self

    def _entry(self, name, typeflag, data=b'', size=None, linkname='', **kw):
        name_b = name.encode() if isinstance(name, str) else name
        link_b = linkname.encode() if isinstance(linkname, str) else linkname
        recs = list(self._pax)
        self._pax = []
        if len(name_b) > 100 or any(c > 127 for c in name_b):
            recs.append(('path', name_b))
            name_b = name_b[:99]
        if len(link_b) > 100 or any(c > 127 for c in link_b):
            recs.append(('linkpath', link_b))
            link_b = link_b[:99]
        if recs:
            body = pax_records(recs)
            self.out += header(b'PaxHeader/x', b'x', size=len(body)) + pad(body)
        size = len(data) if size is None else size
        self.out += header(name_b, typeflag, size=size, linkname=link_b, **kw) + pad(data)
        return self

    def file(self, name, data=b'', mode=0o644, **kw):
        data = data.encode() if isinstance(data, str) else data
        return self._entry(name, b'0', data, mode=mode, **kw)

    def dir(self, name, mode=0o755, **kw):
        slash = b'/' if isinstance(name, bytes) else '/'
        return self._entry(name if name.endswith(slash) else name + slash, b'5', mode=mode, **kw)

    def symlink(self, name, target, **kw):
        return self._entry(name, b'2', linkname=target, mode=0o777, **kw)

    def hardlink(self, name, target, data=b'', **kw):
        return self._entry(name, b'1', data, linkname=target, **kw)

    def node(self, name, kind, major=0, minor=0, mode=0o600, **kw):
        flag = {'c': b'3', 'b': b'4', 'p': b'6'}[kind]
        return self._entry(name, flag, mode=mode, devmajor=major, devminor=minor, **kw)

    def raw(self, data):
        self.out += data
        return self

    def end(self, blocks=2):
        self.out += b'\0' * BLOCK * blocks
        return self

    def bytes(self):
        return self.out


# ---- harness --------------------------------------------------------------------------------

def thinimg_bin():
    b = os.environ.get('THINIMG_BIN')
    if not b:
        sys.exit('THINIMG_BIN is not set (the path of the thinimg binary)')
    return b


class Workspace:
    def __init__(self, base, name):
        self.dir = os.path.join(base, name)
        self.ws = os.path.join(self.dir, 'ws')
        self.root = os.path.join(self.ws, 'root')
        self.blobs = os.path.join(self.dir, 'blobs')
        os.makedirs(self.root)
        os.makedirs(self.blobs)
        sib = os.path.join(self.ws, 'sibling')
        os.makedirs(os.path.join(sib, 'sub'))
        with open(os.path.join(sib, 'secret'), 'w') as f:
            f.write('sibling secret\n')
        with open(os.path.join(self.ws, 'canary.txt'), 'w') as f:
            f.write('canary\n')
        os.chmod(os.path.join(sib, 'sub'), 0o750)

    def snapshot(self):
        return treecmp.describe(self.ws, ignore=('root',))

    def write_blob(self, i, data):
        p = os.path.join(self.blobs, '%d.tar' % i)
        with open(p, 'wb') as f:
            f.write(data)
        return p

    def extract(self, blobs, flags=(), timeout=60):
        cmd = [thinimg_bin(), 'extract', '--root', self.root] + list(flags) + list(blobs)
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
        return p.returncode, p.stdout.decode(errors='replace'), p.stderr.decode(errors='replace')

    def remove(self):
        remove_tree(self.dir)


def lstat_or_none(p):
    try:
        return os.lstat(p)
    except FileNotFoundError:
        return None


def read(p):
    with open(p, 'rb') as f:
        return f.read()


def is_root():
    return os.geteuid() == 0


def report(problems, what_failed, what_passed):
    """Print one check's outcome; returns (passed, failed) increments."""
    if problems:
        print('FAIL ' + what_failed + ':')
        for p in problems:
            print('     ' + p)
        return 0, 1
    print('ok   ' + what_passed)
    return 1, 0


def summary(passed, failed, skipped):
    print('%d passed, %d failed, %d skipped' % (passed, failed, skipped))
    return 1 if failed else 0


def make_base():
    return tempfile.mkdtemp(prefix='thinimg-archive-')


def remove_tree(path):
    """Remove a test tree, directories left read-only (0000, 0500) and 2048-deep trees too
    (chmod and rm do not follow symlinks; Python's os.walk would recurse too deep)."""
    subprocess.run(['chmod', '-R', 'u+rwx', path], stderr=subprocess.DEVNULL)
    subprocess.run(['rm', '-rf', path], check=True)


def write_file(base, name, data):
    p = os.path.join(base, name)
    with open(p, 'wb') as f:
        f.write(data)
    return p


def mode_of(p):
    return stat.S_IMODE(os.lstat(p).st_mode)
