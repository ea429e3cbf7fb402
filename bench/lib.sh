# bench/lib.sh: shared by the bench/*.sh drivers (sourced). Every row of the performance table
# (docs/pipeline.md "Performance") is printed by bench_row in one format:
#
#   row: <what>: thinimg/<baseline> min 0.91 median 0.97 max 1.08 (5 runs; thinimg median
#        1.234 s, baseline median 1.270 s) goal <= 1.05: met
#
# The ratio is taken per run (thinimg and its baseline run back to back, so each pair shares
# the machine's load at that moment) and min/median/max are over those per-run ratios.

BENCH_RUNS=${BENCH_RUNS:-5} # at least 5 runs for every row

# bench_row WHAT BASELINE GOAL UNIT "thinimg values" "baseline values"
#   GOAL: the highest acceptable median ratio ("-" for none); UNIT: s, MiB, ...
bench_row() {
    local what=$1 base=$2 goal=$3 unit=$4 a=$5 b=$6
    # every run's pair, for a row whose spread needs explaining (BENCH_VERBOSE=1)
    [ -z "${BENCH_VERBOSE:-}" ] || echo "runs: $what: thinimg $a; baseline $b"
    awk -v what="$what" -v base="$base" -v goal="$goal" -v unit="$unit" -v a="$a" -v b="$b" '
    function median(v, n,   i, j, t) {
        for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) {
            t = v[j]; v[j] = v[j - 1]; v[j - 1] = t
        }
        return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    BEGIN {
        n = split(a, x, " "); m = split(b, y, " ")
        if (n != m || n == 0) { printf "row: %s: no data (%d vs %d runs)\n", what, n, m; exit 1 }
        for (i = 1; i <= n; i++) { r[i] = (y[i] > 0) ? x[i] / y[i] : 0; xs[i] = x[i]; ys[i] = y[i] }
        lo = r[1]; hi = r[1]
        for (i = 1; i <= n; i++) { if (r[i] < lo) lo = r[i]; if (r[i] > hi) hi = r[i] }
        med = median(r, n)
        verdict = (goal == "-") ? "" : sprintf(" goal <= %s: %s", goal, (med <= goal + 0) ? "met" : "NOT met")
        printf "row: %s: thinimg/%s min %.2f median %.2f max %.2f (%d runs; thinimg median %.3f %s, baseline median %.3f %s)%s\n",
            what, base, lo, med, hi, n, median(xs, n), unit, median(ys, n), unit, verdict
    }'
}

# bench_value WHAT GOAL UNIT "values": a row without a baseline (peak RSS against its goal).
bench_value() {
    local what=$1 goal=$2 unit=$3 v=$4
    awk -v what="$what" -v goal="$goal" -v unit="$unit" -v v="$v" 'BEGIN {
        n = split(v, x, " "); lo = x[1]; hi = x[1]
        for (i = 2; i <= n; i++) { if (x[i] < lo) lo = x[i]; if (x[i] > hi) hi = x[i] }
        for (i = 2; i <= n; i++) for (j = i; j > 1 && x[j - 1] > x[j]; j--) { t = x[j]; x[j] = x[j - 1]; x[j - 1] = t }
        med = (n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
        printf "row: %s: min %.1f median %.1f max %.1f %s (%d runs) goal <= %s %s: %s\n",
            what, lo, med, hi, unit, n, goal, unit, (med <= goal + 0) ? "met" : "NOT met"
    }'
}

# now_s: wall clock in seconds with microseconds, from bash itself (no process started).
now_s() { echo "${EPOCHREALTIME}"; }
# elapsed T0 T1: seconds between two now_s readings.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }
