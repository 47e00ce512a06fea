#!/usr/bin/env python3
"""The report of `make bench`: ratios, medians, a CSV and a plot.

Reads the guest's results (lines "bench <metric> <unit> <value>", one per
repetition, from umcg-bench and umcg-runtime-bench) of one or more boots of
one or more kernels, given as LABEL=FILE (the first label is the kernel
under test), and writes to --out:

  report.md    the goals (issues 5, 11 and 12) with the measured ratios, every ratio,
               and the medians with their spread
  results.csv  per kernel and metric: repetitions, median, quartiles, range
  ratios.csv   every ratio of the report
  bench.png    switch costs per kernel and the goal ratios (needs matplotlib)

Every ratio divides two medians of the same kernel and run. The guest is
emulated (TCG): absolute figures depend on the host and its load, only
ratios carry over; every output says so.
"""

import argparse
import csv
import os
import re
import statistics
import sys

TCG_NOTE = ("The guest is emulated (QEMU TCG): absolute times say nothing about real "
            "hardware; only ratios between figures of the same run carry over.")

YIELD = "switch/yield_pinned"
FUTEX_PINNED = "switch/futex_pinned"
FUTEX_FREE = "switch/futex_free"
PIPE_FREE = "switch/pipe_free"
SS = "switch/umcg_server_server"
SWS = "switch/umcg_server_worker_server"
WW = "switch/umcg_worker_worker"
BLOCK = "block/umcg_block_detection"
WAKE = "wake/umcg_wake_detection"
SCALING = "scaling/umcg_server_worker/"
# Tasks that do not use UMCG: the series against the base kernel (label
# "base@MODEL", the tree without UMCG), within 2%.
# Measured by umcg-bench -B, first in each boot (before anything used UMCG).
NO_REGRESSION = ["noumcg/switch/pipe_pinned", "noumcg/switch/futex_pinned",
                 "noumcg/base/fork_exit", "noumcg/base/wakeup_storm"]

LINE = re.compile(r"^bench\s+(\S+)\s+(\S+)\s+([-+0-9.eE]+)\s*$")


def parse(files):
    """{label: {metric: (unit, [values])}}, labels in the order given."""
    data = {}
    for spec in files:
        label, _, path = spec.partition("=")
        if not path:
            sys.exit(f"bench-report: expected LABEL=FILE, got {spec!r}")
        metrics = data.setdefault(label, {})
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = LINE.match(line.strip().replace("\r", ""))
                if not m:
                    continue
                metric, unit, value = m.group(1), m.group(2), float(m.group(3))
                entry = metrics.setdefault(metric, (unit, []))
                if entry[0] != unit:
                    sys.exit(f"bench-report: {metric}: unit {unit} after {entry[0]}")
                entry[1].append(value)
    return data


def quantile(values, q):
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    pos = q * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def stats(values):
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p25": quantile(values, 0.25),
        "p75": quantile(values, 0.75),
        "min": min(values),
        "max": max(values),
    }


def higher_is_better(unit):
    return bool(re.search(r"per_s$|per_sec|/s$|ops|throughput", unit))


