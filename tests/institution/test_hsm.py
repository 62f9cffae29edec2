"""The institution's root signing key in a PKCS#11 token (a real SoftHSM2 token in a temporary
directory): generated in the token by `institution init`, used by a real server for receipts,
certificates, events and checkpoints, never exportable; a wrong PIN, a missing token, another
key or a key that could have been copied are typed errors and nothing changes."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from safescan.code import Receipt, TrustStore, VerifyKey
from safescan.institution import hsm
from safescan.institution.checkpoints import default_path
from tests.institution.harness import (
    ServerProcess,
    World,
    env,
    init_db,
    institution_cli,
    institution_run,
)
from tests.institution.pg import free_port
from tests.institution.softhsm import USER_PIN, SoftHsm, softhsm

__all__ = ["softhsm"]  # the fixture


def _snapshot(*paths: Path) -> dict[str, str]:
    """SHA-256 of every file under ``paths`` (what "nothing changed" compares)."""
    out: dict[str, str] = {}
    for base in paths:
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _serve(db_url: str, keys: Path, extra_env: dict[str, str] | None = None) -> Any:
    """`institution serve` expected to refuse to start: its exit status and output. A process
    of its own, forked from the zygote with the imports done where it fits
    (:func:`institution_run`; the token's variables are read when the command runs)."""
    e = {**env(), "COLUMNS": "400", **(extra_env or {})}
    return institution_run(
        ["serve", "--db", db_url, "--keys", str(keys), "--port", str(free_port())], e
    )


def _error(out: Any) -> str:
    """The typed error code a failed command printed."""
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            return str(json.loads(line)["error"]["code"])
    found = re.search(r"error: .*\((\w+)\)\s*$", out.stderr, re.S)
    return found.group(1) if found else out.stdout + out.stderr


@pytest.fixture
def site(tmp_path: Path, softhsm: SoftHsm) -> dict[str, Any]:
    db = tmp_path / "inst.db"
    keys = tmp_path / "keys"
    token = init_db(f"sqlite:///{db}", keys, fresh=True)  # the keys in the token
    return {"db": db, "url": f"sqlite:///{db}", "keys": keys, "token": token, "hsm": softhsm}


def test_a_receipt_signed_in_the_token_verifies_with_the_published_key(
    site: dict[str, Any],
) -> None:
    keys: Path = site["keys"]
    index = json.loads((keys / "keys.json").read_text())
    assert index["root"]["store"] == "pkcs11" and index["root"]["token"] == "safescan-test"
    assert not list(keys.glob("root-*")), "no root key file when the key is in the token"
    server = ServerProcess(site["url"], keys).start()
    w = World(server, site["token"])
    try:
        published = w.http.get("/v1/keys").json()["root_keys"]
        trust = TrustStore(
            {k["kid"]: VerifyKey(base64.b64decode(k["public_key"])) for k in published}
        )
        assert trust.institution_key(1).hex() == index["root"]["public"]
        m = w.merchant()
        cid = w.customer({"EUR": 10_000})
        carrier = w.carrier(cid)  # its certificate is signed in the token too
        for amount in (350, 1200):
            order = m.order([("Tea", 1, amount)])
            r = w.pay(order["code"], carrier.authorize(order["code"]))
            assert r.status_code == 201, r.text
            receipt = Receipt.from_bytes(base64.b64decode(r.json()["receipt"]))
            receipt.verify(trust)
            assert receipt.amount == amount
            # the same receipt with one field changed does not verify under the token's key
            forged = dataclasses.replace(receipt, amount=amount + 1)
            with pytest.raises(Exception, match="does not verify"):
                forged.verify(trust)
        assert USER_PIN not in server.output()
    finally:
        w.close()
        server.stop()
    # the checkpoints were signed in the token: the audit verifies them with the public key
    out = institution_cli("audit", "--db", site["url"], "--keys", str(keys), "--json")
    assert out.returncode == 0, out.stdout
    assert default_path(keys).stat().st_size > 0


def test_the_private_key_cannot_be_read_exported_or_made_exportable(
    site: dict[str, Any],
) -> None:
    import pkcs11

    at = pkcs11.Attribute

    token: SoftHsm = site["hsm"]
    token.reload_in_process()
    session = hsm.Token(token.settings()).session
    private = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label="safescan-root-1")
    # generated in the token, never sensitive-less, never extractable
    assert private[at.SENSITIVE] and private[at.ALWAYS_SENSITIVE] and private[at.LOCAL]
    assert not private[at.EXTRACTABLE] and private[at.NEVER_EXTRACTABLE]
    with pytest.raises(pkcs11.exceptions.AttributeSensitive):
        private[at.VALUE]
    for change in ({at.SENSITIVE: False}, {at.EXTRACTABLE: True}):
        ((attr, value),) = change.items()
        with pytest.raises(pkcs11.exceptions.PKCS11Error):
            private[attr] = value
        assert private[attr] is not value
    with pytest.raises(pkcs11.exceptions.PKCS11Error):
        private.copy({at.EXTRACTABLE: True, at.SENSITIVE: False})
    wrapping = session.generate_key(
        pkcs11.KeyType.AES, 256, capabilities=pkcs11.MechanismFlag.WRAP, store=False
    )
    with pytest.raises(pkcs11.exceptions.PKCS11Error) as refused:
        wrapping.wrap_key(private, mechanism=pkcs11.Mechanism.AES_KEY_WRAP_PAD)
    assert type(refused.value).__name__ in ("KeyUnextractable", "KeyNotWrappable")
    # still the only root key, still signing
    assert len(list(session.get_objects({at.LABEL: "safescan-root-1"}))) == 2  # public+private


