#!/usr/bin/env bash
# make kernel: configure (tinyconfig + configs/ fragments) and build linux/
# out of tree in $KBUILD_OUT, incrementally.
#
# Usage: ci/kernel.sh OUTDIR FRAGMENT... [-- extra make arguments]
# Environment: KSRC, the source tree (default linux/).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

out=$1
shift
frags=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
	frags+=("$(realpath "$1")")
	shift
done
[ "${1:-}" = -- ] && shift

src=${KSRC:-$top/linux}
[ -d "$src" ] || die "$src is missing: run 'make linux'"
mkdir -p "$out"
out=$(realpath "$out")

kmake() {
	make -C "$src" O="$out" ARCH=x86_64 LLVM=-19 \
		RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc HOSTRUSTC=/usr/bin/rustc \
		RUSTFMT=/usr/bin/rustfmt CLIPPY_DRIVER=/usr/bin/clippy-driver \
		BINDGEN="$(command -v bindgen || echo "$HOME/.cargo/bin/bindgen")" \
		"$@"
}

# Re-generate .config only when a fragment (or this script) is newer than it,
# so that an unchanged configuration never triggers a rebuild.
stamp=$out/.config
regen=0
[ -f "$stamp" ] || regen=1
for f in "${frags[@]}" "$0"; do
	[ "$regen" = 1 ] || [ "$f" -nt "$stamp" ] && regen=1
done
if [ "$regen" = 1 ]; then
	step "configuring: tinyconfig + ${frags[*]##*/}"
	kmake -s tinyconfig
	"$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" "${frags[@]}" > "$out/merge.log"
	kmake -s olddefconfig
	# Check that every option asked for survived Kconfig's dependency rules.
	bad=0
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=*) grep -qxF "$line" "$out/.config" || { echo "config: wanted '$line', got '$(grep -E "^(# )?${line%%=*}[= ]" "$out/.config" || echo unset)'" >&2; bad=1; } ;;
		"# CONFIG_"*" is not set")
			name=${line#\# }
			name=${name%% *}
			if grep -q "^$name=" "$out/.config"; then
				echo "config: wanted '$line', got '$(grep "^$name=" "$out/.config")'" >&2
				bad=1
			fi
			;;
		esac
	done < <(cat "${frags[@]}")
	[ "$bad" = 0 ] || { rm -f "$out/.config"; die "the configuration does not hold every option of ${frags[*]##*/} (see above; is the Rust toolchain installed? 'make deps')"; }
fi

step "building the kernel in ${out#"$top"/}"
kmake -j"$(nproc)" "$@"
