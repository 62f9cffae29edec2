"""Start-up time of the ``safescan`` command line, timed as whole processes.

Run: ``.venv/bin/python bench/bench_cli_startup.py [--runs N] [--baseline REF] [--json]``

Each case is one fresh ``python -m safescan ...`` process (interpreter start, imports, parsing,
the command itself, exit), started N times; the median wall time and the median CPU time
(user + system of the child, from ``os.wait4``) are printed. CPU time moves less than wall time
on a shared, busy machine; the targets (issue 20) are wall times: ``safescan --help`` <= 0.15 s,
``safescan code inspect TEXT`` <= 0.25 s (TEXT: the first sealed code of the tree's own
``tests/vectors/code_v1.json``; without keys only its clear header is read). Also timed: the
group listings ``safescan pos --help`` and ``safescan wallet --help``, and ``safescan pos orders
--help`` (one POS command loaded: without the QR imaging stack or the administrator client).

``--baseline REF`` also extracts ``src/`` and ``tests/vectors/`` of git revision REF into a
temporary directory and times the same cases there with the same interpreter, alternating the
two trees run by run so that both see the same machine load: "before" (REF) and "after" (this
working tree). Two floors are shown for reference: ``python -c pass`` and ``import typer``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGETS_S = {"safescan --help": 0.15, "safescan code inspect TEXT": 0.25}


@dataclass(frozen=True)
class Case:
    """One command line to time."""

    name: str
    argv: list[str]  # after ``python``


def cases(tree: Path) -> list[Case]:
    """The command lines timed for one source tree."""
    vectors = json.loads((tree / "tests" / "vectors" / "code_v1.json").read_text())
    text = vectors["codes"][0]["text"]
    return [
        Case("safescan --help", ["-m", "safescan", "--help"]),
        Case("safescan --version", ["-m", "safescan", "--version"]),
        Case("safescan code inspect TEXT", ["-m", "safescan", "code", "inspect", text]),
        Case(
            "safescan code inspect TEXT --json",
            ["-m", "safescan", "code", "inspect", text, "--json"],
        ),
        Case("safescan pos --help", ["-m", "safescan", "pos", "--help"]),
        Case("safescan pos orders --help", ["-m", "safescan", "pos", "orders", "--help"]),
        Case("safescan wallet --help", ["-m", "safescan", "wallet", "--help"]),
        Case("safescan wallet status --help", ["-m", "safescan", "wallet", "status", "--help"]),
        Case("python -m safescan.merchant --help", ["-m", "safescan.merchant", "--help"]),
        Case(
            "python -m safescan.merchant orders --help",
            ["-m", "safescan.merchant", "orders", "--help"],
        ),
    ]


FLOORS = [
    Case("floor: python -c pass", ["-c", "pass"]),
    Case("floor: python -c 'import typer'", ["-c", "import typer"]),
]


def run_once(argv: list[str], src: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and exit status of one process."""
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "100"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return wall, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status)


def extract(ref: str, into: Path) -> Path:
    """``src/`` and ``tests/vectors/`` of git revision ``ref``, unpacked under ``into``."""
    archive = into / "tree.tar"
    with archive.open("wb") as out:
        subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref, "src", "tests/vectors"], stdout=out, check=True
        )
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def measure(trees: dict[str, Path], runs: int) -> dict[str, Any]:
    """Median wall and CPU per case and tree, the trees alternating run by run."""
    plan = {label: cases(tree) for label, tree in trees.items()}
    plan["floor"] = FLOORS
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    statuses: dict[tuple[str, str], set[int]] = {}
    for label, tree in [*trees.items(), ("floor", next(iter(trees.values())))]:
        for case in plan[label]:  # warm-up: write .pyc files, fill the page cache
            run_once(case.argv, tree / "src")
    for _ in range(runs):
        for label, tree in [*trees.items(), ("floor", next(iter(trees.values())))]:
            for case in plan[label]:
                wall, cpu, status = run_once(case.argv, tree / "src")
                samples.setdefault((label, case.name), []).append((wall, cpu))
                statuses.setdefault((label, case.name), set()).add(status)
    out: dict[str, Any] = {}
    for (label, name), values in samples.items():
        out.setdefault(label, {})[name] = {
            "wall_s": statistics.median(v[0] for v in values),
            "cpu_s": statistics.median(v[1] for v in values),
            "exit_status": sorted(statuses[(label, name)]),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Time the cases and print a table (or one JSON object)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="processes per case (median)")
    parser.add_argument("--baseline", default=None, help="git revision to compare with")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="safescan-cli-startup-") as tmp:
        trees: dict[str, Path] = {}
        if args.baseline:
            trees["before"] = extract(args.baseline, Path(tmp))
        trees["after" if args.baseline else "this tree"] = ROOT
        figures = measure(trees, args.runs)
    result = {
        "runs": args.runs,
        "baseline": args.baseline,
        "targets_s": TARGETS_S,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "figures": figures,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    labels = [label for label in figures if label != "floor"]
    print(f"median of {args.runs} processes; load average {load_start[0]:.2f} at start")
    head = "".join(f"{label + ' wall':>14}{label + ' CPU':>14}" for label in labels)
    print(f"{'case':36}{head}{'target':>10}")
    for name in figures[labels[-1]]:
        row = ""
        for label in labels:
            f = figures[label][name]
            row += f"{f['wall_s'] * 1000:>11.0f} ms{f['cpu_s'] * 1000:>11.0f} ms"
        target = TARGETS_S.get(name)
        shown = f"{target * 1000:.0f} ms" if target else ""
        print(f"{name:36}{row}{shown:>10}")
    for name, f in figures["floor"].items():
        print(f"{name:36}{f['wall_s'] * 1000:>11.0f} ms{f['cpu_s'] * 1000:>11.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
