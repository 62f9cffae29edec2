"""Event and webhook signatures: what the institution signs and how a merchant checks it.

* **Stream signature** (an event sent on the SSE stream): Ed25519 over
  ``"SS1-EVENT\\n" + payload``; check with :func:`verify_event`.
* **Webhook signature** (each delivery attempt), header
  ``Safescan-Signature: t=<unix>,kid=<root kid>,v1=<base64 Ed25519>`` over
  ``"SS1-WEBHOOK\\n" + t + "\\n" + body``; check with :func:`verify_webhook`, which also refuses
  a timestamp older than the tolerance (replay). ``Safescan-Event-Id`` carries the event id:
  receivers de-duplicate on it (delivery is at least once).
* **Standard Webhooks** (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), sent
  with every delivery too: :mod:`safescan.api.standard_webhooks`; :func:`verify_webhook` given
  the request's headers checks that format.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from typing import Any

from safescan.api.encoding import b64e
from safescan.api.errors import InstitutionError
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError, SignatureInvalid
from safescan.code.keys import Signer, VerifyKey

EVENT_CONTEXT = b"SS1-EVENT\n"
WEBHOOK_CONTEXT = b"SS1-WEBHOOK\n"
H_SIGNATURE = "Safescan-Signature"
H_EVENT_ID = "Safescan-Event-Id"
TOLERANCE = 300


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
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeError):
        raise WebhookVerificationError("the event is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        raise WebhookVerificationError("the event has no id")
    return doc


def verify_event(message: str | Mapping[str, Any], trust: TrustStore | VerifyKey) -> dict[str, Any]:
    """Verify one SSE ``data`` message ``{"payload", "signature", "kid"}``; returns the event."""
    try:
        doc = json.loads(message) if isinstance(message, str) else dict(message)
        payload, sig, kid = doc["payload"], doc["signature"], doc.get("kid")
        raw = base64.b64decode(sig, validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise WebhookVerificationError("not a signed safescan event") from None
    if not isinstance(payload, str) or not (kid is None or isinstance(kid, int)):
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
    parts: dict[str, str] = {}
    for item in (signature_header or "").split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            parts[name] = value
    ts, sig = parts.get("t", ""), parts.get("v1", "")
    kid_text = parts.get("kid")
    if not (ts.isascii() and ts.isdigit()) or not sig:
        raise WebhookVerificationError(f"malformed {H_SIGNATURE} header")
    now = int(time.time()) if now is None else now
    if abs(now - int(ts)) > tolerance:
        raise WebhookVerificationError("the webhook timestamp is too old (replayed?)")
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the webhook signature is not base64") from None
    kid = int(kid_text) if kid_text and kid_text.isascii() and kid_text.isdigit() else None
    try:
        _key_for(trust, kid).verify(
            raw, WEBHOOK_CONTEXT + ts.encode() + b"\n" + body, what="webhook signature"
        )
    except SignatureInvalid as exc:
        raise WebhookVerificationError(exc.message) from None
    return _parse_payload(body)
