# Helpers shared by the benchmark scripts (sourced, not run).

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) exit 1; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
calc() { awk "BEGIN {printf \"$1\", $2}"; }

# The share of all CPUs busy over 2 s, and the load average.
background_load() {
    local a b
    a=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat)
    sleep 2
    b=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat)
    awk -v a="$a" -v b="$b" -v l="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN {
        split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; idle = y[2] - x[2]
        pct = (busy + idle) > 0 ? 100 * busy / (busy + idle) : 0
        printf "%.0f%% of CPU busy with other work (2 s sample), load average %s%s", pct, l,
            (pct > 10 ? "  WARNING: not a quiet machine" : "") }'
}
