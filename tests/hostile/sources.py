#!/usr/bin/env python3
"""sources.py: thinimg's sources against hostile servers and folders (issue 12).

Runs the thinimg binary ($THINIMG_BIN) against tests/hostile/server.py (HTTP and S3
flavours, 127.0.0.1 only, stops by itself) and against dir: folders holding FIFOs. Every
case asserts the exit code, a key phrase of the message, what landed in STATE/blobs (the
right version or nothing, never a mix), a time bound and the peak RSS of the thinimg child
(getrusage via os.wait4; printed, and bounded by RSS_MAX_MB).

Source timeouts are shortened through the environment (THINIMG_SOURCE_*, see
docs/sources.md) so that the cases run in seconds.

Run: THINIMG_BIN=build/thinimg python3 tests/hostile/sources.py [CASE...]
"""
import base64
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import server as hostile  # noqa: E402

BIN = os.environ.get('THINIMG_BIN') or (sys.argv[1] if len(sys.argv) > 1 else '')
# Peak RSS of one thinimg run, under ASan (which alone costs ~30-40 MB of shadow and
# quarantine). The unbounded cases grew past 600 MB before the fix.
RSS_MAX_MB = 100
# Shortened source limits for the cases (the defaults are for real networks).
FAST = {'THINIMG_SOURCE_LOW_SPEED_TIME_S': '2', 'THINIMG_SOURCE_RETRY_ATTEMPTS': '2',
        'THINIMG_SOURCE_RETRY_INITIAL_MS': '100', 'THINIMG_SOURCE_REQUEST_TIMEOUT_MS': '10000'}
LAYER_SIZE = 256 * 1024

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


def ok(cond, what):
    if not cond:
        raise AssertionError(what)


def layer(fill, size=LAYER_SIZE):
    """A tar layer with one file of `size` bytes of `fill`: two fills give two layers of the
    same length, and any mix of them is a valid tar too (so only the digest tells)."""
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode='w', format=tarfile.USTAR_FORMAT) as t:
        ti = tarfile.TarInfo('data')
        ti.size = size
        ti.mtime = 0
        t.addfile(ti, io.BytesIO(fill * size))
    return b.getvalue()


def sha(data):
    return hashlib.sha256(data).hexdigest()


class Run:
    def __init__(self, rc, out, err, secs, rss_mb, timed_out):
        self.rc, self.out, self.err = rc, out, err
        self.secs, self.rss_mb, self.timed_out = secs, rss_mb, timed_out

    def __str__(self):
        return 'exit %s in %.1f s, peak RSS %.0f MB' % (
            'TIMEOUT' if self.timed_out else self.rc, self.secs, self.rss_mb)


class Ctx:
    def __init__(self, srv, root):
        self.srv, self.root, self.n = srv, root, 0
        self.base = 'http://127.0.0.1:%d' % srv.port

    def state(self):
        self.n += 1
        return os.path.join(self.root, 'state%d' % self.n)

    def url(self, mode, key):
        return '%s/mode/%s/%s' % (self.base, mode, key)

    def endpoint(self, mode):
        return '%s/mode/%s' % (self.base, mode)

    def thinimg(self, state, args, timeout, env=None, until=None, defaults=False):
        """Run thinimg; kill it after `timeout` s (timed_out) or once `until` is in its
        stderr. Returns a Run with the child's own peak RSS. defaults: the source's own
        retry and timeout settings instead of the shortened ones."""
        e = dict(os.environ) if defaults else dict(os.environ, **FAST)
        # ASan keeps freed memory in a quarantine (256 MB by default) that would hide what
        # thinimg itself holds: a small one, so the peak RSS is thinimg's.
        e['ASAN_OPTIONS'] = ':'.join(filter(None, [e.get('ASAN_OPTIONS'),
                                                   'quarantine_size_mb=8']))
        e.pop('AWS_ENDPOINT_URL', None)
        e.update(env or {})
        errf = tempfile.TemporaryFile()
        outf = tempfile.TemporaryFile()
        t0 = time.monotonic()
        p = subprocess.Popen([BIN, '--state-dir', state] + args, stdout=outf, stderr=errf,
                             env=e)
        timed_out = False
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if until:
                errf.seek(0)
                if until in errf.read().decode(errors='replace'):
                    os.kill(p.pid, signal.SIGKILL)
                    _, status, ru = os.wait4(p.pid, 0)
                    break
            if time.monotonic() - t0 > timeout:
                timed_out = True
                os.kill(p.pid, signal.SIGKILL)
                _, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status)
        secs = time.monotonic() - t0
        outf.seek(0)
        errf.seek(0)
        r = Run(p.returncode, outf.read().decode(errors='replace'),
                errf.read().decode(errors='replace'), secs, ru.ru_maxrss / 1024, timed_out)
        ok(r.rss_mb < RSS_MAX_MB, 'peak RSS %.0f MB over %d MB' % (r.rss_mb, RSS_MAX_MB))
        return r


def blobs(state):
    d = os.path.join(state, 'blobs', 'sha256')
    return set(os.listdir(d)) if os.path.isdir(d) else set()


def tmp_bytes(state):
    d = os.path.join(state, 'tmp')
    if not os.path.isdir(d):
        return 0
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def expect(r, rc, phrase=None, within=None):
    ok(not r.timed_out, 'did not finish (%s); stderr: %s' % (r, r.err[-2000:]))
    ok(r.rc == rc, 'exit %s, expected %s; stderr: %s' % (r.rc, rc, r.err[-2000:]))
    if phrase:
        ok(phrase in r.err + r.out, "'%s' not in the output: %s" % (phrase, (r.err + r.out)[-2000:]))
    if within:
        ok(r.secs < within, 'took %.1f s, bound %d s' % (r.secs, within))


