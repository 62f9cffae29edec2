"""Property-based tests (hypothesis): arbitrary input only ever raises the typed errors.

Budget: the whole file runs in a few seconds; each test's ``max_examples`` is sized for a
loaded 2-core machine. ``deadline=None`` because such a machine is noisy.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import base45
import pytest
from cryptography.hazmat.primitives import hpke
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from safescan.code import (
    Authorization,
    Certificate,
    DynamicCode,
    Issuer,
    LineItem,
    Merchant,
    Receipt,
    Role,
    StaticCode,
    cbor,
    encode_text,
    envelope,
    issue_certificate,
    open_code,
    seal,
)
from safescan.code.errors import MalformedCode, OversizeInput, SafescanError, UnsafeText
from safescan.code.payment import MAX_DYNAMIC_VALIDITY, MAX_STATIC_VALIDITY
from safescan.code.text import clean_name
from tests.code.conftest import NOW, dynamic_code, make_scheme, static_code

SCHEME = make_scheme()
BASE45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MEDIUM = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEALED = seal(dynamic_code(), SCHEME.issuer, SCHEME.scheme_key.public)
SEALED_TEXT = encode_text(SEALED)


def _open(data: str | bytes, now: int = NOW) -> envelope.OpenedCode:
    return open_code(data, SCHEME.keyring, SCHEME.trust, now=now)


def _refused(data: str | bytes) -> SafescanError:
    """Open ``data``; it must be refused with a typed error (any other exception propagates)."""
    with pytest.raises(SafescanError) as info:
        _open(data)
    event(info.value.type)  # shown by --hypothesis-show-statistics: which checks were reached
    return info.value


# --- (a) open_code on arbitrary input -------------------------------------------------------

_header_like = st.builds(
    lambda kind, kid, rest: bytes([1, kind, kid]) + rest,
    st.sampled_from([1, 1, 2, 2, 0, 3]),
    st.sampled_from([1, 1, 1, 2, 255]),
    st.binary(min_size=40, max_size=300),  # mostly long enough to reach HPKE open
)


@FAST
@given(
    st.one_of(
        st.text(max_size=400),
        st.text(alphabet=BASE45_ALPHABET, max_size=500).map(lambda s: "SS1:" + s),
        st.binary(max_size=400).map(lambda b: "SS1:" + base45.b45encode(b).decode()),
        _header_like.map(lambda b: "SS1:" + base45.b45encode(b).decode()),
        st.text(min_size=1540, max_size=1560).map(lambda s: "SS1:" + s),
    )
)
def test_open_code_arbitrary_text_raises_only_typed_errors(text: str) -> None:
    _refused(text)


@FAST
@given(st.one_of(st.binary(max_size=1100), _header_like))
def test_open_code_arbitrary_bytes_raises_only_typed_errors(data: bytes) -> None:
    _refused(data)


# Any value the strict CBOR decoder could return, nested a little.
_scalars = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.binary(max_size=40),
    st.text(max_size=20),
)


def _nested(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return _scalars
    inner = _nested(depth - 1)
    return st.one_of(
        _scalars,
        st.lists(inner, max_size=9),
        st.dictionaries(st.integers(-5, 30), inner, max_size=4),
    )


_cbor_values = _nested(3)


@MEDIUM
@given(_cbor_values, st.sampled_from([1, 2]), st.booleans(), st.sampled_from([1, 2]))
def test_authentic_arbitrary_contents_raise_only_typed_errors(
    body: object, kind: int, merchant: bool, version: int
) -> None:
    """Contents that pass every cryptographic check (anyone can seal to the public scheme key;
    here even the institution signs) still only ever raise typed errors, in both envelope
    versions' layouts (``[signer, body]`` and ``[signer, *body]``)."""
    signer: object = SCHEME.merchant_issuer.signer_field() if merchant else 1
    key = SCHEME.merchant_key if merchant else SCHEME.institution_key
    flat = [signer, *body] if isinstance(body, list) else [signer, body]
    for signed in (cbor.dumps([signer, body]), cbor.dumps(flat), cbor.dumps(body)):
        header = bytes([version, kind, 1])
        sig = key.sign(envelope.SIG_CONTEXT + header + signed)
        sealed = _SUITE.encrypt(
            sig + signed, SCHEME.scheme_key.public.x25519(), info=envelope.HPKE_INFO + header
        )
        _refused(header + sealed)


@MEDIUM
@given(st.binary(max_size=200))
def test_arbitrary_authentic_plaintext_raises_only_typed_errors(plaintext: bytes) -> None:
    header = bytes([1, 1, 1])
    sealed = _SUITE.encrypt(
        plaintext, SCHEME.scheme_key.public.x25519(), info=envelope.HPKE_INFO + header
    )
    _refused(header + sealed)


