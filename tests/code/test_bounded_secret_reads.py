"""(strict, twelfth sitting) The last unbounded reads of files a person or a planted link names,
and the last ``str.isdigit()`` checks of numbers from the network.

Before: the institution's ``--passphrase-file`` and the TLS CA key were read with
``read_bytes()``: a FIFO hung ``serve``/``init``/``issue``, a huge file was read whole (a
passphrase file of megabytes was taken as the passphrase). ``str.isdigit()`` is true of ``"²"``
and of other scripts' digits (``"١٢"``): an institution answer whose ``Retry-After`` was ``²``
made the client raise ``ValueError`` instead of its typed error, and ``١٢`` was read as 12. The
FIFO cases hung before: a test timeout bounds them (they finish at once now)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.fsrace import may_hang, plant


@may_hang
@pytest.mark.parametrize("planted", ["fifo", "8 KiB"])
def test_the_institution_passphrase_file_is_read_bounded(tmp_path: Path, planted: str) -> None:
    from safescan.api.errors import ConfigError
    from safescan.institution.keystore import load_passphrase

    path = tmp_path / "passphrase"
    plant(path, planted)  # before: a hang, an 8 KiB passphrase
    with pytest.raises(ConfigError):
        load_passphrase(path)
    path.unlink()
    path.write_bytes(b"a good passphrase\n")
    assert load_passphrase(path) == b"a good passphrase"


@may_hang
def test_a_fifo_as_the_tls_ca_key_is_a_typed_error(tmp_path: Path) -> None:
    from safescan.web.pki import TlsDir, TlsTrustError, ca_key_sealed, load_ca_key

    tls = TlsDir(tmp_path)
    plant(tls.ca_key, "fifo")
    with pytest.raises(TlsTrustError):  # before: a hang
        load_ca_key(tls, b"passphrase")
    assert not ca_key_sealed(tls)  # an empty read: not a sealed key (before: a hang)


@pytest.mark.parametrize("value", ["²", "١٢", "１２", "12"])
def test_retry_after_is_read_in_ascii_digits_only(value: str) -> None:
    from safescan.client.errors import error_from_response

    resp = httpx.Response(
        503, headers=[(b"retry-after", value.encode("utf-8" if value != "²" else "latin-1"))]
    )
    exc = error_from_response(resp)  # before: ValueError for "²", 12 for "١٢"
    assert getattr(exc, "retry_after_s", None) == (12 if value == "12" else None)
