"""Attacks on the carrier's state files (``STATE``, ``STATE.devkey``): whatever stands at
their names, the card reads a bounded amount from a regular file of its own, writes nothing
through a link, never hangs, and a self-destruct leaves nothing that opens an earlier image.

In-process cards on real files (no carrier process is started).
"""

from __future__ import annotations

import os
import shutil
import threading
import tracemalloc
from pathlib import Path

import pytest

from safescan.carrier import server
from safescan.carrier.device import Card
from safescan.carrier.eeprom import Eeprom, FileStorage, Lifecycle
from safescan.carrier.errors import CarrierBlocked, ImageError, WrongPin
from safescan.carrier.testing import LocalInstitution
from safescan.carrier.transport import Control

from .conftest import Clock, connect, personalised_state

VICTIM = b"someone else's precious file\n" * 64


@pytest.fixture
def personalised_file(tmp_path: Path, institution: LocalInstitution, clock: Clock) -> Path:
    return personalised_state(tmp_path / "card.state", institution, clock, 3)


def _power_on_bounded(state: Path, clock: Clock) -> Card:
    """Power the card on in a thread; a power-on that blocks (a FIFO opened for reading or
    writing waits for the other end for ever) fails the test instead of hanging it."""
    card = Card(FileStorage(state), clock=clock)
    done = threading.Event()

    def run() -> None:
        card.power_on()
        done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(20)
    if not done.is_set():
        for flags in (os.O_WRONLY, os.O_RDONLY):  # release a reader or a writer, whichever
            try:
                os.close(os.open(state, flags | os.O_NONBLOCK))
            except OSError:
                continue
        worker.join(5)
        pytest.fail(f"power-on blocked on {state}")
    return card


