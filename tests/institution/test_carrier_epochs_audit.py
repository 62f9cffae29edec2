"""The audit checks the epochs carriers were given against the epoch table (real server,
SQLite and PostgreSQL).

An attacker with the database edits the epoch table (a row deleted, retired early, numbers
left with a gap), the audit entries (an enrollment's or key update's epoch changed, a
``scheme.epoch`` entry deleted, an enrollment deleted, a key update moved before the epoch it
names) and then **rewrites the hash chains** so that they verify again: the chain check finds
nothing, the cross-check must. Each finding names its kind (``[epoch_...]``). Everything is
put back afterwards and the audit is clean again.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from safescan.institution import audit
from safescan.institution.auditing import run_audit
from safescan.institution.db import Database, normalize_url
from safescan.institution.models import AuditEntry, AuditHead, SchemeEpoch
from safescan.institution.util import canonical_json
from tests.institution.harness import World
from tests.institution.test_lifecycle_audit import rotate

TABLES = (AuditEntry, AuditHead, SchemeEpoch)


def report(world: World) -> list[str]:
    url = normalize_url(world.db_url)  # type: ignore[attr-defined]
    return run_audit(url, storage_checks=False).problems


def _guard(conn: Connection, on: bool) -> None:
    """The audit log's immutability triggers off (an attacker's first step) or back on."""
    if conn.dialect.name == "postgresql":
        verb = "ENABLE" if on else "DISABLE"
        conn.exec_driver_sql(f"ALTER TABLE audit_log {verb} TRIGGER audit_log_immutable")
        return
    for v in ("update", "delete"):
        if on:
            conn.exec_driver_sql(
                f"CREATE TRIGGER audit_log_no_{v} BEFORE {v.upper()} ON audit_log"
                " BEGIN SELECT RAISE(ABORT, 'safescan: audit_log rows are immutable'); END"
            )
        else:
            conn.exec_driver_sql(f"DROP TRIGGER audit_log_no_{v}")


def rechain(conn: Connection) -> None:
    """Renumber and re-hash every chain and its head: the chains verify again."""
    rows = [
        dict(r)
        for r in conn.execute(
            select(AuditEntry.__table__).order_by(AuditEntry.chain, AuditEntry.seq)
        ).mappings()
    ]
    conn.execute(update(AuditEntry).values(seq=-AuditEntry.id))  # no collision while renumbering
    state = {c: (0, audit.GENESIS) for c in range(audit.CHAINS)}
    for r in rows:
        seq, prev = state[r["chain"]]
        digest = audit.entry_hash(
            prev, r["chain"], seq + 1, r["at"], r["actor"], r["action"], r["entity"], r["data"]
        )
        conn.execute(
            update(AuditEntry)
            .where(AuditEntry.id == r["id"])
            .values(seq=seq + 1, prev_hash=prev, hash=digest)
        )
        state[r["chain"]] = (seq + 1, digest)
    for chain, (seq, digest) in state.items():
        conn.execute(update(AuditHead).where(AuditHead.chain == chain).values(seq=seq, hash=digest))


@contextmanager
def attacked(db: Database, change: Callable[[Connection], None]) -> Iterator[None]:
    """``change`` the database with the audit log unguarded, re-chain it, and put everything
    back as it was afterwards."""
    saved = {
        t: db.read(lambda c, t=t: [dict(r) for r in c.execute(select(t.__table__)).mappings()])
        for t in TABLES
    }

    def attack(conn: Connection) -> None:
        _guard(conn, False)
        change(conn)
        rechain(conn)
        _guard(conn, True)

    db.write(attack)
    try:
        yield
    finally:

        def restore(conn: Connection) -> None:
            _guard(conn, False)
            for t in TABLES:
                conn.execute(delete(t))
                if saved[t]:
                    conn.execute(insert(t), saved[t])
            _guard(conn, True)

        db.write(restore)


def entry(db: Database, action: str, entity: str | None = None) -> dict[str, Any]:
    """The newest entry with ``action`` (about ``entity``)."""
    stmt = select(AuditEntry.__table__).where(AuditEntry.action == action)
    if entity is not None:
        stmt = stmt.where(AuditEntry.entity == entity)
    found = db.read(lambda c: c.execute(stmt.order_by(AuditEntry.id.desc())).mappings().first())
    assert found is not None, (action, entity)
    return dict(found)


def set_data(rid: int, **values: Any) -> Callable[[Connection], None]:
    """Change fields of entry ``rid``'s data (kept canonical JSON: only the facts differ)."""

    def change(conn: Connection) -> None:
        data = json.loads(
            conn.execute(select(AuditEntry.data).where(AuditEntry.id == rid)).scalar_one()
        )
        data.update(values)
        conn.execute(
            update(AuditEntry).where(AuditEntry.id == rid).values(data=canonical_json(data))
        )

    return change


