"""Carrier lifecycle at the institution: attested enrollment, trusted manufacturers, key updates.

Enrollment (``POST /v1/carriers/enroll``) takes only keys a genuine carrier generated: the
request carries the carrier's attestation statement (:mod:`safescan.code.attestation`), which
must chain to a manufacturer key the institution trusts (``manufacturer_keys``, active), name
the very keys being enrolled, be signed over this enrollment's challenge (derived from the
single-use token, so a statement cannot be replayed) and come from a chip not enrolled before.
Everything happens in one transaction: a refusal at any step leaves no carrier, no certificate
and an unspent token.

The scheme keys reach a carrier only sealed to its attested transport key: the static-code
keys in the provisioning bundle, the epoch keys in KEY UPDATEs (:func:`issue_key_update`), the
first one with the enrollment answer. A revoked carrier gets no update, so it cannot open codes
of any epoch started after its last update.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select, update

from safescan.api.encoding import b64e
from safescan.api.errors import (
    AttestationRefused,
    CarrierRevoked,
    Conflict,
    InvalidRequest,
    Unauthenticated,
    UnknownCarrier,
    UnknownManufacturerKey,
)
from safescan.api.states import Status
from safescan.code.attestation import AttestationStatement, enrollment_challenge
from safescan.code.certs import Role, TrustStore
from safescan.code.errors import SafescanError
from safescan.code.keys import VerifyKey
from safescan.code.keyupdate import MAX_LIVE_EPOCHS, EpochKey, KeyUpdate, seal_key_update
from safescan.code.provisioning import ProvisioningBundle, carrier_subject, seal_bundle
from safescan.code.pubkeys import check_x25519_public
from safescan.institution import audit
from safescan.institution.db import Database
from safescan.institution.domain.certificates import Certificates, crl_sequence
from safescan.institution.domain.core import Core
from safescan.institution.domain.results import (
    CarrierEnrolled,
    CarrierKeyUpdate,
    ManufacturerKeyView,
)
from safescan.institution.models import (
    CarrierDevice,
    CarrierRow,
    EnrollmentToken,
    ManufacturerKey,
)

CARRIER_CERT_DAYS = 4 * 365


# --- trusted manufacturers --------------------------------------------------------------------


def manufacturer_trust(conn: Connection) -> TrustStore:
    """The active manufacturer keys, as the trust store attestation certificates verify under."""
    rows = conn.execute(
        select(ManufacturerKey.kid, ManufacturerKey.public_key).where(
            ManufacturerKey.status == Status.ACTIVE
        )
    ).all()
    return TrustStore({r.kid: VerifyKey(r.public_key) for r in rows})


def add_manufacturer(
    db: Database, kid: int, public_key: bytes, name: str, now: int
) -> ManufacturerKeyView:
    """Trust a manufacturer key (``kid`` as its attestation certificates name it)."""
    key = VerifyKey(public_key)
    if not 0 <= kid < 0x10000:
        raise InvalidRequest("a manufacturer key id is 0-65535", param="kid")
    if not 0 < len(name) <= 64 or not name.isprintable():
        raise InvalidRequest("a manufacturer name is 1-64 printable characters", param="name")

    def tx(conn: Connection) -> None:
        if conn.execute(select(ManufacturerKey.kid).where(ManufacturerKey.kid == kid)).first():
            raise Conflict(f"manufacturer key {kid} is already registered (ids are not reused)")
        conn.execute(
            insert(ManufacturerKey).values(
                kid=kid, public_key=key.raw, name=name, status=Status.ACTIVE, created_at=now
            )
        )
        audit.append(
            conn,
            at=now,
            actor="admin",
            action="manufacturer.add",
            entity="institution",
            data={"kid": kid, "name": name, "public_key": key.hex()},
        )

    db.write(tx)
    return ManufacturerKeyView(kid, name, key.raw, Status.ACTIVE, now, None)


def revoke_manufacturer(db: Database, kid: int, now: int) -> ManufacturerKeyView:
    """Stop trusting a manufacturer key: no carrier attested under it enrolls from now on
    (carriers already enrolled keep working; revoke them one by one if they must stop)."""

    def tx(conn: Connection) -> ManufacturerKeyView:
        res = conn.execute(
            update(ManufacturerKey)
            .where(ManufacturerKey.kid == kid, ManufacturerKey.status == Status.ACTIVE)
            .values(status=Status.REVOKED, revoked_at=now)
        )
        if res.rowcount != 1:
            if conn.execute(select(ManufacturerKey.kid).where(ManufacturerKey.kid == kid)).first():
                raise Conflict(f"manufacturer key {kid} is already revoked")
            raise UnknownManufacturerKey(f"no manufacturer key {kid}", param="kid")
        audit.append(
            conn,
            at=now,
            actor="admin",
            action="manufacturer.revoke",
            entity="institution",
            data={"kid": kid},
        )
        row = conn.execute(select(ManufacturerKey).where(ManufacturerKey.kid == kid)).one()
        return _manufacturer(row)

    return db.write(tx)


def _manufacturer(r: Any) -> ManufacturerKeyView:
    return ManufacturerKeyView(
        kid=r.kid,
        name=r.name,
        public_key=bytes(r.public_key),
        status=Status(r.status),
        created_at=r.created_at,
        revoked_at=r.revoked_at,
    )


def list_manufacturers(db: Database) -> tuple[ManufacturerKeyView, ...]:
    """Every registered manufacturer key, by key id."""

    def q(conn: Connection) -> tuple[ManufacturerKeyView, ...]:
        rows = conn.execute(select(ManufacturerKey).order_by(ManufacturerKey.kid)).all()
        return tuple(_manufacturer(r) for r in rows)

    return db.read(q)


# --- enrollment -------------------------------------------------------------------------------


def _statement(
    attestation: bytes | None, signing_public_key: bytes, transport_public_key: bytes
) -> AttestationStatement:
    if not attestation:
        raise AttestationRefused(
            "enrollment needs the carrier's attestation statement: only keys generated inside"
            " a genuine key carrier are enrolled",
            param="attestation",
        )
    try:
        statement = AttestationStatement.from_bytes(attestation)
    except SafescanError as exc:
        raise AttestationRefused(f"attestation: {exc.message}", param="attestation") from None
    if (
        statement.signing_public.raw != signing_public_key
        or statement.transport_public != transport_public_key
    ):
        raise AttestationRefused(
            "the attestation is for other keys than the ones being enrolled", param="attestation"
        )
    return statement


def enroll(
    inst: Core,
    certificates: Certificates,
    token: str,
    signing_public_key: bytes,
    transport_public_key: bytes,
    attestation: bytes | None,
) -> CarrierEnrolled:
    """Register an attested key carrier: certify its signing key, seal its provisioning bundle
    (static-code keys) and its first KEY UPDATE (the live epochs); all or nothing."""
    try:
        signing = VerifyKey(signing_public_key)
    except SafescanError as exc:
        raise InvalidRequest(exc.message, param="signing_public_key") from None
    try:  # the request's own fields first (400), then the attestation (403)
        check_x25519_public(transport_public_key, what="transport_public_key")
    except SafescanError as exc:
        raise InvalidRequest(exc.message, param="transport_public_key") from None
    statement = _statement(attestation, signing_public_key, transport_public_key)
    now = inst.now()
    digest = inst.keys.token_hash(token)
    challenge = enrollment_challenge(token)
    static_keys = tuple(k for k in inst.keys.scheme.keys.values() if not k.is_retired(now))
    current = inst.scheme_keys.current_epoch(now)
    epochs = [k for k in inst.scheme_keys.live(now) if k.epoch <= current.epoch]

    def tx(conn: Connection) -> CarrierEnrolled:
        res = conn.execute(
            update(EnrollmentToken)
            .where(
                EnrollmentToken.token_hash == digest,
                EnrollmentToken.used_at.is_(None),
                EnrollmentToken.expires_at > now,
            )
            .values(used_at=now)
            .returning(EnrollmentToken.customer_id)
        ).first()
        if res is None:
            raise Unauthenticated("the enrollment token is unknown, used or expired", param="token")
        try:
            statement.verify(manufacturer_trust(conn), challenge=challenge, now=now)
        except SafescanError as exc:
            raise AttestationRefused(
                f"the carrier's attestation does not verify: {exc.message}", param="attestation"
            ) from None
        cid = res.customer_id
        superseded = _supersede(certificates, conn, statement.device_id, cid, now)
        cert = certificates.certify(
            conn, Role.CARRIER, carrier_subject, signing, now, CARRIER_CERT_DAYS
        )
        serial = cert.serial
        conn.execute(
            insert(CarrierRow).values(
                serial=serial,
                customer_id=cid,
                signing_public_key=signing.raw,
                transport_public_key=transport_public_key,
                last_counter=-1,
                status=Status.ACTIVE,
                created_at=now,
            )
        )
        conn.execute(
            insert(CarrierDevice).values(
                serial=serial,
                device_id=statement.device_id,
                model=int(statement.model),
                manufacturer_kid=statement.certificate.issuer_kid,
                attestation_serial=statement.certificate.serial,
                statement=statement.to_bytes(),
                enrolled_at=now,
            )
        )
        bundle = ProvisioningBundle(
            carrier_serial=serial,
            certificate=cert,
            institution_keys=dict(inst.trust.institution_keys),
            scheme_keys=static_keys,
            issued_at=now,
            transport_public=transport_public_key,
        )
        sealed = seal_bundle(bundle, inst.keys.root, inst.keys.root_kid)
        first = _seal_update(inst, serial, transport_public_key, 0, current, epochs, now)
        audit.append(
            conn,
            at=now,
            actor=f"customer:{cid}",
            action="carrier.enroll",
            entity=f"carrier:{serial}",
            data={
                "customer_id": cid,
                "serial": serial,
                "token_hash": digest,
                "transport_public_key": b64e(transport_public_key),
                "device_id": statement.device_id.hex(),
                "model": statement.model.name.lower(),
                "manufacturer_kid": statement.certificate.issuer_kid,
                "epoch": current.epoch,
                "superseded": superseded,
            },
        )
        return CarrierEnrolled(
            carrier_serial=serial,
            customer_id=cid,
            certificate=cert.to_bytes(),
            bundle=sealed,
            model=statement.model.name.lower(),
            epoch=current.epoch,
            key_update=first,
        )

    return inst.db.write(tx)


def _supersede(
    certificates: Certificates, conn: Connection, device_id: bytes, cid: str, now: int
) -> list[int]:
    """A chip enrolls again (e.g. an enrollment whose bundle never reached it): its earlier
    carriers are revoked, so one chip, even one whose attestation key was extracted, never has
    more than one active carrier."""
    previous = list(
        conn.execute(
            select(CarrierDevice.serial)
            .join(CarrierRow, CarrierRow.serial == CarrierDevice.serial)
            .where(CarrierDevice.device_id == device_id, CarrierRow.status == Status.ACTIVE)
        ).scalars()
    )
    for serial in previous:
        conn.execute(
            update(CarrierRow).where(CarrierRow.serial == serial).values(status=Status.REVOKED)
        )
        revoked = certificates.revoke_subject(conn, Role.CARRIER, carrier_subject(serial), now)
        audit.append(
            conn,
            at=now,
            actor=f"customer:{cid}",
            action="carrier.revoke",
            entity=f"carrier:{serial}",
            data={
                "revoked_certificates": revoked,
                "crl_sequence": crl_sequence(conn),
                "reason": "the chip enrolled again",
            },
        )
    return previous


def _seal_update(
    inst: Core,
    serial: int,
    transport_public: bytes,
    from_epoch: int,
    current: EpochKey,
    live: list[EpochKey],
    now: int,
) -> bytes:
    keys = [k for k in live if from_epoch < k.epoch <= current.epoch][-MAX_LIVE_EPOCHS:]
    update_ = KeyUpdate(serial, from_epoch, current.epoch, now, tuple(keys))
    return seal_key_update(update_, inst.keys.root, inst.keys.root_kid, transport_public)


# --- key updates ------------------------------------------------------------------------------


def issue_key_update(inst: Core, serial: int, from_epoch: int) -> CarrierKeyUpdate:
    """The KEY UPDATE that brings carrier ``serial`` from ``from_epoch`` (the epoch it reports)
    to the current one; ``key_update`` is None when it is up to date. A revoked carrier gets
    nothing (403 ``carrier_revoked``)."""
    now = inst.now()
    row = inst.db.read(
        lambda conn: conn.execute(
            select(CarrierRow.status, CarrierRow.transport_public_key, CarrierDevice.device_id)
            .outerjoin(CarrierDevice, CarrierDevice.serial == CarrierRow.serial)
            .where(CarrierRow.serial == serial)
        ).first()
    )
    if row is None:
        raise UnknownCarrier(f"no carrier {serial}", param="serial")
    if row.status != Status.ACTIVE:
        raise CarrierRevoked(f"carrier {serial} is revoked: it receives no new code keys")
    if row.device_id is None:  # enrolled before attestation existed (firmware 1.x)
        raise AttestationRefused(
            f"carrier {serial} was enrolled without attestation: scheme keys go only to"
            " attested carriers; enroll an attested one"
        )
    current = inst.scheme_keys.current_epoch(now)
    if from_epoch > current.epoch:
        raise InvalidRequest(
            f"the carrier reports epoch {from_epoch}, newer than the current {current.epoch}",
            param="from_epoch",
        )
    if from_epoch == current.epoch:
        return CarrierKeyUpdate(serial, current.epoch, None)
    live = inst.scheme_keys.live(now)
    sealed = _seal_update(
        inst, serial, bytes(row.transport_public_key), from_epoch, current, live, now
    )

    def tx(conn: Connection) -> None:
        audit.append(
            conn,
            at=now,
            actor=f"carrier:{serial}",
            action="carrier.key_update",
            entity=f"carrier:{serial}",
            data={"from_epoch": from_epoch, "to_epoch": current.epoch},
        )

    inst.db.write(tx)
    return CarrierKeyUpdate(serial, current.epoch, sealed)
