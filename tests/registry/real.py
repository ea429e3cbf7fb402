#!/usr/bin/env python3
"""real.py: thinimg's docker:// source against a real registry (issue 19).

Starts Debian's docker-registry (the CNCF distribution registry) on 127.0.0.1 with its storage
in a temporary folder, pushes images with skopeo from OCI layouts this script builds from its
own tar layers (no internet), and runs thinimg against it:

  pull        a three-layer gzip image: `ls` shows its tags, `fetch` stores every layer under
              its compressed digest, bottom to top
  zstd        the same image pushed again with zstd layers (skopeo recompresses): fetched,
              the diff ids skopeo declared checked
  moved_tag   a tag pushed again with other content: another image (canonical ref by digest)
  platforms   a two-platform index (linux/amd64 + linux/arm64, different content) pushed with
              --all: --platform picks the right one, another platform is exit 4
  htpasswd    a second registry with htpasswd Basic auth: no credentials and wrong ones are
              exit 3, the right ones pull, and the password is in no output and no file of the
              state directory

Each case asserts the exit code, a phrase, what is in STATE/blobs and a time bound. Exit 77
(skipped) when docker-registry or skopeo is missing: scripts/install-deps.sh installs them.

Run: THINIMG_BIN=build/thinimg python3 tests/registry/real.py [CASE...]
"""
import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

BIN = os.environ.get('THINIMG_BIN', '')
REGISTRY = shutil.which('docker-registry')
SKOPEO = shutil.which('skopeo')
USER, PASSWORD = 'tester', 'real-registry-pw'
# PASSWORD's bcrypt hash for the registry's htpasswd file (cost 4: the test's, not a real one).
PASSWORD_BCRYPT = '$2b$04$gXqRyRRNaBKPXJEs7nrdierBgHbzo6x4kOCUKU8lSa./lpO1cRgZm'
START_TIMEOUT_S = 30  # the registry answers /v2/ within a second; 30 s under a loaded machine
RUN_TIMEOUT_S = 60

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


def ok(cond, what):
    if not cond:
        raise AssertionError(what)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def digest(b):
    return 'sha256:' + sha(b)


def digest_valid(d):
    return isinstance(d, str) and d.startswith('sha256:') and len(d) == 71


def tar_layer(name, fill, size=32 * 1024):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode='w', format=tarfile.USTAR_FORMAT) as t:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime, ti.mode = size, 0, 0o644
        t.addfile(ti, io.BytesIO(fill * size))
    return b.getvalue()


def gz(data):
    return gzip.compress(data, mtime=0)


