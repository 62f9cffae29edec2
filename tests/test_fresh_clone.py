"""The README's first command on a fresh machine: a clean copy of the repository, no venv, no
compiler, wheels only. Catches a dependency that needs a build step (such as pyscard, which has
no Linux wheel and builds against libpcsclite-dev) creeping back into the demo's install.

Slow (about a minute: a new venv from pip's cache), so it runs once per suite.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tracked_files() -> list[str]:
    """Every file a fresh clone of the working tree would hold (tracked and new, not ignored)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    return [p for p in out.stdout.decode().split("\0") if p and (ROOT / p).is_file()]


def _no_compiler_dir(tmp: Path) -> Path:
    """A PATH entry whose cc/gcc/g++/swig fail loudly: any attempt to compile is visible."""
    shims = tmp / "no-compiler"
    shims.mkdir()
    for tool in ("cc", "gcc", "g++", "c++", "clang", "swig", "x86_64-linux-gnu-gcc"):
        shim = shims / tool
        shim.write_text(
            f"#!/bin/sh\necho 'fresh-machine test: {tool} is not installed' >&2\nexit 127\n"
        )
        shim.chmod(0o755)
    return shims


@pytest.mark.slow
def test_demo_command_on_a_fresh_clone_installs_from_wheels_only_and_pays(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    clone = tmp_path / "clone"
    for rel in _tracked_files():
        dst = clone / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst)
    assert not (clone / ".venv").exists()

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VIRTUAL_ENV", "PYTHON", "SAFESCAN_"))
    }
    base_python = Path(sys.base_prefix) / "bin"
    env["PATH"] = os.pathsep.join(
        [str(_no_compiler_dir(tmp_path)), str(base_python), "/usr/local/bin", "/usr/bin", "/bin"]
    )
    env["PIP_ONLY_BINARY"] = ":all:"
    env["CC"] = "false"
    env["CXX"] = "false"

    run = subprocess.run(
        ["bash", "scripts/demo.sh", "--json"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = json.loads(run.stdout.strip().splitlines()[-1])
    assert doc["paid"] is True
    assert doc["receipt_verified"] is True
    assert all(a["refused"] for a in doc["attacks"])

    venv = clone / ".venv"
    # the demo installs the runtime only: no test tools, no PC/SC extra
    assert not (venv / "bin" / "pytest").exists(), "the demo's install pulled in test tools"
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import smartcard"],
        capture_output=True,
        check=False,
    )
    assert probe.returncode != 0, "pyscard must be an extra, not a runtime dependency"
    # the PC/SC transport still imports, and says what to install when used
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "from safescan.carrier.transport.pcsc import PcscTransport\n"
            "from safescan.carrier.errors import CarrierUnavailable\n"
            "try:\n    PcscTransport('x')\n"
            "except CarrierUnavailable as e:\n    print(e)\n",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert "safescan[pcsc]" in probe.stdout
