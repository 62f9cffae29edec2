"""Untrusted text on its way to a person: made inert for each renderer.

Merchant and item names, order references, EMV fields, scanned text, error messages that quote
input: none of it may steer how it is shown. Every renderer gets it through one of these:

* :func:`visible`: control, format (bidi, zero-width...) and other invisible characters become
  visible ``\\u202e``-style escapes, so nothing hides, reorders or drives a terminal (ESC);
* :func:`term`: :func:`visible`, then rich's markup escaping (``[bold]`` prints as text): for
  every value put into a rich markup string, table cell, panel title or status line;
* :func:`html_text`: :func:`visible`, then HTML escaping (quotes included), for the web pages.

PNG and SVG outputs hold no text: a QR image is modules only (``safescan.code.qr``).
"""

from __future__ import annotations

import html
import unicodedata

from rich.markup import escape

from safescan.code.text import forbidden_char


def visible(value: object) -> str:
    """``value`` as text with every character no stored text may hold shown as an escape."""
    text = str(value)
    if forbidden_char(text) is None:
        return text
    out = []
    for ch in text:
        if forbidden_char(ch) is None:
            out.append(ch)
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def term(value: object) -> str:
    """``value`` for a rich markup string: visible and markup-escaped."""
    return escape(visible(value))


def html_text(value: object) -> str:
    """``value`` for HTML text or a quoted attribute: visible and HTML-escaped."""
    return html.escape(visible(value), quote=True)


def describe(ch: str) -> str:
    """``U+202E RIGHT-TO-LEFT OVERRIDE``."""
    return f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed character')}"
