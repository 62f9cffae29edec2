"""No value reaches a rich renderer unescaped (issue #13 item 4), checked in the source.

rich parses markup in every string it prints: ``console.print``, table cells, panel titles and
subtitles, status lines. Every value interpolated into such a string, or passed as one, must go
through :func:`safescan.code.display.term` (or ``visible`` inside a ``Text``), so a merchant
called ``[green]✓ verified[/]`` or an EMV field holding ``ESC[2J`` prints as what it is. This
walks every module that imports rich and lists each call that breaks the rule; a line may opt
out with ``# markup-safe: <why>`` when the value is ours (a number, a QR drawing).
"""

from __future__ import annotations

import ast
import contextvars
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "safescan"
SINKS_ATTR = {"print", "add_row", "status", "log", "rule", "from_markup", "step"}
SINKS_NAME = {"Panel", "Text"}
_RENDERABLES: contextvars.ContextVar[set[str]] = contextvars.ContextVar("renderables")
SAFE_CALLS = {"term", "visible", "len", "int", "Table", "Panel", "Text", "_when"}


def _numeric_spec(value: ast.FormattedValue) -> bool:
    """``{x:.2f}``, ``{n:02d}``: the spec only formats numbers (anything else raises)."""
    spec = value.format_spec
    if not isinstance(spec, ast.JoinedStr) or len(spec.values) != 1:
        return False
    text = spec.values[0]
    return isinstance(text, ast.Constant) and str(text.value)[-1:] in set("dfeEgGxXob%n")


def _is_safe(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.JoinedStr):
        return all(
            _is_safe(v.value) or _numeric_spec(v)
            for v in node.values
            if isinstance(v, ast.FormattedValue)
        )
    if isinstance(node, ast.Call):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if name in {"Text"}:  # a Text is not parsed as markup, but its text must be visible
            return all(_is_safe(a) for a in node.args[:1])
        return name in SAFE_CALLS
    if isinstance(node, ast.BinOp):  # arithmetic gives numbers; "a" + "b" needs safe parts
        if not isinstance(node.op, ast.Add):
            return True
        return _is_safe(node.left) and _is_safe(node.right)
    if isinstance(node, ast.Name):
        return node.id in _RENDERABLES.get()
    if isinstance(node, ast.IfExp):
        return _is_safe(node.body) and _is_safe(node.orelse)
    return False


def _renderables(tree: ast.AST) -> set[str]:
    """Names bound to a rich ``Table``/``Panel``/``Text`` (``x = Table(...)``, ``Table.grid``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            base = func.value if isinstance(func, ast.Attribute) else func
            if isinstance(base, ast.Name) and base.id in {"Table", "Panel", "Text"}:
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _violations(path: Path) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    found = []
    tree = ast.parse(source, str(path))
    renderables = _renderables(tree)
    _RENDERABLES.set(renderables)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        attr = func.attr if isinstance(func, ast.Attribute) else None
        name = func.id if isinstance(func, ast.Name) else None
        if attr not in SINKS_ATTR and name not in SINKS_NAME:
            continue
        if attr == "print" and isinstance(func, ast.Attribute) is False:
            continue
        args = list(node.args) + [k.value for k in node.keywords if k.arg in {"title", "subtitle"}]
        for arg in args:
            if _is_safe(arg) or (isinstance(arg, ast.Name) and arg.id in renderables):
                continue
            text = lines[arg.lineno - 1]
            if "markup-safe:" in text or "markup-safe:" in lines[node.lineno - 1]:
                continue
            found.append(f"{path.relative_to(SRC)}:{arg.lineno}: {ast.unparse(arg)[:70]}")
    return found


def test_every_value_given_to_rich_is_escaped() -> None:
    modules = [p for p in SRC.rglob("*.py") if "rich" in p.read_text()]
    assert modules
    problems = [v for p in sorted(modules) for v in _violations(p)]
    assert not problems, "\n".join(problems)
