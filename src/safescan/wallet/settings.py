"""Settings of ``safescan wallet``: ``--config FILE.toml`` (``safescan wallet --config FILE
<command>``, or ``$SAFESCAN_WALLET_CONFIG``) plus ``SAFESCAN_WALLET_<SECTION>__<FIELD>``.

::

    # ~/.config/safescan/wallet.toml (every key optional; defaults shown)
    [wallet]
    dir = "~/.local/share/safescan/wallet"   # the wallet directory (else $SAFESCAN_WALLET_DIR)
    [server]                                 # `wallet serve`, the local wallet app
    host = "127.0.0.1"
    port = 8091
    allowed_hosts = []
    max_connections = 256                    # open client connections (below RLIMIT_NOFILE)
    max_per_address = 32                     # from one client address (0: no bound)
    head_timeout = 10.0                      # seconds for the TLS handshake and a request head
    body_timeout = 30.0                      # seconds for a request body
    institution = "https://..."              # offered on the enroll screen
    carrier = "tcp://..."
    [tls]                                    # `wallet serve` over HTTPS
    cert = "..."
    key = "..."

Options beat variables, variables beat the file. Without a settings file every command works
as before (``--wallet-dir``, ``$SAFESCAN_WALLET_DIR``); nothing to migrate. The wallet's own
``wallet.json`` holds no secret (the keys live in the key carrier).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from safescan.code import strictjson
from safescan.code.smallfile import read_bounded
from safescan.web.serving import ConnectionSection
from safescan.web.settings_file import Section, SettingsError, is_settings_file, load, shown

ENV_PREFIX = "SAFESCAN_WALLET_"
ENV_CONFIG = "SAFESCAN_WALLET_CONFIG"


class WalletSection(Section):
    """``[wallet]``: where the wallet lives."""

    dir: Path | None = None


class ServerSection(ConnectionSection):
    """``[server]``: the local wallet app (``wallet serve``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8091, ge=0, le=65535)
    allowed_hosts: list[str] = Field(default_factory=list)
    institution: str | None = None
    carrier: str | None = None


class TlsSection(Section):
    """``[tls]``: ``wallet serve`` over HTTPS."""

    cert: Path | None = None
    key: Path | None = None


class WalletSettings(BaseModel):
    """Every setting of ``safescan wallet``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wallet: WalletSection = Field(default_factory=WalletSection)
    server: ServerSection = Field(default_factory=ServerSection)
    tls: TlsSection = Field(default_factory=TlsSection)
    source: str | None = None


def settings_file(config: Path | None = None) -> Path | None:
    """``--config``, else ``$SAFESCAN_WALLET_CONFIG``; a file that is not ``.toml`` is refused."""
    given = config if config is not None else os.environ.get(ENV_CONFIG)
    if not given:
        return None
    if not is_settings_file(Path(given)):
        raise SettingsError(f"the wallet's settings file must be a .toml file, not {given}")
    return Path(given)


def wallet_settings(config: Path | None = None, **options: dict[str, Any]) -> WalletSettings:
    """The settings for a ``wallet`` command (options: ``{"server": {"port": 1}}``)."""
    file = settings_file(config)
    settings = load(WalletSettings, ENV_PREFIX, file, options)
    return settings.model_copy(update={"source": str(file) if file else None})


def configured_dir() -> Path | None:
    """The ``[wallet] dir`` of the settings file, if one is named."""
    if settings_file() is None:
        return None
    d = wallet_settings().wallet.dir
    return Path(d).expanduser() if d is not None else None


def describe(config: Path | None, directory: Path) -> dict[str, Any]:
    """``wallet config show``: the effective settings and what ``wallet.json`` in the wallet
    ``directory`` holds."""
    from safescan.web.pki import ca_from_pem, fingerprint

    out = shown(wallet_settings(config))
    out["wallet_dir"] = str(directory)
    try:
        doc = strictjson.loads(read_bounded(directory / "wallet.json"))
    except FileNotFoundError:
        out["wallet_state"] = {"exists": False}
        return out
    except (OSError, ValueError) as exc:
        raise SettingsError(
            f"cannot read {directory / 'wallet.json'}: {type(exc).__name__}"
        ) from None
    if not isinstance(doc, dict):
        raise SettingsError(f"cannot read {directory / 'wallet.json'}: not a JSON object")
    ca = doc.get("tls_ca")
    out["wallet_state"] = {
        "exists": True,
        "institution_url": doc.get("institution_url"),
        "carrier_url": doc.get("carrier_url"),
        "customer_id": doc.get("customer_id"),
        "tls_ca_sha256": fingerprint(ca_from_pem(str(ca), "tls_ca")) if ca else None,
    }
    return out


__all__ = ["ENV_CONFIG", "ENV_PREFIX", "WalletSettings", "describe", "wallet_settings"]
