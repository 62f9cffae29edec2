"""Where the backup, restore and rollback tests keep an institution (tests/faults/test_restore.py,
test_backup_restore.py, tests/institution/test_pitr.py): a database with its keys and checkpoint
file (:class:`Place`), copied and put back with the database's own tools; the wait until the
checkpoint file covers the audit log; an institution served on a place with a first payment
made (:func:`served`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import select

from safescan.institution.checkpoints import CheckpointFile, default_path
from safescan.institution.db import Database
from safescan.institution.models import AuditHead
from tests.institution.conftest import make_db
from tests.institution.harness import Carrier, MerchantClient, ServerProcess, World, init_db
from tests.institution.pg import Cluster, find_pg_bin

#: checkpoints every 0.1 s, the maintenance sweep out of the way
FAST = ["--checkpoint-interval", "0.1", "--maintenance-interval", "60"]


@dataclass
class Place:
    """A database, its keys and checkpoint file, and ways to copy it and put a copy back."""

    backend: str
    db_url: str
    keys: Path
    tmp: Path
    cluster: Cluster | None

    @property
    def checkpoints(self) -> Path:
        return default_path(self.keys)

    def at(self, db_url: str) -> Place:
        """The same keys and checkpoint file with another database (a restore's target)."""
        return dataclasses.replace(self, db_url=db_url)

    def read(self, fn: Callable[[Any], Any]) -> Any:
        database = Database(self.db_url)
        try:
            return database.read(fn)
        finally:
            database.dispose()

    def fresh_url(self) -> str:
        """An empty place to restore into (a new SQLite path, a new empty database)."""
        if self.cluster is None:
            return f"sqlite:///{self.tmp / f'restored-{time.monotonic_ns()}.db'}"
        return self.cluster.create_database()

    def backup(self, name: str) -> Path:
        """A copy taken online with the database's own tools (SQLite's backup API, as
        ``.backup`` does; ``pg_dump -Fc``), not the institution's ``backup`` command."""
        dest = self.tmp / name
        if self.backend == "sqlite":
            src = sqlite3.connect(self.db_url.removeprefix("sqlite:///"))
            out = sqlite3.connect(dest)
            src.backup(out)
            out.close()
            src.close()
        else:
            bindir = find_pg_bin()
            assert bindir is not None
            subprocess.run(
                [str(bindir / "pg_dump"), "-Fc", "-f", str(dest), "--dbname", self.db_url],
                check=True,
                capture_output=True,
            )
        return dest

    def put_back(self, backup: Path) -> None:
        """Put a copy back over the live database by hand, without the restore command (a
        file copy; a re-created database and ``pg_restore``); the server is stopped."""
        if self.backend == "sqlite":
            path = Path(self.db_url.removeprefix("sqlite:///"))
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            shutil.copy(backup, path)
            return
        assert self.cluster is not None
        name = self.db_url.rsplit("/", 1)[1]
        with psycopg.connect(self.cluster.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        bindir = find_pg_bin()
        assert bindir is not None
        subprocess.run(
            [str(bindir / "pg_restore"), "--no-owner", "--dbname", self.db_url, str(backup)],
            check=True,
            capture_output=True,
        )


@contextlib.contextmanager
def place_for(request: pytest.FixtureRequest, prefix: str) -> Iterator[Place]:
    """An empty place on the backend ``request.param`` names, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        tmp = Path(d)
        url = make_db(request.param, request, tmp)
        cluster = request.getfixturevalue("pg_cluster") if request.param == "postgresql" else None
        yield Place(request.param, url, tmp / "keys", tmp, cluster)


def _heads(place: Place) -> list[int]:
    rows = place.read(lambda c: c.execute(select(AuditHead.chain, AuditHead.seq)).all())
    return [s for _, s in sorted(rows)]


def wait_checkpointed(place: Place) -> None:
    """Until the newest checkpoint in the file covers every audit entry written so far."""
    want = _heads(place)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seqs = [
            json.loads(line)["seqs"]
            for line in CheckpointFile(place.checkpoints).lines()
            if json.loads(line)["type"] == "checkpoint"
        ]
        if seqs and seqs[-1] == want:
            return
        time.sleep(0.05)
    raise AssertionError("no checkpoint of the newest audit entries was written")


def pay(w: World, m: Any, carrier: Carrier, amount: int) -> httpx.Response:
    """A new order of ``amount`` paid with ``carrier`` (under an Idempotency-Key)."""
    o = m.order([("Tea", 1, amount)])
    return w.pay(o["code"], carrier.authorize(o["code"]), idem=f"k-{o['order_id']}")


@dataclass
class Served:
    """An institution served on a place: a merchant, a funded customer and its carriers."""

    place: Place
    w: World
    m: MerchantClient
    cid: str
    carriers: list[Carrier]

    @property
    def server(self) -> ServerProcess:
        return self.w.server

    def serve(self, db_url: str | None = None, *, healthy: bool = True) -> ServerProcess:
        """Start the server again on its port (stop the running one first), over ``db_url``
        (default: the place's database); ``healthy`` False: it may refuse to serve."""
        server = ServerProcess(
            db_url or self.place.db_url, self.place.keys, port=self.server.port, extra=FAST
        )
        self.w.server = server.start(healthy=healthy)
        return server


@contextlib.contextmanager
def served(
    place: Place, *, funds: int = 100_000, carriers: int = 1, first: int = 500
) -> Iterator[Served]:
    """An initialised institution served on ``place`` (checkpoints every 0.1 s), a merchant, a
    customer with ``funds`` EUR and ``carriers`` carriers; a first payment of ``first`` by the
    first carrier, checkpointed. The clients closed and the server stopped at the end."""
    token = init_db(place.db_url, place.keys)
    w = World(ServerProcess(place.db_url, place.keys, extra=FAST).start(), token)
    try:
        m = w.merchant()
        cid = w.customer({"EUR": funds})
        made = [w.carrier(cid) for _ in range(carriers)]
        assert pay(w, m, made[0], first).status_code == 201
        wait_checkpointed(place)
        yield Served(place, w, m, cid, made)
    finally:
        w.close()
        w.server.stop()
