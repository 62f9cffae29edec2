"""A webhook signature is accepted only in exactly the form the institution writes it (redteam,
tenth sitting: the merchant-side verifiers decoded base64 with ``validate=True`` only, so a
second spelling of the same signature bytes verified (non-zero padding bits), and junk next to
a valid entry (a trailing entry, an extra separator, a repeated entry) was skipped, not
refused). Every malformation below is refused by both merchant verifiers
(:func:`safescan.api.standard_webhooks.verify` and :func:`safescan.api.events.verify_webhook`),
next to a valid signature as alone; the untouched headers still verify. Pure functions: no
server, no network."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import pytest

from safescan.api import standard_webhooks as sw
from safescan.api.encoding import b64_exact
from safescan.api.events import (
    WebhookVerificationError,
    sign_event,
    sign_webhook,
    verify_event,
    verify_webhook,
)
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError
from safescan.code.keys import SigningKey

KEY = SigningKey.generate()
SECRET = sw.new_secret()
BODY = json.dumps({"id": "evt_abc", "type": "payment.succeeded"}).encode()
NOW = int(time.time())


def _respell(b64: str) -> str:
    """Another spelling of the same bytes: the last data character's unused low bits set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    pad = len(b64) - len(b64.rstrip("="))
    i = len(b64) - pad - 1
    spare = {1: 0b11, 2: 0b1111}[pad]  # bits past the data in the last character
    other = alphabet[alphabet.index(b64[i]) ^ spare]
    respelled = b64[:i] + other + b64[i + 1 :]
    assert respelled != b64 and base64.b64decode(respelled) == base64.b64decode(b64)
    return respelled


def _headers() -> dict[str, str]:
    return sw.headers(KEY, "evt_abc", BODY, timestamp=NOW, secrets=(SECRET,))


def _std_malformations() -> dict[str, str]:
    """``webhook-signature`` values, each holding a valid entry or the valid bytes."""
    v1a, v1 = _headers()[sw.H_SIGNATURE].split(" ")
    a_sig, m_sig = v1a.partition(",")[2], v1.partition(",")[2]
    return {
        "v1a respelled": "v1a," + _respell(a_sig),
        "v1 respelled": "v1," + _respell(m_sig),
        "v1a respelled beside v1": f"v1a,{_respell(a_sig)} {v1}",
        "trailing junk entry": f"{v1a} {v1} junk",
        "trailing empty entry": f"{v1a} {v1} v1a,",
        "trailing garbage in the base64": f"{v1a}AAAA",
        "extra padding": f"{v1a}=",
        "padding removed": v1a.rstrip("="),
        "comma after the base64": f"{v1a},",
        "second comma": f"v1a,,{a_sig}",
        "two spaces": f"{v1a}  {v1}",
        "leading space": f" {v1a}",
        "trailing space": f"{v1a} ",
        "tab separator": f"{v1a}\t{v1}",
        "newline separator": f"{v1a}\n{v1}",
        "comma separator": f"{v1a},{v1}",
        "the same entry twice": f"{v1a} {v1a}",
        "url-safe alphabet": "v1a," + a_sig.replace("+", "-").replace("/", "_")
        if ("+" in a_sig or "/" in a_sig)
        else f"v1a,{a_sig}-",
        "v1 of 33 bytes": f"{v1a} v1," + base64.b64encode(base64.b64decode(m_sig) + b"\0").decode(),
        "v1a of 65 bytes": "v1a," + base64.b64encode(base64.b64decode(a_sig) + b"\0").decode(),
        "upper-case version": f"V1A,{a_sig}",
        "version with junk": f"v1a;,{a_sig}",
        "unknown version, not base64": f"{v1a} v2,@@@@",
    }


@pytest.mark.parametrize("case", sorted(_std_malformations()))
def test_standard_webhooks_signature_junk_is_refused(case: str) -> None:
    bad = dict(_headers(), **{sw.H_SIGNATURE: _std_malformations()[case]})
    verifiers: list[Callable[[], object]] = [
        lambda: sw.verify(BODY, bad, trust=KEY.public_key, secret=SECRET, now=NOW),
        lambda: sw.verify(BODY, bad, trust=KEY.public_key, now=NOW),
        lambda: sw.verify(BODY, bad, secret=SECRET, now=NOW),
        lambda: verify_webhook(BODY, bad, TrustStore({1: KEY.public_key}), now=NOW),
    ]
    for check in verifiers:
        with pytest.raises(WebhookVerificationError):
            check()


