"""`safescan institution tls ...`: the private CA and the server certificate (docs/operations.md,
"TLS")."""

from __future__ import annotations

from typing import Annotated, TypedDict

import typer

from safescan.code.cli_app import new_app
from safescan.code.errors import SafescanError
from safescan.code.output import emit_json, say
from safescan.institution.cli_options import (
    ConfigOpt,
    DbOpt,
    JsonOpt,
    KeysOpt,
    PassOpt,
    passphrase_of,
)
from safescan.institution.cli_options import fail_cli as _fail
from safescan.institution.cli_options import settings_for as _settings

tls_app = new_app(help="The institution's private CA and HTTPS server certificate.")

NamesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--tls-name",
        help="DNS name or IP address besides localhost, 127.0.0.1 and ::1 (repeatable;"
        " default: tls.names)",
    ),
]


class CertInfo(TypedDict):
    """What ``tls init``/``issue`` print of a server certificate."""

    server_cert: str
    names: list[str]
    not_after: str
    sha256: str


def _describe(cert_path: str) -> CertInfo:
    from pathlib import Path

    from cryptography import x509

    from safescan.code.smallfile import read_bounded
    from safescan.web.pki import fingerprint

    cert = x509.load_pem_x509_certificates(read_bounded(Path(cert_path)))[0]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {
        "server_cert": cert_path,
        "names": [str(n.value) for n in sans],
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256": fingerprint(cert),
    }


@tls_app.command("init")
def tls_init(
    db: DbOpt = None,
    keys: KeysOpt = None,
    config: ConfigOpt = None,
    tls_name: NamesOpt = None,
    passphrase_file: PassOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make the private CA (its key sealed under the institution's passphrase) and a server
    certificate in <key directory>.tls (for an institution initialised without them); refuses
    if a CA is already there."""
    from safescan.institution.tls_setup import check_init_tls, init_tls

    site = _settings(
        config, as_json, db=db, keys=keys, passphrase_file=passphrase_file, tls={"names": tls_name}
    )
    try:
        key_dir = site.key_dir()
        check_init_tls(site, key_dir)
        passphrase = passphrase_of(site, check=True, new_ok=True)
        made = init_tls(site, key_dir, passphrase)
        cert = _describe(str(made.files.certfile))
        info = {**made.describe(), **cert}
    except SafescanError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        emit_json(info)
        return
    say(f"CA {info['ca']} (SHA-256 {info['ca_sha256']}): pin it in every client")
    say(f"server certificate {cert['server_cert']} for {', '.join(cert['names'])}")


@tls_app.command("issue")
def tls_issue(
    db: DbOpt = None,
    keys: KeysOpt = None,
    config: ConfigOpt = None,
    tls_name: NamesOpt = None,
    passphrase_file: PassOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a new server certificate from the private CA (rotation; its sealed key opened
    with the institution's passphrase): clients pin the CA, so they accept it unchanged;
    restart `serve` to present it."""
    from safescan.institution.tls_setup import default_tls_dir
    from safescan.web.pki import DEFAULT_NAMES, ca_key_sealed, issue_server_cert

    site = _settings(
        config, as_json, db=db, keys=keys, passphrase_file=passphrase_file, tls={"names": tls_name}
    )
    try:
        target = default_tls_dir(site.key_dir())
        # (a CA key in clear, from an older release, needs no passphrase)
        sealed = ca_key_sealed(target)
        passphrase = passphrase_of(site) if sealed else None
        issue_server_cert(target, [*DEFAULT_NAMES, *site.tls.names], passphrase=passphrase)
        info = _describe(str(target.server_cert))
    except SafescanError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        emit_json(info)
        return
    say(f"new server certificate {info['server_cert']} valid until {info['not_after']};")
    typer.echo("restart `safescan institution serve` to present it")


@tls_app.command("seal")
def tls_seal(
    db: DbOpt = None,
    keys: KeysOpt = None,
    config: ConfigOpt = None,
    passphrase_file: PassOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Seal a CA key an older release wrote in clear under the institution's passphrase (the
    passphrase must open the key directory); a sealed one must open under it, and is left as
    it is."""
    from safescan.institution.tls_setup import default_tls_dir
    from safescan.web.pki import seal_ca_key

    site = _settings(config, as_json, db=db, keys=keys, passphrase_file=passphrase_file)
    try:
        passphrase = passphrase_of(site, check=True)
        target = default_tls_dir(site.key_dir())
        info = {"ca_key": str(target.ca_key), "sealed_now": seal_ca_key(target, passphrase)}
    except SafescanError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        emit_json(info)
        return
    done = "sealed under the passphrase" if info["sealed_now"] else "was already sealed"
    say(f"{info['ca_key']}: {done}")


@tls_app.command("show")
def tls_show(
    db: DbOpt = None,
    keys: KeysOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The CA clients pin (path, SHA-256), whether its key is sealed under the passphrase (a
    clear one dates from an older release), and the server certificate `serve` presents."""
    from safescan.institution.tls_setup import default_tls_dir, server_tls
    from safescan.web.pki import ca_key_sealed

    site = _settings(config, as_json, db=db, keys=keys)
    try:
        tls = server_tls(site, site.key_dir())
        if tls is None:
            info: dict[str, object] = {"tls": False}
        else:
            info = {"tls": True, **tls.describe(), **_describe(str(tls.files.certfile))}
            made = default_tls_dir(site.key_dir())
            if made.ca_key.exists():  # the CA `init` made (not an operator's own PKI)
                info["ca_key_sealed"] = ca_key_sealed(made)
    except (SafescanError, OSError) as exc:
        if isinstance(exc, OSError):
            from safescan.api.errors import ConfigError

            exc = ConfigError(f"cannot read the certificate: {exc.strerror}")
        _fail(exc, as_json)
        return
    if as_json:
        emit_json(info)
        return
    for key, value in info.items():
        say(f"{key}: {value}")
