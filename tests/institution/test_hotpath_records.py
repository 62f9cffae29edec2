"""A payment's records made before its transaction are the records it made before (issue 20,
part B): the audit entry written out ahead (``audit.prepare_entry``) hashes and stores exactly
what ``audit.entry_params`` did inside the transaction, and the payer pseudonym (one
``hmac.digest`` call) is the HMAC it was, on many inputs, ASCII or not."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import string
from typing import Any

from safescan.api.obslog import reset_request_id, set_request_id
from safescan.institution import audit
from safescan.institution.util import canonical_json


def _old_entry_params(
    chain: int, seq: int, prev_hash: str, at: int, actor: str, action: str, entity: str,
    data: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The entry's parameters as the transaction computed them before (the formula of
    docs/protocol.md: SHA-256 of the canonical JSON [prev_hash, chain, seq, at, actor, action,
    entity, data])."""
    text = canonical_json(audit.stamped(data))
    doc = json.dumps(
        [prev_hash, chain, seq, at, actor, action, entity, text], separators=(",", ":")
    )
    return {
        "a_chain": chain,
        "a_seq": seq,
        "a_at": at,
        "a_actor": actor,
        "a_action": action,
        "a_entity": entity,
        "a_data": text,
        "a_prev_hash": prev_hash,
        "a_hash": hashlib.sha256(doc.encode()).hexdigest(),
    }


def _text(rng: random.Random) -> str:
    return "".join(rng.choices(string.printable + "éü東\u2028\"\\'", k=rng.randrange(0, 12)))


def test_prepared_entries_hash_and_store_what_the_transaction_did() -> None:
    rng = random.Random(16)
    for i in range(2000):
        data: dict[str, Any] = {
            _text(rng): rng.choice([rng.randrange(-(2**40), 2**40), _text(rng), None, [1, "a"]])
            for _ in range(rng.randrange(0, 6))
        }
        at, actor, entity = rng.randrange(0, 2**32), _text(rng), "order:m:" + _text(rng)
        chain, seq, prev = rng.randrange(16), rng.randrange(1, 10**9), rng.randbytes(32).hex()
        token = set_request_id(rng.choice([None, "req_" + str(i)]))
        try:
            entry = audit.prepare_entry(
                at=at, actor=actor, action="payment.create", entity=entity, data=data
            )
            want = _old_entry_params(chain, seq, prev, at, actor, "payment.create", entity, data)
        finally:
            reset_request_id(token)
        got = entry.params(chain, seq, prev)
        assert got == want
        assert got["a_hash"] == audit.entry_hash(
            prev, chain, seq, at, actor, "payment.create", entity, got["a_data"]
        )


def test_the_request_id_is_stamped_when_the_entry_is_prepared() -> None:
    token = set_request_id("req_prepared")
    try:
        entry = audit.prepare_entry(at=1, actor="a", action="x", entity="e", data={"k": 1})
    finally:
        reset_request_id(token)
    assert json.loads(entry.data) == {"k": 1, "request_id": "req_prepared"}
    plain = audit.prepare_entry(at=1, actor="a", action="x", entity="e", data={"k": 1})
    assert json.loads(plain.data) == {"k": 1}


def test_pseudonyms_are_the_hmac_they_were() -> None:
    from safescan.institution.keystore import InstitutionKeys

    rng = random.Random(24)
    for _ in range(500):
        secret = rng.randbytes(32)
        mid, cid = _text(rng) or "m", _text(rng) or "c"
        mac = hmac.new(secret, b"pseudonym\0" + mid.encode() + b"\0", "sha256")
        mac.update(cid.encode())
        keys = object.__new__(InstitutionKeys)
        keys.secret = secret
        assert keys.pseudonym(mid, cid) == "p_" + mac.hexdigest()[:24]