def _replace_leaf(value: object, path: list[int], new: object) -> object:
    """``value`` with the element reached by following ``path`` (indices, mod length) replaced."""
    if not path or not isinstance(value, list) or not value:
        return new
    index = path[0] % len(value)
    copy = list(value)
    copy[index] = _replace_leaf(value[index], path[1:], new)
    return copy


_VALID_SIGNED = {  # (kind, envelope version): the signed CBOR value
    (kind, version): cbor.strict_loads(
        envelope.sign_code(code, SCHEME.issuer, 1, version=version)[1][64:]
    )
    for kind, code in ((1, dynamic_code()), (2, static_code()))
    for version in sorted(envelope.VERSIONS)
}


@MEDIUM
@given(
    st.sampled_from([1, 2]),
    st.sampled_from(sorted(envelope.VERSIONS)),
    st.lists(st.integers(0, 40), min_size=1, max_size=4),
    _cbor_values,
)
def test_authentic_near_valid_contents_raise_only_typed_errors(
    kind: int, version: int, path: list[int], new: object
) -> None:
    """One field (at any depth) of an authentic, institution-signed code (in each envelope
    version still read) replaced by an arbitrary value: the strict body parser refuses it with
    a typed error, or accepts a code that is still fully valid."""
    signed = cbor.dumps(_replace_leaf(_VALID_SIGNED[kind, version], path, new))
    header = bytes([version, kind, 1])
    sig = SCHEME.institution_key.sign(envelope.SIG_CONTEXT + header + signed)
    binary = header + _SUITE.encrypt(
        sig + signed, SCHEME.scheme_key.public.x25519(), info=envelope.HPKE_INFO + header
    )
    try:
        opened = _open(binary)
    except SafescanError as exc:
        event(exc.type)
        return
    event("still valid")
    assert opened.code == opened.code.validated()
    code = opened.code
    body = code.to_cbor(version) if isinstance(code, DynamicCode) else code.to_cbor()
    assert envelope.signed_content(1, body, version) == signed


# --- (b) mutations of a valid sealed code ---------------------------------------------------


def test_the_unmutated_code_opens() -> None:
    assert _open(SEALED).code == dynamic_code().validated()
    assert _open(SEALED_TEXT).code == dynamic_code().validated()


@FAST
@given(st.integers(0, len(SEALED) - 1), st.integers(1, 255))
def test_any_single_byte_mutation_refused(position: int, xor: int) -> None:
    mutated = bytearray(SEALED)
    mutated[position] ^= xor
    _refused(bytes(mutated))


@FAST
@given(st.integers(0, len(SEALED) - 1))
def test_any_truncation_refused(length: int) -> None:
    _refused(SEALED[:length])


@FAST
@given(st.binary(min_size=1, max_size=64), st.booleans())
def test_any_extension_refused(extra: bytes, at_end: bool) -> None:
    _refused(SEALED + extra if at_end else extra + SEALED)


@FAST
@given(st.integers(len("SS1:"), len(SEALED_TEXT) - 1), st.sampled_from(BASE45_ALPHABET))
def test_any_single_character_mutation_of_the_text_refused(position: int, char: str) -> None:
    assume(SEALED_TEXT[position] != char)
    _refused(SEALED_TEXT[:position] + char + SEALED_TEXT[position + 1 :])


# --- (c) round trips of generated valid codes -----------------------------------------------

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789&'-"
_NON_ASCII = "éèüöçñßøåÅÉæœłšžαβγδπΩжщяюआकखగ東京ラーメン"
_word = st.text(alphabet=_LETTERS + _NON_ASCII, min_size=1, max_size=10)
_name = st.lists(_word, min_size=1, max_size=4).map(" ".join).filter(lambda s: len(s) <= 64)
_ident = st.from_regex(r"[A-Za-z0-9._:\-]{1,40}", fullmatch=True)
_currency = st.sampled_from([978, 840, 392, 826, 756, 156, 48])
_merchant = st.builds(
    Merchant,
    id=_ident,
    name=_name,
    city=_name,
    country=st.sampled_from(["FR", "DE", "JP", "US", "CN"]),
    mcc=st.integers(0, 9999),
)
_item = st.builds(
    LineItem,
    name=_name,
    quantity=st.integers(1, 9999),
    unit_price=st.integers(1, 3_000_000),  # 32 x 9999 x 3e6 < MAX_AMOUNT
)
# Inside the fixture merchant certificate's validity, so merchant-signed codes open too.
_issued = st.integers(NOW - 80_000, NOW + 300 * 86400)


