#!/usr/bin/env bash
# make patches: export linux/'s commits since the base as patches/ (numbered
# series plus a cover letter whose subject and text come from
# patches/cover-letter.txt), so that 'make linux' on a clean clone
# reproduces linux/ exactly.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

L=$top/linux
cover=$top/patches/cover-letter.txt
[ -d "$L/.git" ] || die "linux/ is missing: run 'make linux'"
[ -f "$cover" ] || die "$cover is missing (first paragraph: the cover letter's subject)"

dirty=$(git -C "$L" status --porcelain --untracked-files=normal | head -n 20)
[ -z "$dirty" ] || die "linux/ has uncommitted changes; commit them first:
$dirty"
[ "$(git -C "$L" rev-list --count "$UMCG_BASE_TAG..HEAD")" -gt 0 ] ||
	die "linux/ has no commits on top of '$UMCG_BASE_TAG'"

# The cover letter's text lives in a tracked file; git format-patch takes it
# from the branch description.
git -C "$L" config "branch.$(git -C "$L" rev-parse --abbrev-ref HEAD).description" "$(cat "$cover")"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The cover letter's sender and date are the newest commit's author and
# date, so that exporting the same commits twice gives the same files.
ident_name=$(git -C "$L" log -1 --format=%an)
ident_email=$(git -C "$L" log -1 --format=%ae)
GIT_COMMITTER_NAME="$ident_name" GIT_COMMITTER_EMAIL="$ident_email" \
	git -C "$L" format-patch --quiet --zero-commit --no-signature \
		--cover-letter --cover-from-description=subject \
		-o "$tmp" "$UMCG_BASE_TAG..HEAD"

# git dates the cover letter now; give it the newest commit's date instead.
sed -i "0,/^Date: .*/s//Date: $(git -C "$L" log -1 --format=%aD)/" "$tmp"/0000-cover-letter.patch

find "$top/patches" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]-*.patch' -delete
mv "$tmp"/*.patch "$top/patches/"
git -C "$L" rev-parse HEAD > "$L/.git/umcg-imported-head"
step "patches/: $(find "$top/patches" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]-*.patch' ! -name '0000-*' | wc -l) patches and a cover letter"
