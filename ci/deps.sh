#!/usr/bin/env bash
# make deps: install the pinned toolchain. Idempotent; fast when everything
# is already there.  Needs root (apt-get) and the package registries.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"

# name=version (pinned) or bare name (whatever Debian 12 ships).
pkgs=(
	"rustc-web=$RUST_WEB_VERSION"
	"rust-web-src=$RUST_WEB_VERSION"
	"libstd-rust-web-dev=$RUST_WEB_VERSION"
	"libstd-rust-web-1.85=$RUST_WEB_VERSION"
	"rustfmt-web=$RUST_WEB_VERSION"
	"rust-web-clippy=$RUST_WEB_VERSION"
	"$LINUX_SOURCE_PKG=$LINUX_SOURCE_VERSION"
	clang-19 lld-19 llvm-19 libclang-19-dev
	flex bison bc libelf-dev libssl-dev cpio make gcc libc6-dev
	qemu-system-x86 busybox-static python3 rsync file
	# make series: git send-email (its --dry-run) writes the mails.
	git-email
	# make check-man: mandoc -Tlint, and man/groff for groff's warnings.
	mandoc man-db groff-base
	# make check-series: ccache for its C builds, Sphinx for htmldocs.
	ccache python3-sphinx python3-sphinx-rtd-theme
)

# Prints nothing (and succeeds) for a package dpkg has never heard of: on a
# new machine dpkg-query fails for those, which pipefail would turn into an
# exit of the whole script.
installed_version() {
	{ dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null || true; } |
		awk '$1 == "ii" { print $2 }'
}

missing=()
for p in "${pkgs[@]}"; do
	name=${p%%=*}
	want=${p#*=}
	have=$(installed_version "$name")
	if [ "$name" = "$p" ]; then
		[ -n "$have" ] || missing+=("$p")
	elif [ "$have" != "$want" ]; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || die "installing ${missing[*]} needs root"
	step "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# Refuse early, with the package's name, when a pinned version is gone.
	for p in "${missing[@]}"; do
		[ "${p%%=*}" = "$p" ] && continue
		apt-cache madison "${p%%=*}" | awk -F'|' '{gsub(/ /, "", $2); print $2}' |
			grep -qxF "${p#*=}" ||
			die "package ${p%%=*} version ${p#*=} is not available from the registry (pinned in ci/common.sh)"
	done
	apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi

# bindgen-cli from crates.io, pinned (Debian 12's bindgen is too old and
# silently drops declarations).
bindgen=$(command -v bindgen || echo "$HOME/.cargo/bin/bindgen")
if ! "$bindgen" --version 2>/dev/null | grep -qx "bindgen $BINDGEN_VERSION"; then
	command -v cargo > /dev/null || die "cargo is needed to install bindgen-cli $BINDGEN_VERSION"
	step "installing bindgen-cli $BINDGEN_VERSION with cargo"
	cargo install --locked --quiet --force bindgen-cli --version "$BINDGEN_VERSION"
fi

# The kernel build uses Debian's rustc explicitly; make sure it is the pinned one.
/usr/bin/rustc --version | grep -q '^rustc 1\.85\.0 ' ||
	die "/usr/bin/rustc is not 1.85.0: $(/usr/bin/rustc --version)"
step "toolchain ready: $(/usr/bin/rustc --version | cut -d' ' -f1-2), $("$bindgen" --version), $(clang-19 --version | head -n1)"
