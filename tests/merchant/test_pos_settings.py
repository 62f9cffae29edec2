"""``safescan pos`` settings: ``--config FILE.toml`` plus ``SAFESCAN_POS_<SECTION>__<FIELD>``
(options over environment over file over defaults); an older ``--config pos.json`` is still the
terminal's file; ``pos config show`` masks the API key; bad settings are typed errors that do
not echo the value; ``pos serve`` takes its address and TLS from the file (a real process on
127.0.0.1, checked with the pinned CA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from safescan.code.certs import TrustStore
from safescan.code.keys import SigningKey
from safescan.merchant.config import PosConfig
from safescan.merchant.settings import pos_settings
from safescan.merchant.staff import StaffStore
from safescan.web import pki
from safescan.web.settings_file import MASK, SettingsError
from tests.institution.pg import free_port

PASS = "pos passphrase 456"
SEED = os.urandom(32)


@pytest.fixture
def terminal(tmp_path: Path) -> Path:
    tls = pki.create_tls_dir(pki.TlsDir(tmp_path / "tls"))
    cfg = PosConfig(
        institution_url="https://127.0.0.1:9",
        merchant_id="M0000000042",
        api_seed=SEED,
        trust=TrustStore({1: SigningKey.generate().public_key}),
        tls_ca=tls.ca_cert.read_text(),
    )
    return cfg.save(tmp_path / "state" / "pos.json", passphrase=PASS.encode())


def _pos(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAFESCAN_POS_")}
    return subprocess.run(
        [sys.executable, "-m", "safescan", "pos", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_precedence_options_over_environment_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in [k for k in os.environ if k.startswith("SAFESCAN_POS_")]:
        monkeypatch.delenv(k)
    toml = tmp_path / "pos.toml"
    toml.write_text(
        '[terminal]\nfile = "/srv/pos/pos.json"\n[server]\nhost = "127.0.0.2"\nport = 9001\n'
        'allowed_hosts = ["pos.example"]\n'
    )
    s = pos_settings(toml)
    assert (s.server.host, s.server.port, s.server.allowed_hosts) == (
        "127.0.0.2",
        9001,
        ["pos.example"],
    )
    assert s.terminal_file == Path("/srv/pos/pos.json") and s.source == str(toml)
    monkeypatch.setenv("SAFESCAN_POS_SERVER__PORT", "9002")
    monkeypatch.setenv("SAFESCAN_POS_SERVER__ALLOWED_HOSTS", '["a.example", "b.example"]')
    s = pos_settings(toml)
    assert s.server.port == 9002 and s.server.allowed_hosts == ["a.example", "b.example"]
    assert s.server.host == "127.0.0.2"  # not overridden: the file's
    assert pos_settings(toml, server={"port": 9003, "host": None}).server.port == 9003
    # the file named through the environment, like --config
    monkeypatch.setenv("SAFESCAN_POS_CONFIG", str(toml))
    assert pos_settings(None).terminal_file == Path("/srv/pos/pos.json")
    # defaults without any file
    monkeypatch.delenv("SAFESCAN_POS_CONFIG")
    monkeypatch.delenv("SAFESCAN_POS_SERVER__PORT")
    assert pos_settings(None).server.port == 8090


def test_an_older_json_config_is_still_the_terminal_file(
    terminal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compatibility: --config pos.json (and $SAFESCAN_POS_CONFIG=pos.json) is the terminal's
    file itself, as before; nothing to migrate."""
    monkeypatch.delenv("SAFESCAN_POS_CONFIG", raising=False)
    assert pos_settings(terminal).terminal_file == terminal
    monkeypatch.setenv("SAFESCAN_POS_CONFIG", str(terminal))
    assert pos_settings(None).terminal_file == terminal
    out = _pos("config", "show", "--config", str(terminal), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["terminal_state"]["merchant_id"] == "M0000000042" and doc["source"] is None


def test_config_show_masks_the_api_key_and_never_opens_it(tmp_path: Path, terminal: Path) -> None:
    pw = tmp_path / "passphrase"
    pw.write_text(PASS + "\n")
    toml = tmp_path / "pos.toml"
    toml.write_text(f'[terminal]\nfile = "{terminal}"\npassphrase_file = "{pw}"\n')
    out = _pos("config", "show", "--config", str(toml), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    state = doc["terminal_state"]
    assert state["api_key"] == MASK and state["api_key_encrypted"] is True
    assert state["tls_ca_sha256"] == pki.ca_fingerprint(tmp_path / "tls" / "ca.pem")
    assert doc["terminal"]["file"] == str(terminal) and doc["source"] == str(toml)
    blob = json.loads(terminal.read_text())["api_key_pkcs12"]
    for secret in (SEED.hex(), blob, PASS):
        assert secret not in out.stdout + out.stderr
    human = _pos("config", "show", "--config", str(toml))
    assert human.returncode == 0 and MASK in human.stdout and PASS not in human.stdout


@pytest.mark.parametrize(
    ("text", "env", "names"),
    [
        ("[server]\nprot = 9000\n", {}, "server.prot"),  # a typo in the file
        ("[sever]\nport = 9000\n", {}, "sever"),  # a typo in a section
        ('[server]\nport = "s3cr3t-value-123"\n', {}, "server.port"),  # a wrong type
        ("", {"SAFESCAN_POS_SERVER__PROT": "s3cr3t-value-123"}, "server.prot"),
        ("", {"SAFESCAN_POS_SERVER__PORT": "99999"}, "server.port"),  # out of range
        ("[server\nport = 1\n", {}, "not a TOML file"),
    ],
)
def test_bad_settings_are_typed_errors_without_the_value(
    tmp_path: Path, text: str, env: dict[str, str], names: str
) -> None:
    toml = tmp_path / "pos.toml"
    toml.write_text(text)
    out = _pos("config", "show", "--config", str(toml), "--json", env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    err = json.loads(out.stdout)["error"]
    assert err["code"] == "settings_error" and names in err["message"], err
    assert "s3cr3t-value-123" not in out.stdout + out.stderr
    with pytest.raises(SettingsError):
        pos_settings(tmp_path / "missing.toml")


def test_pos_serve_takes_its_address_and_tls_from_the_settings_file(
    tmp_path: Path, terminal: Path
) -> None:
    StaffStore.for_config(terminal).add("alice", "correct horse battery")
    tls = pki.TlsDir(tmp_path / "tls")
    pw = tmp_path / "passphrase"
    pw.write_text(PASS + "\n")
    toml = tmp_path / "pos.toml"
    toml.write_text(
        f'[terminal]\nfile = "{terminal}"\npassphrase_file = "{pw}"\n'
        f'[server]\nhost = "127.0.0.1"\nport = {free_port()}\n'
        f'[tls]\ncert = "{tls.server_cert}"\nkey = "{tls.server_key}"\n'
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAFESCAN_POS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "safescan", "pos", "serve", "--config", str(toml)],
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY https://127.0.0.1:"), line + (
            proc.stderr.read() if proc.stderr else ""
        )
        url = line.split()[1]
        ctx = pki.client_context(tls.ca_cert)
        assert httpx.get(url + "/health", verify=ctx, timeout=10).status_code == 200
        with pytest.raises(httpx.ConnectError):  # not with the system's CAs
            httpx.get(url + "/health", timeout=10)
    finally:
        proc.terminate()
        proc.wait(15)
