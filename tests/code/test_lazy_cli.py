"""The command line imports each part only when one of its commands runs (issue 20).

``safescan --help`` and ``safescan code inspect TEXT`` must not import the institution server,
the QR imaging stack, the demo or the cryptography; the listings must still show exactly what
the loaded commands would, and every command must still be reachable. (Start-up *time* is a
benchmark, bench/bench_cli_startup.py, not a test.)
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
import typer.main

from safescan.code.lazy_cli import LazyCommand, LazyGroup

ROOT = Path(__file__).resolve().parent.parent.parent
VECTORS = json.loads((ROOT / "tests" / "vectors" / "code_v1.json").read_text())
CODE_TEXT = VECTORS["codes"][0]["text"]

# what no listing and no header-only inspection may import
HEAVY = (
    "safescan.institution",
    "safescan.demo",
    "safescan.merchant",
    "safescan.wallet",
    "safescan.carrier",
    "safescan.cluster",
    "safescan.admin",
    "numpy",
    "PIL",
    "httpx",
    "sqlalchemy",
    "fastapi",
    "zxingcpp",
)
NO_CRYPTO = ("cryptography", "safescan.code.keys", "safescan.code.envelope", "safescan.code.certs")

_PROBE = """
import json, sys
sys.argv = ["safescan", *json.loads(sys.argv[1])]
from safescan.cli import main
try:
    main()
except SystemExit as exc:
    status = exc.code
else:
    status = 0
with open({out!r}, "w") as f:
    json.dump({{"status": status, "modules": sorted(sys.modules)}}, f)
