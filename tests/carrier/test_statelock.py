"""One carrier process per state file: a second ``carrier serve`` on the same EEPROM image
(two live copies of one card) is refused with a clear error, and the first keeps serving."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from safescan.carrier.client import CarrierClient
from safescan.carrier.errors import CarrierError, CarrierUnavailable
from safescan.carrier.provision import personalize
from safescan.carrier.statelock import StateInUse, StateLock
from safescan.carrier.testing import CarrierProcess, LocalInstitution

from .conftest import PIN


def _serve(state: Path | str, *, cli: bool, cwd: Path | None = None) -> subprocess.Popen[str]:
    module = ["safescan", "carrier", "serve"] if cli else ["safescan.carrier.server"]
    return subprocess.Popen(
        [sys.executable, "-m", *module, "--state", str(state), "--listen", "tcp://127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
    )


def _refused(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the second carrier process kept running on a locked state file")
    assert "READY" not in out
    return proc.returncode, err


@pytest.mark.parametrize("cli", [False, True], ids=["python -m server", "safescan carrier serve"])
def test_second_process_on_one_state_file_is_refused(
    tmp_path: Path, institution: LocalInstitution, cli: bool
) -> None:
    state = tmp_path / "card.eeprom"
    with CarrierProcess(state) as first:
        with CarrierClient.connect(first.url) as client:
            institution.manufacture(client)
            personalize(client, institution.make_bundle, PIN, 5)
        status, err = _refused(_serve(state, cli=cli))
        assert status != 0
        assert "already serves" in err and str(first.pid) in err
        assert "Traceback" not in err
        with CarrierClient.connect(first.url) as client:  # the first one still serves
            client.open_session(institution.trust)
            client.verify_pin(PIN)


def test_other_spellings_of_the_path_are_the_same_file(tmp_path: Path) -> None:
    state = tmp_path / "card.eeprom"
    (tmp_path / "sub").mkdir()
    link = tmp_path / "alias.eeprom"
    with CarrierProcess(state):
        link.symlink_to(state)
        for spelling, cwd in (
            (link, None),  # a symlink
            (Path("..") / "card.eeprom", tmp_path / "sub"),  # relative, another directory
            (tmp_path / "sub" / ".." / "card.eeprom", None),
        ):
            status, err = _refused(_serve(spelling, cli=False, cwd=cwd))
            assert status != 0 and "already serves" in err, spelling


def test_lock_is_released_when_the_holder_dies_even_by_sigkill(tmp_path: Path) -> None:
    state = tmp_path / "card.eeprom"
    first = CarrierProcess(state)
    first.start()
    first.kill()  # no clean-up ran: the kernel drops the lock
    with CarrierProcess(state) as again, CarrierClient.connect(again.url) as client:
        assert client.get_info().lifecycle.name == "BLANK"


def test_two_state_files_in_one_directory_both_run(tmp_path: Path) -> None:
    with CarrierProcess(tmp_path / "a.eeprom") as a, CarrierProcess(tmp_path / "b.eeprom") as b:
        assert a.url != b.url


def test_carrier_process_helper_reports_the_refusal(tmp_path: Path) -> None:
    state = tmp_path / "card.eeprom"
    with CarrierProcess(state), pytest.raises(CarrierUnavailable, match="exited at start-up"):
        CarrierProcess(state).start(timeout=30)


def test_state_lock_in_process(tmp_path: Path) -> None:
    state = tmp_path / "card.eeprom"
    with StateLock(state), pytest.raises(StateInUse, match=f"process {os.getpid()}"):
        StateLock(state).acquire()
    with StateLock(state):  # released: can be taken again
        pass


def test_a_state_path_that_is_a_symbolic_link_is_refused_before_the_card_is_powered(
    tmp_path: Path,
) -> None:
    """Before: ``--state alias`` (a link to the image) was served, and its first write (a
    wrong PIN, a signature) replaced the link with a regular file: the lock had been taken
    on the link's target, so a second process on the same ``alias`` took another lock and ran
    a second live copy of the card (two PIN retry counters). Now refused, nothing written."""
    state = tmp_path / "card.eeprom"
    with CarrierProcess(state):
        pass  # a manufactured image
    before = state.read_bytes()
    link = tmp_path / "alias.eeprom"
    link.symlink_to(state)
    status, err = _refused(_serve(link, cli=True))
    assert status != 0 and "is a symbolic link" in err and "Traceback" not in err
    assert link.is_symlink() and state.read_bytes() == before


@pytest.mark.parametrize("link", ["symbolic", "hard", "fifo"])
def test_a_link_planted_at_the_lock_file_is_never_written_through(
    tmp_path: Path, link: str
) -> None:
    """Before: the lock file was opened following links and the holder's pid written into it
    after ``ftruncate``: a link planted at ``STATE.lock`` had the linked file (any file of the
    carrier's user) truncated to a pid. Now refused with a typed error, the file untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n" * 100)
    lock = tmp_path / "card.eeprom.lock"
    if link == "symbolic":
        lock.symlink_to(victim)
    elif link == "hard":
        os.link(victim, lock)
    else:
        os.mkfifo(lock)
    with pytest.raises(CarrierError) as info:
        StateLock(tmp_path / "card.eeprom").acquire()
    assert "lock file" in info.value.message
    assert victim.read_bytes() == b"precious\n" * 100
