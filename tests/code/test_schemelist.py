"""The signed scheme key list a merchant terminal seals codes to (issue #14)."""

from __future__ import annotations

import pytest

from safescan.code import SchemeKey, SigningKey, TrustStore, cbor
from safescan.code.errors import (
    KeyFileError,
    KeyRetired,
    MalformedSchemeList,
    SafescanError,
    SignatureInvalid,
    UnknownKeyId,
)
from safescan.code.keys import SchemePublicKey
from safescan.code.schemelist import MAX_LIST_BYTES, PublishedSchemeKey, SchemeKeyList
from tests.code.conftest import NOW

ROOT = SigningKey.from_seed(b"\x31" * 32)
OLD, NEW = SchemeKey.from_seed(1, b"\x41" * 32), SchemeKey.from_seed(2, b"\x42" * 32)


def _trust() -> TrustStore:
    return TrustStore({1: ROOT.public_key})


def _list(current: int = 2, retire_old: int | None = NOW + 3600, **kw: object) -> SchemeKeyList:
    return SchemeKeyList.issue(
        kw.pop("key", ROOT),  # type: ignore[arg-type]
        int(kw.pop("kid", 1)),  # type: ignore[call-overload]
        issued_at=NOW,
        current_kid=current,
        keys=[PublishedSchemeKey(NEW.public, None), PublishedSchemeKey(OLD.public, retire_old)],
    )


def test_round_trip_and_sealing_key() -> None:
    data = _list().to_bytes()
    parsed = SchemeKeyList.from_bytes(data, _trust())
    assert parsed == _list()
    assert [k.key.kid for k in parsed.keys] == [1, 2]  # sorted
    assert parsed.for_sealing(NOW, NOW + 300) == NEW.public


def test_old_current_key_seals_until_it_would_retire_under_the_code() -> None:
    listed = _list(current=1)
    assert listed.for_sealing(NOW, NOW + 3599) == OLD.public
    with pytest.raises(KeyRetired):
        listed.for_sealing(NOW, NOW + 3600)  # the code would outlive the key
    with pytest.raises(KeyRetired):
        listed.for_sealing(NOW + 4000, NOW + 4300)


def test_signed_by_another_key_or_unknown_key_id_refused() -> None:
    with pytest.raises(SignatureInvalid):
        SchemeKeyList.from_bytes(_list(key=SigningKey.generate()).to_bytes(), _trust())
    with pytest.raises(UnknownKeyId):
        SchemeKeyList.from_bytes(_list(kid=7).to_bytes(), _trust())


def test_every_flipped_byte_refused() -> None:
    data = _list().to_bytes()
    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        with pytest.raises(SafescanError):
            SchemeKeyList.from_bytes(bytes(flipped), _trust())


def test_a_swapped_key_is_refused() -> None:
    """A network attacker replacing the public key with its own (to read the codes)."""
    value = cbor.strict_loads(_list().to_bytes())
    value[3][1][1] = SchemeKey.generate(2).public.raw
    with pytest.raises(SignatureInvalid):
        SchemeKeyList.from_bytes(cbor.dumps(value), _trust())


def _signed(fields: list[object]) -> bytes:
    return cbor.dumps([*fields, ROOT.sign(b"SS1-SKEYS" + cbor.dumps(fields))])


@pytest.mark.parametrize(
    "fields",
    [
        [2, NOW, 1, [[1, OLD.public.raw, 0]], 1],  # unknown version
        [1, NOW, 1, [], 1],  # no key
        [1, NOW, 3, [[1, OLD.public.raw, 0]], 1],  # current not in the list
        [1, NOW, 1, [[2, NEW.public.raw, 0], [1, OLD.public.raw, 0]], 1],  # unsorted
        [1, NOW, 1, [[1, OLD.public.raw, 0], [1, NEW.public.raw, 0]], 1],  # duplicate
        [1, NOW, 1, [[256, OLD.public.raw, 0]], 1],  # kid out of range
        [1, NOW, 1, [[1, OLD.public.raw[:31], 0]], 1],  # short key
        [1, NOW, 1, [[1, bytes(32), 0]], 1],  # small-order point (all zeros)
        [1, NOW, 1, [[1, b"\x01" + bytes(31), 0]], 1],  # small-order point (order 1)
        [1, NOW, 1, [[1, OLD.public.raw, -1]], 1],  # negative retirement
        [1, NOW, 1, [[1, OLD.public.raw]], 1],  # entry too short
        [1, NOW, 1, {1: OLD.public.raw}, 1],  # a map
    ],
)
def test_malformed_lists_refused_even_when_signed(fields: list[object]) -> None:
    with pytest.raises((MalformedSchemeList, UnknownKeyId)):
        SchemeKeyList.from_bytes(_signed(fields), _trust())


def test_oversize_and_non_bytes_refused() -> None:
    with pytest.raises(MalformedSchemeList):
        SchemeKeyList.from_bytes(b"\x80" * (MAX_LIST_BYTES + 1), _trust())
    with pytest.raises(MalformedSchemeList):
        SchemeKeyList.from_bytes("text", _trust())  # type: ignore[arg-type]


def test_issuing_a_list_with_a_bad_key_is_refused() -> None:
    # a small-order key cannot even be made into a scheme public key (issue #13 item 7)
    with pytest.raises((MalformedSchemeList, KeyFileError)):
        SchemeKeyList.issue(
            ROOT,
            1,
            issued_at=NOW,
            current_kid=1,
            keys=[PublishedSchemeKey(SchemePublicKey(1, bytes(32)), None)],
        )
    with pytest.raises(UnknownKeyId):
        SchemeKeyList.issue(
            ROOT, 1, issued_at=NOW, current_kid=9, keys=[PublishedSchemeKey(OLD.public, None)]
        )
