"""Each kind of malformed input is its own typed error (issue #15): ``MalformedCode`` is a bad
payment code only; a bad authorization, receipt, key update, provisioning bundle or scheme key
list raises its own class. All share the base ``MalformedData`` (one ``except`` for any) and
the one wire form clients, carriers and stored Idempotency-Key refusals read: ``type``
``MalformedCode``, ``code`` ``malformed_code``, HTTP 400 (docs/protocol.md, "Errors"). An
oversize input is ``OversizeInput``; only an oversize payment code (``OversizeCode``) is also a
``MalformedCode``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan.api.errors import http_status
from safescan.code import (
    Authorization,
    Receipt,
    SchemeKeyring,
    SigningKey,
    TrustStore,
    cbor,
    open_code,
)
from safescan.code.emv import MAX_PAYLOAD_CHARS, read_emv
from safescan.code.errors import (
    MalformedAuthorization,
    MalformedCode,
    MalformedData,
    MalformedKeyUpdate,
    MalformedProvisioning,
    MalformedReceipt,
    MalformedSchemeList,
    OversizeCode,
    OversizeInput,
)
from safescan.code.header import MAX_BINARY_BYTES, MAX_TEXT_CHARS, PREFIX, decode_text
from safescan.code.keyupdate import (
    KEY_UPDATE_CONTEXT,
    KEY_UPDATE_INFO,
    MAX_KEY_UPDATE_BYTES,
    open_key_update,
)
from safescan.code.provisioning import MAX_BUNDLE_BYTES, PROV_CONTEXT, PROV_INFO, open_bundle
from safescan.code.schemelist import SchemeKeyList
from tests.code.conftest import NOW

ROOT = SigningKey.from_seed(b"\x11" * 32)
TRUST = TrustStore({1: ROOT.public_key})
TRANSPORT = X25519PrivateKey.from_private_bytes(b"\x22" * 32)
CARRIER = SigningKey.from_seed(b"\x33" * 32)
KEYRING = SchemeKeyring()
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)

KINDS = [
    MalformedCode,
    MalformedAuthorization,
    MalformedReceipt,
    MalformedKeyUpdate,
    MalformedProvisioning,
    MalformedSchemeList,
]

# the same garbage, fed to every parser: each answers with its own kind
GARBAGE = {
    "empty": b"",
    "one-byte": b"\x00",
    "a-map": cbor.dumps({1: 2}),
    "wrong-arity": cbor.dumps([1, 2, 3]),
    "text-in-place": cbor.dumps(["x"] * 11),
    "indefinite": b"\x9f\x01\xff",
    "a-tag": bytes.fromhex("c11a00000000"),
    "trailing": cbor.dumps([1]) + b"\x00",
}


def _sealed(context: bytes, info: bytes, signed: bytes) -> bytes:
    """``signed`` under the root key, sealed to the carrier (as the institution does): the
    malformation is found after decryption and the signature check."""
    plaintext = ROOT.sign(context + signed) + signed
    return SUITE.encrypt(plaintext, TRANSPORT.public_key(), info=info)


PARSERS: dict[type[MalformedData], Callable[[bytes], object]] = {
    MalformedCode: lambda data: open_code(data, KEYRING, TRUST, now=NOW),
    MalformedAuthorization: Authorization.from_bytes,
    MalformedReceipt: Receipt.from_bytes,
    MalformedSchemeList: lambda data: SchemeKeyList.from_bytes(data, TRUST),
    MalformedKeyUpdate: lambda data: open_key_update(
        _sealed(KEY_UPDATE_CONTEXT, KEY_UPDATE_INFO, data), TRANSPORT, TRUST, carrier_serial=7
    ),
    MalformedProvisioning: lambda data: open_bundle(
        _sealed(PROV_CONTEXT, PROV_INFO, data),
        TRANSPORT,
        carrier_signing_key=CARRIER.public_key,
        now=NOW,
        trust_anchor=TRUST,
    ),
}


def test_each_kind_is_its_own_class_under_one_base_with_one_wire_form() -> None:
    for kind in KINDS:
        exc = kind("bad bytes")
        others = [k for k in KINDS if k is not kind]
        assert isinstance(exc, MalformedData)
        assert not any(isinstance(exc, k) for k in others), kind
        assert exc.to_dict() == {
            "type": "MalformedCode",
            "code": "malformed_code",
            "message": "bad bytes",
        }
        assert http_status(exc) == 400
    # the payment code's own subclasses keep their names on the wire
    assert OversizeInput("too large").to_dict()["type"] == "OversizeInput"


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
@pytest.mark.parametrize(
    "kind", sorted(PARSERS, key=lambda k: k.__name__), ids=lambda k: k.__name__
)
def test_each_parser_answers_garbage_with_its_own_kind(
    kind: type[MalformedData], garbage: str
) -> None:
    data = GARBAGE[garbage]
    if kind is MalformedCode and not data:
        data = b"\x01"  # an empty payment code is refused before parsing, as too short
    try:
        PARSERS[kind](data)
    except MalformedData as exc:
        assert type(exc) is kind, f"{kind.__name__} expected, got {type(exc).__name__}: {exc}"
    else:  # pragma: no cover - the parser accepted garbage
        pytest.fail(f"{kind.__name__}: {garbage} was accepted")


# --- oversize input: a payment code's is a MalformedCode, anything else's is not ----------------

OVERSIZE_NOT_A_CODE: dict[str, Callable[[], object]] = {
    "key update": lambda: open_key_update(
        b"\x00" * (MAX_KEY_UPDATE_BYTES + 1), TRANSPORT, TRUST, carrier_serial=7
    ),
    "provisioning bundle": lambda: open_bundle(
        b"\x00" * (MAX_BUNDLE_BYTES + 1), TRANSPORT, carrier_signing_key=CARRIER.public_key, now=NOW
    ),
    "EMV payload": lambda: read_emv("0" * (MAX_PAYLOAD_CHARS + 1)),
}

OVERSIZE_CODES: dict[str, Callable[[], object]] = {
    "text": lambda: open_code(PREFIX + "0" * MAX_TEXT_CHARS, KEYRING, TRUST, now=NOW),
    "binary": lambda: open_code(b"\x00" * (MAX_BINARY_BYTES + 1), KEYRING, TRUST, now=NOW),
    # the longest text there is, whose Base45 decodes to one byte more than any code
    "decoded text": lambda: decode_text(PREFIX + "0" * (MAX_TEXT_CHARS - len(PREFIX))),
}


@pytest.mark.parametrize("what", sorted(OVERSIZE_NOT_A_CODE))
def test_oversize_input_that_is_no_payment_code_is_not_a_malformed_code(what: str) -> None:
    with pytest.raises(OversizeInput) as info:
        OVERSIZE_NOT_A_CODE[what]()
    exc = info.value
    assert not isinstance(exc, MalformedCode), type(exc)
    assert isinstance(exc, MalformedData) and http_status(exc) == 400
    assert exc.to_dict()["type"] == type(exc).__name__  # OversizeInput, EmvOversizeError


@pytest.mark.parametrize("what", sorted(OVERSIZE_CODES))
def test_an_oversize_payment_code_is_a_malformed_code_with_its_old_wire_form(what: str) -> None:
    with pytest.raises(OversizeCode) as info:
        OVERSIZE_CODES[what]()
    exc = info.value
    assert isinstance(exc, MalformedCode) and isinstance(exc, OversizeInput)
    assert {k: v for k, v in exc.to_dict().items() if k != "message"} == {
        "type": "OversizeInput",
        "code": "oversize_input",
    }
    assert http_status(exc) == 400


def test_the_oversize_wire_form_is_unchanged() -> None:
    for exc in (OversizeInput("too large"), OversizeCode("too large")):
        assert exc.to_dict() == {
            "type": "OversizeInput",
            "code": "oversize_input",
            "message": "too large",
        }
