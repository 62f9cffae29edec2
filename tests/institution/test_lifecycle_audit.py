"""The audit cross-checks the carrier lifecycle's tables (real server, SQLite and PostgreSQL).

A healthy lifecycle audits clean: attested enrollments, a chip enrolling again (its earlier
carrier superseded), scheduled and on-demand epochs, a carrier catching up on missed epochs.
Then rows are changed behind the institution's back (SQL) and each change must be reported:
a chip record deleted, replaced by another genuine chip's record, or with one field changed
(device id, model, manufacturer, attestation serial, time, statement flipped or swapped); an
epoch deleted, added, or with its retirement time, key, key id, start or reason changed.
Each change is undone afterwards and the audit is clean again.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete, insert, select, update

from safescan.carrier.client import CarrierClient
from safescan.carrier.device import Card
from safescan.carrier.eeprom import MemoryStorage
from safescan.carrier.transport.loopback import LoopbackTransport
from safescan.code.attestation import enrollment_challenge
from safescan.code.keyupdate import epoch_kid
from safescan.institution.auditing import run_audit
from safescan.institution.db import Database, normalize_url
from safescan.institution.models import CarrierDevice, SchemeEpoch
from tests.institution.harness import FACTORY, World
from tests.institution.test_attestation import enroll, genuine_chip, token_for


def problems(world: World) -> list[str]:
    url = normalize_url(world.db_url)  # type: ignore[attr-defined]
    return run_audit(url, storage_checks=False).problems


def rows(db: Database, model: Any) -> dict[Any, dict[str, Any]]:
    key = next(iter(model.__table__.primary_key.columns)).name
    found = db.read(lambda c: c.execute(select(model.__table__)).mappings().all())
    return {r[key]: dict(r) for r in found}


@contextmanager
def tampered(db: Database, model: Any, key: Any, change: Callable[[Any], None]) -> Iterator[None]:
    """Apply ``change`` (a function of the connection), then put row ``key`` back as it was."""
    pk = next(iter(model.__table__.primary_key.columns))
    before = rows(db, model).get(key)
    db.write(change)
    try:
        yield
    finally:

        def restore(c: Any) -> None:
            c.execute(delete(model).where(pk == key))
            if before is not None:
                c.execute(insert(model).values(**before))

        db.write(restore)


def rotate(world: World) -> int:
    r = world.admin("POST", "/v1/admin/scheme-epochs")
    assert r.status_code == 201, r.text
    return int(r.json()["epoch"])


def test_a_healthy_lifecycle_audits_clean(world: World) -> None:
    cid = world.customer({"EUR": 1_000})
    carrier = world.carrier(cid)
    # a chip enrolling twice: the first carrier is superseded (revoked), both keep their record
    card = Card(MemoryStorage())
    card.power_on()
    client = CarrierClient(LoopbackTransport(card))
    client.power_on()
    FACTORY.attest(client)
    for _ in range(2):
        token = token_for(world, cid)
        client.open_session()
        keys = client.generate_keys(enrollment_challenge(token))
        r = enroll(
            world, token, keys.signing_public.raw, keys.transport_public, keys.statement.to_bytes()
        )
        assert r.status_code == 201, r.text
    # on-demand epochs; the first carrier missed them and catches up in one update
    start = carrier.epoch
    for _ in range(3):
        rotate(world)
    r = world.http.post(f"/v1/carriers/{carrier.serial}/key-update", json={"from_epoch": start})
    assert r.status_code == 200 and r.json()["epoch"] == start + 3, r.text
    carrier.take_key_update(base64.b64decode(r.json()["key_update"]))
    report = run_audit(normalize_url(world.db_url), storage_checks=False)  # type: ignore[attr-defined]
    assert report.problems == []
    assert report.checks["carrier_devices"] == 0 and report.checks["scheme_epochs"] == 0
    db = Database(world.db_url)  # type: ignore[attr-defined]
    try:  # the audit saw rows of every kind: scheduled and on-demand epochs, several chips
        assert {r["reason"] for r in rows(db, SchemeEpoch).values()} == {"schedule", "demand"}
        assert len(rows(db, CarrierDevice)) >= 3
    finally:
        db.dispose()


def test_a_deleted_forged_or_changed_chip_record_is_found(world: World) -> None:
    a = world.carrier(world.customer())
    b = world.carrier(world.customer())
    db = Database(world.db_url)  # type: ignore[attr-defined]
    try:
        assert problems(world) == []
        devices = rows(db, CarrierDevice)
        row_a, row_b = devices[a.serial], devices[b.serial]
        where = CarrierDevice.serial == a.serial
        # deleted: the enrollment logged a chip the table no longer has
        with tampered(
            db, CarrierDevice, a.serial, lambda c: c.execute(delete(CarrierDevice).where(where))
        ):
            found = problems(world)
            assert any(f"carrier {a.serial}'s chip record is in the audit log" in p for p in found)
        # forged: another genuine chip's whole, self-consistent record under carrier a
        other = genuine_chip(FACTORY, enrollment_challenge(secrets.token_urlsafe())).statement
        forged = {
            "device_id": other.device_id,
            "model": int(other.model),
            "manufacturer_kid": other.certificate.issuer_kid,
            "attestation_serial": other.certificate.serial,
            "statement": other.to_bytes(),
        }
        with tampered(
            db,
            CarrierDevice,
            a.serial,
            lambda c: c.execute(update(CarrierDevice).where(where).values(**forged)),
        ):
            found = [p for p in problems(world) if f"carrier {a.serial}'s chip record" in p]
            assert any("device_id is" in p for p in found), found
            assert any("the statement's: signing key" in p for p in found), found
        # one field at a time
        flipped = bytearray(row_a["statement"])
        flipped[len(flipped) // 2] ^= 0x01
        changes: list[tuple[dict[str, Any], str]] = [
            ({"device_id": bytes(8)}, "device_id is"),
            ({"model": 3 - row_a["model"]}, "model is"),
            ({"manufacturer_kid": row_a["manufacturer_kid"] + 1}, "manufacturer_kid is"),
            ({"attestation_serial": row_a["attestation_serial"] ^ 1}, "attestation_serial is"),
            ({"enrolled_at": row_a["enrolled_at"] - 60}, "enrolled_at is"),
            ({"statement": bytes(flipped)}, "statement"),
            ({"statement": row_b["statement"]}, "statement"),  # b's genuine statement
            (  # b's whole record: consistent in itself, not what a's enrollment logged
                {k: row_b[k] for k in row_b if k not in ("serial", "enrolled_at")},
                "device_id is",
            ),
        ]
        for values, fragment in changes:
            with tampered(
                db,
                CarrierDevice,
                a.serial,
                lambda c, values=values: c.execute(
                    update(CarrierDevice).where(where).values(**values)
                ),  # type: ignore[misc]
            ):
                found = [p for p in problems(world) if f"carrier {a.serial}'s chip record" in p]
                assert any(fragment in p for p in found), (values.keys(), found)
        assert problems(world) == []
    finally:
        db.dispose()


def test_a_deleted_added_or_changed_epoch_is_found(world: World) -> None:
    newest = rotate(world)
    db = Database(world.db_url)  # type: ignore[attr-defined]
    try:
        assert problems(world) == []
        epochs = rows(db, SchemeEpoch)
        oldest = min(epochs)
        row = epochs[newest]
        where = SchemeEpoch.epoch == newest
        # deleted (the oldest: its codes would no longer open) ...
        with tampered(
            db,
            SchemeEpoch,
            oldest,
            lambda c: c.execute(delete(SchemeEpoch).where(SchemeEpoch.epoch == oldest)),
        ):
            assert any(
                f"scheme-key epoch {oldest} is in the audit log" in p for p in problems(world)
            )
        # ... added (a key terminals would seal to that no carrier was given) ...
        extra = {
            **row,
            "epoch": newest + 1,
            "kid": epoch_kid(newest + 1),
            "public_key": secrets.token_bytes(32),
            "reason": "demand",
        }
        with tampered(
            db, SchemeEpoch, newest + 1, lambda c: c.execute(insert(SchemeEpoch).values(**extra))
        ):
            assert any(f"scheme-key epoch {newest + 1} has no entry" in p for p in problems(world))
        # ... or changed, one field at a time (a later retirement keeps a key opening codes)
        changes: list[tuple[dict[str, Any], str]] = [
            ({"retire_at": row["retire_at"] + 86400}, "retire_at is"),
            ({"retire_at": row["retire_at"] - 3600}, "retire_at is"),
            ({"public_key": secrets.token_bytes(32)}, "public_key is"),
            ({"kid": epoch_kid(newest + 1)}, "kid is"),
            ({"started_at": row["started_at"] + 1}, "started_at is"),
            ({"reason": "schedule" if row["reason"] == "demand" else "demand"}, "reason is"),
        ]
        for values, fragment in changes:
            with tampered(
                db,
                SchemeEpoch,
                newest,
                lambda c, values=values: c.execute(
                    update(SchemeEpoch).where(where).values(**values)
                ),  # type: ignore[misc]
            ):
                found = [p for p in problems(world) if f"scheme-key epoch {newest}" in p]
                assert any(fragment in p for p in found), (values, found)
        assert problems(world) == []
    finally:
        db.dispose()
