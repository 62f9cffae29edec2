"""`safescan carrier` commands (the carrier_app Typer)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from safescan.carrier.cli import carrier_app
from safescan.carrier.testing import CarrierProcess

runner = CliRunner()


def test_info_and_tamper(process: CarrierProcess) -> None:
    result = runner.invoke(carrier_app, ["info", process.url, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["lifecycle"] == "blank" and doc["version"] == "2.0.0"
    state = str(process.state)
    assert runner.invoke(carrier_app, ["tamper", "--state", state]).exit_code == 2
    assert runner.invoke(carrier_app, ["tamper", process.url, "--yes"]).exit_code == 2
    result = runner.invoke(carrier_app, ["tamper", "--state", state, "--yes"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(carrier_app, ["info", process.url, "--json"])
    assert json.loads(result.output) == {"lifecycle": "destroyed"}


def test_info_absent_carrier() -> None:
    result = runner.invoke(carrier_app, ["info", "tcp://127.0.0.1:1", "--timeout", "1"])
    assert result.exit_code == 1 and "no carrier" in result.output


def test_serve_needs_one_transport() -> None:
    result = runner.invoke(carrier_app, ["serve", "--state", "x"])
    assert result.exit_code == 2
