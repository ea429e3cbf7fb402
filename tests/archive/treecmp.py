#!/usr/bin/env python3
"""treecmp.py: describe a directory tree entry by entry, and compare two trees.

An entry is described by: type, permission bits (incl. setuid/setgid/sticky), owner, size,
content hash, link target, device numbers, xattrs, mtime (ns) and its hardlink group (the
sorted list of paths sharing its inode). Used by the archive tests to compare thinimg's
extraction with a reference (the generator's expected tree, or GNU tar's extraction).

As a program: treecmp.py A B [--no-dir-mtime] [--ignore PATH...] exits 1 and lists the
differences when the trees differ.
"""
import hashlib
import os
import stat
import sys


def describe(root, dir_mtime=True, ignore=()):
    """Return {relpath: dict} for every entry below root (root itself is '.')."""
    out = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        names = dirnames + filenames
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == '.':
            entries = [('.', dirpath)]
        else:
            entries = []
        for n in names:
            rel = n if rel_dir == '.' else rel_dir + '/' + n
            entries.append((rel, os.path.join(dirpath, n)))
        for rel, full in entries:
            if rel in ignore or any(rel.startswith(i + '/') for i in ignore):
                continue
            st = os.lstat(full)
            d = {
                'type': stat.S_IFMT(st.st_mode),
                'mode': oct(stat.S_IMODE(st.st_mode)),
                'uid': st.st_uid,
                'gid': st.st_gid,
            }
            if stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(full, 'rb') as f:
                    for chunk in iter(lambda: f.read(1 << 20), b''):
                        h.update(chunk)
                d['size'] = st.st_size
                d['sha256'] = h.hexdigest()
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
                d['_ino'] = (st.st_dev, st.st_ino)
            elif stat.S_ISLNK(st.st_mode):
                d['link'] = os.readlink(full)
                del d['mode']  # symlink modes are always 0777 on Linux
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                d['rdev'] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if not stat.S_ISDIR(st.st_mode) or dir_mtime:
                d['mtime'] = st.st_mtime_ns
            try:
                names_x = sorted(os.listxattr(full, follow_symlinks=False))
                d['xattrs'] = {x: os.getxattr(full, x, follow_symlinks=False).hex()
                               for x in names_x}
            except OSError:
                d['xattrs'] = {}
            out[rel] = d
    for rel, d in out.items():
        ino = d.pop('_ino', None)
        if ino is not None and len(inodes[ino]) > 1:
            d['links'] = sorted(inodes[ino])
    return out


def diff(a, b, limit=40):
    """Human-readable differences between two descriptions (empty list when equal)."""
    msgs = []
    for k in sorted(set(a) | set(b)):
        if k not in a:
            msgs.append('only in second: %s %r' % (k, b[k]))
        elif k not in b:
            msgs.append('only in first: %s %r' % (k, a[k]))
        elif a[k] != b[k]:
            keys = sorted(set(a[k]) | set(b[k]))
            d = {x: (a[k].get(x), b[k].get(x)) for x in keys if a[k].get(x) != b[k].get(x)}
            msgs.append('differs: %s %r' % (k, d))
        if len(msgs) >= limit:
            msgs.append('...')
            break
    return msgs


def main():
    args = sys.argv[1:]
    dir_mtime = '--no-dir-mtime' not in args
    ignore = []
    pos = []
    i = 0
    while i < len(args):
        if args[i] == '--no-dir-mtime':
            pass
        elif args[i] == '--ignore':
            i += 1
            ignore.append(args[i])
        else:
            pos.append(args[i])
        i += 1
    a = describe(pos[0], dir_mtime, ignore)
    b = describe(pos[1], dir_mtime, ignore)
    msgs = diff(a, b)
    for m in msgs:
        print(m)
    print('%d entries compared, %d differences' % (len(a), len(msgs)))
    return 1 if msgs else 0


if __name__ == '__main__':
    sys.exit(main())
