"""Merchants: onboarding, profile, webhook URL, revocation, code-signing certificates."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from safescan.api.encoding import b64e
from safescan.api.errors import Conflict, Forbidden, InvalidRequest, UnknownMerchant
from safescan.api.states import Status
from safescan.code.certs import Certificate, Role
from safescan.code.errors import SafescanError
from safescan.code.keys import SigningKey
from safescan.code.payment import Merchant
from safescan.institution import audit, guards
from safescan.institution.domain.certificates import (
    MAX_LIVE_MERCHANT_CERTS,
    MAX_MERCHANT_CERT_DAYS,
    Certificates,
    crl_sequence,
)
from safescan.institution.domain.core import Core
from safescan.institution.domain.results import MerchantProfile, NewMerchant
from safescan.institution.guards import CertificateLimit
from safescan.institution.models import CertificateRow, MerchantRow
from safescan.institution.util import new_id


def _profile(r: Any) -> MerchantProfile:
    return MerchantProfile(
        id=r.id,
        name=r.name,
        city=r.city,
        country=r.country,
        mcc=r.mcc,
        settlement_account=r.settlement_account,
        api_public_key=bytes(r.api_public_key),
        webhook_url=r.webhook_url,
        status=Status(r.status),
        created_at=r.created_at,
    )


def merchant_identity(conn: Connection, mid: str) -> Merchant:
    """The identity an active merchant's codes show (refused for an unknown or revoked one)."""
    row = conn.execute(select(MerchantRow).where(MerchantRow.id == mid)).one_or_none()
    if row is None:
        raise UnknownMerchant(f"no merchant {mid}")
    if row.status != Status.ACTIVE:
        raise Forbidden("this merchant has been revoked")
    return Merchant(row.id, row.name, row.city, row.country, row.mcc)


