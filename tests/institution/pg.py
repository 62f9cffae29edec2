"""A throwaway PostgreSQL cluster for tests and the benchmark (or SAFESCAN_TEST_PG_URL)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from safescan.procs import free_port  # the one port reservation; tests import it from here

PG_BIN_DIRS = (
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
)
PG_ENV = "SAFESCAN_TEST_PG_URL"


def find_pg_bin() -> Path | None:
    """The directory holding initdb/postgres, or None."""
    for d in PG_BIN_DIRS:
        if (Path(d) / "initdb").exists() and (Path(d) / "postgres").exists():
            return Path(d)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


class Cluster:
    """A running PostgreSQL server: ``url(dbname)`` and ``create_database()``."""

    def __init__(
        self, base_url: str, proc: subprocess.Popen[bytes] | None, tmp: str | None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.proc, self.tmp = proc, tmp
        self.cmd: list[str] | None = None  # how the server we started was started

    def url(self, dbname: str) -> str:
        """URL of database ``dbname`` on this server."""
        head, _, _ = self.base_url.rpartition("/")
        return f"{head}/{dbname}"

    def create_database(self, template: str | None = None) -> str:
        """A fresh database, empty or (``template``: a database URL on this server nobody is
        connected to) a copy of ``template``; returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        if template is None:
            with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            return self.url(name)
        source = template.rpartition("/")[2]
        deadline = time.monotonic() + 30
        while True:  # the sessions of the processes that made it end just after they exit
            try:
                with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
                return self.url(name)
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    @property
    def data_dir(self) -> Path:
        """The data directory of the server we started."""
        assert self.tmp is not None
        return Path(self.tmp) / "data"

    def stop_server(self) -> None:
        """Shut the server we started down cleanly, keeping its files."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(30)

    def start_server(self) -> None:
        """Start the server we started again (after :meth:`stop_server`)."""
        assert self.cmd is not None
        self.proc = subprocess.Popen(
            _as_postgres(self.cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_ready(self)

    def stop(self) -> None:
        """Stop the server if we started it, and remove its files."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def start_cluster(*, fsync: bool = False, settings: dict[str, str] | None = None) -> Cluster:
    """Use $SAFESCAN_TEST_PG_URL, or initdb + start a private server on 127.0.0.1
    (``settings``: extra ``-c name=value`` server settings; always a private server then)."""
    env_url = os.environ.get(PG_ENV)
    if env_url and settings is None:
        return Cluster(env_url, None, None)
    bindir = find_pg_bin()
    if bindir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb, postgres) found")
    tmp = tempfile.mkdtemp(prefix="safescan-pg-")
    os.chmod(tmp, 0o755)
    data = Path(tmp) / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--data-checksums",  # damaged pages are recognised (the audit checks it)
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    return start_on(data, fsync=fsync, settings=settings)


def start_on(data: Path, *, fsync: bool = False, settings: dict[str, str] | None = None) -> Cluster:
    """Start a server on the existing data directory ``data`` (owned by the service user);
    :meth:`Cluster.stop` removes ``data``'s parent directory."""
    bindir = find_pg_bin()
    if bindir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb, postgres) found")
    tmp = str(data.parent)
    port = free_port()
    cmd = [
        str(bindir / "postgres"),
        "-D",
        str(data),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        tmp,
        "-c",
        f"fsync={'on' if fsync else 'off'}",
        "-c",
        "max_connections=200",
        "-c",
        "shared_buffers=128MB",
    ]
    if not fsync:
        cmd += ["-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    for name, value in (settings or {}).items():
        cmd += ["-c", f"{name}={value}"]
    proc = subprocess.Popen(_as_postgres(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    cluster = Cluster(url, proc, tmp)
    cluster.cmd = cmd
    _wait_ready(cluster)
    return cluster


def _wait_ready(cluster: Cluster) -> None:
    import psycopg

    assert cluster.proc is not None
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(cluster.url("postgres"), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if cluster.proc.poll() is not None or time.monotonic() > deadline:
                cluster.stop()
                raise RuntimeError("the PostgreSQL test server did not start") from None
            time.sleep(0.2)


@contextlib.contextmanager
def cluster_running(*, fsync: bool = False) -> Iterator[Cluster]:
    """Context manager around :func:`start_cluster`."""
    cluster = start_cluster(fsync=fsync)
    try:
        yield cluster
    finally:
        cluster.stop()
