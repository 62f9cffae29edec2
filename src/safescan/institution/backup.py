"""`safescan institution backup` and `restore`: an online backup and an acknowledged restore.

**Backup** (the server keeps running):

* SQLite: the SQLite online backup API (``sqlite3.Connection.backup``, what the ``.backup``
  shell command does) copies a consistent snapshot page by page while writers go on; the copy
  is switched to a single file (``journal_mode=DELETE``) and must pass ``integrity_check``.
  Never a file copy of a live WAL database (committed pages may still be in ``-wal``).
* PostgreSQL: ``pg_dump -Fc`` (one repeatable-read snapshot; the password, if any, goes
  through ``PGPASSWORD``, never the command line).

Beside the backup ``FILE`` goes ``FILE.manifest.json``: the format, its SHA-256 and size, the
database's identity (the hash of its ``institution.init`` audit entry), the audit chains'
head positions and the schema revision at the time of the backup.

**Restore** into an empty place (a SQLite path that does not exist, an empty PostgreSQL
database): the backup must match its manifest byte for byte and be of the database the
checkpoint file names; it is placed (SQLite: written beside the target, checked, then linked
into place; PostgreSQL: ``pg_restore --single-transaction --exit-on-error``), migrated to the
newest schema if older, and then **acknowledged**: :func:`.reconcile.reconcile` runs with the
restore's description, so the checkpoint file gets a signed ``reconcile`` record carrying
``"restore": {...}`` (backup digest, when it was taken, the operator's reason) and the audit
log an ``institution.reconcile`` entry with the same. ``safescan institution audit`` then
reports an *acknowledged restore* and passes, while a database put back any other way (a file
copy, a manual ``pg_restore``) is still reported as restored from an older copy and refused
by the API processes, because no signed acknowledgement follows the checkpoints it lacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from safescan.api.errors import ConfigError
from safescan.code import strictjson
from safescan.code.errors import SafescanError
from safescan.code.smallfile import read_bounded
from safescan.code.text import clean_text
from safescan.institution.checkpoints import CheckpointFile, read_records, read_state
from safescan.institution.db import (
    Database,
    migrate,
    normalize_url,
    schema_revisions,
)
from safescan.institution.keystore import InstitutionKeys
from safescan.institution.reconcile import reconcile

MANIFEST_TYPE = "safescan-institution-backup"
#: the most a manifest is read for (a few hundred bytes: sizes, digests, heads)
MANIFEST_LIMIT = 1 << 20
MANIFEST_SUFFIX = ".manifest.json"
PG_BIN_DIRS = tuple(f"/usr/lib/postgresql/{v}/bin" for v in (18, 17, 16, 15, 14, 13))


class BackupError(ConfigError):
    """A backup cannot be made, or a backup or its target cannot be used for a restore."""

    code = "backup_error"


def manifest_path(backup: Path) -> Path:
    """``FILE.manifest.json`` beside the backup ``FILE``."""
    return backup.with_name(backup.name + MANIFEST_SUFFIX)


def _sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _backend(url: str) -> tuple[str, URL]:
    parsed = make_url(normalize_url(url))
    return parsed.get_backend_name(), parsed


def _sqlite_path(parsed: URL) -> Path:
    if not parsed.database or parsed.database == ":memory:":
        raise BackupError("a SQLite database file is needed (not :memory:)")
    return Path(parsed.database)


def pg_tool(name: str) -> str:
    """``pg_dump``/``pg_restore``: on PATH, else the newest Debian PostgreSQL's."""
    found = shutil.which(name)
    if found:
        return found
    for d in PG_BIN_DIRS:
        if (Path(d) / name).is_file():
            return str(Path(d) / name)
    raise BackupError(f"{name} not found (Debian package postgresql-client)")