def kinds(found: list[str], entity: str) -> set[str]:
    """The finding kinds about ``entity`` (or, for ``""``, about the epoch table)."""
    out = set()
    for p in found:
        about = p.startswith(entity) if entity else p.startswith("the epoch table")
        if about and p.endswith("]") and "[epoch_" in p:
            out.add(p[p.rindex("[") + 1 : -1])
    return out


def test_edited_deleted_and_reordered_epochs_are_found(world: World) -> None:
    cid = world.customer({"EUR": 1_000})
    carrier = world.carrier(cid)
    start = carrier.epoch
    for _ in range(2):
        rotate(world)
    r = world.http.post(f"/v1/carriers/{carrier.serial}/key-update", json={"from_epoch": start})
    assert r.status_code == 200, r.text
    carrier.take_key_update(base64.b64decode(r.json()["key_update"]))
    newest = int(r.json()["epoch"])
    who = f"carrier:{carrier.serial}"
    db = Database(world.db_url)  # type: ignore[attr-defined]
    try:
        assert report(world) == []
        enroll = entry(db, "carrier.enroll", who)
        upd = entry(db, "carrier.key_update", who)
        started = entry(db, "scheme.epoch")  # the newest epoch's
        assert json.loads(started["data"])["epoch"] == newest
        assert json.loads(upd["data"])["to_epoch"] == newest
        epoch_row = db.read(
            lambda c: dict(
                c.execute(select(SchemeEpoch.__table__).where(SchemeEpoch.epoch == start))
                .mappings()
                .one()
            )
        )
        # a rechained log with nothing else changed audits clean: the attack is invisible to
        # the chain check, so whatever is found below is the cross-check's
        with attacked(db, lambda c: None):
            assert report(world) == []
        cases: list[tuple[str, Callable[[Connection], None], str, set[str]]] = [
            # the database row, edited directly
            (
                "enrolled epoch's row deleted",
                lambda c: c.execute(delete(SchemeEpoch).where(SchemeEpoch.epoch == start)),
                who,
                {"epoch_unknown"},
            ),
            (
                "enrolled epoch retired before the enrollment",
                lambda c: c.execute(
                    update(SchemeEpoch)
                    .where(SchemeEpoch.epoch == start)
                    .values(retire_at=enroll["at"] - 1)
                ),
                who,
                {"epoch_retired"},
            ),
            # the audit entries, edited
            (
                "enrollment names an epoch never started",
                set_data(enroll["id"], epoch=newest + 7),
                who,
                {"epoch_unknown", "epoch_unlogged"},
            ),
            (
                "enrollment names a later epoch",
                set_data(enroll["id"], epoch=newest),
                who,
                {"epoch_not_started"},
            ),
            (
                "enrollment's epoch is not a number",
                set_data(enroll["id"], epoch="1"),
                who,
                {"epoch_malformed"},
            ),
            ("enrollment's epoch is 0", set_data(enroll["id"], epoch=0), who, {"epoch_malformed"}),
            (
                "key update to an epoch never started",
                set_data(upd["id"], to_epoch=newest + 3),
                who,
                {"epoch_unknown", "epoch_unlogged"},
            ),
            (
                "key update going backwards",
                set_data(upd["id"], from_epoch=newest, to_epoch=start),
                who,
                {"epoch_malformed"},
            ),
            (
                "key update from an unknown epoch",
                set_data(upd["id"], from_epoch=newest + 2, to_epoch=newest + 3),
                who,
                {"epoch_unknown"},
            ),
            (
                "key update to a boolean",
                set_data(upd["id"], to_epoch=True),
                who,
                {"epoch_malformed"},
            ),
            # one deleted
            (
                "the named epoch's scheme.epoch entry deleted",
                lambda c: c.execute(delete(AuditEntry).where(AuditEntry.id == started["id"])),
                who,
                {"epoch_unlogged"},
            ),
            (
                "the carrier's enrollment entry deleted",
                lambda c: c.execute(delete(AuditEntry).where(AuditEntry.id == enroll["id"])),
                who,
                {"epoch_unattested"},
            ),
            (
                "the newest epoch's row and entry both deleted",
                lambda c: (
                    c.execute(delete(SchemeEpoch).where(SchemeEpoch.epoch == newest)),
                    c.execute(delete(AuditEntry).where(AuditEntry.id == started["id"])),
                ),
                who,
                {"epoch_unknown", "epoch_unlogged"},
            ),
            # reordered: the key update moved before the epoch it names was started
            (
                "key update written before its epoch",
                lambda c: (
                    c.execute(update(AuditEntry).where(AuditEntry.id == upd["id"]).values(id=-1)),
                    c.execute(
                        update(AuditEntry)
                        .where(AuditEntry.id == started["id"])
                        .values(id=upd["id"])
                    ),
                    c.execute(
                        update(AuditEntry).where(AuditEntry.id == -1).values(id=started["id"])
                    ),
                ),
                who,
                {"epoch_not_started"},
            ),
        ]
        for name, change, about, expected in cases:
            with attacked(db, change):
                found = report(world)
                assert not any(p.startswith("audit chain") for p in found), (name, found)
                got = kinds(found, about)
                assert expected <= got, (name, found)
        # the table: an epoch in the middle deleted with its entry (nobody names it) leaves a
        # gap; a row with no entry is unaccounted for
        middle = start + 1
        mid_entry = db.read(
            lambda c: c.execute(
                select(AuditEntry.id).where(
                    AuditEntry.action == "scheme.epoch",
                    AuditEntry.data.like(f'%"epoch":{middle},%'),
                )
            ).scalar_one()
        )
        with attacked(
            db,
            lambda c: (
                c.execute(delete(SchemeEpoch).where(SchemeEpoch.epoch == middle)),
                c.execute(delete(AuditEntry).where(AuditEntry.id == mid_entry)),
            ),
        ):
            assert "epoch_gap" in kinds(report(world), "")
        extra = {**epoch_row, "epoch": newest + 1, "started_at": epoch_row["started_at"] + 5}
        with attacked(db, lambda c: c.execute(insert(SchemeEpoch).values(**extra))):
            assert any(
                p.startswith(f"scheme-key epoch {newest + 1} has no entry")
                and p.endswith("[epoch_unaccounted]")
                for p in report(world)
            )
        assert report(world) == []
    finally:
        db.dispose()


def test_the_audit_command_reports_the_kinds(world: World) -> None:
    """``safescan institution audit --json`` carries the kind and the check's name."""
    db = Database(world.db_url)  # type: ignore[attr-defined]
    try:
        enroll = entry(db, "carrier.enroll")
        with attacked(db, set_data(enroll["id"], epoch=10_000)):
            url = normalize_url(world.db_url)  # type: ignore[attr-defined]
            out = run_audit(url, storage_checks=False).to_dict()
            assert out["ok"] is False
            assert out["checks"]["carrier_epochs"] >= 2  # type: ignore[index]
            assert any("[epoch_unknown]" in p for p in out["problems"])  # type: ignore[attr-defined]
    finally:
        db.dispose()
    assert report(world) == []
