"""The audit's view of the checkpoint file: is this database the newest the institution wrote?"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from safescan.institution.auditing.context import Context
from safescan.institution.checkpoints import (
    CheckpointFile,
    Lookup,
    detect,
    read_records,
)


def read_lines(path: Path, notes: list[str]) -> list[str] | None:
    """The checkpoint file's lines, read *before* the database (a checkpoint written while the
    audit reads would otherwise be newer than what it read); None when there is no file."""
    file = CheckpointFile(path)
    if not file.exists():
        notes.append(f"rollback: not checked ({path} does not exist)")
        return None
    return file.lines()


def audit_findings(ctx: Context, lines: list[str], notes: list[str]) -> Iterator[str]:
    """Forged or foreign records, a rollback (checkpointed audit entries missing or different),
    and journaled revocations the database lacks."""
    init = ctx.journal.init
    if init is None:
        yield "rollback: the database has no institution.init entry to match the checkpoints"
        return
    records, problems = read_records(lines, ctx.trust, init.hash)
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


__all__ = ["audit_findings", "read_lines"]
