"""The carrier as a smart card behind a real pcscd (vsmartcard vpcd reader), via pyscard.

Needs root, pcscd, vsmartcard-vpcd and pyscard (``scripts/pcsc-setup.sh``); otherwise the
pcscd tests skip with a reason naming what is missing. The URL/error-mapping tests run anywhere.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from safescan.carrier import rom
from safescan.carrier.client import CarrierClient
from safescan.carrier.eeprom import Lifecycle
from safescan.carrier.errors import (
    CarrierDisconnected,
    CarrierTimeout,
    CarrierUnavailable,
    ChannelError,
    FramingError,
    SecurityStatusNotSatisfied,
    TransportError,
)
from safescan.carrier.pcscd import PcscDaemon
from safescan.carrier.provision import personalize
from safescan.carrier.testing import CarrierProcess, LocalInstitution
from safescan.carrier.transport import Control
from safescan.carrier.transport.pcsc import (
    SCARD_E_NO_SERVICE,
    SCARD_E_NO_SMARTCARD,
    SCARD_E_TIMEOUT,
    SCARD_W_REMOVED_CARD,
    error_for,
    parse_pcsc_url,
    pick_reader,
)

PIN = "246810"


def _listeners() -> set[tuple[str, str]]:
    """(local address, process info) of every listening TCP socket of this namespace."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        fields = line.split()
        found.add((fields[3], fields[5] if len(fields) > 5 else ""))
    return found


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host == "::1"


@pytest.fixture
def daemon(pcscd_dir: Path) -> Iterator[PcscDaemon]:
    """A fresh private pcscd per test (same socket path), stopped afterwards."""
    before = _listeners()
    pcscd = PcscDaemon(pcscd_dir)
    try:
        pcscd.start()
    except CarrierUnavailable as exc:
        pytest.skip(f"PC/SC path not testable on this machine: {exc.message}")
    os.environ.update(pcscd.env())
    pid = pcscd.pid
    try:
        yield pcscd
    finally:
        pcscd.stop()
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), "pcscd left running"
        assert not pcscd.socket_path.exists(), "pcscd left its socket behind"
        new = {entry for entry in _listeners() - before if not _is_loopback(entry[0])}
        assert not new, f"something listens on a non-loopback address: {new}"


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.fixture
def card(daemon: PcscDaemon, tmp_path: Path) -> Iterator[CarrierProcess]:
    """A carrier process plugged into the daemon's vpcd reader (inside its namespace)."""
    proc = CarrierProcess(
        tmp_path / "carrier.state",
        where=["--vpcd", daemon.vpcd_url],
        prefix=daemon.netns_command(),
    )
    proc.start()
    try:
        daemon.wait_for_card(present=True)
        yield proc
    finally:
        proc.stop()


def _url(daemon: PcscDaemon) -> str:
    return "pcsc://" + quote(daemon.reader)


def test_whole_payment_through_pcscd(
    daemon: PcscDaemon, card: CarrierProcess, tmp_path: Path
) -> None:
    institution = LocalInstitution.create()
    with CarrierClient.connect(_url(daemon), timeout=5) as client:
        assert client.atr == rom.ATR  # the card's own ATR, as pcscd read it
        institution.manufacture(client)
        personalize(client, institution.make_bundle, PIN, 5)
        info = client.open_session(institution.trust)
        assert info.lifecycle is Lifecycle.PERSONALIZED
        assert info.certificate is not None
        contents = client.open_code(institution.dynamic_code(order_id="pcsc-1"))
        assert contents.merchant.name == "Corner Bakery" and contents.total == 335
        client.verify_pin(PIN)
        assert contents.total is not None and contents.currency is not None
        auth = client.authorize(
            merchant_id=contents.merchant.id, amount=contents.total, currency=contents.currency
        )
    auth.verify(info.certificate.public_key)  # the institution's check, on the certified key
    assert (auth.merchant_id, auth.order_id, auth.amount, auth.currency) == (
        "m-1001",
        "pcsc-1",
        335,
        978,
    )
    assert auth.code_digest == contents.digest and auth.counter == 1
    assert auth.carrier_serial == info.carrier_serial
    # nothing of ours listens outside loopback: vpcd's port lives in pcscd's own namespace
    ours = {str(daemon.pid), str(card.pid)}
    for address, owner in _listeners():
        pids = set(re.findall(r"pid=(\d+)", owner))
        assert not (pids & ours and not _is_loopback(address)), (address, owner)
    links = subprocess.run(
        [*daemon.netns_command(), "ip", "-o", "link"], capture_output=True, text=True, check=True
    ).stdout
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]


