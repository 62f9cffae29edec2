"""Standard Webhooks (https://www.standardwebhooks.com): how a delivery is signed and checked.

Every delivery carries three headers::

    webhook-id:        the event id (the same on every attempt and on a resend: de-duplicate on it)
    webhook-timestamp: unix seconds when this attempt was signed
    webhook-signature: space-separated "<version>,<base64 signature>" entries

over the signed content ``webhook-id + "." + webhook-timestamp + "." + body`` (the body's exact
bytes). Two versions are sent:

* ``v1a``: Ed25519 with the institution's root key (its public key as ``whpk_<base64>`` or in
  ``GET /v1/keys``), always present;
* ``v1``: HMAC-SHA256 with the endpoint's own secret ``whsec_<base64>`` (shown once to the
  merchant when created or rotated), present once the merchant has a secret; during a rotation's
  overlap window one ``v1`` entry per live secret.

A receiver accepts the delivery when one entry it can check verifies and the timestamp is within
``TOLERANCE`` seconds of its clock. :func:`verify` reads the signature header strictly: entries
separated by exactly one space, each ``<version>,<base64>`` with one comma, the base64 standard,
padded and canonical (one spelling of the bytes), ``v1`` 32 bytes and ``v1a`` 64, no entry
twice; anything else refuses the whole delivery (junk next to a valid signature included).
Well-formed entries of versions it does not know are skipped (the spec's forward rule).
:func:`verify` checks both versions; the ``standardwebhooks`` package's
``Webhook(secret).verify`` checks ``v1`` (it ignores ``v1a`` entries).

The root key signs nothing else without an ``SS1-`` context prefix, and the signed content here
always starts with an event id (``evt_``), so a webhook signature is never a valid signature on
anything else the root key signs.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from safescan.api.encoding import b64_exact
from safescan.api.events import WebhookVerificationError
from safescan.code import strictjson
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError, SignatureInvalid
from safescan.code.keys import Signer, VerifyKey

H_ID = "webhook-id"
H_TIMESTAMP = "webhook-timestamp"
H_SIGNATURE = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
PUBLIC_KEY_PREFIX = "whpk_"
SECRET_BYTES = 32
TOLERANCE = 300
MAX_SIGNATURES = 8  # entries a receiver looks at (more is a malformed header)
#: what a webhook id may be: the signed content must start with it (see the module docstring)
ID_PATTERN = re.compile(r"^evt_[A-Za-z0-9_]{1,60}$")
#: one signature entry: a version, one comma, standard base64 (checked canonical after)
_ENTRY = re.compile(r"(v[0-9]{1,3}[a-z]{0,3}),([A-Za-z0-9+/]{4,4096}={0,2})")
#: the size of each signature version this module checks (others are skipped, if well-formed)
SIGNATURE_BYTES = {"v1": 32, "v1a": 64}


class WebhookIdInvalid(SafescanError, ValueError):
    """An event id that is not a webhook id (``evt_`` + 1-60 of ``[A-Za-z0-9_]``): nothing is
    signed for it (the signed content must start with one; see the module docstring)."""

    code = "webhook_id_invalid"


def new_secret() -> str:
    """A fresh endpoint secret, ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_bytes(secret: str) -> bytes:
    """The key bytes of a ``whsec_`` secret (raises :class:`WebhookVerificationError`)."""
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the webhook secret is not whsec_<base64>") from None
    if len(raw) < 24:
        raise WebhookVerificationError("the webhook secret is too short")
    return raw


def public_key_text(key: VerifyKey) -> str:
    """The Standard Webhooks form of an Ed25519 public key: ``whpk_<base64>``."""
    return PUBLIC_KEY_PREFIX + base64.b64encode(key.raw).decode("ascii")


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    """The bytes every signature covers: ``id.timestamp.body``."""
    if not isinstance(msg_id, str) or not ID_PATTERN.fullmatch(msg_id):
        shown = repr(msg_id)[:80]
        raise WebhookIdInvalid(f"not a webhook id (evt_ + 1-60 letters, digits, _): {shown}")
    return f"{msg_id}.{timestamp}.".encode() + body