"""


def imported_by(args: list[str], tmp_path: Path, **env_extra: str) -> tuple[Any, list[str], str]:
    """Exit status, modules imported and stdout of one ``safescan ARGS`` process."""
    out = tmp_path / "modules.json"
    env = {**os.environ, "COLUMNS": "100", **env_extra}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(out=str(out)), json.dumps(args)],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    doc = json.loads(out.read_text())
    return doc["status"], doc["modules"], proc.stdout


def loaded(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_root_help_lists_every_group_without_importing_one(tmp_path: Path) -> None:
    status, modules, out = imported_by(["--help"], tmp_path)
    assert status == 0
    assert loaded(modules, HEAVY + NO_CRYPTO + ("pydantic", "rich.markdown")) == []
    for name in ("demo", "keys", "code", "carrier", "institution", "pos", "wallet", "cluster"):
        assert f"\n  {name} " in out, out
    assert "--version" in out and "--install-completion" in out


def test_no_arguments_shows_the_same_listing(tmp_path: Path) -> None:
    _, modules, out = imported_by([], tmp_path)
    assert "Commands:" in out and "  institution " in out
    assert loaded(modules, HEAVY + NO_CRYPTO) == []


@pytest.mark.parametrize("extra", [[], ["--json"]], ids=["text", "json"])
def test_code_inspect_without_keys_reads_the_header_without_cryptography(
    tmp_path: Path, extra: list[str]
) -> None:
    status, modules, out = imported_by(["code", "inspect", CODE_TEXT, *extra], tmp_path)
    assert status == 0
    assert loaded(modules, HEAVY + NO_CRYPTO) == []
    if extra:
        assert json.loads(out)["header"]["kind"] == "dynamic"
    else:
        assert "safescan payment code" in out


@pytest.mark.parametrize(
    "text",
    [
        CODE_TEXT[: 4 + len(CODE_TEXT[4:]) // 3 * 3 - 2],  # cut to a length Base45 cannot have
        CODE_TEXT + "a",
        "SS1:",
        "SS1:" + CODE_TEXT[4:10],  # shorter than any code's header, key and tag
        "https://example.org/pay",
        "SS1:" + "A" * 9000,
    ],
    ids=["cut", "not-base45", "empty", "too-short", "url", "oversize"],
)
def test_code_inspect_bad_input_is_refused_as_before(tmp_path: Path, text: str) -> None:
    status, modules, out = imported_by(["code", "inspect", text, "--json"], tmp_path)
    assert status == 2
    result = json.loads(out)
    assert result["valid"] is False and result["error"]["type"]
    assert loaded(modules, HEAVY) == []


def test_version_imports_nothing_of_the_parts(tmp_path: Path) -> None:
    status, modules, out = imported_by(["--version"], tmp_path)
    assert status == 0 and out.startswith("safescan ")
    assert loaded(modules, HEAVY + NO_CRYPTO) == []


def test_an_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    status, modules, _ = imported_by(["nosuch"], tmp_path)
    assert status == 2
    assert loaded(modules, HEAVY) == []
    status, _, _ = imported_by(["code", "nosuch"], tmp_path)
    assert status == 2


def test_shell_completion_lists_names_without_importing_the_parts(tmp_path: Path) -> None:
    _, modules, out = imported_by(
        [], tmp_path, _SAFESCAN_COMPLETE="complete_bash", COMP_WORDS="safescan c", COMP_CWORD="1"
    )
    assert out.split() == ["code", "carrier", "cluster"]
    assert loaded(modules, HEAVY + NO_CRYPTO) == []
    _, _, out = imported_by(
        [], tmp_path, _SAFESCAN_COMPLETE="complete_bash", COMP_WORDS="safescan code i",
        COMP_CWORD="2",
    )  # fmt: skip
    assert out.split() == ["inspect"]


def test_a_group_imports_only_its_own_part(tmp_path: Path) -> None:
    status, modules, out = imported_by(["wallet", "--help"], tmp_path)
    assert status == 0 and "enroll" in out and "--config" in out
    # the listing: no command module of the wallet (safescan.wallet.wallet_cli lists them)
    assert loaded(modules, ("safescan.wallet.cli", "safescan.wallet.flow", "httpx")) == []
    status, modules, out = imported_by(["wallet", "status", "--help"], tmp_path)
    assert status == 0 and "safescan.wallet.cli" in modules
    assert loaded(modules, ("safescan.institution", "safescan.demo", "safescan.cluster")) == []


def test_pos_help_lists_every_command_without_importing_one(tmp_path: Path) -> None:
    status, modules, out = imported_by(["pos", "--help"], tmp_path)
    assert status == 0
    heavy = ("safescan.merchant.cli", "safescan.client.admin", "numpy", "PIL", "safescan.web")
    assert loaded(modules, heavy) == []
    for name in ("onboard", "seal-setup", "order", "orders", "refund", "serve", "rekey"):
        assert f" {name} " in out, out
    for name in ("encrypt-key", "staff", "webhook", "apikey", "config"):
        assert f" {name} " in out, out
    # a command that draws no code does not load the imaging stack or the admin client
    status, modules, _ = imported_by(["pos", "orders", "--help"], tmp_path)
    assert status == 0 and "safescan.merchant.cli" in modules
    assert loaded(modules, ("numpy", "PIL", "safescan.client.admin")) == []


def test_the_customer_desk_refuses_bad_input_without_the_admin_client(tmp_path: Path) -> None:
    """`institution customer ...` imports the HTTP admin client (~0.6 s of CPU) only once it
    has a well-formed token and valid input to send; refusals come before it."""
    no_token = {"SAFESCAN_ADMIN_TOKEN": ""}
    for args, env in (
        (["institution", "customer", "fund", "C1", "--amount", "1_000", "--json"], {}),
        (["institution", "customer", "fund", "C1", "--amount", "5", "--currency", "XYZ"], {}),
        (["institution", "customer", "list", "--json"], no_token),
        (["institution", "customer", "list", "--json"], {"SAFESCAN_ADMIN_TOKEN": "a b"}),
    ):
        status, modules, _ = imported_by(args, tmp_path, **env)
        assert status != 0 and "safescan.admin" in modules, args
        assert loaded(modules, ("safescan.client.admin", "httpx")) == [], args
    # with a token and valid input the client is loaded and asks (nobody listens there: refused)
    env = {"SAFESCAN_ADMIN_TOKEN": "adm_x", "SAFESCAN_INSTITUTION_URL": "http://127.0.0.1:9"}
    status, modules, out = imported_by(
        ["institution", "customer", "list", "--json"], tmp_path, **env
    )
    assert status != 0 and "safescan.client.admin" in modules
    assert "InstitutionUnreachable" in out


def _eager_and_lazy(part: str) -> tuple[typer.core.TyperGroup, type[LazyGroup], typer.Typer]:
    if part == "pos":
        from safescan.merchant.cli import merchant_app
        from safescan.merchant.pos_cli import _PosGroup, pos_app

        return typer.main.get_group(merchant_app), _PosGroup, pos_app
    from safescan.wallet.cli import wallet_app
    from safescan.wallet.wallet_cli import _WalletGroup, wallet_group

    return typer.main.get_group(wallet_app), _WalletGroup, wallet_group


@pytest.mark.parametrize("part", ["pos", "wallet"])
def test_a_lazy_part_lists_exactly_the_commands_of_its_app(part: str) -> None:
    eager, group, app = _eager_and_lazy(part)
    assert list(group.lazy) == eager.list_commands(typer.Context(eager))
    built = typer.main.get_group(app)
    assert [p.name for p in built.params] == [p.name for p in eager.params]  # wallet's --config
    lazy = group(name=part)
    for name in group.lazy:
        built, command = lazy.commands[name], eager.commands[name]
        assert type(built) is type(command) and built.help == command.help, name
        assert [p.name for p in built.params] == [p.name for p in command.params], name
        if isinstance(command, typer.core.TyperGroup):
            assert list(built.commands) == list(command.commands), name  # type: ignore[attr-defined]


def lazy_groups() -> list[tuple[str, type[LazyGroup]]]:
    from safescan.cli import _Safescan
    from safescan.code.code_cli import _CodeGroup
    from safescan.merchant.pos_cli import _PosGroup
    from safescan.wallet.wallet_cli import _WalletGroup

    return [
        ("safescan", _Safescan),
        ("safescan code", _CodeGroup),
        ("safescan pos", _PosGroup),
        ("safescan wallet", _WalletGroup),
    ]


def first_paragraph(text: str | None) -> str:
    return " ".join(inspect.cleandoc(text or "").split("\n\n")[0].split())


@pytest.mark.parametrize("path,group", lazy_groups(), ids=lambda v: str(v))
def test_stored_help_is_exactly_the_loaded_commands_help(path: str, group: type[LazyGroup]) -> None:
    """The listing's text (kept so as not to import) must not drift from the real help."""
    for name, spec in group.lazy.items():
        target = spec.load()
        if isinstance(target, typer.Typer):
            command = typer.main.get_group(target)
        else:
            command = typer.main.get_command_from_info(
                typer.models.CommandInfo(name=name, callback=target),
                pretty_exceptions_short=True,
                rich_markup_mode="rich",
            )
        assert " ".join(spec.help.split()) == first_paragraph(command.help), f"{path} {name}"


