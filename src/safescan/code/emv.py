"""EMVCo QR Code Merchant-Presented Mode (MPM): parse, validate and build payloads.

An MPM payload is a flat run of data objects, each ``ID`` (2 digits) + ``length`` (2 digits,
counted in characters) + ``value``. Some IDs hold a nested run of data objects (a template):
26-51 (merchant account information), 62 (additional data), 64 (merchant information in an
alternate language) and 80-99 (unreserved templates). The payload starts with ``000201`` and
ends with ``6304`` + the CRC-16/CCITT-FALSE of everything before it (UTF-8, up to and including
``6304``) as four hexadecimal digits.

EMV payloads carry no signature: whatever is parsed here is *unverified* merchant data.

Public API: :class:`EmvPayload`, :func:`parse_emv`, :func:`build_emv`, :func:`looks_like_emv`,
:func:`emv_to_json`, :func:`crc16_ccitt_false`, :data:`MAX_PAYLOAD_CHARS`. Every failure is an
:class:`~safescan.code.errors.EmvError` subclass.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import (
    EmvCrcError,
    EmvDuplicateId,
    EmvError,
    EmvFormatError,
    EmvLengthError,
    EmvMissingField,
    OversizeInput,
    UnknownCurrency,
)

__all__ = [
    "MAX_PAYLOAD_CHARS",
    "EmvFieldValue",
    "EmvOversizeError",
    "EmvPayload",
    "build_emv",
    "crc16_ccitt_false",
    "crc_matches",
    "emv_to_json",
    "is_template_id",
    "looks_like_emv",
    "parse_emv",
    "read_emv",
]

#: EMVCo MPM: a payload holds at most 512 characters. Anything longer is refused unread.
MAX_PAYLOAD_CHARS = 512

#: A field's value: a plain string, or for template IDs an ordered mapping sub-ID -> string.
EmvFieldValue: TypeAlias = str | Mapping[str, str]


class EmvOversizeError(EmvError, OversizeInput):
    """The text is longer than any EMV MPM payload (512 characters); refused before parsing.

    It is both an :class:`EmvError` and the generic :class:`OversizeInput`.
    """

    code = "emv_oversize_input"


# "00".."99" -> 0..99. A dict lookup is the fastest strict check: int() would accept " 1",
# "1_0" and non-ASCII digits.
_TWO_DIGITS: dict[str, int] = {f"{i:02d}": i for i in range(100)}

# IDs whose value is itself a run of data objects.
_TEMPLATE_IDS: frozenset[str] = frozenset(
    [f"{i:02d}" for i in range(26, 52)] + ["62", "64"] + [f"{i:02d}" for i in range(80, 100)]
)
_MERCHANT_ACCOUNT_IDS: frozenset[str] = frozenset(f"{i:02d}" for i in range(2, 52))

_NAMES: dict[str, str] = {
    "00": "payload format indicator",
    "01": "point of initiation method",
    "52": "merchant category code",
    "53": "transaction currency",
    "54": "transaction amount",
    "55": "tip or convenience indicator",
    "56": "convenience fee (fixed)",
    "57": "convenience fee (percentage)",
    "58": "country code",
    "59": "merchant name",
    "60": "merchant city",
    "61": "postal code",
    "62": "additional data field template",
    "63": "CRC",
    "64": "merchant information language template",
}

_AMOUNT_RE = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)\Z")
_HEX4_RE = re.compile(r"[0-9A-Fa-f]{4}\Z")
_COUNTRY_RE = re.compile(r"[A-Z]{2}\Z")
_SNIFF_RE = re.compile(r"0002[0-9]{2}")


def is_template_id(field_id: str) -> bool:
    """True if top-level ``field_id`` holds nested data objects (26-51, 62, 64, 80-99)."""
    return field_id in _TEMPLATE_IDS


def _label(field_id: str) -> str:
    name = _NAMES.get(field_id)
    if name is None:
        if "02" <= field_id <= "51":
            name = "merchant account information"
        elif "80" <= field_id <= "99":
            name = "unreserved template"
        else:
            return f"ID {field_id}"
    return f"ID {field_id} ({name})"


def crc16_ccitt_false(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR) of ``data``.

    This is the checksum EMV MPM uses. Computed by the standard library's C ``binascii``
    routine (CRC-CCITT seeded with 0xFFFF). The check value for ``b"123456789"`` is ``0x29B1``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EmvFormatError(
            f"crc16_ccitt_false needs bytes, got {type(data).__name__}; encode text as UTF-8 first"
        )
    return binascii.crc_hqx(data, 0xFFFF)


def _crc_hex(text: str) -> str:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EmvFormatError(
            f"payload holds a character that is not valid Unicode text at offset {exc.start}"
        ) from None
    return f"{binascii.crc_hqx(data, 0xFFFF):04X}"


def _parse_objects(text: str, start: int, end: int, where: str) -> dict[str, str]:
    """Split ``text[start:end]`` into data objects; ``where`` names the enclosing template."""
    out: dict[str, str] = {}
    two = _TWO_DIGITS
    pos = start
    while pos < end:
        if end - pos < 4:
            raise EmvLengthError(
                f"truncated data object{where} at offset {pos}: an ID and a length need "
                f"4 characters, only {end - pos} left"
            )
        field_id = text[pos : pos + 2]
        if field_id not in two:
            raise EmvFormatError(
                f"data object ID {field_id!r}{where} at offset {pos} is not two digits"
            )
        length_text = text[pos + 2 : pos + 4]
        length = two.get(length_text)
        if length is None:
            raise EmvLengthError(
                f"length {length_text!r} of ID {field_id}{where} at offset {pos + 2} "
                "is not two digits"
            )
        if length == 0:
            raise EmvLengthError(
                f"ID {field_id}{where} at offset {pos} has length 00; values have 1-99 characters"
            )
        value_start = pos + 4
        pos = value_start + length
        if pos > end:
            raise EmvLengthError(
                f"ID {field_id}{where} at offset {value_start - 4} declares {length} characters "
                f"but only {end - value_start} remain"
            )
        if field_id in out:
            raise EmvDuplicateId(
                f"ID {field_id} appears twice{where} (again at offset {value_start - 4})"
            )
        out[field_id] = text[value_start:pos]
    return out


def _numeric_problem(fields: Mapping[str, Any], field_id: str, size: int) -> EmvError | None:
    value = fields.get(field_id)
    if value is None:
        return EmvMissingField(f"mandatory {_label(field_id)} is missing")
    if (
        not isinstance(value, str)
        or len(value) != size
        or not (value.isascii() and value.isdigit())
    ):
        return EmvFormatError(f"{_label(field_id)} must be {size} digits, got {value!r}")
    return None


def _amount_problem(field_id: str, value: Any, max_len: int) -> EmvError | None:
    if not isinstance(value, str) or len(value) > max_len or _AMOUNT_RE.match(value) is None:
        return EmvFormatError(
            f"{_label(field_id)} must be up to {max_len} characters of digits with at most "
            f"one '.', got {value!r}"
        )
    return None


def _deviations(fields: Mapping[str, Any]) -> list[EmvError]:
    """Every way a parsed top level (templates already split) departs from EMVCo MPM, in the
    order the strict parser reports them. Real national codes often have some (a missing MCC,
    name or city; payload format "02"): :func:`read_emv` reports them as warnings."""
    out: list[EmvError] = []
    first = next(iter(fields))
    if first != "00":
        if "00" in fields:
            out.append(
                EmvFormatError("payload format indicator (ID 00) must be the first data object")
            )
        else:
            out.append(EmvMissingField("mandatory payload format indicator (ID 00) is missing"))
    pfi = fields.get("00")
    if pfi is not None and pfi != "01":
        out.append(EmvFormatError(f"payload format indicator (ID 00) must be '01', got {pfi!r}"))
    poi = fields.get("01")
    if poi is not None and poi not in ("11", "12"):
        out.append(
            EmvFormatError(
                "point of initiation method (ID 01) must be '11' (static) or '12' (dynamic), "
                f"got {poi!r}"
            )
        )
    if _MERCHANT_ACCOUNT_IDS.isdisjoint(fields):
        out.append(EmvMissingField("no merchant account information (IDs 02-51): nobody to pay"))
    for field_id, value in fields.items():
        if "26" <= field_id <= "51" and isinstance(value, Mapping) and "00" not in value:
            out.append(
                EmvMissingField(
                    f"{_label(field_id)} lacks its globally unique identifier (sub-ID 00)"
                )
            )
    for field_id, size in (("52", 4), ("53", 3)):
        problem = _numeric_problem(fields, field_id, size)
        if problem is not None:
            out.append(problem)
    amount = fields.get("54")
    if amount is not None and (problem := _amount_problem("54", amount, 13)) is not None:
        out.append(problem)
    tip = fields.get("55")
    if tip is not None and tip not in ("01", "02", "03"):
        out.append(
            EmvFormatError(
                f"tip or convenience indicator (ID 55) must be 01, 02 or 03, got {tip!r}"
            )
        )
    for fee_id, needs, max_len in (("56", "02", 13), ("57", "03", 5)):
        fee = fields.get(fee_id)
        if tip == needs and fee is None:
            out.append(EmvMissingField(f"{_label(fee_id)} is missing although ID 55 is {needs!r}"))
        if fee is not None:
            if tip != needs:
                out.append(
                    EmvFormatError(f"{_label(fee_id)} is present but ID 55 is not {needs!r}")
                )
            elif (problem := _amount_problem(fee_id, fee, max_len)) is not None:
                out.append(problem)
    country = fields.get("58")
    if country is None:
        out.append(EmvMissingField("mandatory country code (ID 58) is missing"))
    elif not isinstance(country, str) or _COUNTRY_RE.match(country) is None:
        out.append(EmvFormatError(f"country code (ID 58) must be 2 letters A-Z, got {country!r}"))
    for field_id in ("59", "60"):
        if field_id not in fields:
            out.append(EmvMissingField(f"mandatory {_label(field_id)} is missing"))
    language = fields.get("64")
    if isinstance(language, Mapping):
        for sub_id in ("00", "01"):
            if sub_id not in language:
                out.append(EmvMissingField(f"{_label('64')} lacks mandatory sub-ID {sub_id}"))
        if "00" in language and len(language["00"]) != 2:
            out.append(
                EmvFormatError(
                    "language preference (ID 64, sub-ID 00) must be 2 characters, "
                    f"got {language['00']!r}"
                )
            )
    return out


def _advisories(fields: Mapping[str, Any]) -> list[str]:
    """Softer notes the strict parser does not enforce: field lengths, amount decimals."""
    notes: list[str] = []
    for field_id, limit in (("59", 25), ("60", 15), ("61", 10)):
        value = fields.get(field_id)
        if isinstance(value, str) and len(value) > limit:
            notes.append(f"{_label(field_id)} has {len(value)} characters; EMVCo allows {limit}")
    code = fields.get("53")
    amount = fields.get("54")
    if isinstance(code, str) and code.isascii() and code.isdigit() and len(code) == 3:
        try:
            cur = lookup_currency(code)
        except UnknownCurrency:
            notes.append(f"transaction currency (ID 53) {code!r} is not an ISO 4217 currency")
        else:
            if isinstance(amount, str) and _AMOUNT_RE.match(amount) is not None:
                decimals = len(amount.partition(".")[2])
                if decimals > cur.minor_units:
                    notes.append(
                        f"transaction amount (ID 54) {amount!r} has {decimals} decimals;"
                        f" {cur.alpha} has {cur.minor_units}"
                    )
    return notes


def _validate(fields: Mapping[str, Any]) -> None:
    """Strict semantic checks on a parsed top level: the first deviation is raised."""
    problems = _deviations(fields)
    if problems:
        raise problems[0]


def _structure(
    text: str, *, lenient: bool
) -> tuple[dict[str, str | Mapping[str, str]], bool, list[str]]:
    """Split ``text`` into data objects and check the CRC object's place and form.

    Raises for a broken TLV (and a missing, misplaced or malformed CRC object). Returns the
    fields, whether the CRC matches, and (``lenient``) the templates that did not split.
    """
    if not isinstance(text, str):
        raise EmvFormatError(f"an EMV payload is text, got {type(text).__name__}")
    size = len(text)
    if size > MAX_PAYLOAD_CHARS:
        raise EmvOversizeError(
            f"input is {size} characters; an EMV MPM payload holds at most {MAX_PAYLOAD_CHARS}"
        )
    if size == 0:
        raise EmvMissingField("payload is empty")
    flat = _parse_objects(text, 0, size, "")
    if "63" not in flat:
        raise EmvMissingField("mandatory CRC (ID 63) is missing")
    if next(reversed(flat)) != "63":
        raise EmvFormatError("CRC (ID 63) must be the last data object")
    stated = flat["63"]
    if len(stated) != 4:
        raise EmvLengthError(f"CRC (ID 63) must have length 04, got {len(stated):02d}")
    if _HEX4_RE.match(stated) is None:
        raise EmvFormatError(f"CRC (ID 63) must be 4 hexadecimal digits, got {stated!r}")
    crc_valid = _crc_hex(text[:-4]) == stated.upper()
    fields: dict[str, str | Mapping[str, str]] = {}
    notes: list[str] = []
    pos = 0
    for field_id, value in flat.items():
        length = len(value)
        if field_id in _TEMPLATE_IDS:
            where = f" in template {field_id}"
            try:
                fields[field_id] = MappingProxyType(
                    _parse_objects(text, pos + 4, pos + 4 + length, where)
                )
            except EmvError as exc:
                if not lenient:
                    raise
                fields[field_id] = value
                notes.append(
                    f"{_label(field_id)} should hold data objects but does not ({exc.message});"
                    " shown as text"
                )
        else:
            fields[field_id] = value
        pos += 4 + length
    return fields, crc_valid, notes


def _parse(text: str, verify_crc: bool) -> tuple[dict[str, str | Mapping[str, str]], bool]:
    fields, crc_valid, _ = _structure(text, lenient=False)
    if verify_crc and not crc_valid:
        raise EmvCrcError(
            f"CRC mismatch: payload says {fields['63']}, computed {_crc_hex(text[:-4])}"
        )
    _validate(fields)
    return fields, crc_valid


@dataclass(frozen=True, slots=True, eq=True)
class EmvPayload:
    """A parsed, validated EMV MPM payload. Its contents are *unverified* merchant claims.

    ``fields`` maps each 2-digit ID, in payload order, to its string value, or for template
    IDs (26-51, 62, 64, 80-99) to a read-only mapping sub-ID -> string. ``raw`` is the exact
    text parsed; ``crc_valid`` is False only when parsed with ``verify_crc=False`` and the
    CRC did not match.
    """

    fields: Mapping[str, EmvFieldValue]
    raw: str
    crc_valid: bool = True

    def __hash__(self) -> int:
        return hash((self.raw, self.crc_valid))

    def _text(self, field_id: str) -> str | None:
        value = self.fields.get(field_id)
        return value if isinstance(value, str) else None

    def template(self, field_id: str) -> Mapping[str, str] | None:
        """The sub-fields of template ``field_id`` (e.g. ``"62"``), or None if absent."""
        value = self.fields.get(field_id)
        return value if isinstance(value, Mapping) else None

    @property
    def merchant_name(self) -> str:
        """ID 59: the merchant's name as the code claims it."""
        return self._text("59") or ""

    @property
    def merchant_city(self) -> str:
        """ID 60: the merchant's city."""
        return self._text("60") or ""

    @property
    def country(self) -> str:
        """ID 58: ISO 3166-1 alpha-2 country code, e.g. ``"BR"``."""
        return self._text("58") or ""

    @property
    def mcc(self) -> str:
        """ID 52: ISO 18245 merchant category code (4 digits)."""
        return self._text("52") or ""

    @property
    def currency(self) -> str:
        """ID 53: ISO 4217 *numeric* currency code, e.g. ``"986"`` for BRL."""
        return self._text("53") or ""

    @property
    def amount(self) -> str | None:
        """ID 54: the amount as written (e.g. ``"23.72"``), or None (the payer enters it)."""
        return self._text("54")

    @property
    def point_of_initiation(self) -> Literal["static", "dynamic"] | None:
        """ID 01: ``"static"`` (11, reusable), ``"dynamic"`` (12, one payment) or None if absent."""
        value = self._text("01")
        if value == "11":
            return "static"
        if value == "12":
            return "dynamic"
        return None

    @property
    def crc(self) -> str:
        """ID 63: the CRC as written in the payload (4 hex digits)."""
        return self._text("63") or ""

    @property
    def merchant_accounts(self) -> dict[str, EmvFieldValue]:
        """IDs 02-51: how the merchant can be paid (card-network IDs or scheme templates)."""
        return {k: v for k, v in self.fields.items() if k in _MERCHANT_ACCOUNT_IDS}


