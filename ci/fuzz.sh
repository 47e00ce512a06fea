#!/usr/bin/env bash
# make fuzz: boot the guest once and run the UMCG fuzzer alone with a long
# budget, judge the run like a test run (ci/verdict.py: the fuzzer's own
# checks, any splat, a hang) and print its operations per second.
#
# Usage: ci/fuzz.sh KERNEL INITRD LOGDIR CPUS OPS SECONDS SEED
#   OPS, SECONDS: the budget, whichever runs out first (0: no limit);
#   SEED: 0 for a new one (the run prints it; pass it back to replay).
# Environment: as ci/qemu.sh; TIMEOUT bounds the whole boot.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

kernel=$1 initrd=$2 logdir=$3 cpus=$4 ops=$5 secs=$6 seed=$7
mkdir -p "$logdir"
list=$logdir/fuzz-list.txt
echo "umcg:umcg_fuzz" > "$list"
timeout=${TIMEOUT:-900}
# The guest's runner kills the fuzzer a little before the host kills QEMU.
guest_timeout=$((timeout > 240 ? timeout - 120 : timeout / 2))

rc=0
TIMEOUT=$timeout APPEND="umcg_fuzz=$ops,$secs,$seed,$guest_timeout ${APPEND:-}" \
	"$top/ci/qemu.sh" fuzz "$cpus" "$logdir" "$kernel" "$initrd" < /dev/null || rc=$?
extra=()
[ "$rc" = 124 ] && extra+=(--timed-out)
results=$logdir/results-$cpus.log
grep -h -E "^ *# (seed|[0-9]+ operations in|[0-9]+ scenarios \()" "$results" 2> /dev/null | sed 's/^ *# /fuzz: /'
python3 "$top/ci/verdict.py" --console "$logdir/console-$cpus.log" --results "$results" \
	--expect "$list" --cpus "$cpus" --label "fuzz ($cpus vCPUs)" \
	--summary "$logdir/summary.txt" "${extra[@]}"
