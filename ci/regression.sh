#!/usr/bin/env bash
# Build the regression suites of ci/regression-list.txt statically and
# install them, with the files they need at run time and a
# kselftest-list.txt, for the guest's umcg-run-tests.
#
# Usage: ci/regression.sh SRC KOUT INSTALL_DIR
#   SRC   the kernel source tree (linux/, or the base tree for the baseline)
#   KOUT  a kernel build directory with installed headers (make headers)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

src=$(realpath "$1")
kout=$(realpath "$2")
inst=$3
list=$top/ci/regression-list.txt
st=$src/tools/testing/selftests
[ -d "$kout/usr/include/linux" ] || die "no kernel headers in $kout: build the kernel first"
[ -d "$st" ] || die "no selftests in $src"

obj=$kout/regression
log=$kout/regression-build.log
rm -rf "$inst"
mkdir -p "$inst" "$obj"
inst=$(realpath "$inst")
: > "$log"

# SUITE -> programs, and the guest list, in the order of the list.
declare -A progs=()
suites=()
entries=()
while read -r suite prog args; do
	# Comments, and "unstable" lines (for ci/regression-verdict.py).
	case "$suite" in '' | '#'* | unstable) continue ;; esac
	[ -d "$st/$suite" ] || die "$list: no suite $suite in $st"
	[ -n "${progs[$suite]+x}" ] || suites+=("$suite")
	case " ${progs[$suite]:-} " in *" $prog "*) ;; *) progs[$suite]="${progs[$suite]:-} $prog" ;; esac
	entries+=("$suite|$prog|$args")
done < "$list"

smake() {
	local suite=$1
	shift
	echo "+ make -C $suite $*" >> "$log"
	make -C "$st/$suite" OUTPUT="$obj/$suite" KHDR_INCLUDES="-isystem $kout/usr/include" \
		"$@" >> "$log" 2>&1 || {
		cat "$log" >&2
		die "building the regression suite $suite failed"
	}
}

step "building the regression suites: ${suites[*]}"
for suite in "${suites[@]}"; do
	mkdir -p "$obj/$suite"
	static=() pie=() extra=() vars=()
	for p in ${progs[$suite]}; do
		case "$p" in
		# Linked with -static-pie by their own rule: -static would clash.
		load_address.static.*) pie+=("$obj/$suite/$p") ;;
		*) static+=("$obj/$suite/$p") ;;
		esac
	done
	case "$suite" in
	exec)
		# What execveat needs next to it (TEST_GEN_FILES, TEST_FILES).
		extra=("$obj/exec/execveat.symlink" "$obj/exec/execveat.denatured"
			"$obj/exec/script" "$obj/exec/subdir")
		;;
	clone3)
		# Only clone3_cap_checkpoint_restore (left out) uses libcap.
		vars=(LDLIBS=)
		;;
	rseq)
		# The suite links against librseq.so; a static archive of the
		# same file takes its place.
		(cd "$st/rseq" && gcc -O2 -Wall -g -D_GNU_SOURCE= -I. -isystem "$kout/usr/include" \
			-I"$src/tools/include" -c rseq.c -o "$obj/rseq/rseq.o") >> "$log" 2>&1 ||
			{ cat "$log" >&2; die "building librseq.a failed"; }
		rm -f "$obj/rseq/librseq.a"
		ar rcs "$obj/rseq/librseq.a" "$obj/rseq/rseq.o"
		vars=(TEST_GEN_PROGS_EXTENDED="$obj/rseq/librseq.a")
		;;
	esac
	# CC carries -static: some Makefiles (x86/) reset CFLAGS and ignore
	# USERCFLAGS/USERLDFLAGS.
	[ ${#static[@]} = 0 ] || smake "$suite" CC="gcc -static" "${vars[@]}" "${static[@]}"
	[ ${#pie[@]} = 0 ] || smake "$suite" CC=gcc "${vars[@]}" "${pie[@]}"
	[ ${#extra[@]} = 0 ] || smake "$suite" "${vars[@]}" "${extra[@]}"

	col=${suite%%/*}
	mkdir -p "$inst/$col"
	for p in ${progs[$suite]}; do
		f=$obj/$suite/$p
		file "$f" | grep -qE 'statically linked|static-pie linked' ||
			die "$suite/$p is not statically linked: $(file -b "$f")"
		# No debug information: it would only make the guest image big.
		strip --strip-debug -o "$inst/$col/$p" "$f"
	done
	case "$suite" in
	exec)
		cp -a "${extra[@]}" "$inst/exec/"
		cp -a "$st/exec/Makefile" "$inst/exec/"
		# The guest has no bash; the script only runs 'exit $*'.
		sed -i '1s|^#!/bin/bash$|#!/bin/sh|' "$inst/exec/script"
		;;
	esac
	# umcg-run-tests reads the per-test timeout here; upstream's
	# timeout=0 (none) would let a hang eat the whole boot.
	echo "timeout=120" > "$inst/$col/settings"
done

# The guest's list; a test with arguments runs through a wrapper.
for e in "${entries[@]}"; do
	IFS='|' read -r suite prog args <<< "$e"
	col=${suite%%/*}
	name=$prog
	if [ -n "$args" ]; then
		name=${prog}_$(echo "$args" | tr -s ' ' '_')
		printf '#!/bin/sh\nexec ./%s %s "$@"\n' "$prog" "$args" > "$inst/$col/$name"
		chmod +x "$inst/$col/$name"
	fi
	echo "$col:$name"
done > "$inst/kselftest-list.txt"
step "regression suites: $(wc -l < "$inst/kselftest-list.txt") test programs in ${inst#"$top"/}"
