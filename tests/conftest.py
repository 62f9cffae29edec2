"""Suite-wide hooks: with ``--dist loadfile`` (scripts/test.sh) the longest test files start first.

pytest-xdist hands whole files to its workers in the order of its queue; by default it sorts
that queue by the number of tests in a file, which puts a file of a few long tests (a database
cluster's failover, a fresh clone's install, a browser) last, where it runs on alone while
the other workers are idle. scripts/test.sh passes ``--no-loadscope-reorder`` and this hook
orders the files: the ones measured longest first (the longest-processing-time rule), then the
rest by number of tests as before. Only the order changes: every file's tests run in their own
order in one worker, as before. The figures are in docs/operations.md, "Test suite wall time".
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest

#: With SAFESCAN_CPU_REPORT=<file>, every test appends one JSON line to <file>: its node id, the
#: CPU seconds the worker and the children it waited for spent on it (setup, call and teardown;
#: servers and carriers the test started and stopped count, and the institution commands the
#: zygote forked for it (tests/institution/zygote.py), a database cluster started as a daemon
#: does not), and its wall seconds. CPU, unlike wall time, barely moves with the
#: machine's load, so a run beside other work still says where the suite's CPU goes.
#: scripts/test-cpu-report.py sums the lines by file (docs/operations.md, "Test suite wall time").
CPU_REPORT = os.environ.get("SAFESCAN_CPU_REPORT", "")


def _forked_cpu() -> float:
    """CPU seconds of the institution commands forked by the zygote (tests/institution/
    zygote.py) and reaped so far, and the zygote's own imports: not this process's children."""
    zygote = sys.modules.get("tests.institution.zygote")
    return float(getattr(zygote, "reaped_cpu", 0.0))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Append the test's CPU and wall seconds to SAFESCAN_CPU_REPORT (when set)."""
    if not CPU_REPORT:
        yield
        return
    before, start, forked = os.times(), time.monotonic(), _forked_cpu()
    yield
    after, wall = os.times(), time.monotonic() - start
    cpu = sum(
        getattr(after, f) - getattr(before, f)
        for f in ("user", "system", "children_user", "children_system")
    )
    cpu += _forked_cpu() - forked
    line = json.dumps({"test": item.nodeid, "cpu": round(cpu, 3), "wall": round(wall, 3)})
    fd = os.open(CPU_REPORT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


#: The longest files of a run on 4 workers, longest first (docs/operations.md, "Test suite
#: wall time"); a file missing here is scheduled by its number of tests.
LONGEST = (
    # from the SAFESCAN_CPU_REPORT run of 2026-12-01 05:50 (first 1,844 tests; a loaded
    # machine): each file's summed wall seconds (what holds a worker), then its CPU seconds;
    # the files that run had not reached yet from the 30 slowest of the CI run before it
    "tests/e2e/walletapp/test_scan_and_pay.py",  # 678 s wall, 167 s CPU (Chromium)
    "tests/faults/test_backup_restore.py",  # 429 s for 2 of its 14 tests; 9 of the 30 slowest
    "tests/faults/test_clock_jumps.py",  # 462 s, 48 tests
    "tests/faults/test_corruption.py",  # 450 s for 5 tests
    "tests/e2e/test_merchant_sealing.py",  # 346 s
    "tests/e2e/test_newcomer.py",  # 309 s, 76 s CPU
    "tests/cluster/test_failover.py",  # 300 s (its cluster's daemons' CPU is not counted)
    "tests/faults/test_institution_kill.py",  # 408 s -> 228 s halved (-n 1, loaded)
    "tests/e2e/test_enroll_tls_ca.py",  # 246 s
    "tests/carrier/test_fuzz.py",  # 230 s
    "tests/cluster/test_api_tls.py",  # 228 s
    "tests/code/test_rekey_files.py",  # 218 s
    "tests/e2e/test_threats.py",  # 199 s
    "tests/e2e/test_demo.py",  # 195 s
    "tests/institution/test_pitr.py",  # 52 s in the CI run's 30 slowest
    "tests/e2e/walletapp/test_guard.py",  # 173 s
    "tests/carrier/test_torture.py",  # 164 s; 100 s halved (-n 1, loaded)
    "tests/test_fresh_clone.py",  # 54 s in the CI run's 30 slowest
    "tests/cluster/test_cli_errors.py",  # 109 s
)


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Longest files first, whole files kept together (only under ``--dist loadfile``)."""
    if getattr(config.option, "dist", "no") != "loadfile":
        return
    files = [item.nodeid.split("::", 1)[0] for item in items]
    count = Counter(files)
    first: dict[str, int] = {}
    for i, f in enumerate(files):
        first.setdefault(f, i)
    rank = {f: i for i, f in enumerate(LONGEST)}
    order = sorted(
        range(len(items)),
        key=lambda i: (rank.get(files[i], len(LONGEST)), -count[files[i]], first[files[i]], i),
    )
    items[:] = [items[i] for i in order]