def test_power_cycle_and_reset_lose_the_session(daemon: PcscDaemon, card: CarrierProcess) -> None:
    institution = LocalInstitution.create()
    with CarrierClient.connect(_url(daemon), timeout=5) as client:
        institution.manufacture(client)
        personalize(client, institution.make_bundle, PIN, 5)
        for cycle in (client.power_cycle, lambda: client.transport.control(Control.RESET)):
            client.open_session(institution.trust)
            client.open_code(institution.dynamic_code())
            client.verify_pin(PIN)
            old_session = client._session
            atr = cycle()  # pcscd: SCardDisconnect(UNPOWER)+SCardConnect / SCardReconnect(RESET)
            assert atr == rom.ATR
            client._session = old_session  # the host pretends nothing happened
            with pytest.raises(ChannelError):
                client.verify_pin(PIN)  # the card's RAM is gone: no session (6987)
            client.open_session(institution.trust)
            assert not client.pin_verified()
            with pytest.raises(SecurityStatusNotSatisfied):
                client.authorize(merchant_id="m-1001", amount=335, currency=978)


def test_removed_card_and_empty_slot(daemon: PcscDaemon, card: CarrierProcess) -> None:
    client = CarrierClient.connect(_url(daemon), timeout=5)
    try:
        client.get_info()
        card.kill()  # pull the token out
        with pytest.raises(CarrierDisconnected):
            client.get_info()
    finally:
        client.close()
    daemon.wait_for_card(present=False)
    with pytest.raises(CarrierUnavailable, match="no card"):
        CarrierClient.connect(_url(daemon), timeout=5)
    with pytest.raises(CarrierUnavailable, match="no card"):
        CarrierClient.connect("pcsc://" + quote(daemon.reader.replace("00 00", "00 01")))
    with pytest.raises(CarrierUnavailable, match="no reader"):
        CarrierClient.connect("pcsc://No%20such%20reader", timeout=5)


def test_timeout_when_the_card_hangs(daemon: PcscDaemon, card: CarrierProcess) -> None:
    client = CarrierClient.connect("pcsc://0", timeout=1.0)  # reader by index
    try:
        client.get_info()
        os.kill(card.pid, signal.SIGSTOP)  # the card stops answering mid-session
        try:
            with pytest.raises(CarrierTimeout):
                client.get_info()
            with pytest.raises(CarrierDisconnected):
                client.get_info()  # the link is unusable after a timeout
        finally:
            os.kill(card.pid, signal.SIGCONT)
    finally:
        client.close()


# --- no pcscd needed ------------------------------------------------------------------------


def test_url_and_reader_selection() -> None:
    assert parse_pcsc_url("pcsc://Safescan%20vpcd%2000%2000") == "Safescan vpcd 00 00"
    assert parse_pcsc_url("pcsc://Yubico+YubiKey/") == "Yubico+YubiKey"
    assert parse_pcsc_url("pcsc://") == ""
    with pytest.raises(TransportError):
        parse_pcsc_url("pcsc://reader?x=1")
    readers = ["Safescan vpcd 00 00", "Safescan vpcd 00 01", "Other 00 00"]
    assert pick_reader(readers, "") == readers[0]
    assert pick_reader(readers, "1") == readers[1]
    assert pick_reader(readers, "Other") == readers[2]
    with pytest.raises(CarrierUnavailable, match="ambiguous"):
        pick_reader(readers, "Safescan")
    with pytest.raises(CarrierUnavailable, match="no reader number"):
        pick_reader(readers, "7")
    with pytest.raises(CarrierUnavailable, match="no smart-card reader"):
        pick_reader([], "")


def test_pcsc_errors_are_typed() -> None:
    assert isinstance(error_for(SCARD_E_NO_SERVICE, "x", "u"), CarrierUnavailable)
    assert isinstance(error_for(SCARD_E_NO_SMARTCARD, "x", "u"), CarrierUnavailable)
    assert isinstance(error_for(SCARD_W_REMOVED_CARD, "x", "u"), CarrierDisconnected)
    assert isinstance(error_for(SCARD_E_TIMEOUT, "x", "u"), CarrierTimeout)
    assert isinstance(error_for(0x80100008, "x", "u"), FramingError)
    other = error_for(0x8010FFFF, "x", "u")
    assert type(other) is TransportError and "0x8010FFFF" in other.message
    assert isinstance(error_for(-2146435026, "x", "u"), CarrierUnavailable)  # signed form