def test_wrong_pin_is_a_typed_error_and_the_server_refuses_to_start_changing_nothing(
    site: dict[str, Any], tmp_path: Path
) -> None:
    token: SoftHsm = site["hsm"]
    before = _snapshot(site["db"], site["keys"], default_path(site["keys"]))
    wrong = tmp_path / "wrong-pin"
    cases = {
        "wrong PIN in the file": ("0000-not-the-pin", {hsm.ENV_PIN_FILE: str(wrong)}),
        "the PIN with a character more": (USER_PIN + "x", {hsm.ENV_PIN_FILE: str(wrong)}),
        "an empty PIN file": ("", {hsm.ENV_PIN_FILE: str(wrong)}),
        "no PIN file": (None, {hsm.ENV_PIN_FILE: str(tmp_path / "absent")}),
        "wrong PIN in the environment": (None, {hsm.ENV_PIN_FILE: "", hsm.ENV_PIN: "123456"}),
    }
    for name, (pin, extra) in cases.items():
        if pin is not None:
            wrong.write_text(pin + "\n")
        out = _serve(site["url"], site["keys"], extra)
        assert out.returncode == 2, (name, out.stdout, out.stderr)
        assert _error(out) == "hsm_pin_incorrect" or "hsm_pin_incorrect" in _error(out), name
        assert "Traceback" not in out.stderr, name
        assert USER_PIN not in out.stdout + out.stderr
        if pin:
            assert pin not in out.stdout + out.stderr, f"{name}: the PIN was printed"
    assert _snapshot(site["db"], site["keys"], default_path(site["keys"])) == before
    assert token.pin_file.read_text().strip() == USER_PIN


def test_init_with_a_wrong_pin_creates_nothing(softhsm: SoftHsm, tmp_path: Path) -> None:
    bad = tmp_path / "bad-pin"
    bad.write_text("99999999\n")
    db = tmp_path / "fresh.db"
    out = institution_run(
        ["init", "--db", f"sqlite:///{db}", "--keys", str(tmp_path / "k"), "--json"],
        {**env(), hsm.ENV_PIN_FILE: str(bad)},
    )
    assert out.returncode == 2 and _error(out) == "hsm_pin_incorrect", out.stdout + out.stderr
    assert not db.exists() and not (tmp_path / "k").exists()
    assert not default_path(tmp_path / "k").exists()
    # and the token holds no key: a later init with the right PIN works
    init_db(f"sqlite:///{db}", tmp_path / "k", fresh=True)


