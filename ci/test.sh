#!/usr/bin/env bash
# The guest part of 'make test': boot the image once per CPU count, judge
# each run with ci/verdict.py, and print the totals.
#
# Usage: ci/test.sh KERNEL INITRD KSELFTEST_DIR LOGDIR CPUS...
# Environment: REGRESSION_BASELINE, when set, also runs the regression
#   suites in the guest and compares them with that baseline file.
#   TEST_PREEMPT: the preemption model of each boot, as CPUS:MODEL words
#   (default "2:voluntary 4:full"); a CPU count it does not name boots
#   with the kernel's default.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

kernel=$1 initrd=$2 kst=$3 logdir=$4
shift 4
mkdir -p "$logdir"
summary=$logdir/summary.txt
: > "$summary"
rm -f "$logdir/guest-total.txt"

failed_runs=0
regression=${REGRESSION_BASELINE:-}
if [ -n "$regression" ]; then
	[ -f "$regression" ] || die "no regression baseline $regression: run 'make regression-baseline'"
	export APPEND="${APPEND:-} umcg_regression=1"
fi
base_append=${APPEND:-}
for cpus in "$@"; do
	model=$(preempt_for "$cpus")
	rc=0
	APPEND="$base_append${model:+ preempt=$model}" \
		"$top/ci/qemu.sh" test "$cpus" "$logdir" "$kernel" "$initrd" || rc=$?
	extra=()
	[ "$rc" = 124 ] && extra+=(--timed-out)
	[ -n "$model" ] && extra+=(--preempt "$model")
	if ! python3 "$top/ci/verdict.py" --console "$logdir/console-$cpus.log" \
		--results "$logdir/results-$cpus.log" --expect "$kst/kselftest-list.txt" \
		--cpus "$cpus" --label "guest ($cpus vCPUs)" --summary "$summary" "${extra[@]}"; then
		failed_runs=$((failed_runs + 1))
		echo "guest ($cpus vCPUs): logs: ${logdir#"$top"/}/console-$cpus.log, ${logdir#"$top"/}/results-$cpus.log" >&2
	fi
	if [ -n "$regression" ] && ! python3 "$top/ci/regression-verdict.py" \
		--results "$logdir/results-$cpus.log" --baseline "$regression" \
		--list "$top/ci/regression-list.txt" --label "regression ($cpus vCPUs)" --summary "$summary"; then
		failed_runs=$((failed_runs + 1))
		echo "regression ($cpus vCPUs): the regression suites differ from ${regression#"$top"/}; log: ${logdir#"$top"/}/results-$cpus.log" >&2
	fi
done

# Host-side tests (the verdict's own tests) were counted by the Makefile.
read -r passed failed skipped < <(awk '{p += $1; f += $2; s += $3} END {print p+0, f+0, s+0}' "$summary")
echo "$passed $failed $skipped" > "$logdir/guest-total.txt"
[ "$failed_runs" = 0 ]
