#!/usr/bin/env bash
# test_caches.sh: the caches the tests fill are atomic and self-checking (label unit, no VM,
# no download). A wrong entry is planted in a temporary cache and the cache code must rebuild
# or refuse it, never use it:
#   - tests/archive/debian.py's Debian tar ($XDG_CACHE_HOME/thinimg), built by a stand-in
#     mmdebstrap on PATH that, like the real one, writes a directory unless the format is tar
#     (given, or from a name ending in .tar): a directory where the tar belongs, a truncated
#     tar, a missing marker, and a builder that writes a directory;
#   - tests/pipeline/debian_image.py's image entry (on the cached Debian tar, when there is
#     one): a truncated layer and a missing marker are refused and rebuilt, leftovers swept;
#   - tests/vm/run's kernel and initramfs cache (the checks in tests/vm/cache.sh): complete
#     entries pass; a missing or wrong marker, a truncated vmlinuz or initramfs, a directory
#     where a file belongs do not; leftovers of builds cut short are swept. When a complete
#     kernel is cached on this machine, `tests/vm/run --prepare` on a copy of it rebuilds a
#     broken initramfs, and refuses a kernel entry without its marker when none can be fetched.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }
check() { # WHAT CMD...: ok when CMD succeeds
    local what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}
refuse() { # WHAT CMD...: ok when CMD fails
    local what=$1
    shift
    if "$@"; then fail "$what"; else ok "$what"; fi
}

# ---- the Debian tar of tests/archive/debian.py ----------------------------------------------
mkdir -p "$W/bin"
cat >"$W/bin/mmdebstrap" <<'PY'
#!/usr/bin/env python3
# A stand-in for mmdebstrap: a small "Debian root" (6000 entries, etc/debian_version) in the
# format the real one would choose; FAKE_MMDEBSTRAP=dir writes a directory whatever is asked.
import io, os, sys, tarfile
out = sys.argv[-1]
fmt = next((a.split('=', 1)[1] for a in sys.argv if a.startswith('--format=')), 'auto')
if fmt == 'auto':
    fmt = 'tar' if out.endswith('.tar') else 'directory'
if os.environ.get('FAKE_MMDEBSTRAP') == 'dir':
    fmt = 'directory'
with open(os.environ['FAKE_MMDEBSTRAP_COUNT'], 'a') as f:
    f.write('%s %s\n' % (fmt, os.path.basename(out)))
if fmt == 'directory':
    os.makedirs(os.path.join(out, 'etc'))
    open(os.path.join(out, 'etc/debian_version'), 'w').write('12.0\n')
    sys.exit(0)
with tarfile.open(out, 'w') as tf:
    for i in range(6000):
        name = './etc/debian_version' if i == 0 else './usr/share/f%05d' % i
        data = b'12.0\n' if i == 0 else b'x' * (i % 7)
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
PY
chmod +x "$W/bin/mmdebstrap"
export FAKE_MMDEBSTRAP_COUNT=$W/builds
: >"$FAKE_MMDEBSTRAP_COUNT"
TAR=$W/xdg/thinimg/debian-bookworm-minbase.tar
deb() { # the cache path debian.py --tar prints, or fails
    env -u THINIMG_DEBIAN_TAR XDG_CACHE_HOME="$W/xdg" PATH="$W/bin:$PATH" \
        python3 "$SRC/tests/archive/debian.py" --tar 2>"$W/deb.err"
}
builds() { wc -l <"$FAKE_MMDEBSTRAP_COUNT"; }
regular_tar() { [ -f "$TAR" ] && [ ! -L "$TAR" ] && tar -tf "$TAR" >/dev/null 2>&1 && [ -s "$TAR.ok" ]; }

check "an empty cache is built (a regular tar and its marker)" \
    bash -c "[ \"\$(XDG_CACHE_HOME='$W/xdg' PATH='$W/bin:$PATH' python3 '$SRC/tests/archive/debian.py' --tar 2>/dev/null)\" = '$TAR' ]"
check "the entry is a regular tar with a marker" regular_tar
check "mmdebstrap was asked for a tar (format given, name ending in .tar)" \
    grep -qE '^tar debian-bookworm-minbase\.tar\.tmp-[0-9]+\.tar$' "$FAKE_MMDEBSTRAP_COUNT"
n=$(builds)
deb >/dev/null
check "a good entry is used as it is (no rebuild)" [ "$(builds)" = "$n" ]

rm -f "$TAR" && mkdir -p "$TAR/etc"
deb >/dev/null
check "a directory where the tar belongs is rebuilt" [ "$(builds)" = $((n + 1)) ]
check "... into a regular tar" regular_tar

truncate -s 20000 "$TAR"
deb >/dev/null
check "a truncated tar (marker kept) is rebuilt" [ "$(builds)" = $((n + 2)) ]
check "... into a regular tar" regular_tar

