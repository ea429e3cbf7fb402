#!/usr/bin/env python3
"""promparse.py: an independent parser and checker of the Prometheus text exposition format
(version 0.0.4), written for the daemon's tests from the format's rules, not from thinimg's
code.

    promparse.py FILE                      check FILE, print "ok: N families, M samples"
    promparse.py FILE --get NAME [K=V ...] print the value of one sample (exit 1 if absent)

Checks: every line is a comment, blank, or a sample `name{labels} value [timestamp]`; names and
label names are valid; label values are quoted with only \\\\, \\" and \\n escapes; values are
floats (+Inf, -Inf, NaN allowed); a family's TYPE comes before its samples and at most once;
HELP at most once; no duplicate sample (same name and labels); counters are not negative;
histogram buckets have an `le` label, are cumulative (non-decreasing in le order), end with
le="+Inf", and +Inf equals _count, with _sum and _count present for every label set.
"""
import math
import re
import sys

NAME = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*$')
LABEL = re.compile(r'[a-zA-Z_][a-zA-Z0-9_]*$')


class FormatError(Exception):
    pass


def parse_value(s, where):
    if s in ('+Inf', 'Inf'):
        return math.inf
    if s == '-Inf':
        return -math.inf
    if s == 'NaN':
        return math.nan
    try:
        return float(s)
    except ValueError:
        raise FormatError(f'{where}: bad value {s!r}')


def parse_labels(text, i, where):
    """text[i] == '{'; returns (labels dict, index after '}')."""
    labels = {}
    i += 1
    while True:
        while i < len(text) and text[i] == ' ':
            i += 1
        if i < len(text) and text[i] == '}':
            return labels, i + 1
        m = re.match(r'[a-zA-Z_][a-zA-Z0-9_]*', text[i:])
        if not m:
            raise FormatError(f'{where}: bad label name at {text[i:]!r}')
        name = m.group(0)
        i += len(name)
        if text[i:i + 2] != '="':
            raise FormatError(f'{where}: expected =" after label {name}')
        i += 2
        val = []
        while True:
            if i >= len(text):
                raise FormatError(f'{where}: unterminated label value')
            c = text[i]
            if c == '\\':
                nxt = text[i + 1:i + 2]
                if nxt == 'n':
                    val.append('\n')
                elif nxt in ('\\', '"'):
                    val.append(nxt)
                else:
                    raise FormatError(f'{where}: bad escape \\{nxt}')
                i += 2
                continue
            if c == '"':
                i += 1
                break
            if c == '\n':
                raise FormatError(f'{where}: newline in label value')
            val.append(c)
            i += 1
        if name in labels:
            raise FormatError(f'{where}: duplicate label {name}')
        labels[name] = ''.join(val)
        if i < len(text) and text[i] == ',':
            i += 1
            continue
        if i < len(text) and text[i] == '}':
            return labels, i + 1
        raise FormatError(f'{where}: expected , or }} after label {name}')


