#!/usr/bin/env bash
# bench/vm.sh: the device-mapper rows of the performance table, in one VM boot (TCG), each as
# thinimg ÷ its baseline measured in the same boot (bench/lib.sh format):
#
#   mkfs of a base layer device (8 GiB)          vs mkfs zeroing inode tables and journal
#                                                   (the options thinimg used before)
#   pool data used by a fresh base layer's mkfs  vs the same zeroing mkfs        goal <= 0.10
#   a new activation via process-image --name    vs thinimg activate --name      goal <= 1.5
#   thinimg activate CLI                         vs two dmsetup processes (create_snap
#                                                   message + create with the table)  goal <= 1.2
#   process-image of a real Debian layer (blob already fetched)
#                                                vs shell: create thin + mkfs + mount + GNU tar
#                                                   + umount + snapshot          goal <= 1.10
#   pool data used by debian:1 + tools:2 + slim:3
#                                                vs the unique layers' bytes on ext4 (du of each
#                                                   extracted on a fresh ext4)   goal <= 1.10
#
#   bench/vm.sh [BUILD_DIR] [RUNS]         (defaults: build, 5; use a Release build)
#   ROWS="mkfs activate debian dedup" selects rows (default: all; "activate" prints both
#   activation rows). BENCH_PROFILE=1 also prints, untimed, on stderr: process start, database open and
#   health check times, and the debug log of one more activate and process-image --name.
#
# The Debian layer is the archive tests' cached minbase root (tests/archive/debian.py --tar,
# ~170 MB, ~9k entries), copied to the guest tmpfs; the activation rows use the example
# busybox image ($BUILD/example). Each Debian run starts from a fresh state directory and pool
# with the blob fetched (untimed); the shell baseline uses a raw pool made with dmsetup. The
# dedup row's images (bench/make-dedup-layers.py: the Debian layer, a tools layer on it, a
# slimming layer with whiteouts on that) are made on the host once, in $BUILD/bench-images.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
RUNS="${2:-5}"
ROWS="${ROWS:-mkfs activate debian dedup}"
BUILD="$(cd "$BUILD" && pwd)"
for f in thinimg bench/mkfs_bench example/images/busybox/3.tar; do
    [ -e "$BUILD/$f" ] || { echo "build first: cmake --build $BUILD (missing $f)" >&2; exit 2; }
done
if [ -z "${THINIMG_VM:-}" ]; then
    DEB=$(python3 tests/archive/debian.py --tar)
    DEDUP="$BUILD/bench-images/dedup"
    if [[ " $ROWS " == *" dedup "* ]] && [ ! -f "$DEDUP/images/slim/3.tar" ]; then
        python3 bench/make-dedup-layers.py "$DEB" "$DEDUP"
    fi
    exec tests/vm/run --mem 4096 --timeout 3000 -- env BENCH_DEBIAN="$DEB" BENCH_DEDUP="$DEDUP" \
        ROWS="$ROWS" bash "$0" "$BUILD" "$RUNS"
fi
source bench/lib.sh
export THINIMG_HEALTH_TIMEOUT_MS=30000 # emulated: a health check may take seconds
T="$BUILD/thinimg --log-level warn"
W="$(mktemp -d "$THINIMG_VM_TMP/benchvm.XXXXXX")"
RAW=rawb
SECTORS_8G=$((8 << 21))

teardown() { # teardown POOL STATE: every device of POOL, its loops, its state directory
    local pool=$1 st=$2
    for d in $(dmsetup ls 2>/dev/null | awk '{print $1}' | grep "^$pool" | sort -r); do
        dmsetup remove "$d" >/dev/null 2>&1 || true
    done
    for l in $(losetup -nO NAME,BACK-FILE | awk -v w="$st" 'index($2, w) == 1 {print $1}'); do
        losetup -d "$l" || true
    done
    rm -rf "$st"
}
trap 'teardown $RAW "$W/raw"; teardown benchv "$W/state"; rm -rf "$W"' EXIT

