"""Fuzz the webhook target rules (safescan.institution.webhook_targets): URL grammar and the
address rules that stop SSRF.

    .venv/bin/python fuzz/fuzz_webhook_url.py -atheris_runs=200000
    .venv/bin/python fuzz/fuzz_webhook_url.py -max_total_time=300 [CORPUS_DIR ...]

Input layout: ``data[0] % 4`` picks the target:

 0  the rest as UTF-8 (errors replaced): ``parse_webhook_url`` (https only)
 1  the same with plain http enabled
 2  the rest as Latin-1: ``parse_webhook_url`` with http enabled
 3  the first 4 or 16 bytes as an IPv4 / IPv6 address: ``address_refusal``, with and without
    an allow-list holding 127.0.0.1/32 and fd00::/8

Properties: only :class:`WebhookUrlRefused` escapes; an accepted URL is printable ASCII, at most
512 characters, and its normalised form parses again to itself (idempotent), with no ``#`` or
backslash, no ``@`` before the path, and a host with one reading (an IP literal is canonical; a
name has a dot and no numeric last label). An address the standard library calls private,
loopback, link-local, multicast, unspecified, site-local or (IPv4) reserved is always refused
unless allow-listed; an address accepted without an allow-list is one Python calls global;
IPv4-mapped, 6to4 and Teredo addresses are refused even when the IPv4 address inside is
allow-listed.
"""

from __future__ import annotations

import ipaddress
import sys
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz._common import count, main
from safescan.api.errors import WebhookUrlRefused
from safescan.code.errors import SafescanError
from safescan.institution.webhook_targets import (
    MAX_URL,
    address_refusal,
    parse_allow_list,
    parse_webhook_url,
)

OUTCOMES: Counter[str] = Counter()
TARGETS = 4
ALLOW = parse_allow_list(["127.0.0.1/32", "fd00::/8"])
EMBEDDING = tuple(
    ipaddress.IPv6Network(n) for n in ("::ffff:0:0/96", "2002::/16", "2001::/32", "::/96")
)

URLS = (
    "https://hooks.shop.example/webhooks/safescan",
    "https://hooks.shop.example:8443/a/b?x=1&y=%20z",
    "HTTPS://Hooks.Shop.Example",
    "https://93.184.215.14/h",
    "https://[2606:4700:4700::1111]:8443/h?q",
    "http://127.0.0.1:8080/hook",
    "http://2130706433/",
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://[::ffff:127.0.0.1]/",
    "http://[fe80::1%25eth0]/",
    "https://user:pw@hooks.shop.example/",
    "https://hooks.shop.example#frag",
    "https://hooks.shop.example\\@evil.example/",
    "https://xn--bcher-kva.example/",
    "https://localhost/",
    "https://api.internal/",
    "https://hooks.shop.example:22/",
    "https://hooks.shop.example:99999/",
    "gopher://127.0.0.1:6379/_",
)
ADDRESSES = (
    "127.0.0.1",
    "169.254.169.254",
    "10.0.0.1",
    "100.64.0.1",
    "8.8.8.8",
    "0.0.0.0",  # noqa: S104 - an address to refuse, not to bind
    "255.255.255.255",
    "::1",
    "::ffff:127.0.0.1",
    "64:ff9b::7f00:1",
    "64:ff9b::808:808",
    "2002:7f00:1::",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",
    "fd00:ec2::254",
    "fe80::1",
    "2606:4700:4700::1111",
)
TOKENS = tuple(
    t.encode()
    for t in (
        "https://",
        "http://",
        "://",
        "[",
        "]",
        "@",
        "#",
        "%",
        "%2e",
        "\\",
        ":",
        ":443",
        ":8080",
        "0x",
        "0177",
        "::ffff:",
        "64:ff9b::",
        "127.0.0.1",
        "169.254.169.254",
        ".localhost",
        "xn--",
        "?",
        "/",
        ".",
    )
)


def _check_url(text: str, allow_http: bool) -> None:
    t = parse_webhook_url(text, allow_http=allow_http)
    assert t.url.isascii() and t.url.isprintable() and len(t.url) <= MAX_URL, t
    assert not any(c in t.url for c in "#\\ "), t
    authority = t.url.split("://", 1)[1].split("/", 1)[0]
    assert "@" not in authority and "?" not in authority, t
    assert parse_webhook_url(t.url, allow_http=allow_http) == t, (text, t)
    assert t.target.startswith("/") and 1 <= t.port <= 65535
    if t.literal is None:
        assert "." in t.host and not t.host.rsplit(".", 1)[1].isdigit(), t
    else:
        assert t.host == str(t.literal), t


def _check_address(raw: bytes) -> None:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    ip = ipaddress.IPv6Address(raw[:16]) if len(raw) >= 16 else ipaddress.IPv4Address(raw[:4])
    plain, allowed = address_refusal(ip), address_refusal(ip, ALLOW)
    special = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
    special = special or ip.is_unspecified
    if isinstance(ip, ipaddress.IPv4Address):
        special = special or ip.is_reserved
    else:
        special = special or ip.is_site_local
    if special:
        assert plain is not None, ip
    if plain is None:
        assert ip.is_global, ip
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in n for n in EMBEDDING):
        assert allowed is not None or any(ip in n for n in ALLOW), ip
    if any(ip.version == n.version and ip in n for n in ALLOW):
        assert allowed is None, ip
    OUTCOMES["address refused" if plain else "address public"] += 1


def _target(mode: int, payload: bytes) -> None:
    if mode == 3:
        if len(payload) >= 4:
            _check_address(payload)
        return
    text = payload.decode("latin-1" if mode == 2 else "utf-8", "replace" if mode < 2 else "strict")
    _check_url(text, allow_http=mode != 0)


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the atheris / libFuzzer name)
    """One fuzz input; raises only on a crash (an untyped exception or a broken property)."""
    if not data:
        return
    try:
        _target(data[0] % TARGETS, data[1:])
    except WebhookUrlRefused as exc:
        count(OUTCOMES, exc)
    except SafescanError as exc:  # any other typed error is a bug here: only refusals expected
        raise AssertionError(f"unexpected {type(exc).__name__}: {exc.message}") from exc
    else:
        if data[0] % TARGETS != 3:
            count(OUTCOMES, None)


def seeds() -> list[bytes]:
    """Every sample URL in each text mode, every sample address in its byte form."""
    out = [bytes([mode]) + url.encode() for url in URLS for mode in range(3)]
    out += [bytes([3]) + ipaddress.ip_address(a).packed for a in ADDRESSES]
    return out


if __name__ == "__main__":
    main(TestOneInput, seeds(), TOKENS, OUTCOMES)