# ---- 2: resume only with a strong validator ------------------------------------------------

def changed_under_cut(ctx, mode):
    """Version A is cut in the middle, then the server serves B (same size). The blob stored
    must be B whole (or nothing), never A's first half + B's second half."""
    a, b = layer(b'A'), layer(b'B')
    mixed = a[:len(a) // 2] + b[len(a) // 2:]
    ctx.srv.put('v.tar', a, b)
    ctx.srv.reset()
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', ctx.url(mode, 'v.tar')], 60)
    expect(r, 0, within=30)
    got = blobs(st)
    ok(sha(mixed) not in got, 'the blob is half version A, half version B')
    ok(got == {sha(b)}, 'blobs %s, expected only version B %s' % (got, sha(b)[:12]))
    return r


@case
def resume_without_validator(ctx):
    """No ETag, no Last-Modified: the cut transfer starts over from byte 0."""
    r = changed_under_cut(ctx, 'noetag-change')
    ok(all(not q['range'] for q in ctx.srv.log() if q['method'] == 'GET'),
       'a GET with Range was sent without a validator')
    return r


@case
def resume_weak_etag(ctx):
    """A weak ETag (W/"...") is no validator: start over."""
    r = changed_under_cut(ctx, 'weak-change')
    ok(all(not q['range'] for q in ctx.srv.log() if q['method'] == 'GET'),
       'a GET with Range was sent on a weak ETag')
    return r


@case
def resume_last_modified_changed(ctx):
    """Last-Modified only; the server ignores If-Unmodified-Since: the new Last-Modified of the
    resumed response is caught, start over."""
    r = changed_under_cut(ctx, 'lm-change')
    ranged = [q for q in ctx.srv.log() if q['method'] == 'GET' and q['range']]
    ok(ranged and all(q['if_unmodified_since'] == hostile.LM_A for q in ranged),
       'the resumed GET did not carry If-Unmodified-Since: %s' % ranged)
    return r


@case
def resume_last_modified_then_etag(ctx):
    """Last-Modified pins version A; the resumed response brings a strong ETag with version B:
    the new ETag does not replace the Last-Modified, the change is caught, start over."""
    return changed_under_cut(ctx, 'lm-then-etag')


@case
def resume_norange_changed(ctx):
    """No validator, and a ranged request answered 200 with the whole (new) object: its
    prefix must not be skipped and appended to the old bytes."""
    return changed_under_cut(ctx, 'norange-change')


@case
def resume_last_modified_stable(ctx):
    """Last-Modified only, stable: the cut transfer resumes (Range + If-Unmodified-Since)."""
    a = layer(b'L')
    ctx.srv.put('v.tar', a)
    ctx.srv.reset()
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', ctx.url('lm-stable', 'v.tar')], 60)
    expect(r, 0, within=30)
    ok(blobs(st) == {sha(a)}, 'blobs %s' % blobs(st))
    ranged = [q for q in ctx.srv.log() if q['method'] == 'GET' and q['range']]
    ok(len(ranged) == 1 and ranged[0]['range'] == 'bytes=%d-' % (len(a) // 2) and
       ranged[0]['if_unmodified_since'] == hostile.LM_A, 'resume: %s' % ranged)
    return r


@case
def resume_bad_content_range(ctx):
    """A 206 whose Content-Range starts elsewhere than asked is an error, never appended."""
    a = layer(b'R')
    ctx.srv.put('v.tar', a)
    ctx.srv.reset()
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', ctx.url('badrange', 'v.tar')], 60)
    ok(blobs(st) <= {sha(a)}, 'a wrong blob was stored: %s' % blobs(st))
    ok('different range' in r.err, 'no message about the range: %s' % r.err[-1000:])
    return r


# ---- 3: control characters in keys --------------------------------------------------------

@case
def key_nul_in_s3_listing(ctx):
    """'2.tar%00.evil' in an encoding-type=url listing is skipped, never read as '2.tar'."""
    one, evil = layer(b'1'), layer(b'E')
    ctx.srv.put('images/x/1.tar', one)
    ctx.srv.put('images/x/2.tar', evil)
    st = ctx.state()
    ep = ['--endpoint', ctx.endpoint('nulkey'), '--no-sign-request']
    r = ctx.thinimg(st, ['ls', '--json', 's3://bkt/images/x/'] + ep, 30)
    expect(r, 0)
    j = json.loads(r.out)
    ok('2.tar' not in r.out.replace('2.tar%00', ''), 'the NUL key is listed as 2.tar: %s' % r.out)
    ok(any('escaped NUL' in w for w in j.get('warnings', [])), 'no warning: %s' % r.out)
    r = ctx.thinimg(st, ['fetch', 's3://bkt/images/x/'] + ep, 30)
    expect(r, 0, 'escaped NUL')
    ok(sha(evil) not in blobs(st), '2.tar was fetched for the key 2.tar%00.evil')
    ok(blobs(st) == {sha(one)}, 'blobs %s' % blobs(st))
    return r


@case
def key_nul_in_http_location(ctx):
    """An http location whose key hides a NUL (%00) or a '..' (%2e%2e) is refused before any
    request."""
    ctx.srv.put('2.tar', layer(b'E'))
    ctx.srv.reset()
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', ctx.url('plain', '2.tar%00.evil')], 30)
    expect(r, 6, 'escaped control character')
    r2 = ctx.thinimg(st, ['fetch', ctx.url('plain', 'a/%2e%2e/%2E%2e/2.tar')], 30)
    ok(r2.rc != 0, 'a %%2e%%2e path was fetched: %s' % r2)
    ok(not ctx.srv.log(), 'requests were sent: %s' % ctx.srv.log())
    ok(not blobs(st), 'blobs %s' % blobs(st))
    return r


# ---- 4: listings that never end ------------------------------------------------------------

def endless_listing(ctx, mode, phrase, within, env=None):
    st = ctx.state()
    r = ctx.thinimg(st, ['ls', 's3://bkt/images/x/', '--endpoint', ctx.endpoint(mode),
                         '--no-sign-request'], 90, env=env)
    expect(r, r.rc, phrase, within=within)
    ok(r.rc != 0, 'the listing "succeeded": %s' % r)
    warnings = [ln for ln in r.err.splitlines() if 'warning' in ln]
    ok(len(warnings) <= 2, '%d warning lines (one summary expected)' % len(warnings))
    return r


@case
def list_token_cycle(ctx):
    """Tokens t1 -> t2 -> t3 -> t1: any repeated token ends the listing."""
    return endless_listing(ctx, 'cycle3', 'continuation token it sent before', 20)


@case
def list_endless_invalid_keys(ctx):
    """New tokens forever, every key invalid: the cap counts keys seen, not keys accepted."""
    return endless_listing(ctx, 'endless-list', 'more than 100000 keys', 60)


@case
def list_growing_token(ctx):
    """Tokens that grow: bounded (by the XML text limit, or the page cap)."""
    return endless_listing(ctx, 'growing-token', 'bad ListObjectsV2 response', 30)


@case
def list_wall_time(ctx):
    """A listing that drips pages forever is cut by the wall-time limit."""
    return endless_listing(ctx, 'slow-list', 'the listing took longer than 3 s', 20,
                           env={'THINIMG_SOURCE_LIST_TIMEOUT_MS': '3000'})


def api(sock, method, path, body=None):
    """One request to the daemon's socket (curl); returns (status, JSON reply)."""
    args = ['curl', '-s', '-o', '-', '-w', '\n%{http_code}', '--unix-socket', sock,
            '-X', method, 'http://x' + path]
    if body is not None:
        args += ['-H', 'Content-Type: application/json', '--data-binary', json.dumps(body)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30).stdout
    text, _, status = out.rpartition('\n')
    return int(status or 0), json.loads(text) if text.strip() else None


def peak_rss_mb(pid):
    with open('/proc/%d/status' % pid) as f:
        for ln in f:
            if ln.startswith('VmHWM:'):
                return int(ln.split()[1]) / 1024
    return 0


@case
def daemon_cancel_stuck_listing(ctx):
    """In the daemon, process-image resolving a listing that never ends (a new token every
    0.3 s, no cap reached for 10 minutes) is cancelled with `thinimg runs cancel`: the
    resolve step honours the cancel hook. Bounds: cancelled within 10 s; daemon peak RSS."""
    st = ctx.state()
    os.makedirs(st)
    sock = os.path.join(st, 'thinimg.sock')
    e = dict(os.environ, **FAST)
    e['ASAN_OPTIONS'] = ':'.join(filter(None, [e.get('ASAN_OPTIONS'), 'quarantine_size_mb=8']))
    log = open(os.path.join(ctx.root, 'daemon.log'), 'wb')
    d = subprocess.Popen([BIN, '--state-dir', st, 'daemon', '--no-pool-setup', '--endpoint',
                          ctx.endpoint('slow-list'), '--no-sign-request'], stdout=log,
                         stderr=subprocess.STDOUT, env=e)
    try:
        for _ in range(200):
            if os.path.exists(sock) and api(sock, 'GET', '/v1/version')[0] == 200:
                break
            ok(d.poll() is None, 'the daemon exited at start')
            time.sleep(0.05)
        status, reply = api(sock, 'POST', '/v1/process-image', {'ref': 's3://bkt/images/x/'})
        ok(status == 202, 'process-image: %s %s' % (status, reply))
        run = reply['run']
        time.sleep(2)  # a few pages into the endless listing
        status, reply = api(sock, 'GET', '/v1/runs/%s' % run)
        ok(reply['run']['state'] == 'resolve' and reply['run']['status'] != 'finished',
           'the run is not stuck in resolve: %s' % reply['run'])
        t0 = time.monotonic()
        r = ctx.thinimg(st, ['runs', 'cancel', run], 20)
        expect(r, 0, 'cancel requested', within=15)
        status, reply = api(sock, 'GET', '/v1/runs/%s/wait?timeout=10' % run)
        secs = time.monotonic() - t0
        ok(reply.get('finished') and reply['run']['outcome'] == 'cancelled',
           'not cancelled within 10 s: %s' % reply)
        ok(secs < 10, 'cancel took %.1f s' % secs)
        r2 = ctx.thinimg(st, ['runs', 'cancel', run], 20)
        expect(r2, 5, 'already finished', within=15)
        rss = peak_rss_mb(d.pid)
        ok(rss < RSS_MAX_MB, 'daemon peak RSS %.0f MB' % rss)
        r.secs, r.rss_mb = secs, rss
        return r
    finally:
        d.terminate()
        d.wait(30)
        log.close()


@case
def family_many_names(ctx):
    """5,000 names that are not N.tar in a family folder: a few warning lines, not 5,000."""
    one = layer(b'1')
    ctx.srv.put('images/x/1.tar', one)
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', 's3://bkt/images/x/', '--endpoint',
                         ctx.endpoint('many-names'), '--no-sign-request'], 30)
    expect(r, 0, 'and 4997 more names that are not layer names')
    warnings = [ln for ln in r.err.splitlines() if ln.startswith('warning')]
    ok(len(warnings) <= 4, '%d warning lines' % len(warnings))
    ok(blobs(st) == {sha(one)}, 'blobs %s' % blobs(st))
    return r


