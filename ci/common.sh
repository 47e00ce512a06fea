# shellcheck shell=bash
# Settings shared by the scripts in ci/. Sourced, not executed.

# The base tree: Debian's linux-source-6.12, pinned.
LINUX_SOURCE_PKG=linux-source-6.12
LINUX_SOURCE_VERSION=6.12.117-1~deb12u1
LINUX_SOURCE_TARBALL=/usr/src/linux-source-6.12.tar.xz
LINUX_SOURCE_SHA256=585a4a074597aefa2b1a68ada83a3184ba351c127544dea80618bbcceaa3961f

# Kernel Rust toolchain (Debian rustc-web), pinned.
RUST_WEB_VERSION=1.85.0+dfsg3-1~deb12u3
BINDGEN_VERSION=0.69.5

# Fixed identity and dates: `make linux` must produce the same commits on
# every machine, and a fresh clone has no git identity of its own.
UMCG_GIT_NAME="UMCG Build"
UMCG_GIT_EMAIL="umcg-build@localhost"
UMCG_BASE_DATE="2025-01-01T00:00:00Z"
UMCG_BASE_TAG=base
UMCG_BRANCH=umcg

die() {
	echo "error: $*" >&2
	exit 1
}

step() {
	echo ">>> $*" >&2
}

# The preemption model (none, voluntary or full) of a test boot with CPUS
# vCPUs, from TEST_PREEMPT ("CPUS:MODEL ..."); nothing for the default.
preempt_for() {
	local w
	for w in ${TEST_PREEMPT-2:voluntary 4:full}; do
		if [ "${w%%:*}" = "$1" ]; then
			echo "${w#*:}"
			return
		fi
	done
}