@st.composite
def _dynamic(draw: st.DrawFn) -> DynamicCode:
    items = tuple(draw(st.lists(_item, min_size=1, max_size=32)))
    issued = draw(_issued)
    return DynamicCode(
        merchant=draw(_merchant),
        order_id=draw(_ident),
        items=items,
        total=sum(i.amount for i in items),
        currency=draw(_currency),
        issued_at=issued,
        expires_at=issued + draw(st.integers(1, MAX_DYNAMIC_VALIDITY)),
        nonce=draw(st.binary(min_size=8, max_size=8)),
    )


@st.composite
def _static(draw: st.DrawFn) -> StaticCode:
    issued = draw(_issued)
    return StaticCode(
        merchant=draw(_merchant),
        currency=draw(st.none() | _currency),
        issued_at=issued,
        expires_at=issued + draw(st.integers(1, MAX_STATIC_VALIDITY)),
    )


def _certified(merchant: Merchant) -> Issuer:
    """The scheme's merchant key, certified (v2) for exactly ``merchant``'s identity."""
    identity = merchant.validated()
    cert = issue_certificate(
        SCHEME.institution_key,
        1,
        serial=1001,
        role=Role.MERCHANT,
        subject=identity.id,
        public_key=SCHEME.merchant_key.public_key,
        not_before=0,
        not_after=2**33,
        merchant=identity,
    )
    return Issuer.merchant(SCHEME.merchant_key, cert)


@MEDIUM
@given(st.one_of(_dynamic(), _static()), st.booleans(), st.booleans())
def test_generated_codes_round_trip(
    code: DynamicCode | StaticCode, by_merchant: bool, as_text: bool
) -> None:
    issuer: Issuer = _certified(code.merchant) if by_merchant else SCHEME.issuer
    _header, plaintext = envelope.sign_code(code, issuer, SCHEME.scheme_key.kid)
    size = envelope.HEADER_BYTES + envelope.ENC_BYTES + len(plaintext) + envelope.TAG_BYTES
    if size > envelope.MAX_BINARY_BYTES:
        event("oversize")
        with pytest.raises(OversizeInput):
            seal(code, issuer, SCHEME.scheme_key.public)
        return
    event("opened")
    binary = seal(code, issuer, SCHEME.scheme_key.public)
    assert len(binary) == size
    opened = _open(encode_text(binary) if as_text else binary, now=code.issued_at)
    assert opened.code == code.validated()
    assert opened.header.kind == code.kind
    assert opened.issuer == ("merchant" if by_merchant else "institution")
    assert opened.digest == envelope.code_digest(binary)


@MEDIUM
@given(_merchant, _merchant)
def test_a_certificate_signs_only_its_own_identity(certified: Merchant, shown: Merchant) -> None:
    """Issue #13.1 as a property: for any two identities, a merchant certified for one cannot
    sign, nor (signing the raw bytes itself) make an opener show, the other."""
    issuer = _certified(certified)
    code = dynamic_code(merchant=shown)
    if shown.validated() == certified.validated():
        seal(code, issuer, SCHEME.scheme_key.public)
        return
    with pytest.raises(SafescanError) as info:
        seal(code, issuer, SCHEME.scheme_key.public)
    assert info.value.code == "signature_invalid"
    for version in sorted(envelope.VERSIONS):
        # the other identity inline, signed by the merchant key
        body = code.validated().to_cbor(version)
        header = bytes([version, 1, SCHEME.scheme_key.kid])
        signed = envelope.signed_content(issuer.signer_field(), body, version)
        sig = SCHEME.merchant_key.sign(envelope.SIG_CONTEXT + header + signed)
        sealed = _SUITE.encrypt(
            sig + signed, SCHEME.scheme_key.public.x25519(), info=envelope.HPKE_INFO + header
        )
        with pytest.raises(MalformedCode, match="certificate"):
            _open(header + sealed, now=NOW)


def test_largest_valid_order_is_refused_as_oversize() -> None:
    """The body limits (32 items of 64-char names) allow orders that do not fit the envelope:
    seal refuses them with a typed error instead of making an unreadable code."""
    items = tuple(LineItem(f"{i:02d}" + "é" * 62, 9999, 3_000_000) for i in range(32))
    code = dynamic_code(items=items, total=sum(i.amount for i in items))
    assert code.validated() is not None
    with pytest.raises(OversizeInput):
        seal(code, SCHEME.issuer, SCHEME.scheme_key.public)


