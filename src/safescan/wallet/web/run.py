"""Start the wallet app: ``safescan wallet serve``.

Binds (127.0.0.1 by default), then prints two lines on stdout::

    READY http://127.0.0.1:8091
    PAIR http://127.0.0.1:8091/#pair=<secret>

Open the PAIR link in the phone's browser (once per browser; again after a restart of the
service): it makes a session and removes the secret from the address bar. With
``--tls-cert``/``--tls-key`` the service speaks HTTPS and the links say ``https``.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from pathlib import Path
from typing import Annotated

import typer

from safescan.code.errors import SafescanError
from safescan.code.output import fail, say
from safescan.wallet.errors import WalletError
from safescan.wallet.store import default_dir
from safescan.web.guard import HostPolicy, default_hosts
from safescan.web.listen import listen
from safescan.web.serving import (
    BodyTimeoutOpt,
    ConnectionSection,
    HeadTimeoutOpt,
    MaxConnectionsOpt,
    MaxPerAddressOpt,
    connection_options,
    guarded_server,
)
from safescan.web.tls import TlsFiles, scheme

log = logging.getLogger("safescan.wallet.web")


class WalletServeError(WalletError):
    """The wallet app cannot start (port taken, address not allowed, TLS files)."""

    code = "wallet_serve_error"


def serve(
    directory: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8091,
    tls: TlsFiles | None = None,
    allowed_hosts: list[str] | None = None,
    institution_url: str | None = None,
    carrier_url: str | None = None,
    connections: ConnectionSection | None = None,
) -> None:
    """Serve the wallet app for the wallet in ``directory`` until interrupted, behind the
    connection guard (:mod:`safescan.web.serving`: bounded connections, handshake, head and
    body deadlines; ``connections``, defaults otherwise)."""
    from safescan.api import obslog
    from safescan.wallet.web import frames
    from safescan.wallet.web.server import create_app
    from safescan.wallet.web.service import WalletService

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and tls is None:
        raise WalletServeError(
            "the wallet app serves plain HTTP on loopback only: give --tls-cert and --tls-key"
            " to listen on another address"
        )
    sock = listen(host, port, error=WalletServeError)
    bound = sock.getsockname()[1]
    policy = HostPolicy((allowed_hosts or []) + default_hosts(host), port=bound, scheme=scheme(tls))
    service = WalletService(directory, institution_url=institution_url, carrier_url=carrier_url)
    app, state = create_app(service, policy, pair_secret=secrets.token_urlsafe(32))
    obslog.configure("info", "json")  # its warnings as JSON lines; still no request lines
    server = guarded_server(
        app,
        connections or ConnectionSection(),
        tls,
        body_limit=frames.MAX_IMAGE_BYTES + 64 * 1024,  # past its own limits the app refuses
        log_config=None,
        log_level="warning",
        access_log=False,  # request lines never reach a log (nor their bodies: PINs)
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    shown = f"[{host}]" if ":" in host else host
    base = f"{scheme(tls)}://{shown}:{bound}"
    print(f"READY {base}", flush=True)  # term-safe: our address
    print(f"PAIR {base}/#pair={state.pair_secret}", flush=True)  # term-safe: ours
    say(
        f"wallet app for {directory} on {base}/ : open the PAIR link above in the browser",
        err=True,
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def serve_command(
    host: Annotated[
        str | None, typer.Option(help="address to bind, loopback unless TLS [server.host]")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="TCP port, 0: any free port [server.port: 8091]")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="serve HTTPS with this certificate chain (PEM)")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="the certificate's private key (PEM)")
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(help="another Host name the app answers to (repeatable)"),
    ] = None,
    institution: Annotated[
        str | None, typer.Option(help="institution URL to offer on the enroll screen")
    ] = None,
    carrier: Annotated[
        str | None, typer.Option(help="key carrier URL to offer on the enroll screen")
    ] = None,
    wallet_dir: Annotated[
        Path | None,
        typer.Option("--wallet-dir", help="wallet directory (default: $SAFESCAN_WALLET_DIR)"),
    ] = None,
    max_connections: MaxConnectionsOpt = None,
    max_per_address: MaxPerAddressOpt = None,
    head_timeout: HeadTimeoutOpt = None,
    body_timeout: BodyTimeoutOpt = None,
) -> None:
    """Run the wallet app (mobile web: camera scan, verified offer, PIN pad, history)."""
    from safescan.wallet.settings import wallet_settings

    try:
        site = wallet_settings(
            server={
                "host": host,
                "port": port,
                "allowed_hosts": allowed_host or None,
                "institution": institution,
                "carrier": carrier,
                **connection_options(max_connections, max_per_address, head_timeout, body_timeout),
            },
            tls={"cert": tls_cert, "key": tls_key},
        )
        srv = site.server
        tls = TlsFiles.from_options(site.tls.cert, site.tls.key)
        serve(
            wallet_dir or default_dir(),
            host=srv.host,
            port=srv.port,
            tls=tls,
            allowed_hosts=list(srv.allowed_hosts) or None,
            institution_url=srv.institution,
            carrier_url=srv.carrier,
            connections=srv,
        )
    except SafescanError as exc:
        raise fail(exc, as_json=False) from None
