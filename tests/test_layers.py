"""The package layout's dependencies go one way (docs/institution.md, "Dependencies").

Parsed from the source (every ``import``, at any depth, including the ones inside functions),
so a shortcut across layers fails here before it becomes architecture. Also: the demo and the
apps reach the institution only over HTTP, no module takes part in an import cycle, and no
source file grows past 700 lines.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "safescan"

# package -> the safescan packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "code": set(),
    "procs": {"code"},
    "api": {"code"},
    "carrier": {"code", "procs"},
    "institution": {"code", "api", "web"},
    "cluster": {"code", "procs", "web"},
    "client": {"code", "api", "web"},
    "web": {"code"},
    "merchant": {"code", "api", "client", "web"},
    "wallet": {"code", "api", "client", "carrier", "web"},
    "admin": {"code", "api", "client"},
    "demo": {"code", "api", "client", "carrier", "merchant", "wallet", "procs", "web"},
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


def test_every_package_is_placed_in_a_layer() -> None:
    """A new top-level package or module must be given its place above (else nothing
    guards it)."""
    entry_points = {"__init__", "__main__", "cli"}  # the command line: lazily imports all
    found = {
        p.stem if p.is_file() else p.name
        for p in SRC.iterdir()
        if (p.is_file() and p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert found - entry_points == set(ALLOWED), sorted(found - entry_points ^ set(ALLOWED))


# --- the demo and the apps reach the institution only over HTTP -------------------------------

# the programs that stand where a merchant, a customer or an operator stands: they talk to the
# institution over its HTTP API (the demo also runs its command line, as an operator does)
OVER_HTTP = ("demo", "merchant", "wallet", "admin", "client")
# the institution's database stack: a shortcut to its database is as wrong as importing it
# importing it
SERVER_ONLY = {"sqlalchemy", "alembic", "psycopg", "psycopg_pool"}


def _third_party_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _module_strings(path: Path) -> set[str]:
    """String constants naming a module of the institution (``importlib`` by name)."""
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("safescan.institution.")
    }


@pytest.mark.parametrize("package", OVER_HTTP)
def test_demo_and_apps_reach_the_institution_only_over_http(package: str) -> None:
    wrong: list[str] = []
    for path in _modules(package):
        where = str(path.relative_to(SRC))
        if "institution" in _imports(path):
            wrong.append(f"{where} imports safescan.institution")
        wrong += [f"{where} imports {m}" for m in sorted(_third_party_imports(path) & SERVER_ONLY)]
        wrong += [f"{where} names the module {s}" for s in sorted(_module_strings(path))]
    assert not wrong, wrong


def test_loading_the_demo_and_the_apps_loads_nothing_of_the_institution() -> None:
    """The same, at run time: everything the demo, the POS, the wallet (and its web app) and
    the admin commands import, transitively, leaves the institution and its database stack
    unloaded."""
    import subprocess
    import sys

    modules = [
        "safescan.demo",
        "safescan.merchant.web",
        "safescan.merchant.cli",
        "safescan.wallet.cli",
        "safescan.wallet.web.server",
        "safescan.admin",
    ]
    probe = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.startswith('safescan.institution')"
        f" or m.split('.')[0] in {sorted(SERVER_ONLY)!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_the_http_check_finds_a_shortcut(tmp_path: Path) -> None:
    """The checks above see an import inside a function, a server library and a module
    named by string."""
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "def f():\n"
        "    from safescan.institution.service import Service\n"
        "    import sqlalchemy.orm\n"
        "    return __import__('importlib').import_module('safescan.institution.db')\n"
    )
    assert "institution" in _imports(sneaky)
    assert "sqlalchemy" in _third_party_imports(sneaky)
    assert _module_strings(sneaky) == {"safescan.institution.db"}


# --- no import cycles ---------------------------------------------------------------------------


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """Module -> the modules of ``root`` it imports (at any depth, also inside functions: a
    cycle broken only by a late import is still a cycle; ``if TYPE_CHECKING`` blocks aside).
    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module."""
    paths = {_module_name(p, root): p for p in root.rglob("*.py") if "migrations" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                names = [f"{base}.{a.name}" for a in node.names]
                targets = [n for n in names if n in paths]
                if len(targets) < len(names):  # a name defined in the module ``base`` itself
                    targets.append(base)
            for target in targets:
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


# Import cycles that exist today, each to be broken (issue #15); this list only shrinks.
KNOWN_CYCLES: list[list[str]] = [
    ["safescan.api.events", "safescan.api.standard_webhooks"],
    ["safescan.institution.db", "safescan.institution.writer"],
]


def test_no_new_import_cycles() -> None:
    cycles = import_cycles(import_graph())
    new = [c for c in cycles if c not in KNOWN_CYCLES]
    assert not new, f"import cycles in src/safescan: {new}"
    gone = [c for c in KNOWN_CYCLES if c not in cycles]
    assert not gone, f"broken, remove from KNOWN_CYCLES: {gone}"


def test_the_cycle_check_finds_a_late_import_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "safescan" / "p"
    pkg.mkdir(parents=True)
    (tmp_path / "safescan" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from safescan.p.b import B\nA = 1\n")
    (pkg / "b.py").write_text("def f():\n    from safescan.p import a\n    return a\nB = 2\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from safescan.p.d import D\n"
    )
    (pkg / "d.py").write_text("from .c import TYPE_CHECKING\n")
    graph = import_graph(tmp_path / "safescan")
    assert import_cycles(graph) == [["safescan.p.a", "safescan.p.b"]]


# --- no file over 700 lines ---------------------------------------------------------------------

MAX_LINES = 700
# Files over the limit today, each being split (issue #15); this list only shrinks. The
# migrations (generated, append-only history) are not counted.
OVERSIZE: set[str] = set()


def _sizes() -> dict[str, int]:
    return {
        str(p.relative_to(SRC)): len(p.read_text().splitlines())
        for p in SRC.rglob("*.py")
        if "migrations" not in p.relative_to(SRC).parts
    }


def test_no_source_file_over_700_lines() -> None:
    sizes = _sizes()
    over = {name for name, n in sizes.items() if n > MAX_LINES}
    assert not over - OVERSIZE, {n: sizes[n] for n in sorted(over - OVERSIZE)}
    shrunk = OVERSIZE - over
    assert not shrunk, f"now under {MAX_LINES} lines, remove from OVERSIZE: {sorted(shrunk)}"


# --- the HTTP layer only speaks HTTP ------------------------------------------------------------

HTTP_LAYER = SRC / "institution" / "http"
# the database stack, and the institution's modules that are nothing but it
DATABASE = {"sqlalchemy", "alembic", "psycopg", "psycopg_pool"}
DATABASE_MODULES = {
    "safescan.institution.db",
    "safescan.institution.models",
    "safescan.institution.sql",
    "safescan.institution.writer",
}
# what only code that queries does: call these on anything, or reach into ``<x>.db``
QUERYING = {"execute", "exec_driver_sql", "scalar", "scalars", "begin", "connect"}
SQL = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\s", re.IGNORECASE)


def http_layer_shortcuts(path: Path) -> list[str]:
    """Where a module of the HTTP layer reaches the database itself."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    disposing: set[int] = set()
    handed: list[ast.Attribute] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        for name in names:
            if name.split(".")[0] in DATABASE or name in DATABASE_MODULES:
                found.append(f"line {node.lineno}: imports {name}")
        if isinstance(node, ast.Attribute):
            if node.attr in QUERYING:
                found.append(f"line {node.lineno}: calls .{node.attr}")
            on_db = isinstance(node.value, ast.Attribute) and node.value.attr == "db"
            if on_db and node.attr == "dispose":  # closing the pool at shutdown: the app's job
                disposing.add(id(node.value))
            elif on_db:
                found.append(f"line {node.lineno}: uses .db.{node.attr}")
            elif node.attr == "db":  # handing the database to something (``Ops(inst.db)``)
                handed.append(node)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value):
            found.append(f"line {node.lineno}: SQL text")
    found += [f"line {n.lineno}: takes .db" for n in handed if id(n) not in disposing]
    return found


