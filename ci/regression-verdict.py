#!/usr/bin/env python3
"""Compare a guest run of the regression suites with the recorded baseline.

The guest prints the regression suites (ci/regression-list.txt) as a
second KTAP document on the results port, after a line
"umcg-guest: regression". Every test binary and every subtest it reports
becomes one outcome, "ok", "not ok" or "skip", under the name
"COLLECTION:TEST" or "COLLECTION:TEST / N SUBTEST".

  --record  merges the outcomes of one or more runs on the base kernel
            into a baseline file (an outcome that differs between the
            runs is recorded as "varies");
  otherwise compares one run with the baseline: every test of the
            baseline must be reported with the same outcome, and no test
            outside it may appear. Outcomes recorded as "varies", and tests
            named on an "unstable" line of the list (a program's line
            covers its subtests), are not compared; a test program must
            still be reported.

Exits 0 when the run matches (or the baseline was written), 1 otherwise.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from verdict import parse_ktap, read  # noqa: E402

MARKER = "umcg-guest: regression"
OUTCOMES = ("ok", "not ok", "skip", "varies")


def regression_part(lines):
    """The lines of the regression document, or None if it is missing."""
    text = [line.rstrip("\r\n").replace("\r", "") for line in lines]
    if MARKER not in text:
        return None
    part = []
    for line in text[text.index(MARKER) + 1:]:
        if line.startswith("umcg-guest:"):
            break
        part.append(line)
    return part


def outcome(result):
    if result.skipped:
        return "skip"
    return "ok" if result.ok else "not ok"


def outcomes(lines):
    """Returns ({name: outcome}, [problems]) for one run's results log."""
    part = regression_part(lines)
    if part is None:
        return {}, ["no regression results ('umcg-guest: regression' missing)"]
    top = parse_ktap(part)
    found, problems = {}, []
    if top.plan is None:
        problems.append("the regression document has no plan")
    elif len(top.results) != top.plan:
        problems.append(f"regression plan of {top.plan} tests, {len(top.results)} reported")
    for r in top.results:
        name = r.name
        if name.startswith("selftests: "):
            collection, _, test = name[len("selftests: "):].partition(": ")
            name = f"{collection}:{test}"
        found[name] = outcome(r)
        if r.children is not None:
            for c in r.children.results:
                sub = f"{name} / {c.number} {c.name}".rstrip()
                # A repeated name keeps its first outcome: stable enough.
                found.setdefault(sub, outcome(c))
    return found, problems


def read_unstable(path):
    """Tests named on 'unstable NAME' lines of ci/regression-list.txt."""
    names = []
    if path:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("unstable "):
                    names.append(line[len("unstable "):].strip())
    return names


def is_unstable(name, unstable):
    return any(name == u or name.startswith(u + " / ") for u in unstable)


def read_baseline(path):
    base = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            out, sep, name = line.partition("\t")
            if not sep or out not in OUTCOMES or not name:
                raise ValueError(f"{path}:{n}: not 'OUTCOME<TAB>TEST': {line!r}")
            base[name] = out
    return base


def record(runs, header):
    """Merges the outcome maps of several runs into baseline lines."""
    names = []
    for run in runs:
        names.extend(n for n in run if n not in names)
    lines = list(header)
    for name in names:
        seen = {run.get(name, "missing") for run in runs}
        lines.append(f"{seen.pop() if len(seen) == 1 else 'varies'}\t{name}")
    return lines


def compare(found, base, unstable=()):
    """Returns the mismatches between a run and the baseline, as
    (test name, message) pairs."""
    problems = []
    for name, want in base.items():
        got = found.get(name)
        loose = want == "varies" or is_unstable(name, unstable)
        if got is None:
            # A subtest whose outcome varies may vary in its name too;
            # a test program must always be reported.
            if not loose or " / " not in name:
                problems.append((name, f"in the baseline ({want}), not reported"))
        elif got != want and not loose:
            problems.append((name, f"{got}, baseline {want}"))
    for name, got in found.items():
        if name not in base and not is_unstable(name, unstable):
            problems.append((name, f"{got}, not in the baseline"))
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, action="append",
                    help="a results-port log (several with --record)")
    ap.add_argument("--baseline", required=True, help="the baseline file")
    ap.add_argument("--list", help="ci/regression-list.txt, for its 'unstable' lines")
    ap.add_argument("--record", action="store_true", help="write the baseline from the runs")
    ap.add_argument("--header", action="append", default=[], help="a header comment line (--record)")
    ap.add_argument("--label", default="regression", help="prefix for the output lines")
    ap.add_argument("--summary", help="append 'passed failed skipped' to this file")
    args = ap.parse_args(argv)

    runs, problems = [], []
    for path in args.results:
        found, p = outcomes(read(path))
        runs.append(found)
        problems.extend(f"{path}: {x}" if args.record else x for x in p)

    if args.record:
        if problems:
            for p in problems:
                print(f"{args.label}: problem: {p}")
            print(f"{args.label}: FAIL: not recording an incomplete run")
            return 1
        lines = record(runs, ["# " + h if h else "#" for h in args.header])
        with open(args.baseline, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        varies = sum(1 for line in lines if line.startswith("varies\t"))
        print(f"{args.label}: recorded {len(lines) - len(args.header)} outcomes "
              f"({varies} varying) in {args.baseline}")
        return 0

    found = runs[0]
    base = read_baseline(args.baseline)
    mismatches = compare(found, base, read_unstable(args.list))
    problems += [f"{name}: {msg}" for name, msg in mismatches]
    # Counts: a test program of the baseline whose own outcome and
    # subtests all match is one pass, one with any mismatch one failure.
    programs = [n for n in base if " / " not in n]
    bad = {name.split(" / ")[0] for name, _ in mismatches}
    failed = sum(1 for n in programs if n in bad)
    failed += len(bad - set(programs))
    passed = len(programs) - sum(1 for n in programs if n in bad)
    if problems and not failed:
        failed = 1
    for p in problems:
        print(f"{args.label}: mismatch: {p}")
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as f:
            f.write(f"{passed} {failed} 0\n")
    verdict = "PASS" if not problems else "FAIL"
    print(f"{args.label}: {verdict}: {passed} test programs match the baseline, {failed} differ")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