rm -f "$TAR.ok"
deb >/dev/null
check "a complete tar without its marker is adopted after the full check (no rebuild)" \
    [ "$(builds)" = $((n + 2)) ]
check "... and its marker written" regular_tar

rm -f "$TAR.ok"
truncate -s 20000 "$TAR"
deb >/dev/null
check "a truncated tar without a marker is rebuilt" [ "$(builds)" = $((n + 3)) ]
check "... into a regular tar" regular_tar

echo "corrupt" >"$TAR.ok"
deb >/dev/null
check "a tar with a garbled marker is rebuilt" [ "$(builds)" = $((n + 4)) ]

truncate -s 20000 "$TAR"
if FAKE_MMDEBSTRAP=dir deb >/dev/null; then
    fail "a builder that writes a directory was accepted"
else
    ok "a builder that writes a directory is refused: $(tail -n 1 "$W/deb.err")"
fi
check "... and nothing is left in the cache (no entry, marker or temporary; the .lock stays)" \
    bash -c "[ -z \"\$(ls '$W/xdg/thinimg')\" ]"
deb >/dev/null
check "the next run builds a good entry" regular_tar

# ---- tests/vm/run's kernel and initramfs -----------------------------------------------------
# shellcheck source=tests/vm/cache.sh
source "$HERE/cache.sh"
C=$W/vmcache
K=$C/kernel-linux-image-9.9.9-amd64
KV=9.9.9-amd64
fake_kernel() {
    rm -rf "$K"
    mkdir -p "$K/root/boot" "$K/root/lib/modules/$KV"
    head -c 100000 /dev/urandom >"$K/root/boot/vmlinuz-$KV"
    echo "kernel/drivers/md/dm-thin-pool.ko:" >"$K/root/lib/modules/$KV/modules.dep"
    echo "$KV $(sha256sum <"$K/root/boot/vmlinuz-$KV" | cut -d' ' -f1)" >"$K/.done"
}
fake_kernel
check "a complete kernel entry passes" vm_cache_kernel_ok "$K"
check "its version comes from the marker" [ "$(vm_cache_kernel_version "$K")" = "$KV" ]
rm "$K/.done"
refuse "a kernel entry without its marker (half-built) fails" vm_cache_kernel_ok "$K"
fake_kernel
echo "$KV" >"$K/.done"
refuse "a kernel entry with a marker of an old format (no checksum) fails" vm_cache_kernel_ok "$K"
fake_kernel
truncate -s 5000 "$K/root/boot/vmlinuz-$KV"
refuse "a truncated vmlinuz fails its checksum" vm_cache_kernel_ok "$K"
fake_kernel
rm "$K/root/lib/modules/$KV/modules.dep"
refuse "a kernel entry without modules.dep (depmod cut short) fails" vm_cache_kernel_ok "$K"
rm -rf "$K" && echo x >"$K"
refuse "a file where the kernel directory belongs fails" vm_cache_kernel_ok "$K"
rm -f "$K"

I=$C/initramfs-$KV-0123456789abcdef.cpio.gz
mkdir -p "$W/ir/bin"
echo '#!/bin/sh' >"$W/ir/init"
head -c 200000 /dev/urandom >"$W/ir/bin/busybox"
(cd "$W/ir" && find . | cpio -o -H newc --quiet | gzip -1) >"$I"
check "a complete initramfs passes" vm_cache_initrd_ok "$I"
cp "$I" "$W/good.cpio.gz"
truncate -s $(($(stat -c %s "$I") / 2)) "$I"
refuse "a truncated initramfs fails" vm_cache_initrd_ok "$I"
(cd "$W/ir" && find bin | cpio -o -H newc --quiet | gzip -1) >"$I"
refuse "an initramfs without /init fails" vm_cache_initrd_ok "$I"
: >"$I"
refuse "an empty initramfs fails" vm_cache_initrd_ok "$I"
rm -f "$I" && mkdir -p "$I"
refuse "a directory where the initramfs belongs fails" vm_cache_initrd_ok "$I"
rm -rf "$I"

fake_kernel
cp "$W/good.cpio.gz" "$I"
mkdir -p "$C/.kernel-x.tmp.123/root" "$C/dl.77" "$C/ir.78"
: >"$C/$(basename "$I").tmp.79"
vm_cache_sweep "$C"
check "the sweep removes what builds cut short left" \
    bash -c "[ \"\$(ls -A '$C' | tr '\n' ' ')\" = '$(basename "$I") $(basename "$K") ' ]"

