#!/usr/bin/env bash
# make bench: boot the benchmark image on the kernel of linux/ and, when
# the series has the directed-switch patch, on the same series cut before
# it, the two kernels alternately; then write the report
# (ci/bench-report.py).
#
# Usage: ci/bench.sh OUTDIR INITRD CPUS KERNEL
#        ci/bench.sh OUTDIR INITRD CPUS LABEL=KERNEL LABEL=KERNEL...
#   (the second form boots the kernels given, and builds nothing)
# Environment:
#   BENCH_BOOTS  boots per kernel (default 2), alternating between kernels
#   BENCH_ARGS   umcg-bench options, commas for spaces (e.g. -r,5,-n,1000)
#   BENCH_BASE   where the second kernel's tree and build live
#                (default OUTDIR/../bench-base)
#   BENCH_BASE_REF  the commit of linux/ to compare against (default: the
#                parent of the directed-switch patch; "none": one kernel
#                only)
#   BENCH_BASE_KERNEL  the base kernel (the tree at tag base, without UMCG),
#                booted with umcg-bench -B: the benchmarks of tasks that do not
#                use UMCG, against the series (default: build/kernel-base,
#                built by ci/base-kernel.sh; "none": skip it)
#   BENCH_PREEMPT  the preemption models to boot each kernel with (default
#                "voluntary full"; PREEMPT_DYNAMIC kernels take preempt= at
#                boot); each kernel and model is a label of its own
#                (KERNEL@MODEL); "default" boots without preempt=
#   BENCH_ICOUNT QEMU -icount options (default shift=0,sleep=off: guest time
#                counts instructions, 1 ns each, so that host load does not
#                move the figures); "off" for plain TCG timing
#   CONFIGS      Kconfig fragments (as for make kernel)
#   ACCEL, MEM, TIMEOUT, QEMU_EXTRA, APPEND as for ci/qemu.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

out=$1 initrd=$2 cpus=$3
shift 3
boots=${BENCH_BOOTS:-2}
base=${BENCH_BASE:-$(dirname "$out")/bench-base}
configs=${CONFIGS:-configs/umcg.config}
# The patch that the before/after comparison is about.
# (The comparison used to be with and without the earlier hand-over patch,
# which the directed switch replaced: its before/after is in the README.)
SWITCH_SUBJECT='sched/umcg: add a directed context switch to the scheduler core'

mkdir -p "$out"
out=$(realpath "$out")
git=(git -C "$top/linux")

