"""The example systemd units in deploy/: valid for systemd, hardened, and the check can fail.

``systemd-analyze verify`` parses a unit the way systemd would load it; it exits 0 even for an
unknown key or a bad value (it only warns), so the test also requires an empty stderr. The
units name the install location ``/opt/safescan/bin/safescan``; verify refuses a missing
executable, so the copy under test points ExecStart at this checkout's ``safescan``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted(p.name for p in DEPLOY.glob("*.service"))
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not found (Debian package systemd)"
)
SAFESCAN = Path(sys.executable).with_name("safescan")
HARDENING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "ProtectSystem": "strict",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectHome": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
}


def _installed(tmp: Path, name: str, text: str | None = None) -> Path:
    text = (DEPLOY / name).read_text() if text is None else text
    out = tmp / name
    out.write_text(text.replace("/opt/safescan/bin/safescan", str(SAFESCAN)))
    return out


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )


def _service(name: str) -> dict[str, list[str]]:
    """Every ``[Service]`` key with all its values (systemd keys repeat)."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in (DEPLOY / name).read_text().replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section == "[Service]":
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_there_are_units_for_the_institution_and_the_pos() -> None:
    assert UNITS == ["safescan-institution.service", "safescan-pos.service"]


@needs_analyze
@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(
    tmp_path: Path, name: str
) -> None:
    assert SAFESCAN.exists(), SAFESCAN
    r = _verify(_installed(tmp_path, name))
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr


@needs_analyze
@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (("NoNewPrivileges=yes", "NoNewPriviliges=yes"), "Unknown key"),
        (("ProtectSystem=strict", "ProtectSystem=strictt"), "protect system"),
        (("SystemCallFilter=@system-service", "SystemCallFilter=@system-servic"), "system call"),
        (("RestrictAddressFamilies=AF_INET", "RestrictAddressFamilies=AF_INTE"), "AF_INTE"),
    ],
)
def test_the_check_catches_a_broken_hardening_line(
    tmp_path: Path, change: tuple[str, str], expect: str
) -> None:
    """A typo in a hardening option silently drops it in systemd; the check must say so."""
    name = "safescan-institution.service"
    text = (DEPLOY / name).read_text()
    assert change[0] in text
    r = _verify(_installed(tmp_path, name, text.replace(change[0], change[1], 1)))
    assert expect.lower() in r.stderr.lower(), r.stderr


@needs_analyze
def test_a_missing_executable_is_refused(tmp_path: Path) -> None:
    unit = tmp_path / "safescan-pos.service"
    unit.write_text((DEPLOY / "safescan-pos.service").read_text())  # /opt/... is not there
    if Path("/opt/safescan/bin/safescan").exists():
        pytest.skip("/opt/safescan/bin/safescan exists on this machine")
    r = _verify(unit)
    assert r.returncode != 0 and "not executable" in r.stderr


@pytest.mark.parametrize("name", UNITS)
def test_the_units_carry_the_hardening_options(name: str) -> None:
    service = _service(name)
    for key, want in HARDENING.items():
        assert key in service, f"{name}: {key}= missing"
        assert service[key][-1] == want, f"{name}: {key}={service[key][-1]!r}, want {want!r}"
    assert service["SystemCallFilter"][0] == "@system-service"
    assert "DynamicUser" in service or "User" in service
    assert service.get("StateDirectory"), f"{name}: no StateDirectory="
    # secrets come as credentials, never on the command line or in the environment file
    assert service.get("LoadCredential"), f"{name}: no LoadCredential="
    exec_start = " ".join(service["ExecStart"])
    assert not re.search(r"(?i)(pin|passphrase|password)[= ]+[^%\s/-]", exec_start), exec_start


@pytest.mark.parametrize("name", UNITS)
def test_the_data_paths_on_the_command_line_are_writable(name: str) -> None:
    service = _service(name)
    writable = service.get("ReadWritePaths", []) + [
        f"/var/lib/{d}" for d in service.get("StateDirectory", [])
    ]
    exec_start = " ".join(service["ExecStart"])
    for path in re.findall(r"(?:sqlite:///|--keys )(/[^\s]+)", exec_start):
        assert any(path.startswith(w) for w in writable), (path, writable)


@needs_analyze
@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_security_rates_the_unit_ok(tmp_path: Path, name: str) -> None:
    """``systemd-analyze security --offline``: exposure below 2.0 ("OK"; 10 is unprotected)."""
    assert ANALYZE is not None
    unit = _installed(tmp_path, name)
    r = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    if found is None:
        pytest.skip(f"systemd-analyze security --offline gave no figure: {r.stderr.strip()}")
    assert float(found.group(1)) < 2.0, r.stdout
