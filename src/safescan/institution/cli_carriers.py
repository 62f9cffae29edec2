"""`safescan institution manufacturer ...` and `safescan institution rotate-epoch`: the carrier
lifecycle's administration (needs the database only)."""

from __future__ import annotations

import time
from typing import Annotated

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
    open_keys,
    with_db,
)
from safescan.institution.cli_options import fail_cli as _fail
from safescan.institution.cli_options import run_on_db as _on_db
from safescan.institution.cli_options import settings_for as _settings

manufacturer_app = new_app(
    help="Carrier manufacturer keys the institution trusts for attestation (database only).",
)


@manufacturer_app.command("add")
def manufacturer_add(
    key: Annotated[
        str, typer.Argument(help="KID:HEX (what `safescan carrier factory init` prints)")
    ],
    db: DbOpt = None,
    config: ConfigOpt = None,
    name: Annotated[str, typer.Option(help="who makes the tokens")] = "manufacturer",
    as_json: JsonOpt = False,
) -> None:
    """Trust a manufacturer key: carriers it attested can enroll from now on."""
    from safescan.code.keys import parse_pinned_keys
    from safescan.institution.domain.enrollment import add_manufacturer

    site = _settings(config, as_json, db=db)
    try:
        ((kid, public),) = parse_pinned_keys([key]).items()
        with_db(
            site.db_url(), lambda d: add_manufacturer(d, kid, public.raw, name, int(time.time()))
        )
    except SafescanError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        emit_json({"kid": kid, "name": name, "status": "trusted"})
        return
    say(f"manufacturer key {kid} ({name}) trusted")


@manufacturer_app.command("revoke")
def manufacturer_revoke(
    kid: Annotated[int, typer.Argument(help="the manufacturer key id")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop trusting a manufacturer key: no carrier attested under it enrolls any more."""
    from safescan.institution.domain.enrollment import revoke_manufacturer

    _on_db(config, as_json, db, lambda d: revoke_manufacturer(d, kid, int(time.time())))
    if as_json:
        emit_json({"kid": kid, "status": "revoked"})
        return
    say(f"manufacturer key {kid} revoked")


@manufacturer_app.command("list")
def manufacturer_list(
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The registered manufacturer keys."""
    from safescan.institution import wire
    from safescan.institution.domain.enrollment import list_manufacturers

    rows = _on_db(config, as_json, db, list_manufacturers)
    if as_json:
        emit_json([wire.manufacturer(row) for row in rows])
        return
    for row in rows:
        say(f"{row.kid}:{row.public_key.hex()}  {row.status:8} {row.name}")


def rotate_epoch(
    db: DbOpt = None,
    config: ConfigOpt = None,
    keys: KeysOpt = None,
    passphrase_file: PassOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a new scheme-key epoch now (e.g. right after revoking a leaked carrier): new
    dynamic codes are sealed to it and only carriers that receive its KEY UPDATE open them.
    Running API processes pick it up within seconds; epochs also start by themselves on the
    schedule ($SAFESCAN_EPOCH_SECONDS, default a day)."""
    from safescan.institution.epochs import EpochKeyring

    site = _settings(config, as_json, db=db, keys=keys, passphrase_file=passphrase_file)
    try:
        db = site.db_url()
        loaded = open_keys(site)
        epoch = with_db(
            db, lambda d: EpochKeyring(d, loaded.scheme, loaded.secret).rotate(int(time.time()))
        )
    except SafescanError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        emit_json({"epoch": epoch.epoch, "kid": epoch.key.kid})
        return
    say(f"scheme-key epoch {epoch.epoch} started (key id {epoch.key.kid})")
