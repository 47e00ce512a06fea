#!/usr/bin/env python3
"""Tests of ci/regression-verdict.py (the regression suites against their
baseline) on canned guest logs: a doctored baseline or run must fail."""

import importlib.util
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
CI = os.path.dirname(HERE)
sys.path.insert(0, CI)

import verdict  # noqa: E402

spec = importlib.util.spec_from_file_location("regression_verdict",
                                              os.path.join(CI, "regression-verdict.py"))
rv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rv)

RESULTS = os.path.join(HERE, "logs", "regression.results.log")
BASELINE = os.path.join(HERE, "logs", "regression.baseline.txt")


def lines(path=RESULTS):
    with open(path, encoding="utf-8") as f:
        return f.readlines()


def run(results_lines, baseline_text=None, list_text=None):
    """main() on the given run, baseline and list; returns (rc, output lines, summary)."""
    with tempfile.TemporaryDirectory() as d:
        res = os.path.join(d, "results.log")
        with open(res, "w", encoding="utf-8") as f:
            f.writelines(results_lines)
        base = BASELINE
        if baseline_text is not None:
            base = os.path.join(d, "baseline.txt")
            with open(base, "w", encoding="utf-8") as f:
                f.write(baseline_text)
        args = ["--results", res, "--baseline", base, "--summary", os.path.join(d, "summary")]
        if list_text is not None:
            lst = os.path.join(d, "list.txt")
            with open(lst, "w", encoding="utf-8") as f:
                f.write(list_text)
            args += ["--list", lst]
        out = os.path.join(d, "out")
        saved = sys.stdout
        with open(out, "w", encoding="utf-8") as sys.stdout:
            try:
                rc = rv.main(args)
            finally:
                sys.stdout = saved
        with open(out, encoding="utf-8") as f:
            output = f.read().splitlines()
        with open(os.path.join(d, "summary"), encoding="utf-8") as f:
            summary = f.read().split()
    return rc, output, summary


def baseline_with(old, new):
    with open(BASELINE, encoding="utf-8") as f:
        text = f.read()
    assert old in text, old
    return text.replace(old, new)


