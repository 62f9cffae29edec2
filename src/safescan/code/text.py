"""Safe display text: merchant and item names a person will read before paying.

Names are NFC-normalised. Control characters, bidirectional overrides and isolates, and
invisible characters (zero-width spaces and joiners, fillers, variation selectors...) are
rejected outright: they are how a name is made to look like something it is not. Names that mix
scripts with look-alike characters (``"Pаypal"`` with a Cyrillic ``а``) are legal but *flagged*,
so that an app can warn the customer.
"""

from __future__ import annotations

import unicodedata

from confusable_homoglyphs import confusables

from safescan.code.errors import UnsafeText

# Characters that render as nothing (or as blank) though they are not ordinary spaces.
_INVISIBLE = frozenset(
    [
        *(0x00A0, 0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x2800, 0x3164, 0xFFA0, 0x3000),
        *range(0x2000, 0x200B),  # en/em/thin/hair spaces
        *range(0xFE00, 0xFE10),  # variation selectors
        *range(0xE0100, 0xE01F0),  # variation selectors supplement
    ]
)
# Unicode general categories that never belong in a display name.
_HOMOGLYPH_SCRIPTS = frozenset(
    {"LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE", "COPTIC", "GEORGIAN", "LISU"}
)
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "unnamed character")
    return f"U+{ord(ch):04X} {name}"


def clean_name(value: str, *, field: str, max_chars: int = 64) -> str:
    """Validate a display name and return it NFC-normalised.

    Raises :class:`UnsafeText` for empty or over-long names, leading/trailing or doubled
    spaces, control / format (bidi, zero-width) / private-use / unassigned / invisible
    characters.
    """
    if not isinstance(value, str):
        raise UnsafeText(f"{field} must be text")
    text = unicodedata.normalize("NFC", value)
    if not text:
        raise UnsafeText(f"{field} is empty")
    if len(text) > max_chars:
        raise UnsafeText(f"{field} is longer than {max_chars} characters")
    for ch in text:
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES or ord(ch) in _INVISIBLE:
            raise UnsafeText(f"{field} contains a forbidden character ({_describe(ch)})")
        if ch.isspace() and ch != " ":
            raise UnsafeText(f"{field} contains a non-standard space ({_describe(ch)})")
    if text != text.strip(" ") or "  " in text:
        raise UnsafeText(f"{field} has leading, trailing or doubled spaces")
    return text


def check_stored_name(value: str, *, field: str, max_chars: int = 64) -> str:
    """Validate a name read from a code: it must already be in its clean, NFC form."""
    cleaned = clean_name(value, field=field, max_chars=max_chars)
    if cleaned != value:
        raise UnsafeText(f"{field} is not in Unicode normal form C")
    return cleaned


def lookalike_warning(value: str, *, field: str) -> str | None:
    """Return a warning if ``value`` mixes scripts using look-alike characters, else None."""
    if value.isascii():
        return None
    scripts = sorted(a for a in _scripts(value) if a not in {"COMMON", "INHERITED"})
    # Scripts that mimic each other's letters; Japanese mixing Han and Kana is normal.
    if len(set(scripts) & _HOMOGLYPH_SCRIPTS) < 2 or not confusables.is_dangerous(value):
        return None
    return (
        f"{field} {value!r} mixes scripts ({', '.join(scripts)}) with look-alike characters;"
        " check it is the merchant you expect"
    )


def _scripts(value: str) -> set[str]:
    from confusable_homoglyphs import categories

    return set(categories.unique_aliases(value))
