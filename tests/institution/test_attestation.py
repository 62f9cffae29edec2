"""Enrollment takes only keys a genuine, attested carrier generated (over real HTTP).

Attacks, each refused with 403 ``attestation_refused`` and nothing changed (no carrier, the
token still unspent, so the genuine carrier can enroll with it afterwards):

* no attestation at all (software keys, as every enrollment was before);
* a self-signed attestation: the attacker's own "factory" key (under a trusted id, under an
  unknown id) or an attestation certificate signed by the attestation key itself;
* another card's attestation: a genuine chip's statement presented with software keys, or its
  certificate with a statement the attacker signed;
* a replayed statement (a genuine one, made for an earlier enrollment); a chip enrolling again
  revokes its earlier carrier (one active carrier per chip);
* an attestation certificate from a revoked manufacturer key, an expired one, or a certificate
  of another role.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan.carrier.client import CarrierClient, GeneratedKeys
from safescan.carrier.device import Card
from safescan.carrier.eeprom import MemoryStorage
from safescan.carrier.factory import Factory
from safescan.carrier.testing import software_attestation
from safescan.carrier.transport.loopback import LoopbackTransport
from safescan.code import Role, SigningKey
from safescan.code.attestation import (
    AttestationStatement,
    CarrierModel,
    device_subject,
    enrollment_challenge,
    issue_attestation_certificate,
    statement_message,
)
from safescan.code.certs import issue_certificate
from safescan.code.keys import VerifyKey
from tests.institution.harness import FACTORY, World, b64, institution_cli


def token_for(world: World, cid: str) -> str:
    r = world.admin("POST", f"/v1/admin/customers/{cid}/enrollment-tokens", {})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def software_keys() -> tuple[bytes, bytes]:
    return (
        SigningKey.generate().public_key.raw,
        X25519PrivateKey.generate().public_key().public_bytes_raw(),
    )


def enroll(
    world: World, token: str, signing: bytes, transport: bytes, attestation: bytes | None
) -> httpx.Response:
    body: dict[str, Any] = {
        "token": token,
        "signing_public_key": b64(signing),
        "transport_public_key": b64(transport),
    }
    if attestation is not None:
        body["attestation"] = b64(attestation)
    return world.http.post("/v1/carriers/enroll", json=body)


def carriers_of(world: World, cid: str) -> int:
    return len(world.admin("GET", f"/v1/admin/customers/{cid}").json()["carriers"])


def genuine_chip(factory: Factory, challenge: bytes) -> GeneratedKeys:
    """A real (emulated) carrier chip, attested at ``factory``, generating its keys."""
    card = Card(MemoryStorage())
    card.power_on()
    client = CarrierClient(LoopbackTransport(card))
    client.power_on()
    factory.attest(client)
    client.open_session()
    return client.generate_keys(challenge)


def statement_signed_by(
    attestation_key: SigningKey,
    cert: Any,
    device_id: bytes,
    signing: bytes,
    transport: bytes,
    challenge: bytes,
) -> bytes:
    model = CarrierModel.PLAIN
    message = statement_message(device_id, model, challenge, signing, transport)
    return AttestationStatement(
        device_id,
        model,
        challenge,
        VerifyKey(signing),
        transport,
        attestation_key.sign(message),
        cert,
    ).to_bytes()


def refused(r: httpx.Response, fragment: str) -> None:
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["code"] == "attestation_refused", error
    assert fragment in error["message"], error["message"]


def test_software_keys_without_attestation_are_refused_and_change_nothing(world: World) -> None:
    cid = world.customer()
    token = token_for(world, cid)
    signing, transport = software_keys()
    refused(enroll(world, token, signing, transport, None), "attestation statement")
    empty = enroll(world, token, signing, transport, b"")
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "attestation"
    refused(enroll(world, token, signing, transport, b"\xa0"), "attestation")
    assert carriers_of(world, cid) == 0
    # the token was not spent: the genuine carrier enrolls with it
    keys = genuine_chip(FACTORY, enrollment_challenge(token))
    r = enroll(
        world, token, keys.signing_public.raw, keys.transport_public, keys.statement.to_bytes()
    )
    assert r.status_code == 201, r.text
    assert r.json()["model"] == "plain" and r.json()["key_update"]
    assert carriers_of(world, cid) == 1


def test_self_signed_attestations_are_refused(world: World) -> None:
    cid = world.customer()
    token = token_for(world, cid)
    challenge = enrollment_challenge(token)
    signing, transport = software_keys()
    # the attacker's own factory, claiming the trusted factory's key id
    impostor = Factory(SigningKey.generate(), FACTORY.kid)
    attempt = software_attestation(impostor, signing, transport, challenge)
    refused(enroll(world, token, signing, transport, attempt), "does not verify")
    # ... or a key id the institution never heard of
    unknown = Factory.generate(kid=4242)
    attempt = software_attestation(unknown, signing, transport, challenge)
    refused(enroll(world, token, signing, transport, attempt), "does not verify")
    # a certificate the attestation key signed for itself
    own = SigningKey.generate()
    device = secrets.token_bytes(8)
    cert = issue_attestation_certificate(
        own,
        FACTORY.kid,
        serial=1,
        device_id=device,
        model=CarrierModel.PLAIN,
        attestation_key=own.public_key,
        not_before=0,
        not_after=2**33,
    )
    attempt = statement_signed_by(own, cert, device, signing, transport, challenge)
    refused(enroll(world, token, signing, transport, attempt), "does not verify")
    assert carriers_of(world, cid) == 0


def test_another_cards_attestation_is_refused(world: World) -> None:
    cid = world.customer()
    token = token_for(world, cid)
    challenge = enrollment_challenge(token)
    genuine = genuine_chip(FACTORY, challenge)
    signing, transport = software_keys()
    statement = genuine.statement
    # the genuine statement, presented with the attacker's software keys
    refused(enroll(world, token, signing, transport, statement.to_bytes()), "other keys")
    # the genuine statement edited to name the attacker's keys (its signature no longer fits)
    for change in ({"signing_public": VerifyKey(signing)}, {"transport_public": transport}):
        forged = dataclasses.replace(statement, **change)
        refused(
            enroll(
                world,
                token,
                forged.signing_public.raw,
                forged.transport_public,
                forged.to_bytes(),
            ),
            "does not verify",
        )
    # the genuine chip's certificate, with a statement the attacker signed over his keys
    attacker = SigningKey.generate()
    attempt = statement_signed_by(
        attacker, statement.certificate, statement.device_id, signing, transport, challenge
    )
    refused(enroll(world, token, signing, transport, attempt), "does not verify")
    assert carriers_of(world, cid) == 0


def test_a_replayed_statement_is_refused_and_a_reenrolled_chip_supersedes(world: World) -> None:
    cid = world.customer()
    first = token_for(world, cid)
    keys = genuine_chip(FACTORY, enrollment_challenge(first))
    body = (keys.signing_public.raw, keys.transport_public, keys.statement.to_bytes())
    assert enroll(world, first, *body).status_code == 201
    # the same statement (captured on the way) with a new token: made for another enrollment
    second = token_for(world, cid)
    refused(enroll(world, second, *body), "another enrollment")
    # with the first token again: the token is spent
    again = enroll(world, first, *body)
    assert again.status_code == 401, again.text
    # a chip that enrolls again (say its first bundle never reached it): fine, but its earlier
    # carrier is revoked, so one chip never has two active carriers (not even an extracted one)
    card = Card(MemoryStorage())
    card.power_on()
    client = CarrierClient(LoopbackTransport(card))
    client.power_on()
    FACTORY.attest(client)
    client.open_session()
    one = client.generate_keys(enrollment_challenge(second))
    r1 = enroll(
        world, second, one.signing_public.raw, one.transport_public, one.statement.to_bytes()
    )
    assert r1.status_code == 201, r1.text
    third = token_for(world, cid)
    client.open_session()
    two = client.generate_keys(enrollment_challenge(third))  # same chip, fresh keys
    r2 = enroll(
        world, third, two.signing_public.raw, two.transport_public, two.statement.to_bytes()
    )
    assert r2.status_code == 201, r2.text
    carriers = {
        c["serial"]: c["status"]
        for c in world.admin("GET", f"/v1/admin/customers/{cid}").json()["carriers"]
    }
    assert carriers[r1.json()["carrier_serial"]] == "revoked"
    assert carriers[r2.json()["carrier_serial"]] == "active"
    assert len(carriers) == 3
    revoked = world.http.post(
        f"/v1/carriers/{r1.json()['carrier_serial']}/key-update", json={"from_epoch": 0}
    )
    assert revoked.status_code == 403  # the superseded carrier gets no more keys


def test_untrusted_revoked_expired_or_wrong_role_certificates_are_refused(
    world: World,
) -> None:
    url = world.db_url  # type: ignore[attr-defined]
    # a random id above the fixed ones of this module (77, the never-trusted 4242): drawn 4242,
    # trusted and revoked here, it turned the other test's "does not verify" into "not trusted"
    other = Factory.generate(kid=5000 + secrets.randbelow(56000))
    cid = world.customer()
    token = token_for(world, cid)
    challenge = enrollment_challenge(token)
    signing, transport = software_keys()
    # not trusted yet
    attempt = software_attestation(other, signing, transport, challenge)
    refused(enroll(world, token, signing, transport, attempt), "not trusted")
    # trusted: accepted
    added = institution_cli("manufacturer", "add", "--db", url, other.pin(), "--name", "Other")
    assert added.returncode == 0, added.stderr
    assert enroll(world, token, signing, transport, attempt).status_code == 201
    # revoked: refused from now on
    revoked = institution_cli("manufacturer", "revoke", "--db", url, str(other.kid), "--json")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout) == {"kid": other.kid, "status": "revoked"}
    listed = institution_cli("manufacturer", "list", "--db", url, "--json")
    assert f'"kid": {other.kid}' in listed.stdout and '"revoked"' in listed.stdout
    token = token_for(world, cid)
    signing, transport = software_keys()
    attempt = software_attestation(other, signing, transport, enrollment_challenge(token))
    refused(enroll(world, token, signing, transport, attempt), "not trusted")
    readd = institution_cli("manufacturer", "add", "--db", url, other.pin(), "--json")
    assert readd.returncode == 2  # a revoked id stays revoked
    assert "not reused" in json.loads(readd.stdout)["error"]["message"]
    # an expired attestation certificate from the trusted factory
    challenge = enrollment_challenge(token)
    key = SigningKey.generate()
    device = secrets.token_bytes(8)
    expired = issue_attestation_certificate(
        FACTORY.key,
        FACTORY.kid,
        serial=5,
        device_id=device,
        model=CarrierModel.PLAIN,
        attestation_key=key.public_key,
        not_before=1,
        not_after=2,
    )
    attempt = statement_signed_by(key, expired, device, signing, transport, challenge)
    refused(enroll(world, token, signing, transport, attempt), "not valid at this time")
    # a certificate of another role (a carrier certificate) from the trusted factory's key
    wrong_role = issue_certificate(
        FACTORY.key,
        FACTORY.kid,
        serial=6,
        role=Role.CARRIER,
        subject=device_subject(device, CarrierModel.PLAIN),
        public_key=key.public_key,
        not_before=0,
        not_after=2**33,
    )
    attempt = statement_signed_by(key, wrong_role, device, signing, transport, challenge)
    refused(enroll(world, token, signing, transport, attempt), "not a attestation")
    assert carriers_of(world, cid) == 1
