"""The package layout's dependencies go one way (docs/institution.md, "Dependencies").

Parsed from the source (every ``import``, at any depth, including the ones inside functions),
so a shortcut across layers fails here before it becomes architecture.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "safescan"

# package -> the safescan packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "code": set(),
    "api": {"code"},
    "carrier": {"code"},
    "institution": {"code", "api"},
    "cluster": {"code"},
    "remote": {"code", "api"},
    "web": {"code"},
    "merchant": {"code", "api", "remote", "web"},
    "wallet": {"code", "api", "remote", "carrier", "web"},
    "admin": {"code", "api", "remote"},
}


def _imports(path: Path) -> set[str]:
    """The safescan top-level packages a module imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "safescan" and len(parts) > 1:
                found.add(parts[1])
    return found


def _modules(package: str) -> list[Path]:
    single = SRC / f"{package}.py"
    return [single] if single.exists() else sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_the_layers_below_it(package: str) -> None:
    modules = _modules(package)
    assert modules, f"no sources for safescan.{package}"
    wrong = {
        f"{path.relative_to(SRC)} imports safescan.{other}"
        for path in modules
        for other in _imports(path) - ALLOWED[package] - {package}
    }
    assert not wrong, sorted(wrong)
