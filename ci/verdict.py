#!/usr/bin/env python3
"""Decide whether one guest test run passed.

The guest writes its results (one KTAP document: a top-level plan with one
result per test binary, each binary's own KTAP nested under it) to the
second serial port, and the kernel writes its log to the first. A run
passes only if all of these hold:

  * the guest reported, and reported completion ("umcg-guest: done");
  * it saw the number of CPUs it was given;
  * the top-level plan and every nested plan are complete, every test that
    the host expected was reported, and no test failed;
  * the kernel log has no splat (WARN, BUG, Oops, lockdep, KASAN, RCU
    stall, hung task, panic, ...);
  * the host did not have to kill the guest (a hang).

Prints one line per test binary, the reasons for a failure, and a closing
"N passed, M failed" line; exits 0 on a pass and 1 otherwise.
"""

import argparse
import re
import sys
from dataclasses import dataclass, field

# Kernel log lines start with a PRINTK_TIME stamp; only those are searched,
# so that test output that happens to contain "WARNING:" cannot count.
STAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
SPLATS = [
    re.compile(p)
    for p in (
        r"WARNING:",
        r"\bBUG:",
        r"kernel BUG at",
        r"\bOops\b",
        r"Kernel panic",
        r"general protection fault",
        r"Unable to handle kernel",
        r"scheduling while atomic",
        r"do not call blocking ops",
        r"possible circular locking",
        r"inconsistent lock state",
        r"INFO: task .* blocked for more than",
        r"detected stalls? on CPU",
        r"self-detected stall",
        r"\bUBSAN:",
        r"\bKASAN:",
        r"\bKFENCE:",
        r"kmemleak: \d+ new suspected",
        r"Call Trace:",
        r"panicked at",
        r"soft lockup|hard LOCKUP",
        # A failed KUnit test (the Rust doctests run at boot).
        r"^\s*not ok \d+ ",
    )
]

# A user-space fault that the kernel turned into a signal, reported by
# show_unhandled_signals ("traps: prog[pid] general protection fault ip:...
# in prog[...]"): the test's own business, not a kernel splat.
USER_FAULT = re.compile(r"^traps: \S+\[\d+\] general protection fault ip:\S+ sp:\S+ error:\S+ in ")

KTAP_RESULT = re.compile(r"^(not ok|ok)\s+(\d+)\s*(?:-\s*)?([^#]*?)\s*(?:#\s*(.*))?$")
KTAP_PLAN = re.compile(r"^1\.\.(\d+)")
KTAP_VERSION = re.compile(r"^(?:K?TAP) version \d+")


@dataclass
class Result:
    ok: bool
    number: int
    name: str
    directive: str
    children: "Block | None" = None

    @property
    def skipped(self) -> bool:
        return self.ok and self.directive.upper().startswith("SKIP")


@dataclass
class Block:
    indent: int
    plan: "int | None" = None
    results: list = field(default_factory=list)


def parse_ktap(lines):
    """Returns the top-level Block of a (possibly nested) KTAP document."""
    stack = [Block(indent=0)]
    for raw in lines:
        line = raw.rstrip("\r\n").replace("\r", "")
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if not stripped or stripped.startswith("#"):
            continue
        if KTAP_VERSION.match(stripped):
            while len(stack) > 1 and stack[-1].indent >= indent:
                stack.pop()
            if indent > stack[-1].indent:
                stack.append(Block(indent=indent))
            continue
        m = KTAP_PLAN.match(stripped)
        if m:
            while len(stack) > 1 and stack[-1].indent > indent:
                stack.pop()
            if indent > stack[-1].indent:
                stack.append(Block(indent=indent))
            stack[-1].plan = int(m.group(1))
            continue
        m = KTAP_RESULT.match(stripped)
        if m:
            child = None
            while len(stack) > 1 and stack[-1].indent > indent:
                child = stack.pop()
            if indent > stack[-1].indent:
                stack.append(Block(indent=indent))
            stack[-1].results.append(
                Result(
                    ok=m.group(1) == "ok",
                    number=int(m.group(2)),
                    name=m.group(3).strip(),
                    directive=(m.group(4) or "").strip(),
                    children=child,
                )
            )
    return stack[0]


@dataclass
class Tally:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    problems: list = field(default_factory=list)


def tally_block(block, where, tally):
    if block.plan is None:
        tally.problems.append(f"{where}: no KTAP plan")
        tally.failed += 1
    elif len(block.results) != block.plan:
        tally.problems.append(
            f"{where}: plan of {block.plan} tests, {len(block.results)} reported"
        )
        tally.failed += max(block.plan - len(block.results), 1)
    for i, r in enumerate(block.results, start=1):
        name = f"{where} / {r.name}" if where else r.name
        if r.number != i:
            tally.problems.append(f"{name}: numbered {r.number}, expected {i}")
            tally.failed += 1
        if r.children is not None:
            before = tally.failed
            tally_block(r.children, name, tally)
            if not r.ok and tally.failed == before:
                # The binary failed (crash, timeout, exit code) although
                # every subtest it printed passed.
                tally.problems.append(f"{name}: not ok ({r.directive or 'no reason'})")
                tally.failed += 1
        elif r.skipped:
            tally.skipped += 1
        elif r.ok:
            tally.passed += 1
        else:
            tally.problems.append(f"{name}: not ok {r.directive}".rstrip())
            tally.failed += 1


