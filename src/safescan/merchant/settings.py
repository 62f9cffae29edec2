"""Settings of ``safescan pos``: ``--config FILE.toml`` plus ``SAFESCAN_POS_<SECTION>__<FIELD>``.

::

    # /etc/safescan/pos.toml (every key optional; defaults shown)
    [terminal]
    file = "~/.config/safescan/pos.json"   # the onboarded terminal (merchant id, sealed API key,
                                           # pinned CA): written by `pos onboard`
    passphrase_file = "..."                # the API key passphrase (else $SAFESCAN_POS_PASSPHRASE)
    [server]                               # `pos serve`
    host = "127.0.0.1"
    port = 8090
    allowed_hosts = []
    max_connections = 256                  # open client connections (kept below RLIMIT_NOFILE)
    max_per_address = 32                   # open connections from one client address (0: any)
    head_timeout = 10.0                    # seconds for the TLS handshake and a request head
    body_timeout = 30.0                    # seconds for a request body
    [tls]                                  # `pos serve` over HTTPS
    cert = "/etc/safescan/pos-tls/cert.pem"
    key = "/etc/safescan/pos-tls/key.pem"

Compatibility: ``--config`` (and ``$SAFESCAN_POS_CONFIG``) naming anything but a ``.toml`` file
is the terminal's JSON file itself, as before settings files existed; nothing to migrate.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from safescan.code.smallfile import read_small_text
from safescan.merchant.config import (
    ENV_CONFIG,
    ENV_PASSPHRASE,
    PosConfig,
    PosConfigError,
    default_path,
)
from safescan.web.serving import ConnectionSection
from safescan.web.settings_file import Section, is_settings_file, load

ENV_PREFIX = "SAFESCAN_POS_"


class TerminalSection(Section):
    """``[terminal]``: the onboarded terminal's file and the passphrase of its API key."""

    file: Path | None = Field(default=None, description="the terminal's JSON (pos.json)")
    passphrase_file: Path | None = Field(default=None, description="the API key's passphrase")


class ServerSection(ConnectionSection):
    """``[server]``: where ``pos serve`` listens."""

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    allowed_hosts: list[str] = Field(default_factory=list)


class TlsSection(Section):
    """``[tls]``: ``pos serve`` over HTTPS."""

    cert: Path | None = None
    key: Path | None = None


class PosSettings(BaseModel):
    """Every setting of ``safescan pos``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    terminal: TerminalSection = Field(default_factory=TerminalSection)
    server: ServerSection = Field(default_factory=ServerSection)
    tls: TlsSection = Field(default_factory=TlsSection)
    source: str | None = None  # the settings file read, if any

    @property
    def terminal_file(self) -> Path:
        """The terminal's JSON: ``[terminal] file``, else the default place."""
        return Path(self.terminal.file).expanduser() if self.terminal.file else default_path()

    def passphrase(self) -> bytes | None:
        """The API key's passphrase from ``[terminal] passphrase_file`` (None: the environment
        variables decide, as before)."""
        if self.terminal.passphrase_file is None or os.environ.get(ENV_PASSPHRASE) is not None:
            return None
        try:
            lines = read_small_text(Path(self.terminal.passphrase_file)).splitlines()
        except OSError as exc:
            raise PosConfigError(f"cannot read terminal.passphrase_file: {exc.strerror}") from None
        return (lines[0] if lines else "").encode()


def pos_settings(config: Path | None, **options: dict[str, Any]) -> PosSettings:
    """The settings for a ``pos`` command given ``--config`` (else ``$SAFESCAN_POS_CONFIG``)
    and its options (``{"server": {"port": 8443}}``; ``None`` values are not set)."""
    given = config if config is not None else os.environ.get(ENV_CONFIG)
    file = Path(given) if given else None
    layers: dict[str, dict[str, Any]] = {k: dict(v) for k, v in options.items()}
    if file is not None and not is_settings_file(file):  # the terminal's JSON itself
        layers.setdefault("terminal", {})["file"] = file
        file = None
    settings = load(PosSettings, ENV_PREFIX, file, layers)
    return settings.model_copy(update={"source": str(file) if file else None})


def load_terminal(config: Path | None) -> PosConfig:
    """The onboarded terminal the settings name, its API key opened."""
    site = pos_settings(config)
    return PosConfig.load(site.terminal_file, passphrase=site.passphrase())


def describe(config: Path | None) -> dict[str, Any]:
    """``pos config show``: the effective settings and what the terminal's file holds, without
    opening its API key (shown masked) or reading the passphrase."""
    from safescan.code import strictjson
    from safescan.code.smallfile import read_bounded
    from safescan.web.pki import ca_from_pem, fingerprint
    from safescan.web.settings_file import MASK, shown

    site = pos_settings(config)
    out = shown(site)
    path = site.terminal_file
    try:
        doc = strictjson.loads(read_bounded(path))
    except FileNotFoundError:
        out["terminal_state"] = {"exists": False}
        return out
    except (OSError, ValueError) as exc:
        raise PosConfigError(f"cannot read {path}: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise PosConfigError(f"cannot read {path}: not a JSON object")
    ca = doc.get("tls_ca")
    out["terminal_state"] = {
        "exists": True,
        "institution_url": doc.get("institution_url"),
        "merchant_id": doc.get("merchant_id"),
        "currency": doc.get("currency", "EUR"),
        "api_public_key": doc.get("api_public_key"),
        "api_key": MASK if ("api_key_pkcs12" in doc or "api_key" in doc) else None,
        "api_key_encrypted": "api_key_pkcs12" in doc,
        "tls_ca_sha256": fingerprint(ca_from_pem(str(ca), "tls_ca")) if ca else None,
    }
    return out


__all__ = ["ENV_PREFIX", "PosSettings", "describe", "load_terminal", "pos_settings"]
