"""What the ``safescan wallet`` command modules share: the consoles, the ``--wallet-dir``
option, the exit statuses, errors, PIN files and PIN prompts (:mod:`safescan.wallet.cli`,
:mod:`safescan.wallet.cli_scan`)."""

from __future__ import annotations

import datetime as dt
import getpass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from safescan.carrier import rom
from safescan.carrier.pin import PinFormatError, check_pin
from safescan.code.errors import SafescanError
from safescan.code.output import fail
from safescan.code.smallfile import read_small_text
from safescan.wallet.errors import WalletError

console = Console()
err_console = Console(stderr=True)

DirOpt = Annotated[
    Path | None,
    typer.Option("--wallet-dir", help="wallet directory (default: $SAFESCAN_WALLET_DIR)"),
]

EXIT_DECLINED, EXIT_ERROR, EXIT_NOT_PAYABLE, EXIT_REFUSED, EXIT_UNKNOWN = 1, 2, 3, 4, 5


def wallet_fail(
    exc: SafescanError, status: int = EXIT_ERROR, *, as_json: bool = False
) -> typer.Exit:
    """Report ``exc`` (:func:`safescan.code.output.fail`); the exit (status 2) to raise."""
    return fail(exc, as_json=as_json, status=status)


def read_pin_file(path: Path, *, as_json: bool = False) -> str:
    """The first line of a PIN file, stripped; a typed error if it cannot be read."""
    try:
        lines = read_small_text(path).splitlines()
    except OSError as exc:
        error = WalletError(f"cannot read the PIN file: {exc.strerror}")
        raise wallet_fail(error, as_json=as_json) from None
    return lines[0].strip() if lines else ""


def new_pin(pin_file: Path | None, *, as_json: bool, prompt: str = "Choose a PIN") -> str:
    """A new PIN from a file or asked twice; its form is checked before anything else."""
    if pin_file is not None:
        pin = read_pin_file(pin_file, as_json=as_json)
    else:
        pin = getpass.getpass(f"{prompt} ({rom.PIN_MIN}-{rom.PIN_MAX} digits): ")
    try:
        check_pin(pin)
    except PinFormatError as exc:
        raise wallet_fail(WalletError(f"the PIN is not valid: {exc}"), as_json=as_json) from None
    if pin_file is None and getpass.getpass("Repeat the PIN: ") != pin:
        raise wallet_fail(WalletError("the PINs differ"), as_json=as_json)
    return pin


def when(ts: int) -> str:
    """A time stamp as local date and time."""
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
