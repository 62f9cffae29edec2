"""``safescan demo --json`` as a user runs it: one JSON object, every attack refused."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from safescan.web.pki import client_context

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
    # read from the institution's /metrics: the one payment, none of the refused attacks
    assert doc["metrics"] == {"payments_total": 1}
    assert 1 <= doc["qr_version"] <= 40 and doc["qr_version"] <= 13
    assert 100 < doc["code_bytes"] < 400
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    stated = re.search(r"(\d+) bytes, QR version (\d+) at level M,\s+for the demo's order", readme)
    assert stated, "README states the demo's code size and QR version"
    assert (int(stated[1]), int(stated[2])) == (doc["code_bytes"], doc["qr_version"])
    assert {a["name"] for a in doc["attacks"]} == NAMES
    for attack in doc["attacks"]:
        assert attack["refused"] is True, attack
        assert attack["reason"], attack
    assert doc["balances"]["customer_after"] == doc["balances"]["customer_before"] - 1300
    assert doc["balances"]["customer_after_attacks"] == doc["balances"]["customer_after"]
    # every HTTP connection the demo made was HTTPS verified with the pinned CA
    assert doc["tls"] is True
    assert doc["http_hops"], "the hops are recorded as they are made"
    for hop in doc["http_hops"]:
        assert hop["origin"].startswith("https://127.0.0.1:") and hop["verified"] is True, hop
    # the institution and the web POS are both hops (two origins, both HTTPS and pinned)
    assert len({hop["origin"] for hop in doc["http_hops"]}) >= 2, doc["http_hops"]
    assert doc["ok"] is True


def test_demo_is_not_ok_when_one_hop_was_not_verified_tls() -> None:
    """`"ok"` requires `"tls"`: a run that paid, verified and refused everything is still not
    ok when one hop was plain HTTP, TLS without the pinned CA, or when no hop was recorded."""
    from safescan.demo.story import verdict
    from safescan.web.pki import Hop

    good = {
        "paid": True,
        "receipt_verified": True,
        "merchant_notified": True,
        "ledger_balanced": True,
        "attacks": [{"refused": True}] * 5,
    }
    inst, pos = Hop("https://127.0.0.1:1", True, True), Hop("https://127.0.0.1:2", True, True)
    assert verdict(dict(good), 0, [inst, pos]) is True
    for bad_pos in (
        Hop("http://127.0.0.1:2", False, False),  # the web POS over plain HTTP
        Hop("https://127.0.0.1:2", True, False),  # TLS, but not checked against the pin
    ):
        doc = dict(good)
        assert verdict(doc, 0, [inst, bad_pos]) is False
        assert doc["tls"] is False and doc["ok"] is False
    assert verdict(dict(good), 0, []) is False  # nothing recorded is not "all TLS"
    assert verdict(dict(good), 1, [inst, pos]) is False


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


def _start_demo(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    return subprocess.Popen(
        [sys.executable, "-m", "safescan", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _read_until(proc: subprocess.Popen[str], marker: str) -> str:
    seen = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        seen += line
        if marker in line:
            return seen
    raise AssertionError(f"the demo ended before printing {marker!r}: {seen}")


def _interrupt(proc: subprocess.Popen[str], started: list[int]) -> str:
    """Ctrl-C the demo; if it does not end, kill it and what it started (no leftovers for the
    next test)."""
    try:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            for pid in started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    return rest


def _parent(pid: int) -> int | None:
    """``pid``'s parent, from /proc (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces


def _descends_from(pid: int, root: int) -> bool:
    seen = 0
    while pid > 1 and seen < 64:
        if pid == root:
            return True
        parent = _parent(pid)
        if parent is None:
            return False
        pid, seen = parent, seen + 1
    return False


def _new_children(before: set[int], root: int) -> list[int]:
    """The demo processes ``root`` started: another test's demo (other xdist workers run
    demos at the same time) is neither counted nor expected to stop."""
    return [p for p in _demo_children() if p not in before and _descends_from(p, root)]


def _all_gone(started: list[int]) -> bool:
    deadline = time.monotonic() + 10
    while any(pid in _demo_children() for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not [pid for pid in started if pid in _demo_children()]


def test_keep_running_serves_until_ctrl_c_then_stops_everything() -> None:
    """`demo --keep-running` leaves the institution, the carrier and a web POS up (they answer)
    until Ctrl-C, which stops every process it started and exits 0."""
    before = set(_demo_children())
    proc = _start_demo("--keep-running")
    started: list[int] = []
    try:
        seen = _read_until(proc, "press Ctrl-C")
        started = _new_children(before, proc.pid)
        urls = re.findall(r"(https?://127\.0\.0\.1:\d+)", seen.split("still running")[1])
        assert len(urls) >= 2, seen
        assert urls[0].startswith("https://"), seen  # the institution: HTTPS
        workdir = Path(re.findall(r"work directory\s+(\S+)", seen)[0])
        ca = client_context(workdir / "institution-keys.tls" / "ca.pem")
        assert httpx.get(urls[0] + "/health", timeout=10, verify=ca).status_code == 200
        assert urls[-1].startswith("https://"), seen  # the web POS: HTTPS too, same CA
        assert httpx.get(urls[-1] + "/health", timeout=10, verify=ca).status_code == 200
        with pytest.raises(httpx.ConnectError):  # not with the system's CAs
            httpx.get(urls[-1] + "/health", timeout=10)
        assert len(started) >= 3, "institution, carrier and POS should be running: " + seen
    finally:
        rest = _interrupt(proc, started)
    assert proc.returncode == 0, seen + rest
    assert "stopping everything" in rest and "all good" in rest
    assert _all_gone(started)


def test_demo_interrupted_midway_stops_everything() -> None:
    """Ctrl-C while the demo is still setting up (the institution's key generation and
    migrations take over a second after the carrier is up): exit 130, nothing left running."""
    before = set(_demo_children())
    proc = _start_demo()
    started: list[int] = []
    try:
        seen = _read_until(proc, "key carrier process up")
        started = _new_children(before, proc.pid)
        assert started, "the demo's processes should be running: " + seen
    finally:
        rest = _interrupt(proc, started)
    assert proc.returncode == 130, seen + rest
    assert "interrupted" in rest
    assert _all_gone(started)
