"""``safescan demo --json`` as a user runs it: one JSON object, every attack refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

NAMES = {
    "swapped_sticker",
    "altered_amount",
    "paid_code_replay",
    "authorization_replay",
    "pin_brute_force",
}


def test_demo_json_reports_a_verified_payment_and_refused_attacks() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "safescan", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout holds exactly one JSON object"
    doc = json.loads(lines[0])
    for key in ("paid", "receipt_verified", "merchant_notified", "ledger_balanced"):
        assert doc[key] is True, key
    assert doc["amount"] == 1300 and doc["currency"] == "EUR"
    assert 1 <= doc["qr_version"] <= 40 and doc["qr_version"] <= 13
    assert 100 < doc["code_bytes"] < 400
    assert {a["name"] for a in doc["attacks"]} == NAMES
    for attack in doc["attacks"]:
        assert attack["refused"] is True, attack
        assert attack["reason"], attack
    assert doc["balances"]["customer_after"] == doc["balances"]["customer_before"] - 1300
    assert doc["balances"]["customer_after_attacks"] == doc["balances"]["customer_after"]


def _demo_children() -> list[int]:
    """Processes whose command line mentions a demo's temporary directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"safescan-demo-" in cmd:
            found.append(int(entry.name))
    return found


def test_demo_stops_everything_on_ctrl_c() -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    proc = subprocess.Popen(
        [sys.executable, "-m", "safescan", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    seen = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen += line
            if "payment institution up" in line:
                break
        started = _demo_children()
        assert started, "the demo's processes should be running: " + seen
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, seen + rest
    assert "interrupted" in rest
    deadline = time.monotonic() + 5
    while any(pid in _demo_children() for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in started if pid in _demo_children()]
