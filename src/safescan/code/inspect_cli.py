"""`safescan code inspect`: say what a scanned input is, without acting on it.

Imported on its own when the command runs (see :mod:`safescan.code.code_cli`): without
``--key`` it reads only the clear header, and imports no key handling or cryptography.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from safescan.code.cli_options import PassphraseFile, read_passphrase
from safescan.code.display import term
from safescan.code.errors import KeyFileError, SafescanError
from safescan.code.inspect import EMV_SUMMARY_LABELS, inspect_text
from safescan.code.output import json_text
from safescan.code.source import read_source

if TYPE_CHECKING:
    from safescan.code.certs import TrustStore
    from safescan.code.keys import SchemeKeyring


def code_inspect(
    source: Annotated[str, typer.Argument(help="Payload text, or a path to an image / text file")],
    key: Annotated[
        list[Path] | None,
        typer.Option("--key", help="A key directory, scheme key file or trust.json (repeatable)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    passphrase_file: PassphraseFile = None,
) -> None:
    """Say what an input is, without acting on it. Exit 0 when valid, 2 when not."""
    now = int(time.time())
    try:
        text = read_source(source)
        keyring, trust = _load_keys(key or [], passphrase_file)
    except SafescanError as exc:
        result: dict[str, Any] = {"kind": "unknown", "valid": False, "error": exc.to_dict()}
    else:
        result = inspect_text(text, keyring, trust, now=now)
    if as_json:
        sys.stdout.write(json_text(result) + "\n")
    else:
        _print_inspection(result)
    raise typer.Exit(0 if result.get("valid") else 2)


def _load_keys(
    paths: list[Path], passphrase_file: Path | None
) -> tuple[SchemeKeyring | None, TrustStore | None]:
    if not paths:
        return None, None
    from safescan.code.keys import SchemeKey, SchemeKeyring
    from safescan.code.keystore import KeyDirectory, load_trust_file

    ring = SchemeKeyring()
    trust = None
    pw: bytes | None = None
    for p in paths:
        if p.is_dir():
            kd = KeyDirectory.load(p)
            trust = kd.trust
            pw = pw or read_passphrase(passphrase_file)
            for k in kd.keyring(pw).keys.values():
                ring.add(k)
        elif p.suffix == ".json" and _names_trust(p):
            trust, _ = load_trust_file(p)
        else:
            pw = pw or read_passphrase(passphrase_file)
            ring.add(SchemeKey.load(p, pw))
    if trust is None or not ring.keys:
        raise KeyFileError("--key needs the scheme key(s) and the trust file (or a key directory)")
    return ring, trust


def _names_trust(path: Path) -> bool:
    """Whether ``path`` begins as a trust file does (else it is a scheme key file): read
    bounded (before: ``read_text()`` read a FIFO or ``/dev/zero`` given as ``--key`` whole)."""
    from safescan.code.keystore import TRUST_LIMIT
    from safescan.code.smallfile import read_bounded

    try:
        return b"safescan-trust" in read_bounded(path, TRUST_LIMIT, "a trust file")[:200]
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None


def _print_inspection(result: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    kind = result["kind"]
    if kind == "unknown":
        if result.get("error", {}).get("code") == "not_a_payment_code":
            console.print("[bold yellow]not a payment code[/]: nothing was opened or followed")
        if result.get("looks_like") == "url":
            console.print(f"it is a link: [dim]{term(result.get('text'))}[/]")
    elif kind == "emv":
        console.print("[bold yellow]EMVCo QR code: UNVERIFIED[/] (no signature; not payable here)")
        summary = result.get("summary", {})
        for label, key in EMV_SUMMARY_LABELS:
            if key in summary:
                value = summary[key]
                shown = ", ".join(value) if isinstance(value, list) else value
                console.print(f"  {term(label):>9}: {term(shown)}")
        console.print(f"  {'CRC':>9}: {'ok' if result.get('crc_valid') else '[red]wrong[/]'}")
        for fid, value in result.get("fields", {}).items():
            if isinstance(value, dict):
                console.print(f"  {term(fid)}:")
                for sub, sub_value in value.items():
                    console.print(f"    {term(sub)}: {term(sub_value)}")
            else:
                console.print(f"  {term(fid)}: {term(value)}")
        for w in result.get("warnings", []):
            console.print(f"[yellow]deviation[/]: {term(w)}")
    else:
        hdr = result.get("header")
        console.print(f"[bold]safescan payment code[/] header: {term(hdr)}")
        contents = result.get("contents")
        if contents:
            mer = contents["merchant"]
            console.print(
                f"[green]verified[/] merchant: {term(mer['name'])}, {term(mer['city'])}"
                f" ({term(mer['id'])})"
            )
            for item in contents.get("items", []):
                console.print(
                    f"  {term(item['quantity'])} x {term(item['name'])}  {term(item['display'])}"
                )
            if "total_display" in contents:
                console.print(f"  total: [bold]{term(contents['total_display'])}[/]")
            for w in contents["warnings"]:
                console.print(f"[bold red]warning[/]: {term(w)}")
    if not result.get("valid"):
        err = result.get("error", {})
        console.print(f"[bold red]{term(err.get('type'))}[/]: {term(err.get('message'))}")
