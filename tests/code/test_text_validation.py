"""One validator for stored text, and whole numbers only (issue #13 items 10 and 11)."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safescan.code.errors import InvalidAmount, InvalidNumber, UnsafeText
from safescan.code.numbers import json_int, parse_int
from safescan.code.text import clean_text, forbidden_char

FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _expected_refused(ch: str) -> bool:
    return (
        unicodedata.category(ch) in FORBIDDEN_CATEGORIES
        or (ch.isspace() and ch != " ")
        or ord(ch) in {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x2800, 0x3164, 0xFFA0}
        or 0xFE00 <= ord(ch) < 0xFE10
        or 0xE0100 <= ord(ch) < 0xE01F0
    )


def test_every_code_point_is_judged_by_its_category() -> None:
    """All 1,114,112 code points, alone inside a word."""
    refused = 0
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        expected = _expected_refused(ch)
        assert (forbidden_char(f"a{ch}b") is not None) == expected, f"U+{cp:04X}"
        refused += expected
    # C0 + DEL + C1 (65), bidi and other format characters, all unassigned code points...
    assert refused > 900_000
    for cp in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F)]:
        with pytest.raises(UnsafeText):
            clean_text(f"Shop{chr(cp)}", field="name")
    for cp in [0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD, 0x061C, 0x2066, 0x2069]:
        with pytest.raises(UnsafeText):
            clean_text(f"Shop{chr(cp)}", field="name")


@settings(max_examples=400, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_text_is_refused_exactly_when_it_holds_a_forbidden_character(text: str) -> None:
    nfc = unicodedata.normalize("NFC", text)
    bad = any(_expected_refused(c) for c in nfc)
    if bad or len(nfc) > 64:
        with pytest.raises(UnsafeText):
            clean_text(text, field="reference")
    else:
        assert clean_text(text, field="reference") == nfc


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(categories=["Cc", "Cf", "Co", "Zl", "Zp"]), min_size=1),
    st.text(max_size=10),
)
def test_a_forbidden_character_anywhere_is_refused(bad: str, around: str) -> None:
    for text in (bad + around, around + bad, around + bad + around):
        with pytest.raises(UnsafeText):
            clean_text(text, field="reason", max_chars=200)


def test_json_int_and_parse_int() -> None:
    assert json_int(150, field="amount") == 150
    for value in (True, False, "150", "1_0", 1.0, 1e2, None, [1], {"a": 1}, 150.5):
        with pytest.raises(InvalidNumber, match="amount"):
            json_int(value, field="amount")
    for value in (0, -1, 10**12):
        with pytest.raises(InvalidAmount):
            json_int(value, field="amount")
    assert parse_int("150", field="amount") == 150
    for text in ("1_0", "+5", " 5", "5 ", "1e2", "1.0", "٣", "１２", "0x10", "", "-1", "true"):
        with pytest.raises(InvalidNumber):
            parse_int(text, field="amount")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12))
def test_parse_int_accepts_only_ascii_digits(text: str) -> None:
    if text.isascii() and text.isdigit() and 1 <= int(text) <= 10**12 - 1:
        assert parse_int(text, field="q") == int(text)
    else:
        with pytest.raises(InvalidAmount):
            parse_int(text, field="q")
