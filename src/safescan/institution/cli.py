"""`safescan institution ...` commands: init, migrate, serve, audit, settlement,
rotate-scheme-key, rotate-epoch, rekey, root-keys, admin-token, manufacturer, config.

Each reads its settings through :func:`cli_options.settings_for` (options > environment >
``--config`` file > defaults; :mod:`safescan.institution.settings`). Commands with a module of
their own (``cli_serve``, ``cli_audit``, ``cli_backup``, ``cli_rekey``, ``cli_carriers``,
``cli_config``, ``cli_tls``) are registered here, in the order ``--help`` lists them."""

from __future__ import annotations

from typing import Annotated

import typer

from safescan.code.cli_app import new_app
from safescan.code.errors import SafescanError
from safescan.code.output import emit_json, say
from safescan.institution.cli_audit import audit, reconcile
from safescan.institution.cli_backup import backup, restore
from safescan.institution.cli_carriers import manufacturer_app, rotate_epoch
from safescan.institution.cli_config import config_app
from safescan.institution.cli_options import (
    CheckpointsOpt,
    ConfigOpt,
    DbOpt,
    JsonOpt,
    KeysOpt,
    PassOpt,
    TlsCertOpt,
    TlsKeyOpt,
    passphrase_of,
)
from safescan.institution.cli_options import fail_cli as _fail
from safescan.institution.cli_options import run_on_db as _on_db
from safescan.institution.cli_options import settings_for as _settings
from safescan.institution.cli_options import with_db as _with_db
from safescan.institution.cli_rekey import rekey
from safescan.institution.cli_serve import serve
from safescan.institution.cli_tls import tls_app

# Heavy modules (SQLAlchemy, FastAPI, Alembic) are imported inside the commands, so that the
# uvicorn supervisor of `serve --workers N` stays small.


institution_app = new_app(help="The payment institution: API server, ledger, audit.")