kernels=("$@")
ref=${BENCH_BASE_REF:-}
label=series
if [ $# -gt 1 ]; then
	ref=none
elif [ -z "$ref" ]; then
	switch=$("${git[@]}" log --format=%H -1 -F --grep="$SWITCH_SUBJECT" "$UMCG_BASE_TAG..HEAD")
	if [ -n "$switch" ]; then
		ref=$switch^
		label=series
	else
		ref=none
		step "no '$SWITCH_SUBJECT' commit in linux/: benchmarking one kernel"
	fi
fi
[ $# = 1 ] && kernels=("$label=$1")

if [ "$ref" != none ]; then
	commit=$("${git[@]}" rev-parse --verify "$ref^{commit}")
	tree=$base/linux
	# A worktree of linux/, kept between runs so that its build stays
	# incremental; re-created when linux/ itself was re-created.
	if ! git -C "$tree" rev-parse --git-dir > /dev/null 2>&1 ||
		[ "$(git -C "$tree" rev-parse --path-format=absolute --git-common-dir)" != \
			"$("${git[@]}" rev-parse --path-format=absolute --git-common-dir)" ]; then
		rm -rf "$tree"
		"${git[@]}" worktree prune
		mkdir -p "$base"
		"${git[@]}" worktree add --detach "$tree" "$commit" > /dev/null
	fi
	if [ "$(git -C "$tree" rev-parse HEAD)" != "$commit" ]; then
		git -C "$tree" status --porcelain --untracked-files=no | grep -q . &&
			die "$tree has uncommitted changes: commit or remove them"
		git -C "$tree" checkout -q --detach "$commit"
	fi
	step "second kernel: $(git -C "$tree" log --oneline -1 HEAD) (before the directed switch)"
	# shellcheck disable=SC2086 # a list of fragments
	(cd "$top" && KSRC="$tree" ci/kernel.sh "$base/kernel" $configs -- bzImage)
	kernels+=("before-switch=$base/kernel/arch/x86/boot/bzImage")
fi

# The base kernel, for tasks that do not use UMCG (one kernel given: the
# default comparison; with kernels given explicitly, only those).
base_kernel=${BENCH_BASE_KERNEL:-}
if [ -z "$base_kernel" ] && [ "$ref" != none ] || [ "$base_kernel" = default ]; then
	"$top/ci/base-kernel.sh" "$top/build/base-tree" "$top/build/kernel-base"
	base_kernel=$top/build/kernel-base/arch/x86/boot/bzImage
fi
if [ -n "$base_kernel" ] && [ "$base_kernel" != none ]; then
	kernels+=("base=$base_kernel")
fi

icount=${BENCH_ICOUNT-shift=0,sleep=off}
qemu_extra=${QEMU_EXTRA:-}
mode="TCG, real time"
if [ -n "$icount" ] && [ "$icount" != off ]; then
	qemu_extra="$qemu_extra -icount $icount"
	mode="TCG with -icount $icount (guest time counts instructions)"
fi

# Every kernel under every preemption model, KERNEL@MODEL.
read -r -a models <<< "${BENCH_PREEMPT-voluntary full}"
[ "${#models[@]}" -gt 0 ] || models=(default)
runs=()
for model in "${models[@]}"; do
	for k in "${kernels[@]}"; do
		runs+=("${k%%=*}@$model=${k#*=}")
	done
done

rm -rf "$out/logs"
mkdir -p "$out/logs"
for boot in $(seq 1 "$boots"); do
	for k in "${runs[@]}"; do
		name=${k%%=*}
		model=${name##*@}
		preempt=
		[ "$model" = default ] || preempt=" preempt=$model"
		logdir=$out/logs/$name-$boot
		args=${BENCH_ARGS:-}
		# The base kernel has no UMCG: only the benchmarks that do not use it.
		[ "${name%@*}" = base ] && args="-B${args:+,$args}"
		# The runtime benchmarks (minutes per boot) only on the kernel under test.
		runtime=
		[ "${name%@*}" = "${kernels[0]%%=*}" ] || runtime=" umcg_runtime_bench=0"
		APPEND="${APPEND:-} umcg_bench=$args$preempt$runtime" QEMU_EXTRA="$qemu_extra" \
			"$top/ci/qemu.sh" bench "$cpus" "$logdir" "${k#*=}" "$initrd" < /dev/null > /dev/null ||
			die "the $name guest failed (boot $boot): see ${logdir#"$top"/}/console-$cpus.log"
		results=$logdir/results-$cpus.log
		if grep -a '^# error' "$results" >&2 || ! grep -aq '^# umcg-guest: done' "$results"; then
			die "the benchmarks failed on $name (boot $boot): see ${results#"$top"/}"
		fi
		if [ -n "$preempt" ] && ! grep -aq "preempt=$model\b" "$results"; then
			die "$name (boot $boot) did not run with preempt=$model: see ${results#"$top"/}"
		fi
		step "$name, boot $boot: $(grep -ac '^bench ' "$results") measurements"
	done
done

args=()
for k in "${runs[@]}"; do
	name=${k%%=*}
	for boot in $(seq 1 "$boots"); do
		args+=("$name=$out/logs/$name-$boot/results-$cpus.log")
	done
done
python3 -c 'import matplotlib' 2> /dev/null ||
	python3 -m pip install -q --root-user-action=ignore matplotlib ||
	echo "warning: matplotlib is missing: no plot" >&2
python3 "$top/ci/bench-report.py" --out "$out" --cpus "$cpus" --mode "$mode" "${args[@]}"