class RegressionVerdict(unittest.TestCase):
    def test_outcomes(self):
        found, problems = rv.outcomes(lines())
        self.assertEqual(problems, [])
        self.assertEqual(found["futex:futex_wait"], "not ok")
        self.assertEqual(found["futex:futex_wait / 1 futex_wake private succeeds"], "ok")
        self.assertEqual(found["timers:posix_timers / 3 check_gettime CLOCK_TAI"], "skip")
        self.assertNotIn("umcg:umcg_ctl_test", found)

    def test_match(self):
        rc, out, summary = run(lines())
        self.assertEqual(rc, 0, out)
        self.assertEqual(summary, ["3", "0", "0"])

    def test_umcg_verdict_ignores_the_regression_part(self):
        t = verdict.judge([], lines(), ["selftests: umcg: umcg_ctl_test"], 2)
        self.assertEqual(t.problems, [])
        self.assertEqual((t.passed, t.failed), (1, 0))

    def test_doctored_baseline_binary(self):
        rc, out, summary = run(lines(), baseline_with("ok\tsigaltstack:sas\n", "not ok\tsigaltstack:sas\n"))
        self.assertEqual(rc, 1)
        self.assertIn("regression: mismatch: sigaltstack:sas: ok, baseline not ok", out)
        self.assertEqual(summary, ["2", "1", "0"])

    def test_doctored_baseline_subtest(self):
        rc, out, _ = run(lines(), baseline_with("not ok\ttimers:posix_timers / 2 check_rearm",
                                                "ok\ttimers:posix_timers / 2 check_rearm"))
        self.assertEqual(rc, 1)
        self.assertTrue(any("check_rearm: not ok, baseline ok" in o for o in out), out)

    def test_new_failure_in_the_run(self):
        doctored = [ln.replace("    ok 1 ITIMER_VIRTUAL", "    not ok 1 ITIMER_VIRTUAL") for ln in lines()]
        rc, out, _ = run(doctored)
        self.assertEqual(rc, 1)
        self.assertTrue(any("ITIMER_VIRTUAL: not ok, baseline ok" in o for o in out), out)

    def test_missing_test(self):
        text = "".join(lines())
        cut = text[:text.index("# running selftests: sigaltstack")] + "umcg-guest: done\n"
        rc, out, summary = run(cut.splitlines(True))
        self.assertEqual(rc, 1)
        self.assertTrue(any("plan of 3 tests, 2 reported" in o for o in out), out)
        self.assertTrue(any("sigaltstack:sas: in the baseline (ok), not reported" in o for o in out), out)
        self.assertEqual(summary[1], "1")

    def test_test_not_in_baseline(self):
        rc, out, _ = run(lines(), baseline_with("ok\tsigaltstack:sas\n", ""))
        self.assertEqual(rc, 1)
        self.assertIn("regression: mismatch: sigaltstack:sas: ok, not in the baseline", out)

    def test_no_regression_part(self):
        text = [ln for ln in lines() if not ln.startswith("umcg-guest: regression")]
        rc, out, _ = run(text[:8])
        self.assertEqual(rc, 1)
        self.assertTrue(any("'umcg-guest: regression' missing" in o for o in out), out)

    def test_varies_is_not_compared_but_must_be_reported(self):
        base = baseline_with("ok\ttimers:posix_timers / 1 ITIMER_VIRTUAL", "varies\ttimers:posix_timers / 1 ITIMER_VIRTUAL")
        doctored = [ln.replace("    ok 1 ITIMER_VIRTUAL", "    not ok 1 ITIMER_VIRTUAL") for ln in lines()]
        self.assertEqual(run(doctored, base)[0], 0)
        # A varying subtest may change its name; a varying program must
        # still be reported.
        renamed = [ln.replace("    ok 1 ITIMER_VIRTUAL", "    ok 1 ITIMER_VIRTUAL took 3 ms") for ln in lines()]
        rc, out, _ = run(renamed, base)
        self.assertEqual(rc, 1)
        self.assertTrue(any("ITIMER_VIRTUAL took 3 ms: ok, not in the baseline" in o for o in out), out)
        base += "varies\ttimers:posix_timers / 1 ITIMER_VIRTUAL took 3 ms\n"
        self.assertEqual(run(renamed, base)[0], 0)
        text = "".join(lines())
        cut = text[:text.index("# running selftests: sigaltstack")] + "umcg-guest: done\n"
        rc, out, _ = run(cut.splitlines(True), baseline_with("ok\tsigaltstack:sas\n", "varies\tsigaltstack:sas\n"))
        self.assertEqual(rc, 1)
        self.assertTrue(any("sigaltstack:sas: in the baseline (varies), not reported" in o for o in out), out)

    def test_unstable_in_the_list(self):
        doctored = [ln.replace("    ok 1 ITIMER_VIRTUAL", "    not ok 1 ITIMER_VIRTUAL") for ln in lines()]
        self.assertEqual(run(doctored, list_text="unstable timers:posix_timers / 1 ITIMER_VIRTUAL\n")[0], 0)
        # Naming a program covers its subtests; a prefix of a name does not.
        self.assertEqual(run(doctored, list_text="unstable timers:posix_timers\n")[0], 0)
        self.assertEqual(run(doctored, list_text="unstable timers:posix_time\n")[0], 1)
        # Unstable subtests may come and go; the program may not.
        text = "".join(lines())
        cut = text[:text.index("    ok 1 Initial sigaltstack")] + "ok 3 selftests: sigaltstack: sas\n"
        self.assertEqual(run(cut.splitlines(True), list_text="unstable sigaltstack:sas\n")[0], 0)
        cut = text[:text.index("# running selftests: sigaltstack")]
        self.assertEqual(run(cut.splitlines(True), list_text="unstable sigaltstack:sas\n")[0], 1)

    def test_bad_baseline_line(self):
        with self.assertRaises(ValueError):
            run(lines(), "ok futex:futex_wait\n")

    def test_record(self):
        a, _ = rv.outcomes(lines())
        b = dict(a)
        b["timers:posix_timers / 1 ITIMER_VIRTUAL"] = "not ok"
        del b["sigaltstack:sas"]
        got = rv.record([a, b], ["# header"])
        self.assertEqual(got[0], "# header")
        self.assertIn("varies\ttimers:posix_timers / 1 ITIMER_VIRTUAL", got)
        self.assertIn("varies\tsigaltstack:sas", got)
        self.assertIn("not ok\ttimers:posix_timers / 2 check_rearm", got)

    def test_record_round_trip_and_refuses_incomplete_runs(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "baseline.txt")
            saved = sys.stdout
            with open(os.devnull, "w", encoding="utf-8") as sys.stdout:
                try:
                    rc = rv.main(["--record", "--results", RESULTS, "--results", RESULTS,
                                  "--baseline", out, "--header", "recorded by a test"])
                    cut = os.path.join(d, "cut.log")
                    with open(cut, "w", encoding="utf-8") as f:
                        f.writelines(lines()[:20])
                    bad = rv.main(["--record", "--results", RESULTS, "--results", cut,
                                   "--baseline", os.path.join(d, "never.txt")])
                finally:
                    sys.stdout = saved
            self.assertEqual((rc, bad), (0, 1))
            self.assertFalse(os.path.exists(os.path.join(d, "never.txt")))
            with open(out, encoding="utf-8") as f:
                text = f.read()
            self.assertTrue(text.startswith("# recorded by a test\n"))
            self.assertEqual(rv.read_baseline(out), rv.read_baseline(BASELINE))


if __name__ == "__main__":
    unittest.main()
