#!/usr/bin/env python3
"""table.py: one table of wrong uses, each with the exit code, the words and the API status an
operator gets (docs/cli.md "Exit codes").

Every row names the error *kind* it expects. The exit code and the API status a kind stands for
are read from docs/cli.md's exit-code table, so a row checks the code and the docs at once:
if either drifts, the row fails. Rows run through the CLI on its own, through a running
`thinimg daemon` (API status and reason, and the CLI forwarding to it), and the run rows also
check the kind stored with the run (`runs show --json` .error_kind): the same failure, the same
kind, everywhere.

Host only: no device-mapper here (the "no dm" rows rely on that; rows that need a pool are in
the VM suite). Needs root (runuser to nobody, tmpfs remounted read-only); exit 77 without it.

usage: table.py BUILD_DIR
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.environ['THINIMG_BUILD_DIR'])
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(BUILD, 'thinimg')
EX = os.path.join(BUILD, 'example')
# A short busy timeout (the default is 10 s) so the busy rows take a second each.
BUSY_MS = 1000
UNKNOWN_RUN = '01M8B4VSDE9A4YVTS5RV4DSWE0'
# A dir: source whose only layer is not an archive (made in main()).
BAD = None

failures = []
rows_run = []  # (name, kind, exit code)


def fail(msg):
    failures.append(msg)
    print('FAIL: ' + msg, flush=True)


# ---- docs/cli.md: the exit-code table ---------------------------------------------------------
def exit_table():
    """kind -> (exit code, API status) from the table under '## Exit codes'."""
    text = open(os.path.join(SRC, 'docs', 'cli.md')).read()
    sec = text.split('## Exit codes', 1)[1].split('\n## ', 1)[0]
    kinds, codes = {}, set()
    for line in sec.splitlines():
        m = re.match(r'\|\s*(\d+)\s*\|([^|]*)\|', line)
        if not m:
            continue
        code = int(m.group(1))
        codes.add(code)
        for kind, status in re.findall(r'([a-z_]+) \((\d{3})\)', m.group(2)):
            kinds[kind] = (code, int(status))
    return kinds, codes


KINDS, DOC_CODES = exit_table()
assert KINDS, 'no kinds parsed from docs/cli.md'


def daemon_table_agrees():
    """docs/daemon.md's reason table says the same status and exit code as docs/cli.md."""
    text = open(os.path.join(SRC, 'docs', 'daemon.md')).read()
    seen = set()
    for m in re.finditer(r'^\| `([a-z_]+)` \| (\d{3}) \|.*\| (\d+) \|$', text, re.M):
        kind, status, code = m.group(1), int(m.group(2)), int(m.group(3))
        seen.add(kind)
        if kind in KINDS and KINDS[kind] != (code, status):
            fail('docs/daemon.md gives %s status %d exit %d, docs/cli.md %s' %
                 (kind, status, code, KINDS[kind]))
    if set(KINDS) - seen:
        fail('docs/daemon.md has no reason row for %s' % sorted(set(KINDS) - seen))
    if not [f for f in failures if f.startswith('docs/daemon.md')]:
        print('ok: docs/daemon.md reasons agree with docs/cli.md (%d kinds)' % len(KINDS))


# ---- helpers ----------------------------------------------------------------------------------
W = tempfile.mkdtemp(prefix='thinimg-errors-')
os.chmod(W, 0o755)  # nobody walks into it
BASE_ENV = dict(os.environ)
for k in ('THINIMG_STATE_DIR', 'THINIMG_DB', 'THINIMG_SOURCE', 'THINIMG_SOCKET',
          'AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_S3', 'AWS_PROFILE'):
    BASE_ENV.pop(k, None)
BASE_ENV.update({'THINIMG_DB_BUSY_TIMEOUT_MS': str(BUSY_MS), 'AWS_ACCESS_KEY_ID': 'S3RVER',
                 'AWS_SECRET_ACCESS_KEY': 'S3RVER', 'AWS_REGION': 'us-east-1',
                 'THINIMG_SOURCE_RETRY_ATTEMPTS': '1', 'THINIMG_SOURCE_RETRY_INITIAL_MS': '50'})
children = []


def state(name):
    return os.path.join(W, name)


