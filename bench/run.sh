#!/bin/bash
# Run every benchmark (bench/<name>/run), or the one named: bench/run.sh <name> [--json]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=${1:-}
shift || true
rc=0
for b in "$here"/*/run; do
    [ -x "$b" ] || continue
    n=$(basename "$(dirname "$b")")
    [ -n "$name" ] && [ "$name" != "$n" ] && continue
    echo "== bench $n" >&2
    "$b" "$@" || { echo "bench $n failed" >&2; rc=1; }
done
exit $rc
