# UMCG in Rust for Linux: the one entry point. See README.md.
#
#   make run       build everything, boot the guest, show the demo, get a shell
#   make test      build everything, run the host tests and the selftests in
#                  the guest (once per TEST_CPUS), fail on any failure or splat
#   make deps      install the pinned toolchain
#   make linux     (re)create linux/ from the base tarball and patches/
#   make patches   export linux/'s commits to patches/
#   make kernel    build the kernel (incremental)
#   make image     build the guest image (selftests, demo, overlay)
#   make test-debug  make test on a debug kernel (lockdep, atomic-sleep checks, ...)
#   make regression-baseline  re-record ci/regression-baseline.txt on the
#                  base kernel (see README.md, Regression suites)
#   make fuzz      the UMCG fuzzer alone, long (FUZZ_OPS operations), in the guest
#   make check-ci  the host-side tests of the test machinery only
#   make rust-check  the rust-umcg workspace on the host (fmt, clippy, tests, docs)
#   make check-patches  scripts/checkpatch.pl --strict on every patch (and check-man)
#   make check-man  lint the man pages in man/ (mandoc, groff), compile their examples
#   make check-series   build the kernel at every patch (slow)
#   make series    the series as you would post it, in build/series-out/: your
#                  identity (SUBMITTER), recipients, a send-email dry run;
#                  sends nothing (see README.md, Submitting the series)
#   make test-rt   check that UMCG stays out of PREEMPT_RT kernels (see README.md)
#   make bench     benchmarks in the guest, with and without the directed switch
#                  patch; report in build/bench/ (see README.md, Performance)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
TOP := $(CURDIR)

BUILD     ?= $(TOP)/build
KOUT      ?= $(BUILD)/kernel
DEBUG_KOUT ?= $(BUILD)/kernel-debug
CONFIGS   ?= configs/umcg.config
LOGDIR    ?= $(BUILD)/logs
KSELFTEST ?= $(BUILD)/kselftest
SELFTEST_TARGETS ?= umcg
# The regression suites (ci/regression-list.txt) and their baseline, which
# make regression-baseline records on the base tree in BASE_TREE/BASE_KOUT.
REGRESSION ?= $(BUILD)/regression
REGRESSION_BASELINE ?= $(TOP)/ci/regression-baseline.txt
BASE_TREE ?= $(BUILD)/base-tree
BASE_KOUT ?= $(BUILD)/kernel-base

# Guest knobs (see README.md): accelerator, vCPUs, memory, timeout.
export ACCEL   ?= tcg
export MEM     ?= 1024
export TIMEOUT ?= 900
CPUS      ?= 2
TEST_CPUS ?= 2 4

BZIMAGE := $(KOUT)/arch/x86/boot/bzImage
INITRD  := $(BUILD)/guest.cpio
DEMO    := $(BUILD)/umcg-demo

# make bench: the C microbenchmarks, and the runtime benchmarks of
# rust-umcg/ when they are built.
BENCH_OUT    ?= $(BUILD)/bench
BENCH_BIN    := $(BUILD)/umcg-bench
BENCH_INITRD := $(BUILD)/bench.cpio
RUNTIME_BENCH ?= $(TOP)/rust-umcg/target/x86_64-unknown-linux-gnu/release/umcg-runtime-bench

# make fuzz: the budget (operations and seconds, whichever runs out first,
# 0: no limit), the seed (0: a new one), vCPUs, and the boot's time limit.
FUZZ_OPS     ?= 1000000
FUZZ_TIME    ?= 0
FUZZ_SEED    ?= 0
FUZZ_CPUS    ?= 2
FUZZ_TIMEOUT ?= 5400
# make test-debug: KASAN, lockdep and kmemleak under TCG are slow.
DEBUG_TIMEOUT ?= 2400

.PHONY: fuzz test-rt
.PHONY: regression regression-baseline
.PHONY: rust-guest rust-check rust-bench
.PHONY: help deps linux linux-for-build patches kernel kernel-debug selftests demo image test-debug \
	run test check-ci check-patches check-man check-series series clean distclean bench bench-bin

help:
	@sed -n '3,/^$$/p' Makefile | sed -e '$$d' -e 's/^# \{0,1\}//'

deps:
	@ci/deps.sh

linux: deps
	@ci/linux.sh

# Like 'linux', but builds keep unsaved work in linux/ instead of refusing.
linux-for-build: deps
	@ci/linux.sh --build

patches:
	@ci/patches.sh

kernel: linux-for-build
	@ci/kernel.sh $(KOUT) $(CONFIGS) -- bzImage headers