def thinimg(st, args, env=None, user=None, timeout=60):
    """Run thinimg with --state-dir st; (exit code, stdout, stderr without log lines)."""
    cmd = [BIN] + (['--state-dir', st] if st else []) + args
    if user:
        cmd = ['runuser', '-u', user, '--'] + cmd
    e = dict(BASE_ENV, **(env or {}))
    p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout)
    err = '\n'.join(l for l in p.stderr.splitlines() if not l.startswith('time='))
    return p.returncode, p.stdout, err


def must(st, args, **kw):
    rc, out, err = thinimg(st, args, **kw)
    if rc != 0:
        raise SystemExit('setup: thinimg %s: exit %d: %s' % (' '.join(args), rc, err))
    return out


def seed_images(st):
    """An image without an activation (demo:1) and one with (used:1), as rows: the pool that
    process-image would need is not on this host."""
    c = sqlite3.connect(os.path.join(st, 'thinimg.db'))
    c.executescript("""
      INSERT INTO images(id, ref, name, state, n_layers, created_at_ms, updated_at_ms,
                         last_used_ms) VALUES (1001, 'dir:/seed/demo/1.tar', 'demo:1', 'ready', 0,
                         1, 1, 1), (1002, 'dir:/seed/used/1.tar', 'used:1', 'ready', 1, 1, 1, 1);
      INSERT INTO layers(chain_id, digest, depth, state, created_at_ms, updated_at_ms)
        VALUES ('sha256:5eed', 'sha256:5eed', 1, 'ready', 1, 1);
      INSERT INTO activations(name, image_id, chain_id, state, created_at_ms, updated_at_ms)
        VALUES ('act1', 1002, 'sha256:5eed', 'inactive', 1, 1);
    """)
    c.commit()
    c.close()


def fresh_state(name, seed=False):
    st = state(name)
    must(st, ['fetch', 'dir:%s/images/busybox/' % EX])
    if seed:
        seed_images(st)
    return st