# ---- 5: bodies, stalls, trickles -----------------------------------------------------------

@case
def body_beyond_announced_size(ctx):
    """HEAD says 256 KiB, the GET never ends: stop at the size, a clear error, no blob, and
    never more than the size on disk."""
    ctx.srv.put('v.tar', layer(b'S'))
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', ctx.url('endless-body', 'v.tar')], 60)
    expect(r, 6, 'sent more than the object', within=30)
    ok(not blobs(st), 'blobs %s' % blobs(st))
    ok(tmp_bytes(st) <= len(layer(b'S')), 'tmp holds %d bytes' % tmp_bytes(st))
    return r


@case
def stall_after_headers(ctx):
    """Headers, then nothing: cut by the low-speed limit (2 s here), retried, fetched."""
    a = layer(b'T')
    ctx.srv.put('v.tar', a)
    ctx.srv.reset()
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', ctx.url('stall-once', 'v.tar')], 60)
    expect(r, 0)
    ok(blobs(st) == {sha(a)}, 'blobs %s' % blobs(st))
    return r


@case
def trickle_forever(ctx):
    """16 bytes every 0.2 s on every connection: each attempt is cut by the low-speed limit
    and, having delivered next to nothing, counts against the retry budget (2 attempts here):
    the download attempt gives up in bounded time instead of resuming forever."""
    ctx.srv.put('v.tar', layer(b'K'))
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', ctx.url('trickle', 'v.tar')], 60, until='gave up after')
    ok(not r.timed_out, 'no attempt gave up within 60 s: %s' % r.err[-1500:])
    ok(r.secs < 20, 'the first download attempt took %.1f s to give up' % r.secs)
    ok(not blobs(st), 'blobs %s' % blobs(st))
    return r


