"""A real SoftHSM2 token in a temporary directory (its own ``SOFTHSM2_CONF``), for the tests.

Skips (with the reason) when Debian's ``softhsm2`` or ``python-pkcs11`` is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from safescan.institution import hsm

MODULES = hsm.DEFAULT_MODULES
USER_PIN = "4711-token-pin"
SO_PIN = "so-pin-8812"


def module_path() -> Path | None:
    """Debian's SoftHSM2 PKCS#11 module, if installed."""
    return next((Path(m) for m in MODULES if Path(m).is_file()), None)


def missing() -> str | None:
    """Why a SoftHSM2 token cannot be made here (None: it can)."""
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util not found (Debian package softhsm2; scripts/ensure-system-deps.sh)"
    if module_path() is None:
        return "libsofthsm2.so not found (Debian package softhsm2)"
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 not installed (pip install -e '.[test]')"
    return None


@dataclass
class SoftHsm:
    """A token directory with one initialised token."""

    root: Path
    label: str
    module: Path

    @property
    def conf(self) -> Path:
        return self.root / "softhsm2.conf"

    @property
    def pin_file(self) -> Path:
        return self.root / "pin"

    def env(self) -> dict[str, str]:
        """What selects this token for the institution's processes."""
        return {
            "SOFTHSM2_CONF": str(self.conf),
            hsm.ENV_BACKEND: "pkcs11",
            hsm.ENV_MODULE: str(self.module),
            hsm.ENV_TOKEN: self.label,
            hsm.ENV_PIN_FILE: str(self.pin_file),
        }

    def settings(self, pin: str | None = None) -> hsm.TokenSettings:
        if pin is None:
            return hsm.TokenSettings(self.module, self.label, self.pin_file)
        other = self.root / "other-pin"
        other.write_text(pin + "\n")
        return hsm.TokenSettings(self.module, self.label, other)

    def add_token(self, label: str) -> None:
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label,
             "--so-pin", SO_PIN, "--pin", USER_PIN],
            env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
            check=True, capture_output=True,
        )  # fmt: skip

    def reload_in_process(self) -> None:
        """Make this test process's PKCS#11 library read this token directory (SoftHSM2 reads
        ``SOFTHSM2_CONF`` when the library is initialised) and forget earlier logins."""
        import pkcs11

        os.environ["SOFTHSM2_CONF"] = str(self.conf)
        hsm._LOGINS.clear()
        lib: Any = pkcs11.lib(str(self.module))
        lib.reinitialize()


def make(root: Path, label: str = "safescan-test") -> SoftHsm:
    """Initialise a token directory under ``root`` with one token ``label``."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    module = module_path()
    assert module is not None
    (root / "tokens").mkdir(parents=True)
    token = SoftHsm(root, label, module)
    token.conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    token.pin_file.write_text(USER_PIN + "\n")
    token.pin_file.chmod(0o600)
    token.add_token(label)
    return token


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftHsm]:
    """A fresh token, selected through the environment for every process the test starts."""
    token = make(tmp_path / "softhsm")
    for name, value in token.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(hsm.ENV_PIN, raising=False)
    yield token
    hsm._LOGINS.clear()
