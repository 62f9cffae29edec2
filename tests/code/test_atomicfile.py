"""code.atomicfile.write_atomic: whole or nothing, owner-only, never through a planted link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safescan.code.atomicfile import TMP, write_atomic


def test_a_symlink_planted_at_the_temporary_name_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"victim's own bytes")
    target = tmp_path / "key.bin"
    os.symlink(victim, tmp_path / ("key.bin" + TMP))
    write_atomic(target, b"secret key material")
    assert victim.read_bytes() == b"victim's own bytes"
    assert target.read_bytes() == b"secret key material"
    assert not target.is_symlink()
    assert os.stat(target).st_mode & 0o777 == 0o600


def test_a_hard_link_planted_at_the_temporary_name_is_not_truncated(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"victim's own bytes")
    os.link(victim, tmp_path / ("key.bin" + TMP))
    write_atomic(tmp_path / "key.bin", b"new")
    assert victim.read_bytes() == b"victim's own bytes"
    assert (tmp_path / "key.bin").read_bytes() == b"new"
    assert os.stat(victim).st_nlink == 1


def test_a_dangling_symlink_creates_nothing_at_its_destination(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    os.symlink(elsewhere, tmp_path / ("key.bin" + TMP))
    write_atomic(tmp_path / "key.bin", b"k")
    assert not elsewhere.exists()
    assert (tmp_path / "key.bin").read_bytes() == b"k"


def test_a_stale_world_readable_temporary_file_gives_way(tmp_path: Path) -> None:
    stale = tmp_path / ("key.bin" + TMP)
    stale.write_bytes(b"half a key from a crash")
    os.chmod(stale, 0o644)
    write_atomic(tmp_path / "key.bin", b"whole key")
    assert (tmp_path / "key.bin").read_bytes() == b"whole key"
    assert os.stat(tmp_path / "key.bin").st_mode & 0o777 == 0o600
    assert not stale.exists()


def test_a_failed_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "key.bin"
    target.write_bytes(b"old")

    def no_space(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert not (tmp_path / ("key.bin" + TMP)).exists()  # no half-written copy left beside it
