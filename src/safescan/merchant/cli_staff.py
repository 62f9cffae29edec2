"""``safescan pos staff ...``: the staff accounts that sign in to the web POS.

    safescan pos staff add NAME [--password-file FILE]    # asks twice without the file
    safescan pos staff remove NAME                          # its sessions end at their next request
    safescan pos staff list [--json]

The accounts live beside the terminal's file, in ``<config>-staff.json``
(:class:`~safescan.merchant.staff.StaffStore`); passwords are kept only as Argon2id hashes and
are never printed.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from safescan.code.cli_app import new_app
from safescan.code.cli_options import JsonOpt
from safescan.code.display import term
from safescan.code.errors import SafescanError
from safescan.code.output import fail
from safescan.code.smallfile import read_small_text
from safescan.merchant.cli_config import ConfigOpt
from safescan.merchant.settings import pos_settings
from safescan.merchant.staff import StaffError, StaffStore

staff_app = new_app(help="Staff accounts of the web POS.")
console = Console()


def _fail(exc: SafescanError, as_json: bool = False) -> typer.Exit:
    return fail(exc, as_json=as_json, status=2)


def _staff_store(config: Path | None) -> StaffStore:

    return StaffStore.for_config(pos_settings(config).terminal_file)


@staff_app.command("add")
def staff_add(
    name: Annotated[str, typer.Argument(help="sign-in name (lowercase)")],
    password_file: Annotated[
        Path | None, typer.Option(help="read the password from this file's first line")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a staff account (or set a new password); asks for the password twice."""
    if password_file is not None:
        try:
            lines = read_small_text(password_file).splitlines()
        except OSError as exc:
            refusal = StaffError(f"cannot read the password file: {exc.strerror}")
            raise _fail(refusal, as_json) from None
        password = lines[0] if lines else ""
    else:
        password = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("Repeat it: ") != password:
            raise _fail(StaffError("the passwords differ"), as_json)
    try:
        store = _staff_store(config)
        store.add(name, password)
    except SafescanError as exc:
        raise _fail(exc, as_json) from None
    if as_json:
        print(json.dumps({"staff": name, "file": str(store.path)}))
        return
    console.print(f"staff account {term(name)} saved in {term(store.path)}")


@staff_app.command("remove")
def staff_remove(
    name: Annotated[str, typer.Argument(help="sign-in name")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a staff account; its sessions end at their next request."""
    try:
        _staff_store(config).remove(name)
    except SafescanError as exc:
        raise _fail(exc, as_json) from None
    if as_json:
        print(json.dumps({"removed": name}))
        return
    console.print(f"staff account {term(name)} removed")


@staff_app.command("list")
def staff_list(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """The staff accounts (names and when they were made; never passwords)."""
    try:
        users = _staff_store(config).users()
    except SafescanError as exc:
        raise _fail(exc, as_json) from None
    rows = [{"name": n, "created_at": u.get("created_at")} for n, u in sorted(users.items())]
    if as_json:
        print(json.dumps({"staff": rows}))
        return
    for row in rows:
        console.print(term(row["name"]))


__all__ = ["staff_app"]