class Merchants:
    """The merchants an institution serves, around the :class:`Core`; revoking one revokes its
    code-signing certificates (:class:`Certificates`)."""

    def __init__(self, core: Core, certificates: Certificates) -> None:
        self.core = core
        self.certificates = certificates

    def create(
        self,
        *,
        name: str,
        city: str,
        country: str,
        mcc: int,
        settlement_account: str,
        api_public_key: bytes | None,
        webhook_url: str | None,
        allow_protected_name: bool = False,
    ) -> NewMerchant:
        """Onboard a merchant. Without ``api_public_key`` a key pair is generated and the private
        seed is returned **once**; the institution keeps only the public key."""
        mid = new_id("M", 9)
        settlement_account = guards.text(settlement_account, param="settlement_account")
        try:
            ident = Merchant(mid, name, city, country, mcc).validated()
        except SafescanError as exc:
            raise InvalidRequest(exc.message) from None
        others = self.core.db.read(
            lambda c: [str(n) for n in c.execute(select(MerchantRow.name)).scalars()]
        )
        guards.merchant_name(ident.name, others, allow_protected=allow_protected_name)
        seed: bytes | None = None
        if api_public_key is None:
            seed = secrets.token_bytes(32)
            api_public_key = SigningKey.from_seed(seed).public_key.raw
        guards.public_key(api_public_key, param="api_public_key")
        if webhook_url is not None:
            webhook_url = self.core.webhook_targets.check_registration(webhook_url)
        now = self.core.now()
        values = {
            "id": mid,
            "name": ident.name,
            "city": ident.city,
            "country": ident.country,
            "mcc": ident.mcc,
            "settlement_account": settlement_account,
            "api_public_key": api_public_key,
            "webhook_url": webhook_url,
            "status": Status.ACTIVE,
            "created_at": now,
        }

        def tx(conn: Connection) -> None:
            conn.execute(insert(MerchantRow).values(**values))
            audit.append(
                conn,
                at=now,
                actor="admin",
                action="merchant.create",
                entity=f"merchant:{mid}",
                data={k: v for k, v in values.items() if k != "api_public_key"}
                | {"api_public_key": b64e(api_public_key)},
            )

        self.core.db.write(tx)
        return NewMerchant(self.get(mid), seed)

    def get(self, mid: str) -> MerchantProfile:
        """A merchant's profile."""
        row = self.core.db.read(
            lambda c: c.execute(select(MerchantRow).where(MerchantRow.id == mid)).one_or_none()
        )
        if row is None:
            raise UnknownMerchant(f"no merchant {mid}", param="merchant_id")
        return _profile(row)

    def set_webhook(self, mid: str, url: str | None) -> MerchantProfile:
        """Set (or clear) the merchant's webhook URL (checked: see :mod:`.webhook_targets`)."""
        if url is not None:
            url = self.core.webhook_targets.check_registration(url)
        now = self.core.now()

        def tx(conn: Connection) -> None:
            conn.execute(update(MerchantRow).where(MerchantRow.id == mid).values(webhook_url=url))
            audit.append(
                conn,
                at=now,
                actor=f"merchant:{mid}",
                action="merchant.webhook",
                entity=f"merchant:{mid}",
                data={"webhook_url": url},
            )

        self.core.db.write(tx)
        return self.get(mid)

    def revoke(self, mid: str) -> MerchantProfile:
        """Revoke a merchant: its requests are refused and its code certificates revoked."""
        now = self.core.now()

        def tx(conn: Connection) -> None:
            res = conn.execute(
                update(MerchantRow)
                .where(MerchantRow.id == mid, MerchantRow.status == Status.ACTIVE)
                .values(status=Status.REVOKED)
            )
            if res.rowcount != 1:
                exists = conn.execute(select(MerchantRow.id).where(MerchantRow.id == mid)).first()
                if exists is None:
                    raise UnknownMerchant(f"no merchant {mid}", param="merchant_id")
                raise Conflict("the merchant is already revoked")
            serials = self.certificates.revoke_subject(conn, Role.MERCHANT, mid, now)
            audit.append(
                conn,
                at=now,
                actor="admin",
                action="merchant.revoke",
                entity=f"merchant:{mid}",
                data={"revoked_certificates": serials, "crl_sequence": crl_sequence(conn)},
            )

        self.core.db.write(tx)
        return self.get(mid)

    def certify_key(self, mid: str, public_key: bytes, valid_days: int) -> Certificate:
        """Issue a merchant code-signing certificate (for merchant-signed codes)."""
        now = self.core.now()
        key = guards.public_key(public_key, param="public_key")

        if not 1 <= valid_days <= MAX_MERCHANT_CERT_DAYS:
            raise InvalidRequest(
                f"valid_days must be 1-{MAX_MERCHANT_CERT_DAYS}", param="valid_days"
            )

        def tx(conn: Connection) -> Certificate:
            # the identity the customer will be shown comes from the merchant's record here,
            # never from the request: the certificate (v2) carries it
            identity = merchant_identity(conn, mid)
            live = conn.execute(
                select(func.count()).where(
                    CertificateRow.role == int(Role.MERCHANT),
                    CertificateRow.subject == mid,
                    CertificateRow.revoked_at.is_(None),
                    CertificateRow.not_after > now,
                )
            ).scalar_one()
            if live >= MAX_LIVE_MERCHANT_CERTS:
                raise CertificateLimit(
                    f"a merchant holds at most {MAX_LIVE_MERCHANT_CERTS} live code-signing"
                    " certificates; let one expire first",
                    param="public_key",
                )
            cert = self.certificates.certify(
                conn, Role.MERCHANT, lambda _serial: mid, key, now, valid_days, identity
            )
            serial = cert.serial
            audit.append(
                conn,
                at=now,
                actor=f"merchant:{mid}",
                action="certificate.issue",
                entity=f"merchant:{mid}",
                data={"serial": serial, "role": "merchant"},
            )
            return cert

        return self.core.db.write(tx)


__all__ = ["Merchants", "merchant_identity"]
