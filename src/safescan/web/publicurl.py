"""The base of the links the institution hands out (``[server] public_url``: checkout links),
checked and normalised in one place for the institution's settings and the cluster's
``--public-url`` (the cluster may not import the institution: tests/test_layers.py)."""

from __future__ import annotations


def public_base_url(text: str) -> str:
    """The ``[server] public_url`` setting checked and normalised (``ValueError`` otherwise):
    ``http(s)://host[:port]`` with an optional trailing ``/``, nothing else (no path, query,
    fragment, user information, space or control character), so a link built on it is
    exactly ``<base>/checkout/<id>``."""
    from urllib.parse import urlsplit

    if not text or len(text) > 200 or any(not 0x21 <= ord(c) <= 0x7E for c in text):
        raise ValueError("public_url: printable ASCII, at most 200 characters, no spaces")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("public_url must be http(s)://host[:port], e.g. https://pay.example.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError("public_url is a scheme, a host and a port only: no path, query or user")
    if "\\" in text or text.endswith("?") or text.endswith("#"):
        raise ValueError("public_url is a scheme, a host and a port only: no path, query or user")
    try:
        parts.port  # noqa: B018 - a bad port raises
    except ValueError:
        raise ValueError("public_url has a bad port") from None
    return f"{parts.scheme}://{parts.netloc.lower()}"


__all__ = ["public_base_url"]
