"""``safescan wallet --config FILE.toml <command>`` plus ``SAFESCAN_WALLET_<SECTION>__<FIELD>``:
every command takes the wallet directory from the file; ``wallet serve`` its address and TLS (a
real process on 127.0.0.1 checked with the pinned CA); ``wallet config show``; bad settings
are typed errors that do not echo the value; without a file nothing changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from safescan.web import pki
from tests.institution.pg import free_port

SECRETISH = "s3cr3t-value-789"


def _wallet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAFESCAN_WALLET_")}
    return subprocess.run(
        [sys.executable, "-m", "safescan", "wallet", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_command_reads_the_settings_file(tmp_path: Path) -> None:
    toml = tmp_path / "wallet.toml"
    wdir = tmp_path / "my-wallet"
    toml.write_text(f'[wallet]\ndir = "{wdir}"\n[server]\nport = 9100\n')
    shown = _wallet("--config", str(toml), "config", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["wallet_dir"] == str(wdir) and doc["wallet"]["dir"] == str(wdir)
    assert doc["server"]["port"] == 9100 and doc["source"] == str(toml)
    assert doc["wallet_state"] == {"exists": False}
    # the same through the environment; a variable beats the file
    env = {"SAFESCAN_WALLET_CONFIG": str(toml), "SAFESCAN_WALLET_SERVER__PORT": "9101"}
    doc = json.loads(_wallet("config", "show", "--json", env=env).stdout)
    assert doc["server"]["port"] == 9101 and doc["wallet_dir"] == str(wdir)
    # another command: it looks for the wallet where the file says
    status = _wallet("--config", str(toml), "status", "--json")
    assert status.returncode != 0
    err = json.loads(status.stdout)["error"]
    assert err["code"] == "wallet_not_enrolled" and str(wdir) in err["message"], err
    # --wallet-dir still wins over the file
    other = tmp_path / "other"
    doc = json.loads(
        _wallet(
            "--config", str(toml), "config", "show", "--json", "--wallet-dir", str(other)
        ).stdout
    )
    assert doc["wallet_dir"] == str(other)
    # no file: as before
    assert json.loads(_wallet("config", "show", "--json").stdout)["source"] is None


@pytest.mark.parametrize(
    ("text", "env", "says"),
    [
        ("[wallet]\ndri = 1\n", {}, "wallet.dri"),
        (f'[server]\nport = "{SECRETISH}"\n', {}, "server.port"),
        ("", {"SAFESCAN_WALLET_TLS__CRT": SECRETISH}, "tls.crt"),
        ("[wallet\n", {}, "not a TOML file"),
    ],
)
def test_bad_settings_are_typed_errors_without_the_value(
    tmp_path: Path, text: str, env: dict[str, str], says: str
) -> None:
    toml = tmp_path / "wallet.toml"
    toml.write_text(text)
    out = _wallet("--config", str(toml), "config", "show", "--json", env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "settings_error" in out.stdout + out.stderr and says in out.stdout + out.stderr
    assert SECRETISH not in out.stdout + out.stderr


def test_a_json_file_is_not_taken_for_settings(tmp_path: Path) -> None:
    bogus = tmp_path / "wallet.json"
    bogus.write_text("{}")
    out = _wallet("--config", str(bogus), "config", "show", "--json")
    assert out.returncode == 2 and "must be a .toml file" in out.stdout + out.stderr


def test_wallet_serve_takes_its_address_and_tls_from_the_file(tmp_path: Path) -> None:
    tls = pki.create_tls_dir(pki.TlsDir(tmp_path / "tls"))
    toml = tmp_path / "wallet.toml"
    toml.write_text(
        f'[wallet]\ndir = "{tmp_path / "w"}"\n[server]\nhost = "127.0.0.1"\nport = {free_port()}\n'
        f'[tls]\ncert = "{tls.server_cert}"\nkey = "{tls.server_key}"\n'
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAFESCAN_WALLET_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "safescan", "wallet", "--config", str(toml), "serve"],
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY https://127.0.0.1:"), line
        url = line.split()[1]
        assert (
            httpx.get(url + "/", verify=pki.client_context(tls.ca_cert), timeout=10).status_code
            == 200
        )
        with pytest.raises(httpx.ConnectError):  # not with the system's CAs
            httpx.get(url + "/", timeout=10)
    finally:
        proc.terminate()
        proc.wait(15)
