#!/usr/bin/env bash
# make check-man: lint the man pages under man/ (the draft of umcg_ctl(2)
# and umcg_wait(2) for the man-pages project and linux-api), and compile the
# programs of their EXAMPLES sections. Fails on any finding.
#
# Each page must be clean under
#   - mandoc -Tlint -W style: every message fails, except the one STYLE
#     message "lower case character in document title": the man-pages
#     project writes the title of .TH in lower case (".TH futex 2 ...", its
#     convention since man-pages 6.0), which mandoc reports as style;
#   - groff's warnings, as the man-pages project checks them
#     (man --warnings ... -Z), and groff -ww (all warnings);
# and each .EX/.EE block of its EXAMPLES section that holds a C program (a
# line starting with #include; shell sessions and output are skipped) must
# compile with gcc -Wall -Wextra -Werror -fsyntax-only against the UMCG
# header of linux/include/uapi, copied to a temporary directory (no
# headers_install needed).
#
# Usage: ci/check-man.sh [MANDIR]   (default: man/)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

mandir=${1:-$top/man}
header=$top/linux/include/uapi/linux/umcg.h

for tool in mandoc man groff gcc; do
	command -v "$tool" > /dev/null || die "$tool is missing: run 'make deps'"
done
[ -f "$header" ] || die "$header is missing: run 'make linux'"
[ -d "$mandir" ] || die "$mandir does not exist"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/include/linux" "$tmp/examples"
cp "$header" "$tmp/include/linux/umcg.h"

# Writes each C program of PAGE's EXAMPLES section to OUTDIR/NAME-N.c, as
# plain C, and prints the file names. Inside .EX/.EE, lines that are roff
# requests or comments (starting with . or ') are not program text; the
# escapes that man pages use in code are undone. A #line directive (and an
# empty line for each line skipped) makes the compiler report LABEL (the
# page) and the page's own line numbers.
extract_examples() {
	local page=$1 outdir=$2 label=$3 name
	name=$(basename "$page")
	awk -v dir="$outdir" -v name="$name" -v label="$label" '
		/^\.SH[ \t]/ { examples = ($0 ~ /^\.SH[ \t]+"?EXAMPLES?"?[ \t]*$/); next }
		!examples { next }
		/^\.EX([ \t]|$)/ {
			inblock = 1
			text = "#line " (NR + 1) " \"" label "\"\n"
			next
		}
		/^\.EE([ \t]|$)/ {
			if (inblock && text ~ /(^|\n)[ \t]*#[ \t]*include/) {
				file = dir "/" name "-" ++n ".c"
				printf "%s", text > file
				close(file)
				print file
			}
			inblock = 0
			next
		}
		inblock { text = text ($0 ~ /^[.\047]/ ? "" : $0) "\n" }
	' "$page" | while read -r file; do
		# \e first, to a placeholder, so that "\e-" stays a backslash and a minus.
		sed -i \
			-e 's/\\e/\x01/g' \
			-e 's/\\-/-/g; s/\\&//g; s/\\~/ /g; s/\\ / /g' \
			-e 's/\\\[aq\]/'\''/g; s/\\(aq/'\''/g' \
			-e 's/\\\[dq\]/"/g; s/\\(dq/"/g' \
			-e 's/\\\[ti\]/~/g; s/\\(ti/~/g; s/\\\[ha\]/^/g; s/\\(ha/^/g' \
			-e 's/\\\[rs\]/\x01/g; s/\\(rs/\x01/g' \
			-e 's/\\f[BIRP]//g; s/\\f\[[^]]*\]//g' \
			-e 's/\x01/\\/g' \
			"$file"
		echo "$file"
	done
}

failed=0
programs=0
mapfile -t pages < <(find "$mandir" -type f -name '*.[0-9]*' | sort)
[ ${#pages[@]} -gt 0 ] || die "no man pages under $mandir"

for page in "${pages[@]}"; do
	rel=${page#"$top"/}
	step "man: $rel"

	out=$(mandoc -Tlint -W style "$page" 2>&1 |
		grep -v ': STYLE: lower case character in document title: ' || true)
	if [ -n "$out" ]; then
		echo "$out" >&2
		failed=1
	fi

	if ! out=$( { LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 \
		man --warnings -E UTF-8 -l -Tutf8 -Z "$page" > /dev/null; } 2>&1) ||
		[ -n "$out" ]; then
		echo "$rel: man --warnings:" >&2
		echo "$out" >&2
		failed=1
	fi
	if ! out=$( { groff -man -t -ww -z "$page"; } 2>&1) || [ -n "$out" ]; then
		echo "$rel: groff -ww:" >&2
		echo "$out" >&2
		failed=1
	fi

	while read -r src; do
		programs=$((programs + 1))
		if ! gcc -Wall -Wextra -Werror -fsyntax-only -I "$tmp/include" -x c "$src" \
			2> "$tmp/gcc.log"; then
			echo "$rel: a program of its EXAMPLES section does not compile cleanly:" >&2
			cat "$tmp/gcc.log" >&2
			failed=1
		fi
	done < <(extract_examples "$page" "$tmp/examples" "$rel")
done

[ "$failed" = 0 ] || die "man pages: the findings above must be fixed"
[ "$programs" -gt 0 ] || die "no EXAMPLES program found under $mandir: is the extraction broken?"
step "man pages clean: ${#pages[@]} pages, $programs example program(s) compiled"