@case
def connection_refused_budget(ctx):
    """Nothing listens at the S3 endpoint: with the default retry budget the fetch ends within
    15 s, in at most 3 lines, naming the address and how to change it; the run's stored kind
    is transient (exit 1)."""
    import socket as sk
    s = sk.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    st = ctx.state()
    r = ctx.thinimg(st, ['--endpoint', 'http://127.0.0.1:%d' % port, 'fetch',
                         's3://bucket/images/x/1.tar'], 60, defaults=True)
    expect(r, 1, '127.0.0.1 port %d' % port, within=15)
    ok('--endpoint' in r.err, 'the message does not say how to change the address: ' + r.err)
    lines = [l for l in r.err.splitlines() if l.strip()]
    ok(len(lines) <= 3, '%d lines of output, at most 3 wanted:\n%s' % (len(lines), r.err))
    return r


# ---- 7: FIFOs and devices in dir: ----------------------------------------------------------

@case
def dir_fifo(ctx):
    """A FIFO among the layers: refused by type, never opened for reading (which blocks)."""
    d = os.path.join(ctx.root, 'fifo-src', 'images', 'f')
    os.makedirs(d)
    with open(os.path.join(d, '1.tar'), 'wb') as f:
        f.write(layer(b'1'))
    os.mkfifo(os.path.join(d, '2.tar'))
    os.mkfifo(os.path.join(d, 'blob.tar'))
    os.symlink('blob.tar', os.path.join(d, 'link.tar'))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(os.path.join(d, 'sock.tar'))
    st = ctx.state()
    for name in ('blob.tar', 'link.tar'):
        r = ctx.thinimg(st, ['fetch', 'dir:%s/%s' % (d, name)], 20)
        expect(r, 4, 'a FIFO, not a regular file', within=10)
    r = ctx.thinimg(st, ['fetch', 'dir:%s/sock.tar' % d], 20)
    sock.close()
    expect(r, 4, 'a socket, not a regular file', within=10)
    r = ctx.thinimg(st, ['fetch', 'dir:%s/2.tar' % d], 20)
    expect(r, 4, '2.tar needs layers 1..2, but 1 is missing: 2.tar', within=10)
    r = ctx.thinimg(st, ['ls', 'dir:%s/' % d], 20)
    expect(r, 0, 'skipped 4 keys', within=10)
    ok("'link.tar' is a symlink that does not resolve to a regular file" in r.err, r.err)
    ok("'2.tar' is a FIFO" in r.err, r.err)
    ok(len([ln for ln in r.err.splitlines() if 'warning' in ln]) == 1, r.err)
    r = ctx.thinimg(st, ['fetch', 'dir:%s/' % d], 20)
    expect(r, 0, within=10)
    ok(blobs(st) == {sha(layer(b'1'))}, 'blobs %s' % blobs(st))
    return r


# ---- 12b: '..' in location roots -----------------------------------------------------------

@case
def dotdot_in_roots(ctx):
    """dir:/a/b/../c is dir:/a/c; http://h/p/x/../k is http://h/p/k; above '/' is refused."""
    d = os.path.join(ctx.root, 'dd', 'c')
    os.makedirs(os.path.join(ctx.root, 'dd', 'b'))
    os.makedirs(d)
    a = layer(b'D')
    with open(os.path.join(d, 'k.tar'), 'wb') as f:
        f.write(a)
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', '--json', 'dir:%s/dd/b/../c/k.tar' % ctx.root], 20)
    expect(r, 0, within=10)
    ok(json.loads(r.out)['layers'][0]['location'] == 'dir:%s/dd/c/k.tar' % ctx.root, r.out)
    ctx.srv.put('k.tar', a)
    r = ctx.thinimg(st, ['fetch', '--json', ctx.url('plain', 'x/./y/../../k.tar')], 20)
    expect(r, 0, within=10)
    ok(json.loads(r.out)['layers'][0]['location'] == ctx.url('plain', 'k.tar'), r.out)
    r = ctx.thinimg(st, ['fetch', '%s/../../../../../../../k.tar' % ctx.base], 20)
    expect(r, 2, "goes above '/'", within=10)
    r = ctx.thinimg(st, ['fetch', 'dir:/../../%s/dd/c/k.tar' % ctx.root], 20)
    expect(r, 2, "goes above '/'", within=10)
    return r


