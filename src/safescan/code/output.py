"""How every ``safescan`` command reports: for people (rich text) or as one JSON object.

With ``--json`` a command prints exactly one JSON object on stdout: its result, or on failure
``{"error": {"type", "code", "message", ...}}`` with a non-zero exit status. Command-line
mistakes (an unknown option, a missing argument) follow the same rule when ``--json`` is on
the command line (:func:`run_app`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import typer

from safescan.code.errors import SafescanError


def json_text(doc: Any, **kwargs: Any) -> str:
    """``json.dumps(doc, ensure_ascii=False)`` with every character no stored text may hold
    (bidi overrides, zero-width characters, C1 controls...) written as a ``\\uXXXX`` escape:
    the same JSON value, but nothing in it reorders or drives the terminal it is read on."""
    from safescan.code.text import forbidden_char

    text = json.dumps(doc, ensure_ascii=False, **kwargs)
    if forbidden_char(text.replace("\n", " ")) is None:
        return text
    out = []
    for ch in text:
        if ch == "\n" or forbidden_char(ch) is None:
            out.append(ch)
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:  # a surrogate pair, as JSON writes a character outside the BMP
            v = ord(ch) - 0x10000
            out.append(f"\\u{0xD800 + (v >> 10):04x}\\u{0xDC00 + (v & 0x3FF):04x}")
    return "".join(out)


def emit_json(doc: Any) -> None:
    """Print ``doc`` as one line of JSON on stdout (:func:`json_text`)."""
    sys.stdout.write(json_text(doc) + "\n")
    sys.stdout.flush()


def error_doc(exc: SafescanError) -> dict[str, Any]:
    """The JSON object for a failed command."""
    return {"error": exc.to_dict()}


def fail(exc: SafescanError, *, as_json: bool, status: int = 2) -> typer.Exit:
    """Report ``exc`` (JSON on stdout, or a red line on stderr); return the exit to raise."""
    if as_json:
        emit_json(error_doc(exc))
    else:
        from rich.console import Console  # imported when needed: start-up time

        from safescan.code.display import term

        Console(stderr=True).print(
            f"[bold red]error:[/] {term(exc.message)} [dim]({term(exc.code)})[/]"
        )
    return typer.Exit(status)


def run_app(app: typer.Typer, *, prog_name: str, argv: Sequence[str] | None = None) -> None:
    """Run a Typer app; with ``--json`` among the arguments, usage errors are JSON too."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--json" not in args:
        app(args=args, prog_name=prog_name)
        return
    try:
        status = app(args=args, prog_name=prog_name, standalone_mode=False)
    except typer.TyperException as exc:
        emit_json(
            {
                "error": {
                    "type": "UsageError",
                    "code": "usage_error",
                    "message": exc.format_message(),
                }
            }
        )
        sys.exit(exc.exit_code or 2)
    except typer.Abort:
        emit_json({"error": {"type": "Aborted", "code": "aborted", "message": "aborted"}})
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)


def say(text: object = "", *, err: bool = False, nl: bool = True) -> None:
    """Print ``text`` for a person (stdout, or stderr with ``err``), one line per ``\\n``, every
    character no stored text may hold shown as an escape (:func:`~safescan.code.display.visible`):
    a merchant name, manufacturer, audit finding or card answer holding ``ESC[2J`` or a bidi
    override cannot drive or reorder the operator's terminal. Every command's plain (non-rich)
    output goes through here (``tests/test_markup_guard.py`` checks it)."""
    from safescan.code.display import visible

    lines = (visible(line) for line in str(text).split("\n"))
    typer.echo("\n".join(lines), err=err, nl=nl)  # term-safe: each line made visible
