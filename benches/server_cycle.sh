#!/bin/sh
# User-space instructions per lock/unlock cycle of the whole server process, counted by
# callgrind while one connection with one request in flight runs N cycles (after 2,000 of
# warm-up, whose counts are zeroed). Usage:
#   benches/server_cycle.sh SERVER_BIN [N] [CLIENT_BIN]
# SERVER_BIN may be an older build (e.g. of 70545c7, before the restructuring) to compare with;
# CLIENT_BIN defaults to target/release/officer. Deterministic counts, unlike timings on a
# shared machine (BENCHMARKS.md, "Issue 12: the server middle per request").
# With CALLGRIND_OUT=FILE the profile is kept there, for `callgrind_annotate FILE`.
set -eu
server=$1
n=${2:-20000}
client=${3:-target/release/officer}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$dir/cg" \
    "$server" run -h 127.0.0.1 -p 0 -m 0 --state-file "$dir/state" >"$dir/out" 2>"$dir/err" &
vg=$!
i=0
until grep -q ':' "$dir/out" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 300 ] || { echo "the server did not start" >&2; kill $vg; exit 1; }
    sleep 0.1
done
port=$(grep -o '[0-9]*$' "$dir/out" | head -n 1)
"$client" bench -h 127.0.0.1 -p "$port" -c 1 -P 1 -n 2000 --warmup 0 >/dev/null
callgrind_control -z $vg >/dev/null 2>&1
"$client" bench -h 127.0.0.1 -p "$port" -c 1 -P 1 -n "$n" --warmup 0 >/dev/null
callgrind_control -d $vg >/dev/null 2>&1
sleep 1
kill -INT $vg; wait $vg || true
[ -z "${CALLGRIND_OUT:-}" ] || cp "$dir/cg.1" "$CALLGRIND_OUT"
ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$dir/cg.1")
echo "$ir $n" | awk '{ printf "%.0f user-space instructions per lock/unlock cycle\n", $1 / $2 }'
