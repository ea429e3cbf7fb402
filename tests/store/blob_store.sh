#!/usr/bin/env bash
# blob_store.sh BUILD CASE: the blob store against a hostile disk and hostile inputs, through
# the real `thinimg fetch` / `gc` commands (no device-mapper needed). One CTest test per CASE
# (tests/store/tests.cmake):
#
#   integrity  a blob changed on disk (in place, mtime put back) is never reused: the next
#              fetch quarantines it (STATE/blobs/quarantine, a blob_quarantine row) and fetches
#              it again, also when the same bytes come from another location (dedup); an
#              untouched blob is reused with one stat (its seal's verified_at_ms unchanged)
#   nospace    a blob larger than the free space fails at once ("not enough space", exit 3),
#              a disk that fills during the transfer likewise, with no partial file left;
#              with room, the same fetch succeeds
#   dbfull     the disk fills while the record step writes the database: the reserve is
#              released, the run is recorded (exit 0, no "cannot rollback"), within bounds
#   secrets    http://alice:s3cr3t@... reaches the server but not the database, its WAL, the
#              logs, the output or `runs --json`; database, WAL, SHM, lock and blob store are
#              owner-only with umask 000
#   relstate   a relative --state-dir from directory A, `gc --blobs --force` from directory B:
#              the blob file is really gone; a file already gone is not reported "deleted"
#   signal     SIGTERM during a download: exit 130, the run stays unfinished, the next fetch
#              resumes it and succeeds
#   inflight   a fetch held, then killed -9, between moving the verified blob into the store
#              and deleting its download record: `gc --dry-run` lists nothing of it (the record
#              belongs to the unfinished run, file or not), and the next fetch finishes the run
#
# Every thinimg command is bounded (a hang fails the test) and measured: "measure: NAME
# wall=S rss=KiB" lines give its elapsed time and peak RSS (GNU time), each checked against a
# bound. Needs root for the tmpfs cases (else exit 77: skipped).
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

BUILD=${1:?usage: $0 BUILD CASE}
CASE=${2:?usage: $0 BUILD CASE}
BIN=${THINIMG_TEST_BIN:-$BUILD/thinimg}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ -x "$BIN" ] || fail "no thinimg binary at $BIN"
BIN=$(realpath "$BIN")
command -v sqlite3 >/dev/null || fail "missing tool sqlite3"
[ -x /usr/bin/time ] || fail "missing tool /usr/bin/time (Debian package time)"

# Bounds. A command's time bound is generous for an ASan build on a loaded 2-core machine; a
# run-away (the old retry loop on a full disk) exceeds it by far. RSS: an ASan build of
# thinimg peaks around 60-100 MiB here; a leak per retry or a buffered blob would not fit.
CMD_LIMIT_S=60
FAIL_FAST_S=20
RSS_LIMIT_KIB=$((400 * 1024))

W=$(mktemp -d "${TMPDIR:-/tmp}/thinimg-store-$CASE-XXXXXX")
MOUNTS=()
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT

export THINIMG_LOG_LEVEL=info

# ti NAME ARGS...: run thinimg bounded and measured; sets RC, leaves $W/NAME.out and .err.
ti() {
    local name=$1
    shift
    set +e
    /usr/bin/time -f '%e %M' -o "$W/$name.time" timeout -s KILL "$CMD_LIMIT_S" "$BIN" "$@" \
        >"$W/$name.out" 2>"$W/$name.err"
    RC=$?
    set -e
    measure "$name"
}

# measure NAME: print and check the time and peak RSS GNU time recorded for NAME.
measure() {
    local name=$1 wall rss
    read -r wall rss < <(tail -n 1 "$W/$name.time")
    echo "measure: $name wall=${wall}s rss=${rss}KiB rc=$RC"
    [ "$rss" -le "$RSS_LIMIT_KIB" ] || fail "$name: peak RSS ${rss} KiB over ${RSS_LIMIT_KIB}"
    awk -v w="$wall" -v l="$CMD_LIMIT_S" 'BEGIN { exit !(w < l) }' ||
        fail "$name: ran ${wall}s, not under ${CMD_LIMIT_S}s"
    LAST_WALL=$wall
}

