"""`safescan institution ...` commands: init, migrate, serve, audit, settlement,
rotate-scheme-key, rotate-epoch, rekey, root-keys, admin-token, manufacturer, config.

Each reads its settings through :func:`cli_options.settings_for` (options > environment >
``--config`` file > defaults; :mod:`safescan.institution.settings`)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer

from safescan.code.errors import SafescanError
from safescan.code.output import emit_json, say
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
    open_keys,
    passphrase_of,
)
from safescan.institution.cli_options import fail_cli as _fail
from safescan.institution.cli_options import run_on_db as _on_db
from safescan.institution.cli_options import settings_for as _settings
from safescan.institution.cli_options import with_db as _with_db
from safescan.institution.cli_rekey import rekey
from safescan.institution.cli_tls import tls_app
from safescan.institution.config import (
    ENV_CHECKPOINT_INTERVAL,
    ENV_CHECKPOINTS,
    ENV_DB,
    ENV_PASSPHRASE_FILE,
    ENV_TUNING,
    check_passphrase_given,
)

# Heavy modules (SQLAlchemy, FastAPI, Alembic) are imported inside the commands, so that the
# uvicorn supervisor of `serve --workers N` stays small.


institution_app = typer.Typer(
    help="The payment institution: API server, ledger, audit.", no_args_is_help=True
)


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


admin_token_app = typer.Typer(
    help="Administrator bearer tokens: create, list, revoke (needs the database only).",
    no_args_is_help=True,
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


@institution_app.command()
def serve(
    db: DbOpt = None,
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="address to bind [127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [8080]")] = None,
    keys: KeysOpt = None,
    passphrase_file: PassOpt = None,
    workers: Annotated[int | None, typer.Option(help="API processes [1]")] = None,
    merchant_rate: Annotated[
        float | None, typer.Option(help="merchant requests/s (per process) [100]")
    ] = None,
    merchant_burst: Annotated[float | None, typer.Option(help="merchant burst size [200]")] = None,
    webhook_base_delay: Annotated[
        float | None, typer.Option(help="first webhook retry delay, s [5]")
    ] = None,
    maintenance_interval: Annotated[
        float | None, typer.Option(help="expiry sweep interval, s [5]")
    ] = None,
    webhooks: Annotated[
        bool | None, typer.Option(help="record events for webhook delivery [on]")
    ] = None,
    webhook_allow: Annotated[
        list[str] | None,
        typer.Option(
            help="network (CIDR) or address webhooks may reach although it is not public"
            " (loopback, private, link-local...); repeatable"
        ),
    ] = None,
    webhook_http: Annotated[
        bool | None,
        typer.Option(help="accept plain http:// webhook URLs (default: https only)"),
    ] = None,
    webhook_deadline: Annotated[
        float | None, typer.Option(help="total seconds for one webhook delivery attempt [10]")
    ] = None,
    webhook_endpoint_concurrency: Annotated[
        int | None,
        typer.Option(help="webhook attempts in flight per merchant endpoint (per process) [2]"),
    ] = None,
    webhook_concurrency: Annotated[
        int | None, typer.Option(help="webhook attempts in flight per process [64]")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="log level: debug, info, warning, error [info]")
    ] = None,
    log_format: Annotated[
        str | None, typer.Option(help="log format: json (one object per line) or console [json]")
    ] = None,
    access_log: Annotated[
        bool | None,
        typer.Option(
            help="one JSON line per request on stderr (method, route, status, duration, request"
            " id) [on]"
        ),
    ] = None,
    metrics_access: Annotated[
        str | None,
        typer.Option("--metrics", help="who may read /metrics: loopback, token, off [loopback]"),
    ] = None,
    metrics_token_file: Annotated[
        Path | None,
        typer.Option(help="file holding the bearer token /metrics asks for (--metrics token)"),
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            help="address or network of a reverse proxy whose X-Forwarded-For/-Proto headers"
            " are believed (repeatable; default: none, the peer address is the client)",
        ),
    ] = None,
    checkpoints: CheckpointsOpt = None,
    checkpoint_interval: Annotated[
        float | None, typer.Option(help="seconds between checkpoints of the audit log's head [1]")
    ] = None,
    max_connections: Annotated[
        int | None,
        typer.Option(help="open client connections per process (kept below RLIMIT_NOFILE) [1000]"),
    ] = None,
    head_timeout: Annotated[
        float | None, typer.Option(help="seconds a connection has to send a request head [10]")
    ] = None,
    write_deadline: Annotated[
        float | None, typer.Option(help="seconds a request waits for the SQLite writer [15]")
    ] = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    plain_http: Annotated[
        bool | None,
        typer.Option(
            help="serve plain HTTP (loopback addresses only; default: HTTPS with the"
            " certificate `init` made or tls.cert/tls.key)"
        ),
    ] = None,
) -> None:
    """Run the API server (uvicorn, uvloop, httptools); prints where it listens, then one
    line per request on stderr (no query strings, headers or bodies). It refuses to serve a
    database older than its checkpoint file (see `institution reconcile`). Every option can be
    set once in the --config file or the environment instead (docs/operations.md)."""
    import atexit
    import shutil
    import tempfile

    import uvicorn

    from safescan.api import obslog
    from safescan.institution.proxies import uvicorn_proxy_settings
    from safescan.web.netguard import GuardedHttpToolsProtocol, Limits, configure

    site = _settings(
        config,
        db=db,
        keys=keys,
        passphrase_file=passphrase_file,
        checkpoints=checkpoints,
        server={
            "host": host,
            "port": port,
            "workers": workers,
            "log_level": log_level,
            "log_format": log_format,
            "access_log": access_log,
            "trusted_proxies": trusted_proxy,
            "max_connections": max_connections,
            "head_timeout": head_timeout,
            "write_deadline": write_deadline,
            "checkpoint_interval": checkpoint_interval,
            "maintenance_interval": maintenance_interval,
        },
        rate_limits={"merchant_rate": merchant_rate, "merchant_burst": merchant_burst},
        tls={"cert": tls_cert, "key": tls_key, "plain_http": plain_http},
        webhooks={
            "enabled": webhooks,
            "base_delay": webhook_base_delay,
            "allow": webhook_allow,
            "allow_http": webhook_http,
            "deadline": webhook_deadline,
            "endpoint_concurrency": webhook_endpoint_concurrency,
            "concurrency": webhook_concurrency,
        },
        metrics={"access": metrics_access, "token_file": metrics_token_file},
    )
    srv, store = site.server, site.keystore
    tuning = site.tuning()
    obslog.configure(srv.log_level, srv.log_format)  # JSON lines on stderr (checked settings)
    common = {
        "host": srv.host,
        "port": srv.port,
        "loop": "uvloop",
        "http": GuardedHttpToolsProtocol,
        "log_config": None,  # uvicorn's records go through safescan.api.obslog (JSON)
        "log_level": "debug" if srv.log_level == "debug" else "warning",
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 5,
    }
    try:
        from safescan.institution.keystore import default_key_dir
        from safescan.institution.tls_setup import server_tls

        db = site.db_url()
        common.update(uvicorn_proxy_settings(list(srv.trusted_proxies)))
        tls = server_tls(site, store.dir or default_key_dir(db))
        # read by every worker's protocol, which also does the TLS handshake (under the bound)
        configure(
            Limits(srv.max_connections, srv.head_timeout, srv.max_per_address),
            tls.files if tls is not None else None,
        )
        if srv.workers <= 1:
            from safescan.institution.access_log import AnnouncingServer
            from safescan.institution.server import build_app

            app = build_app(
                db,
                store.dir,
                store.passphrase_file,
                tuning,
                checkpoints=store.checkpoints,
                checkpoint_interval=srv.checkpoint_interval,
            )
            server = AnnouncingServer(
                uvicorn.Config(app, **common)  # type: ignore[arg-type]
            )
            with contextlib.suppress(KeyboardInterrupt):
                server.run()
            return
        from safescan.institution.access_log import announce
        from safescan.institution.metrics import prepare_multiprocess

        # the workers' counters, summed by every scrape (prometheus-client multiprocess mode)
        metrics_dir = Path(tempfile.mkdtemp(prefix="safescan-metrics-"))
        atexit.register(shutil.rmtree, metrics_dir, True)
        prepare_multiprocess(metrics_dir)
        announce(f"{'http' if tls is None else 'https'}://{srv.host}:{srv.port}", srv.workers)
        os.environ[ENV_DB] = db
        os.environ[ENV_TUNING] = tuning.encode()
        os.environ[ENV_CHECKPOINT_INTERVAL] = str(srv.checkpoint_interval)
        if store.checkpoints is not None:
            os.environ[ENV_CHECKPOINTS] = str(store.checkpoints)
        if store.dir is not None:
            os.environ["SAFESCAN_INSTITUTION_KEYS"] = str(store.dir)
        if store.passphrase_file is not None:
            os.environ[ENV_PASSPHRASE_FILE] = str(store.passphrase_file)
        check_passphrase_given(store.passphrase_file)  # fail early, in the parent
        uvicorn.run(
            "safescan.institution.server:app_from_env",
            factory=True,
            workers=srv.workers,
            **common,  # type: ignore[arg-type]
        )
    except SafescanError as exc:
        _fail(exc)


@institution_app.command()
def audit(
    db: DbOpt = None,
    config: ConfigOpt = None,
    keys: KeysOpt = None,
    checkpoints: CheckpointsOpt = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="SQLite quick_check instead of integrity_check")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Check the database's integrity, every cross-reference, the ledger, the hash-chained audit
    log and (with a checkpoint file) that the database was not rolled back; exit 1 on any
    problem, with one line per problem."""
    from safescan.institution.auditing import run_audit
    from safescan.institution.db import normalize_url

    site = _settings(config, as_json, db=db, keys=keys, checkpoints=checkpoints)
    try:
        db = site.db_url()
        url = normalize_url(db)
        report = run_audit(
            url,
            quick=quick,
            checkpoint_file=_checkpoint_path(db, site.keystore.dir, site.keystore.checkpoints),
        )
    except SafescanError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        emit_json(report.to_dict())
    else:
        for p in report.problems:
            say(f"VIOLATION: {p}")
        for note in report.notes:
            say(f"note: {note}")
        count = len(report.problems)
        say("audit passed" if report.ok else f"audit FAILED: {count} problem(s)")
    if not report.ok:
        raise typer.Exit(1)


