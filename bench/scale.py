#!/usr/bin/env python3
"""Cost against the size of a host's history: times commands on states of N images.

For each N (default 100, 1000, 10000) it builds a state directory:
  - a dir: source of N families (one 1.tar each) for `ls`;
  - N images of 3 layers (families of 5 share their first two), their layers and blobs
    rows, plus N/10 blobs no image uses (what gc lists);
  - 3 finished runs per image, each with 5 events (the history every command loads);
  - one real blob, fetched by thinimg, to fetch again.
The state is written by thinimg itself for its schema (a first `fetch` migrates the database)
and by SQL for the bulk rows, in the shapes the pipeline writes (see src/store/schema_*.c and
src/fsm/fsm_schema.c).

Then, with a daemon on each state, GET /v1/runs, GET /v1/images (its first page) and GET
/metrics.

It prints, per command, the median of R runs at each N (the runs interleaved across N), the growth exponent from the second
largest to the largest N (log t2/t1 / log N2/N1: 1.0 is linear, 2.0 quadratic), and
the ratio at the largest N to the smallest (per-operation costs should stay near 1).
With --base BIN, the same table for another thinimg binary (e.g. an older build), side by side.

Usage: bench/scale.py [--bin BIN] [--base BIN] [--n 100,1000,10000] [--runs 3]
"""
import argparse
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(argv, env=None, check=True):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if check and p.returncode != 0:
        sys.exit(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.decode()[-400:]}")
    return p


def digest(i):
    return "sha256:%064x" % i