# --- (d) strict CBOR ------------------------------------------------------------------------


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _strict(data: bytes) -> object:
    try:
        value = cbor.strict_loads(data)
    except SafescanError:
        event("refused")
        return None
    event("accepted")
    assert cbor.dumps(value) == data  # accepted => exactly the deterministic encoding
    return value


@FAST
@given(st.binary(max_size=200))
def test_strict_loads_arbitrary_bytes(data: bytes) -> None:
    _strict(data)


@FAST
@given(_cbor_values, st.booleans())
def test_strict_loads_on_encoded_values(value: object, canonical: bool) -> None:
    """Valid CBOR, canonical or not: accepted only in its deterministic form."""
    import cbor2

    data = cbor2.dumps(value, canonical=canonical)
    _strict(data)
    _strict(data + b"\x00")
    if canonical:
        assert cbor.strict_loads(data) == value  # every allowed value round-trips
        with pytest.raises(SafescanError):
            cbor.strict_loads(data + b"\x00")


@FAST
@given(_cbor_values)
def test_strict_loads_never_accepts_a_modified_encoding(value: object) -> None:
    data = cbor.dumps(value)
    for variant in (data[:-1], data + data[:1], b"\xc1" + data):
        assume(variant)
        accepted = _strict(variant)
        if accepted is not None:
            assert cbor.dumps(accepted) == variant


def test_strict_loads_depth_limit() -> None:
    value: object = 1
    for _ in range(cbor.MAX_DEPTH + 2):
        value = [value]
    with pytest.raises(SafescanError):
        cbor.strict_loads(cbor.dumps(value))
    assert _depth(value) == cbor.MAX_DEPTH + 2


# --- (e) clean_name -------------------------------------------------------------------------

_FORBIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
_tricky = st.sampled_from(
    ["\u202e", "\u200b", "\u200d", "\ufeff", "\u2066", "\x07", "\n", "\u2028", "\u0301", "  "]
)


@FAST
@given(
    st.one_of(
        st.text(max_size=80),
        st.lists(st.one_of(_word, _tricky, st.just(" ")), max_size=12).map("".join),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
    )
)
def test_clean_name_is_safe_or_refused(text: str) -> None:
    try:
        cleaned = clean_name(text, field="name")
    except UnsafeText:
        return
    assert unicodedata.is_normalized("NFC", cleaned)
    assert cleaned == unicodedata.normalize("NFC", text)
    assert 0 < len(cleaned) <= 64
    assert not any(unicodedata.category(ch) in _FORBIDDEN for ch in cleaned)
    assert cleaned == cleaned.strip() and "  " not in cleaned
    assert clean_name(cleaned, field="name") == cleaned  # idempotent


# --- (f) other parsers on arbitrary bytes ---------------------------------------------------

_arrays = st.builds(
    lambda head, rest: cbor.dumps([head, *rest]),
    st.sampled_from([1, 1, 1, 2]),
    st.lists(_scalars, min_size=7, max_size=11),
)


@FAST
@given(st.one_of(st.binary(max_size=600), _arrays))
def test_certificate_parser_raises_only_typed_errors(data: bytes) -> None:
    try:
        cert = Certificate.from_bytes(data)
    except SafescanError:
        return
    assert cert.to_bytes() == data


@FAST
@given(st.one_of(st.binary(max_size=1100), _arrays))
def test_authorization_parser_raises_only_typed_errors(data: bytes) -> None:
    try:
        auth = Authorization.from_bytes(data)
    except SafescanError:
        return
    assert auth.to_bytes() == data


@FAST
@given(st.one_of(st.binary(max_size=1100), _arrays))
def test_receipt_parser_raises_only_typed_errors(data: bytes) -> None:
    try:
        receipt = Receipt.from_bytes(data)
    except SafescanError:
        return
    assert receipt.to_bytes() == data


def test_semantic_tags_are_refused_without_running_their_constructors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """cbor2 would compile tag 35 as a regular expression; strict_loads must refuse it first."""
    import re

    compiled: list[object] = []
    real_compile = re.compile
    errors: list[str] = []
    for hex_ in ("d82362612b", "c11a00000000", "d9d9f701", "c249010000000000000000"):
        monkeypatch.setattr(re, "compile", lambda *a, **k: compiled.append(a) or real_compile(*a))
        try:
            cbor.strict_loads(bytes.fromhex(hex_))
        except MalformedCode as exc:
            errors.append(exc.message)
        finally:
            monkeypatch.setattr(re, "compile", real_compile)
    assert compiled == []
    assert errors == ["CBOR tags are not allowed"] * 4
