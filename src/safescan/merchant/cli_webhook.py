"""``safescan pos webhook ...``: the merchant's webhook endpoint.

    safescan pos webhook set https://shop.example/hooks      # the URL (and a first secret)
    safescan pos webhook show
    safescan pos webhook test                                # a signed test event, now
    safescan pos webhook deliveries [--event evt_...] [--limit 50] [--json]
    safescan pos webhook resend evt_...
    safescan pos webhook rotate [--overlap 86400]             # a new secret, old one overlaps

Deliveries follow Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``): verify them with the ``whsec_`` secret (``v1``, any Standard Webhooks
library) or with the institution's key (``v1a``, :func:`safescan.api.standard_webhooks.verify`).
A secret is printed once, when it is made; it is not stored on this terminal.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from safescan.client.answers_merchant import WebhookSecret
from safescan.code.cli_app import new_app
from safescan.code.cli_options import JsonOpt
from safescan.code.display import term
from safescan.code.errors import SafescanError
from safescan.code.output import emit_json, fail
from safescan.merchant.cli_config import ConfigOpt
from safescan.merchant.client import MerchantApi
from safescan.merchant.settings import load_terminal

webhook_app = new_app(
    help="The webhook endpoint: URL, test, delivery log, resend, secret rotation.",
)
console = Console()
err_console = Console(stderr=True)

DAY = 24 * 3600


def _api(config: Path | None, as_json: bool) -> MerchantApi:
    try:
        return MerchantApi(load_terminal(config), tries=1)
    except SafescanError as exc:
        raise fail(exc, as_json=as_json, status=2) from None


def _ms(ms: int | None) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _secret_notice(secret: WebhookSecret) -> None:
    console.print(f"signing secret (shown once, store it now): [bold]{term(secret.secret)}[/]")
    if secret.previous_valid_until:
        console.print(
            "the previous secret keeps signing until"
            f" {term(_ms(secret.previous_valid_until * 1000))}"
        )


@webhook_app.command("set")
def set_url(
    url: Annotated[str, typer.Argument(help="https URL the institution POSTs events to")],
    no_secret: Annotated[
        bool, typer.Option("--no-secret", help="do not make a signing secret (v1a only)")
    ] = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Register or change the webhook URL; the first time, a signing secret is made and
    printed once (``v1`` signatures; the ``v1a`` Ed25519 signature is always sent)."""
    with _api(config, as_json) as api:
        try:
            api.webhook.set(url)
            endpoint = api.webhook.get()
            secret = None
            if endpoint.secret is None and not no_secret:
                secret = api.webhook.rotate_secret(0)
        except SafescanError as exc:
            raise fail(exc, as_json=as_json, status=2) from None
    if as_json:
        emit_json(
            {
                "url": endpoint.url,
                "public_key": endpoint.public_key,
                "secret": None if secret is None else secret.to_json(),
            }
        )
        return
    console.print(f"webhook URL: {term(endpoint.url)}")
    console.print(f"institution key (v1a): {term(endpoint.public_key)}")
    if secret is not None:
        _secret_notice(secret)
    elif endpoint.secret is not None:
        console.print("the endpoint keeps its signing secret (rotate: safescan pos webhook rotate)")


