#!/usr/bin/env bash
# make regression-baseline: record the outcomes of the regression suites
# (ci/regression-list.txt) on the base kernel, the tree at tag `base`
# without UMCG, built from configs/umcg.config minus CONFIG_UMCG, booted
# the way `make test` boots, once per CPU count.
#
# Usage: ci/regression-baseline.sh BASE_TREE BASE_KOUT WORKDIR LOGDIR OUT CPUS...
#   BASE_TREE  a git worktree of linux/ at tag base (created if missing)
#   BASE_KOUT  the base kernel's build directory (incremental)
#   OUT        the baseline file to write (ci/regression-baseline.txt)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

tree=$1 kout=$2 work=$3 logdir=$4 out=$5
shift 5
[ $# -gt 0 ] || die "no CPU counts given"

"$top/ci/base-kernel.sh" "$tree" "$kout"
mkdir -p "$work" "$logdir"

# The suites, from the base tree's sources; no UMCG selftests.
"$top/ci/regression.sh" "$tree" "$kout" "$work/regression"
mkdir -p "$work/no-kselftests"
: > "$work/no-kselftests/kselftest-list.txt"
"$top/ci/image.sh" "$work/guest.cpio" "$work/no-kselftests" "$work/regression:/usr/lib/regression"

base_append="${APPEND:-} umcg_regression=1"
runs=()
models=()
for cpus in "$@"; do
	# The preemption model of make test's boot at this CPU count.
	model=$(preempt_for "$cpus")
	models+=("$cpus:${model:-default}")
	rc=0
	APPEND="$base_append${model:+ preempt=$model}" \
		"$top/ci/qemu.sh" test "$cpus" "$logdir" "$kout/arch/x86/boot/bzImage" "$work/guest.cpio" || rc=$?
	extra=()
	[ "$rc" = 124 ] && extra+=(--timed-out)
	[ -n "$model" ] && extra+=(--preempt "$model")
	# Completion, CPU count and no splat, as for make test.
	python3 "$top/ci/verdict.py" --console "$logdir/console-$cpus.log" \
		--results "$logdir/results-$cpus.log" --cpus "$cpus" \
		--label "base ($cpus vCPUs)" "${extra[@]}" > /dev/null ||
		die "the base kernel's run at $cpus vCPUs failed: $(python3 "$top/ci/verdict.py" \
			--console "$logdir/console-$cpus.log" --results "$logdir/results-$cpus.log" \
			--cpus "$cpus" --label base | grep problem || true)"
	runs+=(--results "$logdir/results-$cpus.log")
done

krel=$(sed -n 's/^umcg-guest: cpus=[0-9]* kernel=\([^ ]*\).*/\1/p' "$logdir/results-$1.log" | head -1)
python3 "$top/ci/regression-verdict.py" --record "${runs[@]}" --baseline "$out" \
	--header "The regression suites (ci/regression-list.txt) on the base kernel: the tree" \
	--header "at tag $UMCG_BASE_TAG ($krel), configs/umcg.config without CONFIG_UMCG, booted by" \
	--header "ci/qemu.sh (${ACCEL:-tcg}, ${MEM:-1024} MiB) at $* vCPUs (preempt= ${models[*]})." \
	--header "Recorded by 'make regression-baseline';" \
	--header "do not edit: re-record. An outcome that differed between the runs is 'varies'" \
	--header "(not compared). Format: OUTCOME<TAB>COLLECTION:TEST[ / N SUBTEST]." \
	--header ""
