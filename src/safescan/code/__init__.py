"""Formats and crypto: the payment smart code, certificates, authorizations, EMV MPM, QR.

This package depends on nothing else in safescan. Its public API is imported from here.
"""

from safescan.code.authorization import Authorization, Receipt
from safescan.code.certs import (
    Certificate,
    RevocationList,
    Role,
    TrustStore,
    issue_certificate,
    verify_certificate,
)
from safescan.code.currency import Currency, currency
from safescan.code.envelope import (
    PREFIX,
    Header,
    Issuer,
    OpenedCode,
    code_digest,
    decode_text,
    encode_text,
    looks_like_safescan,
    open_code,
    read_header,
    seal,
)
from safescan.code.errors import *  # noqa: F403
from safescan.code.errors import SafescanError
from safescan.code.keys import SchemeKey, SchemeKeyring, SchemePublicKey, SigningKey, VerifyKey
from safescan.code.payment import (
    CodeKind,
    DynamicCode,
    LineItem,
    Merchant,
    PaymentCode,
    StaticCode,
)
from safescan.code.provisioning import (
    ProvisioningBundle,
    carrier_subject,
    open_bundle,
    seal_bundle,
)

__all__ = [
    "PREFIX",
    "Authorization",
    "Certificate",
    "CodeKind",
    "Currency",
    "DynamicCode",
    "Header",
    "Issuer",
    "LineItem",
    "Merchant",
    "OpenedCode",
    "PaymentCode",
    "ProvisioningBundle",
    "Receipt",
    "RevocationList",
    "Role",
    "SafescanError",
    "SchemeKey",
    "SchemeKeyring",
    "SchemePublicKey",
    "SigningKey",
    "StaticCode",
    "TrustStore",
    "VerifyKey",
    "carrier_subject",
    "code_digest",
    "currency",
    "decode_text",
    "encode_text",
    "issue_certificate",
    "looks_like_safescan",
    "open_bundle",
    "open_code",
    "read_header",
    "seal",
    "seal_bundle",
    "verify_certificate",
]
