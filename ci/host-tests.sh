#!/usr/bin/env bash
# Host-side tests of the test machinery itself (no guest needed).
# Writes "passed failed skipped" to LOGDIR/host-total.txt.
#
# Usage: ci/host-tests.sh LOGDIR
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
logdir=$1
mkdir -p "$logdir"
log=$logdir/host-tests.log

rc=0
python3 -m unittest discover -s "$top/ci/tests" -p 'test_*.py' -v > "$log" 2>&1 || rc=$?
ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in .*/\1/p' "$log")
failed=$(grep -cE '^(FAIL|ERROR): ' "$log")
skipped=$(grep -cE '\.\.\. skipped' "$log")
passed=$(( ${ran:-0} - failed - skipped ))
[ "$rc" = 0 ] || [ "$failed" -gt 0 ] || failed=1
echo "$passed $failed $skipped" > "$logdir/host-total.txt"
echo "host: verdict tests: $passed passed, $failed failed"
[ "$rc" = 0 ] || { cat "$log" >&2; exit 1; }
