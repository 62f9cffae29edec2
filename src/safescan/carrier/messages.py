"""The carrier's CBOR messages, declared once: each one a dataclass that *is* the wire schema.

A field's position is its CBOR map key (the first field is key 1), the idea of python-fido2's
``_CborDataObject``. The card builds its answers with them (:meth:`CborMessage.to_cbor`) and the
host parses them with the same classes (:meth:`CborMessage.from_cbor`), so no side writes a bare
``doc[7]``. Field types are the wire types: ``int``, ``str``, ``bytes``, ``tuple[T, ...]`` (a
CBOR array of ``T``), ``tuple[A, B, C]`` (an array of exactly those types), and
:class:`~safescan.code.payment.LineItem` (an order line, in its one CBOR form ``[name, quantity,
unit_price]``: :meth:`LineItem.to_cbor` / :meth:`LineItem.from_cbor`); ``T | None`` marks an
optional key (left out when None: these messages never carry CBOR null).

Parsing is strict (deterministic CBOR, :func:`safescan.code.cbor.strict_loads`): a missing
required key, an unknown key or a value of the wrong type raises :class:`MalformedMessage`
(a :class:`~safescan.carrier.errors.WrongData`), naming the message and the field.
docs/carrier.md lists every message.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import cache
from typing import Any, ClassVar, Self, Union

from safescan.carrier.errors import WrongData
from safescan.code import cbor
from safescan.code.errors import SafescanError
from safescan.code.payment import LineItem


class MalformedMessage(WrongData):
    """A carrier message is not what its schema says (missing, unknown or mistyped key)."""

    code = "malformed_message"


@dataclasses.dataclass(frozen=True)
class _Field:
    key: int
    name: str
    kind: Any  # the wire type, without ``| None``
    optional: bool


def _split_optional(hint: Any) -> tuple[Any, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported union {hint}")
        return rest[0], True
    return hint, False


def _check(value: Any, kind: Any, where: str) -> Any:
    """``value`` decoded as the wire type ``kind`` (lists become tuples); MalformedMessage."""
    origin = typing.get_origin(kind)
    if kind is LineItem:
        try:
            return LineItem.from_cbor(value)
        except SafescanError as exc:
            raise MalformedMessage(f"{where}: {exc.message}") from None
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is str or kind is bytes:
        if isinstance(value, kind):
            return value
    elif origin is tuple and typing.get_args(kind)[-1] is Ellipsis:  # tuple[T, ...]
        if isinstance(value, list):
            item = typing.get_args(kind)[0]
            return tuple(_check(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    elif origin is tuple:  # tuple[A, B, C]: exactly these
        parts = typing.get_args(kind)
        if isinstance(value, list) and len(value) == len(parts):
            pairs = zip(value, parts, strict=True)
            return tuple(_check(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(pairs))
        if isinstance(value, list):
            raise MalformedMessage(f"{where}: expected {len(parts)} values, got {len(value)}")
    else:
        raise TypeError(f"unsupported wire type {kind!r} for {where}")
    raise MalformedMessage(f"{where}: expected {_name(kind)}, got {type(value).__name__}")


def _name(kind: Any) -> str:
    parts = typing.get_args(kind)
    if typing.get_origin(kind) is tuple:
        return "array" if parts[-1] is Ellipsis else f"array of {len(parts)}"
    return {int: "integer", str: "text", bytes: "bytes", LineItem: "line item"}.get(kind, str(kind))


def _wire(value: Any) -> Any:
    if isinstance(value, LineItem):
        return value.to_cbor()
    if isinstance(value, tuple | list):
        return [_wire(v) for v in value]
    return value


class CborMessage:
    """Base of the carrier's CBOR map messages (subclasses are frozen, keyword-only
    dataclasses; field *n* is map key *n*)."""

    #: what the message is called in errors, e.g. "card info"
    TITLE: ClassVar[str] = "message"

    @classmethod
    @cache
    def schema(cls) -> tuple[_Field, ...]:
        """The fields in key order: (key, name, wire type, optional)."""
        hints = typing.get_type_hints(cls)
        out = []
        for key, f in enumerate(dataclasses.fields(cls), start=1):  # type: ignore[arg-type]
            kind, optional = _split_optional(hints[f.name])
            out.append(_Field(key, f.name, kind, optional))
        return tuple(out)

    def to_map(self) -> dict[int, Any]:
        """The CBOR map: key -> value, optional fields left out when None."""
        out: dict[int, Any] = {}
        for f in self.schema():
            value = getattr(self, f.name)
            if value is None:
                if not f.optional:
                    raise TypeError(f"{self.TITLE}: {f.name} (key {f.key}) is required")
                continue
            out[f.key] = _wire(value)
        return out

    def to_cbor(self) -> bytes:
        """Deterministic CBOR (the bytes on the wire)."""
        return cbor.dumps(self.to_map())

    @classmethod
    def from_map(cls, doc: Any) -> Self:
        """Check a decoded map against the schema; :class:`MalformedMessage` if it differs."""
        if not isinstance(doc, dict):
            raise MalformedMessage(f"the carrier's {cls.TITLE} is not a map")
        fields = cls.schema()
        known = {f.key for f in fields}
        unknown = sorted(k for k in doc if k not in known)
        if unknown:
            raise MalformedMessage(f"the carrier's {cls.TITLE} has unknown key(s) {unknown}")
        values: dict[str, Any] = {}
        for f in fields:
            where = f"the carrier's {cls.TITLE}, {f.name} (key {f.key})"
            if f.key not in doc:
                if not f.optional:
                    raise MalformedMessage(f"{where} is missing")
                values[f.name] = None
                continue
            values[f.name] = _check(doc[f.key], f.kind, where)
        return cls(**values)

    @classmethod
    def from_cbor(cls, data: bytes) -> Self:
        """Parse the bytes on the wire (strict deterministic CBOR, then the schema)."""
        try:
            doc = cbor.strict_loads(data, error=MalformedMessage)
        except SafescanError as exc:
            raise MalformedMessage(
                f"the carrier's {cls.TITLE} is not valid CBOR: {exc.message}"
            ) from None
        return cls.from_map(doc)


# --- the messages (card -> host) ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class CardInfo(CborMessage):
    """GET DATA 0000 (GET INFO): the card's public information."""

    TITLE: ClassVar[str] = "card info"

    version: tuple[int, ...]  # 1: firmware version, e.g. [2, 1]
    lifecycle: int  # 2: Lifecycle
    device_id: bytes  # 3: 8 bytes
    attestation_key: bytes | None = None  # 4: Ed25519 public key (after GENERATE KEYS)
    carrier_serial: int | None = None  # 5: (personalised)
    certificate: bytes | None = None  # 6: the carrier certificate (personalised)
    retries_left: int | None = None  # 7: PIN tries left (personalised)
    retry_limit: int | None = None  # 8: (personalised)
    signature_counter: int  # 9
    signing_key: bytes | None = None  # 10: Ed25519 public key
    transport_key: bytes | None = None  # 11: X25519 public key
    pin_tries_this_power_cycle: int  # 12
    algorithms: tuple[str, ...]  # 13
    crl_sequence: int | None = None  # 14: newest revocation list kept (personalised)
    model: int  # 15: CarrierModel
    attestation_certificate: bytes | None = None  # 16: the manufacturer's certificate
    key_epoch: int | None = None  # 17: newest scheme-key epoch held (personalised)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LastError(CborMessage):
    """GET DATA 0101 "last error": why the last refused command was refused."""

    TITLE: ClassVar[str] = "last error"

    sw: int  # 1: the status word answered
    ins: int  # 2: the refused instruction
    reason: int  # 3: Reason
    message: str  # 4: for people


