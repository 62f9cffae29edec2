"""Say what a scanned input is, without ever acting on it.

``inspect_text`` classifies a payload: a safescan code (clear header, and with keys its verified
contents), an EMVCo MPM payload (fields, labelled *unverified*), or anything else (a URL or other
text, reported as "not a payment code" and never opened or followed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from safescan.code import emv
from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import SafescanError, UnknownCurrency
from safescan.code.header import looks_like_safescan, read_header
from safescan.code.payment import DynamicCode

if TYPE_CHECKING:  # opening a code (cryptography) is imported only when there are keys
    from safescan.code.certs import TrustStore
    from safescan.code.envelope import OpenedCode
    from safescan.code.keys import SchemeKeyring

MAX_INPUT_CHARS = 8192


def describe_opened(opened: OpenedCode) -> dict[str, Any]:
    """A JSON-ready description of a verified code (what a wallet shows the customer)."""
    code = opened.code
    out: dict[str, Any] = {
        "kind": "dynamic" if isinstance(code, DynamicCode) else "static",
        "merchant": code.merchant.shown_json(),
        "issuer": opened.issuer,
        "certificate_serial": opened.certificate.serial if opened.certificate else None,
        "issued_at": code.issued_at,
        "expires_at": code.expires_at,
        "digest": opened.digest.hex(),
        "warnings": list(opened.warnings),
    }
    cur = code.currency
    out["currency"] = _currency_alpha(cur) if cur is not None else None
    if isinstance(code, DynamicCode):
        c = lookup_currency(code.currency)
        out["order_id"] = code.order_id
        out["items"] = [i.display_json(code.currency) for i in code.items]
        out["total"] = code.total
        out["total_display"] = c.format(code.total)
    return out


def _currency_alpha(numeric: int) -> str:
    try:
        return lookup_currency(numeric).alpha
    except UnknownCurrency:
        return str(numeric)


def inspect_text(
    text: str,
    keyring: SchemeKeyring | None = None,
    trust: TrustStore | None = None,
    *,
    now: int,
) -> dict[str, Any]:
    """Classify and (where keys allow) verify ``text``. Never raises for bad input.

    Returns at least ``kind`` (``"safescan"``, ``"emv"`` or ``"unknown"``), ``valid`` and, when
    not valid, ``error`` with ``type`` and ``message``.
    """
    if not isinstance(text, str) or len(text) > MAX_INPUT_CHARS:
        return _unknown("input is too large to be a payment code", text_len=len(text))
    if looks_like_safescan(text):
        return _inspect_safescan(text, keyring, trust, now)
    if emv.looks_like_emv(text):
        return _inspect_emv(text)
    result = _unknown("this is not a payment code; it was not opened or followed")
    lowered = text.strip().lower()
    if lowered.startswith(("http://", "https://", "www.")) or "://" in lowered[:16]:
        result["looks_like"] = "url"
    result["text"] = text[:200]
    return result


def _unknown(message: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "unknown",
        "valid": False,
        "error": {"type": "NotAPaymentCode", "code": "not_a_payment_code", "message": message},
        **extra,
    }


def _inspect_safescan(
    text: str, keyring: SchemeKeyring | None, trust: TrustStore | None, now: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "safescan", "verified": False}
    try:
        header = read_header(text)
    except SafescanError as exc:
        return {**out, "valid": False, "error": exc.to_dict()}
    out["header"] = {
        "version": header.version,
        "kind": header.kind.name.lower(),
        "key_id": header.kid,
    }
    if keyring is None or trust is None:
        out["valid"] = True
        out["note"] = "sealed payment code; only a key carrier (or the scheme keys) can open it"
        return out
    from safescan.code.envelope import open_code

    try:
        opened = open_code(text, keyring, trust, now=now)
    except SafescanError as exc:
        return {**out, "valid": False, "error": exc.to_dict()}
    return {**out, "valid": True, "verified": True, "contents": describe_opened(opened)}


def _inspect_emv(text: str) -> dict[str, Any]:
    """Every field of an EMV payload, read leniently (see :func:`emv.read_emv`).

    ``crc_valid`` is the CRC alone; ``warnings`` lists departures from the EMVCo book (real
    national codes have them, and wallets still read them); ``valid`` means a well-formed TLV
    with a matching CRC. Only a broken TLV or a wrong CRC is an ``error``.
    """
    out: dict[str, Any] = {
        "kind": "emv",
        "verified": False,
        "note": "EMVCo QR: unverified (no signature), not payable here",
        "crc_valid": emv.crc_matches(text),
    }
    try:
        payload, warnings = emv.read_emv(text)
    except SafescanError as exc:
        return {**out, "valid": False, "error": exc.to_dict()}
    out.update(emv.emv_to_json(payload))
    out["warnings"] = warnings
    out["summary"] = emv_summary(payload)
    out["valid"] = payload.crc_valid
    if not payload.crc_valid:
        out["error"] = {
            "type": "EmvCrcError",
            "code": "emv_crc_error",
            "message": "the EMV payload's CRC does not match: altered or misread",
        }
    return out


#: The summary's fields as a person reads them: (label, key), in display order.
EMV_SUMMARY_LABELS = (
    ("merchant", "merchant_name"),
    ("city", "merchant_city"),
    ("country", "country"),
    ("amount", "amount_display"),
    ("currency", "currency"),
    ("schemes", "schemes"),
)


def emv_summary(payload: emv.EmvPayload) -> dict[str, Any]:
    """What a person wants to know of an EMV code: who, where, how much (all unverified)."""
    summary: dict[str, Any] = {}
    for key, value in (
        ("merchant_name", payload.merchant_name),
        ("merchant_city", payload.merchant_city),
        ("country", payload.country),
        ("mcc", payload.mcc),
        ("amount", payload.amount),
        ("point_of_initiation", payload.point_of_initiation),
    ):
        if value:
            summary[key] = value
    numeric = payload.currency
    if numeric:
        try:
            summary["currency"] = lookup_currency(numeric).alpha
        except UnknownCurrency:
            summary["currency"] = numeric
    if "amount" in summary:
        summary["amount_display"] = (
            f"{summary['amount']} {summary.get('currency', '(no currency)')}"
        )
    schemes = [
        str(value["00"])
        for value in payload.merchant_accounts.values()
        if isinstance(value, Mapping) and "00" in value
    ]
    if schemes:
        summary["schemes"] = schemes
    return summary
