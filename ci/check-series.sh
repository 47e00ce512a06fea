#!/usr/bin/env bash
# make check-series: check every patch of the series on its own, as a
# maintainer applying it would (bisectability):
#
#   - scripts/checkpatch.pl --strict: no error, no warning but the accepted
#     ones (ACCEPTED_WARNINGS below), no check;
#   - the kernel builds without a warning with CONFIG_UMCG=y (the test
#     kernel's configuration), with CLIPPY=1, and `make rustfmtcheck` is
#     clean;
#   - at a patch that touches C, headers, Kconfig or Makefiles, it also
#     builds with CONFIG_UMCG=n and with CONFIG_RUST=n (UMCG is then simply
#     not there);
#   - at a patch that touches Documentation/, `make htmldocs` of
#     userspace-api adds no warning over the base tree.
#
# Each configuration keeps its own output directory under build/series/
# (the builds are incremental from patch to patch and from run to run), and
# C is compiled through ccache, so that a second run costs little.
#
# Usage: ci/check-series.sh KCONFIG [FIRST [LAST]]   (patch numbers, 1-based)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

kconfig=$(realpath "$1")
first=${2:-1}
last=${3:-100000}
L=$top/linux
wt=$top/build/series-tree
out=$top/build/series
[ -d "$L/.git" ] || die "linux/ is missing: run 'make linux'"
[ -f "$kconfig" ] || die "$kconfig is missing: run 'make kernel' first"

# checkpatch warnings a patch may keep, with the reason.
#  FILE_PATH_CHANGES: a new file under a directory that the UMCG entry of
#    MAINTAINERS already lists (checkpatch asks whether MAINTAINERS needs
#    updating whenever a patch adds a file).
#  BAD_SIGN_OFF "Non-standard signature: Originally-by:": the credit to the
#    original design, as the tip tree writes it; this checkpatch predates
#    the tag.
ACCEPTED_WARNINGS='FILE_PATH_CHANGES|BAD_SIGN_OFF: Non-standard signature: Originally-by:'

cc="clang-19"
command -v ccache > /dev/null && cc="ccache clang-19"
export CCACHE_DIR=${CCACHE_DIR:-$top/build/ccache}

kmake() {
	local o=$1
	shift
	make -C "$wt" O="$o" ARCH=x86_64 LLVM=-19 CC="$cc" \
		RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc HOSTRUSTC=/usr/bin/rustc \
		RUSTFMT=/usr/bin/rustfmt CLIPPY_DRIVER=/usr/bin/clippy-driver \
		BINDGEN="$(command -v bindgen || echo "$HOME/.cargo/bin/bindgen")" "$@"
}

# The three configurations: the reference one, and the same with UMCG or
# Rust switched off. Symbols a patch does not know yet drop out.
configure() {
	local o=$1 what=$2
	mkdir -p "$o"
	cp "$kconfig" "$o/.config"
	case $what in
	y) ;;
	umcg-n) "$wt/scripts/config" --file "$o/.config" --disable UMCG ;;
	rust-n) "$wt/scripts/config" --file "$o/.config" --disable RUST ;;
	esac
	kmake "$o" -s olddefconfig > /dev/null
	case $what in
	y) ;;
	umcg-n) ! grep -q '^CONFIG_UMCG=y' "$o/.config" || die "$what: CONFIG_UMCG is still set" ;;
	rust-n) ! grep -qE '^CONFIG_(RUST|UMCG)=y' "$o/.config" || die "$what: CONFIG_RUST or CONFIG_UMCG is still set" ;;
	esac
}

# Builds bzImage in configuration $2; fails on an error or a warning.
build() {
	local n=$1 what=$2 subject=$3
	local o=$out/$what log=$out/$what/build.log
	shift 3
	configure "$o" "$what"
	if ! kmake "$o" -s -j"$(nproc)" "$@" bzImage > "$log" 2>&1; then
		tail -n 40 "$log" >&2
		die "patch $n ($subject) does not build with $what"
	fi
	# Rust reports "warning: ..." and "warning[lint]: ...", C "file:line: warning: ...".
	if grep -E '(^|: )(warning|error)(\[[A-Za-z0-9_:]+\])?:' "$log" >&2; then
		die "patch $n ($subject) builds with warnings with $what"
	fi
}

