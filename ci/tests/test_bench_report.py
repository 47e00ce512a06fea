"""Tests of ci/bench-report.py, the report of `make bench`, on canned results."""

import csv
import importlib.util
import os
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("bench_report",
                                              os.path.join(HERE, "..", "bench-report.py"))
bench_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_report)

# One kernel's guest output: comments, noise and three repetitions per metric.
HANDOFF = """# umcg-bench: kernel 6.12.117+
junk line from the console
bench switch/yield_pinned ns_per_switch 1000.0
bench switch/yield_pinned ns_per_switch 1100.0
bench switch/yield_pinned ns_per_switch 900.0
bench switch/futex_pinned ns_per_switch 2000.0
bench switch/futex_pinned ns_per_switch 2000.0
bench switch/futex_pinned ns_per_switch 2000.0
bench switch/umcg_server_server ns_per_switch 1040.0
bench switch/umcg_server_server ns_per_switch 1040.0
bench switch/umcg_server_server ns_per_switch 5000.0
bench switch/umcg_server_worker_server ns_per_switch 1500.0
bench block/umcg_block_detection ns 2000.0
bench scaling/umcg_server_worker/2 ns_per_switch 1500.0
bench scaling/umcg_server_worker/1000 ns_per_switch 1800.0\r
bench runtime_mixed/umcg/1000 ns_per_task 100.0
bench runtime_mixed/threads/1000 ns_per_task 150.0
bench runtime_mixed/tokio/1000 ns_per_task 300.0
bench runtime_mixed_csw/umcg/1000 csw_per_task 4.0
bench runtime_mixed_syscalls/umcg/1000 syscalls_per_task 9.0
bench server_rps/umcg/100 req_per_s 1000
bench server_rps/threads/100 req_per_s 800
bench server_p99/umcg/100 us 900
bench server_p99/threads/100 us 1000
bench server_rps/umcg/10000 req_per_s 500
bench server_rps/threads/10000 req_per_s 600
bench server_rps/tokio_async/10000 req_per_s 1000
bench server_p99/umcg/10000 us 3000
bench server_p99/threads/10000 us 2000
bench server_p99/tokio_async/10000 us 1500
bench server_mem/umcg/10000 KiB_per_conn 20
bench runtime_throughput/umcg/10 tasks_per_s 50.0
"""

BEFORE = """bench switch/yield_pinned ns_per_switch 1000.0
bench switch/umcg_server_server ns_per_switch 2080.0
bench runtime_throughput/umcg/10 tasks_per_s 25.0
"""


class BenchReportTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.files = []
        for name, text in (("a", HANDOFF), ("b", BEFORE)):
            path = os.path.join(self.dir.name, name + ".log")
            with open(path, "w") as f:
                f.write(text)
            self.files.append(path)

    def tearDown(self):
        self.dir.cleanup()

    def report(self):
        data = bench_report.parse([f"handoff={self.files[0]}", f"no-handoff={self.files[1]}"])
        r = bench_report.Report(data)
        r.compute()
        return r

    def ratio(self, r, name, label="handoff"):
        found = [x for x in r.ratios if x[1] == name and x[2] == label]
        self.assertEqual(1, len(found), name)
        return found[0]

    def test_medians_ignore_noise(self):
        r = self.report()
        self.assertEqual(1000.0, r.median("handoff", "switch/yield_pinned"))
        # The outlier does not move the median.
        self.assertEqual(1040.0, r.median("handoff", "switch/umcg_server_server"))
        self.assertEqual(1800.0, r.median("handoff", "scaling/umcg_server_worker/1000"))

    def test_goals(self):
        r = self.report()
        g = self.ratio(r, "server<->server switch / same-CPU sched_yield floor")
        self.assertAlmostEqual(1.04, g[3])
        self.assertTrue(g[5])
        # The same ratio against the moonshot target.
        g = self.ratio(r, "server<->server switch / same-CPU sched_yield floor (moonshot)")
        self.assertAlmostEqual(1.04, g[3])
        self.assertFalse(g[5])
        g = self.ratio(r, "server<->server switch / same-CPU futex ping-pong")
        self.assertAlmostEqual(0.52, g[3])
        self.assertTrue(g[5])
        g = self.ratio(r, "server->worker->server switch / same-CPU sched_yield floor")
        self.assertAlmostEqual(1.5, g[3])
        self.assertFalse(g[5])
        g = self.ratio(r, "block detection / one server->worker->server switch")
        self.assertAlmostEqual(2000 / 1500, g[3])
        self.assertTrue(g[5])
        g = self.ratio(r, "switch with 1000 workers / with 2")
        self.assertAlmostEqual(1.2, g[3])
        self.assertFalse(g[5])

    def test_runtime_speedups_for_times(self):
        r = self.report()
        g = self.ratio(r, "runtime mixed workload: speedup over threads (1000 tasks)")
        self.assertAlmostEqual(1.5, g[3])
        self.assertFalse(g[5])  # the goal is 2x
        g = self.ratio(r, "runtime mixed workload: speedup over tokio (1000 tasks)")
        self.assertAlmostEqual(3.0, g[3])
        self.assertTrue(g[5])  # the goal is 2.5x
        self.assertAlmostEqual(4.0, self.ratio(r, "context switches per task, umcg (1000 tasks)")[3])
        self.assertAlmostEqual(9.0, self.ratio(r, "umcg::sys calls per task (umcg_wait, umcg_ctl, the runtime's futexes, tgkill) (1000 tasks)")[3])

    def test_echo_server_goals(self):
        r = self.report()
        g = self.ratio(r, "echo server: throughput / thread-per-connection (100 conns)")
        self.assertAlmostEqual(1.25, g[3])
        self.assertTrue(g[5])
        g = self.ratio(r, "echo server: p99 of thread-per-connection / ours (100 conns)")
        self.assertAlmostEqual(1000 / 900, g[3])
        self.assertTrue(g[5])
        g = self.ratio(r, "echo server: throughput / thread-per-connection (10000 conns)")
        self.assertFalse(g[5])
        # Within 1.5x of tokio async at 10000 connections: 0.5x and 2x are not.
        g = self.ratio(r, "echo server: throughput / tokio async (10000 conns)")
        self.assertAlmostEqual(0.5, g[3])
        self.assertFalse(g[5])
        g = self.ratio(r, "echo server: p99 / tokio async's (10000 conns)")
        self.assertAlmostEqual(2.0, g[3])
        self.assertFalse(g[5])
        # Only at 10000 connections.
        self.assertFalse([x for x in r.ratios if x[1] == "echo server: throughput / tokio async (100 conns)"])
        self.assertAlmostEqual(20.0, self.ratio(r, "memory per connection, umcg, KiB (10000 conns)")[3])

    def test_a_goal_without_its_figures_is_not_measured(self):
        # tokio async failed at 10000 connections, umcg at 1000: their goals are
        # reported as not measured instead of disappearing.
        path = os.path.join(self.dir.name, "partial.log")
        with open(path, "w") as f:
            f.write("bench server_rps/umcg/10000 req_per_s 500\n"
                    "bench server_rps/threads/10000 req_per_s 400\n"
                    "bench server_p99/umcg/10000 us 10\n"
                    "bench server_p99/threads/10000 us 20\n"
                    "bench server_rps/threads/1000 req_per_s 400\n")
        r = bench_report.Report(bench_report.parse([f"series={path}"]))
        r.compute()
        missing = {name for name, _, _ in r.unmeasured}
        self.assertIn("echo server: throughput / tokio async (10000 conns)", missing)
        self.assertIn("echo server: throughput / thread-per-connection (1000 conns)", missing)
        self.assertNotIn("echo server: throughput / thread-per-connection (10000 conns)", missing)
        md = r.markdown(2, "TCG")
        self.assertIn("| echo server: p99 / tokio async's (10000 conns) | series | - | <= 1.5x | **not measured** |", md)

    def test_kernel_against_kernel(self):
        r = self.report()
        g = self.ratio(r, "switch/umcg_server_server")
        self.assertEqual("handoff vs no-handoff", g[0])
        self.assertAlmostEqual(0.5, g[3])
        self.assertIn("< 1 is faster", g[4])
        # A rate: higher is better.
        g = self.ratio(r, "runtime_throughput/umcg/10")
        self.assertAlmostEqual(2.0, g[3])
        self.assertIn("> 1 is faster", g[4])

    def test_outputs_say_only_ratios_carry_over(self):
        r = self.report()
        md = r.markdown(2, "TCG")
        self.assertIn("only ratios", md)
        self.assertIn("**not met**", md)
        out = os.path.join(self.dir.name, "out")
        os.makedirs(out)
        r.write_csv(os.path.join(out, "results.csv"), os.path.join(out, "ratios.csv"))
        for name in ("results.csv", "ratios.csv"):
            with open(os.path.join(out, name)) as f:
                rows = list(csv.reader(f))
            self.assertIn("only ratios", rows[0][0])
            self.assertGreater(len(rows), 2)


    def test_no_regression_against_the_base_kernel(self):
        series = os.path.join(self.dir.name, "series.log")
        base = os.path.join(self.dir.name, "base.log")
        with open(series, "w") as f:
            f.write("bench noumcg/switch/futex_pinned ns_per_switch 2010.0\n"
                    "bench noumcg/base/fork_exit ns_per_fork 1100.0\n")
        with open(base, "w") as f:
            f.write("bench noumcg/switch/futex_pinned ns_per_switch 2000.0\n"
                    "bench noumcg/base/fork_exit ns_per_fork 1000.0\n")
        data = bench_report.parse([f"series@voluntary={series}", f"base@voluntary={base}"])
        r = bench_report.Report(data)
        r.compute()
        g = self.ratio(r, "no regression: noumcg/switch/futex_pinned / base kernel", "series@voluntary")
        self.assertAlmostEqual(1.005, g[3])
        self.assertTrue(g[5])
        g = self.ratio(r, "no regression: noumcg/base/fork_exit / base kernel", "series@voluntary")
        self.assertAlmostEqual(1.1, g[3])
        self.assertFalse(g[5])
        # Kernels are compared metric by metric under the same model only.
        self.assertTrue([x for x in r.ratios if x[0] == "series@voluntary vs base@voluntary"])
        data = bench_report.parse([f"series@voluntary={series}", f"base@full={base}"])
        r2 = bench_report.Report(data)
        r2.compute()
        self.assertFalse([x for x in r2.ratios if " vs " in x[0]])
        # Nothing is compared for the base kernel itself.
        self.assertFalse([x for x in r.ratios if x[2] == "base@voluntary" and x[0] == "goal"])


if __name__ == "__main__":
    unittest.main()
