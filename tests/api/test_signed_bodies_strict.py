"""(harden, thirteenth sitting) Signed and sealed bodies read strictly; numbers from the
environment in one spelling.

The webhook signatures (Standard Webhooks ``v1``/``v1a``, ``Safescan-Signature``), the event
stream's signatures and the account statement's seal cover *bytes*; the verifiers then parsed
them with Python's lenient ``json``: a key named twice (``"type"``, ``"id"``) was read as its
last value while a first-wins reader (the merchant's JavaScript, ``jq``, a log) saw the first,
so one verified body meant two events; ``NaN`` and lone surrogates passed. Now
``code.strictjson`` reads them: a typed ``WebhookVerificationError`` /
``StatementUnreadable``. ``SAFESCAN_PAY_THREADS`` and the epoch variables were read by
``int()`` (``"1_0"``, ``" 8"``, ``"+8"``, ``"８"`` taken): now ``canonical_int``, a
``ConfigError`` naming the variable.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan.api import account
from safescan.api import standard_webhooks as sw
from safescan.api.errors import ConfigError
from safescan.api.events import (
    WebhookVerificationError,
    sign_event,
    sign_webhook,
    verify_event,
    verify_webhook,
)
from safescan.code.keys import SigningKey

KEY = SigningKey.generate()
SECRET = sw.new_secret()
NOW = int(time.time())

#: bodies a first-wins reader and Python's json read differently, or that are not JSON at all
AMBIGUOUS = [
    b'{"id":"evt_abc","type":"refund.created","type":"payment.succeeded"}',
    b'{"id":"evt_other","id":"evt_abc","type":"payment.succeeded"}',
    b'{"id":"evt_abc","data":{"amount":1,"amount":100000}}',
    b'{"id":"evt_abc","amount":NaN}',
    b'{"id":"evt_abc","note":"\\ud800"}',
]


@pytest.mark.parametrize("body", AMBIGUOUS)
def test_a_signed_webhook_body_naming_a_key_twice_is_refused(body: bytes) -> None:
    headers = sw.headers(KEY, "evt_abc", body, timestamp=NOW, secrets=(SECRET,))
    with pytest.raises(WebhookVerificationError, match="not JSON"):  # before: the last value
        sw.verify(body, headers, trust=KEY.public_key, now=NOW)
    with pytest.raises(WebhookVerificationError, match="not JSON"):
        sw.verify(body, headers, secret=SECRET, now=NOW)
    with pytest.raises(WebhookVerificationError, match="not JSON"):
        verify_webhook(body, sign_webhook(KEY, 1, body, timestamp=NOW), KEY.public_key, now=NOW)


@pytest.mark.parametrize("body", AMBIGUOUS)
def test_a_signed_event_naming_a_key_twice_is_refused(body: bytes) -> None:
    payload = body.decode()
    message = {"payload": payload, "signature": sign_event(KEY, payload), "kid": 1}
    with pytest.raises(WebhookVerificationError):
        verify_event(message, KEY.public_key)
    with pytest.raises(WebhookVerificationError):
        verify_event(json.dumps(message), KEY.public_key)


def test_the_event_message_itself_is_read_strictly() -> None:
    good = json.dumps({"id": "evt_abc", "type": "payment.succeeded"})
    other = json.dumps({"id": "evt_abc", "type": "refund.created"})
    sig, other_sig = sign_event(KEY, good), sign_event(KEY, other)
    assert verify_event({"payload": good, "signature": sig, "kid": 1}, KEY.public_key)
    # two signed payloads in one message: which one is "the" event depends on the reader
    two = (
        f'{{"payload": {json.dumps(other)}, "signature": "{other_sig}",'
        f' "payload": {json.dumps(good)}, "signature": "{sig}", "kid": 1}}'
    )
    with pytest.raises(WebhookVerificationError, match="not a signed safescan event"):
        verify_event(two, KEY.public_key)
    for junk in ("[1, 2]", '"payload"', "null"):
        with pytest.raises(WebhookVerificationError, match="not a signed safescan event"):
            verify_event(junk, KEY.public_key)


@pytest.mark.parametrize("plain", AMBIGUOUS)
def test_a_sealed_statement_naming_a_key_twice_is_refused(plain: bytes) -> None:
    wallet = X25519PrivateKey.generate()
    sealed = account._SUITE.encrypt(plain, wallet.public_key(), info=account._info(7, NOW + 60))
    with pytest.raises(account.StatementUnreadable):  # before: opened, the last value taken
        account.open_statement(sealed, wallet, 7, NOW + 60)
    good = account.seal_statement({"balance": 5}, wallet.public_key().public_bytes_raw(), 7, NOW)
    assert account.open_statement(good, wallet, 7, NOW) == {"balance": 5}


SPELLINGS = ["1_0", " 8", "8 ", "+8", "08", "８", "٨", "x", "", "8.0", "0x8"]


@pytest.mark.parametrize("text", SPELLINGS)
def test_pay_threads_is_read_in_its_one_spelling(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    from safescan.institution.db import pay_threads

    monkeypatch.setenv("SAFESCAN_PAY_THREADS", text)
    with pytest.raises(ConfigError, match="SAFESCAN_PAY_THREADS"):
        pay_threads()
    for out_of_range in ("0", "257", "99999999999"):
        monkeypatch.setenv("SAFESCAN_PAY_THREADS", out_of_range)
        with pytest.raises(ConfigError, match="SAFESCAN_PAY_THREADS"):
            pay_threads()
    monkeypatch.setenv("SAFESCAN_PAY_THREADS", "8")
    assert pay_threads() == 8
    monkeypatch.delenv("SAFESCAN_PAY_THREADS")
    assert pay_threads() == 4


@pytest.mark.parametrize(
    "text", [*SPELLINGS[:7], "x", "", "nan", "inf", "-1", "1e3", "0x8", ".5", "5.", "1.2.3"]
)
def test_the_failover_wait_is_read_plainly_when_a_database_is_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str
) -> None:
    """Before: ``float()`` at import, so ``"x"`` was a ValueError traceback for every command
    importing institution.db (even ``institution init --help``); ``nan``/``inf``/``-1`` were
    taken (a failover never waited out, or waited out for ever)."""
    from safescan.institution.db import Database, failover_wait

    monkeypatch.setenv("SAFESCAN_DB_FAILOVER_WAIT", text)
    with pytest.raises(ConfigError, match="SAFESCAN_DB_FAILOVER_WAIT"):
        failover_wait()
    with pytest.raises(ConfigError, match="SAFESCAN_DB_FAILOVER_WAIT"):
        Database(f"sqlite:///{tmp_path / 'i.db'}")
    monkeypatch.setenv("SAFESCAN_DB_FAILOVER_WAIT", "3601")
    with pytest.raises(ConfigError, match="SAFESCAN_DB_FAILOVER_WAIT"):
        failover_wait()
    for good, value in (("0", 0.0), ("0.5", 0.5), ("12", 12.0)):
        monkeypatch.setenv("SAFESCAN_DB_FAILOVER_WAIT", good)
        assert failover_wait() == value
    monkeypatch.delenv("SAFESCAN_DB_FAILOVER_WAIT")
    assert failover_wait() == 8.0
    db = Database(f"sqlite:///{tmp_path / 'i.db'}")
    try:
        assert db.failover_wait == 8.0
    finally:
        db.engine.dispose()


@pytest.mark.parametrize("text", SPELLINGS)
@pytest.mark.parametrize("name", ["SAFESCAN_EPOCH_SECONDS", "SAFESCAN_EPOCH_RETENTION_SECONDS"])
def test_epoch_variables_are_read_in_their_one_spelling(
    monkeypatch: pytest.MonkeyPatch, name: str, text: str
) -> None:
    from safescan.institution.epochs import ENV_EPOCH_RETENTION, ENV_EPOCH_SECONDS, EpochSchedule

    assert {ENV_EPOCH_SECONDS, ENV_EPOCH_RETENTION} == {
        "SAFESCAN_EPOCH_SECONDS",
        "SAFESCAN_EPOCH_RETENTION_SECONDS",
    }
    monkeypatch.delenv(ENV_EPOCH_SECONDS, raising=False)
    monkeypatch.delenv(ENV_EPOCH_RETENTION, raising=False)
    default = EpochSchedule.from_env()
    for spelled in (text.replace("8", "86400"), text):
        monkeypatch.setenv(name, spelled)
        with pytest.raises(ConfigError, match=name):  # before: int() took " 86400", "+86400"
            EpochSchedule.from_env()
    monkeypatch.setenv(
        name, str(getattr(default, "length" if "EPOCH_SECONDS" in name else "retention"))
    )
    assert EpochSchedule.from_env() == default