def test_a_missing_token_or_module_is_a_typed_error(site: dict[str, Any], tmp_path: Path) -> None:
    token: SoftHsm = site["hsm"]
    before = _snapshot(site["db"], site["keys"], default_path(site["keys"]))
    empty = tmp_path / "empty-softhsm"
    (empty / "tokens").mkdir(parents=True)
    (empty / "softhsm2.conf").write_text(f"directories.tokendir = {empty / 'tokens'}\n")
    cases = {
        "another token label": {hsm.ENV_TOKEN: "no-such-token"},
        "the token directory without the token": {"SOFTHSM2_CONF": str(empty / "softhsm2.conf")},
        "no PKCS#11 module there": {hsm.ENV_MODULE: str(tmp_path / "libnothing.so")},
        "a file that is not a PKCS#11 module": {hsm.ENV_MODULE: str(token.pin_file)},
    }
    for name, extra in cases.items():
        out = _serve(site["url"], site["keys"], extra)
        assert out.returncode == 2, (name, out.stderr)
        assert _error(out) in ("hsm_unavailable", "hsm_key_error"), (name, _error(out))
        assert "Traceback" not in out.stderr, name
    out = _serve(site["url"], site["keys"], {hsm.ENV_TOKEN: "no-such-token"})
    assert "no-such-token" in out.stdout + out.stderr
    assert _snapshot(site["db"], site["keys"], default_path(site["keys"])) == before


def test_another_key_under_the_root_label_is_refused(site: dict[str, Any]) -> None:
    """The token's key must be the one init recorded, generated there and never extractable:
    a key of another institution, an imported (once extractable) key, a tampered index."""
    import pkcs11

    at = pkcs11.Attribute
    from pkcs11.util.ec import encode_named_curve_parameters

    from safescan.code import SigningKey

    token: SoftHsm = site["hsm"]
    keys: Path = site["keys"]
    index_file = keys / "keys.json"
    index = json.loads(index_file.read_text())
    # 1. the index names another public key (a key directory of another institution)
    other = SigningKey.generate().public_key.hex()
    index_file.write_text(json.dumps({**index, "root": {**index["root"], "public": other}}))
    out = _serve(site["url"], keys)
    assert out.returncode == 2 and _error(out) == "hsm_key_error", out.stderr
    assert "not the institution's root key" in out.stdout + out.stderr
    # 2. the index names another token
    index_file.write_text(json.dumps({**index, "root": {**index["root"], "token": "spare"}}))
    out = _serve(site["url"], keys)
    assert out.returncode == 2 and _error(out) == "hsm_key_error", out.stderr
    index_file.write_text(json.dumps(index))
    # 3. the token's key is replaced by an imported one (its bytes existed outside the token)
    token.reload_in_process()
    session = hsm.Token(token.settings()).session
    for obj in session.get_objects({at.LABEL: "safescan-root-1"}):
        obj.destroy()
    seed = os.urandom(32)
    session.create_object({
        at.CLASS: pkcs11.ObjectClass.PRIVATE_KEY, at.KEY_TYPE: pkcs11.KeyType.EC_EDWARDS,
        at.TOKEN: True, at.PRIVATE: True, at.SENSITIVE: True, at.EXTRACTABLE: False, at.SIGN: True,
        at.LABEL: "safescan-root-1", at.ID: b"safescan-root-1",
        at.EC_PARAMS: encode_named_curve_parameters(hsm.ED25519_OID), at.VALUE: seed,
    })  # fmt: skip
    imported = SigningKey.from_seed(seed).public_key.hex()
    index_file.write_text(json.dumps({**index, "root": {**index["root"], "public": imported}}))
    out = _serve(site["url"], keys)
    assert out.returncode == 2 and _error(out) == "hsm_key_error", out.stderr
    assert "may have existed outside the token" in out.stdout + out.stderr
    # 4. no key at all under the label
    for obj in session.get_objects({at.LABEL: "safescan-root-1"}):
        obj.destroy()
    out = _serve(site["url"], keys)
    assert out.returncode == 2 and _error(out) == "hsm_key_error", out.stderr
    assert "holds no key" in out.stdout + out.stderr


