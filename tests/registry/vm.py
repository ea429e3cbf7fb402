#!/usr/bin/env python3
"""vm.py BUILD_DIR: registry images processed end to end with real device-mapper (label dm:
runs inside the VM, tests/vm/run; issue 19).

Inside the VM (loopback only) it starts Debian's docker-registry on 127.0.0.1, pushes with
skopeo an image of three layers (directories, a symlink, a hardlink, modes, a whiteout in the
top layer), gzip'd and again zstd'd, and:

  1. processes a dir: family holding the two lower layers as plain tars;
  2. processes the gzip registry image: its two lower layer devices are the dir: family's
     (chain ids come from diff ids, whatever the compression), the top one is new;
  3. processes the zstd image: the same three devices;
  4. mounts the activation read-only and compares it, entry by entry (type, mode, owner,
     size, content, link target, hardlink groups, mtime), with a reference unpack made by GNU
     tar of the uncompressed layers, whiteouts applied by hand;
  5. processes a two-platform index (amd64 and arm64 top layers over the shared bottom one)
     with --platform linux/arm64 and with the default platform (linux/amd64 here), and
     compares each activation with its own platform's layers;
  6. processes a tag, pushes other content to it, processes it again (another activation
     name): a new image with the new content, the old activation compared again, unchanged;
  7. list-images --json shows the image config's run settings (entrypoint, env, working dir,
     user) and gc keeps the manifest and config blobs.

Run (one dm test in the VM):
  flock /tmp/thinimg-vm.lock tests/vm/run --timeout 1500 -- ctest --test-dir $PWD/build-check \\
      -R '^registry_vm$' --output-on-failure
"""
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import real  # noqa: E402  (Registry, Layout, Ctx: the registry_real driver's pieces)

BUILD = sys.argv[1] if len(sys.argv) > 1 else os.environ.get('THINIMG_BUILD_DIR', '')
BIN = os.path.join(BUILD, 'thinimg')
TREECMP = os.path.join(HERE, '..', 'archive', 'treecmp.py')
# Under TCG emulation and ASan a process-image of three small layers takes tens of seconds.
STEP_TIMEOUT_S = 600


def ok(cond, what):
    if not cond:
        print('FAIL: ' + what, flush=True)
        sys.exit(1)


def layer(entries):
    """A tar of (name, kind, data/target, mode) entries; kind f, d, l (symlink), h (hardlink)."""
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode='w', format=tarfile.PAX_FORMAT) as t:
        for name, kind, data, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime, ti.mode, ti.uid, ti.gid = 1700000000, mode, 1000, 1000
            if kind == 'd':
                ti.type = tarfile.DIRTYPE
                t.addfile(ti)
            elif kind == 'l':
                ti.type, ti.linkname = tarfile.SYMTYPE, data
                t.addfile(ti)
            elif kind == 'h':
                ti.type, ti.linkname = tarfile.LNKTYPE, data
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return b.getvalue()


LAYERS = [
    layer([('etc', 'd', None, 0o755), ('etc/os-release', 'f', b'ID=test\n' * 100, 0o644),
           ('bin', 'd', None, 0o755), ('bin/tool', 'f', os.urandom(200 * 1024), 0o755),
           ('bin/link', 'l', 'tool', 0o777), ('etc/old.conf', 'f', b'old\n', 0o600)]),
    layer([('usr', 'd', None, 0o755), ('usr/lib', 'd', None, 0o755),
           ('usr/lib/data', 'f', b'x' * 300000, 0o644),
           ('usr/lib/data-hard', 'h', 'usr/lib/data', 0o644),
           ('usr/lib/abs', 'l', '/etc/os-release', 0o777)]),
    layer([('etc', 'd', None, 0o755), ('etc/.wh.old.conf', 'f', b'', 0o644),
           ('srv', 'd', None, 0o750), ('srv/app.sh', 'f', b'#!/bin/sh\necho hi\n', 0o4755)]),
]
RUN_CONFIG = {'Entrypoint': ['/srv/app.sh'], 'Cmd': ['--serve'], 'Env': ['PATH=/bin', 'A=1'],
              'WorkingDir': '/srv', 'User': '1000:1000'}


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def thinimg(state, args, env):
    t0 = time.monotonic()
    p = subprocess.run([BIN, '--state-dir', state, '--log-level', 'warn'] + args,
                       capture_output=True, text=True, env=env, timeout=STEP_TIMEOUT_S)
    ok(p.returncode == 0, '%s: exit %d: %s' % (' '.join(args), p.returncode, p.stderr[-3000:]))
    print('  %s: %.1f s' % (' '.join(args[:2]), time.monotonic() - t0), flush=True)
    return json.loads(p.stdout) if '--json' in args else p.stdout


