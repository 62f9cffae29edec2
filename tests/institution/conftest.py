"""Fixtures: a real `safescan institution serve` subprocess over SQLite and over PostgreSQL."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.institution.harness import World, init_db, world_in
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


#: makes an initialised institution in a directory: ``(backend, request, dir) -> (db_url, token)``
Initialise = Callable[[str, pytest.FixtureRequest, Path], tuple[str, str]]


@pytest.fixture(scope="session")
def initialised() -> Iterator[Initialise]:
    """A fresh copy of an ``institution init`` (database, keys, TLS files, checkpoint file)
    made once per worker process and backend: init starts two CLI processes and makes keys
    (seconds of CPU), a copy costs nothing. Each world gets its own copy, so no state is shared
    between modules; the copies of one backend share the keys and the admin token."""
    made: dict[str, tuple[Path, str, str]] = {}  # backend -> (directory, db_url, token)

    def copy(backend: str, request: pytest.FixtureRequest, tmp: Path) -> tuple[str, str]:
        if backend not in made:
            src = Path(tempfile.mkdtemp(prefix=f"safescan-init-{backend}-"))
            url = make_db(backend, request, src)
            # fresh: not a copy of init_db's template (a test's own init_db in a module
            # served by this world is one), so that the two never share keys
            made[backend] = (src, url, init_db(url, src / "keys", fresh=True))
        src, url, token = made[backend]
        for entry in src.iterdir():  # nothing runs on the original: a plain copy is whole
            if entry.is_dir():
                shutil.copytree(entry, tmp / entry.name, symlinks=True)
            else:
                shutil.copy2(entry, tmp / entry.name)
        if backend == "sqlite":
            return f"sqlite:///{tmp / 'institution.db'}", token
        cluster: Cluster = request.getfixturevalue("pg_cluster")
        return cluster.create_database(template=url), token

    try:
        yield copy
    finally:
        for src, _, _ in made.values():
            shutil.rmtree(src, ignore_errors=True)


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest, initialised: Initialise) -> Iterator[World]:
    """An initialised institution served on 127.0.0.1 (one per test module and backend)."""
    with tempfile.TemporaryDirectory(prefix="safescan-inst-") as d:
        tmp = Path(d)
        db_url, token = initialised(request.param, request, tmp)
        # HTTPS with the CA `init` made, pinned by the harness's clients
        extra = ["--webhook-base-delay", "0.2", "--maintenance-interval", "0.5"]
        with world_in(tmp, db_url, extra=extra, token=token) as w:
            yield w
