"""`safescan pos serve` and `safescan wallet serve` stopped by SIGTERM or SIGINT shut down
gracefully and exit 0, with what they do after serving done (the POS logs "web POS stopped");
they used to die of the SIGTERM uvicorn raises again after its shutdown (exit -15) and end a
Ctrl-C with a KeyboardInterrupt (safescan.web.graceful). Real processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.institution.pg import free_port
from tests.web.sites import PASS, pos_site

#: how long a stopped server may take to exit (a bound, not a measurement)
EXIT_BOUND = 120
SAFESCAN = [sys.executable, "-m", "safescan"]
SIGNALS = pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])


def _stop(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str]:
    """Send ``sig`` to a server that answered, wait for it: its status and its stderr."""
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=EXIT_BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def _ready(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("READY http://127.0.0.1:"), line
    url = line.split()[1]
    assert httpx.get(url + "/", timeout=30).status_code in {200, 303, 307}
    return url


@SIGNALS
def test_pos_serve_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    config, _tls = pos_site(tmp_path)
    proc = subprocess.Popen(
        [*SAFESCAN, "pos", "serve", "--config", str(config), "--port", str(free_port())],
        env={**os.environ, "SAFESCAN_POS_PASSPHRASE": PASS},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _ready(proc)
    status, err = _stop(proc, sig)
    assert status == 0, err[-2000:]
    assert "web POS stopped" in err
    assert "Traceback" not in err


@SIGNALS
def test_wallet_serve_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAFESCAN_WALLET_")}
    proc = subprocess.Popen(
        [
            *SAFESCAN,
            "wallet",
            "serve",
            "--wallet-dir",
            str(tmp_path / "w"),
            "--port",
            str(free_port()),
        ],
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _ready(proc)
    status, err = _stop(proc, sig)
    assert status == 0, err[-2000:]
    assert "Traceback" not in err