def sign_v1a(key: Signer, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1a`` (Ed25519) entry."""
    sig = key.sign(signed_content(msg_id, timestamp, body))
    return "v1a," + base64.b64encode(sig).decode("ascii")


def sign_v1(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1`` (HMAC-SHA256) entry, made by the ``standardwebhooks`` package."""
    signed_content(msg_id, timestamp, body)  # the id rule
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    return Webhook(secret_bytes(secret)).sign(msg_id, when, body.decode("utf-8"))


def headers(
    key: Signer, msg_id: str, body: bytes, *, timestamp: int, secrets: tuple[str, ...] = ()
) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt: ``v1a`` plus one ``v1`` per secret."""
    entries = [sign_v1a(key, msg_id, timestamp, body)]
    entries += [sign_v1(s, msg_id, timestamp, body) for s in secrets]
    return {H_ID: msg_id, H_TIMESTAMP: str(timestamp), H_SIGNATURE: " ".join(entries)}


def _entries(value: str) -> list[tuple[str, bytes]]:
    """The entries of a ``webhook-signature`` header, read strictly (see the module docstring):
    one malformed entry refuses the header."""
    items = value.split(" ")
    if len(items) > MAX_SIGNATURES:
        raise WebhookVerificationError(f"more than {MAX_SIGNATURES} webhook signatures")
    out: list[tuple[str, bytes]] = []
    for item in items:
        m = _ENTRY.fullmatch(item)
        raw = b64_exact(m.group(2), SIGNATURE_BYTES.get(m.group(1))) if m else None
        if m is None or raw is None:
            raise WebhookVerificationError(
                "malformed webhook-signature header: entries are <version>,<base64> (standard,"
                " canonical, of the version's size) separated by one space"
            )
        if (m.group(1), raw) in out:
            raise WebhookVerificationError("a webhook signature entry appears twice")
        out.append((m.group(1), raw))
    return out


def verify(
    body: bytes,
    headers: Mapping[str, str],
    *,
    trust: TrustStore | VerifyKey | None = None,
    secret: str | None = None,
    tolerance: int = TOLERANCE,
    now: int | None = None,
) -> dict[str, Any]:
    """Merchant side: verify a Standard Webhooks delivery; returns the event object.

    ``trust`` (the institution's keys) checks ``v1a``; ``secret`` (the endpoint's ``whsec_``)
    checks ``v1``; one verifying entry suffices. The timestamp must be within ``tolerance``
    seconds (replay), and the body's ``id`` must be the ``webhook-id``."""
    if trust is None and secret is None:
        raise ValueError("give the institution's keys, the endpoint secret or both")
    low = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sig = low.get(H_ID, ""), low.get(H_TIMESTAMP, ""), low.get(H_SIGNATURE, "")
    if not (msg_id and ts and sig):
        raise WebhookVerificationError(
            "the webhook-id, webhook-timestamp and webhook-signature headers are required"
        )
    # plain digits without a leading zero: the one spelling of the signed number (a header
    # "0<t>" or "<t>.0" would verify against a signature over "<t>": a re-timestamped delivery)
    if not (
        ts.isascii() and ts.isdigit() and len(ts) <= 12 and ts == str(int(ts))
    ) or not ID_PATTERN.fullmatch(msg_id):
        raise WebhookVerificationError("malformed webhook-id or webhook-timestamp header")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookVerificationError("the event is not UTF-8 JSON") from None
    now = int(time.time()) if now is None else now
    if abs(now - int(ts)) > tolerance:
        raise WebhookVerificationError("the webhook timestamp is too old or too new (replayed?)")
    content = signed_content(msg_id, int(ts), body)
    keys: list[VerifyKey] = []
    if isinstance(trust, VerifyKey):
        keys = [trust]
    elif trust is not None:
        keys = list(trust.institution_keys.values())
    mac = None
    if secret is not None:  # what the standardwebhooks package computes for this content
        mac = base64.b64decode(sign_v1(secret, msg_id, int(ts), body).partition(",")[2])
    ok = False
    entries = _entries(sig)  # a malformed header is refused before any key is tried
    for version, raw in entries:
        if version == "v1" and mac is not None and hmac.compare_digest(mac, raw):
            ok = True
        elif version == "v1a":
            for k in keys:
                try:
                    k.verify(raw, content, what="webhook signature")
                except SignatureInvalid:
                    continue
                ok = True
                break
        if ok:
            break
    if not ok:
        raise WebhookVerificationError("no webhook signature verifies with the keys given")
    try:
        doc = strictjson.loads(bytes(body))  # a key named twice in the signed bytes: refused
    except (ValueError, UnicodeError):
        raise WebhookVerificationError("the event is not JSON") from None
    if not isinstance(doc, dict) or doc.get("id") != msg_id:
        raise WebhookVerificationError("the event's id is not the webhook-id")
    return doc
