"""Merchant request signatures: RFC 9421 HTTP Message Signatures with an RFC 9530
Content-Digest, through the maintained ``http-message-signatures`` library.

The merchant holds an Ed25519 signing key; the institution stores only its public key. A signed
request carries::

    Content-Digest:   sha-256=:<base64 SHA-256 of the body>:      (also for an empty body)
    Idempotency-Key:  optional, 1-255 printable ASCII; covered by the signature when sent
    Signature-Input:  sig1=("@method" "@path" "@query" "content-digest" ["idempotency-key"]);
                      created=<unix s>;keyid="<merchant id>";alg="ed25519";
                      nonce="<16-64 of [A-Za-z0-9_-]>";tag="safescan-merchant"
    Signature:        sig1=:<base64 Ed25519 signature over the RFC 9421 signature base>:

The institution refuses a signature that does not cover ``@method``, ``@path``, ``@query`` and
``content-digest`` (and ``idempotency-key`` when the header is sent), a Content-Digest that does
not match the body, a ``created`` more than :data:`TOLERANCE` seconds from its clock on either
side, an ``expires`` in the past, and a nonce it has seen (kept per merchant, see
:mod:`safescan.institution.nonces`). The authority is not covered: a request is bound to the
institution by the merchant key the institution holds (and TLS), so a proxy in front of it may
rewrite the host. Signing a request with this module's :func:`sign_request` replaced the
earlier ``Safescan-Signature`` scheme (``SS2-REQ``), which the institution no longer accepts.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import http_sf
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureAlgorithm,
    HTTPSignatureKeyResolver,
    InvalidSignature,
)

from safescan.api.errors import InvalidRequest, ReplayedRequest, Unauthenticated
from safescan.code.errors import SafescanError, SignatureInvalid
from safescan.code.keys import SigningKey, VerifyKey

TOLERANCE = 300  # seconds
TAG = "safescan-merchant"  # the signature's application tag (RFC 9421 section 2.3)
LABEL = "sig1"
#: what every merchant signature covers (plus ``idempotency-key`` when the request has one)
COMPONENTS = ("@method", "@path", "@query", "content-digest")
H_SIGNATURE = "Signature"
H_SIGNATURE_INPUT = "Signature-Input"
H_CONTENT_DIGEST = "Content-Digest"
H_IDEMPOTENCY = "Idempotency-Key"
_NONCE_RE = re.compile(r"[A-Za-z0-9_\-]{16,64}")
_MERCHANT_RE = re.compile(r"[A-Za-z0-9._:\-]{1,40}")
_IDEMPOTENCY_RE = re.compile(r"[\x21-\x7e]{1,255}")
# the authority is not covered: any origin gives the same signature base
_ORIGIN = "https://institution.invalid"
#: a signature time (``created``, ``expires``) is a canonical integer below this (year 36812)
_TIME_LIMIT = 1 << 40


class _Ed25519(HTTPSignatureAlgorithm):
    """RFC 9421 ``ed25519`` over safescan's key objects (the private key never leaves its
    :class:`~safescan.code.keys.SigningKey`; both ends call ``cryptography``)."""

    algorithm_id = "ed25519"

    def __init__(self, public_key: Any = None, private_key: Any = None) -> None:
        self.public_key: VerifyKey | None = public_key
        self.private_key: SigningKey | None = private_key

    def sign(self, message: bytes) -> bytes:
        if self.private_key is None:
            raise HTTPMessageSignaturesException("no signing key")
        return self.private_key.sign(message)

    def verify(self, signature: bytes, message: bytes) -> None:
        if self.public_key is None:
            raise InvalidSignature("no verification key")
        try:
            self.public_key.verify(signature, message, what="request signature")
        except SignatureInvalid:
            raise InvalidSignature("the request signature does not verify") from None


class _Keys(HTTPSignatureKeyResolver):
    """One private key to sign with, or a lookup of the merchant's public key."""

    def __init__(
        self,
        private: SigningKey | None = None,
        lookup: Callable[[str], VerifyKey | None] | None = None,
    ) -> None:
        self.private, self.lookup = private, lookup
        self.unknown: str | None = None
        self.failure: SafescanError | None = None  # a lookup that failed (storage), not a lie

    def resolve_public_key(self, key_id: str) -> VerifyKey | None:
        found = None
        if self.lookup is not None and _MERCHANT_RE.fullmatch(key_id):
            try:
                found = self.lookup(key_id)
            except SafescanError as exc:  # the database, not the signature: kept for the caller
                self.failure = exc
                raise
        if found is None:
            self.unknown = key_id
        return found

    def resolve_private_key(self, key_id: str) -> SigningKey:
        if self.private is None:
            raise HTTPMessageSignaturesException("no signing key")
        return self.private


class _Verifier(HTTPMessageVerifier):
    """Times are checked by the institution on its own clock (:func:`verify_request`)."""

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        if type(sig_input.params.get("created")) is not int:
            raise InvalidSignature('the signature has no integer "created" parameter')
        if "expires" in sig_input.params and type(sig_input.params["expires"]) is not int:
            raise InvalidSignature('the signature\'s "expires" parameter is not an integer')