@pytest.mark.parametrize("link", ["symbolic", "hard"])
@pytest.mark.parametrize("at", ["image", "devkey"])
def test_a_link_planted_at_a_state_file_is_never_written_through(
    tmp_path: Path, personalised_file: Path, clock: Clock, link: str, at: str
) -> None:
    """Before: the self-destruct unit zero-filled the old image in place with a plain
    ``open(STATE, O_WRONLY)``: a link planted at ``STATE`` (to any file the carrier's user may
    write) had that file overwritten with zeros; a hard link too (the same inode)."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM)
    target = personalised_file if at == "image" else Path(f"{personalised_file}.devkey")
    target.unlink()
    if link == "symbolic":
        target.symlink_to(victim)
    else:
        os.link(victim, target)
    card = _power_on_bounded(personalised_file, clock)
    assert card.lifecycle is Lifecycle.DESTROYED  # not an authentic image: self-destruct
    assert victim.read_bytes() == VICTIM  # nothing written through the link
    assert not personalised_file.is_symlink() and personalised_file.stat().st_nlink == 1
    assert Eeprom(FileStorage(personalised_file)).load().lifecycle is Lifecycle.DESTROYED


@pytest.mark.parametrize("kind", ["fifo", "directory", "dev-zero"])
@pytest.mark.parametrize("at", ["image", "devkey"])
def test_a_state_file_that_is_no_regular_file_never_hangs_the_card(
    tmp_path: Path, personalised_file: Path, clock: Clock, kind: str, at: str
) -> None:
    """Before: ``STATE`` (or ``STATE.devkey``) being a FIFO blocked power-on for ever (the
    carrier process never said READY); a link to ``/dev/zero`` was read until memory ran out."""
    target = personalised_file if at == "image" else Path(f"{personalised_file}.devkey")
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "directory":
        target.mkdir()
    else:
        target.symlink_to("/dev/zero")
    card = _power_on_bounded(personalised_file, clock)
    assert card.lifecycle is Lifecycle.DESTROYED
    with pytest.raises(CarrierBlocked):
        connect(card).select()


@pytest.mark.parametrize("at", ["image", "devkey"])
def test_a_huge_state_file_is_refused_without_being_read_whole(
    personalised_file: Path, clock: Clock, at: str
) -> None:
    """Before: a 256 MiB file at ``STATE`` was read whole into memory before its size was
    checked (the image is at most 64 KiB, the device key 32 bytes)."""
    target = personalised_file if at == "image" else Path(f"{personalised_file}.devkey")
    with target.open("r+b") as handle:
        handle.truncate(256 << 20)  # sparse: costs no disk
    tracemalloc.start()
    try:
        card = Card(FileStorage(personalised_file), clock=clock)
        card.power_on()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert card.lifecycle is Lifecycle.DESTROYED
    assert peak < 16 << 20, f"{peak} bytes held while reading"


def test_after_self_destruct_no_earlier_image_opens_again(
    tmp_path: Path, personalised_file: Path, clock: Clock, institution: LocalInstitution
) -> None:
    """Before: the self-destruct unit zeroised the image but kept the device key, so any earlier
    copy of ``STATE`` (a backup, the blocks of the files each atomic write left behind) still
    opened with the ``STATE.devkey`` left on disk: put back, the destroyed card was alive
    again, keys, PIN verifier and all. Now destruction fuses a new device key (the old one
    overwritten in place first): an earlier image is corrupt, and destroys again."""
    backup = tmp_path / "backup.state"
    shutil.copyfile(personalised_file, backup)
    old_key = Path(f"{personalised_file}.devkey").read_bytes()
    card = Card(FileStorage(personalised_file), clock=clock)
    card.power_on()
    assert card.image is not None and card.image.signing_seed is not None
    seeds = [bytes(card.image.signing_seed), bytes(card.image.transport_seed or b"")]
    client = connect(card)
    for _ in range(3):  # retry limit 3: the third wrong PIN destroys
        client.open_session(institution.trust)
        with pytest.raises((WrongPin, CarrierBlocked)):
            client.verify_pin("0000")
    assert card.lifecycle is Lifecycle.DESTROYED
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert old_key not in on_disk.replace(backup.read_bytes(), b"")  # the old key is gone
    assert not any(seed in on_disk for seed in seeds)
    shutil.copyfile(backup, personalised_file)  # the earlier image put back
    again = Card(FileStorage(personalised_file), clock=clock)
    again.power_on()
    assert again.lifecycle is Lifecycle.DESTROYED
    assert again.image is not None and again.image.signing_seed is None


@pytest.mark.parametrize("how", ["tamper sensor", "last wrong PIN"])
def test_a_self_destruct_the_eeprom_refuses_keeps_the_card_destroyed(
    personalised_file: Path,
    clock: Clock,
    institution: LocalInstitution,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    """The EEPROM refuses every write (a read-only medium, a dying disk) when the card must
    destroy itself. Before: the failure was suppressed, the sensor answered "destroyed", and
    the next power cycle in the same process (any host reconnecting) read the old image back:
    the card was alive again with every key. Now it stays destroyed, says so, and writes the
    destroyed image at the first power-on the EEPROM takes it."""
    card = Card(FileStorage(personalised_file), clock=clock)
    card.power_on()
    client = connect(card)
    storage = card.eeprom.storage

    def refuse(data: bytes) -> None:
        raise ImageError("the medium is read-only")

    if how == "last wrong PIN":
        for _ in range(2):
            client.open_session(institution.trust)
            with pytest.raises(WrongPin):
                client.verify_pin("0000")
        client.open_session(institution.trust)
        real_write = storage.write_image
        writes: list[bytes] = []

        def first_only(data: bytes) -> None:  # the spent try lands, the destruction does not
            if writes:
                refuse(data)
            writes.append(data)
            real_write(data)

        monkeypatch.setattr(storage, "write_image", first_only)
    else:
        monkeypatch.setattr(storage, "write_image", refuse)
    monkeypatch.setattr(storage, "write_device_key", refuse)
    monkeypatch.setattr(storage, "wipe_image", lambda: None)
    monkeypatch.setattr(storage, "wipe_device_key", lambda: None)
    link = server.CardLink(card)
    if how == "tamper sensor":
        answer = link.physical("TAMPER")
        assert answer.startswith("ERR") and "EEPROM" in answer  # never "OK destroyed"
    else:
        with pytest.raises(CarrierBlocked):
            client.verify_pin("0000")
    assert card.lifecycle is Lifecycle.DESTROYED
    link.control(Control.POWER_OFF)  # a host hangs up, another one powers the card
    link.control(Control.POWER_ON)
    assert card.lifecycle is Lifecycle.DESTROYED
    assert card.image is not None and card.image.signing_seed is None
    with pytest.raises(CarrierBlocked):
        connect(card).select()
    monkeypatch.undo()  # the medium takes writes again: the next power-on writes it
    card.reset()
    assert not card.destruction_unwritten
    assert Eeprom(FileStorage(personalised_file)).load().lifecycle is Lifecycle.DESTROYED
