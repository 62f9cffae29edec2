"""Forwarded headers cannot buy a client fresh per-address rate limits (issue #13 item 9).

A real ``safescan institution serve`` with a per-address limit of 3 requests and one more every
1000 s after (so nothing refills while a test runs, however slow the machine):
a client that names a new address in every request (``X-Forwarded-For``, ``Forwarded``,
``X-Real-IP``, ...) is still one client. With ``--trusted-proxy 127.0.0.1`` the operator says
"my proxy on this host speaks for clients", and then the forwarded address counts.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from safescan.api.errors import ConfigError
from safescan.institution.proxies import parse_trusted_proxies, uvicorn_proxy_settings
from tests.institution.harness import ServerProcess, init_db

RATE, BURST = "0.001", "3"
SPOOFS = [
    lambda i: {"X-Forwarded-For": f"203.0.113.{i}"},
    lambda i: {"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.{i}"},
    lambda i: {"Forwarded": f"for=192.0.2.{i};proto=https"},
    lambda i: {"X-Real-IP": f"192.0.2.{i}", "Client-IP": f"192.0.2.{i}"},
    lambda i: {"X-Forwarded-For": f"2001:db8::{i}", "X-Forwarded-Proto": "https"},
]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with tempfile.TemporaryDirectory(prefix="safescan-fwd-") as d:
        db = f"sqlite:///{Path(d) / 'inst.db'}"
        init_db(db, Path(d) / "keys")
        limits = ["--merchant-rate", RATE, "--merchant-burst", BURST]
        plain = ServerProcess(db, Path(d) / "keys", extra=limits).start()
        proxied = ServerProcess(
            db, Path(d) / "keys", extra=[*limits, "--trusted-proxy", "127.0.0.1"]
        ).start()
        try:
            yield plain, proxied
        finally:
            plain.stop()
            proxied.stop()


def _status(server: ServerProcess, headers: dict[str, str], source: str = "127.0.0.1") -> int:
    """POST a code status request from the loopback address ``source`` (over TLS, the CA
    pinned)."""
    transport = httpx.HTTPTransport(local_address=source, verify=server.verify)
    with httpx.Client(transport=transport) as client:
        r = client.post(
            server.base_url + "/v1/codes/status", json={"code": "SS1:NOTACODE"}, headers=headers
        )
    return r.status_code


@pytest.mark.parametrize("spoof", range(len(SPOOFS)))
def test_spoofed_forwarded_headers_do_not_reset_the_per_address_limit(
    servers: tuple[ServerProcess, ServerProcess], spoof: int
) -> None:
    plain, _ = servers
    source = f"127.0.0.{10 + spoof}"  # each variation is a new client with a full bucket
    codes = [_status(plain, SPOOFS[spoof](i + 1), source) for i in range(12)]
    assert all(c != 429 for c in codes[: int(BURST)]), codes
    assert codes[int(BURST) :] == [429] * (12 - int(BURST)), codes
    transport = httpx.HTTPTransport(local_address=source, verify=plain.verify)
    with httpx.Client(transport=transport) as client:
        r = client.post(plain.base_url + "/v1/codes/status", json={"code": "x"})
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited" and r.headers["Retry-After"]


def test_a_configured_proxy_is_believed(servers: tuple[ServerProcess, ServerProcess]) -> None:
    _, proxied = servers
    # every client behind the proxy has its own bucket: 8 distinct clients, one request each
    codes = [_status(proxied, {"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(8)]
    assert 429 not in codes
    # one client behind the proxy is limited like any other
    same = [_status(proxied, {"X-Forwarded-For": "198.51.100.7"}) for _ in range(8)]
    assert 429 in same
    # the RFC 7239 header is never read, even from the trusted proxy
    fwd = [_status(proxied, {"Forwarded": f"for=192.0.2.{i}"}) for i in range(8)]
    assert 429 in fwd


def test_trusted_proxy_option_is_validated() -> None:
    assert uvicorn_proxy_settings([]) == {"proxy_headers": False, "forwarded_allow_ips": ""}
    assert uvicorn_proxy_settings(["10.0.0.5", "10.1.0.0/16"])["forwarded_allow_ips"] == (
        "10.0.0.5,10.1.0.0/16"
    )
    for bad in ("*", "proxy.example", "0.0.0.0/0", "::/0", "10.0.0.300", ""):
        with pytest.raises(ConfigError):
            parse_trusted_proxies([bad])