# bg NAME ARGS...: start thinimg measured in the background; PID of GNU time in BGPID and of
# thinimg in TIPID.
bg() {
    local name=$1
    shift
    /usr/bin/time -f '%e %M' -o "$W/$name.time" "$BIN" "$@" >"$W/$name.out" 2>"$W/$name.err" &
    BGPID=$!
    PIDS+=("$BGPID")
    TIPID=
    for _ in $(seq 200); do
        TIPID=$(cat "/proc/$BGPID/task/$BGPID/children" 2>/dev/null | awk '{print $1}')
        [ -n "$TIPID" ] && break
        sleep 0.05
    done
    [ -n "$TIPID" ] || fail "$name: thinimg did not start"
}

# bg_wait NAME LIMIT_S: wait for the background command; SIGKILL and fail past the limit.
bg_wait() {
    local name=$1 limit=$2 t=0
    while kill -0 "$BGPID" 2>/dev/null; do
        if [ "$t" -ge $((limit * 10)) ]; then
            kill -KILL "$TIPID" 2>/dev/null || true
            fail "$name: still running after ${limit}s"
        fi
        sleep 0.1
        t=$((t + 1))
    done
    set +e
    wait "$BGPID"
    RC=$?
    set -e
    measure "$name"
}

# wait_stopped PID: until the process is stopped by its ":stop" fault point.
wait_stopped() {
    for _ in $(seq 600); do
        [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = T ] && return 0
        sleep 0.05
    done
    fail "process $1 never reached its fault point"
}

# wait_part MIN: until a download's partial file in STATE/tmp holds more than MIN (find -size).
wait_part() {
    local f=
    for _ in $(seq 600); do
        f=$(find "$S/tmp" -name 'fetch-*.part' -size "+$1" -print -quit 2>/dev/null || true)
        [ -n "$f" ] && return 0
        sleep 0.05
    done
    fail "the download never got past $1"
}

# make_layer FILE BYTES: an uncompressed tar holding BYTES of random data (incompressible).
make_layer() {
    python3 - "$1" "$2" <<'EOF'
import io, os, sys, tarfile
path, n = sys.argv[1], int(sys.argv[2])
os.makedirs(os.path.dirname(path), exist_ok=True)
data = os.urandom(n)
with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as t:
    i = tarfile.TarInfo("data.bin")
    i.size = n
    i.mode = 0o644
    t.addfile(i, io.BytesIO(data))
EOF
}

# tmpfs_state DIR SIZE: a fresh tmpfs of SIZE mounted at DIR (skip the test when not root).
tmpfs_state() {
    mkdir -p "$1"
    if [ "$(id -u)" != 0 ] || ! mount -t tmpfs -o "size=$2,mode=0700" tmpfs "$1" 2>/dev/null; then
        echo "SKIP: mounting a tmpfs needs root"
        exit 77
    fi
    MOUNTS+=("$1")
}

# fill DIR: write zeros into DIR/filler until the file system is full.
fill() { dd if=/dev/zero of="$1/filler" bs=64k 2>/dev/null || true; }

# httpd ARGS...: start tests/store/httpd.py; its base URL in URL_HOST (127.0.0.1:PORT).
httpd() {
    rm -f "$W/port"
    python3 "$HERE/httpd.py" --port-file "$W/port" "$@" &
    PIDS+=("$!")
    for _ in $(seq 200); do
        [ -s "$W/port" ] && break
        sleep 0.05
    done
    [ -s "$W/port" ] || fail "the test HTTP server did not start"
    URL_HOST=127.0.0.1:$(cat "$W/port")
}

digest_of() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
q() { sqlite3 "$S/thinimg.db" "$1"; }
part_files() { find "$S/tmp" -type f | wc -l; }

SRC=$W/src
S=$W/state

