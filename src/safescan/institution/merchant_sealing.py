"""What merchant-side sealing needs from the institution: the signed scheme key list a
terminal seals to, and the institution's own check of a merchant-signed code against the
certificate it issued.

:func:`safescan.code.envelope.open_code` already proved, offline, that the code's certificate
is signed by a trusted institution key, valid, not on the revocation list, and that every
identity field the customer is shown comes from it. Here the institution also checks its
records: it issued exactly these certificate bytes under this serial, the certificate is not
revoked (whatever list a verifier has), and the identity it certifies is still the merchant's.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from safescan.code.certs import Certificate
from safescan.code.keys import SchemeKeyring, SigningKey
from safescan.code.schemelist import PublishedSchemeKey, SchemeKeyList
from safescan.institution.models import CertificateRow, MerchantRow


def scheme_key_list(
    ring: SchemeKeyring, root: SigningKey, root_kid: int, now: int
) -> SchemeKeyList:
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