def _checkpoint_path(db: str, keys: Path | None, given: Path | None) -> Path | None:
    """The checkpoint file to check against: given, or beside the key directory if there."""
    if given is not None:
        return given
    from safescan.institution.checkpoints import default_path
    from safescan.institution.keystore import default_key_dir

    try:
        key_dir = keys or default_key_dir(db)
    except SafescanError:
        return None
    return default_path(key_dir)


@institution_app.command()
def reconcile(
    note: Annotated[str, typer.Option(help="why: recorded in the audit log")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    keys: KeysOpt = None,
    passphrase_file: PassOpt = None,
    checkpoints: CheckpointsOpt = None,
    restart_checkpoints: Annotated[
        bool,
        typer.Option(
            "--restart-checkpoints",
            help="the checkpoint file is lost or its chain broken and no good copy exists:"
            " keep it aside and start a new chain (the records that still verify count)",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Accept a database restored from an older copy: re-apply journaled revocations, move
    serials, the revocation list sequence and event numbers past everything issued before,
    record it all in the audit log, and let the API processes serve again."""
    from safescan.institution.reconcile import reconcile as run_reconcile

    site = _settings(
        config, as_json, db=db, keys=keys, passphrase_file=passphrase_file, checkpoints=checkpoints
    )
    try:
        db = site.db_url()
        institution_keys = open_keys(site)
        path = site.checkpoint_path()
        out = _with_db(
            db,
            lambda d: run_reconcile(
                d, institution_keys, path, note=note, restart=restart_checkpoints
            ),
        )
    except SafescanError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        emit_json(out)
    elif not out["reconciled"]:
        say(f"nothing to reconcile: {out['reason']}")
    else:
        typer.echo("reconciled; the audit log records it. What the checkpoints saw and the")
        typer.echo("database lacks (check the receipts wallets and merchants hold):")
        for finding in out["findings"]:
            say(f"  - {finding}")
        say(f"certificate serials continue after {out['certificate_serial']}")
        say(f"revocation list sequence is now {out['crl_sequence']}")
        say(f"event numbers continue after {out['event_seq']}")
        if out["reapplied_revocations"]:
            say(f"revoked again: certificates {out['reapplied_revocations']}")
        if "restart" in out:
            r = out["restart"]
            say(
                f"checkpoint file started again at record {r['starts_at']}"
                f" ({r['records_kept']} record(s) of the old one kept"
                + (f"; the old file is now {r['moved_to']})" if r["moved_to"] else ")")
            )


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