@dataclasses.dataclass(frozen=True, kw_only=True)
class OpenedCode(CborMessage):
    """OPEN CODE's answer: the code as the card opened and verified it."""

    TITLE: ClassVar[str] = "code contents"

    kind: int  # 1: CodeKind
    merchant: tuple[str, str, str, str, int]  # 2: [id, name, city, country, mcc]
    issuer: str  # 3: "institution" or "merchant"
    issuer_kid: int | None = None  # 4
    certificate_serial: int | None = None  # 5: merchant-signed codes
    order_id: str | None = None  # 6: dynamic codes
    items: tuple[LineItem, ...] | None = None  # 7: [[name, quantity, unit price], ...]
    total: int | None = None  # 8: dynamic codes
    currency: int | None = None  # 9
    issued_at: int  # 10
    expires_at: int  # 11
    warnings: tuple[str, ...]  # 12
    digest: bytes  # 13: what AUTHORIZE PAYMENT signs over
    scheme_kid: int  # 14: the scheme key the code was sealed to
    certificate: bytes | None = None  # 15: the merchant certificate (merchant-signed)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RevocationsTaken(CborMessage):
    """UPDATE REVOCATIONS' answer."""

    TITLE: ClassVar[str] = "revocation answer"

    sequence: int  # 1: the list's sequence number
    entries: int  # 2: revoked serials plus subjects kept


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeysUpdated(CborMessage):
    """KEY UPDATE's answer."""

    TITLE: ClassVar[str] = "key update answer"

    epoch: int  # 1: the newest epoch the card holds now
    epochs: tuple[int, ...]  # 2: every epoch it holds, oldest first


