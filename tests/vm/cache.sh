# tests/vm/cache.sh: the checks of tests/vm/run's cache (sourced by it and by
# tests/vm/test_cache.sh). An entry is built under a temporary name in the cache directory,
# checked with these functions and only then renamed into place; at use it is checked again,
# and one that fails (half-built, truncated, a directory where a file belongs, no marker) is
# rebuilt, never trusted.
#
#   kernel-<pkg>/         root/ (the unpacked .deb, depmod run) and .done, written last:
#                         "<kernel version> <sha256 of root/boot/vmlinuz-<version>>"
#   initramfs-<kver>-<key>.cpio.gz   a complete gzip'd newc cpio holding /init

# vm_cache_kernel_ok DIR: the kernel entry is complete (0) or not (1).
vm_cache_kernel_ok() {
    local d=$1 kver sum rest
    [ -d "$d" ] && [ ! -L "$d" ] && [ -f "$d/.done" ] || return 1
    read -r kver sum rest <"$d/.done" || return 1
    [ -n "$kver" ] && [ ${#sum} = 64 ] && [ -z "$rest" ] || return 1
    [ -f "$d/root/boot/vmlinuz-$kver" ] && [ -s "$d/root/lib/modules/$kver/modules.dep" ] ||
        return 1
    [ "$(sha256sum <"$d/root/boot/vmlinuz-$kver" | cut -d' ' -f1)" = "$sum" ]
}

# vm_cache_kernel_version DIR: the kernel version its marker names.
vm_cache_kernel_version() {
    local kver _
    read -r kver _ <"$1/.done" && echo "$kver"
}

# vm_cache_kernel_seal DIR: run depmod and write the marker (last), then check the entry.
vm_cache_kernel_seal() {
    local d=$1 kver sum
    kver=$(ls "$d/root/lib/modules" 2>/dev/null | head -n1)
    [ -n "$kver" ] && [ -f "$d/root/boot/vmlinuz-$kver" ] || return 1
    depmod -b "$d/root" "$kver" || return 1
    sum=$(sha256sum <"$d/root/boot/vmlinuz-$kver" | cut -d' ' -f1)
    echo "$kver $sum" >"$d/.done.tmp" && mv "$d/.done.tmp" "$d/.done"
    vm_cache_kernel_ok "$d"
}

# vm_cache_initrd_ok FILE: a regular, complete gzip'd cpio archive with /init (0) or not (1).
vm_cache_initrd_ok() {
    local list
    [ -f "$1" ] && [ ! -L "$1" ] && [ -s "$1" ] || return 1
    list=$(gzip -dc "$1" 2>/dev/null | cpio -it --quiet 2>/dev/null) || return 1
    grep -qx 'init' <<<"$list"
}

# vm_cache_put TMP FINAL: replace FINAL (whatever it is: a bad entry, a directory) by TMP.
vm_cache_put() {
    rm -rf "$2"
    mv -T "$1" "$2"
}

# vm_cache_sweep CACHE: remove what builds cut short left behind (temporary names). Call with
# the cache lock held: no build is running then.
vm_cache_sweep() {
    rm -rf "$1"/.kernel-*.tmp.* "$1"/dl.* "$1"/ir.* "$1"/initramfs-*.tmp*
}
