#!/usr/bin/env python3
"""Tests of ci/verdict.py on canned guest logs: a verdict that can pass a
broken run is worse than none, so every way to fail is checked here."""

import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import verdict  # noqa: E402

EXPECT = ["selftests: umcg: umcg_ctl_test", "selftests: umcg: umcg_fork_test"]


def log(name):
    with open(os.path.join(HERE, "logs", name), encoding="utf-8") as f:
        return f.readlines()


def judge(console="pass.console.log", results="pass.results.log", **kw):
    kw.setdefault("expected_tests", EXPECT)
    kw.setdefault("cpus", 2)
    return verdict.judge(log(console), log(results) if results else [], **kw)


class Verdict(unittest.TestCase):
    def test_pass(self):
        t = judge()
        self.assertEqual(t.problems, [])
        self.assertEqual((t.passed, t.failed, t.skipped), (3, 0, 1))

    def test_failed_subtest(self):
        t = judge(results="failed.results.log")
        self.assertEqual(t.failed, 1)
        self.assertTrue(any("ctl.bad_flags" in p for p in t.problems), t.problems)

    def test_missing_subtest(self):
        t = judge(results="missing.results.log")
        self.assertGreaterEqual(t.failed, 1)
        self.assertTrue(any("plan of 3 tests, 2 reported" in p for p in t.problems), t.problems)

    def test_missing_binary(self):
        t = judge(expected_tests=EXPECT + ["selftests: umcg: umcg_wait_test"])
        self.assertTrue(any("umcg_wait_test: expected but never reported" in p for p in t.problems))

    def test_top_level_plan_short(self):
        lines = [ln.replace("1..2", "1..3") if ln.strip() == "1..2" else ln
                 for ln in log("pass.results.log")]
        t = verdict.judge(log("pass.console.log"), lines, EXPECT, 2)
        self.assertTrue(any("plan of 3 tests, 2 reported" in p for p in t.problems), t.problems)

    def test_binary_failed_but_subtests_passed(self):
        lines = [ln.replace("ok 2 selftests: umcg: umcg_fork_test",
                            "not ok 2 selftests: umcg: umcg_fork_test # TIMEOUT 60s")
                 for ln in log("pass.results.log")]
        t = verdict.judge(log("pass.console.log"), lines, EXPECT, 2)
        self.assertEqual(t.failed, 1)
        self.assertTrue(any("TIMEOUT" in p for p in t.problems), t.problems)

    def test_warn(self):
        t = judge(console="warn.console.log")
        self.assertTrue(any("kernel splat" in p for p in t.problems), t.problems)
        self.assertTrue(any("WARNING: CPU: 1" in p for p in t.problems), t.problems)

    def test_every_splat_kind(self):
        for text in ("BUG: scheduling while atomic: umcg/77/0x00000002",
                     "BUG: sleeping function called from invalid context at mm/gup.c:1",
                     "Oops: general protection fault, probably for non-canonical address",
                     "Kernel panic - not syncing: Fatal exception",
                     "rcu: INFO: rcu_preempt self-detected stall on CPU",
                     "INFO: task umcg_wait_test:90 blocked for more than 10 seconds.",
                     "WARNING: possible circular locking dependency detected",
                     "BUG: KASAN: slab-use-after-free in umcg_wait+0x1/0x2",
                     "kmemleak: 2 new suspected memory leaks",
                     "rust_kernel: panicked at kernel/sched/umcg.rs:1:1:",
                     "watchdog: BUG: soft lockup - CPU#0 stuck for 22s!",
                     "        not ok 3 rust_doctest_kernel_uaccess_rs_0",
                     "not ok 1 rust_doctests_kernel"):
            console = log("pass.console.log") + [f"[    2.000000] {text}\n"]
            t = verdict.judge(console, log("pass.results.log"), EXPECT, 2)
            self.assertTrue(t.problems, text)

    def test_user_space_fault_is_not_a_splat(self):
        line = ("[   69.188538] traps: fsgsbase_restor[316] general protection fault "
                "ip:40255f sp:7ffd668d7e70 error:802 in fsgsbase_restore_64[255f,401000+7d000]\n")
        self.assertEqual(verdict.find_splats([line]), [])
        kernel = "[    2.000000] general protection fault, probably for non-canonical address 0xdead: 0000 [#1]\n"
        self.assertEqual(len(verdict.find_splats([line, kernel])), 1)

    def test_passed_kunit_tests_are_not_splats(self):
        lines = ["[    1.000000]     ok 1 rust_doctest_kernel_task_rs_0\n",
                 "[    1.000000] ok 1 rust_doctests_kernel\n",
                 "[    1.000000]     ok 2 rust_doctest_kernel_page_rs_1 # SKIP\n"]
        self.assertEqual(verdict.find_splats(lines), [])

    def test_splat_words_in_test_output_do_not_count(self):
        self.assertEqual(verdict.find_splats(log("pass.console.log")), [])

    def test_hang(self):
        t = judge(results="hang.results.log", timed_out=True)
        self.assertTrue(any("hung" in p for p in t.problems), t.problems)
        self.assertTrue(any("completion" in p for p in t.problems), t.problems)

    def test_never_reported(self):
        t = judge(results=None)
        self.assertTrue(any("never reported" in p for p in t.problems), t.problems)

    def test_wrong_cpu_count(self):
        t = judge(cpus=4)
        self.assertTrue(any("saw 2 CPUs, 4 were given" in p for p in t.problems), t.problems)

    def test_preemption_model(self):
        self.assertEqual(judge(preempt="voluntary").problems, [])
        t = judge(preempt="full")
        self.assertTrue(any("ran with preempt=voluntary, preempt=full was asked for" in p
                            for p in t.problems), t.problems)

    def test_preemption_model_not_reported(self):
        lines = [line.replace(" preempt=voluntary", "") for line in log("pass.results.log")]
        t = verdict.judge(log("pass.console.log"), lines, EXPECT, 2, preempt="full")
        self.assertTrue(any("did not report its preemption model" in p for p in t.problems),
                        t.problems)

    def test_incomplete_environment(self):
        lines = log("pass.results.log")
        lines.insert(1, "umcg-guest: no ext2 file system on a loop device\n")
        t = verdict.judge(log("pass.console.log"), lines, EXPECT, 2)
        self.assertTrue(any("incomplete test environment: no ext2" in p for p in t.problems),
                        t.problems)

    def test_main_exit_code_and_summary(self):
        with tempfile.TemporaryDirectory() as d:
            summary = os.path.join(d, "summary")
            args = ["--console", os.path.join(HERE, "logs", "pass.console.log"),
                    "--cpus", "2", "--summary", summary]
            ok = verdict.main(args + ["--results", os.path.join(HERE, "logs", "pass.results.log")])
            bad = verdict.main(args + ["--results", os.path.join(HERE, "logs", "failed.results.log")])
            self.assertEqual((ok, bad), (0, 1))
            with open(summary, encoding="utf-8") as f:
                self.assertEqual(f.read().split("\n")[:2], ["3 0 1", "2 1 1"])


if __name__ == "__main__":
    unittest.main()
