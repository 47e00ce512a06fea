#!/usr/bin/env bash
# make series: the series as its submitter posts it, in SERIES_OUT
# (build/series-out), without sending anything.
#
#  - the submitter is SUBMITTER="Name <mail>", or else the git identity
#    (user.name, user.email) of this repository; placeholder, local,
#    reserved and malformed identities are refused;
#  - patches/ is rewritten: every From: and Signed-off-by: of the
#    placeholder identity, the cover letter's From: and shortlog, and the
#    UMCG entry's M: line in MAINTAINERS (with the index lines of those
#    MAINTAINERS diffs) become the submitter's; the patches that
#    re-implement the RFC's mechanisms get an Originally-by: tag;
#  - scripts/get_maintainer.pl of linux/ names the recipients: To: the
#    maintainers, Cc: the reviewers and lists; every mail gets them as
#    To:/Cc: headers;
#  - git send-email --dry-run writes the mails to send-email-dry-run.txt.
#
# SERIES_TEST=1 also accepts the documentation domains example.com,
# example.net and example.org, for tests only.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

L=$top/linux
out=${SERIES_OUT:-$top/build/series-out}
test_mode=${SERIES_TEST:-0}

# The identity the series was committed with, which must not be posted.
placeholder="UMCG Developers <umcg-dev@localhost>"
placeholder_name=${placeholder% <*}

# The patches that re-implement mechanisms of Peter Oskolkov's UMCG RFC
# (v0.6) carry "Originally-by: Peter Oskolkov <posk@google.com>" in their
# commit messages, before the Signed-off-by, as the tip tree does: the
# credit is part of the commit, so it survives any rebase or re-cut of the
# series. This script only reports how many patches have it.
originally_by="Peter Oskolkov <posk@google.com>"

# --- the submitter -----------------------------------------------------

ident=${SUBMITTER:-}
if [ -z "$ident" ]; then
	name=$(git -C "$top" config user.name || true)
	email=$(git -C "$top" config user.email || true)
	if [ -z "$name" ] || [ -z "$email" ]; then
		die "no submitter identity: set SUBMITTER=\"Name <mail>\" or git config user.name and user.email"
	fi
	ident="$name <$email>"
fi

