"""Certificates and revocation: the serials, merchant code-signing certificates, carrier
certificates (issued at enrollment) and the signed revocation list."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, insert, select, update

from safescan.api.errors import Conflict, InvalidRequest
from safescan.api.states import Status
from safescan.code.certs import Certificate, RevocationList, Role, issue_certificate
from safescan.code.keys import VerifyKey
from safescan.code.payment import Merchant
from safescan.institution.domain.core import Core
from safescan.institution.models import CertificateRow, Counter, MerchantRow
from safescan.institution.reservations import CRL_COUNTER, allocate_serial

MAX_SERIAL = 2**31 - 1  # certificate serials are 32-bit database integers
MAX_LIVE_MERCHANT_CERTS = 4  # unexpired, unrevoked code-signing certificates per merchant
MAX_MERCHANT_CERT_DAYS = 366
#: a wallet's list (scope ``all``, version 3) says it is current for this long (``next_update``)
CRL_VALIDITY = 24 * 3600
#: and is signed again (same sequence, later ``issued_at``) once it is this old, so a list a
#: wallet fetches is always good for at least ``CRL_VALIDITY - CRL_RESIGN``
CRL_RESIGN = 12 * 3600


def crl_sequence(conn: Connection) -> int:
    """The revocation list's sequence number, as this transaction leaves it."""
    return int(conn.execute(select(Counter.value).where(Counter.name == CRL_COUNTER)).scalar_one())


class Certificates:
    """Issuing and revoking certificates under the root key, around the :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._crl_cache: dict[str, RevocationList] = {}

    def revoke_subject(self, conn: Connection, role: Role, subject: str, now: int) -> list[int]:
        serials = list(
            conn.execute(
                select(CertificateRow.serial).where(
                    CertificateRow.role == int(role),
                    CertificateRow.subject == subject,
                    CertificateRow.revoked_at.is_(None),
                )
            ).scalars()
        )
        if serials:
            conn.execute(
                update(CertificateRow)
                .where(CertificateRow.serial.in_(serials))
                .values(revoked_at=now)
            )
            conn.execute(
                update(Counter).where(Counter.name == CRL_COUNTER).values(value=Counter.value + 1)
            )
            if self.core.journal is not None:  # never a sequence a restored copy already used
                self.core.journal.revocation(conn, role, subject, serials)
        return serials

    def certify(
        self,
        conn: Connection,
        role: Role,
        subject_for: Callable[[int], str],
        key: VerifyKey,
        now: int,
        days: int,
        merchant: Merchant | None = None,
    ) -> Certificate:
        """Allocate a serial (a certificate row), issue the certificate under the root key and
        store it; ``subject_for(serial)`` names the subject (a carrier's depends on its serial);
        a merchant certificate certifies the ``merchant`` identity."""
        not_before, not_after = now - 60, now + days * 86400
        serial = allocate_serial(conn, self.core.journal, role, subject_for)
        if serial > MAX_SERIAL:
            raise Conflict("no certificate serials left")
        conn.execute(
            insert(CertificateRow).values(
                serial=serial,
                role=int(role),
                subject="pending",
                public_key=key.raw,
                not_before=not_before,
                not_after=not_after,
                created_at=now,
            )
        )
        subject = subject_for(serial)
        cert = issue_certificate(
            self.core.keys.root,
            self.core.keys.root_kid,
            serial=serial,
            role=role,
            subject=subject,
            public_key=key,
            not_before=not_before,
            not_after=not_after,
            merchant=merchant,
        )
        conn.execute(
            update(CertificateRow)
            .where(CertificateRow.serial == serial)
            .values(subject=subject, cert=cert.to_bytes())
        )
        return cert

    def revocation_list(self, scope: str = "all") -> RevocationList:
        """The current signed revocation list (signed again when it changes, and the wallets'
        list also once it is :data:`CRL_RESIGN` old).

        Scope ``all`` (wallets, POS) is a version-3 list whose ``next_update`` is
        :data:`CRL_VALIDITY` after ``issued_at``: a wallet never relies on it much past that
        (:mod:`safescan.wallet.crlcache`). Scope ``merchant`` (key carriers) stays a version-1/2
        list, the format the carrier firmware 1.1 takes.

        A revoked merchant is one *subject* entry (its id), covering every certificate it was
        ever given; other revoked certificates (carriers') are listed by serial. Entries stay
        until the certificates they cover have all expired. ``scope="merchant"`` is the list
        for key carriers: merchant entries only (cards check merchant certificates, not
        carriers), so other parties' revocations cannot fill a card.
        """
        if scope not in ("all", "merchant"):
            raise InvalidRequest("scope is all or merchant", param="scope")
        now = self.core.now()

        def q(conn: Connection) -> tuple[int, list[str], list[int]]:
            seq = conn.execute(
                select(Counter.value).where(Counter.name == CRL_COUNTER)
            ).scalar_one()
            revoked_merchants = set(
                conn.execute(
                    select(MerchantRow.id).where(MerchantRow.status != Status.ACTIVE)
                ).scalars()
            )
            rows = conn.execute(
                select(CertificateRow.serial, CertificateRow.role, CertificateRow.subject).where(
                    CertificateRow.revoked_at.is_not(None), CertificateRow.not_after > now
                )
            ).all()
            subjects, serials = set(), []
            for serial, role, subject in rows:
                if role == int(Role.MERCHANT) and subject in revoked_merchants:
                    subjects.add(str(subject))  # one entry covers all of them
                elif scope == "all" or role == int(Role.MERCHANT):
                    serials.append(int(serial))
            return int(seq), sorted(subjects), serials

        seq, subjects, serials = self.core.db.read(q)
        cached = self._crl_cache.get(scope)
        dated = scope == "all"
        if (
            cached is not None
            and cached.sequence == seq
            and (not dated or 0 <= now - cached.issued_at < CRL_RESIGN)
        ):
            return cached
        crl = RevocationList.issue(
            self.core.keys.root,
            self.core.keys.root_kid,
            sequence=seq,
            issued_at=now,
            serials=frozenset(serials),
            subjects=frozenset(subjects),
            next_update=now + CRL_VALIDITY if dated else None,
        )
        self._crl_cache[scope] = crl
        return crl


__all__ = [
    "CRL_COUNTER",
    "CRL_RESIGN",
    "CRL_VALIDITY",
    "MAX_LIVE_MERCHANT_CERTS",
    "MAX_MERCHANT_CERT_DAYS",
    "MAX_SERIAL",
    "Certificates",
    "crl_sequence",
]
