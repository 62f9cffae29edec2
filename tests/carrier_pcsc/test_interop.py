"""PC/SC clients nobody here wrote, against the carrier through a real pcscd (vpcd reader).

OpenSC's ``opensc-tool`` and pcsc-tools' ``scriptor`` send raw APDUs through pcscd, as any
third-party smart-card software would. They check what ISO/IEC 7816-4 promises: the ATR, an
error status word carries no response data, GET DATA "last error" explains it, and the old
TAMPER APDU (INS 7A) is an unknown instruction in every form: the card stays alive.

Needs root, pcscd, vsmartcard-vpcd, opensc and pcsc-tools (``scripts/pcsc-setup.sh``);
otherwise skipped with a reason. pyscard is not used here: the card is personalised over TCP
first, then the same EEPROM image is plugged into the vpcd reader.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

from safescan.carrier import rom
from safescan.carrier.client import CarrierClient
from safescan.carrier.eeprom import Lifecycle
from safescan.carrier.pcscd import PcscDaemon
from safescan.carrier.provision import personalize
from safescan.carrier.testing import CarrierProcess, LocalInstitution

PIN = "246810"
SELECT = "00A4040C0A" + rom.AID.hex().upper()
SELECT_VERSION = "00A404000A" + rom.AID.hex().upper() + "00"
GET_INFO = "80CA000000"
LAST_ERROR = "80CA010100"
#: (APDU hex, expected status word) of error answers: none may carry data
ERRORS = [
    ("807A0000", 0x6D00),  # the 1.x TAMPER APDU
    ("007A0000", 0x6D00),
    ("807A010201AA", 0x6D00),
    ("847A000000", 0x6987),  # a "secure" TAMPER: no session, never reaches a handler
    ("80990000", 0x6D00),
    ("80CA0102", 0x6A88),  # GET DATA of an object the card does not have
    ("9000000000", 0x6E00),
    ("8050000000", 0x6700),  # OPEN SECURE CHANNEL without its key
    ("8420000000", 0x6987),
]


@pytest.fixture
def reader(pcscd_dir: Path, tmp_path: Path) -> Iterator[PcscDaemon]:
    """A personalised carrier in a private pcscd's vpcd reader (same socket path as every
    pcscd of the session: see conftest.py)."""
    missing = [tool for tool in ("opensc-tool", "scriptor") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"PC/SC interoperability not testable here: missing {', '.join(missing)}")
    institution = LocalInstitution.create()
    state = tmp_path / "carrier.state"
    with CarrierProcess(state) as tcp, CarrierClient.connect(tcp.url) as client:
        institution.manufacture(client)
        personalize(client, institution.make_bundle, PIN, 5)
    daemon = PcscDaemon(pcscd_dir)
    daemon.start()
    card = CarrierProcess(state, where=["--vpcd", daemon.vpcd_url], prefix=daemon.netns_command())
    try:
        card.start()
        daemon.wait_for_card(present=True)
        yield daemon
    finally:
        card.stop()
        daemon.stop()


def _run(daemon: PcscDaemon, args: list[str], stdin: str | None = None) -> str:
    out = subprocess.run(
        args,
        input=stdin,
        env={**os.environ, **daemon.env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out
    return out.stdout


def _opensc_exchanges(text: str) -> list[tuple[bytes, int, bytes]]:
    """(command, SW, data) per APDU from ``opensc-tool -s`` output."""
    found: list[tuple[bytes, int, bytes]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        sent = re.match(r"^Sending: ((?:[0-9A-F]{2} ?)+)", lines[i])
        if sent is None:
            i += 1
            continue
        got = re.match(r"^Received \(SW1=0x([0-9A-F]{2}), SW2=0x([0-9A-F]{2})\)(:?)", lines[i + 1])
        assert got is not None, lines[i + 1]
        data = b""
        i += 2
        if got.group(3):  # a hex dump of the data follows
            while i < len(lines) and (row := re.match(r"^((?:[0-9A-F]{2} )+)", lines[i])):
                data += bytes.fromhex(row.group(1))
                i += 1
        found.append((bytes.fromhex(sent.group(1)), int(got.group(1) + got.group(2), 16), data))
    return found


def test_opensc_tool(reader: PcscDaemon) -> None:
    atr = _run(reader, ["opensc-tool", "-r", "0", "-a"]).strip()
    assert bytes.fromhex(atr.replace(":", "")) == rom.ATR
    apdus = [SELECT_VERSION, GET_INFO]
    for apdu, _ in ERRORS:
        apdus += [apdu, LAST_ERROR]
    apdus.append(GET_INFO)
    args = ["opensc-tool", "-r", "0"]
    for apdu in apdus:
        args += ["-s", apdu]
    exchanges = _opensc_exchanges(_run(reader, args))
    assert len(exchanges) == len(apdus)
    _check(exchanges)


def test_scriptor(reader: PcscDaemon) -> None:
    script = [SELECT, GET_INFO]
    for apdu, _ in ERRORS:
        script += [apdu, LAST_ERROR]
    script.append(GET_INFO)
    spaced = "\n".join(" ".join(a[i : i + 2] for i in range(0, len(a), 2)) for a in script)
    text = _run(reader, ["scriptor", "-r", reader.reader], stdin=spaced + "\n")
    # "> 80 7A 00 00" then "< 6D 00 : Instruction code not supported or invalid."
    sent = [bytes.fromhex(m) for m in re.findall(r"^> ((?:[0-9A-F]{2} ?)+)$", text, re.M)]
    answers = re.findall(r"^< ((?:[0-9A-F]{2} ?(?:\n)?)+) : ", text, re.M)
    assert len(sent) == len(script) == len(answers), text
    exchanges = []
    for command, answer in zip(sent, answers, strict=True):
        raw = bytes.fromhex(answer.replace("\n", " "))
        exchanges.append((command, int.from_bytes(raw[-2:], "big"), raw[:-2]))
    _check([(c, sw, d) for c, sw, d in exchanges], version=False)


def _check(exchanges: list[tuple[bytes, int, bytes]], *, version: bool = True) -> None:
    select, info, *rest = exchanges
    assert select[1] == 0x9000
    if version:  # SELECT with P2=00 answers version and lifecycle
        assert select[2] == bytes([*rom.VERSION, Lifecycle.PERSONALIZED])
    assert info[1] == 0x9000 and cbor2.loads(info[2])[2] == Lifecycle.PERSONALIZED
    final = rest.pop()
    assert final[1] == 0x9000 and cbor2.loads(final[2])[2] == Lifecycle.PERSONALIZED  # alive
    for (apdu, expected), (error, last) in zip(
        ERRORS, zip(rest[::2], rest[1::2], strict=True), strict=True
    ):
        assert error[0] == bytes.fromhex(apdu)
        assert error[1] == expected, (apdu, hex(error[1]))
        assert error[2] == b"", f"{apdu}: an error answer carried data {error[2].hex()}"
        assert last[1] == 0x9000, apdu
        doc = cbor2.loads(last[2])
        assert doc[1] == expected and doc[2] == bytes.fromhex(apdu)[1], (apdu, doc)
        assert isinstance(doc[3], int) and doc[4], doc
