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
#: wall time"); a file missing here is scheduled by its number of tests, so a long file of one
#: or two tests missing here runs last, alone, at the end of the run.
#: Re-taken 2026-12-01 12:5x (eleventh sitting) from what was measured after the zygote: the
#: clean-clone CI runs' 30 slowest (/tmp/ci-clean-10c.log, 10d: quiet machine, seconds of one
#: test) and the CPU report run of 09:07 (/tmp/cpu-full-10.jsonl: a file's summed wall seconds
#: on a loaded machine, ~2.5 times a quiet run's, before the zygote: its fault files are about
#: halved since). The estimate of a quiet run's seconds for each file comes first.
LONGEST = (
    "tests/faults/test_backup_restore.py",  # ~300 s; 5 of its tests 143 s in CI's 30 slowest
    "tests/faults/test_retries_in_flight.py",  # ~290 s (1,209 s loaded, before the zygote)
    "tests/faults/test_clock_jumps.py",  # ~280 s (709 s loaded; faketime: no zygote)
    "tests/faults/test_corruption.py",  # ~270 s (673 s loaded; its CPU is in the test)
    "tests/e2e/walletapp/test_scan_and_pay.py",  # ~225 s (561 s loaded; Chromium)
    "tests/faults/test_ride_through.py",  # ~170 s (849 s loaded, CPU 81 -> 33 s forked)
    "tests/faults/test_institution_kill.py",  # ~160 s (56 s for its 2 tests in CI)
    "tests/cluster/test_failover.py",  # ~150 s (122 s in CI's 30 slowest)
    "tests/faults/test_restore.py",  # ~150 s (670 s loaded, CPU 55 -> 28 s forked)
    "tests/e2e/test_newcomer.py",  # ~120 s (302 s loaded)
    "tests/e2e/test_merchant_sealing.py",  # ~120 s (one test 45-50 s in CI)
    "tests/cluster/test_api_tls.py",  # ~85 s (1 test)
    "tests/code/test_cli.py",  # ~80 s
    "tests/e2e/test_threats.py",  # ~75 s
    "tests/institution/test_all_or_nothing.py",  # 66 s for its 2 tests in CI
    "tests/carrier/test_fuzz.py",  # ~65 s
    "tests/faults/test_read_only.py",  # ~60 s (1 test)
    "tests/e2e/walletapp/test_guard.py",  # ~60 s
    "tests/test_fresh_clone.py",  # 53-60 s (1 test)
    "tests/faults/test_readiness_db_down.py",  # ~55 s (1 test; 21-22 s in CI)
    "tests/e2e/test_demo.py",  # ~55 s
    "tests/cluster/test_cli_errors.py",  # ~53 s (one test 36-37 s in CI)
    "tests/e2e/test_enroll_tls_ca.py",  # ~50 s (1 test)
    "tests/faults/test_database_down.py",  # ~47 s (1 test)
    "tests/faults/test_disk_full.py",  # ~45 s (1 test)
    "tests/e2e/test_first_payment.py",  # 33-44 s in CI (1 test)
    "tests/faults/test_webhook_hostile.py",  # 42-43 s in CI (1 test)
    "tests/e2e/test_payment.py",  # ~40 s
    "tests/e2e/walletapp/test_screens.py",  # ~40 s
    "tests/e2e/test_pos_key_at_rest.py",  # ~38 s
    "tests/institution/test_tls_clients.py",  # one test 33-37 s in CI
    "tests/carrier/test_torture.py",  # 30-36 s in CI (1 test)
    "tests/faults/test_carrier_kill.py",  # ~36 s (1 test)
    "tests/institution/test_webhooks_sse.py",  # one test 33 s in CI
    "tests/institution/test_pitr.py",  # 30-33 s in CI
    "tests/faults/test_audit_batches.py",  # ~33 s
    "tests/code/test_rekey_files.py",  # ~29 s
    "tests/e2e/test_rendering.py",  # ~26 s
    "tests/institution/test_scaleout_crash.py",  # one test 24 s in CI
    "tests/institution/test_fuzz.py",  # one test 21-23 s in CI
    "tests/e2e/test_web_pos_state.py",  # ~23 s
    "tests/e2e/test_enroll.py",  # ~20 s
    "tests/e2e/walletapp/test_static_tip.py",  # ~16 s (1 test, 39 s loaded)
    "tests/faults/test_webhook_receiver.py",  # ~10 s (1 test, 27 s at load 8.5 at 12:55)
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
