"""`safescan institution serve`: the API server (uvicorn), one process or a supervisor of
``--workers N``; registered by :mod:`safescan.institution.cli`.

Heavy modules (uvicorn, FastAPI, SQLAlchemy) are imported inside the command, so that the
uvicorn supervisor of `serve --workers N` stays small."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from safescan.code.errors import SafescanError
from safescan.institution.cli_options import (
    CheckpointsOpt,
    ConfigOpt,
    DbOpt,
    KeysOpt,
    PassOpt,
    TlsCertOpt,
    TlsKeyOpt,
)
from safescan.institution.cli_options import fail_cli as _fail
from safescan.institution.cli_options import settings_for as _settings
from safescan.institution.config import (
    ENV_CHECKPOINT_INTERVAL,
    ENV_CHECKPOINTS,
    ENV_DB,
    ENV_PASSPHRASE_FILE,
    ENV_TUNING,
    check_passphrase_given,
)


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
    common: dict[str, Any] = {  # uvicorn.Config's keywords, for one process or N workers
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
            server = AnnouncingServer(uvicorn.Config(app, **common))
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
        from safescan.web.graceful import run_workers

        # each worker, stopped, exits 0 as the parent does (safescan.web.graceful)
        run_workers(
            uvicorn.Config(
                "safescan.institution.server:app_from_env",
                factory=True,
                workers=srv.workers,
                **common,
            )
        )
    except SafescanError as exc:
        _fail(exc)
