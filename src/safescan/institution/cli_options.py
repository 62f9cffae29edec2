"""Options and helpers shared by the institution's command modules (`cli`, `cli_carriers`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from safescan.code.cli_options import JsonOpt as JsonOpt
from safescan.code.errors import SafescanError
from safescan.code.output import fail

if TYPE_CHECKING:
    from safescan.institution.keystore import InstitutionKeys
    from safescan.institution.settings import Settings

T = TypeVar("T")


def check_db_url(value: str | None) -> str | None:
    """A bare file name is the commonest first mistake: say which URL was meant."""
    if value and "://" not in value:
        raise typer.BadParameter(
            f"{value!r} is not a database URL; did you mean sqlite:///{value} (a SQLite file"
            " relative to this directory) or postgresql://USER@HOST/DB?"
        )
    return value


DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="sqlite:///path or postgresql://... (default: database.url of the settings)",
        callback=check_db_url,
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="settings file (TOML; default: $SAFESCAN_INSTITUTION_CONFIG); options and"
        " SAFESCAN_INSTITUTION_<SECTION>__<FIELD> variables override it",
        show_default=False,
    ),
]
TlsCertOpt = Annotated[
    Path | None,
    typer.Option("--tls-cert", help="server certificate chain, PEM (default: tls.cert)"),
]
TlsKeyOpt = Annotated[
    Path | None, typer.Option("--tls-key", help="its private key, PEM (default: tls.key)")
]
KeysOpt = Annotated[
    Path | None,
    typer.Option("--keys", help="key directory (default for SQLite: <db file>.keys)"),
]
CheckpointsOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoints",
        help="checkpoint file (default: <key directory>.checkpoints, beside the key directory)",
    ),
]
PassOpt = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help="file holding the key passphrase (default: $SAFESCAN_INSTITUTION_PASSPHRASE)",
    ),
]


def restart_checkpoints_option(more: str = "") -> Any:
    """``--restart-checkpoints`` of ``reconcile`` and ``restore`` (``more``: what the command
    adds to its help)."""
    return typer.Option(
        "--restart-checkpoints",
        help="the checkpoint file is lost or its chain broken and no good copy exists:"
        " keep it aside and start a new chain" + more,
    )


def fail_cli(exc: SafescanError, as_json: bool = False) -> None:
    """Exit 2 with ``exc`` as a typed error (a JSON object on stdout with ``--json``)."""
    raise fail(exc, as_json=as_json, status=2)


def settings_for(
    config: Path | None,
    as_json: bool = False,
    *,
    db: str | None = None,
    keys: Path | None = None,
    passphrase_file: Path | None = None,
    checkpoints: Path | None = None,
    **sections: dict[str, Any],
) -> Settings:
    """The effective settings of a command (its options > environment > ``config`` > defaults);
    exit 2 with a typed error when they are bad."""
    from safescan.institution.settings import load_settings

    overrides: dict[str, dict[str, Any]] = {
        "database": {"url": db},
        "keystore": {"dir": keys, "passphrase_file": passphrase_file, "checkpoints": checkpoints},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    try:
        settings = load_settings(config, overrides)
    except SafescanError as exc:
        raise fail(exc, as_json=as_json, status=2) from None
    settings.keystore.export_token()
    return settings


def passphrase_of(site: Settings, *, check: bool = False, new_ok: bool = False) -> bytes:
    """The key passphrase of the settings (``--passphrase-file``, else
    $SAFESCAN_INSTITUTION_PASSPHRASE). ``check``: it must open the key directory (the
    institution's own passphrase, not a mistyped one); ``new_ok``: a key directory not made yet
    is not checked."""
    from safescan.institution.keystore import KeyStore, load_passphrase

    passphrase = load_passphrase(site.keystore.passphrase_file)
    if check:
        store = KeyStore(site.key_dir())
        if not new_ok or store.exists():
            store.open_secret(passphrase)
    return passphrase


def open_keys(site: Settings) -> InstitutionKeys:
    """The institution's keys of the settings' key directory, opened with its passphrase."""
    from safescan.institution.keystore import KeyStore

    passphrase = passphrase_of(site)
    return KeyStore(site.key_dir()).load(passphrase)


def run_on_db(config: Path | None, as_json: bool, db: str | None, action: Callable[[Any], T]) -> T:
    """A command's work on its database: the effective settings (:func:`settings_for`), then
    ``action`` on a connection to their database (closed afterwards); a typed error exits 2
    (a JSON object on stdout with ``--json``)."""
    site = settings_for(config, as_json, db=db)
    try:
        return with_db(site.db_url(), action)
    except SafescanError as exc:
        raise fail(exc, as_json=as_json, status=2) from None


def with_db(db: str, action: Callable[[Any], T]) -> T:
    """Run ``action`` on a connection to ``db``, closed afterwards."""
    from safescan.institution.db import Database

    database = Database(db)
    try:
        return action(database)
    finally:
        database.dispose()
