"""Path traversal through the institution's two file routes (redteam): the documentation
pages' files (``/static-offline-docs/``, Starlette's StaticFiles) and the hosted checkout
page's files (``/checkout-assets/{name}``, an allow-list of two names). Raw request targets
(no client normalises them) with dot segments, percent-encoded and double-encoded dots and
slashes, backslashes, NUL, absolute paths: never a file outside the allowed set (no
``/etc/passwd``, no Python source of the package), and the allowed files still served. The
app is served by uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import socket

import pytest

from tests.institution.test_strict_requests import Served, served

assert served  # the module's server fixture

TARGETS = [
    b"{p}../../../../../../etc/passwd",
    b"{p}..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    b"{p}%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    b"{p}%252e%252e/%252e%252e/etc/passwd",
    b"{p}....//....//....//etc/passwd",
    b"{p}..\\..\\..\\..\\etc\\passwd",
    b"{p}%2fetc%2fpasswd",
    b"{p}/etc/passwd",
    b"{p}..%00/etc/passwd",
    b"{p}../__init__.py",
    b"{p}../../http/app.py",
    b"{p}..%2f..%2fhttp%2fapp.py",
    b"{p}checkout.html/../../app.py",
    b"{p}../static/checkout.html",
]
PREFIXES = [b"/static-offline-docs/", b"/checkout-assets/"]


def _get(served: Served, target: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", served.port), timeout=20) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


@pytest.mark.parametrize("prefix", PREFIXES, ids=["docs-files", "checkout-assets"])
def test_no_file_outside_the_allowed_set_is_served(served: Served, prefix: bytes) -> None:
    for pattern in TARGETS:
        target = pattern.replace(b"{p}", prefix)
        out = _get(served, target)
        status = out.split(b"\r\n", 1)[0]
        assert not status.startswith(b"HTTP/1.1 2"), (target, out[:300])
        assert b"root:" not in out and b"from __future__" not in out, target
        assert b"create_app" not in out and b"<html" not in out.lower(), target
    # the allowed files are still served
    assert _get(served, b"/checkout-assets/checkout.js").startswith(b"HTTP/1.1 200")