def test_the_configured_backend_must_match_the_key_directory(
    softhsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file_keys = tmp_path / "file-keys"
    url = f"sqlite:///{tmp_path / 'f.db'}"
    monkeypatch.setenv(hsm.ENV_BACKEND, "file")
    init_db(url, file_keys, fresh=True)
    assert list(file_keys.glob("root-*.pem"))
    out = _serve(url, file_keys, {hsm.ENV_BACKEND: "pkcs11"})
    assert out.returncode == 2 and _error(out) == "config_error"
    assert "is a file" in out.stdout + out.stderr
    out = _serve(url, file_keys, {hsm.ENV_BACKEND: "tpm"})
    assert out.returncode == 2 and _error(out) == "config_error"


def test_a_second_init_in_the_same_token_refuses_to_make_another_root_key(
    site: dict[str, Any], tmp_path: Path
) -> None:
    out = institution_cli(
        "init", "--db", f"sqlite:///{tmp_path / 'second.db'}", "--keys", str(tmp_path / "k2"),
        "--json",
    )  # fmt: skip
    assert out.returncode == 2 and _error(out) == "hsm_key_error", out.stdout + out.stderr
    assert not (tmp_path / "k2").exists()


def test_the_token_is_selected_in_the_config_file(softhsm: SoftHsm, tmp_path: Path) -> None:
    """`[keystore] backend = "pkcs11"` with the module, token label and PIN file: no HSM
    variable in the environment; `config show` names where the PIN is, never the PIN."""
    e = {k: v for k, v in env().items() if not k.startswith(("SAFESCAN_HSM_", "SAFESCAN_KEY_"))}
    e["COLUMNS"] = "400"
    config = tmp_path / "institution.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "c.db"}"\n'
        f'[keystore]\ndir = "{tmp_path / "ck"}"\nbackend = "pkcs11"\n'
        f'pkcs11_module = "{softhsm.module}"\ntoken_label = "{softhsm.label}"\n'
        f'pin_file = "{softhsm.pin_file}"\n'
    )

    def cli(*args: str, extra: dict[str, str] | None = None) -> Any:
        return institution_run([*args, "--config", str(config)], {**e, **(extra or {})})

    out = cli("init", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    index = json.loads((tmp_path / "ck" / "keys.json").read_text())
    assert index["root"]["store"] == "pkcs11"
    shown = cli("config", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    keystore = json.loads(shown.stdout)["keystore"]
    assert keystore["backend"] == "pkcs11" and keystore["pin_file"] == str(softhsm.pin_file)
    assert USER_PIN not in shown.stdout
    # a wrong PIN file named in the environment overrides the file's: refused, typed
    bad = tmp_path / "bad"
    bad.write_text("nope-nope\n")
    out = cli("serve", extra={"SAFESCAN_INSTITUTION_KEYSTORE__PIN_FILE": str(bad)})
    assert out.returncode == 2 and _error(out) == "hsm_pin_incorrect", out.stderr
    out = cli("root-keys", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["root_keys"] == [
        f"1:{index['root']['public']}"
    ]


def test_without_python_pkcs11_the_backend_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "pkcs11", None)  # import fails as if not installed
    (tmp_path / "m.so").write_bytes(b"")
    with pytest.raises(hsm.HsmUnavailable, match=r"safescan\[hsm\]"):
        hsm.Token(hsm.TokenSettings(tmp_path / "m.so", "t", pin_env="NOPE"))
