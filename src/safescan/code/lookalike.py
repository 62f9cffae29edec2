"""Look-alike names: Unicode TS #39 confusable skeletons, NFKC folding, protected names.

Two names are look-alikes when their *keys* are equal: the key of a name is its NFKC form,
case-folded, reduced to its UTS #39 skeleton (ICU's ``SpoofChecker``, from the
``confusables.txt`` data of the Unicode version ICU carries), with spaces and common separators
dropped. So ``𝐏𝐚𝐲𝐏𝐚𝐥`` (mathematical bold), ``ＰａｙＰａｌ`` (fullwidth), ``РаyРаl``
(Cyrillic), ``PaypaI`` (capital I), ``Pay-Pal`` all have the key of ``PayPal``; ``ℊoogle``
(script g), ``Ⅿcdonald`` (Roman numeral) likewise.

* :func:`compatibility_letters`: the letters and digits of a name that NFKC would change
  (mathematical alphanumerics, letterlike symbols, Roman numerals, fullwidth and other
  compatibility forms): identity names (merchant name and city) must not contain any.
* :func:`protected_match`: the protected name (a brand, or another merchant's name) a name
  passes for, if any. The institution refuses such names at onboarding; the wallet warns.

Protected names: :data:`DEFAULT_PROTECTED` plus one name per line of the file named by
``$SAFESCAN_PROTECTED_NAMES`` (institution and wallet alike).
"""

from __future__ import annotations

import functools
import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from safescan.code.errors import UnsafeText

ENV_PROTECTED = "SAFESCAN_PROTECTED_NAMES"
#: Names that payment fraud imitates most; deployments add their own (one per line).
DEFAULT_PROTECTED: tuple[str, ...] = (
    "PayPal",
    "Visa",
    "Mastercard",
    "American Express",
    "Apple",
    "Apple Pay",
    "Google",
    "Google Pay",
    "Amazon",
    "Microsoft",
    "Alipay",
    "WeChat Pay",
    "Stripe",
    "Revolut",
    "Wise",
    "N26",
    "safescan",
)
_SEPARATORS = frozenset(" -_.,'’·&/")


@functools.lru_cache(maxsize=1)
def _checker() -> object:
    try:
        import icu
    except ImportError as exc:  # pragma: no cover - a runtime dependency
        raise UnsafeText(
            "look-alike checks need ICU: pip install pyicu-wheels (a runtime dependency)"
        ) from exc
    return icu.SpoofChecker()


def skeleton(text: str) -> str:
    """The UTS #39 skeleton of ``text`` (ICU)."""
    return str(_checker().getSkeleton(0, text))  # type: ignore[attr-defined]


def name_keys(text: str) -> frozenset[str]:
    """What a name looks like: for the name as written and its NFKC form, the skeleton of the
    case-folded text and the skeleton of the case-folded skeleton (so ``PaypaI``, capital I,
    and ``MICROSOFT`` both meet their originals), separators dropped. Two names look alike
    when their sets of keys meet."""
    keys = set()
    for form in (text, unicodedata.normalize("NFKC", text)):  # NFKC can hide a look-alike
        keys |= {skeleton(form.casefold()), skeleton(skeleton(form).casefold())}
    return frozenset("".join(ch for ch in k if ch not in _SEPARATORS) for k in keys) - {""}


def compatibility_letters(text: str) -> list[str]:
    """The letters, digits and letter-like symbols of ``text`` that NFKC folding changes
    (``𝐏``, ``ｐ``, ``ℊ``, ``Ⅿ``, ``ﬁ``...), described as ``U+1D40F MATHEMATICAL BOLD
    CAPITAL P (reads 'P')``."""
    if text.isascii():  # NFKC changes no ASCII character
        return []
    out = []
    for ch in text:
        folded = unicodedata.normalize("NFKC", ch)
        if folded == ch or not (
            ch.isalnum() or unicodedata.category(ch) in ("So", "Sm", "Nl", "No")
        ):
            continue
        if not any(c.isalnum() for c in folded):
            continue
        name = unicodedata.name(ch, "unnamed character")
        out.append(f"U+{ord(ch):04X} {name} (reads {folded!r})")
    return out


def check_identity_letters(text: str, *, field: str) -> None:
    """Refuse an identity name written with compatibility forms of letters or digits."""
    found = compatibility_letters(text)
    if found:
        raise UnsafeText(
            f"{field} uses look-alike forms of letters: {found[0]}; write it in plain letters"
        )


def protected_names(extra: Iterable[str] = ()) -> list[str]:
    """:data:`DEFAULT_PROTECTED`, the names in ``$SAFESCAN_PROTECTED_NAMES`` and ``extra``."""
    names = list(DEFAULT_PROTECTED)
    path = os.environ.get(ENV_PROTECTED)
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UnsafeText(f"cannot read {ENV_PROTECTED} ({path}): {exc.strerror}") from None
        names += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    names += [n for n in extra if n]
    return names


def protected_match(name: str, protected: Iterable[str]) -> str | None:
    """The protected name ``name`` looks like, when it is not that very name; else None."""
    keys = name_keys(name)
    for candidate in protected:
        if candidate != name and keys & name_keys(candidate):
            return candidate
    return None