# tests/vm/run --prepare itself, on a copy of this machine's cached kernel entry (its marker,
# and its unpacked root through a symbolic link: nothing here writes into it).
REAL=${THINIMG_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/thinimg-vm}
RK=$(ls -d "$REAL"/kernel-*/ 2>/dev/null | sort -V | tail -n1)
RK=${RK%/}
if [ -n "$RK" ] && vm_cache_kernel_ok "$RK" && command -v qemu-system-x86_64 >/dev/null; then
    PKG=${RK##*/kernel-}
    C2=$W/vmcache2
    mkdir -p "$C2/kernel-$PKG"
    ln -s "$RK/root" "$C2/kernel-$PKG/root"
    cp "$RK/.done" "$C2/kernel-$PKG/.done"
    mkdir -p "$C2/initramfs-$(vm_cache_kernel_version "$RK")-planted.cpio.gz"
    prep() { THINIMG_VM_CACHE=$C2 THINIMG_VM_KERNEL_PKG=$1 "$HERE/run" --prepare >"$W/prep.out" 2>&1; }
    # First run: builds the initramfs. Then break it (truncate) and run again.
    prep "$PKG"
    IR=$(ls "$C2"/initramfs-*.cpio.gz 2>/dev/null | grep -v planted | head -n1)
    check "run --prepare builds a checked initramfs" vm_cache_initrd_ok "$IR"
    truncate -s 1000 "$IR"
    prep "$PKG"
    check "run --prepare rebuilds a truncated initramfs" vm_cache_initrd_ok "$IR"
    grep -q "incomplete or damaged; building it again" "$W/prep.out" &&
        ok "... and says so" || fail "no message about the damaged initramfs: $(cat "$W/prep.out")"
    rm -rf "$IR" && mkdir "$IR"
    prep "$PKG"
    check "run --prepare replaces a directory where the initramfs belongs" vm_cache_initrd_ok "$IR"
    # A kernel entry without its marker, when no kernel can be fetched: refused, not used.
    rm -rf "$C2/kernel-$PKG"
    mkdir -p "$C2/kernel-$PKG"
    ln -s "$RK/root" "$C2/kernel-$PKG/root"
    if prep "linux-image-0.0.0-thinimg-test-amd64"; then
        fail "run --prepare used a kernel entry without its marker: $(cat "$W/prep.out")"
    else
        grep -q "none is cached (complete)" "$W/prep.out" &&
            ok "run --prepare refuses a kernel entry without its marker" ||
            fail "run --prepare: $(cat "$W/prep.out")"
    fi
else
    echo "note: no complete cached VM kernel here; tests/vm/run --prepare not exercised"
fi

# ---- tests/pipeline/debian_image.py's image entry --------------------------------------------
# On a copy of this machine's cached Debian tar (a hardlink: no copy of 170 MB; the entry needs
# a real minbase), as root with umoci: one entry built, then broken so that it is rebuilt.
RT=${XDG_CACHE_HOME:-$HOME/.cache}/thinimg/debian-bookworm-minbase.tar
X=$W/img/thinimg
mkdir -p "$X"
if [ "$(id -u)" = 0 ] && command -v umoci >/dev/null && [ -s "$RT.ok" ] &&
    ln "$RT" "$X/debian-bookworm-minbase.tar" 2>/dev/null; then
    cp "$RT.ok" "$X/"
    img() { env -u THINIMG_DEBIAN_TAR XDG_CACHE_HOME="$W/img" python3 "$SRC/tests/pipeline/debian_image.py" "$@" 2>"$W/img.err"; }
    E=$(img)
    check "an image entry is built (layer tars, OCI layout, reference)" \
        bash -c "[ -s '$E/ref.json' ] && [ -s '$E/oci/index.json' ] && [ -f '$E/images/deb/2.tar' ]"
    check "--no-build finds it" [ "$(img --no-build)" = "$E" ]
    mkdir -p "$X/.debian-image-0123.tmp-77"
    truncate -s 1000 "$E/images/deb/2.tar"
    refuse "a truncated layer 2 fails the check (--no-build)" img --no-build
    check "... and the next build builds it again" [ "$(img)" = "$E" ]
    grep -q "does not check out; building it again" "$W/img.err" && ok "... and says so" ||
        fail "no message about the damaged entry: $(cat "$W/img.err")"
    check "... a good one" [ "$(img --no-build)" = "$E" ]
    check "... and the leftover of a build cut short is swept" [ ! -e "$X/.debian-image-0123.tmp-77" ]
    rm "$E/.done"
    refuse "an entry without its marker (half-built) is not used (--no-build)" img --no-build
    grep -q "it is built on the host" "$W/img.err" && ok "... and the message says where it is built" ||
        fail "--no-build: $(cat "$W/img.err")"
else
    echo "note: no cached Debian tar on this file system, or not root, or no umoci: the image entry of debian_image.py not exercised"
fi

echo "caches: $FAILS failed"
[ "$FAILS" = 0 ]
