"""Safe display text: merchant and item names a person will read before paying.

Names are NFC-normalised. Control characters, bidirectional overrides and isolates, and
invisible characters (zero-width spaces and joiners, fillers, variation selectors...) are
rejected outright: they are how a name is made to look like something it is not. Names that mix
scripts with look-alike characters (``"Pаypal"`` with a Cyrillic ``а``), and names written
wholly in another script's look-alikes of Latin letters (``"Сахар"``, which reads ``"Caxap"``),
are legal but *flagged*, so that an app can warn the customer.
"""

from __future__ import annotations

import importlib
import unicodedata
from types import ModuleType

from safescan.code.errors import UnsafeText
from safescan.code.lookalike import protected_match, protected_names

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


def forbidden_char(text: str) -> str | None:
    """The first character of ``text`` no stored text may hold (described), else None.

    Refused: every control (C0, DEL, C1), format character (bidi overrides, embeddings and
    isolates, zero-width spaces and joiners, BOM, soft hyphen...), surrogate, private-use and
    unassigned code point, line and paragraph separators, invisible fillers, and every space
    but U+0020.
    """
    if text.isascii() and text.isprintable():  # U+0020-U+007E only: none of the above
        return None
    for ch in text:
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES or ord(ch) in _INVISIBLE:
            return f"a forbidden character ({_describe(ch)})"
        if ch.isspace() and ch != " ":
            return f"a non-standard space ({_describe(ch)})"
    return None


def clean_text(value: object, *, field: str, max_chars: int = 64) -> str:
    """Validate any text that is stored or shown to a person; return it NFC-normalised.

    The one validator for names, cities, settlement accounts, order references, refund
    reasons and labels, wherever they enter (API, web POS, CLI, codes). Raises
    :class:`UnsafeText` for non-text, empty or over-long values and any
    :func:`forbidden_char`.
    """
    if not isinstance(value, str):
        raise UnsafeText(f"{field} must be text")
    try:
        text = unicodedata.normalize("NFC", value)
    except UnicodeError:  # pragma: no cover - normalize takes any str
        raise UnsafeText(f"{field} is not valid Unicode") from None
    if not text:
        raise UnsafeText(f"{field} is empty")
    if len(text) > max_chars:
        raise UnsafeText(f"{field} is longer than {max_chars} characters")
    problem = forbidden_char(text)
    if problem is not None:
        raise UnsafeText(f"{field} contains {problem}")
    return text


def clean_name(value: str, *, field: str, max_chars: int = 64) -> str:
    """Validate a display name and return it NFC-normalised.

    :func:`clean_text`, and no leading, trailing or doubled spaces.
    """
    text = clean_text(value, field=field, max_chars=max_chars)
    if text != text.strip(" ") or "  " in text:
        raise UnsafeText(f"{field} has leading, trailing or doubled spaces")
    return text


def check_stored_name(value: str, *, field: str, max_chars: int = 64) -> str:
    """Validate a name read from a code: it must already be in its clean, NFC form."""
    if type(value) is str and value.isascii() and value.isprintable():
        # U+0020-U+007E only: already NFC, no forbidden character (forbidden_char), so only
        # clean_name's other rules remain, checked in its order with its messages
        if not value:
            raise UnsafeText(f"{field} is empty")
        if len(value) > max_chars:
            raise UnsafeText(f"{field} is longer than {max_chars} characters")
        if value[0] == " " or value[-1] == " " or "  " in value:
            raise UnsafeText(f"{field} has leading, trailing or doubled spaces")
        return value
    cleaned = clean_name(value, field=field, max_chars=max_chars)
    if cleaned != value:
        raise UnsafeText(f"{field} is not in Unicode normal form C")
    return cleaned