def parse_emv(text: str, *, verify_crc: bool = True) -> EmvPayload:
    """Parse and validate an EMV MPM payload.

    Raises an :class:`EmvError` subclass: :class:`EmvOversizeError` (> 512 characters, checked
    first), :class:`EmvLengthError`, :class:`EmvFormatError`, :class:`EmvDuplicateId`,
    :class:`EmvMissingField` or :class:`EmvCrcError`. With ``verify_crc=False`` a wrong CRC is
    reported through ``crc_valid`` instead of raised (e.g. to show *why* a code is refused).
    """
    fields, crc_valid = _parse(text, verify_crc)
    return EmvPayload(MappingProxyType(fields), text, crc_valid)


def read_emv(text: str) -> tuple[EmvPayload, list[str]]:
    """Read an EMV MPM payload the way wallets read real national codes: leniently.

    Raises an :class:`EmvError` only for what makes the payload unreadable: a broken TLV
    (truncated object, non-digit ID or length, duplicate ID), a missing, misplaced or
    malformed CRC object, or oversize input. Everything else (a missing merchant category
    code, name or city, payload format "02", a template that does not split, ...) comes back
    as a list of warnings. A CRC that does not match is *not* raised: see ``crc_valid``.
    """
    fields, crc_valid, notes = _structure(text, lenient=True)
    warnings = [problem.message for problem in _deviations(fields)]
    warnings += notes + _advisories(fields)
    return EmvPayload(MappingProxyType(fields), text, crc_valid), warnings


