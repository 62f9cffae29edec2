"""safescan.code.b45 against the ``base45`` package it replaces for decoding: the same bytes for
every text the package accepts, a refusal for every text it refuses (and for characters it
would have skipped), on every group of three characters, every pair, every single character
and many random texts; and the typed errors a payment code's text gets."""

from __future__ import annotations

import itertools
import random

import base45
import pytest

from safescan.code import decode_text
from safescan.code.b45 import ALPHABET, NotBase45, b45decode
from safescan.code.errors import MalformedCode


def _old(text: str) -> bytes | None:
    try:
        return bytes(base45.b45decode(text))
    except ValueError:
        return None


def _new(text: str) -> bytes | None:
    try:
        return b45decode(text)
    except ValueError:
        return None


def test_every_group_of_three_characters_decodes_as_before() -> None:
    accepted = refused = 0
    for chars in itertools.product(ALPHABET, repeat=3):
        text = "".join(chars)
        want = _old(text)
        assert _new(text) == want, text
        if want is None:
            refused += 1
        else:
            accepted += 1
    assert accepted == 65536  # each 2-byte value has exactly one encoding
    assert refused == 45**3 - 65536


def test_every_pair_and_single_character_decodes_as_before() -> None:
    for chars in itertools.product(ALPHABET, repeat=2):
        text = "".join(chars)
        assert _new(text) == _old(text), text
    for ch in ALPHABET:
        with pytest.raises(ValueError):
            b45decode(ch)  # a lone character encodes nothing
    assert b45decode("") == b""


def test_random_bytes_round_trip_through_the_package_encoder() -> None:
    rng = random.Random(20)
    for n in [*range(0, 80), *rng.sample(range(80, 1100), 200)]:
        data = rng.randbytes(n)
        assert b45decode(base45.b45encode(data).decode()) == data


def test_random_texts_are_accepted_and_refused_as_before() -> None:
    rng = random.Random(45)
    for _ in range(4000):
        text = "".join(rng.choices(ALPHABET, k=rng.randrange(0, 40)))
        assert _new(text) == _old(text), text
    # valid texts with one group pushed over 65535 ("GGW" is 65536): refused wherever it sits
    for _ in range(300):
        good = base45.b45encode(rng.randbytes(2 * rng.randrange(1, 60))).decode()
        at = 3 * rng.randrange(len(good) // 3)
        bad = good[:at] + ":::" + good[at + 3 :]
        assert _old(bad) is None
        with pytest.raises(ValueError):
            b45decode(bad)


@pytest.mark.parametrize(
    "text",
    ["abc", "AB\n", "\nAB", "AB\t", "ÀBC", "A\u00a0B", "A\x00B", "AB€", "AB_", "AB#", "A,B"],
)
def test_characters_outside_the_alphabet_are_refused_as_such(text: str) -> None:
    with pytest.raises(NotBase45):
        b45decode(text)
    with pytest.raises(MalformedCode, match="characters outside Base45"):
        decode_text("SS1:" + text)


def test_a_final_pair_above_255_and_a_dangling_character_are_corrupt() -> None:
    for text in ("::", "U5", "0", "0000"):  # "U5" is 30 + 45 * 5 = 255 + 0: see below
        if _old(text) is None:
            with pytest.raises(MalformedCode, match="corrupt"):
                decode_text("SS1:" + text)
    assert b45decode("U5") == bytes([255])
    with pytest.raises(ValueError):
        b45decode("V5")  # 256
    with pytest.raises(MalformedCode, match="corrupt"):
        decode_text("SS1:GGW")  # one group, 65536