class Report:
    def __init__(self, data):
        self.data = data
        self.labels = list(data)
        self.main = self.labels[0]
        self.stats = {l: {m: (u, stats(v)) for m, (u, v) in ms.items()}
                      for l, ms in data.items()}
        self.ratios = []  # (group, name, label, value, goal text, met or None)
        self.unmeasured = []  # goals whose figures are missing: (name, label, goal text)

    def median(self, label, metric):
        entry = self.stats[label].get(metric)
        return entry[1]["median"] if entry else None

    def unit(self, label, metric):
        entry = self.stats[label].get(metric)
        return entry[0] if entry else None

    def ratio(self, label, num, den, across=False):
        """num / den of one kernel's medians; with across, the metric num of
        kernel label against the same metric of kernel den."""
        if across:
            a, b = self.median(label, num), self.median(den, num)
        else:
            a, b = self.median(label, num), self.median(label, den)
        if a is None or b is None or b == 0:
            return None
        return a / b

    def add(self, group, name, label, value, goal=None, check=None):
        if value is None:
            return
        met = check(value) if check else None
        self.ratios.append((group, name, label, value, goal, met))

    def compute(self):
        # Issue 11: a directed switch with the caller sleeping, per preemption model
        # (each KERNEL@MODEL label); the must-goal, then the moonshot.
        switch_goals = [
            (SS, "server<->server switch", YIELD, "same-CPU sched_yield floor", 1.3, 1.0),
            (SS, "server<->server switch", FUTEX_PINNED, "same-CPU futex ping-pong", 0.8, 0.7),
            (SWS, "server->worker->server switch", YIELD, "same-CPU sched_yield floor",
             1.4, 1.15),
        ]
        for label in self.labels:
            for num, name, den, what, limit, moon in switch_goals:
                value = self.ratio(label, num, den)
                self.add("goal", f"{name} / {what}", label, value,
                         f"<= {limit}x", lambda v, limit=limit: v <= limit)
                self.add("goal", f"{name} / {what} (moonshot)", label, value,
                         f"<= {moon}x", lambda v, moon=moon: v <= moon)
            self.add("goal", "block detection / one server->worker->server switch", label,
                     self.ratio(label, BLOCK, SWS), "<= 1.5x", lambda v: v <= 1.5)
            base = f"{SCALING}2"
            for metric in sorted(self.stats[label], key=natural):
                if metric.startswith(SCALING) and metric != base:
                    n = metric[len(SCALING):]
                    self.add("goal", f"switch with {n} workers / with 2", label,
                             self.ratio(label, metric, base), "within 10% (0.9-1.1x)",
                             lambda v: 0.9 <= v <= 1.1)
            self.runtime_goals(label)

            info = [
                (SS, "server<->server switch", FUTEX_FREE, "cross-CPU futex ping-pong"),
                (SS, "server<->server switch", PIPE_FREE, "pipe ping-pong"),
                (SS + "_timed", "server<->server switch with a timeout", SS, "without"),
                (SS + "_pinned", "server<->server switch, pinned", YIELD, "sched_yield floor"),
                (WW, "worker->worker switch", YIELD, "sched_yield floor"),
                (WW, "worker->worker switch", FUTEX_PINNED, "same-CPU futex ping-pong"),
                (SWS, "server->worker->server switch", SS, "server<->server switch"),
                (WAKE, "wake detection", SWS, "one server->worker->server switch"),
                (FUTEX_PINNED, "same-CPU futex ping-pong", YIELD, "sched_yield floor"),
                (FUTEX_FREE, "cross-CPU futex ping-pong", YIELD, "sched_yield floor"),
                (PIPE_FREE, "pipe ping-pong", YIELD, "sched_yield floor"),
            ]
            for num, name, den, what in info:
                self.add("other", f"{name} / {what}", label, self.ratio(label, num, den))

        # Tasks that do not use UMCG must not pay for it: each model's kernel
        # under test against the base kernel booted under the same model.
        main_kernel = self.main.split("@")[0]
        for label in self.labels:
            kernel, _, model = label.partition("@")
            base = f"base@{model}" if model else "base"
            if kernel != main_kernel or base not in self.stats:
                continue
            for metric in NO_REGRESSION:
                self.add("goal", f"no regression: {metric} / base kernel", label,
                         self.ratio(label, metric, base, across=True), "<= 1.02x",
                         lambda v: v <= 1.02)

        # The kernel under test against every other kernel booted under the same
        # preemption model (KERNEL@MODEL), metric by metric: across models the
        # figures differ by the model, not by the kernel.
        for label in self.labels:
            kernel, _, model = label.partition("@")
            if kernel != main_kernel:
                continue
            for other in self.labels:
                okernel, _, omodel = other.partition("@")
                if okernel == kernel or omodel != model:
                    continue
                for metric in sorted(self.stats[label], key=natural):
                    if metric not in self.stats[other]:
                        continue
                    unit = self.unit(label, metric)
                    a, b = self.median(label, metric), self.median(other, metric)
                    if not b:
                        continue
                    # Below 1 is better for times, above 1 for rates.
                    self.add(f"{label} vs {other}", metric, label, a / b,
                             "< 1 is faster" if not higher_is_better(unit) else "> 1 is faster")

    def runtime_goals(self, label):
        """Issue 12: runtime_mixed/umcg/N against runtime_mixed/{threads,tokio}/N,
        with the context switches and system calls per task beside them; the
        echo server (server_*/IMPL/CONNS) against thread-per-connection and
        tokio."""
        st = self.stats[label]

        def sizes(prefix):
            """The sizes that any implementation has a figure for: a goal whose
            figures are missing is then reported as not measured."""
            found = {m.group(1) for m in (re.match(rf"^{prefix}/[^/]+/(\d+)$", k) for k in st) if m}
            return sorted(found, key=int)

        def goal(name, value, target, check):
            if value is None:
                self.unmeasured.append((name, label, target))
            else:
                self.add("goal", name, label, value, target, check)

        for n in sizes("runtime_mixed"):
            metric = f"runtime_mixed/umcg/{n}"
            for other, limit in (("threads", 2.0), ("tokio", 2.5)):
                base = f"runtime_mixed/{other}/{n}"
                r = self.ratio(label, base, metric)  # ns per task: theirs / ours
                goal(f"runtime mixed workload: speedup over {other} ({n} tasks)",
                     r, f">= {limit}x", lambda v, limit=limit: v >= limit)
            for impl in ("umcg", "threads", "tokio"):
                self.add("per task", f"time per task / the compute floor, {impl} ({n} tasks)",
                         label, self.ratio(label, f"runtime_mixed/{impl}/{n}",
                                           f"runtime_mixed/floor/{n}"))
            for impl in ("umcg", "threads", "tokio"):
                self.add("per task", f"context switches per task, {impl} ({n} tasks)", label,
                         self.median(label, f"runtime_mixed_csw/{impl}/{n}"))
            self.add("per task", f"umcg::sys calls per task (umcg_wait, umcg_ctl, the runtime's "
                     f"futexes, tgkill) ({n} tasks)", label,
                     self.median(label, f"runtime_mixed_syscalls/umcg/{n}"))
        for n in map(int, sizes("server_rps")):
            rps, p99 = f"server_rps/umcg/{n}", f"server_p99/umcg/{n}"
            goal(f"echo server: throughput / thread-per-connection ({n} conns)",
                 self.ratio(label, rps, f"server_rps/threads/{n}"), "> 1x", lambda v: v > 1.0)
            goal(f"echo server: p99 of thread-per-connection / ours ({n} conns)",
                 self.ratio(label, f"server_p99/threads/{n}", p99), "> 1x", lambda v: v > 1.0)
            if n >= 10000:
                goal(f"echo server: throughput / tokio async ({n} conns)",
                     self.ratio(label, rps, f"server_rps/tokio_async/{n}"),
                     ">= 0.667x (within 1.5x)", lambda v: v >= 1 / 1.5)
                goal(f"echo server: p99 / tokio async's ({n} conns)",
                     self.ratio(label, p99, f"server_p99/tokio_async/{n}"),
                     "<= 1.5x", lambda v: v <= 1.5)
            for other in ("threads", "tokio_async", "tokio_blocking"):
                self.add("echo server", f"throughput / {other} ({n} conns)", label,
                         self.ratio(label, rps, f"server_rps/{other}/{n}"))
                self.add("echo server", f"p99 / {other}'s ({n} conns)", label,
                         self.ratio(label, p99, f"server_p99/{other}/{n}"))
            for impl in ("umcg", "threads", "tokio_async", "tokio_blocking"):
                self.add("echo server", f"memory per connection, {impl}, KiB ({n} conns)",
                         label, self.median(label, f"server_mem/{impl}/{n}"))

    def markdown(self, cpus, mode):
        out = ["# UMCG benchmarks (`make bench`)", "",
               f"**{TCG_NOTE}**", "",
               f"Kernels: {', '.join(f'`{l}`' for l in self.labels)} (the first is the one "
               f"under test); {cpus} vCPUs; {mode}. Ratios divide medians of the "
               "same kernel and run.", ""]
        out += ["## Goals (issues 5, 11 and 12; the switch goals per preemption model: KERNEL@MODEL)", "",
                "| goal | kernel | ratio | target | |", "| --- | --- | ---: | --- | --- |"]
        for group, name, label, value, goal, met in self.ratios:
            if group == "goal":
                out.append(f"| {name} | {label} | {value:.3f}x | {goal} | "
                           f"{'met' if met else '**not met**'} |")
        for name, label, goal in self.unmeasured:
            out.append(f"| {name} | {label} | - | {goal} | **not measured** |")
        groups = [g for g in dict.fromkeys(r[0] for r in self.ratios) if g != "goal"]
        for g in groups:
            if g == "other":
                title = "Other ratios"
            elif g == "per task":
                title = "Runtime mixed workload: costs per task (medians, not ratios)"
            elif g == "echo server":
                title = "Echo server: ratios, and memory per connection (medians)"
            else:
                title = f"`{g.split(' vs ')[0]}` / `{g.split(' vs ')[1]}`, metric by metric"
            out += ["", f"## {title}", "", "| ratio | kernel | value | |",
                    "| --- | --- | ---: | --- |"]
            for group, name, label, value, goal, _ in self.ratios:
                if group == g:
                    shown = f"{value:.2f}" if g == "per task" or name.startswith("memory") else f"{value:.3f}x"
                    out.append(f"| {name} | {label} | {shown} | {goal or ''} |")
        out += ["", "## Medians", "",
                "Spread: the interquartile range as a share of the median.", "",
                "| metric | unit | " + " | ".join(f"{l} median | {l} spread | n" for l in self.labels) + " |",
                "| --- | --- | " + " | ".join("---: | ---: | ---:" for _ in self.labels) + " |"]
        for metric in self.all_metrics():
            unit = next(self.unit(l, metric) for l in self.labels if self.unit(l, metric))
            cells = []
            for l in self.labels:
                entry = self.stats[l].get(metric)
                if not entry:
                    cells.append("| | ")
                    continue
                s = entry[1]
                spread = (s["p75"] - s["p25"]) / s["median"] * 100 if s["median"] else 0
                cells.append(f"{s['median']:.1f} | {spread:.1f}% | {s['n']}")
            out.append(f"| {metric} | {unit} | " + " | ".join(cells) + " |")
        out += ["", f"_{TCG_NOTE}_", ""]
        return "\n".join(out)

    def all_metrics(self):
        seen = {}
        for l in self.labels:
            for m in self.stats[l]:
                seen[m] = None
        return sorted(seen, key=natural)

    def write_csv(self, path_results, path_ratios):
        with open(path_results, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([f"# {TCG_NOTE}"])
            w.writerow(["kernel", "metric", "unit", "n", "median", "p25", "p75", "min", "max"])
            for l in self.labels:
                for metric in self.all_metrics():
                    if metric in self.stats[l]:
                        unit, s = self.stats[l][metric]
                        w.writerow([l, metric, unit, s["n"]] +
                                   [f"{s[k]:.1f}" for k in ("median", "p25", "p75", "min", "max")])
        with open(path_ratios, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([f"# {TCG_NOTE}"])
            w.writerow(["group", "ratio", "kernel", "value", "target", "met"])
            for group, name, label, value, goal, met in self.ratios:
                w.writerow([group, name, label, f"{value:.4f}", goal or "",
                            "" if met is None else ("yes" if met else "no")])
            for name, label, goal in self.unmeasured:
                w.writerow(["goal", name, label, "", goal, "not measured"])

    def plot(self, path):
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("bench-report: matplotlib is missing: no plot", file=sys.stderr)
            return False
        order = [YIELD, FUTEX_PINNED, FUTEX_FREE, "switch/pipe_pinned", PIPE_FREE]
        switch = [m for m in order if m in self.all_metrics()]
        switch += [m for m in self.all_metrics() if m.startswith("switch/") and m not in switch]
        extra = [m for m in (BLOCK, WAKE) if any(m in self.stats[l] for l in self.labels)]
        metrics = switch + extra
        goals = [r for r in self.ratios if r[0] == "goal"]
        server = sorted({int(m.split("/")[2]) for m in self.stats[self.main]
                         if m.startswith("server_rps/")})
        fig, axes = plt.subplots(3 if server else 2, 1, figsize=(12, 15 if server else 10))
        ax = axes[0]
        width = 0.8 / max(1, len(self.labels))
        for i, l in enumerate(self.labels):
            vals = [self.median(l, m) or 0 for m in metrics]
            errs = [[(self.median(l, m) or 0) - self.stats[l][m][1]["p25"] if m in self.stats[l] else 0 for m in metrics],
                    [self.stats[l][m][1]["p75"] - (self.median(l, m) or 0) if m in self.stats[l] else 0 for m in metrics]]
            ax.bar([x + i * width for x in range(len(metrics))], vals, width, yerr=errs, label=l)
        ax.set_xticks([x + width * (len(self.labels) - 1) / 2 for x in range(len(metrics))])
        ax.set_xticklabels([m.split("/", 1)[1] for m in metrics], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("ns (median, bars: quartiles)")
        ax.set_title("Switch, block and wake costs (TCG guest: compare bars, not absolute ns)")
        ax.legend()
        ax = axes[1]
        names = [f"{g[1]} [{g[2]}]" for g in goals]
        colors = ["tab:green" if g[5] else "tab:red" for g in goals]
        ax.barh(range(len(goals)), [g[3] for g in goals], color=colors)
        ax.set_yticks(range(len(goals)))
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color="grey", linewidth=0.8)
        ax.set_xlabel("ratio (green: goal met, red: not met)")
        ax.set_title("Goal ratios per kernel@preemption model (issues 5, 11, 12)")
        if server:
            ax = axes[2]
            impls = ["umcg", "threads", "tokio_async", "tokio_blocking"]
            width = 0.8 / len(impls)
            for i, impl in enumerate(impls):
                vals = [self.median(self.main, f"server_rps/{impl}/{n}") or 0 for n in server]
                bars = ax.bar([x + i * width for x in range(len(server))], vals, width, label=impl)
                for b, n in zip(bars, server):
                    p99 = self.median(self.main, f"server_p99/{impl}/{n}")
                    if p99:
                        ax.annotate(f"p99 {p99 / 1000:.1f} ms", (b.get_x() + b.get_width() / 2, b.get_height()),
                                    ha="center", va="bottom", fontsize=6, rotation=90)
            ax.set_xticks([x + width * (len(impls) - 1) / 2 for x in range(len(server))])
            ax.set_xticklabels([f"{n} connections" for n in server])
            ax.set_ylabel("requests/s (median)")
            ax.set_title(f"Blocking-I/O echo server [{self.main}] (load generator on the same vCPUs)")
            ax.legend()
        fig.suptitle("UMCG make bench. " + TCG_NOTE, fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        fig.savefig(path, dpi=100)
        return True


def natural(s):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpus", default="?")
    ap.add_argument("--mode", default="TCG")
    ap.add_argument("results", nargs="+", help="LABEL=FILE")
    args = ap.parse_args()
    data = parse(args.results)
    if not any(data.values()):
        sys.exit("bench-report: no measurements")
    r = Report(data)
    r.compute()
    os.makedirs(args.out, exist_ok=True)
    md = r.markdown(args.cpus, args.mode)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(md)
    r.write_csv(os.path.join(args.out, "results.csv"), os.path.join(args.out, "ratios.csv"))
    plotted = r.plot(os.path.join(args.out, "bench.png"))
    print(md)
    print(f"bench-report: wrote {args.out}/report.md, results.csv, ratios.csv"
          + (", bench.png" if plotted else ""))


if __name__ == "__main__":
    main()
