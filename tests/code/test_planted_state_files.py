"""(strict, twelfth sitting) Files a program keeps beside its keys and its database, planted.

The rekey journal (``.rekey-journal.json``, read by every loader of a key file before it reads
the key), a backup's manifest and the institution's checkpoint file were read whole by
``read_text()``/``read_bytes()``/``read()`` and, for the JSON ones, by Python's lenient
``json``: a FIFO planted there hung the reader (a key load, a restore, the institution's start),
``/dev/zero`` ran it out of memory, a key named twice was read as its last value (a checkpoint
record with a first, unsigned ``"type"`` beside its signed one verified). Now each is read
bounded (``code.smallfile.read_bounded``) and strictly (``code.strictjson``), each refusal the
reader's typed error. The FIFO cases hung before: a test timeout bounds them (no timing
assertion: they finish at once now)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safescan.code.errors import KeyFileError
from tests.fsrace import may_hang, plant

# ---- the rekey journal --------------------------------------------------------------------


def _journal(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    keys.mkdir()
    return keys / ".rekey-journal.json"


@may_hang
def test_a_fifo_as_rekey_journal_is_a_typed_error_not_a_hang(tmp_path: Path) -> None:
    from safescan.code.rekeying import recover_if_interrupted

    journal = _journal(tmp_path)
    plant(journal, "fifo")
    with pytest.raises(KeyFileError, match="rekey journal"):
        recover_if_interrupted(journal.parent)


def test_a_rekey_journal_is_never_read_through_a_link_nor_whole(tmp_path: Path) -> None:
    from safescan.code.rekeying import recover_if_interrupted

    journal = _journal(tmp_path)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"primary": str(journal.parent), "files": []}))
    journal.symlink_to(elsewhere)
    with pytest.raises(KeyFileError, match="rekey journal"):  # before: followed, read, removed
        recover_if_interrupted(journal.parent)
    assert journal.is_symlink() and elsewhere.exists()
    journal.unlink()
    journal.write_text(json.dumps({"files": [], "pad": "x" * (64 * 1024)}))
    with pytest.raises(KeyFileError, match="larger than"):
        recover_if_interrupted(journal.parent)


def test_a_rekey_journal_naming_its_files_twice_puts_nothing_back(tmp_path: Path) -> None:
    from safescan.code.rekeying import recover_if_interrupted

    journal = _journal(tmp_path)
    victim = journal.parent / "scheme-1.json"
    victim.write_text("the key as it is")
    (journal.parent / "scheme-1.json.rekey-old").write_text("what a planted copy says")
    primary = json.dumps(str(journal.parent))
    # a reader of the first "files" sees nothing to do; json.loads took the last
    journal.write_text(f'{{"primary": {primary}, "files": [], "files": ["{victim}"]}}')
    with pytest.raises(KeyFileError, match="twice"):
        recover_if_interrupted(journal.parent)
    assert victim.read_text() == "the key as it is"


# ---- a backup's manifest ------------------------------------------------------------------


def _backup(tmp_path: Path) -> tuple[Path, Path, dict[str, object]]:
    import hashlib

    from safescan.institution.backup import MANIFEST_TYPE, manifest_path

    bak = tmp_path / "inst.bak"
    bak.write_bytes(b"a database")
    doc: dict[str, object] = {
        "type": MANIFEST_TYPE,
        "v": 1,
        "backend": "sqlite",
        "format": "sqlite",
        "sha256": hashlib.sha256(b"a database").hexdigest(),
        "bytes": 10,
        "taken_at": 1,
        "db": "x",
        "heads": [],
        "schema": "x",
    }
    return bak, manifest_path(bak), doc


def test_a_backup_manifest_naming_a_key_twice_or_padded_is_refused(tmp_path: Path) -> None:
    from safescan.institution.backup import BackupError, read_manifest

    bak, manifest, doc = _backup(tmp_path)
    manifest.write_text(json.dumps(doc))
    assert read_manifest(bak)["bytes"] == 10  # as written: read
    # a first "backend" a person or another tool reads, a last one json.loads took
    manifest.write_text('{"backend": "postgresql", ' + json.dumps(doc)[1:])
    with pytest.raises(BackupError, match="twice"):
        read_manifest(bak)
    manifest.write_text(json.dumps({**doc, "pad": "x" * (1 << 20)}))
    with pytest.raises(BackupError, match="larger than"):
        read_manifest(bak)


@may_hang
def test_a_fifo_as_backup_manifest_is_a_typed_error_not_a_hang(tmp_path: Path) -> None:
    from safescan.institution.backup import BackupError, read_manifest

    bak, manifest, _ = _backup(tmp_path)
    plant(manifest, "fifo")
    with pytest.raises(BackupError):
        read_manifest(bak)


# ---- the checkpoint file ------------------------------------------------------------------


@may_hang
@pytest.mark.parametrize("planted", ["fifo", "/dev/zero"])
def test_a_fifo_or_device_as_checkpoint_file_is_a_typed_error(tmp_path: Path, planted: str) -> None:
    from safescan.institution.checkpoint_file import CheckpointError, CheckpointFile
    from safescan.institution.checkpoints import Tail

    path = tmp_path / "inst.checkpoints"
    plant(path, planted)
    with pytest.raises(CheckpointError):  # before: a hang (FIFO), memory exhausted (/dev/zero)
        CheckpointFile(path).lines()
    with pytest.raises(CheckpointError):
        Tail(CheckpointFile(path)).refresh(_trust()[1], "db")


def test_a_checkpoint_file_through_a_link_is_still_read(tmp_path: Path) -> None:
    from safescan.institution.checkpoint_file import CheckpointFile

    real = tmp_path / "worm" / "inst.checkpoints"
    real.parent.mkdir()
    real.write_text("one\ntwo\n")
    (tmp_path / "inst.checkpoints").symlink_to(real)  # an operator's placement: allowed
    assert CheckpointFile(tmp_path / "inst.checkpoints").lines() == ["one", "two"]


def _trust() -> tuple[object, object]:
    from safescan.code.certs import TrustStore
    from safescan.code.keys import SigningKey

    key = SigningKey.from_seed(b"\x07" * 32)
    return key, TrustStore({1: key.public_key})


def test_a_checkpoint_record_naming_a_field_twice_is_refused() -> None:
    from safescan.code.keys import SigningKey
    from safescan.institution.checkpoint_file import CheckpointError, sign
    from safescan.institution.checkpoints import parse

    key, trust = _trust()
    assert isinstance(key, SigningKey)
    line = sign(key, 1, {"type": "revoke", "serial": 5})
    assert parse(line, trust)["serial"] == 5  # type: ignore[arg-type]
    forged = '{"serial": 6, ' + line[1:]  # a first, unsigned value; the signed one last
    with pytest.raises(CheckpointError):  # before: verified (json.loads kept the last)
        parse(forged, trust)  # type: ignore[arg-type]
