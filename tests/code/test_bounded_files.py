"""Configuration and state files a person points a command at are read bounded (redteam:
``institution config show --config /dev/zero``, ``pos ... --config /dev/zero`` and a wallet
whose ``wallet.json`` is a link to ``/dev/zero`` read the whole device: the process hung and
grew until the machine ran out of memory). Each is now the command's typed error; a pipe
(``--config <(...)``) still works."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from safescan.code.smallfile import read_bounded
from tests.fsrace import hard_link_at_open


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFESCAN_")}
    return subprocess.run(
        [sys.executable, "-m", "safescan", *args, "--json"],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("source", ["/dev/zero", "huge"])
@pytest.mark.parametrize(
    ("command", "code"),
    [
        (("institution", "config", "show", "--config"), "config_error"),
        (("pos", "orders", "--config"), "pos_config_error settings_error"),  # JSON or TOML
        (("wallet", "status", "--wallet-dir"), "wallet_error"),
    ],
)
def test_a_device_or_huge_file_as_configuration_is_a_typed_error(
    tmp_path: Path, source: str, command: tuple[str, ...], code: str
) -> None:
    target = Path(source)
    if source == "huge":
        target = tmp_path / "huge.toml"
        target.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    if command[0] == "wallet":  # the wallet reads wallet.json in its directory
        (tmp_path / "w").mkdir()
        (tmp_path / "w" / "wallet.json").symlink_to(target)
        target = tmp_path / "w"
    r = _run(*command, str(target))
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    error = json.loads(r.stdout)["error"]
    assert error["code"] in code.split(), error
    assert "larger than" in error["message"]


def test_read_bounded_reads_a_pipe_and_refuses_a_directory(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.write(write, b"[server]\nport = 8081\n")
    os.close(write)
    try:
        assert read_bounded(Path(f"/dev/fd/{read}")) == b"[server]\nport = 8081\n"
    finally:
        os.close(read)
    with pytest.raises(IsADirectoryError):
        read_bounded(tmp_path)
    (tmp_path / "f").write_bytes(b"x" * 11)
    with pytest.raises(OSError, match="larger than 10 bytes"):
        read_bounded(tmp_path / "f", 10)
    assert read_bounded(tmp_path / "f", 11) == b"x" * 11


@pytest.mark.parametrize("kind", ["hardlink", "symlink", "fifo"])
def test_single_link_refuses_a_second_name_a_symlink_and_a_non_file(
    tmp_path: Path, kind: str
) -> None:
    """``single_link=True`` (an own secret file: a key, a token, a password): a file with a
    second name, a symbolic link or anything but a regular file is an ``OSError``, checked on
    the opened descriptor; the file with one name is read."""
    own = tmp_path / "token"
    own.write_bytes(b"secret-q7")
    assert read_bounded(own, single_link=True) == b"secret-q7"
    planted = tmp_path / "planted"
    if kind == "hardlink":
        os.link(own, planted)  # the attacker's second name for the victim's file
        with pytest.raises(OSError) as err:
            read_bounded(own, single_link=True)
        assert err.value.errno == errno.EMLINK
        assert read_bounded(own) == b"secret-q7"  # without the option: read as before
    elif kind == "symlink":
        planted.symlink_to(own)
    else:
        os.mkfifo(planted)
    if kind != "hardlink":
        with pytest.raises(OSError):
            read_bounded(planted, single_link=True)


def test_the_link_count_is_the_opened_files_not_an_earlier_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race a check-then-open reader loses: a hard link made after the check and before
    the open. The open here makes the link first (the attacker winning the race every time);
    the count is the descriptor's, so the read is refused."""
    own = tmp_path / "token"
    own.write_bytes(b"secret-q7")
    hard_link_at_open(monkeypatch, own, tmp_path / "planted")
    with pytest.raises(OSError) as err:
        read_bounded(own, single_link=True)
    assert err.value.errno == errno.EMLINK
