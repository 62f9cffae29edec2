"""Options and helpers shared by the ``safescan`` commands (light: no cryptography)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from safescan.code.errors import KeyFileError
from safescan.code.smallfile import read_small_text

PassphraseFile = Annotated[
    Path | None,
    typer.Option(help="File holding the key passphrase (else $SAFESCAN_PASSPHRASE, else prompt)"),
]


def read_passphrase(path: Path | None, *, confirm: bool = False) -> bytes:
    """The key passphrase: from a file, the environment, or a hidden prompt."""
    if path is not None:
        try:
            value = read_small_text(path).rstrip("\n")
        except OSError as exc:
            raise KeyFileError(f"cannot read passphrase file {path}: {exc.strerror}") from exc
    elif os.environ.get("SAFESCAN_PASSPHRASE"):
        value = os.environ["SAFESCAN_PASSPHRASE"]
    else:
        value = typer.prompt("Key passphrase", hide_input=True, confirmation_prompt=confirm)
    if not value:
        raise KeyFileError("the passphrase is empty")
    return value.encode()


JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
