#!/usr/bin/env bash
# The rust-umcg workspace: host checks, and the guest tests.
#
# Usage: ci/rust-umcg.sh check LOGDIR
#          cargo fmt --check, clippy -D warnings, cargo test, the loom model
#          checks (--cfg loom), the guest tests against the host model of the
#          kernel (--cfg umcg_model, with a stress loop of the protocol tests for
#          UMCG_MODEL_STRESS_SECS, default 30) and the doc examples against it,
#          cargo doc; writes
#          "passed failed skipped" of the host tests to LOGDIR/rust-total.txt.
#        ci/rust-umcg.sh bench OUT
#          builds umcg-runtime-bench static (for make bench) at OUT.
#        ci/rust-umcg.sh guest KSELFTEST_DIR
#          builds the guest tests static and installs them as the "rust-umcg"
#          collection of KSELFTEST_DIR (so the guest's runner and the verdict
#          treat them like the kernel's selftests), and umcg-protocol-stress,
#          the protocol tests in a loop for UMCG_STRESS_SECS (default 60).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/common.sh
. "$top/ci/common.sh"
ws=$top/rust-umcg
target=x86_64-unknown-linux-gnu
# The machine's own toolchain (rustup), not the kernel's pinned one.
export PATH=$HOME/.cargo/bin:$PATH

case "${1:-}" in
check)
	logdir=$2
	mkdir -p "$logdir"
	log=$logdir/rust-tests.log
	cd "$ws"
	step "rust-umcg: fmt, clippy, tests, docs"
	# rustup's default profile has both; a minimal one may not, and rustup must not
	# download anything here: then the lints are skipped, loudly.
	if cargo fmt --version > /dev/null 2>&1; then
		cargo fmt --all --check
	else
		echo "warning: no rustfmt in this toolchain: cargo fmt --check skipped" >&2
	fi
	if cargo clippy --version > /dev/null 2>&1; then
		cargo clippy --workspace --all-targets --quiet -- -D warnings
	else
		echo "warning: no clippy in this toolchain: cargo clippy skipped" >&2
	fi
	rc=0
	cargo test --workspace --quiet > "$log" 2>&1 || rc=$?
	# The loom model checks (bounded preemptions), in a target dir of their own.
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$ws/target/loom" \
		cargo test --quiet -p umcg -p umcg-runtime --lib loom >> "$log" 2>&1 || rc=$?
	if cargo clippy --version > /dev/null 2>&1; then
		RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$ws/target/loom" \
			cargo clippy --quiet -p umcg -p umcg-runtime --tests -- -D warnings
	fi
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
	# The guest tests, on this host, against the model of the kernel's half of the
	# protocol: the library's and the runtime's logic without a UMCG kernel.
	step "rust-umcg: guest tests against the host model of the kernel"
	mlog=$logdir/rust-model.ktap
	model() {
		RUSTFLAGS="--cfg umcg_model" RUSTDOCFLAGS="--cfg umcg_model" \
			CARGO_TARGET_DIR="$ws/target/model" "$@"
	}
	if cargo clippy --version > /dev/null 2>&1; then
		model cargo clippy --quiet -p umcg -p umcg-guest-tests --all-targets -- -D warnings
	fi
	model cargo build --quiet -p umcg-guest-tests
	# The doc examples, which return at once on a host without UMCG, run for real here.
	model cargo test --quiet --doc -p umcg -p umcg-runtime >> "$log" 2>&1 || rc=$?
	: > "$mlog"
	for t in "umcg-protocol-tests" "umcg-runtime-tests" \
		"umcg-protocol-tests --stress ${UMCG_MODEL_STRESS_SECS:-30}"; do
		# shellcheck disable=SC2086 # the test's arguments
		"$ws"/target/model/debug/$t >> "$mlog" 2>&1 || rc=$?
	done
	passed=$(awk '/^test result:/ {for (i = 1; i <= NF; i++) if ($i ~ /^passed;?$/) p += $(i - 1)} END {print p + 0}' "$log")
	failed=$(awk '/^test result:/ {for (i = 1; i <= NF; i++) if ($i ~ /^failed;?$/) f += $(i - 1)} END {print f + 0}' "$log")
	mskipped=$(grep -c '^ok [0-9]* .* # SKIP' "$mlog" || true)
	mpassed=$(($(grep -c '^ok ' "$mlog" || true) - mskipped))
	mfailed=$(grep -c '^not ok ' "$mlog" || true)
	passed=$((passed + mpassed))
	failed=$((failed + mfailed))
	[ "$rc" = 0 ] || [ "$failed" -gt 0 ] || failed=1
	echo "$passed $failed $mskipped" > "$logdir/rust-total.txt"
	echo "host: rust-umcg tests: $passed passed, $failed failed, $mskipped skipped" \
		"($mpassed passed against the model of the kernel)"
	[ "$rc" = 0 ] || { cat "$log" "$mlog" >&2; exit 1; }
	;;
guest)
	kst=$2
	[ -f "$kst/kselftest-list.txt" ] || die "no $kst/kselftest-list.txt: build the selftests first"
	step "rust-umcg: guest tests (static)"
	(cd "$ws" && RUSTFLAGS="-C target-feature=+crt-static" \
		cargo build --quiet --release --target "$target" -p umcg-guest-tests \
		-p umcg -p umcg-runtime --bins --examples)
	dest=$kst/rust-umcg
	rm -rf "$dest"
	mkdir -p "$dest"
	tests=(umcg-protocol-tests umcg-runtime-tests)
	for t in "${tests[@]}"; do
		cp "$ws/target/$target/release/$t" "$dest/"
	done
	# The examples, which umcg-runtime-tests runs.
	for e in simple_scheduler thousand_reads echo_server; do
		cp "$ws/target/$target/release/examples/$e" "$dest/"
	done
	# The protocol tests again, in a loop for a bounded time (a race that shows
	# once in a hundred runs is found by a loop, not by a single run).
	cat > "$dest/umcg-protocol-stress" <<-EOF
		#!/bin/sh
		exec "\$(dirname "\$0")/umcg-protocol-tests" --stress ${UMCG_STRESS_SECS:-60}
	EOF
	chmod +x "$dest/umcg-protocol-stress"
	tests+=(umcg-protocol-stress)
	# Each binary runs its tests in child processes with their own timeouts.
	echo "timeout=600" > "$dest/settings"
	sed -i '/^rust-umcg:/d' "$kst/kselftest-list.txt"
	printf 'rust-umcg:%s\n' "${tests[@]}" >> "$kst/kselftest-list.txt"
	;;
bench)
	out=$2
	step "rust-umcg: runtime benchmark (static)"
	(cd "$ws" && RUSTFLAGS="-C target-feature=+crt-static" \
		cargo build --quiet --release --target "$target" -p umcg-bench)
	[ -x "$out" ] || die "no $out after the build"
	;;
*)
	die "usage: $0 check LOGDIR | guest KSELFTEST_DIR | bench OUT"
	;;
esac
