"""Which peers may speak for a client through forwarded headers.

uvicorn believes ``X-Forwarded-For`` and ``X-Forwarded-Proto`` from 127.0.0.1 unless told
otherwise, so any local process (or anything a local reverse proxy relays verbatim) could pick
the client address that per-address rate limits count. safescan turns that off: the peer
address is the client, unless the operator names the proxies (``--trusted-proxy``) whose
forwarded headers are then believed. The RFC 7239 ``Forwarded`` header is never read.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from safescan.api.errors import ConfigError


def parse_trusted_proxies(values: list[str]) -> list[str]:
    """Validated proxy addresses or networks (``10.0.0.5``, ``10.0.0.0/24``, ``::1``)."""
    out = []
    for value in values:
        text = value.strip()
        try:
            if "/" in text:
                ipaddress.ip_network(text, strict=False)
            else:
                ipaddress.ip_address(text)
        except ValueError:
            raise ConfigError(
                f"--trusted-proxy takes an IP address or network, not {value!r}"
            ) from None
        if text in ("0.0.0.0/0", "::/0"):
            raise ConfigError("--trusted-proxy must name the proxies, not every address")
        out.append(text)
    return out


def uvicorn_proxy_settings(values: list[str]) -> dict[str, Any]:
    """uvicorn's ``proxy_headers`` / ``forwarded_allow_ips`` for the given trusted proxies."""
    proxies = parse_trusted_proxies(values)
    if not proxies:
        return {"proxy_headers": False, "forwarded_allow_ips": ""}
    return {"proxy_headers": True, "forwarded_allow_ips": ",".join(proxies)}