def build_state(top, n, binary):
    src = os.path.join(top, "src")
    fam = os.path.join(src, "families")
    for i in range(n):
        d = os.path.join(fam, "f%05d" % i)
        os.makedirs(d)
        with open(os.path.join(d, "1.tar"), "wb") as f:
            f.write(b"x")
    example = os.path.join(src, "one")
    os.makedirs(example)
    # A real layer: a tar of one file.
    sh(["tar", "-C", ROOT, "-cf", os.path.join(example, "1.tar"), "README.md"])
    state = os.path.join(top, "state")
    sh([binary, "--state-dir", state, "fetch", "dir:%s/1.tar" % example])
    db = sqlite3.connect(os.path.join(state, "thinimg.db"))
    now = int(time.time() * 1000)
    with db:
        blobs = set()
        for i in range(n):
            f = i // 5
            lay = [digest(1_000_000 + f * 2), digest(1_000_000 + f * 2 + 1), digest(i + 1)]
            cur = db.execute(
                "INSERT INTO images(ref,name,state,n_layers,top_chain,created_at_ms,updated_at_ms,"
                "last_used_ms) VALUES(?,?,?,?,?,?,?,?)",
                ("dir:/x/img%05d/3.tar" % i, "img%05d:3" % i, "ready", 3, "c" + lay[2][7:], now,
                 now, now))
            iid = cur.lastrowid
            parent = None
            for k, d in enumerate(lay, 1):
                chain = "c%d-" % k + d[7:]
                db.execute("INSERT OR IGNORE INTO layers(chain_id,parent_chain,digest,depth,state,"
                           "created_at_ms,updated_at_ms) VALUES(?,?,?,?,?,?,?)",
                           (chain, parent, d, k, "ready", now, now))
                db.execute("INSERT INTO image_layers(image_id,idx,location,digest,chain_id,size)"
                           " VALUES(?,?,?,?,?,?)",
                           (iid, k, "dir:/x/img%05d/%d.tar" % (i, k), d, chain, 1))
                parent = chain
                blobs.add(d)
        for j in range(n // 10):
            blobs.add(digest(5_000_000 + j))
        db.executemany("INSERT OR IGNORE INTO blobs(digest,size,media_type,path,created_at_ms,"
                       "last_used_ms) VALUES(?,1,'tar',?,?,?)",
                       [(d, "sha256/" + d[7:], now, now) for d in blobs])
        for r in range(3 * n):
            v = "%016x%016x" % (now - 10_000_000 + r, r)
            db.execute("INSERT INTO fsm_runs(version,type,action,resource_id,request,transitions,"
                       "end_state,status,outcome,created_ms,started_ms,finished_ms) VALUES"
                       "(?,?,?,?,?,?,?,3,1,?,?,?)",
                       (v, "fetch", "fetch", "dir:/x/r%d" % r, b"{}", "[]", "done", now - 1000,
                        now - 1000, now - 900))
            db.executemany("INSERT INTO fsm_events(version,seq,type,ts_ms) VALUES(?,?,?,?)",
                           [(v, s, 1, now) for s in range(1, 6)])
    db.close()
    return state, fam, example


def timed(argv, runs):
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def page_reads(argv):
    """SQLite page reads of one run of argv: pread64 calls (strace), or None without strace."""
    if not shutil.which("strace"):
        return None
    p = subprocess.run(["strace", "-f", "-c", "-e", "trace=pread64"] + argv,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in p.stderr.splitlines():
        f = line.split()
        if f and f[-1] == "pread64":
            return int(f[3])
    return 0


def series(binary, state, fam, example):
    base = [binary, "--state-dir", state]
    return {
        "ls dir: of N families": [binary, "ls", "dir:%s/" % fam],
        "gc --dry-run, N images": base + ["gc", "--dry-run"],
        "fetch of a stored blob": base + ["fetch", "dir:%s/1.tar" % example],
        "runs (nothing active)": base + ["runs"],
        "list-images, N images": base + ["list-images"],
    }


def api_series(binary, state, runs):
    """Times of GET /v1/runs, /v1/images and /metrics from a daemon on the state (median of
    runs requests each, after one warm-up), or {} when the daemon does not start."""
    sock = os.path.join(state, "bench.sock")
    env = dict(os.environ, THINIMG_SKIP_HEALTH_CHECKS="1")
    d = subprocess.Popen([binary, "--state-dir", state, "--socket", sock, "daemon",
                          "--no-pool-setup"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env)
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        else:
            return {}
        out = {}
        for name, path in (("GET /v1/runs", "/v1/runs"), ("GET /v1/images (a page)",
                                                          "/v1/images"),
                           ("GET /metrics", "/metrics")):
            argv = ["curl", "-sf", "-o", "/dev/null", "--unix-socket", sock, "http://x" + path]
            timed(argv, 1)
            out[name] = statistics.median(timed_each(argv, runs))
        return out
    finally:
        d.terminate()
        d.wait(timeout=30)


def timed_each(argv, runs):
    return [timed(argv, 1) for _ in range(runs)]


def measure(binary, ns, runs, label):
    # Every state is built first, then the runs are interleaved (each round times every series
    # at every N), so that a neighbour's load drifting over minutes hits every N alike.
    results, reads, tops, cmds = {}, {}, {}, {}
    try:
        for n in ns:
            tops[n] = tempfile.mkdtemp(prefix="thinimg-scale-")
            cmds[n] = series(binary, *build_state(tops[n], n, binary))
        samples = {}
        for _ in range(runs):
            for n in ns:
                for name, argv in cmds[n].items():
                    samples.setdefault(name, {}).setdefault(n, []).append(timed(argv, 1))
        for name, byn in samples.items():
            results[name] = {n: statistics.median(v) for n, v in byn.items()}
        for n in ns:
            for name, argv in cmds[n].items():
                reads.setdefault(name, {})[n] = page_reads(argv)
        if shutil.which("curl"):
            for n in ns:
                state = cmds[n]["runs (nothing active)"][2]
                for name, t in api_series(binary, state, runs).items():
                    results.setdefault(name, {})[n] = t
    finally:
        for t in tops.values():
            shutil.rmtree(t, ignore_errors=True)
    print(f"\n{label}: {binary}")
    head = "".join("%12s" % ("N=%d" % n) for n in ns)
    print("%-26s%s%10s%12s" % ("series", head, "exponent", "max/min N"))
    for name, byn in results.items():
        cols = "".join("%10.1fms" % (byn[n] * 1000) for n in ns)
        n1, n2 = ns[-2], ns[-1]
        exp = math.log(byn[n2] / byn[n1]) / math.log(n2 / n1)
        print("%-26s%s%10.2f%12.2f" % (name, cols, exp, byn[ns[-1]] / byn[ns[0]]))
    if any(v is not None for r in reads.values() for v in r.values()):
        print("page reads (pread64 calls of one run)")
        for name, byn in reads.items():
            print("%-26s%s" % (name, "".join("%12s" % byn[n] for n in ns)))
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "thinimg"))
    ap.add_argument("--base")
    ap.add_argument("--n", default="100,1000,10000")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    ns = [int(x) for x in a.n.split(",")]
    if len(ns) < 2:
        sys.exit("--n needs at least two sizes")
    print("scale benchmark: median of %d runs per point (Release build advised)" % a.runs)
    measure(a.bin, ns, a.runs, "thinimg")
    if a.base:
        measure(a.base, ns, a.runs, "baseline")


if __name__ == "__main__":
    main()
