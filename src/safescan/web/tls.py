"""TLS for safescan's local web servers, enabled by configuration.

A server started with a certificate and its key serves HTTPS (TLS 1.2 at least; the handshake
is done by the connection guard, :mod:`safescan.web.netguard`, which loads the same pair, so
that it counts against the connection bounds and the head deadline); the pages' origin, the
Origin check and the cookies' ``Secure`` flag follow the scheme. Without them it serves plain
HTTP, which only loopback addresses should do.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safescan.code.errors import SafescanError


class TlsConfigError(SafescanError):
    """The TLS settings are incomplete or the files cannot be used."""

    code = "tls_config_error"


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate chain (PEM) and its private key (PEM)."""

    certfile: Path
    keyfile: Path
    key_password: str | None = None

    @classmethod
    def from_options(cls, certfile: Path | None, keyfile: Path | None) -> TlsFiles | None:
        """Both or neither: one without the other is a :class:`TlsConfigError`."""
        if certfile is None and keyfile is None:
            return None
        if certfile is None or keyfile is None:
            raise TlsConfigError(
                "TLS needs both a certificate (--tls-cert) and its key (--tls-key)"
            )
        files = cls(Path(certfile), Path(keyfile))
        files.check()
        return files

    def check(self) -> None:
        """Load the pair once now, so a wrong file is a clear error before serving."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(self.certfile, self.keyfile, self.key_password)
        except FileNotFoundError as exc:
            raise TlsConfigError(f"TLS file not found: {exc.filename}") from None
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(
                f"the TLS certificate and key cannot be used together: {exc}"
            ) from None

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments for ``uvicorn.Config`` (TLS left to uvicorn: the benchmarks'
        servers; the safescan servers go through the guard instead)."""
        return {
            "ssl_certfile": str(self.certfile),
            "ssl_keyfile": str(self.keyfile),
            "ssl_keyfile_password": self.key_password,
            "ssl_version": ssl.PROTOCOL_TLS_SERVER,
        }


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to bind) is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def scheme(tls: TlsFiles | None) -> str:
    """``https`` with TLS, else ``http``."""
    return "https" if tls is not None else "http"
