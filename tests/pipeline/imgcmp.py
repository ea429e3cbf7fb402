#!/usr/bin/env python3
"""imgcmp.py: compare two views of the same image's root file system, entry by entry.

A side is a directory tree (an overlay merged view, a mounted dm-thin activation, a reference
unpack) or a description of one written earlier by `describe` (JSON), so that a tree built in
one place (the host) can be compared with one that exists only in another (the test VM).

Every entry is compared on: type, permission bits (with setuid, setgid, sticky), uid/gid, size,
sha256 of the content, symlink target, device numbers, xattrs, the hardlink group (the sorted
paths sharing its inode within the tree) and the mtime in ns (tests/archive/treecmp.py's
description). Every difference is printed; exit 1 on any.

What a side cannot have is left out of the comparison, each for a stated reason (printed):
  - xattrs `trusted.overlay.*`: overlayfs's own bookkeeping (opaque, origin, redirect,
    impure...), written by the kernel in the layer directories, never part of an image;
  - paths given with --ignore PATH=REASON, and the mtimes of those given with
    --no-mtime PATH=REASON or in --no-mtime-from FILE ({"path": "reason"}): e.g. lost+found,
    which mkfs.ext4 makes in a dm-thin layer's root, or a directory whose entries a layer
    changes without listing it (no side has an image time for it).

  imgcmp.py describe TREE OUT.json
  imgcmp.py compare A B [--ignore PATH=REASON] [--no-mtime PATH=REASON] [--no-mtime-from FILE]
                                                     A, B: a tree or a .json description
"""
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'archive'))
import treecmp  # noqa: E402

OVERLAY_XATTR_PREFIX = 'trusted.overlay.'
RULE_XATTRS = 'xattrs trusted.overlay.* left out: overlayfs bookkeeping, not image content'


def describe(tree):
    """The description of tree, normalised as JSON stores it (tuples become lists)."""
    d = treecmp.describe(tree)
    for e in d.values():
        e['xattrs'] = {k: v for k, v in e.get('xattrs', {}).items()
                       if not k.startswith(OVERLAY_XATTR_PREFIX)}
    return json.loads(json.dumps(d))


def load(side):
    """A description from a tree or from a .json file written by describe."""
    if os.path.isdir(side):
        return describe(side)
    with open(side) as f:
        return json.load(f)


def under(path, paths):
    return any(path == p or path.startswith(p + '/') for p in paths)


def leave_out(d, ignore, no_mtime):
    out = {}
    for k, v in d.items():
        if under(k, ignore):
            continue
        if k in no_mtime:
            v = {x: y for x, y in v.items() if x != 'mtime'}
        out[k] = v
    return out


def parse_args(args):
    """The options; returns (ignore paths, no-mtime paths, the rules to print, the rest)."""
    ignore, no_mtime, rules, rest = [], {}, [RULE_XATTRS], []
    it = iter(args)
    for a in it:
        if a in ('--ignore', '--no-mtime'):
            spec = next(it, None)
            if spec is None or '=' not in spec:
                sys.exit('imgcmp.py: %s takes PATH=REASON' % a)
            path, why = spec.split('=', 1)
            if a == '--ignore':
                ignore.append(path)
                rules.append('%s left out: %s' % (path, why))
            else:
                no_mtime[path] = why
        elif a == '--no-mtime-from':
            with open(next(it)) as f:
                no_mtime.update(json.load(f))
        else:
            rest.append(a)
    for path, why in sorted(no_mtime.items()):
        rules.append('mtime of %s left out: %s' % (path, why))
    return ignore, no_mtime, rules, rest


def main(argv):
    ignore, no_mtime, rules, rest = parse_args(argv)
    if len(rest) == 3 and rest[0] == 'describe':
        d = describe(rest[1])
        tmp = rest[2] + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(d, f, sort_keys=True)
        os.rename(tmp, rest[2])
        print('%s: %d entries described' % (rest[1], len(d)))
        return 0
    if len(rest) != 3 or rest[0] != 'compare':
        sys.exit(__doc__.split('\n\n')[-1])
    for r in rules:
        print('imgcmp: ' + r)
    a = leave_out(load(rest[1]), ignore, no_mtime)
    b = leave_out(load(rest[2]), ignore, no_mtime)
    msgs = treecmp.diff(a, b, limit=len(a) + len(b) + 1)
    for m in msgs:
        print(m)
    print('imgcmp: %s (%d entries) vs %s (%d entries): %d differences'
          % (rest[1], len(a), rest[2], len(b), len(msgs)))
    return 1 if msgs else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
