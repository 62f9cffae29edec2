"""Configuration and state files a person points a command at are read bounded (redteam:
``institution config show --config /dev/zero``, ``pos ... --config /dev/zero`` and a wallet
whose ``wallet.json`` is a link to ``/dev/zero`` read the whole device: the process hung and
grew until the machine ran out of memory). Each is now the command's typed error; a pipe
(``--config <(...)``) still works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from safescan.code.smallfile import read_bounded


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