def find_splats(console_lines):
    found = []
    for n, raw in enumerate(console_lines, start=1):
        line = raw.rstrip("\r\n")
        m = STAMP.match(line)
        if not m:
            continue
        text = line[m.end():]
        if USER_FAULT.match(text):
            continue
        if any(p.search(text) for p in SPLATS):
            found.append(f"console line {n}: {text.strip()}")
    return found


def umcg_part(lines):
    """The lines before the regression suites' document, which
    ci/regression-verdict.py judges against its baseline instead."""
    lines = list(lines)
    for i, line in enumerate(lines):
        if line.rstrip("\r\n") == "umcg-guest: regression":
            return lines[:i]
    return lines


def judge(console_lines, result_lines, expected_tests=None, cpus=None, timed_out=False,
          preempt=None):
    """Returns a Tally; the run passed iff tally.problems is empty."""
    tally = Tally()
    text = [line.rstrip("\r\n").replace("\r", "") for line in result_lines]

    if timed_out:
        tally.problems.append("the guest hung: the host killed it at the timeout")
    if not any(line.strip() for line in text):
        tally.problems.append("the guest never reported (no results on the results port)")
    elif "umcg-guest: done" not in text:
        tally.problems.append("the guest did not report completion ('umcg-guest: done' missing)")

    if cpus is not None:
        seen = [m.group(1) for line in text for m in [re.match(r"umcg-guest: cpus=(\d+)", line)] if m]
        if not seen:
            tally.problems.append("the guest did not report its CPU count")
        elif int(seen[0]) != cpus:
            tally.problems.append(f"the guest saw {seen[0]} CPUs, {cpus} were given")

    if preempt is not None:
        seen = [m.group(1) for line in text
                for m in [re.match(r"umcg-guest: cpus=\d+ .*preempt=(\S+)", line)] if m]
        if not seen:
            tally.problems.append("the guest did not report its preemption model")
        elif seen[0] != preempt:
            tally.problems.append(f"the guest ran with preempt={seen[0]}, preempt={preempt} was asked for")

    # The guest says "umcg-guest: no ..." when it could not set up what tests
    # need (cgroup v2, the ext2 loop mount): they would skip, silently.
    for line in text:
        if line.startswith("umcg-guest: no "):
            tally.problems.append(f"incomplete test environment: {line[len('umcg-guest: '):]}")

    top = parse_ktap(line for line in umcg_part(text) if not line.startswith("umcg-guest:"))
    if top.plan is not None or top.results:
        tally_block(top, "", tally)
    if expected_tests is not None:
        reported = {r.name for r in top.results}
        for t in expected_tests:
            if t not in reported:
                tally.problems.append(f"{t}: expected but never reported")
                tally.failed += 1

    splats = find_splats(console_lines)
    if splats:
        tally.problems.append(f"kernel splat ({len(splats)} line(s)):")
        tally.problems.extend("  " + s for s in splats[:20])
    return tally


def expected_from_list(path):
    names = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if ":" in line:
                collection, test = line.split(":", 1)
                names.append(f"selftests: {collection}: {test}")
    return names


def read(path):
    """The lines of a log, none if it does not exist (the guest never wrote it)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readlines()
    except FileNotFoundError:
        return []


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--console", required=True, help="the kernel console log")
    ap.add_argument("--results", required=True, help="the results-port log")
    ap.add_argument("--expect", help="kselftest-list.txt of the tests that must be reported")
    ap.add_argument("--cpus", type=int, help="vCPUs the guest was given")
    ap.add_argument("--preempt", help="the preemption model the guest was booted with")
    ap.add_argument("--timed-out", action="store_true", help="the host killed the guest")
    ap.add_argument("--label", default="guest", help="prefix for the output lines")
    ap.add_argument("--summary", help="append 'passed failed skipped' to this file")
    args = ap.parse_args(argv)

    tally = judge(
        read(args.console),
        read(args.results),
        expected_from_list(args.expect) if args.expect else None,
        args.cpus,
        args.timed_out,
        args.preempt,
    )
    top = parse_ktap(umcg_part(read(args.results)))
    for r in top.results:
        print(f"{args.label}: {'ok' if r.ok else 'FAIL'} {r.name}"
              + (f" # {r.directive}" if r.directive else ""))
    for p in tally.problems:
        print(f"{args.label}: problem: {p}")
    # A failing run with no failed test still counts as one failure.
    failed = tally.failed or (1 if tally.problems else 0)
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as f:
            f.write(f"{tally.passed} {failed} {tally.skipped}\n")
    verdict = "PASS" if not tally.problems else "FAIL"
    print(f"{args.label}: {verdict}: {tally.passed} passed, {failed} failed, {tally.skipped} skipped")
    return 0 if not tally.problems else 1


if __name__ == "__main__":
    sys.exit(main())