# A separate output directory, so that both kernels stay incremental.
kernel-debug: linux-for-build
	@ci/kernel.sh $(DEBUG_KOUT) $(CONFIGS) configs/debug.config -- bzImage

selftests: kernel
	@ci/selftests.sh $(KOUT) $(KSELFTEST) $(SELFTEST_TARGETS)

demo: kernel
	@mkdir -p $(BUILD)
	gcc -O2 -Wall -Werror -static -isystem $(KOUT)/usr/include demo/umcg-demo.c -o $(DEMO)

regression: kernel
	@ci/regression.sh linux $(KOUT) $(REGRESSION)

# The rust-umcg guest tests join the selftests as the "rust-umcg" collection.
rust-guest: selftests
	@ci/rust-umcg.sh guest $(KSELFTEST)

# The rust-umcg workspace on the host: fmt, clippy, unit tests, docs.
rust-check:
	@ci/rust-umcg.sh check $(LOGDIR)

rust-bench:
	@ci/rust-umcg.sh bench $(RUNTIME_BENCH)

image: selftests rust-guest regression demo
	@ci/image.sh $(INITRD) $(KSELFTEST) $(DEMO):/usr/bin/umcg-demo $(REGRESSION):/usr/lib/regression

run: image
	@ci/qemu.sh demo $(CPUS) $(LOGDIR) $(BZIMAGE) $(INITRD)

bench-bin: kernel
	@mkdir -p $(BUILD)
	gcc -O2 -Wall -Wextra -Werror -static -isystem $(KOUT)/usr/include bench/umcg-bench.c -o $(BENCH_BIN) -lpthread

bench: bench-bin selftests rust-bench
	@ci/image.sh $(BENCH_INITRD) $(KSELFTEST) $(BENCH_BIN):/usr/bin/umcg-bench \
		$$([ -x "$(RUNTIME_BENCH)" ] && echo "$(RUNTIME_BENCH):/usr/bin/umcg-runtime-bench")
	@CONFIGS="$(CONFIGS)" ci/bench.sh $(BENCH_OUT) $(BENCH_INITRD) $(CPUS) $(BZIMAGE)

check-ci:
	@ci/host-tests.sh $(LOGDIR)

# UMCG is not offered with PREEMPT_RT: check that Kconfig keeps it out.
test-rt: linux-for-build
	@ci/check-rt.sh $(BUILD)/check-rt $(CONFIGS)

check-series: kernel check-man
	@ci/check-series.sh $(KOUT)/.config

# The draft man pages of the two system calls (see README.md, Man pages).
check-man:
	@ci/check-man.sh

check-patches: linux check-man
	@python3 -c 'import ply, git' 2> /dev/null || python3 -m pip install -q --root-user-action=ignore ply GitPython
	@cd linux && for p in ../patches/0[0-9][0-9][0-9]-*.patch; do \
		[ "$${p##*/}" = 0000-cover-letter.patch ] && continue; \
		scripts/checkpatch.pl --strict --quiet --no-summary "$$p" || true; \
	done; rm -f .checkpatch-camelcase.*

series: linux
	@ci/series.sh

# test-rt first: it makes linux/, which check-ci's submission test applies the series against.
test: test-rt check-ci rust-check image
	@rc=0; REGRESSION_BASELINE=$(REGRESSION_BASELINE) ci/test.sh $(BZIMAGE) $(INITRD) $(KSELFTEST) $(LOGDIR) $(TEST_CPUS) || rc=$$?; \
	ci/summary.sh $(LOGDIR); exit $$rc

test-debug: check-ci rust-check image kernel-debug
	@rc=0; TIMEOUT=$(DEBUG_TIMEOUT) ci/test.sh $(DEBUG_KOUT)/arch/x86/boot/bzImage $(INITRD) $(KSELFTEST) $(LOGDIR) $(TEST_CPUS) || rc=$$?; \
	ci/summary.sh $(LOGDIR); exit $$rc

fuzz: image
	@TIMEOUT=$(FUZZ_TIMEOUT) ci/fuzz.sh $(BZIMAGE) $(INITRD) $(BUILD)/logs-fuzz $(FUZZ_CPUS) \
		$(FUZZ_OPS) $(FUZZ_TIME) $(FUZZ_SEED)

# Not part of make test: the baseline is committed.
regression-baseline: linux-for-build
	@ci/regression-baseline.sh $(BASE_TREE) $(BASE_KOUT) $(BUILD)/regression-base \
		$(BUILD)/logs-base $(REGRESSION_BASELINE) $(TEST_CPUS)

clean:
	rm -rf $(BUILD)

# Also removes linux/ (refusing while it holds unsaved work).
distclean: clean
	@ci/linux.sh --check-clean
	rm -rf linux