@webhook_app.command("clear")
def clear(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Stop webhook deliveries (events stay on the stream)."""
    with _api(config, as_json) as api:
        try:
            api.webhook.set(None)
        except SafescanError as exc:
            raise fail(exc, as_json=as_json, status=2) from None
    if as_json:
        emit_json({"url": None})
    else:
        console.print("webhook URL cleared")


@webhook_app.command("show")
def show(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """The URL, the institution's key, the secret's version and dates (never the secret)."""
    with _api(config, as_json) as api:
        try:
            endpoint = api.webhook.get()
        except SafescanError as exc:
            raise fail(exc, as_json=as_json, status=2) from None
    if as_json:
        emit_json(endpoint.to_json())
        return
    console.print(f"webhook URL: {term(endpoint.url or '(none)')}")
    console.print(f"institution key (v1a): {term(endpoint.public_key)}")
    s = endpoint.secret
    if s is None:
        console.print("signing secret: none (safescan pos webhook rotate makes one)")
    else:
        console.print(
            f"signing secret: version {s.version:d},"
            f" rotated {term(_ms(None if s.rotated_at is None else s.rotated_at * 1000))}"
            + (
                f", previous one valid until {term(_ms(s.previous_valid_until * 1000))}"
                if s.previous_valid_until
                else ""
            )
        )


@webhook_app.command("test")
def test(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Send a signed ``webhook.test`` event to the URL now and show what happened (exit 1
    when the receiver did not acknowledge it with a 2xx)."""
    with _api(config, as_json) as api:
        try:
            result = api.webhook.test()
        except SafescanError as exc:
            raise fail(exc, as_json=as_json, status=2) from None
    ok = result.state == "delivered"
    if as_json:
        emit_json(result.to_json())
    elif ok:
        console.print(
            f"[green]delivered[/] {term(result.event_id)}: HTTP {term(str(result.status))}"
            f" in {result.latency_ms:d} ms"
        )
    else:
        console.print(
            f"[red]not delivered[/] {term(result.event_id)}:"
            f" {term(result.error or result.error_kind)} after {result.latency_ms:d} ms"
        )
    if not ok:
        raise typer.Exit(1)


@webhook_app.command("deliveries")
def deliveries(
    event: Annotated[str | None, typer.Option("--event", help="one event's attempts")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="how many attempts")] = 50,
    before: Annotated[int | None, typer.Option(min=1, help="page: attempts before this id")] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """The delivery log, newest first: each attempt's time, status or error class, latency,
    next retry and state."""
    with _api(config, as_json) as api:
        try:
            page = api.webhook.deliveries(limit=limit, before=before, event_id=event)
        except SafescanError as exc:
            raise fail(exc, as_json=as_json, status=2) from None
    rows = page.deliveries
    if as_json:
        emit_json(page.to_json())
        return
    if not rows:
        console.print("no delivery attempts recorded")
        return
    table = Table(show_edge=False)
    for col in ("id", "time", "event", "#", "result", "latency", "next retry", "state"):
        table.add_column(col, justify="right" if col in ("id", "#", "latency") else "left")
    colours = {"delivered": "green", "retrying": "yellow", "failed": "red"}
    for d in rows:
        result = f"HTTP {d.status}" if d.status is not None else d.error_kind or "-"
        table.add_row(
            term(str(d.id)),
            term(_ms(d.at_ms)),
            term(d.event_id) + (" (test)" if d.kind == "test" else ""),
            term(str(d.attempt)),
            term(result),
            f"{d.latency_ms:d} ms",
            term(_ms(d.next_retry_ms)),
            Text(term(d.state), style=colours.get(d.state, "white")),
        )
    console.print(table)
    if len(rows) == limit:
        console.print(f"older attempts: --before {rows[-1].id:d}")
    kept = page.retention
    console.print(
        f"kept: the last {kept.per_endpoint:d} attempts, at most {kept.max_age // DAY} days"
    )


@webhook_app.command("resend")
def resend(
    event_id: Annotated[str, typer.Argument(help="the event id (evt_...)")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Queue one of this merchant's events for delivery again (already queued: nothing more
    is queued)."""
    with _api(config, as_json) as api:
        try:
            result = api.webhook.resend(event_id)
        except SafescanError as exc:
            raise fail(exc, as_json=as_json, status=2) from None
    if as_json:
        emit_json(result.to_json())
    elif result.requeued:
        console.print(
            f"{term(event_id)} queued for delivery (request {term(result.request_id)},"
            f" linked to the event's request {term(result.original_request_id)})"
        )
    else:
        console.print(f"{term(event_id)} is already queued for delivery (nothing more queued)")


@webhook_app.command("rotate")
def rotate(
    overlap: Annotated[
        int,
        typer.Option(
            min=0, max=7 * DAY, help="seconds the previous secret keeps signing (0: ends now)"
        ),
    ] = DAY,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Make a new signing secret (printed once); during the overlap every delivery carries a
    signature with each secret, so receivers can switch without losing an event."""
    with _api(config, as_json) as api:
        try:
            secret = api.webhook.rotate_secret(overlap)
        except SafescanError as exc:
            raise fail(exc, as_json=as_json, status=2) from None
    if as_json:
        emit_json(secret.to_json())
        return
    console.print(f"secret version {secret.version:d}")
    _secret_notice(secret)
