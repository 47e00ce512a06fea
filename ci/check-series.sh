#!/usr/bin/env bash
# make check-series: build the kernel at every patch of the series, so that
# each patch is known to build on its own, without warnings (bisectability).
# Uses its own worktree and output directory, and the configuration of
# build/kernel; each step is an incremental build.
#
# Usage: ci/check-series.sh KCONFIG [FIRST]   (FIRST: patch number to start at)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

kconfig=$(realpath "$1")
first=${2:-1}
L=$top/linux
wt=$top/build/series-tree
out=$top/build/series
[ -d "$L/.git" ] || die "linux/ is missing: run 'make linux'"
[ -f "$kconfig" ] || die "$kconfig is missing: run 'make kernel' first"

kmake() {
	make -C "$wt" O="$out" ARCH=x86_64 LLVM=-19 \
		RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc HOSTRUSTC=/usr/bin/rustc \
		RUSTFMT=/usr/bin/rustfmt CLIPPY_DRIVER=/usr/bin/clippy-driver \
		BINDGEN="$(command -v bindgen || echo "$HOME/.cargo/bin/bindgen")" "$@"
}

commits=$(git -C "$L" rev-list --reverse "$UMCG_BASE_TAG..HEAD")
git -C "$L" worktree remove --force "$wt" 2> /dev/null || rm -rf "$wt"
git -C "$L" worktree prune
git -C "$L" worktree add -q --detach "$wt" "$UMCG_BASE_TAG"
trap 'git -C "$L" worktree remove --force "$wt"' EXIT
mkdir -p "$out"

n=0
for c in $commits; do
	n=$((n + 1))
	[ "$n" -ge "$first" ] || continue
	subject=$(git -C "$L" log -1 --format=%s "$c")
	# Moving the worktree rewrites only the files that differ.
	git -C "$wt" checkout -q --detach "$c"
	step "[$n] $subject"
	# The reference configuration; symbols this patch does not know yet drop out.
	if ! cmp -s "$kconfig" "$out/.config.ref" 2> /dev/null; then
		cp "$kconfig" "$out/.config.ref"
	fi
	cp "$out/.config.ref" "$out/.config"
	kmake -s olddefconfig > /dev/null
	if ! kmake -s -j"$(nproc)" bzImage > "$out/build.log" 2>&1; then
		tail -n 40 "$out/build.log" >&2
		die "patch $n ($subject) does not build on its own"
	fi
	if grep -E '(^|: )(warning|error)(\[[A-Za-z0-9_]+\])?:' "$out/build.log" >&2; then
		die "patch $n ($subject) builds with warnings"
	fi
done
step "all $n patches build on their own"
