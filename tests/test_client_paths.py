"""The institution's API is spoken in one place: the typed client (``safescan.client``).

Parsed from the source: outside the client package and the institution's own routes, no
module writes a ``/v1/...`` path, builds a wire object's JSON by hand (order lines, payment
authorizations) or makes an ``httpx`` client of its own (TLS settings live in one place).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "safescan"

# who may speak the institution's API directly
SPEAKERS = ("client/", "institution/")
# JSON keys only a wire object's own declaration writes
WIRE_KEYS = {"unit_price", "authorization"}


def _modules() -> list[Path]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(SPEAKERS):
            continue
        out.append(path)
    return out


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants (prose may name a route)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _raw_paths(source: str, name: str) -> list[str]:
    """Route-like string literals (``/v1/...``) that are not prose."""
    tree = ast.parse(source, name)
    prose = _docstrings(tree)
    return [
        f"{name}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in prose
        and "/v1/" in node.value
        and " " not in node.value.strip()  # help texts naming a route are prose
    ]


def _hand_built(source: str, name: str) -> list[str]:
    """Dict literals with a key only a wire object's declaration writes."""
    hits = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            if keys & WIRE_KEYS:
                hits.append(f"{name}:{node.lineno}: {sorted(keys)}")
    return hits


def _rel(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


def test_no_module_outside_the_client_writes_an_api_path() -> None:
    hits = [h for path in _modules() for h in _raw_paths(path.read_text(), _rel(path))]
    assert not hits, hits


def test_wire_objects_are_not_built_by_hand() -> None:
    hits = [
        h
        for path in _modules()
        if not _rel(path).startswith(("code/", "api/"))  # the declarations themselves
        for h in _hand_built(path.read_text(), _rel(path))
    ]
    assert not hits, hits


@pytest.mark.parametrize("package", ["admin.py", "merchant", "wallet"])
def test_the_apps_make_no_http_client_of_their_own(package: str) -> None:
    root = SRC / package
    paths = [root] if root.is_file() else sorted(root.rglob("*.py"))
    hits = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "httpx"
                and node.attr in {"Client", "AsyncClient", "get", "post", "request", "stream"}
            ):
                hits.append(f"{_rel(path)}:{node.lineno}: httpx.{node.attr}")
    assert not hits, hits


def test_the_checks_can_fail() -> None:
    """A raw path (plain or in an f-string) and hand-built wire JSON are caught; prose is not."""
    bad = (
        '"""Talks to POST /v1/payments (prose: allowed)."""\n'
        'PATH = "/v1/payments"\n'
        "def f(o, a):\n"
        '    body = {"code": o, "authorization": a}\n'
        '    line = {"name": o, "quantity": 1, "unit_price": 2}\n'
        '    return f"/v1/merchant/orders/{o}", body, line\n'
    )
    assert [h.split(": ", 1)[1] for h in _raw_paths(bad, "bad.py")] == [
        "'/v1/payments'",
        "'/v1/merchant/orders/'",
    ]
    assert len(_hand_built(bad, "bad.py")) == 2
