"""What merchant-side sealing needs from the institution: the signed scheme key list a
terminal seals to, the institution's own check of a merchant-signed code against the
certificate it issued, and the withdrawal of a terminal-sealed code before it is paid.

:func:`safescan.code.envelope.open_code` already proved, offline, that the code's certificate
is signed by a trusted institution key, valid, not on the revocation list, and that every
identity field the customer is shown comes from it. Here the institution also checks its
records: it issued exactly these certificate bytes under this serial, the certificate is not
revoked (whatever list a verifier has), and the identity it certifies is still the merchant's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from safescan.api.errors import Forbidden, InvalidRequest
from safescan.api.states import OrderState
from safescan.code.certs import Certificate
from safescan.code.envelope import OpenedCode
from safescan.code.keys import SchemeKeyring, Signer
from safescan.code.payment import DynamicCode
from safescan.code.schemelist import PublishedSchemeKey, SchemeKeyList
from safescan.institution.models import CertificateRow, MerchantRow
from safescan.institution.util import canonical_json


def scheme_key_list(ring: SchemeKeyring, root: Signer, root_kid: int, now: int) -> SchemeKeyList:
    """The live scheme public keys, signed under the root key (for ``GET /v1/keys``)."""
    live = [k for k in ring.keys.values() if not k.is_retired(now)]
    return SchemeKeyList.issue(
        root,
        root_kid,
        issued_at=now,
        current_kid=ring.current(now).kid,
        keys=[PublishedSchemeKey(k.public, k.retire_at) for k in live],
    )


def certificate_problem(conn: Connection, cert: Certificate) -> str | None:
    """Why a code's merchant certificate may not be paid (None: it may)."""
    row = conn.execute(
        select(CertificateRow.revoked_at, CertificateRow.cert).where(
            CertificateRow.serial == cert.serial
        )
    ).first()
    if row is None or row.cert is None:
        return f"certificate {cert.serial} was not issued by this institution"
    if row.revoked_at is not None:
        return "the merchant's code certificate is revoked"
    if bytes(row.cert) != cert.to_bytes():
        return f"the code carries a certificate this institution did not issue as {cert.serial}"
    m = conn.execute(
        select(MerchantRow.name, MerchantRow.city, MerchantRow.country, MerchantRow.mcc).where(
            MerchantRow.id == cert.subject
        )
    ).first()
    identity = cert.merchant
    if (
        m is None
        or identity is None
        or (m.name, m.city, m.country, m.mcc)
        != (identity.name, identity.city, identity.country, identity.mcc)
    ):
        return "the certificate's merchant identity is no longer the merchant's"
    return None


def withdrawn_order(opened: OpenedCode, mid: str, order_id: str, now: int) -> dict[str, Any]:
    """The order row that withdraws a terminal-sealed code nobody has paid yet: the order is
    recorded CLOSED, so a later payment of the code finds it closed (the row is unique per
    merchant and order id, whichever of the two comes first)."""
    code, cert = opened.code, opened.certificate
    if cert is None or cert.subject != mid:
        raise Forbidden("only the merchant that sealed a code can withdraw it", param="code")
    if not isinstance(code, DynamicCode):
        raise InvalidRequest("only a dynamic code has an order to close", param="code")
    if code.order_id != order_id:
        raise InvalidRequest("the code is for another order", param="code")
    return {
        "merchant_id": mid,
        "order_id": order_id,
        "kind": "dynamic",
        "state": OrderState.CLOSED,
        "currency": code.currency,
        "total": code.total,
        "items": canonical_json([i.to_cbor() for i in code.items]),
        "code_digest": opened.digest,
        "created_at": now,
        "expires_at": code.expires_at,
        "paid_amount": 0,
        "refunded_amount": 0,
    }
