"""`safescan carrier` commands (the carrier_app Typer)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safescan.carrier.cli import carrier_app
from safescan.carrier.client import CarrierClient
from safescan.carrier.errors import TransportError
from safescan.carrier.testing import CarrierProcess
from safescan.procs import free_port, release_port

runner = CliRunner()


def test_info_and_tamper(process: CarrierProcess) -> None:
    result = runner.invoke(carrier_app, ["info", process.url, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["lifecycle"] == "blank" and doc["version"] == "2.1.0"
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


def _no_traceback(result: object) -> None:
    exception = getattr(result, "exception", None)
    assert exception is None or isinstance(exception, SystemExit), repr(exception)


@pytest.mark.parametrize("kind", ["/dev/null", "regular file", "fifo"])
def test_serve_on_a_serial_line_that_is_no_terminal_is_a_typed_error(
    tmp_path: Path, kind: str
) -> None:
    """Before: ``carrier serve --serial /dev/null`` (or a file, a FIFO) was a
    ``termios.error`` traceback."""
    device = tmp_path / "line"
    if kind == "regular file":
        device.write_bytes(b"")
    elif kind == "fifo":
        os.mkfifo(device)
    where = "/dev/null" if kind == "/dev/null" else str(device)
    state = tmp_path / "s"
    result = runner.invoke(carrier_app, ["serve", "--state", str(state), "--serial", where])
    _no_traceback(result)
    assert result.exit_code == 1 and "not a serial line" in result.output, result.output
    assert not Path(f"{state}.ctl").exists()  # the control socket closed on the way out


def test_serve_on_a_state_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    """Before: ``--state DIR`` (a typo) was served as a destroyed card that could not even
    record its destruction; now refused before the card is powered, the directory untouched."""
    state = tmp_path / "cards"
    state.mkdir()
    port = free_port()
    try:
        listen = f"tcp://127.0.0.1:{port}"
        result = runner.invoke(carrier_app, ["serve", "--state", str(state), "--listen", listen])
    finally:
        release_port(port)
    _no_traceback(result)
    assert result.exit_code == 1 and "not a regular file" in result.output, result.output
    assert list(state.iterdir()) == [] and not Path(f"{state}.devkey").exists()


def test_a_factory_passphrase_file_is_read_bounded(tmp_path: Path) -> None:
    """Before: ``--passphrase-file /dev/zero`` was read until memory ran out."""
    result = runner.invoke(
        carrier_app,
        ["factory", "init", str(tmp_path / "f"), "--passphrase-file", "/dev/zero", "--json"],
    )
    _no_traceback(result)
    assert result.exit_code == 2 and "passphrase file" in result.output, result.output
    assert not (tmp_path / "f").exists()