case_integrity() {
    make_layer "$SRC/images/a/1.tar" 300000
    mkdir -p "$SRC/images/b"
    cp "$SRC/images/a/1.tar" "$SRC/images/b/1.tar"
    local want blob
    want=$(digest_of "$SRC/images/a/1.tar")
    blob=$S/blobs/sha256/${want#sha256:}
    ti first --state-dir "$S" fetch "dir:$SRC/images/a/1.tar"
    [ "$RC" = 0 ] || fail "first fetch: exit $RC: $(cat "$W/first.err")"

    # 4 bytes in the middle, in place; mtime put back: the ctime still tells.
    local mtime
    mtime=$(stat -c %y "$blob")
    printf 'XXXX' | dd of="$blob" bs=1 seek=150000 conv=notrunc 2>/dev/null
    touch -d "$mtime" "$blob"
    [ "$(digest_of "$blob")" != "$want" ] || fail "tampering did not change the bytes"
    ti tampered --state-dir "$S" fetch "dir:$SRC/images/a/1.tar"
    [ "$RC" = 0 ] || fail "fetch after tampering: exit $RC: $(cat "$W/tampered.err")"
    grep -q "$want" "$W/tampered.out" || fail "fetch after tampering does not print $want"
    [ "$(digest_of "$blob")" = "$want" ] || fail "the tampered blob is still in the store"
    grep -q "blob quarantined" "$W/tampered.err" || fail "no 'blob quarantined' log line"
    grep -q "dedup=no" "$W/tampered.err" || fail "the tampered file was used for dedup"
    [ "$(find "$S/blobs/quarantine" -type f | wc -l)" = 1 ] || fail "nothing in quarantine"
    [ "$(q "SELECT count(*) FROM blob_quarantine WHERE digest = '$want' AND reason LIKE '%hash to%'")" = 1 ] ||
        fail "no blob_quarantine row saying why"
    pass "a blob changed in place (mtime restored) is quarantined and fetched again"

    [ "$(stat -c %a "$blob")" = 400 ] || fail "blob file mode $(stat -c %a "$blob"), not 400"
    [ -n "$(q "SELECT file_ctime_ns FROM blobs WHERE digest = '$want'")" ] ||
        fail "no seal recorded with the blob"
    local verified
    verified=$(q "SELECT verified_at_ms FROM blobs WHERE digest = '$want'")
    pass "the stored blob is 0400 with its seal in the blobs row"

    # Untouched: reused with a stat, no hash (a hash would reseal: verified_at_ms moves).
    ti again --state-dir "$S" fetch "dir:$SRC/images/a/1.tar"
    [ "$RC" = 0 ] || fail "second fetch: exit $RC"
    grep -q "blob already fetched" "$W/again.err" || fail "the untouched blob was not reused"
    [ "$(q "SELECT verified_at_ms FROM blobs WHERE digest = '$want'")" = "$verified" ] ||
        fail "an untouched sealed blob was hashed again"
    pass "an untouched blob is reused without hashing"

    # Same bytes from another location: the download's dedup must not trust the stored file.
    printf 'YYYY' | dd of="$blob" bs=1 seek=1000 conv=notrunc 2>/dev/null
    ti dedup --state-dir "$S" fetch "dir:$SRC/images/b/1.tar"
    [ "$RC" = 0 ] || fail "fetch of the copy: exit $RC"
    [ "$(digest_of "$blob")" = "$want" ] || fail "dedup kept the tampered file"
    [ "$(q "SELECT count(*) FROM blob_quarantine WHERE digest = '$want'")" = 2 ] ||
        fail "the dedup step did not quarantine the tampered file"
    pass "the dedup step quarantines a tampered file and stores the downloaded bytes"

    # Replaced by a file of the same size: new inode, same story.
    local tmp=$W/replacement
    head -c "$(stat -c %s "$blob")" /dev/zero >"$tmp"
    mv -f "$tmp" "$blob"
    ti replaced --state-dir "$S" fetch "dir:$SRC/images/a/1.tar"
    [ "$RC" = 0 ] || fail "fetch after replacing: exit $RC"
    [ "$(digest_of "$blob")" = "$want" ] || fail "a replaced blob was kept"
    pass "a replaced blob file is quarantined and fetched again"
}

case_nospace() {
    tmpfs_state "$S" 4m
    make_layer "$SRC/images/big/1.tar" $((6 << 20))
    local want
    want=$(digest_of "$SRC/images/big/1.tar")
    ti full --state-dir "$S" fetch "dir:$SRC/images/big/1.tar"
    [ "$RC" = 3 ] || fail "a blob larger than the disk: exit $RC, expected 3: $(tail -3 "$W/full.err")"
    grep -q "not enough space: the file system of $S/tmp has .* free; .* needs 6.0 MiB" \
        "$W/full.err" || fail "no clear 'not enough space' message: $(tail -3 "$W/full.err")"
    awk -v w="$LAST_WALL" -v l="$FAIL_FAST_S" 'BEGIN { exit !(w < l) }' ||
        fail "failing for lack of space took ${LAST_WALL}s"
    [ "$(part_files)" = 0 ] || fail "a partial file was left: $(find "$S/tmp" -type f)"
    [ "$(q "SELECT count(*) FROM fsm_runs WHERE type = 'fetch' AND status = 3 AND error LIKE 'not enough space%' AND error_kind = 'unhealthy'")" = 1 ] ||
        fail "the failure is not recorded as the run's outcome"
    pass "no room: fails at once, exit 3 (kind unhealthy), says what to do, leaves nothing behind"

    # The disk fills during the transfer (HTTP server holds after 1 MiB until released).
    mount -o remount,size=20m "$S"
    httpd --root "$SRC" --hold-after $((1 << 20)) --release "$W/release"
    bg midway --state-dir "$S" fetch "http://$URL_HOST/images/big/1.tar"
    wait_part 1000k
    fill "$S"
    touch "$W/release"
    bg_wait midway "$FAIL_FAST_S"
    [ "$RC" = 3 ] || fail "disk full during the transfer: exit $RC: $(tail -3 "$W/midway.err")"
    grep -q "not enough space: no space left on the file system of $S/tmp.*the partial file was removed" \
        "$W/midway.err" || fail "no clear message: $(tail -3 "$W/midway.err")"
    [ "$(part_files)" = 0 ] || fail "a partial file was left: $(find "$S/tmp" -type f)"
    [ "$(q "SELECT count(*) FROM fsm_runs WHERE type = 'fetch' AND status = 3 AND error LIKE 'not enough space: no space left%'")" = 1 ] ||
        fail "the failure was not recorded on the full disk"
    [ "$(q "SELECT count(*) FROM downloads")" = 0 ] || fail "a resume hint was left"
    pass "the disk fills during the transfer: exit 3 at once, partial file removed, failure recorded"

    rm -f "$S/filler"
    mount -o remount,size=64m "$S"
    ti room --state-dir "$S" fetch "dir:$SRC/images/big/1.tar"
    [ "$RC" = 0 ] || fail "with room: exit $RC: $(tail -3 "$W/room.err")"
    [ "$(digest_of "$S/blobs/sha256/${want#sha256:}")" = "$want" ] || fail "wrong blob stored"
    [ "$(stat -c %s "$S/thinimg.db-reserve")" -gt 0 ] || fail "the reserve was not made again"
    pass "with room the next fetch succeeds (and the reserve is back)"
}

case_dbfull() {
    tmpfs_state "$S" 24m
    make_layer "$SRC/images/a/1.tar" $((2 << 20))
    local want
    want=$(digest_of "$SRC/images/a/1.tar")
    THINIMG_FAULT=fetch.record.start:stop bg record --state-dir "$S" fetch "dir:$SRC/images/a/1.tar"
    wait_stopped "$TIPID"
    fill "$S"
    kill -CONT "$TIPID"
    bg_wait record "$FAIL_FAST_S"
    grep -q "disk full: released the database's reserve" "$W/record.err" ||
        fail "the database never ran out of space (test setup) or kept its reserve"
    ! grep -q "cannot rollback" "$W/record.err" || fail "a ROLLBACK after a failed COMMIT"
    [ "$RC" = 0 ] || fail "record on a full disk: exit $RC: $(tail -5 "$W/record.err")"
    [ "$(q "SELECT count(*) FROM blobs WHERE digest = '$want'")" = 1 ] || fail "blob not recorded"
    [ "$(q "SELECT count(*) FROM fsm_runs WHERE type = 'fetch' AND status = 3")" = 1 ] ||
        fail "the run's outcome was not recorded"
    pass "disk full during the record step: reserve released, run recorded, exit 0"

    rm -f "$S/filler"
    ti after --state-dir "$S" fetch "dir:$SRC/images/a/1.tar"
    [ "$RC" = 0 ] || fail "after freeing space: exit $RC"
    [ "$(stat -c %s "$S/thinimg.db-reserve")" -gt 0 ] || fail "the reserve was not made again"
    pass "with room again the next fetch succeeds and the reserve is back"
}

case_secrets() {
    make_layer "$SRC/images/a/1.tar" 200000
    httpd --root "$SRC" --auth alice:s3cr3t
    local want secret=s3cr3t
    want=$(digest_of "$SRC/images/a/1.tar")
    umask 000
    # Held at the record step, the database's WAL and SHM exist: check their modes and bytes.
    THINIMG_FAULT=fetch.record.start:stop bg creds --state-dir "$S" fetch \
        "http://alice:$secret@$URL_HOST/images/a/1.tar"
    wait_stopped "$TIPID"
    for f in thinimg.db thinimg.db-wal thinimg.db-shm thinimg.lock; do
        [ -e "$S/$f" ] || fail "$f does not exist while the fetch runs"
        [ "$(stat -c %a "$S/$f")" = 600 ] || fail "$f has mode $(stat -c %a "$S/$f") with umask 000"
    done
    for d in blobs blobs/sha256 tmp; do
        [ "$(stat -c %a "$S/$d")" = 700 ] || fail "$d has mode $(stat -c %a "$S/$d")"
    done
    ! grep -rqa "$secret" "$S" || fail "the secret is in $(grep -rla "$secret" "$S")"
    kill -CONT "$TIPID"
    bg_wait creds "$CMD_LIMIT_S"
    [ "$RC" = 0 ] || fail "fetch with credentials: exit $RC: $(tail -3 "$W/creds.err")"
    grep -q "$want" "$W/creds.out" || fail "the blob was not fetched (credentials not sent?)"
    [ "$(stat -c %a "$S/blobs/sha256/${want#sha256:}")" = 400 ] || fail "blob not 0400"
    ti runs --state-dir "$S" runs --json --all
    ti missing --state-dir "$S" fetch "http://alice:$secret@$URL_HOST/images/a/9.tar"
    [ "$RC" != 0 ] || fail "a missing object was fetched"
    ti unauth --state-dir "$S" fetch "http://$URL_HOST/images/a/1.tar"
    [ "$RC" != 0 ] || fail "the server's password check does not work (test setup)"
    grep -q "127.0.0.1" "$W/runs.out" || fail "runs --json lists no run"
    for f in "$W"/*.out "$W"/*.err; do
        ! grep -qa "$secret" "$f" || fail "the secret is in $(basename "$f"): $(grep -a "$secret" "$f" | head -2)"
    done
    ! grep -rqa "$secret" "$S" || fail "the secret is in $(grep -rla "$secret" "$S")"
    pass "credentials reach the server and nothing else; database, WAL, SHM, lock 0600, store 0700"
}

case_relstate() {
    make_layer "$SRC/images/a/1.tar" 100000
    local want
    want=$(digest_of "$SRC/images/a/1.tar")
    mkdir -p "$W/A" "$W/B"
    (cd "$W/A" && ti fetch --state-dir rel/state fetch "dir:$SRC/images/a/1.tar" &&
        [ "$RC" = 0 ]) || fail "fetch with a relative state dir: $(tail -3 "$W/fetch.err")"
    local blob=$W/A/rel/state/blobs/sha256/${want#sha256:}
    [ -f "$blob" ] || fail "no blob at $blob"
    (cd "$W/B" && ti gc --state-dir ../A/rel/state gc --blobs --force && [ "$RC" = 0 ]) ||
        fail "gc from another directory: exit $RC: $(tail -3 "$W/gc.err")"
    grep -q "blob .*deleted" "$W/gc.out" || fail "gc did not report the blob: $(cat "$W/gc.out")"
    [ ! -e "$blob" ] || fail "gc reported 'deleted' but $blob is still there"
    pass "gc from another directory deletes the blob of a relative state dir"

    # The row names the file relative to the blob directory, whatever the working directory.
    (cd "$W/A" && ti fetch1 --state-dir rel/state fetch "dir:$SRC/images/a/1.tar") || true
    [ "$(sqlite3 "$W/A/rel/state/thinimg.db" "SELECT path FROM blobs")" = "sha256/${want#sha256:}" ] ||
        fail "blobs.path is not relative to the blob directory"
    pass "blobs.path is relative to the blob directory"

    # A blob file already gone is not reported as deleted.
    (cd "$W/A" && ti fetch2 --state-dir rel/state fetch "dir:$SRC/images/a/1.tar") || true
    rm -f "$blob"
    (cd "$W/B" && ti gc2 --state-dir ../A/rel/state gc --blobs --force) || true
    grep -q "already gone" "$W/gc2.out" || fail "a missing file reported as: $(grep blob "$W/gc2.out")"
    pass "gc says 'already gone' for a file it did not delete"
}

case_signal() {
    make_layer "$SRC/images/a/1.tar" $((1 << 20))
    local want
    want=$(digest_of "$SRC/images/a/1.tar")
    httpd --root "$SRC" --hold-after 100000 --release "$W/release"
    bg term --state-dir "$S" fetch "http://$URL_HOST/images/a/1.tar"
    wait_part 90k
    kill -TERM "$TIPID"
    bg_wait term "$FAIL_FAST_S"
    [ "$RC" = 130 ] || fail "SIGTERM during fetch: exit $RC, expected 130"
    grep -q "interrupted; 1 unfinished fetch resumes" "$W/term.err" ||
        fail "no 'interrupted' message: $(tail -3 "$W/term.err")"
    [ "$(q "SELECT count(*) FROM fsm_runs WHERE type = 'fetch' AND status < 3")" = 1 ] ||
        fail "the interrupted run is not left unfinished"
    pass "SIGTERM: exit 130 within ${FAIL_FAST_S}s, the run stays unfinished"

    touch "$W/release"
    ti resume --state-dir "$S" fetch "http://$URL_HOST/images/a/1.tar"
    [ "$RC" = 0 ] || fail "the next fetch: exit $RC: $(tail -3 "$W/resume.err")"
    grep -q "resuming the interrupted fetch" "$W/resume.err" || fail "the run was not resumed"
    [ "$(digest_of "$S/blobs/sha256/${want#sha256:}")" = "$want" ] || fail "wrong blob stored"
    pass "the next fetch resumes the run and succeeds"
}

case_inflight() {
    make_layer "$SRC/images/a/1.tar" 300000
    local want loc="dir:$SRC/images/a/1.tar"
    want=$(digest_of "$SRC/images/a/1.tar")
    THINIMG_FAULT=fetch.record.start:stop bg held --state-dir "$S" fetch "$loc"
    wait_stopped "$TIPID"
    [ "$(q "SELECT count(*) FROM downloads")" = 1 ] || fail "no download record at the record step"
    # (TMP.done, the marker of the finished download, stays beside its path until the run ends)
    [ "$(find "$S/tmp" -type f -name '*.part' | wc -l)" = 0 ] ||
        fail "the temp file is still there at the record step"
    ti dry --state-dir "$S" gc --dry-run --json
    [ "$RC" = 0 ] || fail "gc --dry-run: exit $RC: $(tail -3 "$W/dry.err")"
    [ "$(jq '[.orphans[] | select(.kind == "download" or .kind == "tmpfile")] | length' "$W/dry.out")" = 0 ] ||
        fail "gc lists the running fetch's record: $(cat "$W/dry.out")"
    pass "a fetch between the store and its record: gc --dry-run lists nothing of it"

    kill -KILL "$TIPID"
    wait "$BGPID" 2>/dev/null || true
    ti dry2 --state-dir "$S" gc --dry-run --json
    [ "$(jq '[.orphans[] | select(.kind == "download")] | length' "$W/dry2.out")" = 0 ] ||
        fail "gc lists the killed fetch's record, which its run resumes: $(cat "$W/dry2.out")"
    ti resume --state-dir "$S" fetch "$loc"
    [ "$RC" = 0 ] || fail "the next fetch: exit $RC: $(tail -3 "$W/resume.err")"
    [ "$(digest_of "$S/blobs/sha256/${want#sha256:}")" = "$want" ] || fail "wrong blob stored"
    [ "$(q "SELECT count(*) FROM downloads")" = 0 ] || fail "the record outlived its run"
    [ "$(q "SELECT count(*) FROM fsm_runs WHERE type = 'fetch' AND status < 3")" = 0 ] ||
        fail "a fetch run left unfinished"
    [ "$(find "$S/tmp" -type f | wc -l)" = 0 ] || fail "files left in tmp: $(find "$S/tmp" -type f)"
    pass "killed there: gc still lists nothing; the next fetch finishes the run, no record left"
}

"case_$CASE"
echo "blob_store $CASE: all ok"