# --- the requests (host -> card): CBOR arrays, a field's position is its index ---------------


class CborArray:
    """Base of the command bodies that are CBOR arrays (frozen dataclasses; field *n* is
    element *n*, all required). The card keeps its own lenient CBOR decoding of command data
    and checks the decoded value with :meth:`from_value`."""

    TITLE: ClassVar[str] = "request"

    @classmethod
    @cache
    def schema(cls) -> tuple[_Field, ...]:
        """The elements in order: (index, name, wire type, optional=False)."""
        hints = typing.get_type_hints(cls)
        return tuple(
            _Field(i, f.name, hints[f.name], False)
            for i, f in enumerate(dataclasses.fields(cls))  # type: ignore[arg-type]
        )

    def to_cbor(self) -> bytes:
        """Deterministic CBOR (the command data)."""
        return cbor.dumps([_wire(getattr(self, f.name)) for f in self.schema()])

    @classmethod
    def from_value(cls, value: Any) -> Self:
        """Check a decoded value: an array of exactly the fields' types, else
        :class:`MalformedMessage`."""
        fields = cls.schema()
        if not isinstance(value, list) or len(value) != len(fields):
            raise MalformedMessage(f"{cls.TITLE}: expected an array of {len(fields)} values")
        pairs = zip(fields, value, strict=True)
        return cls(**{f.name: _check(v, f.kind, f"{cls.TITLE}[{f.key}]") for f, v in pairs})


@dataclasses.dataclass(frozen=True)
class Personalize(CborArray):
    """PERSONALIZE's command data."""

    TITLE: ClassVar[str] = "[bundle, PIN block, retry limit]"

    bundle: bytes  # 0: the institution's sealed provisioning bundle
    pin_block: bytes  # 1: the padded PIN (safescan.carrier.pin)
    retry_limit: int  # 2


@dataclasses.dataclass(frozen=True)
class Authorize(CborArray):
    """AUTHORIZE PAYMENT's command data: what the customer confirmed."""

    TITLE: ClassVar[str] = "[merchant id, amount, currency]"

    merchant_id: str  # 0
    amount: int  # 1: minor units
    currency: int  # 2: ISO 4217 number


MESSAGES: tuple[type[CborMessage], ...] = (
    CardInfo,
    LastError,
    OpenedCode,
    RevocationsTaken,
    KeysUpdated,
)
