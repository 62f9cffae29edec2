"""Physical backup and point-in-time recovery of PostgreSQL, exactly as docs/operations.md
("Physical backup and point-in-time recovery") runs it: scripts/backup-pg-pitr.sh as the
server's archive_command, a base backup while the institution serves, payments after it, then
a restore into a fresh data directory up to a named restore point, a time and an LSN. Each
restored server holds the payments made before the target and none made after it; the audit
reports the rollback until `reconcile` acknowledges it, then passes. A target that is never
reached, a damaged base backup and an archive overwrite are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.faults.places import FAST, Place, pay, wait_checkpointed
from tests.institution.harness import ServerProcess, World, init_db, institution_cli
from tests.institution.pg import Cluster, find_pg_bin, start_cluster, start_on

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

_SOURCE = Path(__file__).resolve().parents[2] / "scripts" / "backup-pg-pitr.sh"


def _reachable(source: Path) -> Path:
    """A copy of the script the postgres user can run (a clone under a 0700 directory, such as
    `mktemp -d`, is out of its reach)."""
    directory = Path(tempfile.mkdtemp(prefix="safescan-pitr-script-"))
    directory.chmod(0o755)
    target = directory / source.name
    shutil.copy2(source, target)
    target.chmod(0o755)
    return target


SCRIPT = _reachable(_SOURCE)
AS_ROOT = os.geteuid() == 0


def as_pg(cmd: list[str]) -> list[str]:
    """PostgreSQL's files belong to its service user: run the script as it."""
    return ["runuser", "-u", "postgres", "--", *cmd] if AS_ROOT else cmd


def script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        as_pg([str(SCRIPT), *args]), capture_output=True, text=True, timeout=timeout
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def pg_dir(path: Path) -> Path:
    """A directory the service user owns."""
    path.mkdir(parents=True)
    if AS_ROOT:
        shutil.chown(path, "postgres")
    return path


@dataclass
class Archiving:
    cluster: Cluster
    work: Path  # owned by the service user
    archive: Path


