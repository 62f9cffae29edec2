"""Event and webhook signatures: what the institution signs and how a merchant checks it.

* **Stream signature** (an event sent on the SSE stream): Ed25519 over
  ``"SS1-EVENT\\n" + payload``; check with :func:`verify_event`.
* **Webhook signature** (each delivery attempt), header
  ``Safescan-Signature: t=<unix>,kid=<root kid>,v1=<base64 Ed25519>`` over
  ``"SS1-WEBHOOK\\n" + t + "\\n" + body``; check with :func:`verify_webhook`, which also refuses
  a timestamp older than the tolerance (replay), and anything but exactly that form (one of
  each field in that order, ``t`` and ``kid`` plain digits, ``v1`` canonical base64 of 64
  bytes: junk, a second spelling or a repeated field is refused). ``Safescan-Event-Id``
  carries the event id: receivers de-duplicate on it (delivery is at least once).
* **Standard Webhooks** (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), sent
  with every delivery too: :mod:`safescan.api.standard_webhooks`; :func:`verify_webhook` given
  the request's headers checks that format.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from safescan.api.encoding import b64_exact, b64e
from safescan.api.errors import InstitutionError
from safescan.code import strictjson
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError, SignatureInvalid
from safescan.code.keys import Signer, VerifyKey

EVENT_CONTEXT = b"SS1-EVENT\n"
WEBHOOK_CONTEXT = b"SS1-WEBHOOK\n"
H_SIGNATURE = "Safescan-Signature"
H_EVENT_ID = "Safescan-Event-Id"
TOLERANCE = 300
#: the one form of a Safescan-Signature header (what :func:`sign_webhook` writes)
_SIGNATURE = re.compile(r"t=(0|[1-9][0-9]{0,11}),kid=(0|[1-9][0-9]{0,8}),v1=([A-Za-z0-9+/=]{88})")


class WebhookVerificationError(InstitutionError):
    """A webhook or stream event does not verify (forged, altered or replayed)."""

    code = "webhook_invalid"
    status = 400


def sign_event(key: Signer, payload: str) -> str:
    """The stream signature of an event payload (base64)."""
    return b64e(key.sign(EVENT_CONTEXT + payload.encode()))


def _key_for(trust: TrustStore | VerifyKey, kid: int | None) -> VerifyKey:
    if isinstance(trust, VerifyKey):
        return trust
    if kid is None:
        raise WebhookVerificationError("the signature names no institution key id")
    try:
        return trust.institution_key(kid)
    except SafescanError as exc:
        raise WebhookVerificationError(exc.message) from None


def _parse_payload(payload: bytes | str) -> dict[str, Any]:
    # strictly: a key named twice in the signed bytes (Python's json took the last "id" or
    # "type", a first-wins reader the first) is refused, as are NaN and lone surrogates
    raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    try:
        doc = strictjson.loads(raw)
    except (ValueError, UnicodeError):
        raise WebhookVerificationError("the event is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        raise WebhookVerificationError("the event has no id")
    return doc


def verify_event(message: str | Mapping[str, Any], trust: TrustStore | VerifyKey) -> dict[str, Any]:
    """Verify one SSE ``data`` message ``{"payload", "signature", "kid"}``; returns the event."""
    try:
        doc: object = (
            strictjson.loads(message.encode("utf-8", "surrogatepass"))
            if isinstance(message, str)
            else dict(message)
        )
        if not isinstance(doc, dict):
            raise TypeError("not an object")
        payload, sig, kid = doc["payload"], doc["signature"], doc.get("kid")
    except (ValueError, KeyError, TypeError):
        raise WebhookVerificationError("not a signed safescan event") from None
    raw = b64_exact(sig, 64) if isinstance(sig, str) else None  # one spelling, 64 bytes
    if raw is None or not isinstance(payload, str) or not (kid is None or type(kid) is int):
        raise WebhookVerificationError("not a signed safescan event")
    try:
        _key_for(trust, kid).verify(raw, EVENT_CONTEXT + payload.encode(), what="event signature")
    except SignatureInvalid as exc:
        raise WebhookVerificationError(exc.message) from None
    return _parse_payload(payload)


def sign_webhook(key: Signer, kid: int, body: bytes, *, timestamp: int) -> str:
    """The ``Safescan-Signature`` header value for ``body`` at ``timestamp``."""
    sig = key.sign(WEBHOOK_CONTEXT + str(timestamp).encode() + b"\n" + body)
    return f"t={timestamp},kid={kid},v1={b64e(sig)}"


def verify_webhook(
    body: bytes,
    signature_header: str | Mapping[str, str],
    trust: TrustStore | VerifyKey,
    *,
    tolerance: int = TOLERANCE,
    now: int | None = None,
) -> dict[str, Any]:
    """Merchant side: verify a webhook's signature and freshness; returns the event object.

    ``signature_header`` is the ``Safescan-Signature`` value, or the request's headers: then
    the Standard Webhooks ``v1a`` signature is checked when present
    (:func:`safescan.api.standard_webhooks.verify`), else ``Safescan-Signature``."""
    if not isinstance(signature_header, str):
        low = {k.lower(): v for k, v in signature_header.items()}
        if "webhook-signature" in low:
            from safescan.api.standard_webhooks import verify  # imports this module

            return verify(body, low, trust=trust, tolerance=tolerance, now=now)
        signature_header = low.get(H_SIGNATURE.lower(), "")
    m = _SIGNATURE.fullmatch(signature_header or "")
    raw = b64_exact(m.group(3), 64) if m else None
    if m is None or raw is None:
        raise WebhookVerificationError(
            f"malformed {H_SIGNATURE} header (t=<unix>,kid=<id>,v1=<base64 of 64 bytes>)"
        )
    ts, kid = m.group(1), int(m.group(2))
    now = int(time.time()) if now is None else now
    if abs(now - int(ts)) > tolerance:
        raise WebhookVerificationError("the webhook timestamp is too old (replayed?)")
    try:
        _key_for(trust, kid).verify(
            raw, WEBHOOK_CONTEXT + ts.encode() + b"\n" + body, what="webhook signature"
        )
    except SignatureInvalid as exc:
        raise WebhookVerificationError(exc.message) from None
    return _parse_payload(body)
