"""Payment authorizations (signed by a key carrier) and receipts (signed by the institution).

Authorization, deterministic CBOR::

    [1, code_digest(32), merchant_id, order_id ("" for static codes), amount, currency,
     counter, carrier_serial, created_at, signature(64)]

signed by the carrier's certified Ed25519 key over ``"SS1-AUTH" || CBOR(first nine fields)``.
The counter is the carrier's monotonic signature counter: the institution accepts each
carrier's counters only in strictly increasing order, so a captured authorization cannot be
replayed.

Receipt, deterministic CBOR::

    [1, payment_id, order_id, merchant_id, amount, currency, payer_pseudonym, paid_at,
     code_digest(32), issuer_kid, signature(64)]

signed by the institution over ``"SS1-RCPT" || CBOR(first ten fields)``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from safescan.code import cbor
from safescan.code.certs import TrustStore
from safescan.code.currency import currency
from safescan.code.errors import (
    MalformedAuthorization,
    MalformedCode,
    MalformedData,
    MalformedReceipt,
)
from safescan.code.keys import Signer, SigningKey, VerifyKey
from safescan.code.payment import check_amount, check_identifier, check_time

AUTH_CONTEXT = b"SS1-AUTH"
RECEIPT_CONTEXT = b"SS1-RCPT"
MAX_SIGNED_BYTES = 1024


SIGNATURE_BYTES = 64
_SIG_HEAD = b"\x58\x40"  # a CBOR byte string of 64 bytes: major type 2, one-byte length
_SIG_ITEM = len(_SIG_HEAD) + SIGNATURE_BYTES
_ARRAY_9, _ARRAY_10 = b"\x89", 0x8A


def with_signature(unsigned: bytes, signature: bytes) -> bytes:
    """``cbor.dumps([*values, signature])`` from ``unsigned = cbor.dumps(values)`` (an array
    of fewer than 23 items) without encoding the values again: a deterministic array is its
    head (``0x80 + length`` below 24) followed by its items' encodings, so one more item is
    the head plus one and the 64-byte signature's encoding appended
    (tests/code/test_authorization_fast.py)."""
    head = unsigned[0]
    if not 0x80 <= head < 0x97 or len(signature) != SIGNATURE_BYTES:
        raise ValueError("with_signature takes a short CBOR array and a 64-byte signature")
    return bytes((head + 1,)) + unsigned[1:] + _SIG_HEAD + signature


def _uint(value: object, name: str, error: type[MalformedData], limit: int = 2**63) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
        raise error(f"{name} must be an unsigned integer")
    return value


def _currency(value: object, error: type[MalformedData]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 1000:
        raise error("currency must be an ISO 4217 numeric code")
    return currency(value).numeric


def _bytes32(value: object, name: str, error: type[MalformedData]) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise error(f"{name} must be 32 bytes")
    return value


def _ident(value: object, name: str, error: type[MalformedData]) -> str:
    """A payment code's identifier rule, reported as ``error``."""
    try:
        return check_identifier(value, name)
    except MalformedCode as exc:
        raise error(exc.message) from None


def _time(value: object, name: str, error: type[MalformedData]) -> int:
    """A payment code's time rule, reported as ``error``."""
    try:
        return check_time(value, name)
    except MalformedCode as exc:
        raise error(exc.message) from None


def _load_array(data: bytes, length: int, what: str, error: type[MalformedData]) -> list[object]:
    if not isinstance(data, bytes) or len(data) > MAX_SIGNED_BYTES:
        raise error(f"{what} is too large")
    value = cbor.strict_loads(data, max_depth=2, error=error)
    if not isinstance(value, list) or len(value) != length or value[0] != 1:
        raise error(f"not a version-1 {what}")
    return value


