"""`safescan institution reconcile`: accept a restored (rolled-back) database, on the record.

What was lost cannot be brought back from the database itself (the receipts wallets and
merchants hold are the evidence of lost payments); reconciling makes the restored database safe
to serve again and says so in the audit log:

1. every revocation the checkpoint file journaled that the database lacks is applied again
   (a lost revocation would bring a stolen carrier back to life);
2. the certificate serial counter moves past every serial the file reserved, so no serial of a
   lost enrollment (whose certificate is still valid) is ever issued again;
3. the revocation list sequence moves past every sequence the file journaled, so wallets and
   carriers holding a newer list accept the next one;
4. event sequence numbers (the merchants' stream cursor) jump past the highest one any
   checkpoint saw, by :data:`EVENT_GAP`, so no merchant skips new events;
5. one ``institution.reconcile`` audit entry records the lost checkpoint, the new floors, the
   revocations applied again and the operator's note;
6. a ``reconcile`` record and a fresh checkpoint are appended to the checkpoint file, and the
   database's head of the file (``checkpoint_head``) moves to them.

A checkpoint file whose chain is broken, or that is missing or shorter than the database knows
it was, is refused (:class:`~safescan.institution.checkpoints.CheckpointChainBroken`): restore it
from its copy. If there is none, ``restart=True`` (``--restart-checkpoints``) starts a new file:
the records of the old one that still verify individually are put back in their signed chain
order (``n``), and count for the floors and the revocations applied again like any others; the
old file is kept beside the new one (``<file>.broken-<time>``); the new chain continues past the
position the database saw; the audit entry and the ``reconcile`` record say so (``restart``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from safescan.api.errors import ConfigError
from safescan.api.states import Status
from safescan.code.errors import SafescanError
from safescan.institution import audit
from safescan.institution.checkpoints import (
    CheckpointFile,
    chain_problems,
    db_lookup,
    detect,
    heads_digest,
    high_water,
    parse,
    read_records,
    read_state,
    save_head,
)
from safescan.institution.db import Database
from safescan.institution.keystore import InstitutionKeys
from safescan.institution.models import CarrierRow, CertificateRow, Counter, Event, MerchantRow
from safescan.institution.reservations import CRL_COUNTER, SERIAL_COUNTER
from safescan.institution.util import canonical_json, new_id

EVENT_GAP = 1_000_000  # event seqs skipped: more than any checkpoint interval can write
RECONCILED_EVENT = "institution.reconciled"


def _counter(conn: Connection, name: str) -> int:
    return int(conn.execute(select(Counter.value).where(Counter.name == name)).scalar_one())


def _reapply(conn: Connection, revokes: list[dict[str, Any]], now: int, crl: int) -> list[int]:
    """Revoke again what the journal says was revoked; returns the serials revoked now."""
    done: list[int] = []
    for rec in revokes:
        present = (
            conn.execute(
                select(CertificateRow.serial).where(
                    CertificateRow.serial.in_(rec["serials"]), CertificateRow.revoked_at.is_(None)
                )
            )
            .scalars()
            .all()
        )
        serials = sorted(int(s) for s in present)
        if not serials:
            continue
        conn.execute(
            update(CertificateRow).where(CertificateRow.serial.in_(serials)).values(revoked_at=now)
        )
        subject = str(rec["subject"])
        if rec["role"] == "carrier":
            serial = int(subject.partition(":")[2])
            conn.execute(
                update(CarrierRow).where(CarrierRow.serial == serial).values(status=Status.REVOKED)
            )
            entity, action = f"carrier:{serial}", "carrier.revoke"
        else:
            conn.execute(
                update(MerchantRow).where(MerchantRow.id == subject).values(status=Status.REVOKED)
            )
            entity, action = f"merchant:{subject}", "merchant.revoke"
        audit.append(
            conn,
            at=now,
            actor="operator",
            action=action,
            entity=entity,
            data={"revoked_certificates": serials, "crl_sequence": crl, "reapplied": True},
        )
        done += serials
    return done


def _event_floor(conn: Connection, floor: int, now: int) -> None:
    """Make the next event seq greater than ``floor`` (a marker event at ``floor``)."""
    event_id = new_id("evt_", 20)
    payload = canonical_json(
        {
            "id": event_id,
            "type": RECONCILED_EVENT,
            "created": now,
            "merchant_id": "",
            "data": {"seq_floor": floor},
        }
    )
    conn.execute(
        insert(Event).values(
            seq=floor,
            id=event_id,
            merchant_id="",
            type=RECONCILED_EVENT,
            payload=payload,
            signature="",
            created_at=now,
            webhook_state="none",
            attempts=0,
            next_attempt_ms=now * 1000,
        )
    )
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('events', 'seq'), {floor})")


def _salvage(
    file: CheckpointFile, keys: InstitutionKeys, db: str
) -> tuple[list[dict[str, Any]], int]:
    """The records of a broken file that verify one by one, in their signed order (records
    from before the chain first, then by chain position, each position once), and the highest
    position among them."""
    legacy: list[dict[str, Any]] = []
    chained: dict[int, dict[str, Any]] = {}
    for line in file.lines():
        try:
            rec = parse(line, keys.trust_store())
        except SafescanError:
            continue
        if rec.get("db") != db:
            continue
        n = rec.get("n")
        if "prev" not in rec:
            legacy.append(rec)
        elif isinstance(n, int) and not isinstance(n, bool):
            chained.setdefault(n, rec)
    return [*legacy, *(chained[n] for n in sorted(chained))], max(chained, default=0)


def _aside(file: CheckpointFile, now: int) -> Path | None:
    """Where a broken file is kept for the record (None when there is no file)."""
    if not file.exists():
        return None
    aside = file.path.with_name(f"{file.path.name}.broken-{now}")
    if aside.exists():
        raise ConfigError(f"{aside} already exists: run it again in a second")
    return aside


def _set_aside(file: CheckpointFile, aside: Path | None) -> None:
    """Rename the broken file out of the way, under its lock."""
    if aside is not None:
        with file.locked(True):
            file.path.rename(aside)


def reconcile(
    db: Database,
    keys: InstitutionKeys,
    path: Path,
    *,
    note: str,
    now: int | None = None,
    restore: dict[str, Any] | None = None,
    restart: bool = False,
) -> dict[str, Any]:
    """Reconcile the database with its checkpoint file; returns what was done (``reconciled``
    is False when the database already matches: then nothing is changed). With ``restore``
    (an operator's restore of a backup, :mod:`.backup`) it is always recorded, the restore's
    description in the audit entry and in the signed ``reconcile`` record. With ``restart``
    the file is started again (the module docstring); otherwise a broken chain is refused."""
    now = int(time.time()) if now is None else now
    file = CheckpointFile(path)
    state = db.read(lambda c: read_state(c, file.path.name))
    if state is None:
        raise ConfigError("this database is not initialised: nothing to reconcile")
    records, problems = read_records(file, keys.trust_store(), state.db, state.head)
    start = 0
    if restart:
        records, top = _salvage(file, keys, state.db)
        start = max(top, state.head.n) + 1
    elif problems:
        raise chain_problems(problems)
    verdict = db.read(lambda c: detect(records, db_lookup(c)))
    if not verdict.rolled_back and not verdict.unapplied and restore is None and not restart:
        return {"reconciled": False, "reason": "the database matches its checkpoint file"}
    marks = high_water(records)
    revokes = [r for r in verdict.since_reconcile if r["type"] == "revoke"]
    issued = {int(r["serial"]): r for r in verdict.since_reconcile if r["type"] == "issue"}
    lost = verdict.newest if verdict.rolled_back else None
    restarted: dict[str, Any] | None = None
    aside = _aside(file, now) if restart else None
    if restart:
        restarted = {
            "problems": problems[:20],
            "database_head": {"n": state.head.n, "hash": state.head.hash},
            "records_kept": len(records),
            "moved_to": None if aside is None else str(aside),
            "starts_at": start,
        }

    def tx(conn: Connection) -> dict[str, Any]:
        serial = max(_counter(conn, SERIAL_COUNTER), marks["serial"])
        conn.execute(update(Counter).where(Counter.name == SERIAL_COUNTER).values(value=serial))
        crl = max(_counter(conn, CRL_COUNTER), marks["crl"]) + 1
        conn.execute(update(Counter).where(Counter.name == CRL_COUNTER).values(value=crl))
        reapplied = _reapply(conn, revokes, now, crl)
        top = int(conn.execute(select(func.coalesce(func.max(Event.seq), 0))).scalar_one())
        event_floor = max(top, marks["event"]) + EVENT_GAP
        _event_floor(conn, event_floor, now)
        have = set(
            conn.execute(
                select(CertificateRow.serial).where(CertificateRow.serial.in_(list(issued)))
            ).scalars()
        )
        summary = {
            "lost_certificates": [
                {"serial": s, "role": r["role"], "subject": r["subject"]}
                for s, r in sorted(issued.items())
                if s not in have
            ],
            "lost_checkpoint": None if lost is None else {"at": lost["at"], "seqs": lost["seqs"]},
            "findings": verdict.rolled_back,
            "certificate_serial": serial,
            "crl_sequence": crl,
            "event_seq": event_floor,
            "reapplied_revocations": reapplied,
            "note": note,
        }
        if restore is not None:
            summary["restore"] = restore
        if restarted is not None:
            summary["restart"] = restarted
        audit.append(
            conn,
            at=now,
            actor="operator",
            action="institution.reconcile",
            entity="institution",
            data=summary,
        )
        return summary

    summary = db.write(tx)
    _set_aside(file, aside)  # after the commit: a failed reconcile leaves the old file in place
    after = db.read(lambda c: read_state(c, file.path.name))
    assert after is not None
    record = {
        "type": "reconcile",
        "db": after.db,
        "at": now,
        "seqs": [s for s, _ in after.heads],
        "digest": heads_digest(after.heads),
        "marks": {
            "serial": summary["certificate_serial"],
            "crl": summary["crl_sequence"],
            "event": summary["event_seq"],
        },
    }
    if restore is not None:
        record["restore"] = restore
    if restarted is not None:
        record["restart"] = {"database_head": state.head.n, "moved_to": restarted["moved_to"]}
    head = file.append(
        keys.root,
        keys.root_kid,
        [record, after.body(now)],
        floor=None if restart else after.head,
        start=start or None,
    )
    db.write(lambda c: save_head(c, file.path.name, head))
    return {"reconciled": True, **summary}


__all__ = ["EVENT_GAP", "RECONCILED_EVENT", "reconcile"]
