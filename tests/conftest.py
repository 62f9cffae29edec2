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

from collections import Counter

import pytest

#: The longest files of a run on 4 workers, longest first (docs/operations.md, "Test suite
#: wall time"); a file missing here is scheduled by its number of tests.
LONGEST = (
    # 9 of the 30 slowest tests of the 2026-12-01 CI run (1,735 s of its 3,326, a loaded run)
    "tests/faults/test_backup_restore.py",
    "tests/cluster/test_failover.py",
    "tests/cluster/test_api_tls.py",
    "tests/test_fresh_clone.py",
    "tests/cluster/test_cli_errors.py",
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
