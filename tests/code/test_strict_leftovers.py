"""(lead, twelfth sitting) The readers and writers the strict-files campaign left: each attack
below was accepted before.

- the trusted-time record took the last of two marks named alike (``json.loads``), so a planted
  ``{"signed": <old>, "device": 0, "signed": <old>}`` read as one record while a reader taking
  the first value saw another;
- the carrier factory's ``factory.json`` was read by ``json.loads`` and ``int()``: a key id
  ``"1_0"`` read as 10, ``1.9`` as 1, ``true`` as 1, a repeated ``next_serial`` (a serial issued
  twice) took the last value;
- ``trust.json`` was written with ``write_text``, which writes through a link planted at its
  name (``keys init`` checks ``exists()``, which is False for a dangling link)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from safescan.carrier.factory import Factory
from safescan.code import timefloor
from safescan.code.errors import KeyFileError
from safescan.code.keystore import TRUST_FILE, KeyDirectory, read_trust_doc, write_trust_doc

PASS = b"correct horse battery staple"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"signed": 100, "device": 200, "signed": 900}',
        b'{"signed": 100, "device": 200, "device": 900}',
        b'{"signed": 100, "device": 200}\n{"signed": 900, "device": 900}',
        b'{"signed": 100, "device": NaN}',
    ],
)
def test_a_time_floor_with_a_mark_named_twice_is_damaged(raw: bytes) -> None:
    with pytest.raises(timefloor.TimeFloorDamaged):
        timefloor.TimeFloor.from_bytes(raw)


def test_a_planted_time_floor_is_reported_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "trusted-time"
    path.write_bytes(b'{"signed": 100, "device": 200, "signed": 4000000000}')
    floor, damage = timefloor.load(path)
    assert floor == timefloor.TimeFloor()
    assert damage is not None and "damaged" in damage
    good = timefloor.TimeFloor(100, 200)
    path.write_bytes(good.to_bytes())
    assert timefloor.load(path) == (good, None)


@pytest.fixture(scope="module")
def factory_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("factory") / "f"
    Factory.create(directory, PASS, kid=7)
    return directory


@pytest.mark.parametrize(
    "doc",
    [
        '{"kid": "1_0", "next_serial": 1}',
        '{"kid": "7", "next_serial": 1}',
        '{"kid": 7, "next_serial": 1.9}',
        '{"kid": true, "next_serial": 1}',
        '{"kid": 7, "next_serial": 5, "next_serial": 1}',
        '{"kid": 7, "next_serial": 0}',
        '{"kid": 70000, "next_serial": 1}',
        "[7, 1]",
        "null",
    ],
)
def test_a_respelt_factory_index_is_refused(factory_dir: Path, doc: str) -> None:
    index = factory_dir / "factory.json"
    original = index.read_bytes()
    try:
        index.write_text(doc)
        with pytest.raises(KeyFileError):
            Factory.load(factory_dir, PASS)
    finally:
        index.write_bytes(original)
    loaded = Factory.load(factory_dir, PASS)
    assert (loaded.kid, loaded.next_serial) == (7, 1)


def test_trust_json_is_never_written_through_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    keys = tmp_path / "keys"
    keys.mkdir()
    os.symlink(victim, keys / TRUST_FILE)  # dangling: exists() is False
    KeyDirectory.create(keys, PASS)
    assert not victim.exists()
    trust = keys / TRUST_FILE
    assert trust.is_file() and not trust.is_symlink()
    assert oct(trust.stat().st_mode & 0o777) == oct(0o644)
    doc = read_trust_doc(trust)
    # a later rewrite (keys scheme) replaces a link planted then too, and the file is whole
    victim.write_text("do not touch")
    trust.unlink()
    os.symlink(victim, trust)
    write_trust_doc(trust, doc)
    assert victim.read_text() == "do not touch"
    assert not trust.is_symlink() and json.loads(trust.read_text()) == doc