# ---- 12c: an overlong key ------------------------------------------------------------------

@case
def list_overlong_key(ctx):
    """A 5,000-byte key is skipped (one warning); the rest of the listing stands."""
    one = layer(b'1')
    ctx.srv.put('images/x/1.tar', one)
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', 's3://bkt/images/x/', '--endpoint', ctx.endpoint('longkey'),
                         '--no-sign-request'], 30)
    expect(r, 0, 'longer than the listing')
    ok(blobs(st) == {sha(one)}, 'blobs %s' % blobs(st))
    return r


# ---- issue 19: the registry source (docker://) ---------------------------------------------

def reg_env(ctx, **extra):
    """Plain HTTP to the hostile registry, no docker config of the user's."""
    e = {'THINIMG_INSECURE_REGISTRY': '127.0.0.1:%d' % ctx.srv.port,
         'DOCKER_CONFIG': os.path.join(ctx.root, 'no-docker-config')}
    e.update(extra)
    return e


def reg_ref(ctx, mode, rest):
    return 'docker://127.0.0.1:%d/%s/%s' % (ctx.srv.port, mode, rest)


def reg_put(ctx, repo, fills, tag='v1'):
    layers = [layer(f, 64 * 1024) for f in fills]
    manifest, blobs_ = hostile.image(layers)
    ctx.srv.put_image(repo, {tag: manifest}, blobs_)
    return layers, manifest


def nothing_stored(st):
    ok(blobs(st) == set(), 'blobs were stored: %s' % blobs(st))
    ok(tmp_bytes(st) == 0, '%d bytes left in tmp' % tmp_bytes(st))


def reg_refused(ctx, mode, rest, rc, phrase, within=20, args=()):
    """fetch of a registry image fails with exit rc and the phrase, in time, storing nothing."""
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', reg_ref(ctx, mode, rest)] + list(args), within + 30,
                    env=reg_env(ctx))
    expect(r, rc, phrase, within=within)
    nothing_stored(st)
    return r


@case
def registry_pull(ctx):
    """A correct registry: ls shows the tags (two pages), fetch stores every layer by digest,
    resolved through the manifest, bottom to top."""
    layers, manifest = reg_put(ctx, 'img', [b'1', b'2', b'3'])
    for i in range(hostile.PAGE_KEYS + 5):  # two pages of tags (Link pagination)
        ctx.srv.put_image('img', {'t%04d' % i: manifest}, {})
    st = ctx.state()
    r = ctx.thinimg(st, ['ls', '--json', reg_ref(ctx, 'reg-plain', 'img')], 30, env=reg_env(ctx))
    expect(r, 0)
    objs = json.loads(r.out)['objects']
    keys = {o['name'] for o in objs}
    ok(len(keys) == hostile.PAGE_KEYS + 6, 'ls listed %d tags' % len(keys))
    # Tags by name, with the digest each points at (asked for the first 32 only).
    first = objs[0]
    ok(first['name'] == 't0000' and first['digest'] == hostile.digest(manifest) and
       first['location'].endswith('/reg-plain/img:t0000'), 'first tag: %s' % first)
    ok(sum(1 for o in objs if o['digest']) == 32, 'digests asked for every tag')
    r = ctx.thinimg(st, ['ls', reg_ref(ctx, 'reg-plain', 'img:v1')], 30, env=reg_env(ctx))
    expect(r, 0)
    ok('manifests/' not in r.out and r.out.split('\n')[1].split()[:2] ==
       ['v1', hostile.digest(manifest)[:19]], 'ls of one tag:\n%s' % r.out)
    r = ctx.thinimg(st, ['fetch', '--json', reg_ref(ctx, 'reg-plain', 'img:v1')], 30,
                    env=reg_env(ctx))
    expect(r, 0)
    ok(blobs(st) == {sha(x) for x in layers}, 'blobs %s' % blobs(st))
    got = [l['digest'] for l in json.loads(r.out)['layers']]
    ok(got == [hostile.digest(x) for x in layers], 'layer order %s' % got)
    accept = [q['accept'] for q in ctx.srv.log() if '/manifests/' in q['key']]
    ok(accept and all(hostile.MT_INDEX in a and 'manifest.list.v2' in a for a in accept),
       'manifests asked without the index types: %s' % accept[:1])
    return r


