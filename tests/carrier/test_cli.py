"""`safescan carrier` commands (the carrier_app Typer)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from safescan.carrier.cli import carrier_app
from safescan.carrier.client import CarrierClient
from safescan.carrier.errors import TransportError
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


@pytest.mark.parametrize(
    "url",
    [
        "tcp://[::1",  # an unclosed IPv6 literal: urlsplit raised ValueError (a traceback)
        "tcp://[::1:7300",
        "tcp://[zz]:1",
        "audio://[::1",
        "serial://[::1/dev/ttyS0",
        "tcp://127.0.0.1:99999",
        "tcp://127.0.0.1:-1",
        "audio://127.0.0.1:x",
    ],
)
def test_malformed_carrier_address_is_a_typed_error(url: str) -> None:
    """Every carrier address the command line takes is refused with ``transport_error`` and
    exit 1, never a ``ValueError`` traceback (redteam: ``carrier info tcp://[::1``)."""
    result = runner.invoke(carrier_app, ["info", url, "--json", "--timeout", "1"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    doc = json.loads(result.output)
    assert doc["error"]["code"] == "transport_error", doc
    assert result.exit_code == 1
    with pytest.raises(TransportError):
        CarrierClient.connect(url, timeout=1)


SECRET = "hunter2-s3cret"


@pytest.mark.parametrize(
    "shape",
    [
        "tcp://alice:{pw}@{hostport}",
        "tcp://{pw}@{hostport}",
        "tcp://:{pw}@{hostport}",
        "tcp://alice:{pw}@{hostport}/",
        "audio://alice:{pw}@{hostport}",
        "serial://alice:{pw}@/dev/ttyS0",
        "pcsc://alice:{pw}@Virtual%20PCD",
        "carrier://alice:{pw}@{hostport}",  # an unknown scheme: quoted, the password hidden
        "tcp://{hostport}?token={pw}",  # a query or fragment nothing reads
        "tcp://{hostport}#{pw}",
    ],
)
def test_user_information_in_a_carrier_address_is_refused_and_never_echoed(
    process: CarrierProcess, shape: str
) -> None:
    """A carrier address with ``user:password@`` (or a query or fragment) reaching a *live*
    carrier is refused with ``transport_error``, like the institution URL (``invalid_url``),
    and the password is in no output (redteam: ``carrier info tcp://user:pass@host:port``
    connected and ignored the user information)."""
    hostport = process.url[len("tcp://") :]
    url = shape.format(pw=SECRET, hostport=hostport)
    for args in (["info", url, "--json", "--timeout", "2"], ["info", url, "--timeout", "2"]):
        result = runner.invoke(carrier_app, args)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert result.exit_code == 1, result.output
        assert SECRET not in result.output
        if "--json" in args:
            assert json.loads(result.output)["error"]["code"] == "transport_error"
    with pytest.raises(TransportError) as caught:
        CarrierClient.connect(url, timeout=2)
    assert SECRET not in str(caught.value)
