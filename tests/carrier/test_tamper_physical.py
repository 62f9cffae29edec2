"""The tamper sensor is physical: no I/O interface reaches it, only the owner's control socket.

Firmware 1.x had a TAMPER APDU (INS 7A): any app on the phone could destroy the customer's
carrier without a PIN. Every variation of that APDU is now an unknown instruction, over every
transport (in process, TCP, serial, audio here; PC/SC in tests/carrier_pcsc), in clear and
inside the secure channel, and the card stays alive. The sensor fires through the carrier
process's control socket (mode 0600, SO_PEERCRED), which only the process owner can use.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safescan.carrier.apdu import CommandApdu, Ins, StatusWord
from safescan.carrier.cli import carrier_app
from safescan.carrier.client import CarrierClient
from safescan.carrier.control import default_control_path, send_control
from safescan.carrier.device import Card
from safescan.carrier.eeprom import Eeprom, FileStorage, Lifecycle
from safescan.carrier.errors import (
    CarrierBlocked,
    CarrierUnavailable,
    ConfirmationPending,
    InsNotSupported,
    TransportError,
)
from safescan.carrier.provision import personalize
from safescan.carrier.testing import DEFAULT_MERCHANT, CarrierProcess, LocalInstitution

from .conftest import PIN

OLD_TAMPER = 0x7A
#: (CLA, P1, P2, data): the 1.x TAMPER APDU and its variations
VARIANTS = [
    (0x80, 0, 0, b""),
    (0x00, 0, 0, b""),
    (0x80, 0, 0, b"\x01"),
    (0x80, 1, 2, b""),
    (0x00, 0xFF, 0xFF, bytes(40)),
]


def try_every_tamper_apdu(client: CarrierClient, institution: LocalInstitution) -> None:
    """Send the old TAMPER in every form a host can; each is an unknown instruction."""
    for selected in (False, True):
        client.power_cycle()
        if selected:
            client.select()
        for cla, p1, p2, data in VARIANTS:
            resp = client.transmit(CommandApdu(cla, OLD_TAMPER, p1, p2, data))
            assert resp.sw == StatusWord.INS_NOT_SUPPORTED, (selected, cla, p1, hex(resp.sw))
            assert resp.data == b""
        # a secure frame without a session never reaches a handler
        resp = client.transmit(CommandApdu(0x84, OLD_TAMPER, 0, 0, bytes(24)))
        assert resp.sw == StatusWord.SM_DATA_MISSING
    # inside the authenticated secure channel
    client.open_session(institution.trust)
    with pytest.raises(InsNotSupported):
        client._secure(OLD_TAMPER)
    client.open_session(institution.trust)
    with pytest.raises(InsNotSupported):
        client._secure(OLD_TAMPER, b"\x01", p1=1)


def still_works(client: CarrierClient, institution: LocalInstitution) -> None:
    """The card is alive and pays: nothing above destroyed anything."""
    client.power_cycle()
    info = client.open_session(institution.trust)
    assert info.lifecycle is Lifecycle.PERSONALIZED
    contents = client.open_code(institution.dynamic_code(order_id="after-tamper"))
    client.verify_pin(PIN)
    assert contents.total is not None and contents.currency is not None
    client.authorize(
        merchant_id=contents.merchant.id, amount=contents.total, currency=contents.currency
    )


def test_no_tamper_apdu_in_process(carrier: CarrierClient, institution: LocalInstitution) -> None:
    try_every_tamper_apdu(carrier, institution)
    still_works(carrier, institution)


def test_no_instruction_destroys_a_blank_or_personalised_card(
    card: Card, carrier: CarrierClient
) -> None:
    """No INS at all, in any class, destroys the card (the sensor has no APDU)."""
    for ins in range(256):
        if ins == Ins.SELECT:
            continue
        for cla in (0x00, 0x80):
            card.transmit(CommandApdu(cla, ins).to_bytes())
    assert card.lifecycle is Lifecycle.PERSONALIZED


@pytest.fixture
def personalised_process(
    tmp_path: Path, institution: LocalInstitution, request: pytest.FixtureRequest
) -> Iterator[CarrierProcess]:
    where = {
        "tcp": None,
        "serial": ["--serial", "pty"],
        "audio": ["--audio", "tcp://127.0.0.1:0"],
    }[request.param]
    proc = CarrierProcess(tmp_path / "c.state", where=where)
    proc.start()
    try:
        with CarrierClient.connect(proc.url, timeout=20) as client:
            institution.manufacture(client)
            personalize(client, institution.make_bundle, PIN, 5)
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize("personalised_process", ["tcp", "serial", "audio"], indirect=True)
def test_no_tamper_apdu_over_any_transport(
    personalised_process: CarrierProcess, institution: LocalInstitution
) -> None:
    with CarrierClient.connect(personalised_process.url, timeout=20) as client:
        try_every_tamper_apdu(client, institution)
        still_works(client, institution)
    # the physical sensor still works, through the control socket
    assert send_control(default_control_path(personalised_process.state), "TAMPER") == "destroyed"
    with (
        CarrierClient.connect(personalised_process.url, timeout=20) as client,
        pytest.raises(CarrierBlocked),
    ):
        client.get_info()


def test_control_socket_fires_the_sensor_and_reports(
    tmp_path: Path, institution: LocalInstitution
) -> None:
    with CarrierProcess(tmp_path / "c.state") as proc:
        ctl = default_control_path(proc.state)
        assert stat.S_IMODE(os.stat(ctl).st_mode) == 0o600 and stat.S_ISSOCK(os.stat(ctl).st_mode)
        assert send_control(ctl, "STATUS") == "blank"
        with pytest.raises(TransportError, match="unknown control command"):
            send_control(ctl, "SELF DESTRUCT PLEASE")
        with CarrierClient.connect(proc.url) as client:
            institution.manufacture(client)
            personalize(client, institution.make_bundle, PIN, 5)
            client.open_session(institution.trust)
            assert send_control(ctl, "STATUS") == "personalized"
            assert send_control(ctl, "TAMPER") == "destroyed"  # mid-session, like a real sensor
            with pytest.raises(CarrierBlocked):
                client.verify_pin(PIN)
        assert send_control(ctl, "STATUS") == "destroyed"
        assert send_control(ctl, "TAMPER") == "destroyed"  # idempotent
    # the process removed its socket on the way out; the image stays destroyed
    assert not ctl.exists()
    with (
        CarrierProcess(tmp_path / "c.state") as proc,
        CarrierClient.connect(proc.url) as client,
        pytest.raises(CarrierBlocked),
    ):
        client.select()


def test_cli_tamper_uses_the_control_socket(tmp_path: Path) -> None:
    runner = CliRunner()
    with CarrierProcess(tmp_path / "c.state") as proc:
        state = str(proc.state)
        assert runner.invoke(carrier_app, ["tamper", "--state", state]).exit_code == 2  # no --yes
        result = runner.invoke(carrier_app, ["tamper", "--state", state, "--yes"])
        assert result.exit_code == 0 and "destroyed" in result.output
        result = runner.invoke(carrier_app, ["info", proc.url, "--json"])
        assert '"destroyed"' in result.output
    result = runner.invoke(carrier_app, ["tamper", "--state", state, "--yes"])
    assert result.exit_code == 1 and "no carrier process" in result.output


def test_a_second_process_cannot_take_the_control_socket(tmp_path: Path) -> None:
    with CarrierProcess(tmp_path / "c.state") as proc:
        other = CarrierProcess(tmp_path / "c.state")
        with pytest.raises(CarrierUnavailable):
            other.start()
        assert send_control(default_control_path(proc.state), "STATUS") == "blank"


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    state = tmp_path / "c.state"
    with CarrierProcess(state) as proc:
        proc.kill()  # SIGKILL: no cleanup, the socket file stays behind
    assert default_control_path(state).exists()
    with CarrierProcess(state) as proc:
        assert send_control(default_control_path(proc.state), "STATUS") == "blank"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_another_user_cannot_fire_the_sensor(tmp_path: Path) -> None:
    """Mode 0600 stops another user; and if the file mode were loosened, SO_PEERCRED does."""
    ctl = Path("/tmp") / f"safescan-ctl-{secrets.token_hex(4)}.ctl"  # a directory others enter
    probe = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX,socket.SOCK_STREAM)\n"
        "try:\n s.connect(sys.argv[1])\n"
        "except OSError as e:\n print('refused',e.errno);sys.exit(0)\n"
        "try:\n s.sendall(b'TAMPER\\n')\nexcept OSError:\n pass\n"
        "print(s.recv(200).decode().strip())\n"
    )
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    with CarrierProcess(
        tmp_path / "c.state", where=["--listen", "tcp://127.0.0.1:0", "--control", str(ctl)]
    ) as proc:
        out = subprocess.run([*nobody, "-c", probe, str(ctl)], capture_output=True, text=True)
        assert out.stdout.startswith("refused 13"), out  # EACCES
        os.chmod(ctl, 0o666)  # even so, the carrier checks who is calling
        out = subprocess.run([*nobody, "-c", probe, str(ctl)], capture_output=True, text=True)
        assert "only the carrier's owner" in out.stdout, out
        assert send_control(ctl, "STATUS") == "blank"  # nothing happened
        assert proc.proc is not None
    assert not ctl.exists()


def _wiped(state: Path, before: bytes) -> None:
    """What the sensor left on the chip: the DESTROYED image (authentic, so a restart cannot
    resurrect the card), with no secret in it, and none of the old image's bytes."""
    image = Eeprom(FileStorage(state)).load()
    assert image.lifecycle is Lifecycle.DESTROYED and image.destroyed_reason != 0
    assert image.attestation_seed is None and image.signing_seed is None
    assert image.transport_seed is None and image.pin_verifier is None
    assert image.scheme_keys == [] and image.epoch_keys == []
    after = state.read_bytes()
    assert after != before and before[-64:] not in after  # the old ciphertext is gone