def devices(p):
    return [l['device_id'] for l in p['layers']]


def reference(root, work, layers):
    """GNU tar of each uncompressed layer in order, OCI whiteouts applied by hand."""
    os.makedirs(root)
    for i, data in enumerate(layers):
        path = os.path.join(work, 'ref%d.tar' % i)
        with open(path, 'wb') as f:
            f.write(data)
        sh(['tar', '-x', '--numeric-owner', '-p', '-f', path, '-C', root])
        for d, dirs, files in os.walk(root):
            for n in files:
                if n.startswith('.wh.'):
                    target = os.path.join(d, n[4:])
                    if os.path.isdir(target) and not os.path.islink(target):
                        shutil.rmtree(target)
                    elif os.path.lexists(target):
                        os.unlink(target)
                    os.unlink(os.path.join(d, n))


def same_as_reference(device, layers, work, what, absent=()):
    """Mounts the activation device read-only and compares it, entry by entry (type, mode,
    owner, size, content, link target, hardlink groups, mtime), with GNU tar of the layers (a
    fresh reference each time), the paths in absent not there; unmounts it."""
    mnt, ref = tempfile.mkdtemp(dir=work), tempfile.mkdtemp(dir=work)
    os.rmdir(ref)
    sh(['mount', '-o', 'ro', device, mnt])
    try:
        reference(ref, work, layers)
        c = subprocess.run([sys.executable, TREECMP, mnt, ref, '--no-dir-mtime', '--ignore',
                            'lost+found', '--ignore', '.'], capture_output=True, text=True)
        ok(c.returncode == 0, '%s: the activation differs from GNU tar of its layers:\n%s%s'
           % (what, c.stdout[-3000:], c.stderr[-2000:]))
        for path in absent:
            ok(not os.path.lexists(os.path.join(mnt, path)), '%s: %s is there' % (what, path))
    finally:
        subprocess.run(['umount', mnt], capture_output=True)


def processed(state, env, ref, name, extra=()):
    return thinimg(state, ['process-image', '--device-size', '128M', '--json', '--name', name,
                           *extra, ref], env)


def platforms(work, state, env, ctx, layout, reg, base):
    """A two-platform index (different content over a shared bottom layer), processed once
    with --platform linux/arm64 and once with the default platform (the VM is x86_64:
    linux/amd64): each activation is its own platform's layers, byte for byte."""
    tars = {'amd64': [LAYERS[0], real.tar_layer('arch', b'a')],
            'arm64': [LAYERS[0], real.tar_layer('arch', b'r')]}
    layout.tag_index('multi', [layout.image(tars[a], a)[0] for a in ('amd64', 'arm64')])
    ctx.push(layout, 'multi', reg, 'team/multi:1', ['--all'])
    ref = 'docker://%s/team/multi:1' % reg.host
    arm = processed(state, env, ref, 'multi-arm', ['--platform', 'linux/arm64'])
    amd = processed(state, env, ref, 'multi-default')
    ok(arm['ref'] != amd['ref'], 'one image for both platforms: %s' % arm['ref'])
    for p, arch in ((arm, 'arm64'), (amd, 'amd64')):
        ok(devices(p)[0] == base and len(devices(p)) == 2,
           '%s devices %s, shared bottom %s' % (arch, devices(p), base))
        same_as_reference(p['device_path'], tars[arch], work, 'linux/' + arch)
    ok(devices(arm)[1] != devices(amd)[1], 'one top device for both platforms')
    print('ok: the two-platform index: --platform linux/arm64 and the default (linux/amd64) '
          'each activate their own content', flush=True)