def lookalike_warning(value: str, *, field: str, country: str | None = None) -> str | None:
    """A warning if ``value`` can pass for something it is not, else None.

    Two cases: it mixes scripts using look-alike characters (``"PаyPal"``, a Cyrillic ``а``);
    or it is a *whole-script confusable* (Unicode TS #39): every letter is a non-Latin letter
    that looks like an ASCII one, so it reads as a Latin word (``"Сахар"`` reads ``"Caxap"``).
    The second is not flagged for a merchant in a ``country`` that writes that script
    (a Cyrillic name in Bulgaria is just a name).
    """
    protected = protected_match(value, protected_names())
    if protected is not None:
        written = sorted(a for a in _scripts(value) if a not in {"COMMON", "INHERITED"})
        return (
            f"{field} {value!r} looks like {protected!r} (Unicode confusables) but is not it"
            f" (letters: {', '.join(written) or 'none'}); check it is the merchant you expect"
        )
    if value.isascii():
        return None
    scripts = sorted(a for a in _scripts(value) if a not in {"COMMON", "INHERITED"})
    # Scripts that mimic each other's letters; Japanese mixing Han and Kana is normal.
    if len(set(scripts) & _HOMOGLYPH_SCRIPTS) >= 2 and _confusables().is_dangerous(value):
        return (
            f"{field} {value!r} mixes scripts ({', '.join(scripts)}) with look-alike"
            " characters; check it is the merchant you expect"
        )
    if len(scripts) != 1 or scripts[0] not in _HOMOGLYPH_SCRIPTS - {"LATIN"}:
        return None
    if country is not None and country.upper() in _SCRIPT_COUNTRIES.get(scripts[0], ()):
        return None
    reading = _latin_reading(value)
    if reading is None:
        return None
    return (
        f"{field} {value!r} is written in {scripts[0].title()} letters that look like Latin"
        f" ones: it reads as {reading!r}; check it is the merchant you expect"
    )


# Where a script is the everyday one (ISO 3166 alpha-2): whole-script names are not flagged.
_SCRIPT_COUNTRIES: dict[str, frozenset[str]] = {
    "CYRILLIC": frozenset(
        {"RU", "UA", "BY", "BG", "RS", "MK", "ME", "BA", "KZ", "KG", "TJ", "MN", "UZ"}
    ),
    "GREEK": frozenset({"GR", "CY"}),
    "ARMENIAN": frozenset({"AM"}),
    "GEORGIAN": frozenset({"GE"}),
}


def _latin_reading(value: str) -> str | None:
    """The ASCII text ``value`` passes for, when each of its (at least two) letters is a
    look-alike of an ASCII letter; None as soon as one letter has no such look-alike."""
    out: list[str] = []
    letters = 0
    for ch in value:
        if not ch.isalpha():
            out.append(ch)
            continue
        found = _confusables().is_confusable(ch, preferred_aliases=["latin"], greedy=True) or []
        ascii_like = [
            h["c"]
            for entry in found
            for h in entry["homoglyphs"]
            if len(h["c"]) == 1 and h["c"].isascii() and h["c"].isalpha()
        ]
        if not ascii_like:
            return None
        # the look-alike of the same case; TS #39 skeletons map capital I to "l"
        best = min(ascii_like, key=lambda c: c.isupper() != ch.isupper())
        out.append("I" if best == "l" and ch.isupper() else best)
        letters += 1
    return "".join(out) if letters >= 2 else None


def _confusables() -> ModuleType:
    """confusable_homoglyphs' table, imported on first use (only non-ASCII names need it)."""
    return importlib.import_module("confusable_homoglyphs.confusables")


def _scripts(value: str) -> set[str]:
    from confusable_homoglyphs import categories

    return set(categories.unique_aliases(value))


def preload() -> None:
    """Load now what the checks above load on first use (ICU's spoof checker, the Unicode script
    tables): a server calls it before serving, so no request opens a file for them (a request
    that did would fail when the process is out of file descriptors)."""
    lookalike_warning("PaypaI", field="preload")  # a look-alike: runs every lazy path
