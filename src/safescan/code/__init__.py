"""Formats and crypto: the payment smart code, certificates, authorizations, EMV MPM, QR.

This package depends on nothing else in safescan. Its public API is imported from here.

The names are imported on first use (PEP 562), so that importing one module of the package
(``safescan.code.errors``, say) does not import the cryptography, certificates and text checks
of all the others: the command line starts faster (bench/bench_cli_startup.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from safescan.code.errors import *  # noqa: F403
from safescan.code.errors import SafescanError

if TYPE_CHECKING:
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

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Authorization": "safescan.code.authorization",
    "Receipt": "safescan.code.authorization",
    "Certificate": "safescan.code.certs",
    "RevocationList": "safescan.code.certs",
    "Role": "safescan.code.certs",
    "TrustStore": "safescan.code.certs",
    "issue_certificate": "safescan.code.certs",
    "verify_certificate": "safescan.code.certs",
    "Currency": "safescan.code.currency",
    "currency": "safescan.code.currency",
    "PREFIX": "safescan.code.envelope",
    "Header": "safescan.code.envelope",
    "Issuer": "safescan.code.envelope",
    "OpenedCode": "safescan.code.envelope",
    "code_digest": "safescan.code.envelope",
    "decode_text": "safescan.code.envelope",
    "encode_text": "safescan.code.envelope",
    "looks_like_safescan": "safescan.code.envelope",
    "open_code": "safescan.code.envelope",
    "read_header": "safescan.code.envelope",
    "seal": "safescan.code.envelope",
    "SchemeKey": "safescan.code.keys",
    "SchemeKeyring": "safescan.code.keys",
    "SchemePublicKey": "safescan.code.keys",
    "SigningKey": "safescan.code.keys",
    "VerifyKey": "safescan.code.keys",
    "CodeKind": "safescan.code.payment",
    "DynamicCode": "safescan.code.payment",
    "LineItem": "safescan.code.payment",
    "Merchant": "safescan.code.payment",
    "PaymentCode": "safescan.code.payment",
    "StaticCode": "safescan.code.payment",
    "ProvisioningBundle": "safescan.code.provisioning",
    "carrier_subject": "safescan.code.provisioning",
    "open_bundle": "safescan.code.provisioning",
    "seal_bundle": "safescan.code.provisioning",
}


def __getattr__(name: str) -> object:
    """Import a public name's module the first time the name is used."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


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