# Refuses an identity that cannot sign off a submission.
check_identity() {
	local id=$1 name mail domain re='^([^<>]*[^<> ]) <([^<>@ ]+)@([^<>@ ]+)>$'
	[[ $id =~ $re ]] ||
		die "submitter identity '$id' is not \"Name <local@domain>\""
	name=${BASH_REMATCH[1]}
	[[ $name != \"*\" ]] || die "submitter identity '$id': write the name without quotes"
	mail=${BASH_REMATCH[2]}@${BASH_REMATCH[3]}
	domain=${BASH_REMATCH[3],,}
	[[ $id != *[[:cntrl:]]* ]] || die "submitter identity '$id' holds control characters"
	if [ "$id" = "$placeholder" ] || [ "$name" = "$placeholder_name" ] ||
		[ "$name" = "$UMCG_GIT_NAME" ] || [ "${mail,,}" = "${UMCG_GIT_EMAIL,,}" ] ||
		[ "${mail,,}" = umcg-dev@localhost ]; then
		die "submitter identity '$id' is the series' placeholder: set SUBMITTER=\"Your Name <you@your.domain>\""
	fi
	case $domain in
	localhost | *.localhost | localdomain | *.localdomain | *.local | \
		*.invalid | *.test | *.example)
		die "submitter address '$mail' is not deliverable: '$domain' is a local or reserved domain" ;;
	example.com | example.net | example.org | *.example.com | *.example.net | *.example.org)
		[ "$test_mode" = 1 ] ||
			die "submitter address '$mail' uses the documentation domain '$domain' (accepted only with SERIES_TEST=1)" ;;
	esac
	if [[ $domain != *.* || $domain == .* || $domain == *. || $domain == *..* ]]; then
		die "submitter address '$mail' has no dot in its domain (or an empty label)"
	fi
	if [[ $domain == *noreply* || ${mail,,} == noreply@* || ${mail,,} == no-reply@* ]]; then
		die "submitter address '$mail' cannot receive replies"
	fi
}
check_identity "$ident"
ident_name=${ident% <*}
ident_email=${ident##*<}
ident_email=${ident_email%>}

[ -d "$L/.git" ] || die "linux/ is missing: run 'make linux'"
git -C "$L" rev-parse -q --verify "refs/tags/$UMCG_BASE_TAG" > /dev/null ||
	die "linux/ has no '$UMCG_BASE_TAG' tag"
[ -x "$(git --exec-path)/git-send-email" ] ||
	die "git send-email is missing: run 'make deps' (package git-email)"

series=()
while IFS= read -r p; do series+=("$p"); done < <(
	find "$top/patches" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]-*.patch' ! -name '0000-*' | LC_ALL=C sort)
[ ${#series[@]} -gt 0 ] || die "patches/ holds no patches"
[ -f "$top/patches/0000-cover-letter.patch" ] || die "patches/0000-cover-letter.patch is missing"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/out" "$tmp/maint"
# git apply below runs in $tmp/maint, which must not be taken for a
# subdirectory of a repository (TMPDIR may lie inside one).
export GIT_CEILING_DIRECTORIES=$tmp

# The From: header: quoted or RFC 2047-encoded where the name needs it, as
# git format-patch writes it.
from_header=$(python3 -c '
import email.utils, sys
print(email.utils.formataddr((sys.argv[1], sys.argv[2]), charset="utf-8"))
' "$ident_name" "$ident_email")
non_ascii=0
LC_ALL=C grep -q '[^[:print:][:space:]]' <<< "$ident" && non_ascii=1

in_list() {
	local s=$1 x
	shift
	for x in "$@"; do [ "$x" = "$s" ] && return 0; done
	return 1
}

# Rewrites one mail: FILE OUT.
rewrite() {
	awk -v ph="$placeholder" -v phn="$placeholder_name" -v ident="$ident" \
		-v name="$ident_name" -v from="$from_header" -v mime="$non_ascii" '
	function repl(s, a, b,    i, r) {
		r = ""
		while ((i = index(s, a)) > 0) {
			r = r substr(s, 1, i - 1) b
			s = substr(s, i + length(a))
		}
		return r s
	}
	BEGIN { part = "head" }
	part == "head" && /^Content-Type:/ { ctype = 1 }
	part == "head" && $0 == "" {
		if (mime && !ctype)
			printf "MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n"
		part = "msg"; print; next
	}
	part == "head" && $0 == "From: " ph { print "From: " from; froms++; next }
	part == "msg" && $0 == "---" { part = "diff" }
	part == "msg" && $0 == "Signed-off-by: " ph {
		print "Signed-off-by: " ident; sobs++; next
	}
	# The cover letter shortlog: "UMCG Developers (26):".
	part == "msg" && index($0, phn " (") == 1 && $0 ~ / \([0-9]+\):$/ {
		print name substr($0, length(phn) + 1); next
	}
	part == "diff" && /^diff --git / { file = $3; sub(/^a\//, "", file) }
	part == "diff" && file == "MAINTAINERS" && /^[-+ @]/ && index($0, ph) {
		print repl($0, ph, ident); next
	}
	{ print }
	END { if (froms != 1) exit 3; if (FILENAME !~ /0000-cover-letter/ && sobs < 1) exit 4 }
	' "$1" > "$2" || {
		case $? in
		3) die "$(basename "$1"): no 'From: $placeholder' header to rewrite" ;;
		4) die "$(basename "$1"): no 'Signed-off-by: $placeholder' to rewrite" ;;
		*) die "$(basename "$1"): rewrite failed" ;;
		esac
	}
}

# --- rewrite the series --------------------------------------------------

step "submitter: $ident"
ncredited=0
for p in "${series[@]}"; do
	if grep -qxF "Originally-by: $originally_by" "$p"; then
		ncredited=$((ncredited + 1))
	fi
	rewrite "$p" "$tmp/out/$(basename "$p")"
done
rewrite "$top/patches/0000-cover-letter.patch" "$tmp/out/0000-cover-letter.patch"

patches_out=()
for p in "${series[@]}"; do patches_out+=("$tmp/out/$(basename "$p")"); done

# The MAINTAINERS diffs name the blobs before and after them in their index
# lines; the rewritten entry changes those blobs. Replay the MAINTAINERS
# parts of the series on the base's MAINTAINERS (which also checks that the
# rewritten hunks apply) and put in the new names. The result is the
# MAINTAINERS that get_maintainer.pl reads below.
maint=$tmp/maint/MAINTAINERS
git -C "$L" cat-file blob "$UMCG_BASE_TAG:MAINTAINERS" > "$maint"
for p in "${patches_out[@]}"; do
	grep -q '^diff --git a/MAINTAINERS b/MAINTAINERS$' "$p" || continue
	pre=$(git hash-object "$maint")
	(cd "$tmp/maint" && git apply --include=MAINTAINERS "$p") ||
		die "$(basename "$p"): the rewritten MAINTAINERS hunks do not apply"
	post=$(git hash-object "$maint")
	awk -v pre="$pre" -v post="$post" '
	/^diff --git / { m = ($0 == "diff --git a/MAINTAINERS b/MAINTAINERS") }
	m && /^index [0-9a-f]+\.\.[0-9a-f]+/ {
		split(substr($2, 1), h, /\.\./)
		sub(/^index [0-9a-f]+\.\.[0-9a-f]+/, "index " substr(pre, 1, length(h[1])) ".." substr(post, 1, length(h[2])))
		m = 0
	}
	{ print }' "$p" > "$p.new"
	mv "$p.new" "$p"
done
grep -qF "$ident" "$maint" || die "the UMCG entry of MAINTAINERS does not name the submitter"

# Nothing of the placeholder may remain: it would mean an occurrence this
# script does not know how to rewrite (say, in a file other than
# MAINTAINERS), which must be fixed in linux/ instead.
if left=$(grep -nF -e "$placeholder" -e "umcg-dev@" -e "$placeholder_name" \
	-e "$UMCG_GIT_EMAIL" "$tmp"/out/*.patch); then
	die "the placeholder identity is still in the mails:
$left"
fi

# --- recipients ----------------------------------------------------------

# get_maintainer.pl of linux/, read only, over the rewritten patches, with
# the rewritten MAINTAINERS, without mining git history. To: the
# maintainers (M:), Cc: the reviewers and lists (R:, L:), as b4 does; the
# submitter, who sends, is left out.
get_maintainer() {
	(cd "$L" && scripts/get_maintainer.pl --no-rolestats --no-git --no-git-fallback \
		--mpath "$maint" "$@" "${patches_out[@]}")
}
not_me() {
	local a
	while IFS= read -r a; do
		[ -n "$a" ] || continue
		[[ ${a,,} == *"<${ident_email,,}>" || ${a,,} == "${ident_email,,}" ]] && continue
		echo "$a"
	done
}
step "running scripts/get_maintainer.pl"
get_maintainer --no-r --no-l > "$tmp/to.all"
get_maintainer --no-m > "$tmp/cc.all"
to=()
cc=()
while IFS= read -r a; do to+=("$a"); done < <(not_me < "$tmp/to.all")
while IFS= read -r a; do in_list "$a" "${to[@]}" || cc+=("$a"); done < <(not_me < "$tmp/cc.all")
[ ${#to[@]} -gt 0 ] || die "get_maintainer.pl found no maintainer to send the series to"

# To:/Cc: headers, folded one address a line as git format-patch --to/--cc
# folds them, at the end of every mail's header.
header() {
	local h=$1 sep=" " a
	shift
	[ $# -gt 0 ] || return 0
	printf '%s:' "$h"
	for a in "$@"; do
		printf '%s%s' "$sep" "$a"
		sep=$',\n    '
	done
	printf '\n'
}
{
	header To "${to[@]}"
	header Cc "${cc[@]}"
} > "$tmp/headers"
# A raw UTF-8 name in the headers needs the 8bit declaration too.
hdr_non_ascii=0
LC_ALL=C grep -q '[^[:print:][:space:]]' "$tmp/headers" && hdr_non_ascii=1
for p in "$tmp"/out/*.patch; do
	awk -v hf="$tmp/headers" -v mime="$hdr_non_ascii" '
	!done && /^Content-Type:/ { ctype = 1 }
	!done && $0 == "" {
		while ((getline l < hf) > 0) print l
		if (mime && !ctype)
			printf "MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n"
		done = 1
	}
	{ print }' "$p" > "$p.new"
	mv "$p.new" "$p"
done
{
	echo "To (maintainers):"
	printf '  %s\n' "${to[@]}"
	echo "Cc (reviewers and lists):"
	[ ${#cc[@]} -eq 0 ] || printf '  %s\n' "${cc[@]}"
} > "$tmp/out/recipients.txt"

# --- the mails -----------------------------------------------------------

# git send-email rather than b4: it is Debian's git-email, at the git
# version already installed, needs no b4 prep branch (the series lives in
# patches/, not in a b4-managed branch of linux/), and sends these very
# files. --dry-run sends nothing; --smtp-server names a sendmail that does
# not exist, so even without --dry-run nothing would leave; stdin is
# /dev/null and --confirm=never, so it never waits for a terminal. The
# recipients are the mails' To:/Cc: headers (--suppress-cc=all would drop
# the Cc: ones); every other automatic Cc (the author, Signed-off-by,
# Originally-by and the like, Cc: in the body, a configured cc command) is
# suppressed. --to repeats the first maintainer, who is in the headers
# already, so that a real send does not ask whom to send to. Message-IDs
# are made from the sender's address and no host is looked up.
send_opts=(--no-format-patch --no-annotate --8bit-encoding=UTF-8 --from="$ident" --to="${to[0]}"
	--suppress-cc=author --suppress-cc=self --suppress-cc=sob
	--suppress-cc=misc-by --suppress-cc=bodycc --suppress-cc=cccmd)
step "git send-email --dry-run"
# The cover letter first (the glob sorts it there), the patches in reply.
mails=("$tmp"/out/[0-9][0-9][0-9][0-9]-*.patch)
if ! GIT_AUTHOR_NAME="$ident_name" GIT_AUTHOR_EMAIL="$ident_email" \
	GIT_COMMITTER_NAME="$ident_name" GIT_COMMITTER_EMAIL="$ident_email" \
	git -C "$tmp/out" send-email --dry-run --confirm=never "${send_opts[@]}" \
		--smtp-server=/nonexistent/sendmail "${mails[@]}" \
		< /dev/null > "$tmp/send-email-dry-run.txt" 2>&1; then
	cat "$tmp/send-email-dry-run.txt" >&2
	die "git send-email --dry-run failed"
fi
# Keep the file names relative to the output directory.
sed "s|$tmp/out/||g" "$tmp/send-email-dry-run.txt" > "$tmp/out/send-email-dry-run.txt"
sent=$(grep -c '^Result: OK$' "$tmp/out/send-email-dry-run.txt" || true)
[ "$sent" = ${#mails[@]} ] ||
	die "git send-email --dry-run wrote $sent mails, not ${#mails[@]} (see $out/send-email-dry-run.txt)"

# Replace only what this script writes.
mkdir -p "$out"
find "$out" -maxdepth 1 \( -name '[0-9][0-9][0-9][0-9]-*.patch' -o -name recipients.txt \
	-o -name send-email-dry-run.txt \) -delete
mv "$tmp"/out/* "$out/"

echo
echo "Recipients (scripts/get_maintainer.pl --no-rolestats --no-git --no-git-fallback):"
cat "$out/recipients.txt"
echo
step "$out: the cover letter and ${#series[@]} patches from $ident ($ncredited with Originally-by: $originally_by), $sent mails in the dry run (nothing was sent)"
step "to send them: cd $(printf '%q' "$out") && git send-email$(printf ' %q' "${send_opts[@]}") 0*.patch"
