"""The administrator's typed API-key methods (``AdminClient.api_keys``) and ``safescan
institution apikey ...`` against a real server (SQLite and PostgreSQL).

A key made by the administrator works for its merchant and only within its scopes; listing
never shows a secret; rotation hands out a new key; revocation stops the key at once. Refused:
a made-up merchant (404), ids that would change the request's path (``..``, ``/``, ``?``,
``%2f``: refused before anything is sent), a made-up or malformed key id, another merchant's
key, a wrong administrator token, the same Idempotency-Key again (no second key).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from safescan.api.errors import ApiKeyAlreadyCreated, InvalidRequest, NotFound, Unauthenticated
from safescan.client import AdminClient
from tests.institution.harness import World


def bearer(world: World, key: str, path: str = "/v1/merchant/orders") -> int:
    return world.http.get(path, headers={"Authorization": f"Bearer {key}"}).status_code


def test_admin_creates_lists_rotates_and_revokes_a_merchants_key(world: World) -> None:
    m = world.merchant("Key Desk Shop")
    other = world.merchant("Other Shop")
    admin = world.admin_api
    made = admin.api_keys.create(m.merchant_id, ["orders:read"], name="shop")
    assert made.key.startswith("sk_live_") and made.info.merchant_id == m.merchant_id
    assert bearer(world, made.key) == 200
    assert bearer(world, made.key, "/v1/merchant/settlement?date=2026-01-01") == 403  # scope
    listed = admin.api_keys.list(m.merchant_id)
    assert [k.id for k in listed.api_keys] == [made.info.id]
    assert made.key not in json.dumps(listed.to_json())
    assert admin.api_keys.list(other.merchant_id).api_keys == ()
    with pytest.raises(NotFound):  # another merchant's key: not found there
        admin.api_keys.revoke(other.merchant_id, made.info.id)
    rotated = admin.api_keys.rotate(m.merchant_id, made.info.prefix, 0)
    assert rotated.key != made.key and rotated.previous is not None
    assert bearer(world, rotated.key) == 200
    assert bearer(world, made.key) == 401  # no grace: the old key stopped
    revoked = admin.api_keys.revoke(m.merchant_id, rotated.info.id)
    assert revoked.state == "revoked" and bearer(world, rotated.key) == 401
    # the same Idempotency-Key again makes no second key
    again = admin.api_keys.create(m.merchant_id, ["orders:read"], idempotency_key="k-1")
    with pytest.raises(ApiKeyAlreadyCreated):
        admin.api_keys.create(m.merchant_id, ["orders:read"], idempotency_key="k-1")
    assert len(admin.api_keys.list(m.merchant_id).api_keys) == 3
    assert bearer(world, again.key) == 200


@pytest.mark.parametrize(
    "merchant", ["..", "../customers", "M1/../../customers", "M1?x=1", "M1%2f", "", "M" * 41]
)
def test_ids_that_would_change_the_path_are_refused_before_sending(
    world: World, merchant: str
) -> None:
    with AdminClient("https://127.0.0.1:9", "adm_x") as nowhere:  # nothing listens there
        for call in (
            lambda: nowhere.api_keys.create(merchant, ["orders:read"]),
            lambda: nowhere.api_keys.list(merchant),
            lambda: nowhere.api_keys.revoke(merchant, "a" * 16),
        ):
            with pytest.raises(InvalidRequest):
                call()


def test_unknown_merchants_keys_and_tokens_are_typed_errors(world: World) -> None:
    m = world.merchant("Typed Errors Shop")
    admin = world.admin_api
    with pytest.raises(NotFound):
        admin.api_keys.create("M9999999999", ["orders:read"])
    with pytest.raises(NotFound):
        admin.api_keys.revoke(m.merchant_id, "a" * 16)
    for bad in ("", "sk_live_", "../x", "A" * 16, "a" * 17):
        with pytest.raises(InvalidRequest):
            admin.api_keys.revoke(m.merchant_id, bad)
    with pytest.raises(InvalidRequest):
        admin.api_keys.create(m.merchant_id, ["no:such:scope"])
    with (
        AdminClient(world.server.base_url, "adm_wrong") as wrong,
        pytest.raises(Unauthenticated),
    ):
        wrong.api_keys.list(m.merchant_id)
    assert world.admin_api.api_keys.list(m.merchant_id).api_keys == ()


def test_the_cli_uses_the_typed_methods(world: World, tmp_path: Path) -> None:
    m = world.merchant("CLI Key Shop")
    token = tmp_path / "admin.token"
    token.write_text(world.admin_token + "\n")
    env = {
        **os.environ,
        "SAFESCAN_INSTITUTION_URL": world.server.base_url,
        "SAFESCAN_TLS_CA": str(world.server.ca),
        "SAFESCAN_ADMIN_TOKEN": "",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "safescan", "institution", "apikey", *args,
             "--merchant", m.merchant_id, "--admin-token-file", str(token), "--json"],
            capture_output=True, text=True, timeout=120, check=False, env=env,
        )  # fmt: skip

    made = cli("create", "--scope", "orders:read")
    assert made.returncode == 0, made.stdout + made.stderr
    key = json.loads(made.stdout)["key"]
    assert bearer(world, key) == 200
    listed = cli("list")
    assert listed.returncode == 0 and key not in listed.stdout
    key_id = json.loads(listed.stdout)["api_keys"][0]["id"]
    assert cli("revoke", key_id).returncode == 0
    assert bearer(world, key) == 401
    bad = cli("revoke", "not-a-key")
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"]["code"] == "invalid_request"
