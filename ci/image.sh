#!/usr/bin/env bash
# Pack the guest's initramfs: busybox-static + buildroot-overlay/ + the
# installed kselftests + extra files.
#
# Usage: ci/image.sh OUT.cpio KSELFTEST_DIR [SRC:DEST ...]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

out=$1
kst=$2
shift 2

busybox=/bin/busybox
[ -x "$busybox" ] || die "$busybox is missing: run 'make deps' (busybox-static)"
file -L "$busybox" 2> /dev/null | grep -q dynamically &&
	die "$busybox is dynamically linked: install busybox-static"

stage=$out.d
rm -rf "$stage"
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,usr/lib,etc,proc,sys,dev,tmp,run,root}
cp "$busybox" "$stage/bin/busybox"
cp -a "$top/buildroot-overlay/." "$stage/"
cp -a "$kst" "$stage/usr/lib/kselftests"
for pair in "$@"; do
	src=${pair%%:*}
	dest=$stage/${pair#*:}
	mkdir -p "$(dirname "$dest")"
	cp -a "$src" "$dest"
done

# Every binary in the guest must be static: the image has no libc.
while IFS= read -r -d '' f; do
	if file "$f" | grep -q 'dynamically linked'; then
		die "${f#"$stage"} is dynamically linked; build it with -static"
	fi
done < <(find "$stage" -type f -perm -u+x -print0)

(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
	cpio -o -H newc -R 0:0 --quiet) > "$out.tmp"
mv "$out.tmp" "$out"
step "guest image ${out#"$top"/}: $(du -h "$out" | cut -f1)"
