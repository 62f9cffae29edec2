"""Where a checkout page may send the customer's browser: the merchant's ``success_url`` and
``cancel_url``, checked once when the session is made (docs/checkout.md, "Redirects").

The hosted checkout page navigates to these URLs, so a loose check would turn the institution's
page into an open redirect or a script runner. One unambiguous reading only:

* ``https://`` (``http://`` only to the loopback hosts ``127.0.0.1``, ``[::1]`` and
  ``localhost``, for a shop under test on the same machine); every other scheme is refused
  (``javascript:``, ``data:``, ``vbscript:``, ``file:``, scheme-relative ``//host`` ...);
* printable ASCII only: no spaces, control characters, backslashes (``https:\\\\evil``) or
  non-ASCII look-alikes (international names in their ``xn--`` form);
* no user information (``https://shop.example@evil.example/``), a real host (a DNS name with
  a dot, or an IP literal in its canonical form), a port from 1 to 65535;
* path, query and fragment of URL characters, ``%`` only as a ``%XX`` escape.

``{CHECKOUT_SESSION_ID}`` anywhere in the URL is replaced by the session's id when the session is
made (so the shop's success page can look the session up), and the result is checked again.
"""

from __future__ import annotations

import ipaddress
import re

from safescan.api.errors import InvalidRequest

MAX_URL = 512  # the database column
PLACEHOLDER = "{CHECKOUT_SESSION_ID}"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "[::1]", "localhost"})

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_CANONICAL_V4 = re.compile(
    r"^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$"
)
_NUMERIC_LAST = re.compile(r"^(?:[0-9]+|0[xX][0-9A-Fa-f]*)$")
_CHARS = r"A-Za-z0-9\-._~!$&'()*+,;=:@/%?"
_REST = re.compile(rf"^(?:/[{_CHARS}]*)?(?:\?[{_CHARS}]*)?(?:#[{_CHARS}]*)?$")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _refuse(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{param} {why}", param=param)


def redirect_url(url: object, *, param: str, session_id: str) -> str:
    """``url`` checked and normalised (lower-case scheme and host), with ``{CHECKOUT_SESSION_ID}``
    replaced by ``session_id``; :class:`InvalidRequest` (``param``) otherwise."""
    if not isinstance(url, str) or not url:
        raise _refuse(param, "must be a non-empty string")
    if len(url) > MAX_URL:
        raise _refuse(param, f"is longer than {MAX_URL} characters")
    url = url.replace(PLACEHOLDER, session_id)
    if any(not 0x21 <= ord(c) <= 0x7E for c in url):
        raise _refuse(
            param,
            "may hold printable ASCII only (no spaces, control characters or non-ASCII letters:"
            " write international names in their xn-- form)",
        )
    if "\\" in url:
        raise _refuse(param, "may not contain a backslash")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("https", "http"):
        raise _refuse(param, "must start with https://")
    cut = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        raise _refuse(param, "may not contain user information ('user@host')")
    host, port = _authority(authority, param)
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        raise _refuse(param, "must use https (http only to 127.0.0.1, [::1] or localhost)")
    if tail and tail[0] in "?#":
        tail = "/" + tail
    if not _REST.match(tail) or _BAD_PERCENT.search(tail):
        raise _refuse(
            param, "has a character in its path, query or fragment that must be %-encoded"
        )
    normalised = f"{scheme}://{host}{port}{tail or '/'}"
    if len(normalised) > MAX_URL:
        raise _refuse(param, f"is longer than {MAX_URL} characters")
    return normalised


def _authority(authority: str, param: str) -> tuple[str, str]:
    """(host as written back, ``:port`` or "")."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise _refuse(param, "has an unclosed '[' in its host")
        inner, after = authority[1:end], authority[end + 1 :]
        try:
            host = f"[{ipaddress.IPv6Address(inner)}]"
        except ValueError:
            raise _refuse(param, "has a bracketed host that is not an IPv6 address") from None
        if after and not after.startswith(":"):
            raise _refuse(param, "has text after its IPv6 host")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text_ = authority.partition(":")
        port_text = port_text_ if colon else None
        host = host.lower()
        if not host:
            raise _refuse(param, "has no host")
        if not _CANONICAL_V4.match(host) and host != "localhost":
            labels = host.split(".")
            if _NUMERIC_LAST.match(labels[-1]):
                raise _refuse(param, "names an IPv4 address in a non-standard form (write a.b.c.d)")
            if len(host) > 253 or len(labels) < 2 or not all(_LABEL.match(x) for x in labels):
                raise _refuse(
                    param,
                    "must name a full DNS name (letters, digits, hyphens, at least one dot)"
                    " or an IP address",
                )
    if port_text is None:
        return host, ""
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= len(port_text) <= 5:
        raise _refuse(param, "has a port that is not a number from 1 to 65535")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise _refuse(param, "has a port that is not a number from 1 to 65535")
    return host, f":{port}"


__all__ = ["LOOPBACK_HOSTS", "MAX_URL", "PLACEHOLDER", "redirect_url"]
