"""With ``--json`` every failure is the JSON error document, in every command.

``code/output.fail`` prints ``{"error": {"type", "code", "message"}}`` on stdout when the
command was given ``--json``; a call site that forgot to pass ``as_json`` printed a red line on
stderr and nothing on stdout, so a script reading stdout got no JSON at all (`pos staff add
--json` with an unreadable password file, `pos staff list --json` with a corrupt staff file,
`pos seal-setup --json` without a configuration). Each ``--json`` command of the POS, wallet,
carrier and cluster groups is run here, in process, with an input it must refuse, and its
stdout must parse as that document; a command added without a refusal below fails
:func:`test_every_json_command_is_covered`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from safescan.carrier.cli import carrier_app
from safescan.cluster.cli import cluster_app
from safescan.merchant.cli import merchant_app
from safescan.wallet.cli import wallet_app

GROUPS = {"pos": merchant_app, "wallet": wallet_app, "carrier": carrier_app, "cluster": cluster_app}
M = "{tmp}/missing"
#: a refused input for each command; ``{tmp}`` is the test's directory (nothing listens on
#: port 1 of 127.0.0.1; ``{tmp}/bad.json`` and ``{tmp}/pos-staff.json`` are not JSON)
BAD: dict[str, str] = {
    "pos onboard": "--institution https://127.0.0.1:1 --name Shop --city Paris --country FR"
    " --mcc 5812 --settlement-account FR76 --config {tmp}/new.json",
    "pos seal-setup": f"--config {M}/pos.json",
    "pos order": f"--item Tea:1:100 --config {M}/pos.json",
    "pos orders": f"--config {M}/pos.json",
    "pos refund": f"ord_x --config {M}/pos.json",
    "pos rekey": f"--new-passphrase-file {M}/p --config {M}/pos.json",
    "pos encrypt-key": f"--config {M}/pos.json",
    "pos staff add": f"alice --password-file {M}/p --config {{tmp}}/pos.json",
    "pos staff remove": "alice --config {tmp}/pos.json",
    "pos staff list": "--config {tmp}/pos.json",
    "pos webhook set": f"https://hook.example --config {M}/pos.json",
    "pos webhook clear": f"--config {M}/pos.json",
    "pos webhook show": f"--config {M}/pos.json",
    "pos webhook test": f"--config {M}/pos.json",
    "pos webhook deliveries": f"--config {M}/pos.json",
    "pos webhook resend": f"evt_x --config {M}/pos.json",
    "pos webhook rotate": f"--config {M}/pos.json",
    "pos apikey create": f"--scope nonsense --config {M}/pos.json",
    "pos apikey list": f"--config {M}/pos.json",
    "pos apikey rotate": f"key_x --config {M}/pos.json",
    "pos apikey revoke": f"key_x --config {M}/pos.json",
    "pos config show": "--config {tmp}/bad.json",
    "wallet enroll": "--institution https://127.0.0.1:1 --carrier tcp://127.0.0.1:1 --token bad"
    f" --pin-file {M}/pin --wallet-dir {{tmp}}/w",
    "wallet scan": f"nothing --wallet-dir {M}/w",
    "wallet status": f"--wallet-dir {M}/w",
    "wallet balance": f"--wallet-dir {M}/w",
    "wallet pending": f"--wallet-dir {M}/w",
    "wallet history": f"--wallet-dir {M}/w",
    "wallet change-pin": f"--wallet-dir {M}/w",
    "wallet config show": "--wallet-dir {tmp}/badw",
    "carrier info": "tcp://127.0.0.1:1",
    "carrier tamper": "",
    "carrier screen": "",
    "carrier press": f"sideways --control {M}/sock",
    "carrier manufacture": f"tcp://127.0.0.1:1 --factory {M}/f --passphrase-file {M}/p",
    "carrier factory init": f"{{tmp}}/f --passphrase-file {M}/p",
    "cluster up": "--state {tmp}/c --api-processes 0",
    "cluster down": f"--state {M}/c",
    "cluster status": f"--state {M}/c",
    "cluster kill": f"pg0 --state {M}/c",
}
#: ``--json`` commands that take no input they could refuse
CANNOT_FAIL = {"pos apikey scopes"}


def _json_commands(cmd: Any, path: list[str]) -> Iterator[str]:
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _json_commands(sub, [*path, name])
    elif any("--json" in param.opts for param in cmd.params):
        yield " ".join(path)


def test_every_json_command_is_covered() -> None:
    found = {
        name
        for group, app in GROUPS.items()
        for name in _json_commands(typer.main.get_command(app), [group])
    }
    assert found - CANNOT_FAIL == set(BAD)


@pytest.mark.parametrize("command", sorted(BAD))
def test_a_refused_input_is_the_json_error_document(command: str, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "pos-staff.json").write_text("{not json")
    (tmp_path / "badw").mkdir()
    for name in ("settings.json", "wallet.json"):
        (tmp_path / "badw" / name).write_text("{not json")
    group, *words = command.split()
    args = [*words, *BAD[command].format(tmp=tmp_path).split(), "--json"]
    result = CliRunner().invoke(GROUPS[group], args, input="")
    assert result.exit_code not in (0, None), result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"error"}, doc
    assert doc["error"]["code"] and doc["error"]["message"], doc
    assert not (tmp_path / "w").exists() and not (tmp_path / "c").exists()
