"""The web POS over HTTPS (`safescan pos serve --tls-cert --tls-key`), a real process on
127.0.0.1 checked with the pinned CA; plain HTTP refused off loopback; another CA's client
refused. (The wallet app's HTTPS: tests/e2e/walletapp/test_guard.py.)"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from safescan.web import pki
from tests.web.sites import PASS, pos_site


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pki.TlsDir]:
    """A POS terminal with a staff account, and a CA with a server certificate."""
    return pos_site(tmp_path_factory.mktemp("pos-https"))


def _env() -> dict[str, str]:
    return {**os.environ, "SAFESCAN_POS_PASSPHRASE": PASS}


def _serve(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "safescan", "pos", "serve", "--config", str(config), *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _port() -> str:
    """A port reserved for this test process (port 0 could land on one another
    process reserved and has not bound yet)."""
    from tests.institution.pg import free_port

    return str(free_port())


@pytest.fixture
def https_pos(setup: tuple[Path, pki.TlsDir]) -> Iterator[str]:
    config, tls = setup
    proc = _serve(
        config,
        "--port",
        _port(),
        "--tls-cert",
        str(tls.server_cert),
        "--tls-key",
        str(tls.server_key),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY https://127.0.0.1:"), line
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(15)


def test_web_pos_serves_https_verified_with_the_pinned_ca(
    https_pos: str, setup: tuple[Path, pki.TlsDir]
) -> None:
    _, tls = setup
    ctx = pki.client_context(tls.ca_cert)
    assert httpx.get(https_pos + "/health", verify=ctx, timeout=10).status_code == 200
    login = httpx.get(https_pos + "/login", verify=ctx, timeout=10)
    assert login.status_code == 200
    other, _ = pki.make_ca()
    other_file = setup[0].parent / "other-ca.pem"
    other_file.write_bytes(pki.cert_pem(other))
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(https_pos + "/health", verify=pki.client_context(other_file), timeout=10)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(https_pos + "/health", verify=ssl.create_default_context(), timeout=10)
    with pytest.raises(httpx.HTTPError):
        httpx.get(https_pos.replace("https://", "http://") + "/health", timeout=10)


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_web_pos_refuses_plain_http_off_loopback(setup: tuple[Path, pki.TlsDir], host: str) -> None:
    proc = _serve(setup[0], "--host", host, "--port", _port())
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, out + err
    assert "loopback" in err.replace("\n", " ")


def test_web_pos_refuses_half_a_tls_configuration(setup: tuple[Path, pki.TlsDir]) -> None:
    proc = _serve(setup[0], "--port", _port(), "--tls-cert", str(setup[1].server_cert))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "tls_config_error" in err.replace("\n", " ")
