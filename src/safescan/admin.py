"""``safescan institution customer ...`` and ``safescan institution enrollment-token``: the
administrator's customer desk, over the institution's HTTP API (bearer token).

    safescan institution customer create --name "Alice Martin"
    safescan institution customer fund C... --amount 10000 --currency EUR    (100.00 EUR)
    safescan institution customer list
    safescan institution enrollment-token C...

The institution is ``--institution URL`` (else ``$SAFESCAN_INSTITUTION_URL``, else
``http://127.0.0.1:8080``); the administrator token is read from ``--admin-token-file`` (else
``$SAFESCAN_ADMIN_TOKEN``), never from the command line, where other users could see it.
These commands talk to a running institution, so they are part of the ``safescan`` command
(``python -m safescan.institution`` holds the database-side commands only).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from safescan.api.errors import InvalidRequest
from safescan.client.admin_token import ENV_ADMIN_TOKEN as ENV_TOKEN
from safescan.client.admin_token import read_admin_token
from safescan.code.cli_app import new_app
from safescan.code.cli_input import minor_units
from safescan.code.cli_options import JsonOpt
from safescan.code.currency import currency as lookup_currency
from safescan.code.display import term, visible
from safescan.code.errors import SafescanError
from safescan.code.output import emit_json, fail

if TYPE_CHECKING:
    from safescan.client.admin import AdminClient

ENV_URL = "SAFESCAN_INSTITUTION_URL"
DEFAULT_URL = "http://127.0.0.1:8080"
MAX_AMOUNT = 10**12 - 1

customer_app = new_app(
    help="Customers: create, fund, list (administrator, over the HTTP API).",
)
console = Console()

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--institution", help=f"institution base URL (default: ${ENV_URL}, {DEFAULT_URL})"
    ),
]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--admin-token-file", help=f"file holding the administrator token (default: ${ENV_TOKEN})"
    ),
]


def _ask(
    url: str | None, token_file: Path | None, as_json: bool, call: Callable[[AdminClient], Any]
) -> Any:
    """The answer of ``call`` run with an administrator client, for the caller to show; with
    ``--json`` it is printed here as JSON and None returned (nothing more to show). A failure
    is reported and exits."""
    base = url or os.environ.get(ENV_URL) or DEFAULT_URL
    try:
        token = read_admin_token(token_file)  # a missing or malformed one: no client imported
        # the HTTP client (~0.6 s of CPU to import): only once there is something to ask
        from safescan.client.admin import AdminClient

        with AdminClient(base, token) as admin:
            doc = call(admin)
    except SafescanError as exc:
        raise fail(exc, as_json=as_json) from None
    if as_json:
        emit_json(doc)
        return None
    return doc


def _when(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _balances(doc: dict[str, Any]) -> str:
    shown = [lookup_currency(b["currency"]).format(int(b["amount"])) for b in doc["balances"]]
    return ", ".join(shown) or "0"


@customer_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="the customer's name")],
    institution: UrlOpt = None,
    admin_token_file: TokenFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open a customer; prints its id (give it to `customer fund` and `enrollment-token`)."""
    doc = _ask(
        institution,
        admin_token_file,
        as_json,
        lambda admin: admin.customers.create(name).to_json(),
    )
    if doc is None:
        return
    console.print(f"customer [bold]{term(doc['id'])}[/] ({term(doc['name'])}) created")


