"""The wallet's own check of a merchant-signed code: is the identity shown the certified one?

The key carrier opened the code and took the merchant identity from the code's certificate;
the wallet does not just believe it: it verifies the certificate the carrier returned under the
wallet's own pinned institution keys and newest revocation list, and compares every identity
field (id, name, city, country, category code) with what it is about to show.
"""

from __future__ import annotations

from safescan.carrier.client import CodeContents
from safescan.code.certs import TrustStore, verify_certified_merchant
from safescan.code.errors import SafescanError
from safescan.wallet.errors import CodeRefusedByWallet


def check_certified_merchant(
    contents: CodeContents, trust: TrustStore, *, now: int, device: int | None = None
) -> None:
    """Refuse (:class:`CodeRefusedByWallet`) a merchant-signed code whose shown identity is not
    exactly what a valid, unrevoked version-2 merchant certificate certifies at ``now`` (the
    wallet's trusted time; ``device``: its clock, said when it reads earlier)."""
    if contents.issuer != "merchant":
        return
    if contents.certificate is None:
        raise CodeRefusedByWallet(
            "the key carrier did not return the merchant's certificate: do not pay",
            reason="certificate_error",
        )
    try:
        cert = verify_certified_merchant(contents.certificate, contents.merchant, trust, now=now)
    except SafescanError as exc:
        back = ""
        if device is not None and device < now and exc.code == "certificate_expired":
            back = (
                " (this device's clock reads earlier than a time it already saw or the"
                " institution signed: a clock set back does not make a certificate valid again)"
            )
        raise CodeRefusedByWallet(
            f"the merchant's certificate does not vouch for what is shown: {exc.message}{back};"
            " do not pay",
            reason=exc.code,
        ) from None
    if cert.serial != contents.certificate_serial or cert.issuer_kid != contents.issuer_kid:
        raise CodeRefusedByWallet(
            "the key carrier named another merchant certificate than it returned: do not pay",
            reason="signature_invalid",
        )
