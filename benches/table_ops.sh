#!/bin/sh
# Instructions per iteration of each lock-table scenario of benches/table_ops.rs, counted by
# callgrind inside its `measured` loop only (setup excluded). Usage:
#   benches/table_ops.sh [ITERATIONS] [SCENARIO...]
# Builds the bench binary in the bench (release) profile first; honours CARGO_TARGET_DIR.
# Deterministic: the same build gives the same counts on any machine load.
set -eu
n=${1:-100000}
[ $# -gt 0 ] && shift
scenarios=${*:-uncontended contended shared semaphore shared_beside_4 semaphore_beside_4 semaphore_contended}
bin=$(cargo bench --bench table_ops --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*table_ops[^"]*\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "could not build benches/table_ops.rs" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for s in $scenarios; do
    valgrind --tool=callgrind --toggle-collect='*measured*' --callgrind-out-file="$out" \
        "$bin" "$s" "$n" >/dev/null 2>&1
    ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$out")
    echo "$s $ir $n" | awk '{ printf "%-20s %8.1f instructions/iteration\n", $1, $2 / $3 }'
done