@institution_app.command()
def init(
    db: DbOpt = None,
    keys: KeysOpt = None,
    passphrase_file: PassOpt = None,
    checkpoints: CheckpointsOpt = None,
    config: ConfigOpt = None,
    tls_name: Annotated[
        list[str] | None,
        typer.Option(
            "--tls-name",
            help="DNS name or IP address for the server certificate besides localhost,"
            " 127.0.0.1 and ::1 (repeatable; default: tls.names)",
        ),
    ] = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create the root signing key (in the PKCS#11 token when the keys' backend is pkcs11), the
    first scheme key, the schema, the checkpoint file and (unless --tls-cert/--tls-key give the
    operator's) a private CA and server certificate in <key directory>.tls; print the admin
    token and the CA clients pin."""
    from sqlalchemy import select

    from safescan.api.errors import ConfigError
    from safescan.institution.db import Database, migrate
    from safescan.institution.hsm import Token, configured_token
    from safescan.institution.keystore import KeyStore
    from safescan.institution.models import AdminToken
    from safescan.institution.rollback import RollbackGuard
    from safescan.institution.service import Institution
    from safescan.institution.tls_setup import check_init_tls, init_tls

    site = _settings(
        config,
        as_json,
        db=db,
        keys=keys,
        passphrase_file=passphrase_file,
        checkpoints=checkpoints,
        tls={"names": tls_name, "cert": tls_cert, "key": tls_key},
    )
    try:
        db = site.db_url()
        passphrase = passphrase_of(site)
        key_dir = site.key_dir()
        store = KeyStore(key_dir)
        cp_path = site.checkpoint_path()
        hsm_token = configured_token()
        if hsm_token is not None:
            Token(hsm_token)  # the token is there and takes the PIN, before anything is written
        check_init_tls(site, key_dir)
        database = Database(db)
        try:
            migrate(database.engine)
            has_admin = database.read(lambda c: c.execute(select(AdminToken.id)).first())
            if has_admin is not None:
                raise ConfigError("this database is already initialised")
            if cp_path.exists():
                raise ConfigError(f"{cp_path} already exists (another institution's checkpoints?)")
            institution_keys = store.create(passphrase, token=hsm_token)
            token = Institution(database, institution_keys).setup.bootstrap()
            RollbackGuard(database, institution_keys, cp_path).tick()  # the first checkpoint
            tls = init_tls(site, key_dir, passphrase).describe()
        finally:
            database.dispose()
    except SafescanError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        emit_json({"keys": str(store.path), "admin_token": token, "tls": tls})
        return
    say(f"institution initialised; keys in {store.path}")
    if tls["ca"] is not None:
        say(f"TLS: clients pin the CA {tls['ca']} (SHA-256 {tls['ca_sha256']})")
    typer.echo("administrator token (shown once, store it safely):")
    say(token)


@institution_app.command()
def migrate(db: DbOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Upgrade an initialised database's schema to the newest migration (run before serving a
    new release; API processes refuse an older schema)."""
    from safescan.api.errors import ConfigError
    from safescan.institution import db as dblayer

    def upgrade(database: dblayer.Database) -> tuple[str, str]:
        current, head = dblayer.schema_revisions(database.engine)
        if current is None:
            raise ConfigError("this database is not initialised: run `institution init`")
        if current != head:
            dblayer.migrate(database.engine)
        return current, head

    before, head = _on_db(config, as_json, db, upgrade)
    if as_json:
        emit_json({"from": before, "to": head, "migrated": before != head})
    elif before == head:
        say(f"schema already at the newest revision {head}")
    else:
        say(f"schema migrated from revision {before} to {head}")


admin_token_app = new_app(
    help="Administrator bearer tokens: create, list, revoke (needs the database only).",
)
institution_app.add_typer(admin_token_app, name="admin-token")
institution_app.add_typer(manufacturer_app, name="manufacturer")
institution_app.add_typer(config_app, name="config")
institution_app.add_typer(tls_app, name="tls")
institution_app.command("rotate-epoch")(rotate_epoch)
institution_app.command()(backup)
institution_app.command()(restore)
institution_app.command()(rekey)


@admin_token_app.command("create")
def admin_token_create(
    db: DbOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """Create another administrator token and print it once (only its hash is stored)."""
    from safescan.institution import admin_tokens

    token_id, token = _on_db(config, as_json, db, admin_tokens.create)
    if as_json:
        emit_json({"id": token_id, "token": token})
        return
    say(f"administrator token {token_id} created (shown once, store it safely):")
    say(token)


@admin_token_app.command("list")
def admin_token_list(
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """The live administrator tokens: id and creation time (never the tokens)."""
    import datetime as dt

    from safescan.institution import admin_tokens

    rows = _on_db(config, as_json, db, admin_tokens.list_tokens)
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        created = dt.datetime.fromtimestamp(row["created_at"], dt.UTC).strftime("%Y-%m-%d %H:%M")
        say(f"{row['id']}  created {created} UTC")


@admin_token_app.command("revoke")
def admin_token_revoke(
    token_id: Annotated[int, typer.Argument(help="the token's id (see list)")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke an administrator token at once (the last live one cannot be revoked)."""
    from safescan.institution import admin_tokens

    _on_db(config, as_json, db, lambda database: admin_tokens.revoke(database, token_id))
    if as_json:
        emit_json({"id": token_id, "revoked": True})
        return
    say(f"administrator token {token_id} revoked")


@institution_app.command("root-keys")
def root_keys(db: DbOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print the institution's root public keys as KID:HEX lines: the form `carrier serve
    --institution-key` (factory anchor) and `wallet enroll --institution-key` (pinning) take."""
    from sqlalchemy import select

    from safescan.api.errors import ConfigError
    from safescan.institution.models import InstitutionKey

    query = (
        select(InstitutionKey.kid, InstitutionKey.public_key)
        .where(InstitutionKey.purpose == "root")
        .order_by(InstitutionKey.kid)
    )
    site = _settings(config, as_json, db=db)
    try:
        rows = _with_db(
            site.db_url(), lambda database: database.read(lambda c: c.execute(query).all())
        )
        if not rows:
            raise ConfigError("this database holds no institution keys: run `institution init`")
    except SafescanError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        emit_json({"root_keys": [f"{kid}:{public_key.hex()}" for kid, public_key in rows]})
        return
    for kid, public_key in rows:
        say(f"{kid}:{public_key.hex()}")


institution_app.command()(serve)
institution_app.command()(audit)
institution_app.command()(reconcile)


@institution_app.command()
def settlement(
    date: Annotated[str, typer.Option(help="UTC day, YYYY-MM-DD")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    merchant: Annotated[str | None, typer.Option(help="only this merchant")] = None,
    format: Annotated[str, typer.Option(help="csv or json")] = "csv",
    as_json: Annotated[bool, typer.Option("--json", help="the same as --format json")] = False,
) -> None:
    """Print the per-merchant settlement report for one day."""
    from safescan.api.errors import InvalidRequest
    from safescan.institution import settlement as settlement_mod
    from safescan.institution.db import Database

    if as_json:
        format = "json"
    if format not in ("csv", "json"):
        _fail(InvalidRequest("--format is csv or json", param="format"))
    site = _settings(config, format == "json", db=db)
    try:
        database = Database(site.db_url())
        try:
            rows = database.read(lambda c: settlement_mod.report(c, date, merchant))
        finally:
            database.dispose()
    except SafescanError as exc:
        _fail(exc, format == "json")
        return
    if format == "csv":
        say(settlement_mod.to_csv(rows), nl=False)
    else:
        emit_json({"rows": [r.to_dict() for r in rows]})


@institution_app.command("rotate-scheme-key")
def rotate_scheme_key(
    db: DbOpt = None,
    config: ConfigOpt = None,
    keys: KeysOpt = None,
    passphrase_file: PassOpt = None,
    retire_old_in: Annotated[
        int | None, typer.Option(help="retire the older keys this many seconds from now")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a new scheme code key; new codes are sealed to it after the servers restart."""
    import time

    from safescan.institution.db import Database
    from safescan.institution.keystore import KeyStore
    from safescan.institution.service import Institution

    site = _settings(config, as_json, db=db, keys=keys, passphrase_file=passphrase_file)
    try:
        db = site.db_url()
        passphrase = passphrase_of(site)
        store = KeyStore(site.key_dir())
        retire = None if retire_old_in is None else int(time.time()) + retire_old_in
        new = store.add_scheme_key(passphrase, retire_old_at=retire)
        database = Database(db)
        try:
            inst = Institution(database, store.load(passphrase))
            inst.setup.register_keys()
        finally:
            database.dispose()
    except SafescanError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        emit_json({"scheme_kid": new.kid, "restart_needed": True})
        return
    say(f"new scheme key {new.kid}; restart the API processes to use it")