def test_the_exact_headers_still_verify_and_unknown_well_formed_versions_are_skipped() -> None:
    h = _headers()
    assert sw.verify(BODY, h, trust=KEY.public_key, secret=SECRET, now=NOW)["id"] == "evt_abc"
    assert sw.verify(BODY, h, secret=SECRET, now=NOW)["id"] == "evt_abc"
    assert verify_webhook(BODY, h, KEY.public_key, now=NOW)["id"] == "evt_abc"
    future = "v2," + base64.b64encode(b"\1" * 48).decode()  # the spec: skip what you do not know
    later = dict(h, **{sw.H_SIGNATURE: f"{h[sw.H_SIGNATURE]} {future}"})
    assert sw.verify(BODY, later, trust=KEY.public_key, now=NOW)["id"] == "evt_abc"
    with pytest.raises(WebhookVerificationError):  # ... but it never verifies on its own
        sw.verify(BODY, dict(h, **{sw.H_SIGNATURE: future}), trust=KEY.public_key, now=NOW)


def _legacy_malformations() -> dict[str, str]:
    good = sign_webhook(KEY, 1, BODY, timestamp=NOW)
    sig = good.partition("v1=")[2]
    return {
        "v1 respelled": f"t={NOW},kid=1,v1={_respell(sig)}",
        "trailing field": f"{good},v2=x",
        "trailing comma": f"{good},",
        "t given twice": f"t={NOW},{good}",
        "v1 given twice": f"{good},v1={sig}",
        "fields reordered": f"kid=1,t={NOW},v1={sig}",
        "space after a comma": f"t={NOW}, kid=1, v1={sig}",
        "kid missing": f"t={NOW},v1={sig}",
        "t with a leading zero": f"t=0{NOW},kid=1,v1={sig}",
        "kid with a leading zero": f"t={NOW},kid=01,v1={sig}",
        "padding removed": good.rstrip("="),
        "extra padding": f"{good}=",
        "garbage after the base64": f"{good}AAAA",
        "a newline at the end": f"{good}\n",
        "upper-case names": f"T={NOW},KID=1,V1={sig}",
    }


@pytest.mark.parametrize("case", sorted(_legacy_malformations()))
def test_safescan_signature_junk_is_refused(case: str) -> None:
    trust = TrustStore({1: KEY.public_key})
    assert verify_webhook(BODY, sign_webhook(KEY, 1, BODY, timestamp=NOW), trust, now=NOW)
    bad = _legacy_malformations()[case]
    with pytest.raises(WebhookVerificationError):
        verify_webhook(BODY, bad, trust, now=NOW)
    with pytest.raises(WebhookVerificationError):  # as a request's headers too
        verify_webhook(BODY, {"Safescan-Signature": bad}, trust, now=NOW)


def test_a_stream_event_signature_has_one_spelling() -> None:
    payload = BODY.decode()
    sig = sign_event(KEY, payload)
    assert verify_event({"payload": payload, "signature": sig, "kid": 1}, KEY.public_key)
    for bad_sig, kid in ((_respell(sig), 1), (sig + "=", 1), (sig.rstrip("="), 1), (sig, True)):
        with pytest.raises(WebhookVerificationError):
            verify_event({"payload": payload, "signature": bad_sig, "kid": kid}, KEY.public_key)


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        "evt_",
        "evt_abc\n",
        "evt_a.b",
        "evt_a b",
        "SS1-CERT",
        "EVT_abc",
        "evt_" + "a" * 61,
        "évt_a",
    ],
)
def test_a_malformed_event_id_is_a_typed_error_before_anything_is_signed(bad_id: str) -> None:
    with pytest.raises(sw.WebhookIdInvalid) as caught:
        sw.headers(KEY, bad_id, BODY, timestamp=NOW, secrets=(SECRET,))
    assert isinstance(caught.value, SafescanError) and caught.value.code == "webhook_id_invalid"
    with pytest.raises(WebhookVerificationError):  # and a receiver refuses it as webhook-id
        sw.verify(BODY, dict(_headers(), **{sw.H_ID: bad_id}), trust=KEY.public_key, now=NOW)


def test_b64_exact_takes_one_spelling_only() -> None:
    raw = bytes(range(64))
    text = base64.b64encode(raw).decode()
    assert b64_exact(text) == raw and b64_exact(text, 64) == raw
    assert b64_exact(text, 63) is None
    for other in (_respell(text), text + "=", text.rstrip("="), " " + text, text + "\n", "é"):
        assert b64_exact(other) is None, other
