"""One private pcscd socket path for the whole session.

The PC/SC client library (pyscard's libpcsclite) reads ``PCSCLITE_CSOCK_NAME`` once per
process, so every test module that reaches pcscd from this process must use the same path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from safescan.carrier.pcscd import missing_requirements


@pytest.fixture(scope="session")
def pcscd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of every private pcscd of this session (its socket path never changes)."""
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(f"PC/SC path not testable on this machine: {reason}")
    return tmp_path_factory.mktemp("pcscd")