@case
def registry_resume(ctx):
    """A blob cut in the middle, from a registry that gives no ETag: content-addressed, so
    the transfer resumes with Range (no If-Match), and the digest check proves the bytes."""
    layers, _ = reg_put(ctx, 'img', [b'c'])
    ctx.srv.reset()
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', reg_ref(ctx, 'reg-cut', 'img:v1')], 30, env=reg_env(ctx))
    expect(r, 0)
    ok(blobs(st) == {sha(layers[0])}, 'blobs %s' % blobs(st))
    ranged = [q for q in ctx.srv.log() if q['method'] == 'GET' and q['range']]
    ok(len(ranged) == 1 and ranged[0]['range'] == 'bytes=%d-' % (len(layers[0]) // 2) and
       not ranged[0]['if_match'], 'resume: %s' % ranged)
    return r


@case
def registry_manifest_too_large(ctx):
    """A 5 MiB manifest is cut at 4 MiB: refused (exit 6), memory bounded, nothing stored."""
    return reg_refused(ctx, 'reg-bigmanifest', 'img:v1', 6, 'larger than the limit')


@case
def registry_manifest_digest_mismatch(ctx):
    """A manifest asked by digest whose bytes have another digest: refused (exit 6)."""
    _, manifest = reg_put(ctx, 'img', [b'4'])
    d = hostile.digest(manifest)
    return reg_refused(ctx, 'reg-baddigest', 'img@' + d, 6, 'not the %s it was asked by' % d)


@case
def registry_blob_digest_mismatch(ctx):
    """A layer whose bytes are not its digest (same size): the download is refused (exit 6)
    and nothing is stored, not even the partial file."""
    reg_put(ctx, 'img', [b'5'])
    return reg_refused(ctx, 'reg-badblob', 'img:v1', 6, 'not the sha256:')


def gzip_image(tars, diff_ids):
    """An OCI image of gzip layers whose config declares diff_ids: (manifest, blobs)."""
    import gzip
    gzs = [gzip.compress(t, mtime=0) for t in tars]
    config = json.dumps({'architecture': 'amd64', 'os': 'linux',
                         'config': {'Entrypoint': ['/bin/app'], 'Env': ['A=1'],
                                    'WorkingDir': '/srv', 'User': '1000'},
                         'rootfs': {'type': 'layers', 'diff_ids': diff_ids}}).encode()
    manifest = json.dumps({
        'schemaVersion': 2, 'mediaType': hostile.MT_MANIFEST,
        'config': {'mediaType': hostile.MT_CONFIG, 'digest': hostile.digest(config),
                   'size': len(config)},
        'layers': [{'mediaType': hostile.MT_LAYER + '+gzip', 'digest': hostile.digest(g),
                    'size': len(g)} for g in gzs]}).encode()
    return manifest, dict({hostile.digest(g): g for g in gzs},
                          **{hostile.digest(config): config})


@case
def registry_diff_id_mismatch(ctx):
    """A gzip layer whose config declares the diff id of other content (the registry lies
    about what the layer unpacks to): refused (exit 6) with both digests named, and nothing
    stored, the layer's blob included."""
    tars = [layer(b'h', 64 * 1024)]
    manifest, blobs_ = gzip_image(tars, [hostile.digest(b'other')])
    ctx.srv.put_image('lying', {'v1': manifest}, blobs_)
    r = reg_refused(ctx, 'reg-plain', 'lying:v1', 6, 'declares the diff id %s' %
                    hostile.digest(b'other'))
    ok('hashes to %s' % hostile.digest(tars[0]) in r.err, 'the actual diff id is not named')
    # The same blob already stored by an honest image: the lie is caught without a download.
    manifest, blobs_ = gzip_image(tars, [hostile.digest(tars[0])])
    ctx.srv.put_image('honest', {'v1': manifest}, blobs_)
    st = ctx.state()
    expect(ctx.thinimg(st, ['fetch', reg_ref(ctx, 'reg-plain', 'honest:v1')], 30,
                       env=reg_env(ctx)), 0)
    r = ctx.thinimg(st, ['fetch', reg_ref(ctx, 'reg-plain', 'lying:v1')], 30, env=reg_env(ctx))
    expect(r, 6, 'declares the diff id %s' % hostile.digest(b'other'))
    return r


@case
def registry_gzip_diff_ids(ctx):
    """A gzip layer whose diff id is right is fetched; its diff id is the uncompressed tar's
    sha256, the same as the digest of that tar fetched from dir: (so both give the same chain
    ids, and share layer devices)."""
    tars = [layer(b'i', 64 * 1024)]
    manifest, blobs_ = gzip_image(tars, [hostile.digest(tars[0])])
    ctx.srv.put_image('gz', {'v1': manifest}, blobs_)
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', '--json', reg_ref(ctx, 'reg-plain', 'gz:v1')], 30,
                    env=reg_env(ctx))
    expect(r, 0)
    got = json.loads(r.out)['layers'][0]
    ok(got['format'] == 'tar+gzip' and got['diff_id'] == hostile.digest(tars[0]),
       'registry layer %s' % got)
    d = os.path.join(ctx.root, 'gzdir')
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'base.tar'), 'wb') as f:
        f.write(tars[0])
    r2 = ctx.thinimg(st, ['fetch', '--json', 'dir:%s/base.tar' % d], 30)
    expect(r2, 0)
    plain = json.loads(r2.out)['layers'][0]
    ok(plain['digest'] == plain['diff_id'] == got['diff_id'], 'dir: layer %s' % plain)
    return r


@case
def registry_foreign_layer(ctx):
    """A foreign (non-distributable) layer, one with `urls`: refused (exit 6) with how to allow
    it; allowed, it is fetched from the registry by its digest, and its urls are never
    followed."""
    layers, manifest = reg_put(ctx, 'foreign', [b'f'])
    m = json.loads(manifest)
    m['layers'][0]['urls'] = ['http://127.0.0.1:9/never-asked']
    manifest = json.dumps(m).encode()
    ctx.srv.put_image('foreign', {'v2': manifest}, {})
    r = reg_refused(ctx, 'reg-plain', 'foreign:v2', 6, 'foreign (non-distributable) layer; '
                    'refused. Set THINIMG_REGISTRY_ALLOW_FOREIGN_LAYERS=1')
    st = ctx.state()
    ctx.srv.reset()
    r = ctx.thinimg(st, ['fetch', reg_ref(ctx, 'reg-plain', 'foreign:v2')], 30,
                    env=reg_env(ctx, THINIMG_REGISTRY_ALLOW_FOREIGN_LAYERS='1'))
    expect(r, 0)
    ok(blobs(st) == {sha(layers[0])}, 'blobs %s' % blobs(st))
    got = [q for q in ctx.srv.log() if '/blobs/' in q['key'] and q['method'] == 'GET']
    ok(got, 'the layer was not fetched from the registry')
    return r


