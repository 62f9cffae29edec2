"""The institution's HTTPS: the certificate ``init`` makes or takes, the one ``serve`` presents.

Default layout: ``<key directory>.tls/`` holds ``ca.pem`` (the CA clients pin), ``ca.key``
(sealed under the institution's passphrase; a clear one from an older release still loads),
``server.pem`` and ``server.key`` (:class:`safescan.web.pki.TlsDir`). ``[tls] cert``/``key`` in
the settings name the operator's own certificate instead. Plain HTTP is served only when asked
for (``[tls] plain_http``, ``serve --plain-http``) on a loopback address.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safescan.api.errors import ConfigError
from safescan.institution.settings import Settings
from safescan.web.pki import DEFAULT_NAMES, TlsDir, ca_fingerprint, create_tls_dir, san_entries
from safescan.web.tls import TlsFiles, is_loopback


def default_tls_dir(key_dir: Path) -> TlsDir:
    """``<key directory>.tls`` beside the key directory."""
    key_dir = Path(key_dir)
    return TlsDir(key_dir.with_name(key_dir.name + ".tls"))


@dataclass(frozen=True)
class ServerTls:
    """What ``serve`` presents: the certificate files, and the CA clients pin (if known)."""

    files: TlsFiles
    ca: Path | None

    def describe(self) -> dict[str, str | None]:
        """For ``--json`` output: the CA path and its SHA-256 fingerprint."""
        if self.ca is None:
            return {"ca": None, "ca_sha256": None}
        return {"ca": str(self.ca), "ca_sha256": ca_fingerprint(self.ca)}


def init_tls(settings: Settings, key_dir: Path, passphrase: bytes) -> ServerTls:
    """For ``init``: check the operator's certificate (``[tls] cert``/``key``), else make a CA
    (its key sealed under ``passphrase``) and a server certificate in the default directory
    (refusing one that exists)."""
    tls = settings.tls
    if tls.cert is not None or tls.key is not None:
        return ServerTls(_operator_files(settings), tls.ca)
    target = default_tls_dir(key_dir)
    create_tls_dir(target, list(tls.names), passphrase=passphrase)
    return ServerTls(TlsFiles(target.server_cert, target.server_key), target.ca_cert)


def _operator_files(settings: Settings) -> TlsFiles:
    tls = settings.tls
    files = TlsFiles.from_options(tls.cert, tls.key)
    assert files is not None
    if tls.key_password is not None:
        files = TlsFiles(files.certfile, files.keyfile, tls.key_password.get_secret_value())
        files.check()
    return files


def server_tls(settings: Settings, key_dir: Path | None) -> ServerTls | None:
    """For ``serve``: the configured certificate, else the one ``init`` made; ``None`` (plain
    HTTP) only with ``plain_http`` on a loopback address. A :class:`ConfigError` otherwise."""
    tls, host = settings.tls, settings.server.host
    if tls.plain_http:
        if tls.cert is not None or tls.key is not None:
            raise ConfigError("tls.plain_http and a TLS certificate are both configured")
        if not is_loopback(host):
            raise ConfigError(
                f"plain HTTP is served on loopback addresses only, not {host}: configure TLS"
            )
        return None
    if tls.cert is not None or tls.key is not None:
        return ServerTls(_operator_files(settings), tls.ca)
    made = default_tls_dir(key_dir) if key_dir is not None else None
    if made is not None and made.exists():
        files = TlsFiles(made.server_cert, made.server_key)
        files.check()
        return ServerTls(files, made.ca_cert if made.ca_cert.is_file() else None)
    where = f" (none in {made.path})" if made is not None else ""
    raise ConfigError(
        f"no TLS certificate{where}: run `safescan institution tls init`, set tls.cert and"
        " tls.key, or (loopback only) --plain-http"
    )


def check_init_tls(settings: Settings, key_dir: Path) -> None:
    """Everything :func:`init_tls` could refuse, checked before ``init`` writes anything."""
    tls = settings.tls
    if tls.cert is not None or tls.key is not None:
        _operator_files(settings)
        return
    san_entries([*DEFAULT_NAMES, *tls.names])
    target = default_tls_dir(key_dir)
    if target.ca_cert.exists() or target.ca_key.exists():
        raise ConfigError(f"{target.path} already holds a CA (another institution's?)")