def moved_tag(work, state, env, ctx, layout, reg, base):
    """A tag processed, pushed again with other content, processed again (another activation
    name: the first one is still active): a new image whose activation is the new content, its
    bottom device still the shared one, the old image's activation unchanged."""
    tars = [[LAYERS[0], real.tar_layer('moved', fill)] for fill in (b'1', b'2')]
    ref = 'docker://%s/team/moving:v1' % reg.host
    got = []
    for i, t in enumerate(tars):
        desc, _ = layout.image(t)
        layout.tag('moving%d' % i, desc)
        ctx.push(layout, 'moving%d' % i, reg, 'team/moving:v1')
        got.append(processed(state, env, ref, 'moving%d' % i))
        ok(got[i]['ref'].endswith('@' + desc['digest']) and got[i]['outcome'] != 'handoff',
           'tag v1 -> %s, processed %s (%s)' % (desc['digest'], got[i]['ref'],
                                                got[i]['outcome']))
    ok(devices(got[0])[0] == devices(got[1])[0] == base and
       devices(got[0])[1] != devices(got[1])[1],
       'devices before the move %s, after %s, shared bottom %s' % (devices(got[0]),
                                                                  devices(got[1]), base))
    same_as_reference(got[1]['device_path'], tars[1], work, 'the moved tag')
    same_as_reference(got[0]['device_path'], tars[0], work, 'the image before the move')
    print('ok: the moved tag is a new image with the new content; the old one is intact',
          flush=True)


