#!/usr/bin/env bash
# Build and install the guest's kselftests (static) against the kernel
# headers of KOUT.
#
# Usage: ci/selftests.sh KOUT INSTALL_DIR TARGET...
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

kout=$(realpath "$1")
inst=$2
shift 2
[ -f "$kout/usr/include/linux/umcg.h" ] || die "no kernel headers in $kout: build the kernel first"
mkdir -p "$inst"
inst=$(realpath "$inst")
step "building selftests: $*"
make -s -C "$top/linux/tools/testing/selftests" O="$kout" TARGETS="$*" \
	INSTALL_PATH="$inst" install > "$kout/selftests-build.log" 2>&1 || {
	cat "$kout/selftests-build.log" >&2
	die "selftests build failed"
}
step "selftests: $(grep -c : "$inst/kselftest-list.txt") test programs in ${inst#"$top"/}"
