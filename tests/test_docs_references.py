"""The README and docs point only at files that exist, and README's command table lists the
commands that exist (a newcomer follows them literally)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REF = re.compile(r"((?:docs|tests|bench|scripts|src|fuzz|\.ci)/[A-Za-z0-9_./\-]+)")
PLACEHOLDERS = ("fuzz/fuzz_X.py",)  # "fuzz_X" stands for any harness


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_referenced_files_exist(doc: Path) -> None:
    missing = []
    for match in REF.finditer(doc.read_text()):
        ref = match.group(1).rstrip(".,:;)`").split("::")[0]
        if ref in PLACEHOLDERS or "*" in ref:
            continue
        if not (ROOT / ref).exists():
            missing.append(ref)
    assert not missing, f"{doc.name} names files that do not exist: {missing}"


def test_readme_links_the_first_payment_walkthrough() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/first-payment.md" in readme


def test_readme_command_table_matches_the_cli() -> None:
    readme = (ROOT / "README.md").read_text()
    for group, commands in re.findall(r"^\| `safescan (\w+) ([^`]+)` \|", readme, re.M):
        if group == "demo":
            continue
        out = subprocess.run(
            [sys.executable, "-m", "safescan", group, "--help"],
            capture_output=True, text=True, timeout=60, check=True,
            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        for name in re.findall(r"[a-z][a-z-]+", commands):
            assert f" {name} " in out.stdout, f"README lists `safescan {group} {name}`"


LONG_RUNNING = {"carrier serve", "institution serve", "pos serve", "wallet serve"}


def test_every_command_that_prints_a_result_takes_json() -> None:
    import typer.main

    from safescan.cli import app

    def leaves(command: object, path: str) -> list[tuple[str, object]]:
        sub = getattr(command, "commands", None)
        if not sub:
            return [(path.strip(), command)]
        return [leaf for name, c in sub.items() for leaf in leaves(c, f"{path} {name}")]

    found = leaves(typer.main.get_command(app), "")
    assert len(found) > 30
    without = [
        path
        for path, command in found
        if path not in LONG_RUNNING and not any("--json" in p.opts for p in command.params)  # type: ignore[attr-defined]
    ]
    assert without == []