@case
def registry_schema1_refused(ctx):
    """A Docker schema 1 manifest: refused with the reason (exit 6)."""
    return reg_refused(ctx, 'reg-schema1', 'img:v1', 6, 'schema 1')


@case
def registry_platform(ctx):
    """An index of linux/amd64 + linux/arm64: --platform linux/arm64 stores the arm64 image
    only; linux/s390x is not there (exit 4, naming the platforms there are)."""
    amd = [layer(b'a', 64 * 1024)]
    arm = [layer(b'r', 64 * 1024)]
    m_amd, b_amd = hostile.image(amd)
    m_arm, b_arm = hostile.image(arm, 'arm64')
    ix = hostile.index([('linux', 'amd64', m_amd), ('linux', 'arm64', m_arm),
                        ('unknown', 'unknown', m_amd)])
    ctx.srv.put_image('multi', {'v1': ix}, dict(b_amd, **b_arm, **{
        hostile.digest(m_amd): m_amd, hostile.digest(m_arm): m_arm}))
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', reg_ref(ctx, 'reg-plain', 'multi:v1'), '--platform',
                         'linux/arm64'], 30, env=reg_env(ctx))
    expect(r, 0)
    ok(blobs(st) == {sha(arm[0])}, 'blobs %s' % blobs(st))
    return reg_refused(ctx, 'reg-plain', 'multi:v1', 4, 'no manifest for platform linux/s390x '
                       '(it has: linux/amd64, linux/arm64)', args=['--platform', 'linux/s390x'])


@case
def registry_redirect_drops_authorization(ctx):
    """Bearer-token registry whose blobs redirect to another host: the blobs arrive, and no
    Authorization header reaches that host."""
    other = hostile.Server(lifetime=120).start()
    try:
        layers, manifest = reg_put(ctx, 'img', [b'6', b'7'])
        for d, x in hostile.image(layers)[1].items():  # the layers and the config
            other.put(d.split(':')[1], x)
        ctx.srv.state.redirect_base = 'http://localhost:%d/mode/plain' % other.port
        st = ctx.state()
        r = ctx.thinimg(st, ['fetch', reg_ref(ctx, 'reg-redirect', 'img:v1')], 30,
                        env=reg_env(ctx))
        expect(r, 0)
        ok(blobs(st) == {sha(x) for x in layers}, 'blobs %s' % blobs(st))
        there = [q for q in other.log() if q['method'] == 'GET']
        ok(there, 'nothing was fetched from the other host')
        ok(all(not q['authorization'] for q in there),
           'Authorization forwarded to another host: %s' % there)
        sent = [q for q in ctx.srv.log() if q['authorization'] == 'Bearer tok-reg-redirect']
        ok(sent, 'the registry never got the token')
    finally:
        other.stop()
    return r


@case
def registry_bearer_credentials(ctx):
    """Token service with Basic credentials: the wrong password is refused (exit 3, a clear
    message); the right one pulls with one token request for the whole fetch. The secret is in
    no output and no file of the state directory (database, logs)."""
    layers, _ = reg_put(ctx, 'img', [b'8', b'9'])
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', reg_ref(ctx, 'reg-auth', 'img:v1')], 30,
                    env=reg_env(ctx, THINIMG_REGISTRY_AUTH='alice:wrong-pw'))
    expect(r, 3, 'refused the credentials')
    ok('wrong-pw' not in r.err + r.out, 'the password is in the output')
    nothing_stored(st)
    # process-image records its run (the error, its events) and logs: the overlay backend
    # lets it run here, without device-mapper.
    st = ctx.state()
    r = ctx.thinimg(st, ['--backend', 'overlay', 'process-image',
                         reg_ref(ctx, 'reg-auth', 'img:v1')], 30,
                    env=reg_env(ctx, THINIMG_REGISTRY_AUTH='alice:wrong-pw'))
    expect(r, 3, 'refused the credentials')
    ok('wrong-pw' not in r.err + r.out, 'the password is in the output')
    no_secret_in_state(st, [b'wrong-pw'], 'permission')
    before = ctx.srv.count('token', 'reg-auth')
    cfg = os.path.join(ctx.root, 'docker-config')
    os.makedirs(cfg, exist_ok=True)
    with open(os.path.join(cfg, 'config.json'), 'w') as f:
        json.dump({'auths': {'127.0.0.1:%d' % ctx.srv.port: {'auth': base64.b64encode(
            b'alice:s3cret-pw').decode()}}}, f)
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', reg_ref(ctx, 'reg-auth', 'img:v1')], 30,
                    env=reg_env(ctx, DOCKER_CONFIG=cfg))
    expect(r, 0)
    ok(blobs(st) == {sha(x) for x in layers}, 'blobs %s' % blobs(st))
    ok(ctx.srv.count('token', 'reg-auth') - before == 1,
       '%d token requests for one fetch' % (ctx.srv.count('token', 'reg-auth') - before))
    ok('s3cret-pw' not in r.err + r.out, 'the password is in the output')
    no_secret_in_state(st, [b's3cret-pw', b'tok-reg-auth'], None)
    return r


