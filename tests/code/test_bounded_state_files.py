"""(review) Key and state files in a key, wallet or factory directory are read bounded
(``code.smallfile.read_bounded``): a file larger than its limit is the reader's typed error,
never read whole (before: ``read_bytes``/``read_text``, so a link to ``/dev/zero`` or a huge
file ran the process out of memory). Each file here is a valid-looking document padded past
the limit: before, it was read and used."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from safescan.code.errors import KeyFileError

PAD = "x" * (1 << 20)  # past every limit below (64 KiB, 1 MiB)


def _padded(doc: dict[str, object]) -> str:
    return json.dumps({**doc, "pad": PAD})


def test_a_huge_key_file_is_a_typed_error(tmp_path: Path) -> None:
    from safescan.code.keys import SigningKey

    path = tmp_path / "signing.key"
    path.write_text("-----BEGIN PRIVATE KEY-----\n" + PAD + "\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match="larger than"):
        SigningKey.load(path, b"pw")


@pytest.mark.parametrize("name", ["keys.json", "secret.json"])
def test_a_huge_institution_key_index_or_secret_is_a_typed_error(tmp_path: Path, name: str) -> None:
    from safescan.api.errors import ConfigError
    from safescan.institution.keystore import KeyStore

    store = KeyStore(tmp_path)
    (tmp_path / "keys.json").write_text(_padded({"root_kid": 1, "scheme_kids": [1]}))
    (tmp_path / "secret.json").write_text(_padded({"salt": "", "nonce": "", "ct": ""}))
    with pytest.raises((ConfigError, KeyFileError)) as err:
        store._index() if name == "keys.json" else store.open_secret(b"pw")
    cause = err.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.EFBIG, cause


def test_a_huge_wallet_json_is_a_typed_error(tmp_path: Path) -> None:
    from safescan.wallet.settings import describe
    from safescan.web.settings_file import SettingsError

    (tmp_path / "wallet.json").write_text(_padded({"version": 1}))
    with pytest.raises(SettingsError, match="OSError"):
        describe(None, tmp_path)


def test_a_huge_factory_json_is_a_typed_error(tmp_path: Path) -> None:
    from safescan.carrier.factory import Factory

    (tmp_path / "factory.json").write_text(_padded({"kid": 1, "next_serial": 1}))
    with pytest.raises(KeyFileError, match="no factory key"):
        Factory.load(tmp_path, b"pw")
