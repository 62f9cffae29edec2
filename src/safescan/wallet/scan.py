"""Scanning: what an input holds, classified without acting on it, and what the customer is
shown about a code the carrier verified. No carrier session and no network here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safescan.carrier.client import CodeContents
from safescan.code.currency import currency as lookup_currency
from safescan.code.inspect import inspect_text
from safescan.code.lookalike import protected_match, protected_names
from safescan.code.payment import CodeKind
from safescan.code.source import read_source
from safescan.wallet.errors import NotPayable

MAX_TEXT_INPUT = 8192


@dataclass(frozen=True)
class Scan:
    """What an input holds, classified without acting on it."""

    kind: str  # "safescan", "emv", "url" or "text"
    text: str
    info: dict[str, Any]

    @property
    def payable(self) -> bool:
        """Only safescan codes can be paid here."""
        return self.kind == "safescan"


def read_input(source: str | Path) -> str:
    """An image file is decoded (QR), a text file read; a path with no file is
    ``InputNotFound``; anything else is taken as the payload text itself."""
    text = str(source)
    if not isinstance(source, Path) and len(text) > MAX_TEXT_INPUT:
        raise NotPayable(f"the input is {len(text)} characters: too large to be a payment code")
    return read_source(source)


def classify(text: str, *, now: int | None = None) -> Scan:
    """Say what ``text`` is (safescan code, EMV code, link, text); never opens or follows it."""
    info = inspect_text(text, now=int(time.time()) if now is None else now)
    kind = str(info.get("kind"))
    if kind == "unknown":
        kind = "url" if info.get("looks_like") == "url" else "text"
    return Scan(kind=kind, text=text, info=info)


def _protected_name_warnings(name: str, already: Sequence[str]) -> list[str]:
    """The wallet's own look-alike check, with the names *it* protects
    (``$SAFESCAN_PROTECTED_NAMES``): the card's warnings use the card's list."""
    like = protected_match(name, protected_names())
    if like is None or any(repr(like) in w for w in already):
        return []
    return [
        f"merchant name {name!r} looks like {like!r} (Unicode confusables) but is not it;"
        " check it is the merchant you expect"
    ]


def describe_contents(contents: CodeContents, *, now: int | None = None) -> dict[str, Any]:
    """What the customer is shown about a verified code."""
    now = int(time.time()) if now is None else now
    m = contents.merchant
    cur = lookup_currency(contents.currency) if contents.currency is not None else None
    doc: dict[str, Any] = {
        "kind": "dynamic" if contents.kind is CodeKind.DYNAMIC else "static",
        "merchant": m.shown_json(),
        "issuer": contents.issuer,
        "issuer_kid": contents.issuer_kid,
        "certificate_serial": contents.certificate_serial,
        "order_id": contents.order_id,
        "items": [i.display_json(contents.currency) for i in contents.items],
        "total": contents.total,
        "currency": cur.alpha if cur else None,
        "total_display": cur.format(contents.total)
        if cur is not None and contents.total is not None
        else None,
        "issued_at": contents.issued_at,
        "expires_at": contents.expires_at,
        "expires_in": max(0, contents.expires_at - now),
        "warnings": [*contents.warnings, *_protected_name_warnings(m.name, contents.warnings)],
        "digest": contents.digest.hex(),
    }
    return doc


def not_payable_message(scan: Scan) -> str:
    if scan.kind == "emv":
        return "an EMVCo QR code: unverified (no signature), not payable here"
    if scan.kind == "url":
        return "a link, not a payment code; it was not opened"
    return "not a payment code; it was shown as text only"
