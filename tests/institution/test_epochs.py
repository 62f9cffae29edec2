"""Scheme-key epochs at the institution (real server, SQLite and PostgreSQL).

Dynamic codes are sealed to the current epoch's key; an on-demand rotation (admin API or
`safescan institution rotate-epoch`) starts the next one; each active carrier fetches its KEY
UPDATE; a revoked carrier gets none and cannot open codes of the next epoch; old epochs keep
opening until they retire; a carrier that missed several epochs catches up in one update.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from safescan.api.errors import ConfigError
from safescan.code import DecryptionFailed, UnknownKeyId, decode_text, read_header
from safescan.code.keyupdate import EPOCH_KID_BASE, MAX_LIVE_EPOCHS, epoch_kid, open_key_update
from safescan.institution.epochs import DEFAULT_RETENTION, EpochSchedule
from tests.institution.harness import Carrier, ServerProcess, World, init_db, institution_cli


def current_epoch(world: World) -> int:
    return int(world.http.get("/v1/keys").json()["epoch"])


def rotate(world: World) -> dict[str, Any]:
    r = world.admin("POST", "/v1/admin/scheme-epochs")
    assert r.status_code == 201, r.text
    return dict(r.json())


def update(world: World, carrier: Carrier, from_epoch: int | None = None) -> Any:
    start = carrier.epoch if from_epoch is None else from_epoch
    return world.http.post(f"/v1/carriers/{carrier.serial}/key-update", json={"from_epoch": start})


def kid_of(code: str) -> int:
    return read_header(decode_text(code)).kid


def test_codes_are_sealed_to_the_current_epoch_and_published(world: World) -> None:
    m = world.merchant()
    keys = world.http.get("/v1/keys").json()
    epoch = keys["epoch"]
    (current,) = [k for k in keys["scheme_keys"] if k["current"]]
    assert current["kid"] == epoch_kid(epoch) and current["use"] == "dynamic"
    assert any(k["use"] == "static" and k["current_static"] for k in keys["scheme_keys"])
    assert kid_of(m.order([("X", 1, 100)])["code"]) == epoch_kid(epoch)
    static = m.request("POST", "/v1/merchant/static-codes", {"currency": "EUR"})
    assert static.status_code == 201, static.text
    assert kid_of(static.json()["code"]) < EPOCH_KID_BASE  # printed codes: the static key


def test_rotation_key_update_and_revocation(world: World) -> None:
    m = world.merchant()
    alice = world.carrier(world.customer({"EUR": 10_000}))
    mallory = world.carrier(world.customer({"EUR": 10_000}))
    before = m.order([("Before", 1, 100)])["code"]
    assert alice.open(before) and mallory.open(before)
    # mallory's carrier is reported stolen: revoked, then an epoch starts at once
    assert world.admin("POST", f"/v1/admin/carriers/{mallory.serial}/revoke").status_code == 200
    started = rotate(world)
    assert started["epoch"] == current_epoch(world) and started["kid"] == epoch_kid(
        started["epoch"]
    )
    after = m.order([("After", 1, 100)])["code"]
    assert kid_of(after) == started["kid"]
    # the revoked carrier gets nothing more ...
    refused = update(world, mallory)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "carrier_revoked"
    with pytest.raises(UnknownKeyId):
        mallory.open(after)
    assert mallory.open(before)  # (what it could read before, it still can until retirement)
    # ... while alice's carrier fetches its update and opens the new code
    with pytest.raises(UnknownKeyId):
        alice.open(after)
    r = update(world, alice)
    assert r.status_code == 200 and r.json()["epoch"] == started["epoch"]
    alice.take_key_update(base64.b64decode(r.json()["key_update"]))
    assert alice.open(after).total == 100
    assert alice.open(before)  # the previous epoch still opens until it retires
    # up to date: nothing to send
    again = update(world, alice)
    assert again.status_code == 200 and again.json()["key_update"] is None
    # and the institution pays alice, not mallory
    assert world.pay(after, alice.authorize(after)).status_code == 201


def test_a_carrier_offline_for_several_epochs_catches_up(world: World) -> None:
    m = world.merchant()
    bob = world.carrier(world.customer({"EUR": 10_000}))
    start = bob.epoch
    missed = []
    for _ in range(3):
        rotate(world)
        missed.append(m.order([("Missed", 1, 100)])["code"])
    r = update(world, bob)
    assert r.status_code == 200 and r.json()["epoch"] == start + 3
    bob.take_key_update(base64.b64decode(r.json()["key_update"]))
    assert [e.epoch for e in bob.epoch_keys][-3:] == [start + 1, start + 2, start + 3]
    assert all(bob.open(code) for code in missed)


def test_key_update_requests_are_checked(world: World) -> None:
    carol = world.carrier(world.customer())
    future = update(world, carol, current_epoch(world) + 5)
    assert future.status_code == 400 and future.json()["error"]["param"] == "from_epoch"
    unknown = world.http.post("/v1/carriers/2000000000/key-update", json={"from_epoch": 0})
    assert unknown.status_code == 404
    for bad in ({"from_epoch": -1}, {"from_epoch": "1"}, {}, {"from_epoch": 1, "x": 1}):
        r = world.http.post(f"/v1/carriers/{carol.serial}/key-update", json=bad)
        assert r.status_code == 400, (bad, r.text)
    # the update is sealed to carol's carrier: another carrier cannot open it
    dave = world.carrier(world.customer())
    r = update(world, carol, 0)
    sealed = base64.b64decode(r.json()["key_update"])
    assert dave.transport is not None and dave.provisioned is not None
    with pytest.raises(DecryptionFailed, match="sealed to another carrier"):
        open_key_update(
            sealed, dave.transport, dave.provisioned.trust_store(), carrier_serial=carol.serial
        )


def test_a_carrier_enrolled_without_attestation_gets_no_keys(world: World) -> None:
    """A carrier from before attestation (no attested device on record) is refused, so the
    scheme keys only ever go to attested carriers."""
    from sqlalchemy import delete

    from safescan.institution.db import Database
    from safescan.institution.models import CarrierDevice

    legacy = world.carrier(world.customer())
    database = Database(world.db_url)  # type: ignore[attr-defined]
    try:
        database.write(
            lambda conn: conn.execute(
                delete(CarrierDevice).where(CarrierDevice.serial == legacy.serial)
            )
        )
    finally:
        database.dispose()
    r = update(world, legacy, 0)
    assert r.status_code == 403 and r.json()["error"]["code"] == "attestation_refused"
    assert "without attestation" in r.json()["error"]["message"]


def test_cli_rotation_and_the_live_epoch_cap(world: World) -> None:
    url = world.db_url  # type: ignore[attr-defined]
    keys = world.tmp / "keys"  # type: ignore[attr-defined]
    before = current_epoch(world)
    out = institution_cli("rotate-epoch", "--db", url, "--keys", str(keys))
    assert out.returncode == 0 and f"epoch {before + 1} started" in out.stdout, out.stderr
    assert current_epoch(world) == before + 1  # the API process seals to it at once
    out = institution_cli("rotate-epoch", "--db", url, "--keys", str(keys), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["epoch"] == before + 2, out.stderr
    assert current_epoch(world) == before + 2
    # on-demand rotations stop before carriers would have to keep more keys than they can
    codes = []
    for _ in range(MAX_LIVE_EPOCHS + 2):
        r = world.admin("POST", "/v1/admin/scheme-epochs")
        codes.append(r.status_code)
        if r.status_code == 409:
            assert "epochs are live" in r.json()["error"]["message"]
            break
    assert codes[-1] == 409 and len(codes) < MAX_LIVE_EPOCHS
    assert world.admin("POST", "/v1/admin/scheme-epochs", None).status_code == 409
    unauth = world.http.post("/v1/admin/scheme-epochs")
    assert unauth.status_code == 401


def test_the_schedule_is_validated() -> None:
    EpochSchedule()  # a day, with the default retention
    with pytest.raises(ConfigError, match="retention"):
        EpochSchedule(86400, DEFAULT_RETENTION - 1)
    with pytest.raises(ConfigError, match="at least"):
        EpochSchedule(3600, DEFAULT_RETENTION)  # 170 live keys: more than a carrier keeps
    EpochSchedule(DEFAULT_RETENTION // 10, DEFAULT_RETENTION)


def test_key_update_requests_are_rate_limited_per_client(tmp_path: Path) -> None:
    """Anyone may ask (the answer is sealed to the carrier), so each client address is held
    to the public rate: every update issued costs an audit entry, which no one may flood."""
    db = f"sqlite:///{tmp_path / 'i.db'}"
    token = init_db(db, tmp_path / "keys")
    extra = ["--merchant-rate", "0.5", "--merchant-burst", "5"]
    server = ServerProcess(db, tmp_path / "keys", extra=extra).start()
    w = World(server, token)
    try:
        carrier = w.carrier(w.customer())
        started = time.monotonic()
        codes = [update(w, carrier, 0).status_code for _ in range(20)]
        elapsed = time.monotonic() - started
        assert set(codes) <= {200, 429}, codes
        assert codes[:5] == [200] * 5, codes
        assert codes.count(200) <= 5 + 0.5 * elapsed + 1, (elapsed, codes)
        refused = update(w, carrier, 0)
        if refused.status_code == 429:
            assert refused.json()["error"]["code"] == "rate_limited"
    finally:
        w.close()
        server.stop()