@pytest.fixture
def archiving() -> Iterator[Archiving]:
    if find_pg_bin() is None:
        pytest.skip("no PostgreSQL server binaries")
    work = Path(tempfile.mkdtemp(prefix="safescan-pitr-"))
    os.chmod(work, 0o755)
    if AS_ROOT:
        shutil.chown(work, "postgres")
    archive = pg_dir(work / "wal")
    cluster = start_cluster(
        settings={  # what docs/operations.md puts into postgresql.conf
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": f"{SCRIPT} archive %p %f {archive}",
        }
    )
    try:
        yield Archiving(cluster, work, archive)
    finally:
        if cluster.proc is not None:  # a fast shutdown: no need to archive what is left
            cluster.proc.send_signal(signal.SIGINT)
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def payment_ids(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM payments")}


def one_value(url: str, query: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return str(row[0])


def audit(url: str, keys: Path, checkpoints: Path) -> tuple[int, dict[str, Any]]:
    out = institution_cli("audit", "--db", url, "--keys", str(keys),
                          "--checkpoints", str(checkpoints), "--json")  # fmt: skip
    return out.returncode, json.loads(out.stdout)


def test_pitr_to_a_restore_point_a_time_and_an_lsn(archiving: Archiving) -> None:
    a = archiving
    admin_url = a.cluster.url("postgres")
    url = a.cluster.create_database()
    dbname = url.rsplit("/", 1)[1]
    keys = a.work / "keys"
    place = Place("postgresql", url, keys, a.work, a.cluster)
    token = init_db(url, keys)
    server = ServerProcess(url, keys, extra=FAST).start()
    w = World(server, token)
    try:
        m = w.merchant()
        cid = w.customer({"EUR": 100_000})
        carrier = w.carrier(cid)
        before = [pay(w, m, carrier, 500).json()["payment_id"]]
        wait_checkpointed(place)
        base = a.work / "base"
        assert "base backup written" in ok(script("base", admin_url, str(base)))
        # after the base backup, before the targets: only the archived WAL has it
        before.append(pay(w, m, carrier, 600).json()["payment_id"])
        at_time = one_value(
            admin_url, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC',"
            " 'YYYY-MM-DD HH24:MI:SS.US') || '+00'"
        )  # fmt: skip
        at_lsn = one_value(admin_url, "SELECT pg_current_wal_insert_lsn()")
        assert "archived" in ok(script("mark", admin_url, "before-the-700"))
        after = [pay(w, m, carrier, 700).json()["payment_id"]]
        after.append(pay(w, m, w.carrier(cid), 800).json()["payment_id"])
        wait_checkpointed(place)
        ok(script("switch", admin_url))  # WAL past the time and LSN targets is archived
    finally:
        w.close()
        server.stop()
    assert set(before) <= payment_ids(url) and set(after) <= payment_ids(url)

    for kind, target in (("--name", "before-the-700"), ("--time", at_time), ("--lsn", at_lsn)):
        new = pg_dir(a.work / f"restored{kind}") / "data"
        ok(script("restore", str(base), str(a.archive), str(new), kind, target))
        restored = start_on(new)
        try:
            assert "promoted" in ok(script("promoted", restored.url("postgres"), "60"))
            rurl = restored.url(dbname)
            got = payment_ids(rurl)
            assert set(before) <= got, kind  # made before the target: there
            assert not got & set(after), kind  # after it: not
            # the checkpoint file saw the later payments: a rollback until acknowledged
            checkpoints = a.work / f"checkpoints{kind}"
            shutil.copy(place.checkpoints, checkpoints)
            status, report = audit(rurl, keys, checkpoints)
            assert status == 1 and any(
                "restored from an older copy" in p for p in report["problems"]
            ), report
            done = institution_cli("reconcile", "--db", rurl, "--keys", str(keys),
                                   "--checkpoints", str(checkpoints),
                                   "--note", f"PITR {kind} {target}")  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            status, report = audit(rurl, keys, checkpoints)
            assert status == 0, report
        finally:
            restored.stop()


def test_a_target_never_reached_does_not_promote(archiving: Archiving) -> None:
    """Recovery to a restore point the WAL does not hold stops the server (PostgreSQL refuses
    to promote at the end of the archive), and the script's wait reports it."""
    a = archiving
    admin_url = a.cluster.url("postgres")
    url = a.cluster.create_database()
    base = a.work / "base"
    ok(script("base", admin_url, str(base)))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    ok(script("switch", admin_url))
    new = pg_dir(a.work / "never") / "data"
    ok(script("restore", str(base), str(a.archive), str(new), "--name", "no-such-point"))
    bindir = find_pg_bin()
    assert bindir is not None
    cmd = [str(bindir / "postgres"), "-D", str(new), "-k", str(new.parent), "-p", "1"]
    cmd += ["-c", "listen_addresses=", "-c", "max_connections=200"]  # sockets only
    proc = subprocess.Popen(
        as_pg(cmd),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "recovery ended before configured recovery target was reached" in err.decode()


def test_the_script_refuses_bad_input(archiving: Archiving) -> None:
    a = archiving
    admin_url = a.cluster.url("postgres")
    base = a.work / "base"
    ok(script("base", admin_url, str(base)))
    # a second base backup into the same place
    assert "exists" in script("base", admin_url, str(base)).stderr
    # a password in the URL (it would be on the command line)
    bad = script("base", admin_url.replace("postgres@", "postgres:secret@"), str(a.work / "b2"))
    assert bad.returncode != 0 and "password" in bad.stderr and "secret" not in bad.stderr
    new = a.work / "r" / "data"
    pg_dir(new.parent)
    for args, says in (
        ((str(base), str(a.archive), str(new)), "usage"),
        ((str(base), str(a.archive), str(new), "--when", "x"), "say where to stop"),
        ((str(base), str(a.archive), str(new), "--lsn", "0/1'; x"), "not an LSN"),
        ((str(base), str(a.archive), str(new), "--name", "a'b"), "without quotes"),
        ((str(a.work), str(a.archive), str(new), "--name", "x"), "no base backup"),
        ((str(base), str(a.work / "nowal"), str(new), "--name", "x"), "no WAL archive"),
        ((str(base), str(a.archive), str(a.work), "--name", "x"), "exists"),
    ):
        done = script("restore", *args)
        assert done.returncode != 0 and says in done.stderr, (args, done.stderr)
    assert not new.exists()
    # a damaged base backup: pg_verifybackup refuses it, nothing is written
    damaged = a.work / "damaged"
    ok(subprocess.run(as_pg(["cp", "-a", str(base), str(damaged)]), capture_output=True,
                      text=True))  # fmt: skip
    with (damaged / "PG_VERSION").open("a") as f:
        f.write("x")
    done = script("restore", str(damaged), str(a.archive), str(new), "--name", "x")
    assert done.returncode != 0 and "pg_verifybackup refused" in done.stderr
    assert not new.exists() and not list(new.parent.iterdir())
    # the archive is never overwritten with other bytes; the same bytes again are accepted
    wal = sorted(p for p in a.archive.iterdir() if not p.name.startswith("."))[0]
    other = a.work / "other"
    other.write_bytes(b"not that segment")
    other.chmod(0o644)
    done = script("archive", str(other), wal.name, str(a.archive))
    assert done.returncode != 0 and "refusing to overwrite" in done.stderr
    assert wal.read_bytes() != b"not that segment"
    ok(script("archive", str(wal), wal.name, str(a.archive)))
    for name in ("../x", ".hidden", "a/b"):
        assert script("archive", str(other), name, str(a.archive)).returncode != 0
