"""The audit's view of the checkpoint file: is this database the newest the institution wrote,
and is the file the unbroken chain it wrote (not cut short, not deleted)?"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from safescan.institution.auditing.context import Context
from safescan.institution.checkpoints import (
    Chain,
    CheckpointFile,
    Head,
    Lookup,
    detect,
    read_head,
    read_records,
)


@dataclass
class Seen:
    """What the audit read of the checkpoint file, and the database's head of it (read first)."""

    path: Path
    lines: list[str] | None  # None: there is no file
    head: Head | None  # None: it could not be read
    head_error: str | None = None


def read_lines(url: str, path: Path, notes: list[str]) -> Seen:
    """The database's head of the file, then the file's lines, both *before* the database is
    read (a checkpoint written while the audit reads would otherwise be newer than what it
    read; and the head first, since a process appends before it moves the head)."""
    head, error = None, None
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            head = read_head(conn, path.name)
    except SQLAlchemyError as exc:
        error = f"the database's head of the checkpoint file cannot be read ({type(exc).__name__})"
    finally:
        engine.dispose()
    file = CheckpointFile(path)
    if not file.exists():
        if head is not None and head.n == 0:
            notes.append(f"rollback: not checked ({path} does not exist)")
        return Seen(path, None, head, error)
    return Seen(path, file.lines(), head, error)


def audit_findings(ctx: Context, seen: Seen, notes: list[str]) -> Iterator[str]:
    """Forged or foreign records, a broken chain, a file missing or shorter than the database
    saw it, a rollback (checkpointed audit entries missing or different), and journaled
    revocations the database lacks."""
    if seen.head_error is not None:
        yield f"rollback: {seen.head_error}"
    if seen.lines is None:
        yield from (f"rollback: {p}" for p in Chain().against(seen.head, seen.path, False))
        return
    init = ctx.journal.init
    if init is None:
        yield "rollback: the database has no institution.init entry to match the checkpoints"
        return
    records, problems = read_records(seen.lines, ctx.trust, init.hash, seen.head)
    yield from problems
    certs = ctx.by_pk("certificates", "serial")

    def revoked(serials: list[int]) -> tuple[set[int], set[int]]:
        rows = [certs[s] for s in serials if s in certs]
        return {r["serial"] for r in rows}, {r["serial"] for r in rows if r["revoked_at"]}

    hashes = ctx.journal.hashes
    look = Lookup(lambda wanted: {k: hashes[k] for k in wanted if k in hashes}, revoked)
    verdict = detect(records, look)
    yield from verdict.rolled_back
    notes.extend(f"rollback: {n}" for n in verdict.notes)
    if verdict.unapplied:
        yield (
            f"revocation of certificate(s) {verdict.unapplied} was journaled but is not in the"
            " database (its transaction failed, or the database was restored): run"
            " `safescan institution reconcile` to apply it"
        )


__all__ = ["Seen", "audit_findings", "read_lines"]
