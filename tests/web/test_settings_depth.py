"""A settings file or variable nested past the interpreter's recursion limit is a typed
``SettingsError`` (redteam, tenth sitting: ``a = [[[[...]]]]`` in a TOML settings file and
``SAFESCAN_<SECTION>__<FIELD>=[[[[...`` in the environment were ``RecursionError``
tracebacks in every command reading settings: the institution, the POS, the wallet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from safescan.web.settings_file import SettingsError, from_environment, read_toml

DEEP = 50_000


@pytest.mark.parametrize(
    "text",
    ["a = " + "[" * DEEP + "]" * DEEP, "a = " + "{b = " * DEEP + "1" + "}" * DEEP],
    ids=["arrays", "inline-tables"],
)
def test_a_deeply_nested_settings_file_is_a_typed_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(text + "\n")
    with pytest.raises(SettingsError, match="nested too deeply"):
        read_toml(path)


@pytest.mark.parametrize("value", ["[" * DEEP, "[" * DEEP + "]" * DEEP, "[1,", "[NaN"])
def test_a_deeply_nested_or_broken_array_variable_is_a_typed_error(value: str) -> None:
    with pytest.raises(SettingsError, match="SAFESCAN_SERVER__ALLOW is not a JSON array"):
        from_environment("SAFESCAN_", {"SAFESCAN_SERVER__ALLOW": value})
    assert from_environment("SAFESCAN_", {"SAFESCAN_SERVER__ALLOW": '["a"]'}) == {
        "server": {"allow": ["a"]}
    }