# The warnings of `make htmldocs` for userspace-api, one per line, without
# the tree's path, so that two trees compare.
htmldocs_warnings() {
	local tree=$1 o=$2
	mkdir -p "$o"
	make -C "$tree" O="$o" SPHINXDIRS=userspace-api htmldocs > "$o/htmldocs.log" 2>&1 || {
		tail -n 20 "$o/htmldocs.log" >&2
		return 1
	}
	grep -E 'WARNING|ERROR' "$o/htmldocs.log" | sed "s|$tree/||g" | sort -u
}

# The findings of checkpatch --strict on patch file $1 that are not accepted.
checkpatch() {
	local report
	report=$(cd "$wt" && scripts/checkpatch.pl --strict --quiet --no-summary --show-types "$1") || :
	grep -E '^(ERROR|WARNING|CHECK):' <<< "$report" | grep -vE "^WARNING:($ACCEPTED_WARNINGS)" || :
}

commits=$(git -C "$L" rev-list --reverse "$UMCG_BASE_TAG..HEAD")
git -C "$L" worktree remove --force "$wt" 2> /dev/null || rm -rf "$wt"
git -C "$L" worktree prune
git -C "$L" worktree add -q --detach "$wt" "$UMCG_BASE_TAG"
trap 'git -C "$L" worktree remove --force "$wt"' EXIT
mkdir -p "$out"

docs_base=""
if command -v sphinx-build > /dev/null; then
	docs_base=$out/htmldocs-base.txt
	if [ ! -f "$docs_base" ]; then
		step "htmldocs (userspace-api) of the base tree"
		htmldocs_warnings "$wt" "$out/htmldocs-base" > "$docs_base.new"
		mv "$docs_base.new" "$docs_base"
	fi
else
	die "sphinx-build is missing: run 'make deps'"
fi

n=0
for c in $commits; do
	n=$((n + 1))
	if [ "$n" -lt "$first" ] || [ "$n" -gt "$last" ]; then
		continue
	fi
	subject=$(git -C "$L" log -1 --format=%s "$c")
	files=$(git -C "$L" diff-tree --no-commit-id --name-only -r "$c")
	# Moving the worktree rewrites only the files that differ.
	git -C "$wt" checkout -q --detach "$c"
	step "[$n] $subject"

	patch=$(mktemp)
	git -C "$L" format-patch -1 --stdout "$c" > "$patch"
	findings=$(checkpatch "$patch")
	rm -f "$patch"
	rm -f "$wt"/.checkpatch-camelcase.*
	[ -z "$findings" ] || die "patch $n ($subject): checkpatch --strict:
$findings"

	build "$n" y "$subject" CLIPPY=1
	if ! kmake "$out/y" -s rustfmtcheck > "$out/y/rustfmt.log" 2>&1; then
		cat "$out/y/rustfmt.log" >&2
		die "patch $n ($subject): rustfmtcheck"
	fi

	if grep -qvE '\.rs$|^Documentation/|^tools/testing/' <<< "$files"; then
		build "$n" umcg-n "$subject"
		build "$n" rust-n "$subject"
	fi

	if [ -n "$docs_base" ] && grep -q '^Documentation/' <<< "$files"; then
		if ! now=$(htmldocs_warnings "$wt" "$out/htmldocs"); then
			die "patch $n ($subject): htmldocs failed"
		fi
		added=$(comm -13 "$docs_base" <(printf '%s\n' "$now" | sed '/^$/d'))
		[ -z "$added" ] || die "patch $n ($subject): htmldocs warnings the base does not have:
$added"
	fi
done
[ "$last" -lt "$n" ] && n=$last
step "patches $first-$n: each builds on its own (UMCG=y with clippy, and =n and RUST=n where C changes), rustfmt and checkpatch --strict clean, htmldocs adds no warning"