class Layout:
    """An OCI image layout on disk (what skopeo copies from: oci:DIR:TAG)."""

    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, 'blobs', 'sha256'), exist_ok=True)
        with open(os.path.join(root, 'oci-layout'), 'w') as f:
            json.dump({'imageLayoutVersion': '1.0.0'}, f)
        self.index = {'schemaVersion': 2, 'manifests': []}

    def blob(self, data):
        with open(os.path.join(self.root, 'blobs', 'sha256', sha(data)), 'wb') as f:
            f.write(data)
        return {'digest': digest(data), 'size': len(data)}

    def image(self, tars, arch='amd64'):
        """A manifest of gzip layers; returns (manifest descriptor, compressed layers)."""
        config = json.dumps({'architecture': arch, 'os': 'linux',
                             'config': {'Env': ['PATH=/bin']},
                             'rootfs': {'type': 'layers',
                                        'diff_ids': [digest(t) for t in tars]}}).encode()
        layers = [gz(t) for t in tars]
        manifest = json.dumps({
            'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.manifest.v1+json',
            'config': dict(self.blob(config),
                           mediaType='application/vnd.oci.image.config.v1+json'),
            'layers': [dict(self.blob(x), mediaType='application/vnd.oci.image.layer.v1.tar+gzip')
                       for x in layers]}).encode()
        d = dict(self.blob(manifest), mediaType='application/vnd.oci.image.manifest.v1+json')
        d['platform'] = {'os': 'linux', 'architecture': arch}
        return d, layers

    def tag(self, name, desc):
        self.index['manifests'].append(dict(desc, annotations={
            'org.opencontainers.image.ref.name': name}))
        with open(os.path.join(self.root, 'index.json'), 'w') as f:
            json.dump(self.index, f)

    def tag_index(self, name, descs):
        ix = json.dumps({'schemaVersion': 2,
                         'mediaType': 'application/vnd.oci.image.index.v1+json',
                         'manifests': descs}).encode()
        self.tag(name, dict(self.blob(ix), mediaType='application/vnd.oci.image.index.v1+json'))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Registry:
    """docker-registry on 127.0.0.1:PORT, storage in root; htpasswd auth when given."""

    def __init__(self, root, htpasswd=None):
        self.port = free_port()
        self.host = '127.0.0.1:%d' % self.port
        os.makedirs(root, exist_ok=True)
        cfg = ['version: 0.1', 'log:', '  level: warn', 'storage:', '  filesystem:',
               '    rootdirectory: %s' % os.path.join(root, 'storage'), 'http:',
               '  addr: %s' % self.host]
        if htpasswd:
            path = os.path.join(root, 'htpasswd')
            with open(path, 'w') as f:
                f.write(htpasswd)
            cfg += ['auth:', '  htpasswd:', '    realm: thinimg-test', '    path: %s' % path]
        conf = os.path.join(root, 'config.yml')
        with open(conf, 'w') as f:
            f.write('\n'.join(cfg) + '\n')
        self.log = open(os.path.join(root, 'registry.log'), 'w')
        self.proc = subprocess.Popen([REGISTRY, 'serve', conf], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while True:
            try:
                urllib.request.urlopen('http://%s/v2/' % self.host, timeout=2)
                break
            except urllib.error.HTTPError:
                break  # 401: up, with auth
            except OSError:
                ok(self.proc.poll() is None, 'docker-registry exited; see %s' % self.log.name)
                ok(time.monotonic() - t0 < START_TIMEOUT_S, 'docker-registry did not start')
                time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Ctx:
    def __init__(self, root):
        self.root, self.n = root, 0
        self.policy = os.path.join(root, 'policy.json')
        with open(self.policy, 'w') as f:
            json.dump({'default': [{'type': 'insecureAcceptAnything'}]}, f)

    def state(self):
        self.n += 1
        return os.path.join(self.root, 'state%d' % self.n)

    def push(self, layout, tag, reg, dest, extra=()):
        cmd = [SKOPEO, '--policy', self.policy, 'copy', '--quiet', '--dest-tls-verify=false',
               *extra, 'oci:%s:%s' % (layout.root, tag), 'docker://%s/%s' % (reg.host, dest)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        ok(p.returncode == 0, 'skopeo copy failed: %s' % p.stderr[-2000:])

    def thinimg(self, state, args, reg, env=None):
        e = dict(os.environ, THINIMG_INSECURE_REGISTRY=reg.host,
                 DOCKER_CONFIG=os.path.join(self.root, 'no-docker-config'),
                 THINIMG_SOURCE_RETRY_ATTEMPTS='2', THINIMG_SOURCE_RETRY_INITIAL_MS='100')
        e.pop('THINIMG_REGISTRY_AUTH', None)
        e.update(env or {})
        t0 = time.monotonic()
        p = subprocess.run([BIN, '--state-dir', state] + args, capture_output=True, text=True,
                           env=e, timeout=RUN_TIMEOUT_S)
        p.secs = time.monotonic() - t0
        return p


def expect(p, rc, phrase=None, within=30):
    ok(p.returncode == rc, 'exit %s, expected %s: %s' % (p.returncode, rc, p.stderr[-2000:]))
    if phrase:
        ok(phrase in p.stderr + p.stdout, "'%s' not in: %s" % (phrase, p.stderr[-2000:]))
    ok(p.secs < within, 'took %.1f s, bound %d s' % (p.secs, within))


def blobs(state):
    d = os.path.join(state, 'blobs', 'sha256')
    return set(os.listdir(d)) if os.path.isdir(d) else set()


TARS = [tar_layer('etc/one', b'1'), tar_layer('usr/two', b'2'), tar_layer('var/three', b'3')]


@case
def pull(ctx, reg, layout):
    desc, layers = layout.image(TARS)
    layout.tag('v1', desc)
    ctx.push(layout, 'v1', reg, 'team/app:v1')
    ctx.push(layout, 'v1', reg, 'team/app:v2')
    st = ctx.state()
    p = ctx.thinimg(st, ['ls', '--json', 'docker://%s/team/app' % reg.host], reg)
    expect(p, 0)
    objs = json.loads(p.stdout)['objects']
    tags = sorted(o['name'] for o in objs)
    ok(tags == ['v1', 'v2'], 'tags %s' % tags)
    ok(len({o['digest'] for o in objs}) == 1 and digest_valid(objs[0]['digest']),
       'the two tags point at %s' % [o['digest'] for o in objs])
    p = ctx.thinimg(st, ['fetch', '--json', 'docker://%s/team/app:v1' % reg.host], reg)
    expect(p, 0)
    got = [l['digest'] for l in json.loads(p.stdout)['layers']]
    ok(got == [digest(x) for x in layers], 'layers %s' % got)
    ok(blobs(st) == {sha(x) for x in layers}, 'blobs %s' % blobs(st))
    return p


@case
def zstd(ctx, reg, layout):
    # Layers of their own: skopeo reuses a blob the registry already has (gzip) for the same
    # content instead of recompressing it.
    tars = [tar_layer('z/%d' % i, b'z%d' % i) for i in range(3)]
    desc, _ = layout.image(tars)
    layout.tag('v1', desc)
    ctx.push(layout, 'v1', reg, 'team/app-zstd:v1',
             ['--dest-compress-format', 'zstd', '--dest-compress'])
    st = ctx.state()
    p = ctx.thinimg(st, ['fetch', '--json', 'docker://%s/team/app-zstd:v1' % reg.host], reg)
    expect(p, 0)
    fmts = [l['format'] for l in json.loads(p.stdout)['layers']]
    ok(fmts == ['tar+zstd'] * 3, 'formats %s' % fmts)
    # skopeo wrote the zstd streams and the config's diff ids; thinimg checked them at validate.
    diff_ids = [l['diff_id'] for l in json.loads(p.stdout)['layers']]
    ok(diff_ids == [digest(t) for t in tars], 'diff ids %s' % diff_ids)
    return p


@case
def moved_tag(ctx, reg, layout):
    """A tag pushed again with other content: ls shows the new digest, and a fetch of the tag
    is another image (its canonical ref names the manifest digest) with the new layers."""
    one = [tar_layer('m/one', b'o')]
    two = [tar_layer('m/two', b't')]
    desc1, layers1 = layout.image(one)
    layout.tag('a', desc1)
    desc2, layers2 = layout.image(two)
    layout.tag('b', desc2)
    ref = 'docker://%s/team/moving:v1' % reg.host
    seen = []
    for tag, desc, layers in (('a', desc1, layers1), ('b', desc2, layers2)):
        ctx.push(layout, tag, reg, 'team/moving:v1')
        st = ctx.state()
        p = ctx.thinimg(st, ['ls', '--json', ref], reg)
        expect(p, 0)
        ls_digest = json.loads(p.stdout)['objects'][0]['digest']
        p = ctx.thinimg(st, ['fetch', '--json', ref], reg)
        expect(p, 0)
        out = json.loads(p.stdout)
        ok(ls_digest == desc['digest'] and out['ref'].endswith('@' + desc['digest']),
           'tag v1 -> %s (ls %s, fetch %s)' % (desc['digest'], ls_digest, out['ref']))
        ok([l['digest'] for l in out['layers']] == [digest(x) for x in layers],
           'layers of %s' % out['ref'])
        seen.append(out['ref'])
    ok(seen[0] != seen[1], 'the moved tag gave the same image %s' % seen)
    return p


@case
def platforms(ctx, reg, layout):
    amd, amd_layers = layout.image([tar_layer('arch', b'a')], 'amd64')
    arm, arm_layers = layout.image([tar_layer('arch', b'r')], 'arm64')
    layout.tag_index('multi', [amd, arm])
    ctx.push(layout, 'multi', reg, 'team/multi:1', ['--all'])
    st = ctx.state()
    p = ctx.thinimg(st, ['fetch', 'docker://%s/team/multi:1' % reg.host,
                         '--platform', 'linux/arm64'], reg)
    expect(p, 0)
    ok(blobs(st) == {sha(arm_layers[0])}, 'blobs %s' % blobs(st))
    st = ctx.state()
    p = ctx.thinimg(st, ['fetch', 'docker://%s/team/multi:1' % reg.host,
                         '--platform', 'linux/s390x'], reg)
    expect(p, 4, 'no manifest for platform linux/s390x (it has: linux/amd64, linux/arm64)')
    ok(blobs(st) == set(), 'blobs %s' % blobs(st))
    return p


@case
def htpasswd(ctx, _reg, layout):
    reg = Registry(os.path.join(ctx.root, 'auth-registry'),
                   htpasswd='%s:%s\n' % (USER, PASSWORD_BCRYPT))
    try:
        desc, layers = layout.image(TARS)
        layout.tag('v1', desc)
        ctx.push(layout, 'v1', reg, 'private/app:v1',
                 ['--dest-creds', '%s:%s' % (USER, PASSWORD)])
        ref = 'docker://%s/private/app:v1' % reg.host
        st = ctx.state()
        p = ctx.thinimg(st, ['fetch', ref], reg)
        expect(p, 3, 'requires credentials')
        p = ctx.thinimg(st, ['fetch', ref], reg, {'THINIMG_REGISTRY_AUTH': USER + ':wrong-pw'})
        expect(p, 3, 'authentication failed (401)')
        ok(blobs(st) == set(), 'blobs %s' % blobs(st))
        cfg = os.path.join(ctx.root, 'docker-config')
        os.makedirs(cfg, exist_ok=True)
        with open(os.path.join(cfg, 'config.json'), 'w') as f:
            json.dump({'auths': {reg.host: {'auth': base64.b64encode(
                ('%s:%s' % (USER, PASSWORD)).encode()).decode()}}}, f)
        p = ctx.thinimg(st, ['fetch', ref], reg, {'DOCKER_CONFIG': cfg})
        expect(p, 0)
        ok(blobs(st) == {sha(x) for x in layers}, 'blobs %s' % blobs(st))
        for d, _, files in os.walk(st):
            for name in files:
                with open(os.path.join(d, name), 'rb') as f:
                    ok(PASSWORD.encode() not in f.read(), 'the password is in %s' % name)
        ok(PASSWORD not in p.stderr + p.stdout, 'the password is in the output')
    finally:
        reg.stop()
    return p


def main():
    if not REGISTRY or not SKOPEO:
        print('skipped: docker-registry and skopeo are needed (scripts/install-deps.sh)')
        sys.exit(77)
    ok(BIN and os.access(BIN, os.X_OK), 'set THINIMG_BIN to the thinimg binary')
    names = sys.argv[1:]
    root = tempfile.mkdtemp(prefix='thinimg-registry-')
    failed = []
    reg = None
    try:
        reg = Registry(os.path.join(root, 'registry'))
        ctx = Ctx(root)
        for fn in CASES:
            if names and fn.__name__ not in names:
                continue
            layout = Layout(os.path.join(root, 'layout-' + fn.__name__))
            try:
                p = fn(ctx, reg, layout)
                print('ok: %-12s exit %d in %.1f s' % (fn.__name__, p.returncode, p.secs),
                      flush=True)
            except (AssertionError, subprocess.TimeoutExpired) as ex:
                failed.append(fn.__name__)
                print('FAIL: %s: %s' % (fn.__name__, ex), flush=True)
    finally:
        if reg:
            reg.stop()
        shutil.rmtree(root, ignore_errors=True)
    if failed:
        print('failed: %s' % ' '.join(failed))
        sys.exit(1)


if __name__ == '__main__':
    sys.dont_write_bytecode = True
    main()
