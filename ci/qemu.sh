#!/usr/bin/env bash
# Boot the guest.
#
# Usage: ci/qemu.sh MODE CPUS LOGDIR KERNEL INITRD
#   MODE: test (run the selftests, end the guest, exit 124 on a hang),
#         demo (the demo, then a shell when stdin is a terminal).
# Environment: ACCEL (tcg, or kvm where it works), MEM (MiB), TIMEOUT (s),
#   QEMU_EXTRA (more QEMU arguments), APPEND (more kernel arguments).
# Logs: LOGDIR/console-CPUS.log (serial 0: kernel console and the guest's
#   terminal) and LOGDIR/results-CPUS.log (serial 1: test results only).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

mode=$1 cpus=$2 logdir=$3 kernel=$4 initrd=$5
accel=${ACCEL:-tcg}
mem=${MEM:-1024}
timeout=${TIMEOUT:-900}
mkdir -p "$logdir"
console=$logdir/console-$cpus.log
results=$logdir/results-$cpus.log
rm -f "$console" "$results"

interactive=0
[ "$mode" != test ] && [ -t 0 ] && [ -t 1 ] && interactive=1

cmdline="console=ttyS0 panic=-1 oops=panic softlockup_panic=0 umcg_mode=$mode umcg_interactive=$interactive ${APPEND:-}"
args=(
	-accel "$accel" -cpu max -smp "$cpus" -m "$mem"
	-kernel "$kernel" -initrd "$initrd" -append "$cmdline"
	-display none -vga none -no-reboot -nodefaults
)
if [ "$interactive" = 1 ]; then
	# Ctrl-C goes to the guest; Ctrl-A X leaves QEMU.
	args+=(-chardev "stdio,id=con,mux=on,signal=off,logfile=$console"
		-serial chardev:con -mon chardev=con,mode=readline)
else
	args+=(-chardev "stdio,id=con,signal=on,logfile=$console" -serial chardev:con)
fi
args+=(-serial "file:$results")
# shellcheck disable=SC2206
args+=(${QEMU_EXTRA:-})

step "booting: $mode, $cpus vCPUs, $accel, ${mem} MiB (console log: ${console#"$top"/})"
if [ "$interactive" = 1 ]; then
	exec qemu-system-x86_64 "${args[@]}"
fi
rc=0
timeout -s KILL "$timeout" qemu-system-x86_64 "${args[@]}" < /dev/null || rc=$?
if [ "$rc" = 137 ] || [ "$rc" = 124 ]; then
	echo "error: the guest did not finish within ${timeout}s: killed" >&2
	exit 124
fi
exit "$rc"