@customer_app.command("fund")
def fund(
    customer_id: Annotated[str, typer.Argument(help="the customer's id (C...)")],
    amount: Annotated[
        int,
        typer.Option(help="in minor units of the currency: 10000 = 100.00 EUR", parser=minor_units),
    ],
    currency: Annotated[str, typer.Option(help="ISO 4217 code, e.g. EUR")] = "EUR",
    institution: UrlOpt = None,
    admin_token_file: TokenFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Credit a customer's account from the institution's funding account."""
    try:
        cur = lookup_currency(currency)
        if not 1 <= amount <= MAX_AMOUNT:
            raise InvalidRequest(
                f"the amount must be 1 to {MAX_AMOUNT} minor units, got {amount}", param="amount"
            )
    except SafescanError as exc:
        raise fail(exc, as_json=as_json) from None
    doc = _ask(
        institution,
        admin_token_file,
        as_json,
        lambda admin: admin.customers.fund(customer_id, cur.alpha, amount).to_json(),
    )
    if doc is None:
        return
    console.print(
        f"credited {term(cur.format(amount))} to {term(doc['id'])} ({term(doc['name'])});"
        f" balance now {term(_balances(doc))}"
    )


@customer_app.command("list")
def list_command(
    limit: Annotated[int, typer.Option(help="how many", min=1, max=500)] = 100,
    after: Annotated[str | None, typer.Option(help="start after this customer id")] = None,
    institution: UrlOpt = None,
    admin_token_file: TokenFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Customers with their balances and number of key carriers."""
    doc = _ask(
        institution,
        admin_token_file,
        as_json,
        lambda admin: admin.customers.list(limit, after).to_json(),
    )
    if doc is None:
        return
    rows = doc["customers"]
    if not rows:
        console.print("no customers yet: `safescan institution customer create --name ...`")
        return
    table = Table(show_edge=False)
    for col in ("id", "name", "status", "created", "balance", "carriers"):
        table.add_column(col, justify="right" if col in ("balance", "carriers") else "left")
    for r in rows:
        table.add_row(
            term(r["id"]),
            Text(visible(r["name"])),
            term(r["status"]),
            _when(r["created_at"]),
            term(_balances(r)),
            term(str(r["carriers"])),
        )
    console.print(table)
    if doc.get("has_more"):
        console.print(f"more: --after {term(rows[-1]['id'])}")


def enrollment_token_command(
    customer_id: Annotated[str, typer.Argument(help="the customer's id (C...)")],
    valid_days: Annotated[int, typer.Option(help="days the token stays valid", min=1, max=30)] = 7,
    institution: UrlOpt = None,
    admin_token_file: TokenFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A single-use token with which the customer's wallet enrolls one key carrier."""
    doc = _ask(
        institution,
        admin_token_file,
        as_json,
        lambda admin: admin.enrollment_tokens.issue(customer_id, valid_days * 86400).to_json(),
    )
    if doc is None:
        return
    console.print(
        f"enrollment token for {term(doc['customer_id'])} (single use, valid until"
        f" {_when(int(doc['expires_at']))}); give it to the customer with the institution's"
        " root keys (`safescan institution root-keys --db ...`):"
    )
    console.print(term(doc["token"]), soft_wrap=True, highlight=False)


apikey_app = new_app(
    help="A merchant's secret API keys: create, list, rotate, revoke (administrator).",
)
MerchantOpt = Annotated[str, typer.Option("--merchant", help="the merchant's id (M...)")]
KeyIdArg = Annotated[str, typer.Argument(help="the key's id (or its sk_live_<id> prefix)")]


def _new_key(doc: dict[str, Any] | None) -> None:
    if doc is None:
        return
    console.print(f"API key {term(doc['prefix'])} scopes: {term(' '.join(doc['scopes']))}")
    console.print("secret key (shown once, give it to the merchant now):")
    console.print(term(doc["key"]), soft_wrap=True, highlight=False)


@apikey_app.command("create")
def apikey_create(
    merchant: MerchantOpt,
    scope: Annotated[list[str], typer.Option("--scope", help="a scope the key carries (repeat)")],
    name: Annotated[str | None, typer.Option(help="a label (e.g. the shop's name)")] = None,
    expires_in: Annotated[int | None, typer.Option(help="seconds until it expires")] = None,
    institution: UrlOpt = None,
    admin_token_file: TokenFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a secret API key for a merchant; it is printed once."""
    wanted = [s for item in scope for s in item.replace(",", " ").split()]
    doc = _ask(
        institution,
        admin_token_file,
        as_json,
        lambda admin: admin.api_keys.create(
            merchant, wanted, name=name, expires_in=expires_in
        ).to_json(),
    )
    _new_key(doc)


@apikey_app.command("list")
def apikey_list(
    merchant: MerchantOpt,
    institution: UrlOpt = None,
    admin_token_file: TokenFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A merchant's keys: prefix, scopes, state, dates (never a secret)."""
    doc = _ask(
        institution, admin_token_file, as_json, lambda a: a.api_keys.list(merchant).to_json()
    )
    if doc is None:
        return
    table = Table("key", "name", "scopes", "state", "created")
    for k in doc["api_keys"]:
        table.add_row(
            term(k["prefix"]),
            term(k.get("name") or ""),
            term(" ".join(k["scopes"])),
            term(k["state"]),
            _when(int(k["created_at"])),
        )
    console.print(table)


@apikey_app.command("rotate")
def apikey_rotate(
    merchant: MerchantOpt,
    key_id: KeyIdArg,
    grace: Annotated[int, typer.Option(help="seconds the old key keeps working")] = 86400,
    institution: UrlOpt = None,
    admin_token_file: TokenFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A replacement key with the same scopes; the old one expires after ``--grace``."""
    doc = _ask(
        institution,
        admin_token_file,
        as_json,
        lambda admin: admin.api_keys.rotate(merchant, key_id, grace).to_json(),
    )
    _new_key(doc)


@apikey_app.command("revoke")
def apikey_revoke(
    merchant: MerchantOpt,
    key_id: KeyIdArg,
    institution: UrlOpt = None,
    admin_token_file: TokenFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a merchant's key now."""
    doc = _ask(
        institution,
        admin_token_file,
        as_json,
        lambda admin: admin.api_keys.revoke(merchant, key_id).to_json(),
    )
    if doc is None:
        return
    console.print(f"API key {term(doc['prefix'])} revoked")


def register(institution_app: typer.Typer) -> None:
    """Attach these commands to ``safescan institution``."""
    institution_app.add_typer(customer_app, name="customer")
    institution_app.add_typer(apikey_app, name="apikey")
    institution_app.command("enrollment-token")(enrollment_token_command)