def test_the_http_layer_runs_no_sql() -> None:
    """No module of ``safescan.institution.http`` imports the database stack or the modules
    that are only it, queries, or touches the database handle: the domain does that."""
    modules = sorted(HTTP_LAYER.rglob("*.py"))
    assert len(modules) >= 5, modules
    wrong = {
        f"{path.relative_to(SRC)} {what}" for path in modules for what in http_layer_shortcuts(path)
    }
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize(
    "source",
    [
        "import sqlalchemy\n",
        "from sqlalchemy.orm import Session\n",
        "def f():\n    from safescan.institution import db\n",
        "from safescan.institution.db import Database\n",
        "from safescan.institution.models import Event\n",
        "def f(inst):\n    return inst.db.read(lambda c: 1)\n",
        "def f(conn):\n    return conn.execute(q)\n",
        "def f(c):\n    return c.exec_driver_sql('x')\n",
        "Q = 'SELECT 1 FROM events'\n",
        "def f(inst):\n    return WebhookOps(inst.db, inst.keys.root)\n",
        "def f(inst):\n    db = inst.db\n",
    ],
)
def test_the_http_layer_check_finds_each_shortcut(tmp_path: Path, source: str) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(source)
    assert http_layer_shortcuts(sneaky), source


INSTITUTION = SRC / "institution"


def test_every_route_is_in_the_http_layer() -> None:
    """Routes (``fastapi``, ``starlette``) only in ``safescan.institution.http``: health checks,
    webhook operations and the rest are the domain's, routed there (the server module only
    starts uvicorn)."""
    wrong = sorted(
        str(path.relative_to(SRC))
        for path in INSTITUTION.rglob("*.py")
        if HTTP_LAYER not in path.parents
        and any(m.split(".")[0] in {"fastapi", "starlette"} for m in _module_imports(path))
    )
    assert not wrong, wrong


def _module_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_beside_the_domain_only_what_is_not_a_domain_module() -> None:
    """Enrollment, idempotency and the health checks are domain modules: they live in
    ``institution/domain``."""
    for name in ("enrollment.py", "idempotency.py", "health.py"):
        assert not (INSTITUTION / name).exists(), f"institution/{name} belongs in domain/"
