#!/usr/bin/env bash
# make linux: build linux/ from the pinned base tarball plus patches/.
#
#  - linux/ absent: unpack the tarball (sha256 checked), commit it as the
#    tagged base, apply patches/ with `git am`.
#  - linux/ present and already equal to patches/: nothing to do.
#  - linux/ present, patches/ changed (e.g. after a pull) and linux/ holds
#    nothing unsaved: move back to the base and re-apply, touching only the
#    files that differ so that kernel builds stay incremental.
#  - linux/ holds unsaved work (uncommitted changes, or commits that are not
#    in patches/): refuse.  FORCE=1 discards that work.
#
# Every commit is made with a fixed identity and date, so two machines
# produce the same hashes.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

L=$top/linux
FORCE=${FORCE:-0}
# --build: called by the build targets (kernel, run, test). Unsaved work in
# linux/ is then what the developer wants built: keep it and only warn.
mode=${1:-}

export GIT_COMMITTER_NAME="$UMCG_GIT_NAME" GIT_COMMITTER_EMAIL="$UMCG_GIT_EMAIL"

series() {
	find "$top/patches" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]-*.patch' \
		! -name '0000-*' | LC_ALL=C sort
}

# The subject as git am will record it (headers unfolded, [PATCH] dropped).
subject_of_patch() {
	git mailinfo /dev/null /dev/null < "$1" | sed -n 's/^Subject: //p'
}

# Debian's packaging adds '/*' to the top-level .gitignore (its repository
# holds only debian/), which hides every new file from 'git status' and
# 'git add'. Drop that block from the working copy only, and tell git not to
# look at the file, so the base commit stays the pristine tarball.
unhide_new_files() {
	git -C "$L" update-index --no-skip-worktree .gitignore
	git -C "$L" checkout -q -- .gitignore
	sed -i '/^# Debian packaging: ignore everything/,/^!\/debian\/$/d' "$L/.gitignore"
	sed -i '${/^#$/d}' "$L/.gitignore"
	git -C "$L" update-index --skip-worktree .gitignore
}

apply_series() {
	local p n=0
	while read -r p; do
		[ -n "$p" ] || continue
		n=$((n + 1))
		if ! git -C "$L" am -q --committer-date-is-author-date "$p"; then
			git -C "$L" am --abort || true
			die "patch $(basename "$p") does not apply on $UMCG_BASE_TAG"
		fi
	done < <(series)
	unhide_new_files
	git -C "$L" rev-parse HEAD > "$L/.git/umcg-imported-head"
	step "linux/: $UMCG_BASE_TAG + $n patches at $(git -C "$L" rev-parse --short HEAD)"
}

import_base() {
	[ -f "$LINUX_SOURCE_TARBALL" ] ||
		die "$LINUX_SOURCE_TARBALL is missing: run 'make deps' (package $LINUX_SOURCE_PKG=$LINUX_SOURCE_VERSION)"
	step "checking sha256 of $LINUX_SOURCE_TARBALL"
	echo "$LINUX_SOURCE_SHA256  $LINUX_SOURCE_TARBALL" | sha256sum -c --quiet - ||
		die "$LINUX_SOURCE_TARBALL is not $LINUX_SOURCE_PKG $LINUX_SOURCE_VERSION (sha256 mismatch)"

	local tmp=$top/.linux.import
	rm -rf "$tmp"
	mkdir -p "$tmp"
	step "unpacking $(basename "$LINUX_SOURCE_TARBALL")"
	tar -xJf "$LINUX_SOURCE_TARBALL" -C "$tmp" --strip-components=1
	step "committing the pristine tree as '$UMCG_BASE_TAG'"
	git -C "$tmp" init -q -b "$UMCG_BRANCH"
	git -C "$tmp" config core.autocrlf false
	git -C "$tmp" config gc.auto 0
	git -C "$tmp" add -A -f .
	GIT_AUTHOR_NAME="$UMCG_GIT_NAME" GIT_AUTHOR_EMAIL="$UMCG_GIT_EMAIL" \
	GIT_AUTHOR_DATE="$UMCG_BASE_DATE" GIT_COMMITTER_DATE="$UMCG_BASE_DATE" \
		git -C "$tmp" commit -q -m "Import $LINUX_SOURCE_PKG $LINUX_SOURCE_VERSION" \
			-m "Debian's source package tarball, sha256 $LINUX_SOURCE_SHA256."
	git -C "$tmp" tag "$UMCG_BASE_TAG"
	mv "$tmp" "$L"
}

