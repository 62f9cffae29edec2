"""The epochs carriers were given, against the epoch table and its ``scheme.epoch`` entries.

``carrier.enroll`` logs the epoch a new carrier's first KEY UPDATE brought it to, and every
``carrier.key_update`` the epochs it went from and to. The table ``scheme_epochs`` (checked
row by row against ``scheme.epoch`` by :func:`.lifecycle.check_scheme_epochs`) must account for
each of them: every named epoch is a row of the table and was started by a ``scheme.epoch``
entry written *before* the carrier's entry (the epoch was read, committed, before the carrier's
transaction began, so its entry has the smaller row number: no clock is compared), and it had
not retired when the carrier was given it; a key update goes from an epoch the carrier could
hold (0, none yet, or one the table holds) to a newer one, and only to an attested carrier. The
table's epochs run 1..N without a gap (a row deleted with its entry leaves one).

Every finding carries its kind in brackets (:class:`EpochFinding`), so that scripts reading
``safescan institution audit --json`` can tell them apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from safescan.institution.auditing.context import Context
from safescan.institution.auditing.journal import Entry


class EpochFinding(StrEnum):
    """What is wrong between a carrier's logged epochs and the epoch table."""

    MALFORMED = "epoch_malformed"  # an epoch field missing, not an integer, or going backwards
    UNKNOWN = "epoch_unknown"  # names an epoch the table does not hold
    UNLOGGED = "epoch_unlogged"  # names an epoch no scheme.epoch entry started
    NOT_STARTED = "epoch_not_started"  # its scheme.epoch entry comes after the carrier's entry
    RETIRED = "epoch_retired"  # the epoch had retired when the carrier was given it
    UNATTESTED = "epoch_unattested"  # a key update of a carrier with no attested enrollment
    GAP = "epoch_gap"  # the table's epochs do not run 1..N
    UNACCOUNTED = "epoch_unaccounted"  # a table row no scheme.epoch entry accounts for
    MISSING = "epoch_missing"  # a scheme.epoch entry whose row the table lacks


def tagged(kind: EpochFinding, text: str) -> str:
    """A finding with its kind: ``text [kind]``."""
    return f"{text} [{kind}]"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _what(e: Entry) -> str:
    kind = "enrollment" if e.action == "carrier.enroll" else "key update"
    return f"{e.entity}'s {kind} (audit chain {e.chain} entry {e.seq})"


def _named(ctx: Context, e: Entry, epoch: int, field: str) -> Iterator[str]:
    """Epoch ``epoch`` (logged as ``field`` by entry ``e``) against the table and its log."""
    what = _what(e)
    rows = ctx.by_pk("scheme_epochs", "epoch")
    started = ctx.memo.setdefault(
        "epoch_entries", {x.data.get("epoch"): x for x in ctx.journal.of("scheme.epoch")}
    )
    r = rows.get(epoch)
    if r is None and ctx.readable("scheme_epochs"):
        yield tagged(
            EpochFinding.UNKNOWN,
            f"{what}: {field} {epoch} is an epoch the epoch table does not hold",
        )
    start = started.get(epoch)
    if start is None:
        yield tagged(
            EpochFinding.UNLOGGED,
            f"{what}: {field} {epoch} was never started in the audit log (scheme.epoch)",
        )
    elif start.row_id is not None and e.row_id is not None and start.row_id > e.row_id:
        yield tagged(
            EpochFinding.NOT_STARTED,
            f"{what}: {field} {epoch} was started (scheme.epoch, chain {start.chain} entry"
            f" {start.seq}) only after this entry was written",
        )
    if r is not None and _int(r["retire_at"]) is not None and r["retire_at"] <= e.at:
        yield tagged(
            EpochFinding.RETIRED,
            f"{what}: {field} {epoch} had retired (at {r['retire_at']}) when the carrier was"
            f" given it (at {e.at})",
        )


def check_carrier_epochs(ctx: Context) -> Iterator[str]:
    """The epochs named by ``carrier.enroll`` and ``carrier.key_update`` entries against the
    epoch table (module docstring)."""
    attested = set()
    for e in ctx.journal.of("carrier.enroll"):
        if "device_id" not in e.data:
            continue  # enrolled without attestation (before #14): it was given no epoch
        attested.add(e.entity)
        epoch = _int(e.data.get("epoch"))
        if epoch is None or epoch < 1:
            yield tagged(
                EpochFinding.MALFORMED,
                f"{_what(e)}: epoch is {e.data.get('epoch')!r}, not an epoch number",
            )
            continue
        yield from _named(ctx, e, epoch, "epoch")
    for e in ctx.journal.of("carrier.key_update"):
        if e.entity not in attested:
            yield tagged(
                EpochFinding.UNATTESTED,
                f"{_what(e)}: the carrier has no attested enrollment in the audit log"
                " (carrier.enroll): it was given epoch keys it must never receive",
            )
        old, new = _int(e.data.get("from_epoch")), _int(e.data.get("to_epoch"))
        if old is None or new is None or old < 0 or new <= old:
            yield tagged(
                EpochFinding.MALFORMED,
                f"{_what(e)}: from_epoch {e.data.get('from_epoch')!r} to_epoch"
                f" {e.data.get('to_epoch')!r} is not an update to a newer epoch",
            )
            continue
        yield from _named(ctx, e, new, "to_epoch")
        table = ctx.by_pk("scheme_epochs", "epoch")
        if old > 0 and old not in table and ctx.readable("scheme_epochs"):
            yield tagged(
                EpochFinding.UNKNOWN,
                f"{_what(e)}: from_epoch {old} is an epoch the epoch table does not hold",
            )
    numbers = sorted(n for n in ctx.by_pk("scheme_epochs", "epoch") if _int(n) is not None)
    if numbers and numbers != list(range(1, numbers[-1] + 1)):
        missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
        shown = ", ".join(str(n) for n in missing[:10])
        yield tagged(
            EpochFinding.GAP,
            f"the epoch table holds epochs up to {numbers[-1]} but not {shown}: epochs are"
            " numbered from 1 without a gap",
        )


CHECKS = (check_carrier_epochs,)

__all__ = ["CHECKS", "EpochFinding", "check_carrier_epochs", "tagged"]
