"""The institution's published keys, as pinned by a POS or a wallet, and receipt checking."""

from __future__ import annotations

import re

from safescan.api.errors import InvalidRequest
from safescan.api.wire import receipt_from_wire
from safescan.client.errors import InstitutionProtocolError, ReceiptMismatch, TrustFormatError
from safescan.code.authorization import Receipt
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError
from safescan.code.keys import VerifyKey
from safescan.code.numbers import canonical_int

#: a public key as :func:`trust_to_json` writes it (``bytes.fromhex`` also skips spaces)
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def trust_from_json(doc: object) -> TrustStore:
    """``{"kid": "hex public key"}`` -> a trust store. Each key id in its one spelling
    (``"1"``, never ``"01"``, ``" 1"``, ``"+1"``, ``"1_0"`` or other scripts' digits, which
    ``int()`` reads: two spellings of one id made the last key named win) and each public key
    64 hex digits (a string, nothing else); else :class:`TrustFormatError`."""
    if not isinstance(doc, dict) or not doc:
        raise TrustFormatError("trust must map institution key ids to public keys")
    keys: dict[int, VerifyKey] = {}
    for kid, hexkey in doc.items():
        try:
            n = canonical_int(kid, field="a trust key id")
        except SafescanError as exc:
            raise TrustFormatError(exc.message) from None
        if not isinstance(hexkey, str) or not _HEX_KEY.fullmatch(hexkey):
            raise TrustFormatError(f"trust key {n} is not a 32-byte hex public key")
        try:
            keys[n] = VerifyKey(bytes.fromhex(hexkey))
        except (ValueError, SafescanError):
            raise TrustFormatError(f"trust key {n} is not a 32-byte hex public key") from None
    return TrustStore(keys)


def trust_to_json(trust: TrustStore) -> dict[str, str]:
    """Inverse of :func:`trust_from_json`."""
    return {str(k): v.raw.hex() for k, v in sorted(trust.institution_keys.items())}


def verify_receipt(
    receipt_b64: str,
    trust: TrustStore,
    *,
    merchant_id: str,
    order_id: str | None = None,
    amount: int | None = None,
    currency: int | None = None,
    code_digest: bytes | None = None,
) -> Receipt:
    """Parse and verify an institution receipt, and check it is for what we expect."""
    try:
        receipt = receipt_from_wire(receipt_b64)
    except InvalidRequest:
        raise InstitutionProtocolError("the receipt is not valid base64") from None
    receipt.verify(trust)
    expected = {
        "merchant": (receipt.merchant_id, merchant_id),
        "order": (receipt.order_id, order_id),
        "amount": (receipt.amount, amount),
        "currency": (receipt.currency, currency),
        "code": (receipt.code_digest, code_digest),
    }
    for what, (got, want) in expected.items():
        if want is not None and got != want:
            raise ReceiptMismatch(f"the receipt's {what} does not match the order")
    return receipt
