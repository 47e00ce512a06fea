#!/usr/bin/env bash
# Build the base kernel: the tree at tag base (a worktree of linux/, created
# or moved there if needed), configured from configs/umcg.config without
# CONFIG_UMCG (which the base tree does not have). Used by
# make regression-baseline and by make bench (tasks that do not use UMCG
# must not get slower).
#
# Usage: ci/base-kernel.sh BASE_TREE BASE_KOUT
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

tree=$1 kout=$2

base=$(git -C "$top/linux" rev-parse "$UMCG_BASE_TAG^{commit}") ||
	die "linux/ has no tag $UMCG_BASE_TAG: run 'make linux'"
if [ "$(git -C "$tree" rev-parse HEAD 2> /dev/null)" != "$base" ]; then
	[ ! -e "$tree" ] || git -C "$top/linux" worktree remove --force "$tree" 2> /dev/null || rm -rf "$tree"
	git -C "$top/linux" worktree prune
	step "checking out the base tree in ${tree#"$top"/}"
	git -C "$top/linux" worktree add --detach "$tree" "$base" > /dev/null
fi
[ -z "$(git -C "$tree" status --porcelain --untracked-files=no)" ] ||
	die "$tree has local changes: the base kernel must come from the pristine base tree"

mkdir -p "$kout"
frag=$kout/umcg-base.config
grep -v '^CONFIG_UMCG=' "$top/configs/umcg.config" > "$frag.new"
if cmp -s "$frag.new" "$frag"; then rm "$frag.new"; else mv "$frag.new" "$frag"; fi
KSRC=$tree "$top/ci/kernel.sh" "$kout" "$frag" -- bzImage headers
! grep -q '^CONFIG_UMCG=' "$kout/.config" || die "the base kernel has CONFIG_UMCG"