@dataclass(frozen=True, slots=True)
class Authorization:
    """A key carrier's signed approval of one exact payment."""

    code_digest: bytes
    merchant_id: str
    order_id: str
    amount: int
    currency: int
    counter: int
    carrier_serial: int
    created_at: int
    signature: bytes = b""

    def _fields(self) -> list[object]:
        return [
            1,
            self.code_digest,
            self.merchant_id,
            self.order_id,
            self.amount,
            self.currency,
            self.counter,
            self.carrier_serial,
            self.created_at,
        ]

    def tbs(self) -> bytes:
        """The bytes the carrier signs."""
        return AUTH_CONTEXT + cbor.dumps(self._fields())

    def signed(self, key: SigningKey) -> Authorization:
        """A copy carrying ``key``'s signature."""
        self.validated()
        return replace(self, signature=key.sign(self.tbs()))

    def validated(self) -> Authorization:
        """Check every field's type and range; returns self (:class:`MalformedAuthorization`,
        or :class:`InvalidAmount` for the amount)."""
        bad = MalformedAuthorization
        _bytes32(self.code_digest, "code digest", bad)
        _ident(self.merchant_id, "merchant id", bad)
        if self.order_id != "":
            _ident(self.order_id, "order id", bad)
        check_amount(self.amount)
        _currency(self.currency, bad)
        _uint(self.counter, "counter", bad)
        _uint(self.carrier_serial, "carrier serial", bad)
        _time(self.created_at, "creation time", bad)
        return self

    def to_bytes(self) -> bytes:
        """Deterministic CBOR encoding (with signature)."""
        return cbor.dumps([*self._fields(), self.signature])

    @classmethod
    def from_bytes(cls, data: bytes) -> Authorization:
        """Parse strictly; does not verify the signature (see :meth:`verify`)."""
        v = _load_array(data, 10, "authorization", MalformedAuthorization)
        sig = v[9]
        if not isinstance(sig, bytes) or len(sig) != 64:
            raise MalformedAuthorization("authorization signature must be 64 bytes")
        auth = cls(
            code_digest=v[1],  # type: ignore[arg-type]
            merchant_id=v[2],  # type: ignore[arg-type]
            order_id=v[3] if isinstance(v[3], str) else "\0",
            amount=v[4],  # type: ignore[arg-type]
            currency=v[5],  # type: ignore[arg-type]
            counter=v[6],  # type: ignore[arg-type]
            carrier_serial=v[7],  # type: ignore[arg-type]
            created_at=v[8],  # type: ignore[arg-type]
            signature=sig,
        )
        return auth.validated()

    @classmethod
    def from_bytes_signed(cls, data: bytes) -> tuple[Authorization, bytes]:
        """:meth:`from_bytes` and the bytes its carrier signed (:meth:`tbs`), the latter cut
        from ``data`` itself instead of encoded again (the payment path): the strict decoder
        proved ``data`` is the deterministic encoding of ``[*fields, signature]``, i.e. the
        10-element array's head, the nine fields' encodings, then the 64-byte signature's;
        :meth:`tbs` is the 9-element array's head and those same nine encodings.
        tests/code/test_authorization_fast.py checks it equals :meth:`tbs` byte for byte."""
        auth = cls.from_bytes(data)
        if data[0] != _ARRAY_10 or data[-_SIG_ITEM:-SIGNATURE_BYTES] != _SIG_HEAD:
            raise MalformedAuthorization("not a version-1 authorization")  # (cannot happen)
        return auth, AUTH_CONTEXT + _ARRAY_9 + data[1:-_SIG_ITEM]

    def verify(self, carrier_key: VerifyKey, signed: bytes | None = None) -> None:
        """Verify the carrier's signature; raises :class:`SignatureInvalid`. ``signed``: this
        authorization's :meth:`tbs` as :meth:`from_bytes_signed` returned it with this very
        object (never anything else: it is what the signature is checked over)."""
        carrier_key.verify(
            self.signature, self.tbs() if signed is None else signed, what="authorization signature"
        )


@dataclass(frozen=True, slots=True)
class Receipt:
    """The institution's signed statement that a payment was made."""

    payment_id: str
    order_id: str
    merchant_id: str
    amount: int
    currency: int
    payer_pseudonym: str
    paid_at: int
    code_digest: bytes
    issuer_kid: int
    signature: bytes = b""

    def _fields(self) -> list[object]:
        return [
            1,
            self.payment_id,
            self.order_id,
            self.merchant_id,
            self.amount,
            self.currency,
            self.payer_pseudonym,
            self.paid_at,
            self.code_digest,
            self.issuer_kid,
        ]

    def tbs(self) -> bytes:
        """The bytes the institution signs."""
        return RECEIPT_CONTEXT + cbor.dumps(self._fields())

    def signed(self, key: Signer) -> Receipt:
        """A copy carrying the institution key's signature."""
        self.validated()
        return replace(self, signature=key.sign(self.tbs()))

    def signed_bytes(self, key: Signer) -> bytes:
        """``signed(key).to_bytes()`` in one go: validated once, the fields listed and encoded
        once for the signature and once with it, no copy (the payment path makes one per
        payment)."""
        self.validated()
        unsigned = cbor.dumps(self._fields())  # [1, ...nine fields]: head 0x8a
        signature = key.sign(RECEIPT_CONTEXT + unsigned)
        return with_signature(unsigned, signature)

    def validated(self) -> Receipt:
        """Check every field's type and range; returns self (:class:`MalformedReceipt`, or
        :class:`InvalidAmount` for the amount)."""
        bad = MalformedReceipt
        _ident(self.payment_id, "payment id", bad)
        if self.order_id != "":
            _ident(self.order_id, "order id", bad)
        _ident(self.merchant_id, "merchant id", bad)
        _ident(self.payer_pseudonym, "payer pseudonym", bad)
        check_amount(self.amount)
        _currency(self.currency, bad)
        _time(self.paid_at, "payment time", bad)
        _bytes32(self.code_digest, "code digest", bad)
        _uint(self.issuer_kid, "issuer key id", bad, 0x10000)
        return self

    def to_bytes(self) -> bytes:
        """Deterministic CBOR encoding (with signature)."""
        return cbor.dumps([*self._fields(), self.signature])

    @classmethod
    def from_bytes(cls, data: bytes) -> Receipt:
        """Parse strictly; does not verify the signature (see :meth:`verify`)."""
        v = _load_array(data, 11, "receipt", MalformedReceipt)
        sig = v[10]
        if not isinstance(sig, bytes) or len(sig) != 64:
            raise MalformedReceipt("receipt signature must be 64 bytes")
        names = [f.name for f in fields(cls) if f.name != "signature"]
        values = dict(zip(names, v[1:10], strict=True))
        for name in ("payment_id", "order_id", "merchant_id", "payer_pseudonym"):
            if not isinstance(values[name], str):
                raise MalformedReceipt(f"receipt {name} must be text")
        receipt = cls(**values, signature=sig)  # type: ignore[arg-type]
        return receipt.validated()

    def verify(self, trust: TrustStore) -> None:
        """Verify the institution's signature; raises :class:`SignatureInvalid`."""
        trust.institution_key(self.issuer_kid).verify(
            self.signature, self.tbs(), what="receipt signature"
        )