def test_loading_builds_what_add_typer_would_build() -> None:
    from safescan.cli import app

    root = typer.main.get_command(app)
    assert isinstance(root, LazyGroup)
    code = root.commands["code"]
    assert isinstance(code, LazyGroup)
    assert list(code.commands) == ["make", "inspect"]
    make = code.commands["make"]
    assert {p.name for p in make.params} >= {"order", "out", "keys", "as_json"}
    assert root.commands["institution"].commands  # type: ignore[attr-defined]
    with pytest.raises(KeyError):
        root.commands["nosuch"]


def test_the_command_table_is_a_mapping_in_listing_order() -> None:
    class Group(LazyGroup):
        lazy: ClassVar[dict[str, LazyCommand]] = {
            "b": LazyCommand("B.", lambda: _fail("b must not be imported")),
            "a": LazyCommand("A.", lambda: _fail("a must not be imported")),
        }

    group = Group(name="g")
    assert list(group.commands) == ["b", "a"] and len(group.commands) == 2
    group.commands["c"] = typer.core.TyperCommand("c")
    del group.commands["b"]
    assert list(group.commands) == ["a", "c"]
    with pytest.raises(KeyError):
        del group.commands["b"]
    with pytest.raises(AssertionError, match="a must not be imported"):
        group.commands["a"]


def _fail(message: str) -> Any:
    raise AssertionError(message)
