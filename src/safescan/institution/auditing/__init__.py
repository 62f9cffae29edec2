"""`safescan institution audit`: everything that can be checked about the institution's data.

In order: the storage engine's own integrity checks (:mod:`.storage`); every table read back
with each value's type checked (:mod:`.snapshot`); the audit log's hash chains (:mod:`.journal`);
the cross-references between every table and the audit log (:mod:`.identity`, :mod:`.money`,
:mod:`.merchant_access`, :mod:`.outputs`); and, given the checkpoint file, whether the database
is the one the institution last wrote or an older copy
(:mod:`safescan.institution.checkpoints`).

The audit never stops at the first problem and never raises on bad data: a value that does not
decode, a page that cannot be read, a check that trips over corrupted input, each becomes a
finding, and the report lists them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from safescan.institution.auditing import (
    carrier_epochs,
    identity,
    lifecycle,
    merchant_access,
    money,
    outputs,
    snapshot,
    storage,
    webhooks,
)
from safescan.institution.auditing.context import Context, make_context
from safescan.institution.auditing.journal import Journal, read_journal
from safescan.institution.auditing.rollback import Seen, audit_findings, read_lines
from safescan.institution.checkpoints import Head

MAX_PER_CHECK = 200


@dataclass
class Report:
    """Problems (the audit fails on any), notes (what could not be checked, and why)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether nothing was found."""
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        """The ``--json`` form."""
        return {
            "ok": self.ok,
            "problems": self.problems,
            "notes": self.notes,
            "checks": self.checks,
        }

    def add(self, name: str, found: Iterable[str]) -> None:
        """Record what check ``name`` found (at most MAX_PER_CHECK lines, then a count)."""
        items = list(found)
        self.checks[name] = self.checks.get(name, 0) + len(items)
        self.problems += items[:MAX_PER_CHECK]
        if len(items) > MAX_PER_CHECK:
            self.problems.append(f"{name}: {len(items) - MAX_PER_CHECK} more problem(s)")


def _guarded(name: str, fn: Callable[[], Iterable[str]]) -> list[str]:
    """Run one check; its failure on corrupted input is a finding, never a traceback."""
    out: list[str] = []
    try:
        for item in fn():
            out.append(item)
    except Exception as exc:  # noqa: BLE001 - the data is corrupted in a way no check foresaw
        out.append(
            f"{name}: the check could not finish on this data ({type(exc).__name__}: "
            f"{str(exc)[:200]})"
        )
    return out


CROSS_CHECKS: tuple[Callable[[Context], Iterator[str]], ...] = (
    *identity.CHECKS,
    *lifecycle.CHECKS,
    *carrier_epochs.CHECKS,
    *money.CHECKS,
    *merchant_access.CHECKS,
    *outputs.CHECKS,
    *webhooks.CHECKS,
)


def run_audit(
    url: str,
    *,
    quick: bool = False,
    checkpoint_file: Path | None = None,
    now: int | None = None,
    storage_checks: bool = True,
) -> Report:
    """Audit the database at ``url`` (and, with ``checkpoint_file``, check for a rollback).
    ``storage_checks=False`` leaves out the storage engine's page checks (tests that only
    change values through SQL). A database that is not there (no SQLite file, a server that
    does not answer) raises a typed :class:`~safescan.code.errors.SafescanError`: there is
    nothing to report on."""
    storage.require_reachable(url)
    report = Report()
    now = int(time.time()) if now is None else now
    seen: Seen | None = None
    if checkpoint_file is not None:

        def checkpoint_lines() -> list[str]:
            nonlocal seen
            seen = read_lines(url, checkpoint_file, report.notes)
            return []

        report.add("rollback", _guarded("rollback", checkpoint_lines))
    stor = storage.StorageReport()

    def run_storage() -> list[str]:
        nonlocal stor
        stor = storage.check(url, quick=quick)
        return stor.findings

    if storage_checks:
        report.add("storage", _guarded("storage", run_storage))
        report.notes += stor.notes
    snap: snapshot.Snapshot | None = None

    def read() -> list[str]:
        nonlocal snap
        snap = snapshot.read(url)
        return snap.findings

    report.add("tables", _guarded("tables", read))
    if snap is None:
        report.problems.append("the database cannot be read: nothing else was checked")
        return report
    journal = Journal()

    def chains() -> list[str]:
        nonlocal journal
        journal = read_journal(snap)
        return journal.findings

    report.add("audit_chains", _guarded("audit_chains", chains))
    ctx = make_context(snap, journal, now)
    checks = CROSS_CHECKS
    if "audit_log" in snap.unreadable:  # every row would lack its entry: say it once
        report.problems.append(
            "the audit log cannot be read: the rows were not compared with it (the ledger was)"
        )
        checks = (money.check_ledger,)
    for check in checks:
        name = check.__name__.removeprefix("check_")
        report.add(name, _guarded(name, lambda check=check: check(ctx)))  # type: ignore[misc]
    if seen is not None and (seen.lines is not None or seen.head != Head()):
        found = seen
        report.add(
            "rollback", _guarded("rollback", lambda: audit_findings(ctx, found, report.notes))
        )
    elif checkpoint_file is None:
        report.notes.append("rollback: not checked (no checkpoint file)")
    return report


__all__ = ["Report", "run_audit"]
