"""Fixtures: a real `safescan institution serve` subprocess over SQLite and over PostgreSQL."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.institution.harness import World, world_in
from tests.institution.pg import Cluster, start_cluster

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server (SAFESCAN_TEST_PG_URL, or a throwaway cluster we start and stop)."""
    try:
        cluster = start_cluster()
    except FileNotFoundError as exc:
        pytest.skip(
            f"PostgreSQL tests skipped: {exc}; install postgresql or set SAFESCAN_TEST_PG_URL"
        )
    try:
        yield cluster
    finally:
        cluster.stop()


def make_db(backend: str, request: pytest.FixtureRequest, tmp: Path) -> str:
    """A fresh database URL for ``backend``."""
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'institution.db'}"
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database()


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    """An initialised institution served on 127.0.0.1 (one per test module and backend)."""
    with tempfile.TemporaryDirectory(prefix="safescan-inst-") as d:
        tmp = Path(d)
        db_url = make_db(request.param, request, tmp)
        # HTTPS with the CA `init` made, pinned by the harness's clients
        extra = ["--webhook-base-delay", "0.2", "--maintenance-interval", "0.5"]
        with world_in(tmp, db_url, extra=extra) as w:
            yield w
