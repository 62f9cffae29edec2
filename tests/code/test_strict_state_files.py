"""(strict, twelfth sitting) Configuration and state files are JSON read by the one strict rule.

Someone who can write (or damage) a terminal's, a wallet's, an institution's or a cluster's own
file could plant JSON that Python's ``json`` reads one way and another reader (``jq``, a person,
a reader taking the first of two keys) another: a key named twice (the last value silently
won), a lone surrogate, ``NaN``. Numbers were read by ``int()``, which takes ``"1_0"``, ``" 1"``,
``1.9``, ``true`` and other scripts' digits (``"١٢"``). A ``null`` document was an
``AttributeError`` traceback. Each file below was read and used before (or crashed); now each is
its reader's typed error, and nothing is written.

The rule is :func:`safescan.code.strictjson.loads`; the reads are
:func:`safescan.code.smallfile.read_bounded`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safescan.code.keys import SigningKey

A = SigningKey.from_seed(b"\x01" * 32).public_key.hex()
B = SigningKey.from_seed(b"\x02" * 32).public_key.hex()


def _twice(doc: dict[str, object], key: str, value: object) -> str:
    """``doc`` as JSON with ``key`` named a second time, last, holding ``value``."""
    return json.dumps(doc)[:-1] + f", {json.dumps(key)}: {json.dumps(value)}}}"


# ---- the wallet's wallet.json -------------------------------------------------------------

WALLET = {
    "institution_url": "https://127.0.0.1:1",
    "carrier_url": "tcp://127.0.0.1:2",
    "trust": {"1": A},
    "carrier_serial": 12,
    "customer_id": "cus_1",
}

HOSTILE_WALLETS = {
    "trust named twice": _twice(WALLET, "trust", {"1": B}),
    "institution named twice": _twice(WALLET, "institution_url", "https://203.0.113.9"),
    "serial in other digits": json.dumps({**WALLET, "carrier_serial": "١٢"}),
    "serial as text": json.dumps({**WALLET, "carrier_serial": "1_2"}),
    "serial 12.9": json.dumps({**WALLET, "carrier_serial": 12.9}),
    "serial true": json.dumps({**WALLET, "carrier_serial": True}),
    "trust kid respelt": json.dumps({**WALLET, "trust": {"01": A}}),
    "lone surrogate": json.dumps({**WALLET, "customer_id": "\ud800"}),
    "null": "null",
    "a list": "[]",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_WALLETS))
def test_a_hostile_wallet_json_is_a_typed_error(tmp_path: Path, name: str) -> None:
    from safescan.wallet.errors import WalletError
    from safescan.wallet.store import WalletConfig

    (tmp_path / "wallet.json").write_text(HOSTILE_WALLETS[name])
    with pytest.raises(WalletError):
        WalletConfig.load(tmp_path)


def test_the_wallet_json_written_reads_back(tmp_path: Path) -> None:
    from safescan.wallet.store import WalletConfig

    (tmp_path / "wallet.json").write_text(json.dumps(WALLET))
    assert WalletConfig.load(tmp_path).carrier_serial == 12


@pytest.mark.parametrize("text", ["null", "[]", _twice(WALLET, "carrier_url", "tcp://x")])
def test_wallet_config_show_reads_wallet_json_strictly(tmp_path: Path, text: str) -> None:
    from safescan.wallet.settings import describe
    from safescan.web.settings_file import SettingsError

    (tmp_path / "wallet.json").write_text(text)
    with pytest.raises(SettingsError):  # before: null/[] an AttributeError traceback
        describe(None, tmp_path)


# ---- the POS's terminal file and staff file ---------------------------------------------

POS = {
    "institution_url": "https://127.0.0.1:1",
    "merchant_id": "m_1",
    "api_key_pkcs12": "AAAA",
    "trust": {"1": A},
}


@pytest.mark.parametrize(
    "text",
    [
        _twice(POS, "institution_url", "https://203.0.113.9"),
        _twice(POS, "trust", {"1": B}),
        json.dumps({**POS, "x": float("nan")}),
        json.dumps({**POS, "merchant_id": "\udfff"}),
    ],
    ids=["institution twice", "trust twice", "NaN", "lone surrogate"],
)
def test_a_hostile_pos_configuration_is_a_typed_error(
    tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safescan.merchant.config import PosConfig, PosConfigError
    from safescan.merchant.settings import describe

    for name in ("SAFESCAN_POS_CONFIG", "SAFESCAN_POS_PASSPHRASE", "SAFESCAN_POS_PASSPHRASE_FILE"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "pos.json"
    path.write_text(text)
    with pytest.raises(PosConfigError, match="cannot read"):
        PosConfig.load(path, passphrase=b"never used")
    site = tmp_path / "pos.toml"
    site.write_text(f"[terminal]\nfile = {json.dumps(str(path))}\n")
    with pytest.raises(PosConfigError, match="cannot read"):  # `pos config show`
        describe(site)


@pytest.mark.parametrize("text", ["null", "[]"])
def test_pos_config_show_of_a_non_object_is_a_typed_error(
    tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safescan.merchant.config import PosConfigError
    from safescan.merchant.settings import describe

    monkeypatch.delenv("SAFESCAN_POS_CONFIG", raising=False)
    (tmp_path / "pos.json").write_text(text)
    site = tmp_path / "pos.toml"
    site.write_text(f"[terminal]\nfile = {json.dumps(str(tmp_path / 'pos.json'))}\n")
    with pytest.raises(PosConfigError):  # before: an AttributeError traceback
        describe(site)


def _staff_record(**over: object) -> dict[str, object]:
    return {
        "kdf": "argon2id",
        "m": 8,
        "t": 1,
        "p": 1,
        "salt": "AAAAAAAAAAAAAAAAAAAAAA==",
        "hash": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        **over,
    }


HOSTILE_STAFF = {
    "users named twice": _twice({"format": 1, "users": {}}, "users", {"eve": _staff_record()}),
    "padded past 1 MiB": json.dumps({"format": 1, "users": {}, "pad": "x" * (1 << 20)}),
}

HOSTILE_RECORDS = {
    "m in other digits": _staff_record(m="١٠٠"),
    "m as text": _staff_record(m="1_024"),
    "t 1.9": _staff_record(t=1.9),
    "p true": _staff_record(p=True),
    "m of 4 TiB": _staff_record(m=1 << 32),  # every login with the name would allocate it
}


@pytest.mark.parametrize("name", sorted(HOSTILE_STAFF))
def test_a_hostile_staff_file_is_a_typed_error(tmp_path: Path, name: str) -> None:
    from safescan.merchant.staff import StaffError, StaffStore

    store = StaffStore(tmp_path / "pos-staff.json")
    store.path.write_text(HOSTILE_STAFF[name])
    with pytest.raises(StaffError):
        store.users()
    with pytest.raises(StaffError):
        store.add("ann", "a long password")
    assert store.path.read_text() == HOSTILE_STAFF[name]  # nothing written


@pytest.mark.parametrize("name", sorted(HOSTILE_RECORDS))
def test_a_hostile_staff_record_is_a_typed_error(tmp_path: Path, name: str) -> None:
    from safescan.merchant.staff import StaffError, StaffStore

    store = StaffStore(tmp_path / "pos-staff.json")
    store.path.write_text(json.dumps({"format": 1, "users": {"eve": HOSTILE_RECORDS[name]}}))
    with pytest.raises(StaffError, match="corrupt"):
        store.verify("eve", "a long password")


# ---- the institution's keys.json and secret.json ----------------------------------------

KEYS = {"root_kid": 1, "scheme_kids": [1]}

HOSTILE_INDEXES = {
    "root_kid named twice": _twice(KEYS, "root_kid", 2),
    "root_kid as text": json.dumps({**KEYS, "root_kid": "1_0"}),
    "root_kid in other digits": json.dumps({**KEYS, "root_kid": "١"}),
    "root_kid 1.9": json.dumps({**KEYS, "root_kid": 1.9}),
    "root_kid true": json.dumps({**KEYS, "root_kid": True}),
    "scheme kid a path": json.dumps({**KEYS, "scheme_kids": ["../../elsewhere"]}),
    "scheme kids not a list": json.dumps({**KEYS, "scheme_kids": "1"}),
    "root store not an object": json.dumps({**KEYS, "root": ["pkcs11"]}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_INDEXES))
def test_a_hostile_institution_key_index_is_a_typed_error(tmp_path: Path, name: str) -> None:
    from safescan.api.errors import ConfigError
    from safescan.institution.keystore import KeyStore

    (tmp_path / "keys.json").write_text(HOSTILE_INDEXES[name])
    store = KeyStore(tmp_path)
    with pytest.raises(ConfigError):
        store.load(b"passphrase", token=None)
    with pytest.raises(ConfigError):
        store.root_store()


def test_a_secret_file_naming_a_part_twice_is_a_typed_error(tmp_path: Path) -> None:
    from safescan.code.errors import KeyFileError
    from safescan.institution.keystore import KeyStore

    doc = {"salt": "AAAA", "nonce": "AAAA", "ct": "AAAA"}
    (tmp_path / "secret.json").write_text(_twice(doc, "ct", "BBBB"))
    with pytest.raises(KeyFileError) as err:
        KeyStore(tmp_path).open_secret(b"passphrase")
    assert "twice" in str(err.value.__cause__)
    with pytest.raises(KeyFileError):
        KeyStore(tmp_path).reseal_secret(_twice(doc, "ct", "BBBB").encode(), b"a", b"b")


# ---- settings from the environment, worker tuning, the HA cluster's files ----------------


@pytest.mark.parametrize(
    "raw", ['["a", "\\ud800"]', '[{"a": 1, "a": 2}]', "[NaN]", '["\udcff"]'], ids=str
)
def test_a_hostile_json_array_in_a_setting_variable_is_a_typed_error(raw: str) -> None:
    from safescan.web.settings_file import SettingsError, from_environment

    with pytest.raises(SettingsError, match="is not a JSON array"):
        from_environment("SAFESCAN_POS_", {"SAFESCAN_POS_SERVER__ALLOWED_HOSTS": raw})


def test_worker_tuning_naming_a_setting_twice_is_a_typed_error() -> None:
    from safescan.api.errors import ConfigError
    from safescan.institution.config import Tuning

    text = Tuning().encode()
    assert Tuning.decode(text) == Tuning()
    with pytest.raises(ConfigError):
        Tuning.decode(text[:-1] + ', "access_log": false}')


def test_the_clusters_spec_and_secrets_naming_a_key_twice_are_refused(tmp_path: Path) -> None:
    from safescan.cluster.errors import ClusterError
    from safescan.cluster.render import Secrets
    from safescan.cluster.spec import ClusterSpec

    with pytest.raises(ClusterError):
        ClusterSpec.from_json('{"tuning": {}, "tuning": {}}', tmp_path)
    with pytest.raises(ValueError, match="twice"):
        Secrets.from_json('{"etcd_token": "a", "etcd_token": "b"}')
    with pytest.raises(TypeError):
        Secrets.from_json("[]")