def _pg_args(parsed: URL) -> tuple[list[str], dict[str, str]]:
    """libpq connection options without the password, and the environment carrying it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    args = ["--dbname", str(parsed.database or "")]
    for flag, option in (("--host", parsed.host), ("--port", parsed.port),
                         ("--username", parsed.username)):  # fmt: skip
        if option:
            args += [flag, str(option)]
    for key, value in parsed.query.items():  # e.g. sslmode, host=/socket/dir
        text = value if isinstance(value, str) else value[-1]
        if key == "host":
            args += ["--host", text]
        else:
            env[f"PG{key.upper()}"] = text
    return args, env


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["no message"])[-1][:300]
        raise BackupError(f"{what} failed: {detail}")


def _state_of(url: str) -> dict[str, Any]:
    """Identity, audit heads and schema revision of the database at ``url`` (read-only)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            state = read_state(conn)
        current, _ = schema_revisions(engine)
    finally:
        engine.dispose()
    if state is None:
        raise BackupError("the database is not initialised: nothing to back up")
    return {"db": state.db, "heads": [s for s, _ in state.heads], "schema": current}


def backup(db_url: str, out: Path, *, now: int | None = None) -> dict[str, Any]:
    """Back up the database at ``db_url`` into ``out`` (refuses to overwrite) and write its
    manifest; returns the manifest."""
    out = Path(out)
    if out.exists() or manifest_path(out).exists():
        raise BackupError(f"{out} (or its manifest) already exists; refusing to overwrite it")
    if not out.parent.is_dir():
        raise BackupError(f"no directory {out.parent}")
    backend, parsed = _backend(db_url)
    tmp = out.with_name(f".{out.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        if backend == "sqlite":
            fmt, state = "sqlite3", _backup_sqlite(_sqlite_path(parsed), tmp)
        else:
            state = _state_of(parsed.render_as_string(hide_password=False))
            args, env = _pg_args(parsed)
            _run([pg_tool("pg_dump"), "-Fc", "--file", str(tmp), *args], env, "pg_dump")
            fmt = "pg_dump-custom"
        os.chmod(tmp, 0o600)
        digest, size = _sha256(tmp)
        manifest = {
            "type": MANIFEST_TYPE,
            "v": 1,
            "backend": backend,
            "format": fmt,
            "sha256": digest,
            "bytes": size,
            "taken_at": int(time.time()) if now is None else now,
            **state,
        }
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    _write_new(manifest_path(out), (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _backup_sqlite(source: Path, dest: Path) -> dict[str, Any]:
    if not source.is_file():
        raise BackupError(f"no SQLite database at {source}")
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
        try:
            dst = sqlite3.connect(dest)
            try:
                src.backup(dst)  # one consistent snapshot, writers keep going
                dst.execute("PRAGMA journal_mode=DELETE")
                dst.commit()
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise BackupError(f"the SQLite online backup failed: {exc}") from None
    _check_sqlite(dest)
    return _state_of(f"sqlite:///{dest}")


def _check_sqlite(path: Path) -> None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"the backup is not a readable SQLite database: {exc}") from None
    if result != [("ok",)]:
        raise BackupError(f"the backup fails SQLite's integrity check: {result[0][0]}")


def read_manifest(backup: Path) -> dict[str, Any]:
    """The backup's manifest, after checking the backup against it byte for byte."""
    backup = Path(backup)
    try:
        # bounded and strict (before: read_text() and json.loads: a FIFO hung the restore,
        # /dev/zero ran it out of memory, a key named twice was read as its last value)
        doc = strictjson.loads(read_bounded(manifest_path(backup), MANIFEST_LIMIT, "a manifest"))
    except OSError as exc:
        raise BackupError(f"cannot read {manifest_path(backup)}: {exc.strerror}") from None
    except ValueError as exc:
        raise BackupError(f"{manifest_path(backup)} is not JSON: {exc}") from None
    keys = ("backend", "format", "sha256", "bytes", "taken_at", "db", "heads", "schema")
    if not isinstance(doc, dict) or doc.get("type") != MANIFEST_TYPE or doc.get("v") != 1:
        raise BackupError(f"{manifest_path(backup)} is not a safescan backup manifest")
    if any(k not in doc for k in keys) or doc["backend"] not in ("sqlite", "postgresql"):
        raise BackupError(f"{manifest_path(backup)} is incomplete")
    try:
        digest, size = _sha256(backup)
    except OSError as exc:
        raise BackupError(f"cannot read the backup {backup}: {exc.strerror}") from None
    if size != doc["bytes"] or digest != doc["sha256"]:
        raise BackupError(
            f"the backup {backup} is not the file its manifest describes (damaged, truncated or"
            " replaced): refusing to restore it"
        )
    return doc


def _require_empty_target(backend: str, parsed: URL) -> None:
    if backend == "sqlite":
        path = _sqlite_path(parsed)
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
            if p.exists():
                raise BackupError(
                    f"{p} exists: restore only into a place that does not exist yet (move the"
                    " old database away first)"
                )
        if not path.parent.is_dir():
            raise BackupError(f"no directory {path.parent}")
        return
    engine = create_engine(parsed)
    try:
        tables = inspect(engine).get_table_names()
    except Exception as exc:  # noqa: BLE001 - any connection failure: say which database
        raise BackupError(
            f"cannot reach the target database {parsed.database!r} (create it empty first:"
            f" createdb): {type(exc).__name__}"
        ) from None
    finally:
        engine.dispose()
    if tables:
        raise BackupError(
            f"the target database {parsed.database!r} is not empty ({len(tables)} tables):"
            " restore only into an empty database"
        )


def restore(
    backup_file: Path,
    db_url: str,
    keys: InstitutionKeys,
    checkpoints: Path,
    *,
    reason: str,
    now: int | None = None,
    restart: bool = False,
) -> dict[str, Any]:
    """Restore ``backup_file`` into the empty ``db_url`` and acknowledge it (see the module
    docstring); every check runs before anything is written. ``restart``: the checkpoint file
    is lost or its chain broken: a new chain is started (``reconcile --restart-checkpoints``)."""
    if not reason.strip():
        raise BackupError("say why the database is restored (--reason)")
    reason = clean_text(reason.strip(), field="the restore reason", max_chars=500)
    manifest = read_manifest(Path(backup_file))
    backend, parsed = _backend(db_url)
    if backend != manifest["backend"]:
        raise BackupError(
            f"the backup is of a {manifest['backend']} database; the target is {backend}"
        )
    records, problems = read_records(CheckpointFile(checkpoints), keys.trust_store(), None)
    foreign = {r.get("db") for r in records} - {manifest["db"]}
    if (problems and not restart) or foreign:
        raise BackupError(
            "the checkpoint file does not belong to the database in this backup (another"
            " institution's, or records that do not verify): "
            + "; ".join(problems[:2] or ["records of another database"])
        )
    _require_empty_target(backend, parsed)
    before = _pg_objects(parsed) if backend == "postgresql" else set()
    _place(Path(backup_file), backend, parsed)
    try:
        return _acknowledge(manifest, parsed, keys, checkpoints, reason, now, len(records), restart)
    except Exception as exc:
        # all or nothing: what was placed is taken away again, the target is as it was
        if backend == "sqlite":  # ours: created above, and not acknowledged
            for suffix in ("", "-wal", "-shm"):
                Path(f"{_sqlite_path(parsed)}{suffix}").unlink(missing_ok=True)
        else:
            _undo_pg(parsed, before)
        if isinstance(exc, SafescanError):
            raise
        raise BackupError(
            f"the restore failed after placing the backup ({type(exc).__name__}); the target"
            " database was emptied again"
        ) from exc


def _acknowledge(
    manifest: dict[str, Any],
    parsed: URL,
    keys: InstitutionKeys,
    checkpoints: Path,
    reason: str,
    now: int | None,
    records: int,
    restart: bool,
) -> dict[str, Any]:
    database = Database(parsed.render_as_string(hide_password=False))
    try:
        state = database.read(read_state)  # maybe an older schema: migrated below
        if state is None or state.db != manifest["db"]:
            raise BackupError("the restored database is not the one the manifest names")
        before, head = schema_revisions(database.engine)
        if before != head:
            migrate(database.engine)
        info = {
            "backup_sha256": manifest["sha256"],
            "taken_at": manifest["taken_at"],
            "backup_heads": manifest["heads"],
            "reason": reason,
        }
        done = reconcile(database, keys, checkpoints, note=f"restore: {reason}",
                         now=now, restore=info, restart=restart)  # fmt: skip
    finally:
        database.dispose()
    return {
        "restored": True,
        "backend": manifest["backend"],
        "taken_at": manifest["taken_at"],
        "schema_migrated": before != head,
        "checkpoint_file": str(checkpoints),
        "checkpoints_before": records,
        **{k: done[k] for k in ("findings", "certificate_serial", "crl_sequence", "event_seq")},
        "reapplied_revocations": done["reapplied_revocations"],
        "lost_certificates": done["lost_certificates"],
        "reason": reason,
    }


# what a restore may create in a PostgreSQL database (an extension's own objects go with it)
_PG_OBJECTS = """
SELECT 'extension', '', e.extname, '' FROM pg_extension e WHERE e.extname <> 'plpgsql'
UNION ALL
SELECT 'table', n.nspname, c.relname, '' FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
   AND left(n.nspname, 3) <> 'pg_' AND n.nspname <> 'information_schema'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                   AND d.objid = c.oid AND d.deptype = 'e')
UNION ALL
SELECT 'function', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE left(n.nspname, 3) <> 'pg_' AND n.nspname <> 'information_schema'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                   AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT 'type', n.nspname, t.typname, '' FROM pg_type t
  JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE t.typtype IN ('e', 'd')
   AND left(n.nspname, 3) <> 'pg_' AND n.nspname <> 'information_schema'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                   AND d.objid = t.oid AND d.deptype = 'e')
"""


def _pg_objects(parsed: URL) -> set[tuple[str, str, str, str]]:
    """Every table, view, sequence, function and type of the database (outside the system
    schemas): what a failed restore must leave as it found."""
    engine = create_engine(parsed)
    try:
        with engine.connect() as conn:
            return {(r[0], r[1], r[2], r[3]) for r in conn.exec_driver_sql(_PG_OBJECTS)}
    finally:
        engine.dispose()


def _undo_pg(parsed: URL, before: set[tuple[str, str, str, str]]) -> None:
    """Drop, in one transaction, what the restore added to the database (it was empty of
    tables before: :func:`_require_empty_target`)."""
    engine = create_engine(parsed)
    try:
        with engine.begin() as conn:
            rows = {(r[0], r[1], r[2], r[3]) for r in conn.exec_driver_sql(_PG_OBJECTS)}
            for kind in ("extension", "table", "function", "type"):
                for _, schema, name, args in sorted(r for r in rows - before if r[0] == kind):
                    quote = conn.dialect.identifier_preparer.quote
                    ident = f"{quote(schema)}.{quote(name)}"
                    if kind == "extension":
                        conn.exec_driver_sql(f"DROP EXTENSION IF EXISTS {quote(name)} CASCADE")
                    elif kind == "table":
                        relkind = conn.exec_driver_sql(
                            "SELECT c.relkind FROM pg_class c JOIN pg_namespace n"
                            " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                            (schema, name),
                        ).scalar()
                        if relkind is None:  # dropped with a table it belonged to
                            continue
                        what = {"v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE",
                                "f": "FOREIGN TABLE"}.get(str(relkind), "TABLE")  # fmt: skip
                        conn.exec_driver_sql(f"DROP {what} IF EXISTS {ident} CASCADE")
                    elif kind == "function":
                        conn.exec_driver_sql(f"DROP ROUTINE IF EXISTS {ident}({args}) CASCADE")
                    else:
                        conn.exec_driver_sql(f"DROP TYPE IF EXISTS {ident} CASCADE")
    except SQLAlchemyError as exc:
        raise BackupError(
            "the restore failed and what it had placed could not be taken away again"
            f" ({type(exc).__name__}): drop and re-create the target database before retrying"
        ) from None
    finally:
        engine.dispose()


def _place(backup_file: Path, backend: str, parsed: URL) -> None:
    if backend == "postgresql":
        args, env = _pg_args(parsed)
        cmd = [pg_tool("pg_restore"), "--single-transaction", "--exit-on-error",
               "--no-owner", *args, str(backup_file)]  # fmt: skip
        _run(cmd, env, "pg_restore")
        return
    target = _sqlite_path(parsed)
    tmp = target.with_name(f".{target.name}.restoring")
    tmp.unlink(missing_ok=True)
    try:
        shutil.copyfile(backup_file, tmp)
        os.chmod(tmp, 0o600)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        _check_sqlite(tmp)
        try:
            os.link(tmp, target)  # never replaces a file that appeared meanwhile
        except FileExistsError:
            raise BackupError(f"{target} appeared during the restore; nothing replaced") from None
    finally:
        tmp.unlink(missing_ok=True)


__all__ = ["BackupError", "backup", "manifest_path", "read_manifest", "restore"]
