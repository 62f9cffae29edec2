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
#: Re-taken 2026-12-01 18:4x (thirteenth sitting) from the clean-clone CI run of 17:40
#: (/tmp/ci-12c.log, 4,644 tests, pytest 20m55s): its "test files by wall seconds" list, a
#: file's summed wall seconds (setup, call, teardown of each test) on the 4 workers of that
#: run, CPU seconds beside them. test_hsm.py (148 s, 10 tests) was missing and started among
#: the last. The files of the former list that are not among that run's 50 longest (28 s or
#: less) follow in their former order.
LONGEST = (
    "tests/faults/test_retries_in_flight.py",  # 219 s (25 tests, 61 s CPU)
    "tests/faults/test_backup_restore.py",  # 200 s (15 tests, 83 s CPU)
    "tests/cluster/test_failover.py",  # 160 s (9 tests, 16 s CPU)
    "tests/institution/test_hsm.py",  # 148 s (10 tests, 80 s CPU)
    "tests/e2e/walletapp/test_scan_and_pay.py",  # 137 s (11 tests, 55 s CPU)
    "tests/faults/test_clock_jumps.py",  # 129 s (50 tests, 58 s CPU)
    "tests/e2e/test_newcomer.py",  # 103 s (30 tests, 63 s CPU)
    "tests/faults/test_ride_through.py",  # 98 s (15 tests, 28 s CPU)
    "tests/web/test_connection_guard.py",  # 97 s (20 tests, 54 s CPU)
    "tests/faults/test_writer_descriptors.py",  # 96 s (42 tests, 46 s CPU)
    "tests/faults/test_corruption.py",  # 91 s (10 tests, 30 s CPU)
    "tests/institution/test_tls_clients.py",  # 85 s (34 tests, 32 s CPU)
    "tests/e2e/test_merchant_sealing.py",  # 84 s (17 tests, 34 s CPU)
    "tests/e2e/walletapp/test_guard.py",  # 82 s (12 tests, 24 s CPU)
    "tests/faults/test_institution_kill.py",  # 81 s (2 tests, 37 s CPU)
    "tests/test_fresh_clone.py",  # 81 s (1 test, 60 s CPU)
    "tests/institution/test_checkout.py",  # 74 s (65 tests, 17 s CPU)
    "tests/e2e/test_threats.py",  # 72 s (36 tests, 24 s CPU)
    "tests/institution/test_all_or_nothing.py",  # 70 s (2 tests, 40 s CPU)
    "tests/institution/test_webhook_ops.py",  # 68 s (19 tests, 23 s CPU)
    "tests/faults/test_restore.py",  # 66 s (7 tests, 30 s CPU)
    "tests/institution/test_observability.py",  # 66 s (43 tests, 34 s CPU)
    "tests/e2e/walletapp/test_screens.py",  # 63 s (8 tests, 23 s CPU)
    "tests/institution/test_tls.py",  # 58 s (28 tests, 31 s CPU)
    "tests/institution/test_settings.py",  # 55 s (36 tests, 28 s CPU)
    "tests/institution/test_scaleout_crash.py",  # 54 s (3 tests, 26 s CPU)
    "tests/institution/test_pitr.py",  # 50 s (3 tests, 14 s CPU)
    "tests/e2e/test_demo.py",  # 47 s (4 tests, 22 s CPU)
    "tests/carrier/test_fuzz.py",  # 46 s (6 tests, 24 s CPU)
    "tests/institution/test_fuzz.py",  # 46 s (2 tests, 22 s CPU)
    "tests/faults/test_webhook_hostile.py",  # 45 s (1 test, 8 s CPU)
    "tests/cluster/test_cli_errors.py",  # 45 s (18 tests, 7 s CPU)
    "tests/e2e/test_checkout_shop.py",  # 44 s (5 tests, 7 s CPU)
    "tests/institution/test_hardening.py",  # 41 s (35 tests, 19 s CPU)
    "tests/faults/test_audit_batches.py",  # 39 s (9 tests, 9 s CPU)
    "tests/institution/test_webhooks_sse.py",  # 37 s (19 tests, 12 s CPU)
    "tests/code/test_rekey_files.py",  # 37 s (13 tests, 19 s CPU)
    "tests/e2e/test_backoffice.py",  # 36 s (9 tests, 12 s CPU)
    "tests/institution/test_order_paging.py",  # 36 s (14 tests, 17 s CPU)
    "tests/carrier/test_torture.py",  # 36 s (1 test, 21 s CPU)
    "tests/institution/test_merchant_idempotency.py",  # 34 s (42 tests, 11 s CPU)
    "tests/institution/test_api_keys.py",  # 33 s (88 tests, 20 s CPU)
    "tests/fuzz/test_campaigns.py",  # 31 s (14 tests, 26 s CPU)
    "tests/e2e/test_pos_key_at_rest.py",  # 31 s (3 tests, 10 s CPU)
    "tests/e2e/test_account_statement.py",  # 31 s (25 tests, 14 s CPU)
    "tests/e2e/test_web_pos_state.py",  # 30 s (4 tests, 13 s CPU)
    "tests/institution/test_webhook_ssrf.py",  # 30 s (104 tests, 11 s CPU)
    "tests/e2e/test_rendering.py",  # 29 s (4 tests, 10 s CPU)
    "tests/institution/test_auth_carriers.py",  # 28 s (18 tests, 13 s CPU)
    "tests/e2e/test_browser.py",  # 28 s (3 tests, 8 s CPU)
    "tests/cluster/test_api_tls.py",  # under 28 s (before: ~85 s)
    "tests/code/test_cli.py",  # under 28 s (before: ~80 s)
    "tests/faults/test_read_only.py",  # under 28 s (before: ~60 s)
    "tests/faults/test_readiness_db_down.py",  # under 28 s (before: ~55 s)
    "tests/e2e/test_enroll_tls_ca.py",  # under 28 s (before: ~50 s)
    "tests/faults/test_database_down.py",  # under 28 s (before: ~47 s)
    "tests/faults/test_disk_full.py",  # under 28 s (before: ~45 s)
    "tests/e2e/test_first_payment.py",  # under 28 s (before: 33-44 s in CI)
    "tests/e2e/test_payment.py",  # under 28 s (before: ~40 s)
    "tests/faults/test_carrier_kill.py",  # under 28 s (before: ~36 s)
    "tests/e2e/test_enroll.py",  # under 28 s (before: ~20 s)
    "tests/e2e/walletapp/test_static_tip.py",  # under 28 s (before: ~16 s)
    "tests/faults/test_webhook_receiver.py",  # under 28 s (before: ~10 s)
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