class _Headers:
    """Header field lines in order (what the library reads and, when signing, writes)."""

    def __init__(self, lines: Iterable[tuple[str, str]]) -> None:
        self.lines = list(lines)

    def items(self) -> list[tuple[str, str]]:
        return list(self.lines)

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, _ in self.lines])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(k.lower() == name.lower() for k, _ in self.lines)

    def __getitem__(self, name: str) -> str:
        values = [v for k, v in self.lines if k.lower() == name.lower()]
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def __setitem__(self, name: str, value: str) -> None:
        self.__delitem__(name)
        self.lines.append((name, value))

    def __delitem__(self, name: str) -> None:
        self.lines = [(k, v) for k, v in self.lines if k.lower() != name.lower()]


@dataclass
class _Message:
    method: str
    url: str
    headers: _Headers


def _target(path: str) -> str:
    if not path.startswith("/"):
        raise InvalidRequest("a request path starts with /", param="path")
    return _ORIGIN + path


def sign_request(
    key: SigningKey,
    merchant_id: str,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, str]:
    """The headers that authenticate one request (``path`` with its query string, as sent):
    ``Content-Digest``, ``Signature-Input``, ``Signature`` and, with ``idempotency_key``, the
    ``Idempotency-Key`` header, covered by the signature."""
    created = int(time.time()) if timestamp is None else timestamp
    headers = _Headers([])
    components = list(COMPONENTS)
    if idempotency_key is not None:
        headers[H_IDEMPOTENCY] = idempotency_key
        components.append("idempotency-key")
    signer = HTTPMessageSigner(signature_algorithm=_Ed25519, key_resolver=_Keys(private=key))
    try:
        signer.sign(
            _Message(method.upper(), _target(path), headers),
            key_id=merchant_id,
            created=dt.datetime.fromtimestamp(created, tz=dt.UTC),
            nonce=nonce or secrets.token_urlsafe(18),
            label=LABEL,
            tag=TAG,
            covered_component_ids=components,
            body=body,  # Content-Digest (RFC 9530, sha-256) made and covered
        )
    except HTTPMessageSignaturesException as exc:  # a path that is no encoded URL path
        raise InvalidRequest(f"the request cannot be signed: {exc}", param="path") from None
    return dict(headers.items())


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """The request's Idempotency-Key (None when absent); a malformed one is refused."""
    key = headers.get(H_IDEMPOTENCY)
    if key is not None and not _IDEMPOTENCY_RE.fullmatch(key):
        raise InvalidRequest(
            "Idempotency-Key must be 1-255 printable ASCII characters", param=H_IDEMPOTENCY
        )
    return key


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A request whose signature verified: who signed it, when (``created``) and its nonce."""

    merchant_id: str
    created: int
    nonce: str


def is_signed(headers: Mapping[str, str] | _Headers) -> bool:
    """Whether the request carries a message signature (it may still not verify); ``headers``
    compare names case-insensitively (a Starlette or httpx header map, or :class:`_Headers`)."""
    return H_SIGNATURE in headers or H_SIGNATURE_INPUT in headers


class _Repeated(Exception):
    """A key given twice in a structured field (RFC 8941 keeps the last; we refuse)."""


def _repeated(key: str, context: str) -> None:
    raise _Repeated(f"{key!r} ({context})")


def _strict_field(name: str, value: str) -> dict[str, Any]:
    """``value`` of the ``name`` field parsed as an RFC 8941 Dictionary of exactly one member,
    written exactly as RFC 8941 serializes it, no key repeated; else :class:`Unauthenticated`.
    RFC 9421 signs the *re-serialized* parameters, so a lenient spelling (``created=0123``, a
    parameter given twice, extra spaces) verified as the canonical one: one signature, many
    headers, and a parameter whose value the parser picked (the last) unseen by the checks."""
    try:
        parsed = http_sf.parse(
            value.encode("ascii"), tltype="dictionary", on_duplicate_key=_repeated
        )
    except _Repeated as exc:
        raise Unauthenticated(f"{name} gives a key twice: {exc}", param=name) from None
    except (ValueError, UnicodeEncodeError):
        raise Unauthenticated(f"{name} is not a structured field (RFC 8941)", param=name) from None
    if not isinstance(parsed, dict) or len(parsed) != 1:
        raise Unauthenticated(f"{name} must hold exactly one signature", param=name)
    if http_sf.ser(parsed) != value:
        raise Unauthenticated(
            f"{name} is not written in its canonical form (RFC 8941: integers without leading"
            " zeros or sign, one space between items, none elsewhere)",
            param=name,
        )
    return parsed


def _strict_parameters(lines: _Headers) -> None:
    """The signature's fields and parameters, strictly: canonical, one signature whose label is
    the same in both fields, ``created`` (and ``expires``, after it) canonical integers in
    range, ``keyid`` a merchant id, ``alg`` (when given) ``ed25519``, the nonce's charset and
    length; each a typed :class:`Unauthenticated` before anything is verified."""
    inputs = _strict_field(H_SIGNATURE_INPUT, lines[H_SIGNATURE_INPUT])
    signatures = _strict_field(H_SIGNATURE, lines[H_SIGNATURE])
    if set(inputs) != set(signatures):
        raise Unauthenticated(
            f"{H_SIGNATURE} and {H_SIGNATURE_INPUT} name different signatures", param=H_SIGNATURE
        )
    (member, params), (signature, _) = next(iter(inputs.values())), next(iter(signatures.values()))
    if not isinstance(member, list) or not isinstance(signature, bytes):
        raise Unauthenticated("the signature is not a list of components and its bytes")
    for key in ("created", "expires"):
        value = params.get(key)
        if key in params and (type(value) is not int or not 0 < value < _TIME_LIMIT):
            raise Unauthenticated(f"the signature's {key!r} is not a time in range", param=key)
    if "created" not in params:
        raise Unauthenticated("the signature names no time (created)", param="created")
    if "expires" in params and params["expires"] <= params["created"]:
        raise Unauthenticated("the signature expires before it was created", param="expires")
    keyid, nonce, alg = params.get("keyid"), params.get("nonce"), params.get("alg", "ed25519")
    if not isinstance(keyid, str) or not _MERCHANT_RE.fullmatch(keyid):
        raise Unauthenticated("the signature's keyid is not a merchant id", param="keyid")
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise Unauthenticated("the nonce must be 16-64 characters of [A-Za-z0-9_-]", param="nonce")
    if alg != "ed25519":
        raise Unauthenticated('the signature\'s alg must be "ed25519"', param="alg")


def verify_request(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    public_key: Callable[[str], VerifyKey | None],
    *,
    now: int,
) -> SignedRequest:
    """Verify a merchant's signed request (``target``: path and query as sent); ``public_key``
    looks a merchant's key up by id. Raises :class:`Unauthenticated` (a missing, malformed,
    incomplete or wrong signature, an unknown merchant, a body that does not match its
    Content-Digest) or :class:`ReplayedRequest` (``created`` out of :data:`TOLERANCE`,
    ``expires`` past). The nonce is the caller's to record."""
    lines = _Headers(headers.items())  # field names compared case-insensitively
    if not is_signed(lines) or H_CONTENT_DIGEST not in lines:
        raise Unauthenticated(
            f"merchant requests must be signed ({H_SIGNATURE_INPUT}, {H_SIGNATURE},"
            f" {H_CONTENT_DIGEST}; RFC 9421) or carry an API key"
        )
    if H_SIGNATURE not in lines or H_SIGNATURE_INPUT not in lines:
        raise Unauthenticated(
            f"a signed request carries both {H_SIGNATURE_INPUT} and {H_SIGNATURE} (RFC 9421)"
        )
    _strict_parameters(lines)
    required = list(COMPONENTS)
    if H_IDEMPOTENCY in lines:
        idempotency_key({H_IDEMPOTENCY: lines[H_IDEMPOTENCY]})  # well-formed, or refused
        required.append("idempotency-key")
    keys = _Keys(lookup=public_key)
    verifier = _Verifier(signature_algorithm=_Ed25519, key_resolver=keys)
    message = _Message(method.upper(), _target(target), lines)
    try:
        results = verifier.verify(
            message, max_age=None, expect_tag=TAG, require_components=required, body=body
        )
    except (InvalidSignature, HTTPMessageSignaturesException) as exc:
        if keys.failure is not None:  # e.g. the database is down: its typed 503, not a 401
            raise keys.failure from None
        if keys.unknown is not None:
            raise Unauthenticated("unknown merchant", param="keyid") from None
        raise Unauthenticated(f"the request signature does not verify ({exc})") from None
    if len(results) != 1:
        raise Unauthenticated(f"exactly one signature tagged {TAG!r} is expected")
    params = results[0].parameters
    merchant, created, nonce = params.get("keyid"), params.get("created"), params.get("nonce")
    if not isinstance(merchant, str) or not isinstance(created, int):
        raise Unauthenticated("the signature names no merchant (keyid) or time (created)")
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise Unauthenticated("the nonce must be 16-64 characters of [A-Za-z0-9_-]", param="nonce")
    if created < now - TOLERANCE:
        raise ReplayedRequest(
            f"the request signature was created more than {TOLERANCE} s before the server clock",
            param="created",
        )
    if created > now + TOLERANCE:
        raise ReplayedRequest(
            f"the request signature was created more than {TOLERANCE} s ahead of the server clock",
            param="created",
        )
    expires = params.get("expires")
    if isinstance(expires, int) and expires < now:
        raise ReplayedRequest("the request signature has expired", param="expires")
    return SignedRequest(merchant, created, nonce)


__all__ = [
    "COMPONENTS",
    "H_CONTENT_DIGEST",
    "H_IDEMPOTENCY",
    "H_SIGNATURE",
    "H_SIGNATURE_INPUT",
    "TAG",
    "TOLERANCE",
    "SignedRequest",
    "idempotency_key",
    "is_signed",
    "sign_request",
    "verify_request",
]