def main():
    ok(os.access(BIN, os.X_OK), 'no thinimg binary at %s' % BIN)
    if not real.REGISTRY or not real.SKOPEO:
        print('skipped: docker-registry and skopeo are needed (scripts/install-deps.sh)')
        sys.exit(77)
    # The VM has no network, only a loopback that may be down.
    ip = shutil.which('ip') or '/sbin/ip'
    if os.access(ip, os.X_OK):
        subprocess.run([ip, 'link', 'set', 'lo', 'up'], capture_output=True)
    work = tempfile.mkdtemp(prefix='thinimg-regvm-',
                            dir=os.environ.get('THINIMG_VM_TMP') or None)
    pool = 'regvm%d' % os.getpid()
    state = os.path.join(work, 'state')
    env = dict(os.environ, THINIMG_POOL=pool, THINIMG_HEALTH_TIMEOUT_MS='30000',
               DOCKER_CONFIG=os.path.join(work, 'no-docker-config'))
    reg = None
    try:
        reg = real.Registry(os.path.join(work, 'registry'))
        env['THINIMG_INSECURE_REGISTRY'] = reg.host
        ctx = real.Ctx(work)
        layout = real.Layout(os.path.join(work, 'layout'))
        desc, _ = layout.image(LAYERS)
        # The image's run settings, as a builder would write them.
        def blob_json(d):
            with open(os.path.join(layout.root, 'blobs', 'sha256', d.split(':')[1])) as f:
                return json.load(f)
        man = blob_json(desc['digest'])
        cfg = blob_json(man['config']['digest'])
        cfg['config'] = RUN_CONFIG
        new_cfg = json.dumps(cfg).encode()
        man['config'].update(layout.blob(new_cfg))
        desc = dict(layout.blob(json.dumps(man).encode()),
                    mediaType='application/vnd.oci.image.manifest.v1+json')
        layout.tag('v1', desc)
        ctx.push(layout, 'v1', reg, 'team/app:v1')
        ctx.push(layout, 'v1', reg, 'team/app-zstd:v1',
                 ['--dest-compress-format', 'zstd', '--dest-compress'])
        print('ok: registry on %s with team/app:v1 (gzip) and team/app-zstd:v1' % reg.host,
              flush=True)

        fam = os.path.join(work, 'src', 'images', 'base')
        os.makedirs(fam)
        for i in range(2):
            with open(os.path.join(fam, '%d.tar' % (i + 1)), 'wb') as f:
                f.write(LAYERS[i])
        thinimg(state, ['setup-pool', '--data-size', '512M'], env)
        subprocess.run([BIN, '--state-dir', state, 'health'], capture_output=True, env=env)
        p0 = thinimg(state, ['process-image', '--device-size', '128M', '--json',
                             'dir:%s/' % fam], env)
        p1 = thinimg(state, ['process-image', '--device-size', '128M', '--json',
                             'docker://%s/team/app:v1' % reg.host], env)
        ok(devices(p1)[:2] == devices(p0) and devices(p1)[2] not in devices(p0),
           'layer devices: dir: %s, registry %s' % (devices(p0), devices(p1)))
        print('ok: the gzip registry image shares its lower devices %s with the dir: family'
              % devices(p0), flush=True)
        p2 = thinimg(state, ['process-image', '--device-size', '128M', '--json', '--name',
                             'zst', 'docker://%s/team/app-zstd:v1' % reg.host], env)
        ok(devices(p2) == devices(p1), 'zstd devices %s, gzip %s' % (devices(p2), devices(p1)))
        print('ok: the zstd image uses the same devices %s' % devices(p1), flush=True)

        same_as_reference(p1['device_path'], LAYERS, work, 'the gzip image',
                          absent=['etc/old.conf'])
        print('ok: the activation equals GNU tar of the uncompressed layers, entry by entry',
              flush=True)
        t0 = time.monotonic()
        platforms(work, state, env, ctx, layout, reg, devices(p0)[0])
        moved_tag(work, state, env, ctx, layout, reg, devices(p0)[0])
        print('ok: two-platform index and moved tag in %.1f s' % (time.monotonic() - t0),
              flush=True)

        imgs = thinimg(state, ['list-images', '--json'], env)
        img = [i for i in imgs if i['ref'].startswith('docker://%s/team/app@' % reg.host)]
        ok(len(img) == 1, 'list-images: %s' % [i['ref'] for i in imgs])
        run = img[0].get('config', {}).get('run', {})
        ok(run.get('entrypoint') == RUN_CONFIG['Entrypoint'] and
           run.get('env') == RUN_CONFIG['Env'] and run.get('working_dir') == '/srv' and
           run.get('user') == '1000:1000', 'config shown: %s' % img[0].get('config'))
        gc = subprocess.run([BIN, '--state-dir', state, 'gc', '--blobs', '--json'],
                            capture_output=True, text=True, env=env)
        ok(img[0]['config']['config_digest'].split(':')[1] not in gc.stdout,
           'gc would remove the config blob: %s' % gc.stdout[-2000:])
        print('ok: list-images --json shows the run settings; gc keeps the config blob',
              flush=True)
    finally:
        if reg:
            reg.stop()
        out = subprocess.run(['dmsetup', 'ls'], capture_output=True, text=True).stdout
        for name in [l.split()[0] for l in out.splitlines() if l.startswith(pool + '-')]:
            subprocess.run(['dmsetup', 'remove', name], capture_output=True)
        subprocess.run(['dmsetup', 'remove', pool], capture_output=True)
        # The pool's loop devices keep their files' blocks after the files are deleted, in
        # the guest tmpfs the VM suite's tests share.
        loops = subprocess.run(['losetup', '-nO', 'NAME,BACK-FILE'], capture_output=True,
                               text=True).stdout
        for line in loops.splitlines():
            if '/%s-' % pool in line:
                subprocess.run(['losetup', '-d', line.split()[0]], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
