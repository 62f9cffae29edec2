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
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "safescan"
SINKS_ATTR = {"print", "add_row", "status", "log", "rule", "from_markup", "step"}
SINKS_NAME = {"Panel", "Text"}
# _when, when: a time stamp as digits (merchant and wallet command modules)
SAFE_CALLS = {"term", "visible", "len", "int", "Table", "Panel", "Text", "_when", "when"}


def _numeric_spec(value: ast.FormattedValue) -> bool:
    """``{x:.2f}``, ``{n:02d}``: the spec only formats numbers (anything else raises)."""
    spec = value.format_spec
    if not isinstance(spec, ast.JoinedStr) or len(spec.values) != 1:
        return False
    text = spec.values[0]
    return isinstance(text, ast.Constant) and str(text.value)[-1:] in set("dfeEgGxXob%n")


@dataclass(frozen=True)
class _Rules:
    """What a sink may be given: constants, f-strings of safe values or numeric formats, sums
    of safe parts, either branch of a safe ``x if c else y``, and calls of ``calls``."""

    calls: frozenset[str]
    names: frozenset[str] = frozenset()  # rich renderables bound in the module
    rich: bool = True  # rich: ``Text(x)`` is as safe as x; plain: ASCII ``json.dumps`` is safe


def _safe(node: ast.expr, rules: _Rules) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.JoinedStr):
        return all(
            _safe(v.value, rules) or _numeric_spec(v)
            for v in node.values
            if isinstance(v, ast.FormattedValue)
        )
    if isinstance(node, ast.Call):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if rules.rich and name == "Text":  # not parsed as markup, but its text must be visible
            return all(_safe(a, rules) for a in node.args[:1])
        if not rules.rich and name == "dumps":  # ASCII JSON escapes every control character
            return not any(k.arg == "ensure_ascii" for k in node.keywords)
        return name in rules.calls
    if isinstance(node, ast.BinOp):  # arithmetic gives numbers; "a" + "b" needs safe parts
        return not isinstance(node.op, ast.Add) or (
            _safe(node.left, rules) and _safe(node.right, rules)
        )
    if isinstance(node, ast.Name):
        return node.id in rules.names
    if isinstance(node, ast.IfExp):
        return _safe(node.body, rules) and _safe(node.orelse, rules)
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
    rules = _Rules(frozenset(SAFE_CALLS), frozenset(renderables))
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
            if _safe(arg, rules):
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


# --- plain output: every value a command prints goes through say() / visible() -------------

ECHO_SINKS = {
    ("typer", "echo"),
    ("typer", "secho"),
    ("click", "echo"),
    ("stdout", "write"),
    ("stderr", "write"),
}
ECHO_SAFE_CALLS = {"visible", "term", "len", "int", "float", "hex", "round", "bool", "json_text"}


ECHO_RULES = _Rules(frozenset(ECHO_SAFE_CALLS), rich=False)


def _echo_violations(path: Path) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        if isinstance(func, ast.Name):
            sink = func.id == "print"
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name | ast.Attribute):
            base = func.value.id if isinstance(func.value, ast.Name) else func.value.attr
            sink = (base, func.attr) in ECHO_SINKS
        else:
            sink = False
        if not sink or _safe(node.args[0], ECHO_RULES):
            continue
        near = lines[node.lineno - 1] + lines[node.args[0].lineno - 1]
        if "term-safe:" in near:
            continue
        found.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node.args[0])[:70]}")
    return found


def test_every_value_a_command_prints_plainly_is_made_visible() -> None:
    """``typer.echo``, ``print``, ``sys.stdout.write`` in src/ print only constants, numbers or
    :func:`visible` text; commands print through :func:`safescan.code.output.say` (redteam: the
    audit's findings and ``manufacturer list`` wrote database text with ESC sequences to the
    operator's terminal). A line may opt out with ``# term-safe: <why>`` when the value is ours."""
    problems = [v for p in sorted(SRC.rglob("*.py")) for v in _echo_violations(p)]
    assert not problems, "\n".join(problems)


def test_say_shows_control_bidi_and_zero_width_characters_as_escapes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from safescan.code.output import say

    say("a\x1b[2Jb\nc\u202ed\x9b\r\u200d", err=False)
    say("\x07e", err=True)
    out, err = capsys.readouterr()
    assert out == "a\\x1b[2Jb\nc\\u202ed\\x9b\\x0d\\u200d\n"
    assert err == "\\x07e\n"


@pytest.mark.parametrize(
    "value",
    ["\u202egnp.exe", "a\u200db", "\u2066x\u2069", "\x9b31m", "\U000e0041tag", "Café ü €"],
)
def test_json_output_escapes_invisible_characters_and_keeps_the_value(value: str) -> None:
    """``--json`` output (``emit_json``/``json_text``): bidi, zero-width, C1 and tag
    characters are ``\\uXXXX`` escapes (before: written raw with ``ensure_ascii=False``), the
    document decodes to the same value, and ordinary non-ASCII text stays readable."""
    import json

    from safescan.code.output import json_text

    text = json_text({"name": value, "items": [value]}, indent=2)
    assert json.loads(text) == {"name": value, "items": [value]}
    for ch in "\u202e\u200d\u2066\u2069\x9b\U000e0041":
        assert ch not in text
    if value == "Café ü €":
        assert value in text