class Holder:
    """Another process holding the database's write lock (BEGIN EXCLUSIVE) until stopped."""

    def __init__(self, db):
        code = ('import sqlite3, sys, time\n'
                'c = sqlite3.connect(sys.argv[1], isolation_level=None)\n'
                'c.execute("BEGIN EXCLUSIVE")\n'
                'print("locked", flush=True)\n'
                'sys.stdin.read()\n')
        self.p = subprocess.Popen([sys.executable, '-c', code, db], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        children.append(self.p)
        if self.p.stdout.readline().strip() != 'locked':
            raise SystemExit('setup: the lock holder did not lock %s' % db)

    def stop(self):
        self.p.stdin.close()
        self.p.wait(timeout=30)


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__('localhost', timeout=120)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(self.path)


class Daemon:
    def __init__(self, st):
        self.st = st
        self.sock = os.path.join(st, 'thinimg.sock')
        self.log = open(os.path.join(W, 'daemon-%s.log' % os.path.basename(st)), 'w')
        self.p = subprocess.Popen([BIN, '--state-dir', st, 'daemon'], stdout=self.log,
                                  stderr=subprocess.STDOUT, env=BASE_ENV)
        children.append(self.p)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise SystemExit('setup: the daemon exited at start (%s)' % self.log.name)
            try:
                if self.api('GET', '/v1/version')[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit('setup: the daemon did not answer on %s' % self.sock)

    def api(self, method, path, body=None):
        c = UnixHTTP(self.sock)
        data = json.dumps(body) if body is not None else None
        c.request(method, path, body=data, headers={'Content-Type': 'application/json'})
        r = c.getresponse()
        raw = r.read()
        c.close()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, {}

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=60)


# ---- the checks -------------------------------------------------------------------------------
def check(name, kind, rc, err, phrases, once=None):
    rows_run.append((name, kind, rc))
    want = KINDS[kind][0] if kind != 'ok' else 0
    if rc != want:
        fail('%s: exit %d, docs/cli.md gives %d for kind %s; stderr: %s' % (name, rc, want, kind,
                                                                                err[-500:]))
    for p in phrases:
        if p not in err:
            fail('%s: %r not in the message: %s' % (name, p, err[-500:]))
    if once and err.count(once) != 1:
        fail('%s: %r said %d times, not once: %s' % (name, once, err.count(once), err))
    if not [f for f in failures if f.startswith(name + ':')]:
        print('ok: %-58s exit %-3d %s' % (name, rc, kind), flush=True)


def row(name, kind, st, args, phrases, env=None, user=None, once=None):
    rc, _, err = thinimg(st, args, env=env, user=user)
    check(name, kind, rc, err, phrases, once)
    return err


def api_row(name, kind, d, method, path, body, phrase):
    status, j = d.api(method, path, body)
    rows_run.append((name, kind, None))
    want = KINDS[kind][1]
    bad = []
    if status != want:
        bad.append('status %d, docs/cli.md gives %d for kind %s' % (status, want, kind))
    if j.get('reason') != kind:
        bad.append('reason %r, not %r' % (j.get('reason'), kind))
    for p in [phrase] if isinstance(phrase, str) else phrase:
        if p not in j.get('error', ''):
            bad.append('%r not in %s' % (p, json.dumps(j)[:600]))
    for b in bad:
        fail('%s: %s' % (name, b))
    if not bad:
        print('ok: %-58s HTTP %d %s' % (name, status, kind), flush=True)
    return j


def run_kind(name, st, run, kind):
    """The kind stored with the run, as runs show --json reports it."""
    rc, out, err = thinimg(st, ['runs', 'show', run, '--json'])
    got = json.loads(out).get('run', {}).get('error_kind') if rc == 0 and out else None
    if got is None and rc == 0 and out:
        got = json.loads(out).get('error_kind')
    if got != kind:
        fail('%s: runs show %s --json: error_kind %r, expected %r (exit %d %s)' %
             (name, run, got, kind, rc, err[-300:]))
    else:
        print('ok: %-58s error_kind %s' % (name + ' (runs show)', kind), flush=True)


# What deciding a kind from a message's words looks like: a search of a message (msg, e->msg,
# err_str(...), a run's last_error, ...) for a literal phrase, or the old reject prefix. Matching
# kernel log lines against pattern tables (guard/health.c) is not this: the kernel gives text only.
TEXT_CLASSIFY = [
    re.compile(r'\b(strstr|strcasestr|strncmp|strncasecmp|memmem)\([^;]*'
               r'(\bmsg\b|message|err_str\(|->msg|\.msg\b|last_error|\berror\b)[^;]*"'),
    re.compile(r'FETCH_REJECTED_PREFIX|fetch_error_is_rejection'),
]
# Lines of the mechanism the issue removed: the patterns must catch them (a grep that cannot
# fail proves nothing).
OLD_CODE = ['if (strstr(msg, "not found") || strstr(msg, "(404)"))',
            'else if (strstr(err_str(&e), "denied"))',
            'if (strncmp(r->last_error, FETCH_REJECTED_PREFIX, n) == 0)',
            'return strstr(run->error, "rejected") ? ERR_KIND_REJECTED : k;']


def no_text_classification():
    """No code decides a kind (an exit code, a status) from the words of a message."""
    for line in OLD_CODE:
        if not any(x.search(line) for x in TEXT_CLASSIFY):
            fail('the text-classification grep misses: ' + line)
    hits = []
    for root, _, files in os.walk(os.path.join(SRC, 'src')):
        for f in files:
            if not f.endswith(('.c', '.h')):
                continue
            p = os.path.join(root, f)
            for i, line in enumerate(open(p, errors='replace'), 1):
                if any(x.search(line) for x in TEXT_CLASSIFY):
                    hits.append('%s:%d: %s' % (os.path.relpath(p, SRC), i, line.strip()))
    if hits:
        fail('code classifies errors by their text:\n  ' + '\n  '.join(hits))
    else:
        print('ok: no error kind is derived from message text (grep of src/)', flush=True)


# ---- the table --------------------------------------------------------------------------------
def host_rows(s3ep):
    st = state('empty')
    row('unknown command', 'invalid', st, ['frobnicate'], ["unknown command 'frobnicate'"])
    row('bad option, said once', 'invalid', st, ['list-images', '--bogus'],
        ["unrecognized option '--bogus'"], once="'--bogus'")
    row('missing argument', 'invalid', st, ['fetch'], ['expected REF'])
    row('bad REF', 'invalid', st, ['fetch', ':bad:'], ["':bad:' is not a full location"])
    row('bad log level', 'invalid', None, ['--log-level', 'bogus', 'list-images'],
        ["unknown log level 'bogus'"])
    row('limit out of range: fetch --jobs 0', 'invalid', st, ['fetch', '--jobs', '0', 'dir:/x'],
        ['--jobs needs a number from 1 to'])
    row('limit out of range: gc --history-days -1', 'invalid', st,
        ['gc', '--history-days', '-1'], ['--history-days needs whole days'])
    row('limit out of range: daemon --gc-high-water 150', 'invalid', st,
        ['daemon', '--gc-high-water', '150'], ['--gc-high-water needs a percentage'])
    row('exclusive options: gc --dry-run --force', 'invalid', st, ['gc', '--dry-run', '--force'],
        ['exclude each other'])
    row('--json on a command without it: deactivate --json', 'invalid', st,
        ['deactivate', '--json', 'x'], ["unrecognized option '--json'"], once="'--json'")
    row('runs show: not a run version', 'invalid', st, ['runs', 'show', 'nope'],
        ["'nope' is not a run version"])
    nosuch = 'dir:%s/images/nosuch/' % EX
    row('dir: family that does not exist (fetch)', 'not_found', st, ['fetch', nosuch],
        ['%s/images/nosuch' % EX, 'no such folder'])
    row('dir: family that does not exist (ls)', 'not_found', st, ['ls', nosuch],
        ['%s/images/nosuch' % EX])
    row('dir: key that does not exist', 'not_found', st,
        ['fetch', 'dir:%s/images/busybox/9.tar' % EX], ['busybox/9.tar', 'are missing'])
    row('dir: prefix holding several images', 'invalid', st, ['fetch', 'dir:%s/images/' % EX],
        ['holds 2 images', 'name one of them'])
    row('dir: a layer that is not an archive (fetch)', 'rejected', st, ['fetch', BAD],
        ['1.tar is not an image layer'])
    row('a layer that is not an archive (extract)', 'rejected', st,
        ['extract', '--root', state('extract-root'), os.path.join(BAD[4:], '1.tar')],
        ['not an image layer'])
    if s3ep:
        ep = ['--endpoint', s3ep]
        row('s3: family that does not exist (fetch)', 'not_found', st,
            ep + ['fetch', 's3://bucket1/images/nosuch/'], ['s3://bucket1/images/nosuch/'])
        row('s3: family that does not exist (ls)', 'not_found', st,
            ep + ['ls', 's3://bucket1/images/nosuch/'], ['nothing under s3://bucket1/images/nosuch/'])
        row('s3: bucket that does not exist', 'not_found', st,
            ep + ['ls', 's3://nobucket1/images/'], ['no such bucket'])
        row('s3: key that does not exist', 'not_found', st,
            ep + ['fetch', 's3://bucket1/images/busybox/9.tar'], ['s3://bucket1/images/busybox/9.tar'])
        row('s3: prefix holding several images', 'invalid', st,
            ep + ['fetch', 's3://bucket1/images/'], ['holds 2 images'])
        row('s3: bad --endpoint (connection refused)', 'transient', st,
            ['--endpoint', 'http://127.0.0.1:1', 'fetch', 's3://bucket1/images/busybox/'],
            ['Couldn\'t connect', '--endpoint', 'AWS_ENDPOINT_URL'])
    row('runs show: unknown run, no database', 'not_found', state('nodb'),
        ['runs', 'show', UNKNOWN_RUN], ['no database at'])
    row('process-image without device-mapper', 'unhealthy', st,
        ['process-image', 'dir:%s/images/busybox/' % EX], ['device-mapper'])
    row('status without device-mapper', 'unhealthy', st, ['status'], [])
    row('activate without device-mapper', 'unhealthy', st, ['activate', 'nosuch:1'],
        ['device-mapper'])

    # Users and permissions.
    nb = state('nobody')
    os.makedirs(nb)
    shutil.chown(nb, 'nobody')
    row('non-root user, own state dir: process-image', 'permission', os.path.join(nb, 'st'),
        ['process-image', 'dir:%s/images/busybox/' % EX], ['needs root (CAP_SYS_ADMIN)'],
        user='nobody')
    root_st = fresh_state('rootowned')
    row('non-root user, state dir owned by root: fetch', 'permission', root_st,
        ['fetch', 'dir:%s/images/busybox/' % EX], ['exists but is not writable by this user'],
        user='nobody')
    row('non-root user, unreadable database: list-images', 'permission', root_st,
        ['list-images'], ['cannot read the database', 'thinimg.db'], user='nobody')
    row('non-root user, unreadable database: gc --dry-run', 'permission', root_st,
        ['gc', '--dry-run'], ['cannot read the database'], user='nobody')
    os.chmod(root_st, 0o755)
    os.chmod(os.path.join(root_st, 'thinimg.db'), 0o644)  # readable; its -shm cannot be made
    row('non-root user, readable database in a closed dir: list-images', 'permission',
        root_st, ['list-images'], ['thinimg.db', 'thinimg runs as root'], user='nobody')

    # A corrupt database: random bytes, and a valid one with a page overwritten.
    cst = fresh_state('corrupt1')
    with open(os.path.join(cst, 'thinimg.db'), 'wb') as f:
        f.write(os.urandom(64 * 1024))
    for args in (['list-images'], ['gc', '--dry-run'], ['runs'], ['status'],
                 ['fetch', 'dir:%s/images/busybox/' % EX]):
        row('corrupt database (random bytes): ' + args[0], 'corrupt', cst, args,
            ['database is corrupt: %s/thinimg.db' % cst, 'restore it from a backup'])
    cst2 = fresh_state('corrupt2')
    with open(os.path.join(cst2, 'thinimg.db'), 'r+b') as f:
        f.seek(4096 * 2)  # page 3: a table's root
        f.write(b'\xa5' * 4096)
    for args in (['list-images'], ['fetch', 'dir:%s/images/busybox/' % EX]):
        row('corrupt database (page overwritten): ' + args[0], 'corrupt', cst2, args,
            ['database is corrupt: %s/thinimg.db' % cst2, 'move it away'])
    row('daemon on a corrupt database', 'corrupt', cst2, ['daemon'], ['database is corrupt'])

    # A database write-locked by another process.
    bst = fresh_state('busy')
    h = Holder(os.path.join(bst, 'thinimg.db'))
    t0 = time.monotonic()
    row('busy database: fetch', 'busy', bst, ['fetch', 'dir:%s/images/busybox/' % EX],
        ['database is busy: %s/thinimg.db' % bst, 'write-locked by pid %d' % h.p.pid])
    secs = time.monotonic() - t0
    if secs > BUSY_MS / 1000 * 3 + 5:
        fail('busy database: fetch took %.1f s with a %d ms busy timeout' % (secs, BUSY_MS))
    row('busy database: gc --force --blobs', 'busy', bst, ['gc', '--force', '--blobs'],
        ['database is busy', 'write-locked by pid %d' % h.p.pid])
    if len(os.listdir(os.path.join(bst, 'blobs', 'sha256'))) != 3:
        fail('busy database: gc deleted blob files whose records it could not delete')
    row('busy database: readers still read (list-images)', 'ok', bst, ['list-images'], [])
    h.stop()

    # A state directory on a read-only file system.
    ro = state('ro')
    os.makedirs(ro)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=32m', 'tmpfs', ro], check=True)
    try:
        must(ro, ['fetch', 'dir:%s/images/busybox/' % EX])
        subprocess.run(['mount', '-o', 'remount,ro', ro], check=True)
        for args in (['fetch', 'dir:%s/images/busybox/' % EX], ['gc', '--force'],
                     ['process-image', 'dir:%s/images/busybox/' % EX]):
            row('read-only state dir: ' + args[0], 'read_only', ro, args,
                ['read-only file system', ro])
        row('read-only state dir: readers still read (list-images)', 'ok', ro, ['list-images'],
            [])
    finally:
        subprocess.run(['umount', ro])


def same_failure(d, st, name, kind, ref, phrase):
    """One failing process-image through the API, in its run's record and through the CLI
    forwarding to the daemon: the same kind (and so the code the docs give it) each time."""
    j = api_row('API ' + name, kind, d, 'POST', '/v1/process-image?wait=60', {'ref': ref}, phrase)
    if not j.get('run'):
        fail('API %s: no run in the answer: %s' % (name, j))
        return None
    run_kind('API ' + name, st, j['run'], kind)
    row('CLI (via daemon) ' + name, kind, st, ['process-image', ref], [phrase])
    return j['run']


def daemon_rows():
    st = fresh_state('daemon', seed=True)
    d = Daemon(st)
    try:
        nosuch = 'dir:%s/images/nosuch/' % EX
        same_failure(d, st, 'process-image of a family that does not exist', 'not_found',
                     nosuch, 'nosuch')
        run = same_failure(d, st, 'process-image without device-mapper', 'unhealthy',
                           'dir:%s/images/busybox/' % EX, 'unpack failed')
        if run:
            row('runs cancel of a finished run', 'busy', st, ['runs', 'cancel', run],
                ['finished'])
            api_row('API cancel of a finished run', 'busy', d, 'POST', '/v1/runs/%s/cancel' % run,
                    None, 'finished')
        same_failure(d, st, 'process-image of a layer that is not an archive', 'rejected', BAD,
                     'not an image layer')
        api_row('API activate of an unknown image', 'not_found', d, 'POST', '/v1/activations',
                {'image': 'nosuch:1'}, "no image 'nosuch:1'")
        row('CLI (via daemon) activate of an unknown image', 'not_found', st,
            ['activate', 'nosuch:1'], ["no image 'nosuch:1'"])
        api_row('API delete of an image with activations', 'busy', d, 'DELETE',
                '/v1/images/used:1', None, 'still has activations')
        row('CLI (via daemon) remove --image with activations', 'busy', st,
            ['remove', '--image', 'used:1'], ['still has activations'])
        api_row('API runs show of an unknown run', 'not_found', d, 'GET',
                '/v1/runs/' + UNKNOWN_RUN, None, 'no run ' + UNKNOWN_RUN)
        row('runs show of an unknown run', 'not_found', st, ['runs', 'show', UNKNOWN_RUN],
            ['no run ' + UNKNOWN_RUN])
        api_row('API runs show: not a run version', 'invalid', d, 'GET', '/v1/runs/nope', None,
                'is not a run version')
        # gc goes through the daemon (POST /v1/gc): its refusals are the API's.
        api_row('API gc: force is not a boolean', 'invalid', d, 'POST', '/v1/gc',
                {'force': 'yes'}, 'must be true or false')
        row('fetch while the daemon holds the state dir', 'busy', st,
            ['fetch', 'dir:%s/images/busybox/' % EX], ['locked by pid %d' % d.p.pid])
        # Another process holds the database's write lock: busy, never "still has activations".
        h = Holder(os.path.join(st, 'thinimg.db'))
        try:
            said = ['database is busy: %s/thinimg.db' % st, 'write-locked by pid %d' % h.p.pid]
            api_row('API delete of an image, database write-locked', 'busy', d, 'DELETE',
                    '/v1/images/demo:1', None, said)
            row('CLI (via daemon) remove --image, database write-locked', 'busy', st,
                ['remove', '--image', 'demo:1'], said)
        finally:
            h.stop()
        api_row('API delete of an image with activations, after the lock', 'busy', d, 'DELETE',
                '/v1/images/used:1', None, 'still has activations')
    finally:
        d.stop()


def start_s3():
    harness = os.path.join(SRC, 'tests', 's3', 'harness.js')
    if not shutil.which('node') or not os.path.isdir(os.path.join(SRC, 'tests', 's3',
                                                                  'node_modules')):
        fail('no S3 server (node and tests/s3/node_modules: scripts/install-deps.sh)')
        return None
    p = subprocess.Popen(['node', harness, '--dir', os.path.join(W, 's3'), '--bucket',
                          'bucket1', '--seed', 'bucket1=' + EX], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    children.append(p)
    ports = json.loads(p.stdout.readline())
    return 'http://127.0.0.1:%d' % ports['s3']


def main():
    if os.geteuid() != 0:
        print('skipped: needs root (runuser, mount)')
        return 77
    if not os.path.exists(os.path.join(EX, 'images', 'busybox', '3.tar')):
        print('FAIL: no example source in %s (build the example target)' % EX)
        return 1
    global BAD
    bad = os.path.join(W, 'src', 'bad')
    os.makedirs(bad)
    with open(os.path.join(bad, '1.tar'), 'wb') as f:
        f.write(os.urandom(20000))
    BAD = 'dir:%s/' % bad
    t0 = time.monotonic()
    try:
        no_text_classification()
        daemon_table_agrees()
        host_rows(start_s3())
        daemon_rows()
    finally:
        for p in children:
            if p.poll() is None:
                p.kill()
                p.wait()
    # Every code the docs list (but success and Ctrl-C, which api.sh covers) is produced by a row
    # whose kind the docs give it: the docs cannot promise a code nothing produces.
    produced = {rc for _, _, rc in rows_run if rc is not None}
    missing = sorted(DOC_CODES - produced - {0, 130})
    if missing:
        fail('docs/cli.md documents exit codes no row produced: %s' % missing)
    kinds = {k for _, k, _ in rows_run}
    print('%d rows (%d with the API), kinds %s, %.1f s' %
          (len(rows_run), sum(1 for r in rows_run if r[2] is None), ','.join(sorted(kinds)),
           time.monotonic() - t0))
    if failures:
        print('%d failures' % len(failures))
        return 1
    shutil.rmtree(W, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
