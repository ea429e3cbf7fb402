#!/usr/bin/env python3
"""limits.py: every limit option of `thinimg extract` is range-checked when it is parsed.

For each --max-* option: 0, 1, the largest valid value, one more, values that overflow 64
bits or the unit conversion, negative and non-numeric values, and the suffixes. A valid value
must be accepted (a small layer then scans, or is rejected by that limit: exit 0 or 6); an invalid one must exit 2 (bad command
line, docs/cli.md) with a message naming the option and its valid range. Then the limits at
their boundaries on real layers: --max-path 1 and 4095, --max-depth 1 and 2048 (the most
components a 4095-byte name has), --max-entries 1, --max-header-size 512.

Run: THINIMG_BIN=build/thinimg python3 tests/archive/limits.py
"""
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tarlib import (Tar, make_base, remove_tree, report, summary, thinimg_bin,  # noqa: E402
                    write_file)

I64 = 2 ** 63 - 1
BAD_ANY = ['-1', '+1', ' 1', '', 'abc', '0x10', '1.5', '18446744073709551616',
           '99999999999999999999999']
BYTES_OK = ['0', '1', '1K', '1k', '1M', '1G', '1T', str(I64), '8388607T']
BYTES_BAD = BAD_ANY + [str(I64 + 1), '8388608T', '1KB', '1P', '1 K']

# option: (values that must be accepted, values that must be refused, the range in messages)
MATRIX = {
    'max-blob-size': (BYTES_OK, BYTES_BAD, '0 (no limit) or 1 to %d bytes' % I64),
    'max-file-size': (BYTES_OK, BYTES_BAD, '0 (no limit) or 1 to %d bytes' % I64),
    'max-total-size': (BYTES_OK, BYTES_BAD, '0 (no limit) or 1 to %d bytes' % I64),
    'max-header-size': (['0', '512', '1K', '1M', str(I64)],
                        BYTES_BAD + ['1', '511'], '0 (no limit) or 512 to %d bytes' % I64),
    'max-entries': (['0', '1', '1000000', str(I64)], BAD_ANY + [str(I64 + 1), '1K'],
                    '0 (no limit) or 1 to %d entries' % I64),
    'max-path': (['1', '255', '4095'],
                 BAD_ANY + ['0', '4096', '4294967294', '4294967295', '4294967296', '1K'],
                 '1 to 4095 bytes'),
    'max-depth': (['1', '256', '2048'], BAD_ANY + ['0', '2049', '4294967296', '1K'],
                  '1 to 2048 components'),
    'max-ratio': (['0', '1', '100', '4294967295'], BAD_ANY + ['4294967296', '1K'],
                  '0 (no limit) or 1 to 4294967295'),
    # Seconds, Ns, Nms; at most 30 days. 18446744073709552 s overflows ms in 64 bits.
    'max-time': (['0', '1', '1s', '1ms', '2592000', '2592000s', '2592000000ms'],
                 BAD_ANY + ['2592001', '2592000001ms', '18446744073709552', '1m', '1h', '1S'],
                 '0 (no limit) or 1 to 2592000000 ms'),
}


def run(args):
    p = subprocess.run([thinimg_bin(), 'extract'] + args, capture_output=True, timeout=60)
    return p.returncode, p.stderr.decode(errors='replace')


def option_matrix(blob):
    problems = []
    n = 0
    for opt, (good, bad, rng) in MATRIX.items():
        for v in good:
            n += 1
            rc, err = run(['--scan-only', '--' + opt, v, blob])
            # Accepted: the layer scans, or is rejected by that very limit (--max-blob-size 1).
            if rc not in (0, 6) or (rc == 6 and '(rule: ' not in err):
                problems.append('--%s %r: want it accepted, got %d: %s'
                                % (opt, v, rc, err.strip()))
        for v in bad:
            n += 1
            rc, err = run(['--scan-only', '--' + opt, v, blob])
            if rc != 2 or ('--' + opt) not in err:
                problems.append('--%s %r: want exit 2 naming the option, got %d: %s'
                                % (opt, v, rc, err.strip()))
            elif "'%s' is out of range: %s" % (v, rng) not in err and 'is not a' not in err:
                problems.append('--%s %r: message without the range %r: %s'
                                % (opt, v, rng, err.strip()))
    return problems, n


def boundaries(base):
    """(flags, layer, expected exit, rule) on real layers at each limit's edge."""
    name4095 = ('d' * 254 + '/') * 16 + 'f' * 15
    assert len(name4095) == 4095
    deep = 'a/' * 2047 + 'a'  # 4095 bytes, 2048 components
    cases = [
        (['--max-path', '1'], Tar().file('a', 'x'), 0, None),
        (['--max-path', '1'], Tar().file('ab', 'x'), 6, 'path-length'),
        (['--max-path', '4095'], Tar().file(name4095, 'x'), 0, None),
        (['--max-path', '4095'], Tar().file(name4095 + 'g', 'x'), 6, 'path-length'),
        (['--max-depth', '1'], Tar().file('a', 'x'), 0, None),
        (['--max-depth', '1'], Tar().file('a/b', 'x'), 6, 'depth'),
        (['--max-depth', '2048'], Tar().file(deep, 'x'), 0, None),
        (['--max-depth', '2047'], Tar().file(deep, 'x'), 6, 'depth'),
        (['--max-entries', '1'], Tar().file('a', 'x'), 0, None),
        (['--max-entries', '1'], Tar().file('a', 'x').file('b', 'y'), 6, 'entries'),
        (['--max-entries', '0'], Tar().file('a', 'x').file('b', 'y'), 0, None),
        (['--max-header-size', '512'], Tar().file('a', 'x'), 0, None),
        (['--max-header-size', '512'], Tar().file('p' * 150, 'x'), 6, 'header-size'),
        (['--max-file-size', '1'], Tar().file('a', 'xy'), 6, 'file-size'),
        (['--max-total-size', '2'], Tar().file('a', 'x').file('b', 'yz'), 6, 'total-size'),
        (['--max-total-size', '0', '--max-file-size', '0'], Tar().file('a', 'x' * 5000), 0,
         None),
    ]
    problems = []
    for i, (flags, t, want_rc, rule) in enumerate(cases):
        blob = write_file(base, 'edge%d.tar' % i, t.end().bytes())
        for mode in (['--scan-only'], ['--root', os.path.join(base, 'root%d' % i)]):
            rc, err = run(mode + flags + [blob])
            if rc != want_rc or (rule and '(rule: %s)' % rule not in err):
                problems.append('%s %s: want exit %d%s, got %d: %s'
                                % (mode[0], ' '.join(flags), want_rc,
                                   ' (rule: %s)' % rule if rule else '', rc, err.strip()[:300]))
    return problems, len(cases)


def main():
    base = make_base()
    passed = failed = 0
    try:
        blob = write_file(base, 'small.tar', Tar().file('a', 'x').end().bytes())
        problems, n = option_matrix(blob)
        d = report(problems, 'limit options', '%d option values: valid ones accepted, the '
                   'others refused with exit 2 naming the option and its range' % n)
        passed, failed = passed + d[0], failed + d[1]
        problems, n = boundaries(base)
        d = report(problems, 'limits at their boundaries',
                   '%d layers at the limits\' boundaries: scan and apply agree' % n)
        passed, failed = passed + d[0], failed + d[1]
    finally:
        remove_tree(base)
    return summary(passed, failed, 0)


if __name__ == '__main__':
    sys.exit(main())
