"""``safescan pos apikey ...``: the merchant's secret API keys (for a web shop or any program
that calls the merchant API with ``Authorization: Bearer sk_live_...``).

    safescan pos apikey scopes                                   # what each scope allows
    safescan pos apikey create --scope checkout:write --scope orders:read [--name shop]
    safescan pos apikey list [--json]
    safescan pos apikey rotate KEY_ID [--grace 86400]            # new key; old one expires later
    safescan pos apikey revoke KEY_ID

These calls are signed with the terminal's signing key (an API key cannot manage keys). A new
key is printed once: store it then (it is not kept anywhere, only its keyed hash).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from safescan.api.api_keys import SCOPES
from safescan.client.answers_merchant import NewApiKey
from safescan.code.cli_app import new_app
from safescan.code.cli_options import JsonOpt
from safescan.code.display import term
from safescan.code.errors import SafescanError
from safescan.code.output import emit_json, fail
from safescan.merchant.cli_config import ConfigOpt
from safescan.merchant.client import MerchantApi
from safescan.merchant.settings import load_terminal

apikey_app = new_app(
    help="Secret API keys (Bearer) with scopes: create, list, rotate, revoke.",
)
console = Console()


def _api(config: Path | None, as_json: bool) -> MerchantApi:
    try:
        return MerchantApi(load_terminal(config), tries=1)
    except SafescanError as exc:
        raise fail(exc, as_json=as_json, status=2) from None


def _when(ts: Any) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(int(ts), tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _new_key(made: NewApiKey, as_json: bool) -> None:
    if as_json:
        emit_json(made.to_json())
        return
    info = made.info
    console.print(f"API key {term(info.prefix)} scopes: {term(' '.join(info.scopes))}")
    console.print("secret key (shown once, store it now):")
    console.print(term(made.key), soft_wrap=True, highlight=False)
    previous = made.previous
    if previous:
        console.print(
            f"the previous key {term(previous.prefix)} works until"
            f" {term(_when(previous.expires_at))}"
        )


@apikey_app.command("scopes")
def scopes(as_json: JsonOpt = False) -> None:
    """Every scope a key can carry, and what it allows."""
    if as_json:
        emit_json({"scopes": SCOPES})
        return
    for name, what in SCOPES.items():
        console.print(term(f"{name:20} {what}"))


@apikey_app.command("create")
def create(
    scope: Annotated[
        list[str], typer.Option("--scope", help="a scope the key carries (repeat; see `scopes`)")
    ],
    name: Annotated[str | None, typer.Option(help="a label (e.g. the shop's name)")] = None,
    expires_in: Annotated[
        int | None, typer.Option("--expires-in", help="seconds until the key expires")
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Make a secret API key with these scopes; it is printed once."""
    wanted = [s for item in scope for s in item.replace(",", " ").split()]
    with _api(config, as_json) as api:
        try:
            made = api.api_keys.create(wanted, name=name, expires_in=expires_in)
        except SafescanError as exc:
            raise fail(exc, as_json=as_json, status=2) from None
    _new_key(made, as_json)


@apikey_app.command("list")
def list_keys(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """The keys: prefix, scopes, state, dates and last use (never a secret)."""
    with _api(config, as_json) as api:
        try:
            listed = api.api_keys.list()
        except SafescanError as exc:
            raise fail(exc, as_json=as_json, status=2) from None
    if as_json:
        emit_json(listed.to_json())
        return
    table = Table("key", "name", "scopes", "state", "created", "expires", "last used")
    for k in listed.api_keys:
        table.add_row(
            term(k.prefix),
            term(k.name or ""),
            term(" ".join(k.scopes)),
            term(k.state),
            _when(k.created_at),
            _when(k.expires_at),
            _when(k.last_used_at),
        )
    console.print(table)


@apikey_app.command("rotate")
def rotate(
    key_id: Annotated[str, typer.Argument(help="the key's id (or its sk_live_<id> prefix)")],
    grace: Annotated[
        int, typer.Option(help="seconds the old key keeps working (0: stops now)")
    ] = 86400,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """A replacement key with the same scopes; the old one expires after ``--grace``."""
    with _api(config, as_json) as api:
        try:
            made = api.api_keys.rotate(key_id, grace)
        except SafescanError as exc:
            raise fail(exc, as_json=as_json, status=2) from None
    _new_key(made, as_json)


@apikey_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (or its sk_live_<id> prefix)")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Revoke a key now: requests with it are refused from this moment."""
    with _api(config, as_json) as api:
        try:
            revoked = api.api_keys.revoke(key_id)
        except SafescanError as exc:
            raise fail(exc, as_json=as_json, status=2) from None
    if as_json:
        emit_json(revoked.to_json())
    else:
        console.print(f"API key {term(revoked.prefix)} revoked")