# Prints the commits of linux/ (since the base) that patches/ does not hold:
# a commit is held when a patch has the same patch-id and subject.
unsaved_commits() {
	local known c id subj p
	known=$(series | while read -r p; do
		id=$(git patch-id --stable < "$p" | awk '{print $1}')
		echo "$id $(subject_of_patch "$p")"
	done)
	for c in $(git -C "$L" rev-list --reverse "$UMCG_BASE_TAG..HEAD"); do
		id=$(git -C "$L" show "$c" | git patch-id --stable | awk '{print $1}')
		subj=$(git -C "$L" log -1 --format=%s "$c")
		# Empty commits have no patch-id; they cannot be exported either.
		grep -qxF "$id $subj" <<< "$known" ||
			echo "  $(git -C "$L" log -1 --format='%h %s' "$c")"
	done
}

# True when linux/'s commits since the base are exactly the series.
in_sync() {
	local want have
	want=$(series | while read -r p; do git patch-id --stable < "$p" | awk '{print $1}'; done)
	have=$(git -C "$L" rev-list --reverse "$UMCG_BASE_TAG..HEAD" | while read -r c; do
		git -C "$L" show "$c" | git patch-id --stable | awk '{print $1}'
	done)
	[ "$want" = "$have" ] && [ -z "$(unsaved_commits)" ]
}

if [ ! -e "$L" ]; then
	[ "$mode" = --check-clean ] && exit 0
	import_base
	apply_series
	exit 0
fi

git -C "$L" rev-parse -q --verify "refs/tags/$UMCG_BASE_TAG" > /dev/null 2>&1 ||
	die "linux/ exists but has no '$UMCG_BASE_TAG' tag: it was not made by 'make linux'; move it away"

if [ -d "$L/.git/rebase-apply" ] || [ -d "$L/.git/rebase-merge" ]; then
	die "linux/ is in the middle of a git am/rebase: finish or abort it first"
fi

dirty=$(git -C "$L" status --porcelain --untracked-files=normal | head -n 20)
unsaved=$(unsaved_commits)
if [ "$mode" = --check-clean ]; then
	[ -z "$dirty" ] && [ -z "$unsaved" ] && exit 0
	die "linux/ holds work that is not in patches/ (uncommitted changes or commits not exported); 'make patches' first"
fi
if [ -z "$dirty" ] && in_sync; then
	step "linux/ is up to date with patches/"
	exit 0
fi

if [ -n "$dirty" ] || [ -n "$unsaved" ]; then
	if [ "$mode" = --build ] && [ "$FORCE" != 1 ]; then
		echo "warning: building linux/ as it is: it holds work that is not in patches/ ('make patches' saves it)" >&2
		exit 0
	fi
	if [ "$FORCE" != 1 ]; then
		{
			echo "error: linux/ holds work that is not in patches/; refusing to re-import."
			[ -n "$dirty" ] && printf 'Uncommitted changes:\n%s\n' "$dirty"
			[ -n "$unsaved" ] && printf 'Commits not exported to patches/:\n%s\n' "$unsaved"
			echo "Commit your changes in linux/ and run 'make patches' to save them,"
			echo "or run 'make linux FORCE=1' to throw them away."
		} >&2
		exit 1
	fi
	step "FORCE=1: discarding unsaved work in linux/"
fi

step "patches/ changed: re-applying the series on '$UMCG_BASE_TAG'"
git -C "$L" update-index --no-skip-worktree .gitignore
git -C "$L" checkout -q -f -B "$UMCG_BRANCH" "$UMCG_BASE_TAG"
git -C "$L" clean -q -fd
apply_series
