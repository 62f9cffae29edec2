"""The sealed payment code: round trips and every rejection, each by its own test."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hpke

from safescan.code import (
    DynamicCode,
    Issuer,
    LineItem,
    Merchant,
    Role,
    SchemeKey,
    SchemeKeyring,
    SigningKey,
    cbor,
    decode_text,
    encode_text,
    envelope,
    header,
    issue_certificate,
    open_code,
    read_header,
    seal,
)
from safescan.code.errors import (
    CertificateError,
    CertificateExpired,
    CertificateRevoked,
    CodeExpired,
    CodeNotYetValid,
    DecryptionFailed,
    InvalidAmount,
    KeyRetired,
    MalformedCode,
    OversizeInput,
    SignatureInvalid,
    TotalMismatch,
    UnknownCurrency,
    UnknownKeyId,
    UnsafeText,
    UnsupportedVersion,
)
from tests.code.conftest import ITEMS, MERCHANT, NOW, Scheme, dynamic_code, static_code

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


def forge(
    scheme: Scheme,
    signed: bytes,
    *,
    kind: int = 1,
    version: int = envelope.VERSION,
    key: SigningKey | None = None,
    scheme_key: SchemeKey | None = None,
) -> bytes:
    """Sign arbitrary ``signed`` bytes with a real key and seal them: tests the strict parser
    against content that passes every cryptographic check."""
    sk = scheme_key or scheme.scheme_key
    header = bytes([version, kind, sk.kid])
    sig = (key or scheme.institution_key).sign(envelope.SIG_CONTEXT + header + signed)
    sealed = _SUITE.encrypt(sig + signed, sk.public.x25519(), info=envelope.HPKE_INFO + header)
    return header + sealed


def open_(scheme: Scheme, data: str | bytes, now: int = NOW) -> object:
    return open_code(data, scheme.keyring, scheme.trust, now=now)


#: The dynamic body's fields, by position, in each envelope version (docs/protocol.md 1.4).
FIELDS = {
    2: ["merchant", "order_id", "items", "currency", "issued_at", "lifetime", "nonce"],
    1: ["merchant", "order_id", "items", "total", "currency", "issued_at", "lifetime", "nonce"],
}


@pytest.fixture(params=[2, 1], ids=["v2", "v1"])
def version(request: pytest.FixtureRequest) -> int:
    """Both envelope versions: 2 is written, 1 is still read; the strict rules hold for both."""
    return int(request.param)


def _parts(scheme: Scheme, version: int) -> tuple[object, list[object]]:
    """The authentic ``(signer, body fields)`` of the typical dynamic code."""
    _, plaintext = envelope.sign_code(dynamic_code(), scheme.issuer, 1, version=version)
    return envelope.split_signed(plaintext[64:], version)


def _reforge(scheme: Scheme, signer: object, body: list[object], version: int) -> bytes:
    """``body`` (edited) re-framed for ``version``, signed with the real key and sealed."""
    signed = envelope.signed_content(signer, body, version)  # type: ignore[arg-type]
    return forge(scheme, signed, version=version)


# --- round trips ---------------------------------------------------------------------------


def test_dynamic_round_trip_text(scheme: Scheme) -> None:
    binary = seal(dynamic_code(), scheme.issuer, scheme.scheme_key.public)
    text = encode_text(binary)
    assert text.startswith("SS1:")
    assert set(text) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
    opened = open_code(text, scheme.keyring, scheme.trust, now=NOW)
    assert opened.code == dynamic_code().validated()
    assert opened.issuer == "institution" and opened.issuer_kid == 1
    assert opened.warnings == ()
    assert len(opened.digest) == 32


def test_static_round_trip_with_and_without_currency(scheme: Scheme) -> None:
    for cur in (978, None):
        binary = seal(static_code(currency=cur), scheme.issuer, scheme.scheme_key.public)
        opened = open_code(binary, scheme.keyring, scheme.trust, now=NOW + 1000)
        assert opened.code == static_code(currency=cur)
        assert read_header(binary).kind == 2


def test_merchant_signed_round_trip(scheme: Scheme) -> None:
    binary = seal(dynamic_code(), scheme.merchant_issuer, scheme.scheme_key.public)
    opened = open_code(binary, scheme.keyring, scheme.trust, now=NOW)
    assert opened.issuer == "merchant"
    assert opened.certificate is not None and opened.certificate.serial == 1001


def test_each_seal_is_fresh_ciphertext(scheme: Scheme) -> None:
    a = seal(dynamic_code(), scheme.issuer, scheme.scheme_key.public)
    b = seal(dynamic_code(), scheme.issuer, scheme.scheme_key.public)
    assert a != b and a[:3] == b[:3]


def test_header_reveals_only_kind_and_key(scheme: Scheme) -> None:
    text = encode_text(seal(dynamic_code(), scheme.issuer, scheme.scheme_key.public))
    header = read_header(text)
    assert (header.version, int(header.kind), header.kid) == (2, 1, 1)
    raw = decode_text(text)
    for secret in (b"Lumi", b"Croissant", b"m_7Qx2", b"o_2026"):
        assert secret not in raw


# --- crypto rejections ---------------------------------------------------------------------


def test_sticker_swap_other_issuer_key_refused(scheme: Scheme) -> None:
    fraud = Issuer.institution(SigningKey.generate(), 1)  # well formed, wrong issuer key
    binary = seal(dynamic_code(), fraud, scheme.scheme_key.public)
    with pytest.raises(SignatureInvalid):
        open_(scheme, binary)


def test_sealed_to_another_scheme_key_refused(scheme: Scheme) -> None:
    other = SchemeKey.generate(1)  # same key id, different key
    binary = seal(dynamic_code(), scheme.issuer, other.public)
    with pytest.raises(DecryptionFailed):
        open_(scheme, binary)


@pytest.mark.parametrize("position", [3, 20, 40, 100, -1])
def test_any_flipped_byte_refused(scheme: Scheme, position: int) -> None:
    binary = bytearray(seal(dynamic_code(), scheme.issuer, scheme.scheme_key.public))
    binary[position] ^= 0x01
    with pytest.raises(DecryptionFailed):
        open_(scheme, bytes(binary))


def test_header_kind_swap_refused(scheme: Scheme) -> None:
    binary = bytearray(seal(dynamic_code(), scheme.issuer, scheme.scheme_key.public))
    binary[1] = 2  # claim it is a static code: the header is bound into HPKE
    with pytest.raises(DecryptionFailed):
        open_(scheme, bytes(binary))


def test_reencrypted_with_forged_signature_refused(scheme: Scheme) -> None:
    _header, plaintext = envelope.sign_code(dynamic_code(), scheme.issuer, 1)
    signed = plaintext[64:].replace(b"Croissant", b"Croissanz")
    binary = forge(scheme, signed, key=SigningKey.generate())
    with pytest.raises(SignatureInvalid):
        open_(scheme, binary)


@pytest.mark.parametrize(
    ("old", "new"),
    [(350, 351), (180, 18), (420, 4200), (2, 3), (1300, 1301)],
    ids=["unit price", "unit price 2", "unit price 3", "quantity", "total (v1)"],
)
def test_altered_amount_with_original_signature_refused(
    scheme: Scheme, version: int, old: int, new: int
) -> None:
    header, plaintext = envelope.sign_code(dynamic_code(), scheme.issuer, 1, version=version)
    sig, signed = plaintext[:64], plaintext[64:]
    if old == 1300 and version != 1:
        pytest.skip("version 2 carries no total: the items' sum is the amount")
    altered = signed.replace(cbor.dumps(old), cbor.dumps(new), 1)
    assert altered != signed
    sealed = _SUITE.encrypt(
        sig + altered, scheme.scheme_key.public.x25519(), info=envelope.HPKE_INFO + header
    )
    with pytest.raises(SignatureInvalid):
        open_(scheme, header + sealed)


@pytest.mark.parametrize("claimed", [0, 3, 0x21, 255])
def test_unsupported_version_refused(scheme: Scheme, claimed: int) -> None:
    binary = bytearray(seal(dynamic_code(), scheme.issuer, scheme.scheme_key.public))
    binary[0] = claimed
    with pytest.raises(UnsupportedVersion):
        open_(scheme, bytes(binary))


def test_sealing_an_unknown_version_is_refused(scheme: Scheme) -> None:
    for version in (0, 3):
        with pytest.raises(UnsupportedVersion):
            seal(dynamic_code(), scheme.issuer, scheme.scheme_key.public, version=version)


@pytest.mark.parametrize("code", [dynamic_code(), static_code()], ids=["dynamic", "static"])
def test_version_1_codes_still_open_to_the_same_contents(scheme: Scheme, code: object) -> None:
    opened = {}
    for version in (1, 2):
        binary = seal(code, scheme.issuer, scheme.scheme_key.public, version=version)  # type: ignore[arg-type]
        result = open_code(binary, scheme.keyring, scheme.trust, now=NOW)
        assert result.header.version == version
        opened[version] = result.code
    assert opened[1] == opened[2] == code.validated()  # type: ignore[attr-defined]


@pytest.mark.parametrize("relabel", [(1, 2), (2, 1)], ids=["v1 as v2", "v2 as v1"])
def test_a_code_cannot_be_relabelled_as_the_other_version(
    scheme: Scheme, relabel: tuple[int, int]
) -> None:
    made, claimed = relabel
    binary = bytearray(seal(dynamic_code(), scheme.issuer, scheme.scheme_key.public, version=made))
    binary[0] = claimed  # the version byte is in the HPKE info: the keys differ
    with pytest.raises(DecryptionFailed):
        open_(scheme, bytes(binary))


@pytest.mark.parametrize("relabel", [(1, 2), (2, 1)], ids=["v1 as v2", "v2 as v1"])
def test_authentic_contents_under_the_other_version_refused(
    scheme: Scheme, relabel: tuple[int, int]
) -> None:
    # one layout's signed bytes, genuinely signed and sealed under the other version's header
    made, claimed = relabel
    _, plaintext = envelope.sign_code(dynamic_code(), scheme.issuer, 1, version=made)
    with pytest.raises(MalformedCode):
        open_(scheme, forge(scheme, plaintext[64:], version=claimed))
    # and the other version's signature does not carry over (the header is signed)
    header = bytes([claimed, 1, 1])
    sealed = _SUITE.encrypt(
        plaintext, scheme.scheme_key.public.x25519(), info=envelope.HPKE_INFO + header
    )
    with pytest.raises((SignatureInvalid, MalformedCode)):
        open_(scheme, header + sealed)


def test_version_2_is_smaller_by_the_total_and_two_array_heads_per_item(scheme: Scheme) -> None:
    sizes = {
        v: len(seal(dynamic_code(), scheme.issuer, scheme.scheme_key.public, version=v))
        for v in (1, 2)
    }
    # total 1300 (3 bytes), the body's array head (1), one array head per item (3 items)
    assert sizes[1] - sizes[2] == 3 + 1 + 3


def test_unknown_key_id_refused(scheme: Scheme) -> None:
    binary = seal(dynamic_code(), scheme.issuer, SchemeKey.generate(7).public)
    with pytest.raises(UnknownKeyId):
        open_(scheme, binary)


def test_unknown_institution_key_id_refused(scheme: Scheme) -> None:
    binary = seal(
        dynamic_code(), Issuer.institution(scheme.institution_key, 9), scheme.scheme_key.public
    )
    with pytest.raises(UnknownKeyId):
        open_(scheme, binary)


def test_rotation_old_key_opens_until_retired(scheme: Scheme) -> None:
    old = SchemeKey.generate(1, retire_at=NOW + 100)
    new = SchemeKey.generate(2)
    ring = SchemeKeyring()
    ring.add(old)
    ring.add(new)
    assert ring.current(NOW).kid == 2
    binary = seal(dynamic_code(), scheme.issuer, old.public)
    assert open_code(binary, ring, scheme.trust, now=NOW + 99).header.kid == 1
    with pytest.raises(KeyRetired):
        open_code(binary, ring, scheme.trust, now=NOW + 100)


# --- merchant certificates -----------------------------------------------------------------
# (the binding of every identity field to the certificate: tests/code/test_merchant_identity.py)


def _merchant_issuer(scheme: Scheme, **changes: object) -> Issuer:
    fields: dict[str, object] = dict(
        serial=2002,
        role=Role.MERCHANT,
        subject="m_7Qx2",
        public_key=scheme.merchant_key.public_key,
        not_before=NOW - 10,
        not_after=NOW + 1000,
        merchant=MERCHANT,
    )
    fields.update(changes)
    cert = issue_certificate(scheme.institution_key, 1, **fields)  # type: ignore[arg-type]
    return Issuer.merchant(scheme.merchant_key, cert)


def test_revoked_merchant_refused(scheme: Scheme) -> None:
    binary = seal(dynamic_code(), _merchant_issuer(scheme), scheme.scheme_key.public)
    scheme.trust.revoked_serials = frozenset({2002})
    with pytest.raises(CertificateRevoked):
        open_(scheme, binary)


def test_expired_merchant_certificate_refused(scheme: Scheme) -> None:
    issuer = _merchant_issuer(scheme, not_before=NOW - 1000, not_after=NOW - 1)
    binary = seal(dynamic_code(), issuer, scheme.scheme_key.public)
    with pytest.raises(CertificateExpired):
        open_(scheme, binary)


def test_forged_certificate_refused(scheme: Scheme) -> None:
    rogue = SigningKey.generate()
    cert = issue_certificate(
        rogue,
        1,
        serial=1,
        role=Role.MERCHANT,
        subject="m_7Qx2",
        public_key=scheme.merchant_key.public_key,
        not_before=NOW - 1,
        not_after=NOW + 10,
        merchant=MERCHANT,
    )
    binary = seal(
        dynamic_code(), Issuer.merchant(scheme.merchant_key, cert), scheme.scheme_key.public
    )
    with pytest.raises(CertificateError):
        open_(scheme, binary)


# --- validity period -----------------------------------------------------------------------


def test_expired_code_refused(scheme: Scheme) -> None:
    binary = seal(dynamic_code(), scheme.issuer, scheme.scheme_key.public)
    open_(scheme, binary, now=NOW + 299)
    with pytest.raises(CodeExpired):
        open_(scheme, binary, now=NOW + 300)


def test_not_yet_valid_code_refused(scheme: Scheme) -> None:
    binary = seal(dynamic_code(), scheme.issuer, scheme.scheme_key.public)
    open_(scheme, binary, now=NOW - 60)  # within the clock-skew tolerance
    with pytest.raises(CodeNotYetValid):
        open_(scheme, binary, now=NOW - 61)


# --- strict parsing of the (authentic) contents ---------------------------------------------


def _signed(scheme: Scheme, version: int) -> bytes:
    signer, body = _parts(scheme, version)
    return envelope.signed_content(signer, body, version)  # type: ignore[arg-type]


def test_trailing_bytes_refused(scheme: Scheme, version: int) -> None:
    signed = _signed(scheme, version) + b"\x00"
    with pytest.raises(MalformedCode, match=r"trailing|deterministic"):
        open_(scheme, forge(scheme, signed, version=version))


def test_non_canonical_integer_refused(scheme: Scheme, version: int) -> None:
    signed = _signed(scheme, version)
    # institution key id 1 encoded in two bytes (0x18 0x01) instead of one (0x01)
    assert signed[1] == 0x01
    bad = signed[:1] + b"\x18\x01" + signed[2:]
    with pytest.raises(MalformedCode, match="deterministic"):
        open_(scheme, forge(scheme, bad, version=version))


def test_indefinite_length_refused(scheme: Scheme, version: int) -> None:
    signed = _signed(scheme, version)
    bad = b"\x9f" + signed[1:] + b"\xff"  # same array, indefinite length
    with pytest.raises(MalformedCode):
        open_(scheme, forge(scheme, bad, version=version))


def test_duplicate_map_keys_refused(scheme: Scheme, version: int) -> None:
    signer, _ = _parts(scheme, version)
    bad = cbor.dumps([signer, 0]).replace(b"\x00", b"\xa2\x01\x01\x01\x02", 1)
    with pytest.raises(MalformedCode):
        open_(scheme, forge(scheme, bad[:2] + b"\xa2\x01\x01\x01\x02", version=version))


@pytest.mark.parametrize("where", ["end", "start", "after items"])
def test_unknown_extra_field_refused(scheme: Scheme, version: int, where: str) -> None:
    signer, body = _parts(scheme, version)
    position = {"end": len(body), "start": 0, "after items": 3}[where]
    body.insert(position, 7)
    with pytest.raises(MalformedCode):
        open_(scheme, _reforge(scheme, signer, body, version))


def test_missing_field_refused(scheme: Scheme, version: int) -> None:
    signer, body = _parts(scheme, version)
    for index in range(len(body)):
        fewer = body[:index] + body[index + 1 :]
        with pytest.raises((MalformedCode, InvalidAmount, UnknownCurrency)):
            open_(scheme, _reforge(scheme, signer, fewer, version))


def test_map_instead_of_array_refused(scheme: Scheme, version: int) -> None:
    signer, body = _parts(scheme, version)
    as_map = {i: v for i, v in enumerate(body)}
    signed = cbor.dumps([signer, as_map])  # the body (v1) / the fields after the signer (v2)
    with pytest.raises(MalformedCode):
        open_(scheme, forge(scheme, signed, version=version))
    whole = cbor.dumps({0: signer, 1: body})
    with pytest.raises(MalformedCode):
        open_(scheme, forge(scheme, whole, version=version))
    merchant = list(body)
    merchant[0] = dict(enumerate(body[0]))  # type: ignore[arg-type]
    with pytest.raises(MalformedCode):
        open_(scheme, _reforge(scheme, signer, merchant, version))


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("order_id", 42),
        ("total", "1300"),
        ("currency", "EUR"),
        ("issued_at", -1),
        ("lifetime", "300"),
        ("nonce", "nonce"),
        ("merchant", "merchant"),
        ("items", "Croissant"),
        ("items", []),
        ("items", [["Croissant", 1, 180]]),  # a version-1 item inside a version-2 code
        ("items", ["Croissant", 1]),
        ("items", ["Croissant", 1, 180, "Tea"]),
        ("items", ["Croissant", "1", 180]),
        ("items", ["Croissant", 1, 0]),
        ("items", [["Croissant", 1, 180], ["Tea", 1, 100], 2]),
    ],
)
def test_wrong_types_refused(scheme: Scheme, version: int, field: str, bad: object) -> None:
    if field not in FIELDS[version]:
        pytest.skip(f"version {version} has no {field}")
    signer, body = _parts(scheme, version)
    body[FIELDS[version].index(field)] = bad
    with pytest.raises((MalformedCode, InvalidAmount, UnknownCurrency)):
        open_(scheme, _reforge(scheme, signer, body, version))


def test_too_many_items_refused(scheme: Scheme, version: int) -> None:
    signer, body = _parts(scheme, version)
    index = FIELDS[version].index("items")
    if version == 1:
        body[index] = [["Tea", 1, 100]] * 33
        body[FIELDS[1].index("total")] = 3300
    else:
        body[index] = ["Tea", 1, 100] * 33
    with pytest.raises(MalformedCode, match="1-32 line items"):
        open_(scheme, _reforge(scheme, signer, body, version))


def test_items_summing_past_the_largest_amount_refused(scheme: Scheme) -> None:
    # version 2 carries no total: the sum of the (each valid) items is checked like one
    signer, body = _parts(scheme, 2)
    body[FIELDS[2].index("items")] = ["Gold", 9999, 10**12 - 1]
    with pytest.raises(InvalidAmount):
        open_(scheme, _reforge(scheme, signer, body, 2))


def test_tagged_value_refused(scheme: Scheme, version: int) -> None:
    signed = _signed(scheme, version)
    bad = signed.replace(cbor.dumps(NOW), b"\xc1" + cbor.dumps(NOW), 1)  # tag 1 (epoch time)
    assert bad != signed
    with pytest.raises(MalformedCode):
        open_(scheme, forge(scheme, bad, version=version))


def test_kind_mismatch_refused(scheme: Scheme, version: int) -> None:
    # a dynamic body under a header that says static (both authentic)
    with pytest.raises(MalformedCode):
        open_(scheme, forge(scheme, _signed(scheme, version), kind=2, version=version))


# --- amounts, currency, names --------------------------------------------------------------


def test_items_not_adding_up_refused() -> None:
    with pytest.raises(TotalMismatch):
        dynamic_code(total=1299).validated()


def test_items_not_adding_up_in_signed_code_refused(scheme: Scheme) -> None:
    # version 1 states the total beside the items (version 2 derives it from them)
    signer, body = _parts(scheme, 1)
    for total in (1299, 1301, 2600):
        body[FIELDS[1].index("total")] = total
        with pytest.raises(TotalMismatch):
            open_(scheme, _reforge(scheme, signer, body, 1))


@pytest.mark.parametrize("amount", [0, -5])
def test_non_positive_amount_refused(amount: int) -> None:
    with pytest.raises(InvalidAmount):
        dynamic_code(items=(LineItem("Tea", 1, amount),), total=amount).validated()


def test_amount_out_of_range_refused() -> None:
    huge = 10**12
    with pytest.raises(InvalidAmount):
        dynamic_code(items=(LineItem("Gold", 1, huge),), total=huge).validated()


def test_unknown_currency_refused() -> None:
    with pytest.raises(UnknownCurrency):
        dynamic_code(currency=999).validated()


@pytest.mark.parametrize(
    "name",
    [
        "Caf\u00e9\u202eevil",
        "Shop\u200b",
        "Bad\x07Bell",
        "Line\nBreak",
        "\u2066iso\u2069",
        "Pay\ufeffpal",
        "Hangul\u3164filler",
        "",
    ],
)
def test_unsafe_merchant_names_refused(name: str) -> None:
    with pytest.raises(UnsafeText):
        dynamic_code(merchant=Merchant("m_1", name, "Paris", "FR", 5814)).validated()


def test_names_are_nfc_normalised() -> None:
    decomposed = "Cafe\u0301"
    code = dynamic_code(merchant=Merchant("m_1", decomposed, "Paris", "FR", 5814)).validated()
    assert code.merchant.name == "Caf\u00e9"


def test_non_nfc_name_inside_code_refused(scheme: Scheme, version: int) -> None:
    signer, body = _parts(scheme, version)
    body[0][1] = "Cafe\u0301 Lumiere"  # type: ignore[index]
    with pytest.raises(UnsafeText, match="normal form"):
        open_(scheme, _reforge(scheme, signer, body, version))


def test_lookalike_merchant_name_is_flagged(scheme: Scheme) -> None:
    fake = Merchant("m_7Qx2", "P\u0430yPal", "Paris", "FR", 5814)  # Cyrillic a
    binary = seal(dynamic_code(merchant=fake), scheme.issuer, scheme.scheme_key.public)
    opened = open_code(binary, scheme.keyring, scheme.trust, now=NOW)
    assert opened.warnings and "CYRILLIC" in opened.warnings[0]


@pytest.mark.parametrize(
    ("name", "country", "reads"),
    [
        ("Сахар", "FR", "Caxap"),  # Cyrillic, every letter an ASCII look-alike
        ("раура", "DE", "paypa"),
        ("ΤΟΚΙΟ", "IT", "TOKIO"),  # Greek capitals (the skeleton's "l" read as "I")
        ("ΑΒ 12", "FR", "AB 12"),  # digits and spaces are kept
    ],
)
def test_whole_script_lookalike_is_flagged_outside_its_countries(
    scheme: Scheme, name: str, country: str, reads: str
) -> None:
    m = Merchant("m_7Qx2", name, "Paris", country, 5814)
    binary = seal(dynamic_code(merchant=m), scheme.issuer, scheme.scheme_key.public)
    warnings = open_code(binary, scheme.keyring, scheme.trust, now=NOW).warnings
    assert len(warnings) == 1 and f"reads as {reads!r}" in warnings[0], warnings


@pytest.mark.parametrize(
    ("name", "country"),
    [
        ("Сахар", "RU"),  # the script's own countries
        ("ΤΟΚΙΟ", "GR"),
        ("Ресторан", "FR"),  # т and н have no ASCII look-alike: it cannot pass for Latin
        ("Мир", "DE"),
        ("Ж", "FR"),
        ("Café Lumière", "FR"),
    ],
)
def test_names_that_cannot_pass_for_latin_are_not_flagged(
    scheme: Scheme, name: str, country: str
) -> None:
    m = Merchant("m_7Qx2", name, "Paris", country, 5814)
    binary = seal(dynamic_code(merchant=m), scheme.issuer, scheme.scheme_key.public)
    assert open_code(binary, scheme.keyring, scheme.trust, now=NOW).warnings == ()


def test_plain_non_latin_name_is_not_flagged(scheme: Scheme) -> None:
    m = Merchant("m_7Qx2", "東京ラーメン", "東京", "JP", 5814)
    binary = seal(dynamic_code(merchant=m, currency=392), scheme.issuer, scheme.scheme_key.public)
    assert open_code(binary, scheme.keyring, scheme.trust, now=NOW).warnings == ()


# --- text layer ----------------------------------------------------------------------------


def test_oversize_text_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch, scheme: Scheme
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(header, "b45decode", lambda s: calls.append(s))
    with pytest.raises(OversizeInput):
        open_(scheme, "SS1:" + "0" * 5000)
    assert calls == []


def test_oversize_binary_refused(scheme: Scheme) -> None:
    with pytest.raises(OversizeInput):
        open_(scheme, b"\x01" * 5000)


@pytest.mark.parametrize("text", ["https://evil.example/pay", "SS1:!!!", "SS2:ABC", "", "SS1:"])
def test_not_a_code_refused(scheme: Scheme, text: str) -> None:
    with pytest.raises(MalformedCode):
        open_(scheme, text)


def test_truncated_code_refused(scheme: Scheme) -> None:
    binary = seal(dynamic_code(), scheme.issuer, scheme.scheme_key.public)
    for cut in (1, 10, 50, len(binary) - 1):
        with pytest.raises((MalformedCode, DecryptionFailed)):
            open_(scheme, binary[:cut])


def test_sizes_fit_the_byte_budget(scheme: Scheme) -> None:
    dyn = seal(dynamic_code(), scheme.issuer, scheme.scheme_key.public)
    assert len(dyn) == 234  # docs/protocol.md section 8
    assert len(encode_text(dyn)) <= 366  # QR version 11 at level M holds 366 characters


def test_dataclass_defaults_are_not_shared() -> None:
    a = DynamicCode(MERCHANT, "o1", ITEMS, 1300, 978, NOW, NOW + 10, b"\x00" * 8)
    assert a.validated().items == ITEMS