def crc_matches(text: object) -> bool:
    """The CRC alone: does ``text`` end in ``6304`` + the CRC-16 of everything before it?

    Independent of every other rule (a payload whose TLV is broken can still carry a
    correct CRC); False when there is no such ending.
    """
    if not isinstance(text, str) or len(text) < 8 or len(text) > MAX_PAYLOAD_CHARS:
        return False
    if text[-8:-4] != "6304" or _HEX4_RE.match(text[-4:]) is None:
        return False
    try:
        return _crc_hex(text[:-4]) == text[-4:].upper()
    except EmvFormatError:
        return False


def looks_like_emv(text: object) -> bool:
    """Cheap sniff: does ``text`` start like an EMV MPM payload (``"0002"`` + two digits, e.g.
    ``"000201"``, or DuitNow's ``"000202"``)? No validation."""
    return isinstance(text, str) and _SNIFF_RE.match(text) is not None


def _encode_object(field_id: str, value: str, where: str) -> str:
    if field_id not in _TWO_DIGITS:
        raise EmvFormatError(f"data object ID {field_id!r}{where} is not two digits")
    if not isinstance(value, str):
        raise EmvFormatError(
            f"value of ID {field_id}{where} must be text, got {type(value).__name__}"
        )
    length = len(value)
    if not 1 <= length <= 99:
        raise EmvLengthError(
            f"value of ID {field_id}{where} has {length} characters; allowed: 1-99"
        )
    return f"{field_id}{length:02d}{value}"


