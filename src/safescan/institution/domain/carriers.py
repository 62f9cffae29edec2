"""Key carriers: attested enrollment and key updates (:mod:`..enrollment`), revocation, and the
signing keys payments verify authorizations with (cached per serial)."""

from __future__ import annotations

from sqlalchemy import Connection, select, update

from safescan.api.errors import CarrierRevoked, Conflict, UnknownCarrier
from safescan.api.states import Status
from safescan.code.certs import Role
from safescan.code.keys import VerifyKey
from safescan.code.provisioning import carrier_subject
from safescan.institution import audit, sql
from safescan.institution.domain import enrollment
from safescan.institution.domain.certificates import MAX_SERIAL, Certificates, crl_sequence
from safescan.institution.domain.core import Core
from safescan.institution.domain.results import CarrierEnrolled, CarrierKeyUpdate, CarrierStatus
from safescan.institution.models import CarrierRow


class Carriers:
    """The customers' key carriers around the :class:`Core`."""

    def __init__(self, core: Core, certificates: Certificates) -> None:
        self.core = core
        self.certificates = certificates
        self._carrier_keys: dict[int, tuple[VerifyKey, str]] = {}

    def enroll(
        self,
        token: str,
        signing_public_key: bytes,
        transport_public_key: bytes,
        attestation: bytes | None = None,
    ) -> CarrierEnrolled:
        """Register an attested key carrier (see :mod:`.enrollment`): certificate, sealed
        provisioning bundle and first key update; refused without a valid attestation."""
        out = enrollment.enroll(
            self.core,
            self.certificates,
            token,
            signing_public_key,
            transport_public_key,
            attestation,
        )
        self.forget()  # a superseded carrier's key must not stay cached
        return out

    def forget(self) -> None:
        """Drop the cached carrier keys (after carriers were revoked outside :meth:`revoke`)."""
        self._carrier_keys.clear()

    def key_update(self, serial: int, from_epoch: int) -> CarrierKeyUpdate:
        """The KEY UPDATE bringing a carrier to the current scheme-key epoch (or None)."""
        return enrollment.issue_key_update(self.core, serial, from_epoch)

    def revoke(self, serial: int) -> CarrierStatus:
        """Revoke a key carrier: its authorizations are refused from now on."""
        now = self.core.now()

        def tx(conn: Connection) -> None:
            res = conn.execute(
                update(CarrierRow)
                .where(CarrierRow.serial == serial, CarrierRow.status == Status.ACTIVE)
                .values(status=Status.REVOKED)
            )
            if res.rowcount != 1:
                exists = conn.execute(
                    select(CarrierRow.serial).where(CarrierRow.serial == serial)
                ).first()
                if exists is None:
                    raise UnknownCarrier(f"no carrier {serial}", param="serial")
                raise Conflict("the carrier is already revoked")
            serials = self.certificates.revoke_subject(
                conn, Role.CARRIER, carrier_subject(serial), now
            )
            audit.append(
                conn,
                at=now,
                actor="admin",
                action="carrier.revoke",
                entity=f"carrier:{serial}",
                data={"revoked_certificates": serials, "crl_sequence": crl_sequence(conn)},
            )

        self.core.db.write(tx)
        self._carrier_keys.pop(serial, None)
        return CarrierStatus(serial, Status.REVOKED)

    def key(self, serial: int) -> tuple[VerifyKey, str]:
        """A live carrier's signing key and customer id (cached: immutable per serial)."""
        cached = self._carrier_keys.get(serial)
        if cached is not None:
            return cached
        if serial > MAX_SERIAL:
            raise CarrierRevoked(f"key carrier {serial} is not registered here")
        # plain SQL (safescan.institution.sql): a carrier's first payment in this process
        # compiled a SQLAlchemy select, ~1.5 ms of CPU on the event loop (docs/performance.md,
        # ninth sitting)
        row = self.core.db.read(
            lambda c: sql.run(c, sql.CARRIER_KEY, {"serial": serial}).fetchone()
        )
        if row is None:
            raise CarrierRevoked(f"key carrier {serial} is not registered here")
        public_key, customer_id, status = row
        if status != Status.ACTIVE:
            raise CarrierRevoked(f"key carrier {serial} has been revoked")
        value = (VerifyKey(bytes(public_key)), str(customer_id))
        self._carrier_keys[serial] = value  # immutable per serial; status is re-checked in the tx
        return value


__all__ = ["Carriers"]
