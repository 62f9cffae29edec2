"""(strict, twelfth sitting) Pinned institution keys are read in one spelling only.

A trust document maps key ids to public keys. ``int()`` read an id in many spellings (``"01"``,
``" 1"``, ``"+1"``, ``"1_0"``, another script's digits ``"١"``), so a document naming key 1 twice
(``{"1": A, "01": B}``) handed back B for 1, the last one winning, while a reader that takes
the first (or a person reading the file) sees A: the same planted file meant two things.
``trust.json`` (a key directory's public file) was also read whole (``read_text``: a huge file
or ``/dev/zero`` ran the process out of memory, a FIFO hung it) by Python's lenient JSON (a key
named twice: the last value won). Each attack below was accepted before."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from safescan.client.errors import TrustFormatError
from safescan.client.trust import trust_from_json, trust_to_json
from safescan.code.errors import KeyFileError
from safescan.code.keys import SchemeKey, SigningKey

A = SigningKey.from_seed(b"\x01" * 32).public_key.hex()
B = SigningKey.from_seed(b"\x02" * 32).public_key.hex()
C = SigningKey.from_seed(b"\x03" * 32).public_key.hex()
S = SchemeKey.generate(1).public.raw.hex()

#: spellings int() reads as a number that are not its one spelling
RESPELT = ["01", "+1", " 1", "1 ", "1_0", "١", "１", "0x1", "-0", "", "1.0"]


@pytest.mark.parametrize("kid", RESPELT)
def test_a_respelt_key_id_is_refused(kid: str) -> None:
    with pytest.raises(TrustFormatError):
        trust_from_json({kid: A})


def test_one_key_id_named_twice_in_two_spellings_is_refused() -> None:
    with pytest.raises(TrustFormatError):
        trust_from_json({"1": A, "01": B})  # before: key 1 was B


@pytest.mark.parametrize(
    "hexkey",
    [f" {A}", A[:2] + " " + A[2:], 7, None, A[:-2]],
    ids=["space", "inner space", "7", "null", "short"],
)
def test_a_public_key_is_64_hex_digits_only(hexkey: object) -> None:
    with pytest.raises(TrustFormatError):
        trust_from_json({"1": hexkey})


def test_the_written_form_reads_back() -> None:
    store = trust_from_json({"0": A, "7": B, "4294967295": C})
    assert trust_to_json(store) == {"0": A, "4294967295": C, "7": B}
    from safescan.code.numbers import canonical_int

    assert canonical_int("10", field="x") == 10


def _trust(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trust.json"
    path.write_text(text)
    return path


def _doc(**over: object) -> dict[str, object]:
    return {
        "type": "safescan-trust",
        "institution_keys": {"1": A},
        "scheme_keys": {"1": S},
        "revoked": [],
        **over,
    }


HOSTILE_TRUST_FILES = {
    # a key named twice in the text: Python's json let the last one win
    "repeated institution_keys": json.dumps(_doc())[:-1]
    + f', "institution_keys": {{"1": "{B}"}}'
    + "}",
    "kid respelt": json.dumps(_doc(institution_keys={"1": A, "01": B})),
    "scheme kid respelt": json.dumps(_doc(scheme_keys={" 2": S})),
    "unicode digits": json.dumps(_doc(institution_keys={"١": A})),
    "revoked true": json.dumps(_doc(revoked=[True])),  # int(True) revoked serial 1
    "revoked 1.9": json.dumps(_doc(revoked=[1.9])),  # int(1.9) revoked serial 1
    "revoked text": json.dumps(_doc(revoked=["1_0"])),  # int("1_0") revoked serial 10
    "lone surrogate": json.dumps(_doc(note="\ud800")),
    "padded past 1 MiB": json.dumps(_doc(pad="x" * (1 << 20))),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_TRUST_FILES))
def test_a_hostile_trust_file_is_a_typed_error(tmp_path: Path, name: str) -> None:
    from safescan.code.keystore import KeyDirectory, load_trust_file

    path = _trust(tmp_path, HOSTILE_TRUST_FILES[name])
    with pytest.raises(KeyFileError):
        load_trust_file(path)
    with pytest.raises(KeyFileError):
        KeyDirectory.load(tmp_path)


@pytest.mark.timeout(60)  # before: open() of a FIFO without a writer never returned
def test_a_fifo_as_trust_file_is_a_typed_error_not_a_hang(tmp_path: Path) -> None:
    from safescan.code.keystore import load_trust_file

    os.mkfifo(tmp_path / "trust.json")
    with pytest.raises(KeyFileError):
        load_trust_file(tmp_path / "trust.json")


def test_the_written_trust_file_reads_back(tmp_path: Path) -> None:
    from safescan.code.keystore import load_trust_file

    trust, scheme = load_trust_file(_trust(tmp_path, json.dumps(_doc(revoked=[3, 0]))))
    assert trust.institution_key(1).hex() == A and set(scheme) == {1}
    assert trust.revoked_serials == {3, 0}


# ---- --institution-key KID:HEX options and scheme key files -----------------------------


@pytest.mark.parametrize(
    "values",
    [
        [f"01:{A}"],  # another spelling of key 1
        [f"1:{A}", f"1:{B}"],  # key 1 given twice: the last one won
        [f"1:{A}", f"01:{B}"],
        [f"1:{A[:2]} {A[2:]}"],  # bytes.fromhex skipped the space
        [f"١:{A}"],
    ],
    ids=["01", "twice", "01 twice", "inner space", "other digits"],
)
def test_a_pinned_key_option_in_a_second_spelling_or_twice_is_refused(values: list[str]) -> None:
    from safescan.code.keys import parse_pinned_keys

    with pytest.raises(KeyFileError):
        parse_pinned_keys(values)
    assert parse_pinned_keys([f"1:{A}", f"2:{B}"]).keys() == {1, 2}


def test_a_scheme_key_file_naming_its_kid_twice_is_refused() -> None:
    key = SchemeKey.generate(1)
    text = key.to_json(b"passphrase")
    assert SchemeKey.from_json(text, b"passphrase").kid == 1
    with pytest.raises(KeyFileError):  # before: key 1 (the last kid) with a first kid 2
        SchemeKey.from_json('{"kid": 2, ' + text[1:], b"passphrase")


def test_a_scheme_key_file_naming_its_pem_twice_is_not_re_sealed(tmp_path: Path) -> None:
    from safescan.code.resealing import is_key_file, rekey_path

    text = SchemeKey.generate(1).to_json(b"passphrase")
    doc = json.loads(text)
    planted = '{"pem": "not this one", ' + text[1:]  # before: re-sealed the last, written clean
    assert is_key_file(text.encode()) and not is_key_file(planted.encode())
    path = tmp_path / "scheme-1.key"
    path.write_text(planted)
    with pytest.raises(KeyFileError):
        rekey_path(path, b"passphrase", b"new passphrase")
    assert path.read_text() == planted and doc["kid"] == 1  # nothing written
