"""The payment path's faster parsing decides exactly as before (issue 20, part B).

Each shortcut is compared with the plain form it replaces, on thousands of inputs built to hit
every check, alone and several at once (so the first error reported is the same too):

* ``DynamicCode.from_cbor`` / ``StaticCode.from_cbor`` / ``Merchant.from_cbor`` /
  ``LineItem.from_cbor`` (now each check once, objects built once) against the reference
  below: the old way, build the object from the fields and run ``validated(clean=False)``;
* ``cbor.strict_loads``'s type walk against the old ``isinstance`` walk;
* ``forbidden_char`` and ``compatibility_letters`` (an ASCII shortcut) against their loops;
* ``Receipt.signed_bytes`` against ``signed().to_bytes()`` (its array encoded once, the
  signature appended: ``with_signature``);
* ``Authorization.from_bytes_signed``'s signed part (cut from the strictly decoded input)
  against ``tbs()`` (encoded again), and the forgeries it must still refuse;
* ``check_identifier`` and ``check_stored_name`` (an ASCII shortcut each) against the regular
  expression and the NFC/``clean_name`` path;
* ``VerifyKey.verify`` (the decoded key kept) still refuses what it refused.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import random
import re
import string
import unicodedata
from typing import Any

import cbor2
import pytest

from safescan.code import cbor, lookalike, text
from safescan.code.authorization import Authorization, Receipt, with_signature
from safescan.code.errors import SafescanError, SignatureInvalid
from safescan.code.keys import SigningKey
from safescan.code.payment import (
    MAX_ITEMS,
    MAX_NAME_CHARS,
    DynamicCode,
    LineItem,
    Merchant,
    StaticCode,
    check_identifier,
    check_time,
)
from safescan.code.text import check_stored_name
from tests.code.conftest import NOW, dynamic_code

# --- the reference: how the bodies were parsed before -------------------------------------


def _ref_merchant(value: object) -> Merchant:
    from safescan.code.errors import MalformedCode

    if not isinstance(value, list) or len(value) != 5:
        raise MalformedCode("merchant must be a 5-element array")
    mid, name, city, country, mcc = value
    for v, n in ((name, "merchant name"), (city, "merchant city")):
        if not isinstance(v, str):
            raise MalformedCode(f"{n} must be text")
        check_stored_name(v, field=n, max_chars=MAX_NAME_CHARS)
    if not isinstance(country, str) or not isinstance(mcc, int):
        raise MalformedCode("merchant country / category code have the wrong type")
    return Merchant(mid, name, city, country, mcc).validated(clean=False)


def _ref_item(value: object) -> LineItem:
    from safescan.code.errors import MalformedCode

    if not isinstance(value, list) or len(value) != 3:
        raise MalformedCode("a line item must be a 3-element array")
    name, qty, price = value
    if not isinstance(name, str):
        raise MalformedCode("item name must be text")
    check_stored_name(name, field="item name", max_chars=MAX_NAME_CHARS)
    return LineItem(name, qty, price).validated(clean=False)


def _ref_dynamic(value: object, version: int) -> DynamicCode:
    from safescan.code.errors import MalformedCode

    fields = 8 if version == 1 else 7
    if not isinstance(value, list) or len(value) != fields:
        raise MalformedCode(f"a dynamic code body must have exactly {fields} fields")
    if version == 1:
        merchant, order_id, items, total, cur, issued, lifetime, nonce = value
        if not isinstance(items, list):
            raise MalformedCode("line items must be an array")
        lines = tuple(_ref_item(i) for i in items)
    else:
        merchant, order_id, items, cur, issued, lifetime, nonce = value
        if not isinstance(items, list) or not items or len(items) % 3:
            raise MalformedCode(
                "line items must be a flat array of (name, quantity, price) triples"
            )
        if len(items) > 3 * MAX_ITEMS:
            raise MalformedCode(f"an order has 1-{MAX_ITEMS} line items")
        lines = tuple(_ref_item(items[i : i + 3]) for i in range(0, len(items), 3))
        total = sum(i.amount for i in lines)
    issued = check_time(issued, "issue time")
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime <= 0:
        raise MalformedCode("the code's lifetime must be a positive number of seconds")
    code = DynamicCode(
        merchant=_ref_merchant(merchant),
        order_id=order_id,
        items=lines,
        total=total,
        currency=cur,
        issued_at=issued,
        expires_at=issued + lifetime,
        nonce=nonce,
    )
    return code.validated(clean=False)


def _ref_static(value: object) -> StaticCode:
    from safescan.code.errors import MalformedCode

    if not isinstance(value, list) or len(value) not in (3, 4):
        raise MalformedCode("a static code body must be an array of 3 or 4 fields")
    issued, lifetime = check_time(value[1], "issue time"), value[2]
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime <= 0:
        raise MalformedCode("the code's lifetime must be a positive number of seconds")
    code = StaticCode(
        merchant=_ref_merchant(value[0]),
        currency=value[3] if len(value) == 4 else None,
        issued_at=issued,
        expires_at=issued + lifetime,
    )
    return code.validated(clean=False)


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except SafescanError as exc:
        return type(exc).__name__, exc.message


# --- inputs that hit every check ----------------------------------------------------------

_BAD_VALUES: list[object] = [
    None, True, False, 0, -1, 1, 2, 5814, 10000, 2**32, 2**32 - 300, 2**40, 10**12, 10**12 - 1,
    "", "x", "FR", "fr", "F", "EUR", "978", "m_7Qx2", "bad id!", "a" * 41, "a" * 65, "a  b",
    " a", "a ", "Caf\u0065\u0301", "Pаypal", "𝐏ay", "ｐay", "a\u202eb", "a\tb", "a\x7fb",
    "Ⅿart", "東京", "Сахар", b"", b"12345678", b"1234567", [], [1], [1, 2, 3], ["a", 1, 1],
    ["a", 1], {}, 1.5, 978, 999, 840, 36000, 7 * 24 * 3600 + 1, 300, 0x10000,
]  # fmt: skip


def _valid_body(version: int, rng: random.Random) -> list[Any]:
    items = [
        LineItem(rng.choice(["Coffee", "Tea", "Croissant", "Jus d'orange"]), rng.randrange(1, 4),
                 rng.randrange(1, 900))
        for _ in range(rng.randrange(1, 4))
    ]  # fmt: skip
    code = dynamic_code(items=tuple(items), total=sum(i.amount for i in items))
    return code.to_cbor(version)


def _paths(value: Any, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    out = [prefix]
    if isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


def _set(value: Any, path: tuple[int, ...], new: object) -> Any:
    if not path:
        return new
    if not isinstance(value, list):
        raise TypeError("not an array")
    value[path[0]] = _set(value[path[0]], path[1:], new)
    return value


def _mutants(body: list[Any], rng: random.Random, n: int) -> list[Any]:
    out: list[Any] = [copy.deepcopy(body)]
    paths = _paths(body)
    for _ in range(n):
        mutant = copy.deepcopy(body)
        for _ in range(rng.choice([1, 1, 2, 3])):
            live = _paths(mutant)
            path = rng.choice(live if rng.random() < 0.8 else paths)
            try:
                mutant = _set(mutant, path, copy.deepcopy(rng.choice(_BAD_VALUES)))
            except (IndexError, KeyError, TypeError):
                continue
        if rng.random() < 0.1 and isinstance(mutant, list):  # a field more or fewer
            mutant = [*mutant, 0] if rng.random() < 0.5 else mutant[:-1]
        out.append(mutant)
    return out


@pytest.mark.parametrize("version", [1, 2])
def test_dynamic_bodies_are_decided_as_before(version: int) -> None:
    rng = random.Random(version * 7919)
    ok = refused = 0
    for _ in range(12):
        for body in _mutants(_valid_body(version, rng), rng, 400):
            want = _outcome(_ref_dynamic, copy.deepcopy(body), version)
            got = _outcome(DynamicCode.from_cbor, copy.deepcopy(body), version)
            assert got == want, body
            ok, refused = (ok + 1, refused) if want[0] == "ok" else (ok, refused + 1)
    assert ok >= 12 and refused > 3000  # both sides exercised


def test_static_bodies_are_decided_as_before() -> None:
    rng = random.Random(3)
    merchant = ["m_7Qx2", "Café Lumière", "Paris", "FR", 5814]
    bases = [[merchant, NOW, 3600], [merchant, NOW, 3600, 978], [merchant, NOW, 10**8, 36]]
    for base in bases:
        for body in _mutants(base, rng, 1500):
            want = _outcome(_ref_static, copy.deepcopy(body))
            assert _outcome(StaticCode.from_cbor, copy.deepcopy(body)) == want, body


def test_merchants_and_items_are_decided_as_before() -> None:
    rng = random.Random(11)
    for body in _mutants(["m_7Qx2", "Café Lumière", "Paris", "FR", 5814], rng, 3000):
        assert _outcome(Merchant.from_cbor, copy.deepcopy(body)) == _outcome(_ref_merchant, body)
    for body in _mutants(["Flat white", 2, 350], rng, 3000):
        assert _outcome(LineItem.from_cbor, copy.deepcopy(body)) == _outcome(_ref_item, body)


# --- the strict decoder's type walk -------------------------------------------------------


def _ref_check_types(value: Any, depth: int, error: type[SafescanError]) -> None:
    if depth > cbor.MAX_DEPTH:
        raise error("data is nested too deeply")
    if isinstance(value, bool) or value is None:
        raise error("unexpected boolean or null value")
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise error("integer out of range")
        return
    if isinstance(value, (bytes, str)):
        return
    if isinstance(value, list):
        for item in value:
            _ref_check_types(item, depth + 1, error)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, int) or isinstance(key, bool):
                raise error("map keys must be integers")
            _ref_check_types(item, depth + 1, error)
        return
    raise error(f"unexpected CBOR value of type {type(value).__name__}")


def _random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.random()
    if kind < 0.25 and depth < 11:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if kind < 0.3 and depth < 11:
        keys = [rng.choice([1, 2, 3, -1, 24, 300, "k", b"k", True]) for _ in range(3)]
        return {k: _random_value(rng, depth + 1) for k in keys}
    return rng.choice(
        [0, 1, -1, 23, 24, 255, 256, 2**63 - 1, -(2**63), 2**64 - 1, -(2**64), "", "é", b"",
         b"\x00", 1.5, 0.0, None, True, False, cbor2.undefined, cbor2.CBORSimpleValue(99)]
    )  # fmt: skip


def test_strict_decoding_decides_as_before() -> None:
    from safescan.code.errors import MalformedCode

    rng = random.Random(8949)
    seen = set()
    for _ in range(6000):
        value = _random_value(rng, 0)
        try:
            data = cbor2.dumps(value, canonical=True)
        except (cbor2.CBOREncodeError, TypeError, ValueError):
            continue
        decoded = cbor2.loads(data)
        want = _outcome(_ref_check_types, decoded, 0, MalformedCode)
        got = _outcome(cbor._check_types, decoded, 0, MalformedCode)
        assert got == want, value
        seen.add(want[0])
        if want[0] == "ok":
            assert cbor.strict_loads(data) == decoded
    assert seen == {"ok", "MalformedCode"}


@pytest.mark.parametrize("depth", range(6, 12))
def test_nesting_at_the_depth_limit_decides_as_before(depth: int) -> None:
    from safescan.code.errors import MalformedCode

    for leaf in (1, "a", b"a", [], [1, "a"], {1: 2}, 1.5, None, True):
        value: Any = leaf
        for _ in range(depth):
            value = [value, 7]
        want = _outcome(_ref_check_types, value, 0, MalformedCode)
        assert _outcome(cbor._check_types, value, 0, MalformedCode) == want


# --- names: the ASCII shortcut ------------------------------------------------------------


def _ref_forbidden(value: str) -> str | None:
    for ch in value:
        if unicodedata.category(ch) in text._FORBIDDEN_CATEGORIES or ord(ch) in text._INVISIBLE:
            return f"a forbidden character ({text._describe(ch)})"
        if ch.isspace() and ch != " ":
            return f"a non-standard space ({text._describe(ch)})"
    return None


def test_names_are_judged_as_before() -> None:
    rng = random.Random(64)
    alphabet = [chr(c) for c in range(128)] + list("éßΑаＰ𝐏\u200b\u00a0\u202e\u3000ℊ東")
    for _ in range(20000):
        value = "".join(rng.choices(alphabet if rng.random() < 0.5 else string.printable, k=8))
        assert text.forbidden_char(value) == _ref_forbidden(value), repr(value)
        ref_letters = [
            ch for ch in value if unicodedata.normalize("NFKC", ch) != ch
        ]  # what the loop may report: NFKC changes them
        if not ref_letters:
            assert lookalike.compatibility_letters(value) == []
    for c in range(128):  # every ASCII character alone
        assert text.forbidden_char(chr(c)) == _ref_forbidden(chr(c))
        assert lookalike.compatibility_letters(chr(c)) == []


# --- the receipt, signed and encoded once -------------------------------------------------


def test_receipt_signed_bytes_are_the_signed_receipts_bytes() -> None:
    rng = random.Random(9)
    key = SigningKey.from_seed(bytes(range(32)))
    for i in range(300):
        receipt = Receipt(
            payment_id="pay_" + "".join(rng.choices(string.ascii_uppercase, k=16)),
            order_id=rng.choice(["", "o_1", "S" + "A" * 19]),
            merchant_id="m_" + str(i),
            amount=rng.randrange(1, 10**12),
            currency=rng.choice([978, 840, 36]),
            payer_pseudonym="p_" + rng.randbytes(12).hex(),
            paid_at=rng.randrange(0, 2**32),
            code_digest=rng.randbytes(32),
            issuer_kid=rng.randrange(0, 0x10000),
        )
        data = receipt.signed_bytes(key)
        assert data == receipt.signed(key).to_bytes()
        assert Receipt.from_bytes(data) == receipt.signed(key)


@pytest.mark.parametrize(
    "change",
    [
        {"payment_id": "bad id!"},
        {"amount": 0},
        {"currency": 1},
        {"code_digest": b"short"},
        {"issuer_kid": 0x10000},
        {"paid_at": -1},
    ],
)
def test_receipt_signed_bytes_refuses_as_signed_does(change: dict[str, object]) -> None:
    key = SigningKey.from_seed(bytes(32))
    fields: dict[str, Any] = dict(
        payment_id="pay_A", order_id="o_1", merchant_id="m_1", amount=5, currency=978,
        payer_pseudonym="p_ab", paid_at=NOW, code_digest=bytes(32), issuer_kid=1,
    )  # fmt: skip
    receipt = Receipt(**(fields | change))
    want = _outcome(lambda: receipt.signed(key))
    assert want[0] != "ok"
    assert _outcome(lambda: receipt.signed_bytes(key)) == want


# --- a verification key decoded once --------------------------------------------------------


def test_a_kept_decoded_key_still_refuses_forgeries() -> None:
    key = SigningKey.from_seed(bytes([5]) * 32)
    other = SigningKey.from_seed(bytes([6]) * 32)
    public = key.public_key
    message = b"SS1-AUTH" + bytes(100)
    signature = key.sign(message)
    for _ in range(3):  # the first call decodes the key, the next ones reuse it
        public.verify(signature, message)
        with pytest.raises(SignatureInvalid):
            public.verify(other.sign(message), message)
        with pytest.raises(SignatureInvalid):
            public.verify(signature, message + b"x")
        with pytest.raises(SignatureInvalid):
            public.verify(bytes([signature[0] ^ 1]) + signature[1:], message)
    assert public == type(public)(public.raw)  # equality and hashing ignore the kept key
    assert hash(public) == hash(type(public)(public.raw))
    with pytest.raises(SignatureInvalid):
        other.public_key.verify(signature, message)


# --- the receipt's array encoded once, the authorization's signed part not encoded again ----


def test_with_signature_is_the_encoding_of_the_longer_array() -> None:
    rng = random.Random(11)
    pool: list[Any] = ["", "a" * 23, "b" * 24, "é" * 12, 0, 23, 24, 255, 256, 2**32, -1, -25,
                       b"", bytes(24), bytes(300), [1, [2]], ["x"] * 30]  # fmt: skip
    for n in range(0, 23):
        for _ in range(20):
            values = [rng.choice(pool) for _ in range(n)]
            signature = rng.randbytes(64)
            assert with_signature(cbor.dumps(values), signature) == cbor.dumps([*values, signature])
    with pytest.raises(ValueError):
        with_signature(cbor.dumps([0] * 23), bytes(64))  # 24 items: a longer head
    with pytest.raises(ValueError):
        with_signature(cbor.dumps({1: 2}), bytes(64))  # not an array
    with pytest.raises(ValueError):
        with_signature(cbor.dumps([1]), bytes(63))


def _random_authorization(rng: random.Random) -> Authorization:
    return Authorization(
        code_digest=rng.randbytes(32),
        merchant_id=rng.choice(["m", "M8KJ3", "m_" + "x" * 21, "m." * 20]),
        order_id=rng.choice(["", "o_1", "S" + "A" * 19, "o" * 40]),
        amount=rng.choice([1, 23, 24, 255, 256, 65535, 65536, 2**32, 10**12 - 1]),
        currency=rng.choice([978, 840, 36, 392]),
        counter=rng.choice([0, 1, 23, 24, 2**16, 2**32, 2**63 - 1]),
        carrier_serial=rng.choice([0, 1, 300, 2**40]),
        created_at=rng.choice([0, NOW, 2**32 - 1]),
    )


def test_an_authorizations_signed_part_is_its_tbs() -> None:
    rng = random.Random(12)
    key = SigningKey.from_seed(bytes([7]) * 32)
    for _ in range(400):
        auth = _random_authorization(rng).signed(key)
        parsed, signed = Authorization.from_bytes_signed(auth.to_bytes())
        assert parsed == Authorization.from_bytes(auth.to_bytes()) == auth
        assert signed == auth.tbs()
        parsed.verify(key.public_key, signed)


def test_the_signed_part_still_refuses_forgeries() -> None:
    rng = random.Random(13)
    key = SigningKey.from_seed(bytes([8]) * 32)
    other = SigningKey.from_seed(bytes([9]) * 32)
    auth = _random_authorization(rng).signed(key)
    data = auth.to_bytes()
    for position in range(len(data)):  # every flipped byte: refused parsing or signature
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        with pytest.raises(SafescanError):
            parsed, signed = Authorization.from_bytes_signed(bytes(flipped))
            parsed.verify(key.public_key, signed)
    # another amount, re-encoded canonically with the original signature: not the signed bytes
    changed = dataclasses.replace(auth, amount=auth.amount + 1)
    parsed, signed = Authorization.from_bytes_signed(changed.to_bytes())
    with pytest.raises(SignatureInvalid):
        parsed.verify(key.public_key, signed)
    parsed, signed = Authorization.from_bytes_signed(data)
    with pytest.raises(SignatureInvalid):  # another carrier's key
        parsed.verify(other.public_key, signed)
    # trailing bytes, or a non-canonical length: refused by the strict decoder before any cut
    for bad in (data + b"\x00", bytes([0x9A, 0, 0, 0, 10]) + data[1:]):
        with pytest.raises(SafescanError):
            Authorization.from_bytes_signed(bad)


# --- identifiers and stored names: an ASCII shortcut each -----------------------------------

_ID = re.compile(r"[A-Za-z0-9._:\-]+")


def _ref_identifier(value: object, name: str) -> str:
    from safescan.code.errors import MalformedCode

    if not isinstance(value, str) or not 0 < len(value) <= 40:
        raise MalformedCode(f"{name} must be 1-40 characters")
    if not _ID.fullmatch(value):
        raise MalformedCode(f"{name} may only use letters, digits and . _ : -")
    return value


def _ref_stored_name(value: str, field: str, max_chars: int) -> str:
    cleaned = text.clean_name(value, field=field, max_chars=max_chars)
    if cleaned != value:
        raise text.UnsafeText(f"{field} is not in Unicode normal form C")
    return cleaned


def test_identifiers_are_judged_as_before() -> None:
    rng = random.Random(14)
    odd = list("._:-é٣ⅷＡ𝟘ǅ ſK\u0130\u212a\n\x00")  # non-ASCII letters and digits: isalnum()
    alphabet = [chr(c) for c in range(128)] + odd
    values: list[object] = ["", "a" * 40, "a" * 41, "A1", None, 5, b"ab", "a\n", "٣٣", "ＡＢ"]
    for _ in range(20000):
        pool = alphabet if rng.random() < 0.5 else string.ascii_letters + string.digits
        values.append("".join(rng.choices(pool, k=rng.choice([1, 2, 8, 40, 41]))))
    for value in values:
        assert _outcome(check_identifier, value, "order id") == _outcome(
            _ref_identifier, value, "order id"
        ), repr(value)


def test_stored_names_are_judged_as_before() -> None:
    rng = random.Random(15)
    alphabet = [chr(c) for c in range(128)] + list("éßΑаＰ\u0301\u200b\u00a0")
    values = ["", " ", "a", " a", "a ", "a  b", "a b", "x" * 64, "x" * 65, "\x7f", "a\tb"]
    for _ in range(20000):
        pool = alphabet if rng.random() < 0.3 else string.printable
        values.append("".join(rng.choices(pool, k=rng.choice([1, 3, 8, 64, 65]))))
    for value in values:
        for limit in (3, 64):
            fast = functools.partial(check_stored_name, field="item name", max_chars=limit)
            assert _outcome(fast, value) == _outcome(_ref_stored_name, value, "item name", limit), (
                repr(value)
            )