# The raw pool (dmsetup only): sparse files on the guest tmpfs, zeroing on (the default).
# Made afresh for each Debian baseline run (raw_pool_new): the pool's allocator moves on
# through its data file, and freed blocks stay allocated in the tmpfs file, so one pool for
# every run would fill the guest's tmpfs (half its memory).
raw_pool_new() {
    teardown $RAW "$W/raw"
    mkdir -p "$W/raw"
    truncate -s 4G "$W/raw/data"
    truncate -s 64M "$W/raw/meta"
    LD=$(losetup -f --show "$W/raw/data")
    LM=$(losetup -f --show "$W/raw/meta")
    dd if=/dev/zero of="$LM" bs=4096 count=1 status=none
    dmsetup create $RAW --table "0 $((4 << 21)) thin-pool $LM $LD 128 32768 1 error_if_no_space"
    RAWID=0
}
raw_pool_new
raw_thin() { # raw_thin SECTORS: a new thin device of the raw pool, id RAWID, named RAWNAME
    RAWID=$((RAWID + 1))
    RAWNAME="$RAW-t$RAWID"
    dmsetup message $RAW 0 "create_thin $RAWID"
    dmsetup create "$RAWNAME" --table "0 $1 thin /dev/mapper/$RAW $RAWID"
}
raw_drop() { # raw_drop NAME ID...: remove the device and delete the ids (untimed)
    dmsetup remove "$1"
    shift
    for id in "$@"; do dmsetup message $RAW 0 "delete $id"; done
}
mapped() { dmsetup status "$1" | awk '{printf "%.1f", $4 * 512 / 1048576}'; } # MiB

if [[ " $ROWS " == *" mkfs "* ]]; then
    a="" b="" pa="" pb=""
    for ((i = 0; i < RUNS; i++)); do
        for side in $( ((i % 2)) && echo "old new" || echo "new old"); do
            raw_thin $SECTORS_8G
            d=$RAWNAME
            if [ "$side" = new ]; then
                a+="$("$BUILD/bench/mkfs_bench" "/dev/mapper/$d") "
                pa+="$(mapped "$d") "
            else
                t0=$(now_s)
                mkfs.ext4 -q -F -m 0 -J size=8 -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 \
                    "/dev/mapper/$d"
                t1=$(now_s)
                b+="$(elapsed "$t0" "$t1") "
                pb+="$(mapped "$d") "
            fi
            e2fsck -fn "/dev/mapper/$d" >/dev/null 2>&1 || { echo "e2fsck -fn of $d failed" >&2; exit 1; }
            raw_drop "$d" $RAWID
        done
    done
    bench_row "mkfs of a base layer device (8 GiB), VM" "zeroing mkfs" - s "$a" "$b"
    bench_row "pool data used by a fresh base layer (8 GiB), VM" "zeroing mkfs" 0.10 MiB "$pa" "$pb"
fi

if [[ " $ROWS " == *" activate "* ]]; then
    export THINIMG_STATE_DIR="$W/state" THINIMG_POOL=benchv
    $T setup-pool --data-size 512M >/dev/null
    $T health >/dev/null 2>&1 || true # acknowledge older kernel log lines
    REF="dir:$BUILD/example/images/busybox/"
    $T -q process-image --device-size 1G "$REF" >/dev/null
    # The CLI row's baseline: the same two steps by hand on the raw pool, a snapshot of an
    # inactive 1 GiB origin and its dm device, one dmsetup process each.
    raw_thin $((1 << 21))
    dmsetup remove "$RAWNAME"
    ORIG=$RAWID
    a="" b="" c=""
    for ((i = 0; i < RUNS; i++)); do
        t0=$(now_s)
        $T -q process-image --name "viap$i" "$REF" >/dev/null
        t1=$(now_s)
        $T -q activate --name "vact$i" busybox:3 >/dev/null
        t2=$(now_s)
        RAWID=$((RAWID + 1))
        dmsetup message $RAW 0 "create_snap $RAWID $ORIG"
        dmsetup create "$RAW-a$RAWID" --table "0 $((1 << 21)) thin /dev/mapper/$RAW $RAWID"
        t3=$(now_s)
        a+="$(elapsed "$t0" "$t1") "
        b+="$(elapsed "$t1" "$t2") "
        c+="$(elapsed "$t2" "$t3") "
    done
    bench_row "a new activation via process-image --name, VM" "activate --name" 1.5 s "$a" "$b"
    bench_row "thinimg activate CLI, VM" "two dmsetup processes (create_snap + create)" 1.2 s \
        "$b" "$c"
    if [ -n "${BENCH_PROFILE:-}" ]; then # where an activation's time goes (stderr, untimed)
        prof() { # prof WHAT CMD...: five runs' seconds
            local what=$1 v="" t0 t1 k
            shift
            for k in 1 2 3 4 5; do
                t0=$(now_s)
                "$@" >/dev/null 2>&1 || true
                t1=$(now_s)
                v+="$(elapsed "$t0" "$t1") "
            done
            echo "profile: $what: $v" >&2
        }
        prof "thinimg version (process start)" "$BUILD/thinimg" version
        prof "dmsetup version (process start)" dmsetup version
        prof "thinimg list-images (start + database)" $T list-images
        prof "thinimg health" $T health
        LD_DEBUG=statistics "$BUILD/thinimg" version 2>&1 >/dev/null |
            grep -E "total startup time|time needed for relocation" >&2 || true
        for cmd in "activate --name vprof busybox:3" "process-image --name vprof2 $REF"; do
            echo "profile: $cmd: started $(now_s)" >&2
            $T --log-level debug $cmd 2>&1 >/dev/null | grep -vE "libdevmapper" | cut -c1-220 >&2
            echo "profile: $cmd: ended $(now_s)" >&2
        done
    fi
    teardown benchv "$W/state"
    unset THINIMG_STATE_DIR THINIMG_POOL
