#!/usr/bin/env bash
# make test-rt: UMCG is not offered on PREEMPT_RT (init/Kconfig: block
# detection runs with preemption disabled and may send SIGKILL, whose lock
# sleeps on PREEMPT_RT). Check that the exclusion holds: configure the test
# kernel's fragment plus PREEMPT_RT, and require PREEMPT_RT=y (so that the
# check is not vacuous) and CONFIG_UMCG unset, while the same fragment
# without PREEMPT_RT has CONFIG_UMCG=y.
#
# Usage: ci/check-rt.sh OUTDIR FRAGMENT...
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

out=$1
shift
src=${KSRC:-$top/linux}
[ -d "$src" ] || die "$src is missing: run 'make linux'"
mkdir -p "$out"
out=$(realpath "$out")

configure() {
	local dir=$1
	shift
	mkdir -p "$dir"
	make -s -C "$src" O="$dir" ARCH=x86_64 LLVM=-19 RUSTC=/usr/bin/rustc \
		BINDGEN="$(command -v bindgen || echo "$HOME/.cargo/bin/bindgen")" tinyconfig > /dev/null
	"$src/scripts/kconfig/merge_config.sh" -m -O "$dir" "$dir/.config" "$@" > "$dir/merge.log"
	make -s -C "$src" O="$dir" ARCH=x86_64 LLVM=-19 RUSTC=/usr/bin/rustc \
		BINDGEN="$(command -v bindgen || echo "$HOME/.cargo/bin/bindgen")" olddefconfig > /dev/null
}

frags=()
for f in "$@"; do frags+=("$(realpath "$f")"); done
printf 'CONFIG_EXPERT=y\nCONFIG_PREEMPT_RT=y\n' > "$out/rt.config"

step "configuring the test kernel's fragment with and without PREEMPT_RT"
configure "$out/plain" "${frags[@]}"
configure "$out/rt" "${frags[@]}" "$out/rt.config"

ok=1
grep -qx 'CONFIG_UMCG=y' "$out/plain/.config" ||
	{ echo "check-rt: the fragment alone does not give CONFIG_UMCG=y" >&2; ok=0; }
grep -qx 'CONFIG_PREEMPT_RT=y' "$out/rt/.config" ||
	{ echo "check-rt: PREEMPT_RT could not be selected: the check would prove nothing" >&2; ok=0; }
grep -qx 'CONFIG_RUST=y' "$out/rt/.config" ||
	{ echo "check-rt: RUST is off with PREEMPT_RT: the check would prove nothing" >&2; ok=0; }
if grep -q '^CONFIG_UMCG=' "$out/rt/.config"; then
	echo "check-rt: CONFIG_UMCG is on with PREEMPT_RT" >&2
	ok=0
fi
if [ "$ok" = 1 ]; then
	echo "check-rt: ok: CONFIG_UMCG=y without PREEMPT_RT, unset with PREEMPT_RT=y (and RUST=y)"
	echo "1 passed, 0 failed" > "$out/total.txt"
else
	echo "0 passed, 1 failed" > "$out/total.txt"
	exit 1
fi