@pytest.mark.parametrize(
    "moment",
    ["blank", "attested", "personalised", "session open", "PIN verified", "display prompt"],
)
def test_the_sensor_wipes_the_chip_at_any_moment(
    tmp_path: Path, institution: LocalInstitution, moment: str
) -> None:
    """The sensor fires at every stage of a card's life and of a payment (the attacker opens
    the case whenever they like): each time the chip zeroises every secret and persists the
    DESTROYED image at once; the session in progress cannot finish, and a restarted process
    (a power cycle) still answers 6983 to everything."""
    state = tmp_path / "c.state"
    model = "display" if moment == "display prompt" else "plain"
    where = ["--listen", "tcp://127.0.0.1:0", "--model", model]
    with CarrierProcess(state, where=where) as proc, CarrierClient.connect(proc.url) as client:
        steps = ["blank", "attested", "personalised", "session open", "PIN verified"]
        reached = steps[: steps.index(moment) + 1] if moment in steps else steps
        if "attested" in reached:
            institution.manufacture(client)
        if "personalised" in reached:
            personalize(client, institution.make_bundle, PIN, 5)
        if "session open" in reached:
            client.open_session(institution.trust)
            client.open_code(institution.dynamic_code(order_id="mid-tamper"))
        if "PIN verified" in reached:
            client.verify_pin(PIN)
        if moment == "display prompt":
            with pytest.raises(ConfirmationPending):  # the screen asks; nobody pressed OK yet
                client.authorize(merchant_id=DEFAULT_MERCHANT.id, amount=335, currency=978)
        before = state.read_bytes()
        assert send_control(default_control_path(state), "TAMPER") == "destroyed"
        _wiped(state, before)
        if "session open" in reached:  # the payment in progress cannot be signed
            with pytest.raises(CarrierBlocked):
                client.authorize(merchant_id=DEFAULT_MERCHANT.id, amount=335, currency=978)
        with pytest.raises(CarrierBlocked):
            client.get_info()
        if moment == "display prompt":  # its OK button approves nothing any more
            assert send_control(default_control_path(state), "PRESS OK") == "destroyed"
            with pytest.raises(CarrierBlocked):  # no session to sign in, ever again
                client.open_session(institution.trust)
    with CarrierProcess(state, where=where) as again, CarrierClient.connect(again.url) as client:
        with pytest.raises(CarrierBlocked):
            client.select()
        with pytest.raises(CarrierBlocked):
            client.open_session(institution.trust)
    _wiped(state, before)