def parse(text):
    """Returns (families {name: {'type','help'}}, samples [(name, labels, value)])."""
    families = {}
    samples = []
    seen = set()
    if text and not text.endswith('\n'):
        raise FormatError('the last line does not end with a newline')
    for n, line in enumerate(text.split('\n')[:-1], 1):
        where = f'line {n}'
        if not line.strip():
            continue
        if line.startswith('#'):
            parts = line.split(None, 3)
            if len(parts) >= 2 and parts[1] in ('HELP', 'TYPE'):
                if len(parts) < 3 or not NAME.match(parts[2]):
                    raise FormatError(f'{where}: bad {parts[1]} line')
                fam = families.setdefault(parts[2], {})
                key = parts[1].lower()
                if key in fam:
                    raise FormatError(f'{where}: second {parts[1]} for {parts[2]}')
                if key == 'type':
                    t = parts[3].strip() if len(parts) > 3 else ''
                    if t not in ('counter', 'gauge', 'histogram', 'summary', 'untyped'):
                        raise FormatError(f'{where}: unknown type {t!r}')
                    if any(s[0] == parts[2] or s[0].startswith(parts[2] + '_') and
                           s[0][len(parts[2]) + 1:] in ('bucket', 'sum', 'count')
                           for s in samples):
                        raise FormatError(f'{where}: TYPE of {parts[2]} after its samples')
                    fam['type'] = t
                else:
                    fam['help'] = parts[3] if len(parts) > 3 else ''
            continue
        m = re.match(r'[a-zA-Z_:][a-zA-Z0-9_:]*', line)
        if not m:
            raise FormatError(f'{where}: bad metric name in {line!r}')
        name = m.group(0)
        i = len(name)
        labels = {}
        if i < len(line) and line[i] == '{':
            labels, i = parse_labels(line, i, where)
        rest = line[i:].split()
        if len(rest) not in (1, 2) or line[i:i + 1] != ' ':
            raise FormatError(f'{where}: expected " value [timestamp]" in {line!r}')
        value = parse_value(rest[0], where)
        if len(rest) == 2 and not re.match(r'-?[0-9]+$', rest[1]):
            raise FormatError(f'{where}: bad timestamp {rest[1]!r}')
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise FormatError(f'{where}: duplicate sample {name}{labels}')
        seen.add(key)
        samples.append((name, labels, value))
    check_types(families, samples)
    return families, samples


def family_of(name, families):
    if name in families:
        return name
    for suffix in ('_bucket', '_sum', '_count'):
        if name.endswith(suffix) and families.get(name[:-len(suffix)], {}).get('type') == 'histogram':
            return name[:-len(suffix)]
    return None


def check_types(families, samples):
    hist = {}
    for name, labels, value in samples:
        fam = family_of(name, families)
        t = families.get(fam, {}).get('type', 'untyped') if fam else 'untyped'
        if t == 'counter' and value < 0:
            raise FormatError(f'counter {name} is negative')
        if t == 'histogram':
            base = dict(labels)
            le = base.pop('le', None)
            key = (fam, tuple(sorted(base.items())))
            h = hist.setdefault(key, {'buckets': [], 'sum': None, 'count': None})
            if name.endswith('_bucket'):
                if le is None:
                    raise FormatError(f'{name}: bucket without le')
                h['buckets'].append((parse_value(le, name), value))
            elif name.endswith('_sum'):
                h['sum'] = value
            elif name.endswith('_count'):
                h['count'] = value
            else:
                raise FormatError(f'{name}: a histogram has only _bucket, _sum and _count')
    for (fam, labels), h in hist.items():
        b = h['buckets']
        if not b or b[-1][0] != math.inf:
            raise FormatError(f'histogram {fam}{dict(labels)}: no le="+Inf" bucket last')
        if [x[0] for x in b] != sorted(x[0] for x in b):
            raise FormatError(f'histogram {fam}{dict(labels)}: buckets out of order')
        counts = [x[1] for x in b]
        if counts != sorted(counts):
            raise FormatError(f'histogram {fam}{dict(labels)}: buckets not cumulative')
        if h['count'] is None or h['sum'] is None:
            raise FormatError(f'histogram {fam}{dict(labels)}: _sum or _count missing')
        if h['count'] != counts[-1]:
            raise FormatError(f'histogram {fam}{dict(labels)}: +Inf bucket != _count')


def main():
    text = open(sys.argv[1]).read()
    try:
        families, samples = parse(text)
    except FormatError as e:
        print(f'FORMAT ERROR: {e}', file=sys.stderr)
        return 2
    if len(sys.argv) > 2 and sys.argv[2] == '--get':
        name = sys.argv[3]
        want = dict(kv.split('=', 1) for kv in sys.argv[4:])
        for n, labels, value in samples:
            if n == name and labels == want:
                print(int(value) if value == int(value) else value)
                return 0
        return 1
    print(f'ok: {len(families)} families, {len(samples)} samples')
    return 0


if __name__ == '__main__':
    sys.exit(main())