fi

if [[ " $ROWS " == *" debian "* ]]; then
    mkdir -p "$W/src/images/debian" "$W/mnt"
    cp "$BENCH_DEBIAN" "$W/src/images/debian/1.tar"
    DEB="$W/src/images/debian/1.tar"
    a="" b=""
    for ((i = 0; i < RUNS; i++)); do
        for side in $( ((i % 2)) && echo "shell thinimg" || echo "thinimg shell"); do
            if [ "$side" = thinimg ]; then
                export THINIMG_STATE_DIR="$W/state" THINIMG_POOL=benchv
                $T setup-pool --data-size 512M >/dev/null # the layer: ~180 MiB mapped
                $T health >/dev/null 2>&1 || true
                $T fetch "dir:$W/src/images/debian/" >/dev/null
                sync
                t0=$(now_s)
                $T process-image --device-size 8G "dir:$W/src/images/debian/" >/dev/null
                t1=$(now_s)
                a+="$(elapsed "$t0" "$t1") "
                teardown benchv "$W/state"
                unset THINIMG_STATE_DIR THINIMG_POOL
            else
                raw_pool_new
                sync
                t0=$(now_s)
                raw_thin $SECTORS_8G
                d=$RAWNAME
                base=$RAWID
                mkfs.ext4 -q -E nodiscard "/dev/mapper/$d"
                mount -o nosuid,nodev "/dev/mapper/$d" "$W/mnt"
                tar -xpf "$DEB" --same-owner -C "$W/mnt"
                umount "$W/mnt"
                dmsetup remove "$d"
                RAWID=$((RAWID + 1))
                dmsetup message $RAW 0 "create_snap $RAWID $base"
                dmsetup create "$RAW-s$RAWID" --table "0 $SECTORS_8G thin /dev/mapper/$RAW $RAWID"
                t1=$(now_s)
                b+="$(elapsed "$t0" "$t1") "
                raw_drop "$RAW-s$RAWID" "$base" "$RAWID"
            fi
        done
    done
    bench_row "process-image of a real Debian layer (blob already fetched), VM" \
        "shell (thin + mkfs + mount + GNU tar + umount + snapshot)" 1.10 s "$a" "$b"
fi

if [[ " $ROWS " == *" dedup "* ]]; then
    # Space, not time: thinimg's pool after the three images against what their three unique
    # layers take as files on ext4 (du: data and directory blocks, no inode tables or journal).
    S="$BENCH_DEDUP/images"
    mkdir -p "$W/mnt"
    a="" b=""
    for ((i = 0; i < RUNS; i++)); do
        export THINIMG_STATE_DIR="$W/state" THINIMG_POOL=benchv
        $T setup-pool --data-size 1G >/dev/null
        for img in debian tools slim; do $T process-image "dir:$S/$img/" >/dev/null; done
        pool=$(dmsetup ls --target thin-pool | awk '$1 ~ /^benchv/ {print $1; exit}')
        [ -n "$pool" ] || { echo "bench/vm.sh: no thin-pool of benchv after the images" >&2; exit 1; }
        bs=$(dmsetup table "$pool" | awk '{print $6}') # data block size, sectors
        a+="$(dmsetup status "$pool" | awk -v bs="$bs" '{split($6, u, "/"); printf "%.1f", u[1] * bs * 512 / 1048576}') "
        teardown benchv "$W/state"
        unset THINIMG_STATE_DIR THINIMG_POOL
        raw_pool_new
        raw_thin $SECTORS_8G
        mkfs.ext4 -q -E nodiscard "/dev/mapper/$RAWNAME"
        mount -o nosuid,nodev "/dev/mapper/$RAWNAME" "$W/mnt"
        for l in debian/1.tar tools/2.tar slim/3.tar; do
            mkdir -p "$W/mnt/${l%%/*}"
            tar -xpf "$S/$l" --same-owner -C "$W/mnt/${l%%/*}"
        done
        b+="$(du -s -B1 "$W/mnt/debian" "$W/mnt/tools" "$W/mnt/slim" | awk '{t += $1} END {printf "%.1f", t / 1048576}') "
        umount "$W/mnt"
        raw_drop "$RAWNAME" $RAWID
    done
    bench_row "pool data used by debian:1 + tools:2 + slim:3, VM" "unique layers' bytes on ext4" 1.10 MiB "$a" "$b"
fi
