#!/usr/bin/env python3
"""Sum a SAFESCAN_CPU_REPORT file (tests/conftest.py) by test file and print the heaviest.

Usage: SAFESCAN_CPU_REPORT=/tmp/cpu.jsonl bash scripts/test.sh
       python3 scripts/test-cpu-report.py /tmp/cpu.jsonl [--top 40] [--by wall]

--by wall ranks the files by their summed wall seconds (what holds a pytest worker: the
figures tests/conftest.py's LONGEST is taken from) instead of CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict


def main() -> None:
    """Print CPU and wall seconds per file (heaviest first), then the heaviest tests."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--by", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args()
    tests: list[tuple[float, float, str]] = []
    with open(args.report, encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            tests.append((float(row["cpu"]), float(row["wall"]), str(row["test"])))
    files: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for cpu, wall, test in tests:
        entry = files[test.split("::", 1)[0]]
        entry[0] += cpu
        entry[1] += wall
        entry[2] += 1
    total_cpu = sum(t[0] for t in tests)
    total_wall = sum(t[1] for t in tests)
    print(f"{len(tests)} tests, {total_cpu:.0f} s CPU, {total_wall:.0f} s wall (summed)")
    key = 0 if args.by == "cpu" else 1
    print(f"\n{'cpu s':>8} {'wall s':>8} {'tests':>6}  file (heaviest {args.top} by {args.by})")
    for name, (cpu, wall, count) in sorted(files.items(), key=lambda kv: -kv[1][key])[: args.top]:
        print(f"{cpu:8.1f} {wall:8.1f} {int(count):6d}  {name}")
    print(f"\n{'cpu s':>8} {'wall s':>8}  test (heaviest {args.top} by {args.by})")
    for cpu, wall, test in sorted(tests, key=lambda t: (-t[key], t[2]))[: args.top]:
        print(f"{cpu:8.1f} {wall:8.1f}  {test}")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # read through `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(0)