def build_emv(fields: Mapping[str, EmvFieldValue]) -> str:
    """Encode ``fields`` (in the given order) as an EMV MPM payload ending in ``6304`` + CRC.

    Template IDs take a mapping sub-ID -> string (or an already-encoded string). A ``"63"``
    entry is ignored and recomputed, so ``build_emv(parse_emv(s).fields) == s`` for payloads
    with an uppercase CRC. The result is parsed back before it is returned: whatever this
    returns passes :func:`parse_emv`, and invalid input raises the same typed errors.
    """
    if not isinstance(fields, Mapping):
        raise EmvFormatError(
            f"fields must be a mapping of ID -> value, got {type(fields).__name__}"
        )
    parts: list[str] = []
    for field_id, value in fields.items():
        if field_id == "63":
            continue
        if isinstance(value, Mapping):
            if field_id not in _TEMPLATE_IDS:
                raise EmvFormatError(f"{_label(field_id)} is not a template; give it a string")
            where = f" in template {field_id}"
            value = "".join(_encode_object(k, v, where) for k, v in value.items())
        parts.append(_encode_object(field_id, value, ""))
    parts.append("6304")
    body = "".join(parts)
    if len(body) + 4 > MAX_PAYLOAD_CHARS:
        raise EmvOversizeError(
            f"payload would be {len(body) + 4} characters; EMV MPM allows at most "
            f"{MAX_PAYLOAD_CHARS}"
        )
    text = body + _crc_hex(body)
    _parse(text, True)
    return text


def emv_to_json(payload: EmvPayload) -> dict[str, Any]:
    """A JSON-ready view: ``{"crc_valid": bool, "fields": {ID: str | {sub-ID: str}}}``."""
    return {
        "crc_valid": payload.crc_valid,
        "fields": {
            k: (dict(v) if isinstance(v, Mapping) else v) for k, v in payload.fields.items()
        },
    }