def no_secret_in_state(st, secrets, error_kind):
    """No secret in any file of the state directory (the database with its WAL, logs), which
    holds the command's finished run records: failed with error_kind, or (None) succeeded."""
    import sqlite3
    with sqlite3.connect('file:%s?mode=ro' % os.path.join(st, 'thinimg.db'), uri=True) as db:
        runs = db.execute('SELECT error, error_kind FROM fsm_runs WHERE status = 3').fetchall()
    ok(runs and (all(not err for err, _ in runs) if error_kind is None else
                 any(kind == error_kind for _, kind in runs)),
       'finished runs %s, expected %s' % (runs, error_kind or 'success'))
    for d, _, files in os.walk(st):
        for name in files:
            with open(os.path.join(d, name), 'rb') as f:
                data = f.read()
            ok(not any(x in data for x in secrets), 'a secret is in %s' % os.path.join(d, name))


@case
def registry_basic_credentials(ctx):
    """A registry that wants Basic auth: without credentials exit 3 saying how to give them;
    with THINIMG_REGISTRY_AUTH the pull works and the password is in no output."""
    layers, _ = reg_put(ctx, 'img', [b'b'])
    r = reg_refused(ctx, 'reg-basic', 'img:v1', 3, 'requires credentials (401); set '
                    'THINIMG_REGISTRY_AUTH')
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', reg_ref(ctx, 'reg-basic', 'img:v1')], 30,
                    env=reg_env(ctx, THINIMG_REGISTRY_AUTH='bob:basic-pw'))
    expect(r, 0, within=20)
    ok(blobs(st) == {sha(layers[0])}, 'blobs %s' % blobs(st))
    ok('basic-pw' not in r.err + r.out, 'the password is in the output')
    return r


@case
def registry_credential_helper(ctx):
    """Credentials from a docker credential helper (credHelpers in config.json names
    docker-credential-NAME, run with the server on stdin): the pull works, a helper that
    fails is exit 3 with its name, and the secret is in no output and no file of the state
    directory."""
    layers, _ = reg_put(ctx, 'img', [b'k'])
    host = '127.0.0.1:%d' % ctx.srv.port
    d = os.path.join(ctx.root, 'helper')
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'docker-credential-hostile'), 'w') as f:
        f.write('#!/bin/sh\nread -r s\n[ "$1:$s" = "get:%s" ] || { echo "credentials not '
                'found in native keychain"; exit 1; }\necho \'{"ServerURL":"%s","Username":'
                '"bob","Secret":"basic-pw"}\'\n' % (host, host))
    with open(os.path.join(d, 'docker-credential-broken'), 'w') as f:
        f.write('#!/bin/sh\necho basic-pw >&2\nexit 2\n')
    for n in ('hostile', 'broken'):
        os.chmod(os.path.join(d, 'docker-credential-' + n), 0o755)
    env = reg_env(ctx, DOCKER_CONFIG=d, PATH=d + ':' + os.environ['PATH'])
    with open(os.path.join(d, 'config.json'), 'w') as f:
        json.dump({'credHelpers': {host: 'broken'}}, f)
    r = ctx.thinimg(ctx.state(), ['fetch', reg_ref(ctx, 'reg-basic', 'img:v1')], 30, env=env)
    expect(r, 3, 'docker-credential-broken get (for %s) failed with exit status 2' % host)
    ok('basic-pw' not in r.err + r.out, 'the helper\'s stderr is in the output')
    with open(os.path.join(d, 'config.json'), 'w') as f:
        json.dump({'credHelpers': {host: 'hostile'}}, f)
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', reg_ref(ctx, 'reg-basic', 'img:v1')], 30, env=env)
    expect(r, 0, within=20)
    ok(blobs(st) == {sha(layers[0])}, 'blobs %s' % blobs(st))
    ok('basic-pw' not in r.err + r.out, 'the password is in the output')
    for dd, _, files in os.walk(st):
        for name in files:
            with open(os.path.join(dd, name), 'rb') as f:
                ok(b'basic-pw' not in f.read(), 'the password is in %s' % name)
    return r


@case
def registry_tls_by_default(ctx):
    """Without --insecure-registry the registry is spoken to over TLS: a plain-HTTP registry
    gets no HTTP request, and the failure says what flag is missing."""
    reg_put(ctx, 'img', [b't'])
    ctx.srv.reset()
    st = ctx.state()
    r = ctx.thinimg(st, ['fetch', reg_ref(ctx, 'reg-plain', 'img:v1')], 30,
                    env=reg_env(ctx, THINIMG_INSECURE_REGISTRY=''))
    expect(r, 1, 'needs --insecure-registry', within=20)
    ok(not ctx.srv.log(), 'plain HTTP requests were sent: %s' % ctx.srv.log()[:2])
    nothing_stored(st)
    return r


@case
def registry_stall(ctx):
    """A registry that sends headers and then nothing: cut by the low-speed limit, retried
    within the budget, then the run ends (exit 1) in bounded time with nothing stored."""
    return reg_refused(ctx, 'reg-stall', 'img:v1', 1, 'gave up after 2 attempts', within=30)


def main():
    ok(BIN and os.access(BIN, os.X_OK), 'set THINIMG_BIN to the thinimg binary')
    names = [a for a in sys.argv[1:] if not os.path.sep in a]
    root = tempfile.mkdtemp(prefix='thinimg-hostile-')
    srv = hostile.Server(lifetime=900).start()
    failed = []
    try:
        ctx = Ctx(srv, root)
        for fn in CASES:
            if names and fn.__name__ not in names:
                continue
            try:
                r = fn(ctx)
                print('ok: %-32s %s' % (fn.__name__, r), flush=True)
            except AssertionError as ex:
                failed.append(fn.__name__)
                print('FAIL: %s: %s' % (fn.__name__, ex), flush=True)
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)
    if failed:
        print('failed: %s' % ' '.join(failed))
        sys.exit(1)


if __name__ == '__main__':
    main()
