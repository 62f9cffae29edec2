"""Idempotency keys: a retry with the same key gets the first request's answer, or "in progress".

Every idempotent endpoint (``POST /v1/payments``, ``POST /v1/merchant/orders``, ``POST
/v1/merchant/orders/{id}/refunds``, ``POST /v1/checkout/sessions``, API key creation and
rotation) runs through :func:`execute` or its parts. An API key's answer holds its secret, which
is never stored: its key records the refusal ``api_key_already_created`` naming the key (see
:mod:`.api_keys`), so a retry learns the key was made without the secret being kept at rest.

A key's record (table ``idempotency_keys``: scope, key, request hash, status, answer) goes
through these states:

* **claimed** - the first statement of the transaction that does the work inserts the record
  (``INSERT ... ON CONFLICT DO NOTHING``) before any business check runs. The claim is the
  in-flight state: on PostgreSQL the uncommitted row is locked, so a concurrent request with the
  same key waits for it (at most :data:`CLAIM_WAIT`; then ``409 request_in_progress`` with
  ``Retry-After``); on SQLite every write runs on the one writer thread, so a second request's
  claim runs after the first has committed (or rolled back). A claim is never visible as a
  half-done request: it commits together with the effect and its answer, in one transaction.
* **answered** - committed with the effect: the success answer, stored in the same transaction
  as the payment, order or refund it reports. Every later request with the key gets it back.
* **refused** - the work raised a final business refusal (insufficient funds, already paid,
  nothing left to refund...): the transaction rolled back, then the refusal is stored as the
  key's answer in its own transaction (unless another request answered the key in between, whose
  answer then counts). Retries get the same refusal, even if the state changed since.
* **withdrawn** - a status lookup (:func:`settle`) found no answer: it stores "withdrawn" as the
  key's answer, so the original request, should it still arrive, is answered "withdrawn" and does
  nothing. That is what lets a client that lost the answer learn the outcome for certain.

Crash recovery needs nothing: a claim only exists inside its transaction, so a crashed or killed
process leaves no claim behind (the database rolls its transaction back); a stalled one (a
stopped process holding a PostgreSQL transaction) is cut off by the server's
``idle_in_transaction_session_timeout`` (:data:`~safescan.institution.db.STALLED_TX_TIMEOUT_MS`),
and until then its key answers "in progress". Errors that are not final (an unavailable
database, a request still in progress) are never stored: a retry runs the request again.

Requests without a key are not recorded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection

from safescan.api.encoding import b64e
from safescan.api.errors import (
    IdempotencyConflict,
    InstitutionError,
    RateLimited,
    RequestInProgress,
    RequestWithdrawn,
    Unauthenticated,
    error_from_dict,
)
from safescan.code.payment import LineItem
from safescan.institution import sql
from safescan.institution.db import Database
from safescan.institution.util import canonical_json

CLAIM_WAIT = "1s"  # PostgreSQL: how long a request waits for another holding its key

_SELECT = (
    "SELECT request_hash, status_code, response FROM idempotency_keys"
    " WHERE scope = :scope AND key = :key"
)
_CLAIM = (
    "INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response, created_at)"
    " VALUES (:scope, :key, :hash, :status, :response, :now) ON CONFLICT DO NOTHING"
)
_COMPLETE = (
    "UPDATE idempotency_keys SET status_code = :status, response = :response"
    " WHERE scope = :scope AND key = :key"
)
_COMPLETE_DATED = (
    "UPDATE idempotency_keys SET status_code = :status, response = :response, created_at = :at"
    " WHERE scope = :scope AND key = :key"
)


T = TypeVar("T")


@dataclass(frozen=True)
class Stored:
    """An Idempotency-Key's recorded answer: the status and JSON body the request was first
    answered with (:mod:`.wire`). A keyed operation returns this, the answer stored for its key
    (built once, in the transaction that did the work, or recorded first when it is a retry):
    the caller sends it back exactly as recorded. Without a key it returns its typed result."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One keyed request: who may use the key (``scope``), the key, the request's hash."""

    scope: str
    key: str
    request_hash: str


class Answered(Exception):
    """Internal: the key already has an answer (raised to roll the transaction back)."""

    def __init__(self, stored: Stored | None) -> None:
        super().__init__("already answered")
        self.stored = stored


def request_hash(value: Any) -> str:
    """Hash of a request's canonical JSON form (what an Idempotency-Key is bound to)."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def payment_request(
    serial: int, code: str, authorization: bytes, key: str | None
) -> Request | None:
    """A payment's Idempotency-Key request (scope: the carrier that signed it)."""
    if key is None:
        return None
    body = {"code": code, "authorization": b64e(authorization)}
    return Request(f"pay:{serial}", key, request_hash(body))


def order_request(
    mid: str,
    key: str | None,
    items: Sequence[LineItem],
    currency: int,
    expires_in: int,
    reference: str | None,
) -> Request | None:
    """An order creation's Idempotency-Key request (scope: the merchant)."""
    if key is None:
        return None
    lines = [i.to_cbor() for i in items]  # [name, quantity, unit price]: the hash of old keys
    body = {"items": lines, "currency": currency, "expires_in": expires_in, "reference": reference}
    return Request(f"order:{mid}", key, request_hash(body))


def refund_request(
    mid: str, key: str | None, order_id: str, amount: int | None, reason: str | None
) -> Request | None:
    """A refund's Idempotency-Key request (scope: the merchant)."""
    if key is None:
        return None
    body = {"order_id": order_id, "amount": amount, "reason": reason}
    return Request(f"refund:{mid}", key, request_hash(body))


def checkout_request(
    mid: str,
    key: str | None,
    items: Sequence[LineItem],
    currency: str | int,
    success_url: str,
    cancel_url: str,
    expires_in: int,
    reference: str | None,
) -> Request | None:
    """A checkout session creation's Idempotency-Key request (scope: the merchant; the
    return URLs as sent)."""
    if key is None:
        return None
    body = {
        "items": [i.to_cbor() for i in items],
        "currency": currency,
        "success_url": success_url,
        "cancel_url": cancel_url,
        "expires_in": expires_in,
        "reference": reference,
    }
    return Request(f"checkout:{mid}", key, request_hash(body))


def api_key_request(actor: str, mid: str, key: str | None, body: dict[str, Any]) -> Request | None:
    """An API key creation's or rotation's Idempotency-Key request (scope: who asks, the
    merchant or the administrator, and the merchant; ``body`` names the operation)."""
    if key is None:
        return None
    return Request(f"api_key:{actor}:{mid}", key, request_hash(body))


def is_final(exc: BaseException) -> bool:
    """A refusal that is the request's answer (stored for its key): a 4xx business error,
    not "in progress", "slow down" or an authentication failure."""
    return (
        isinstance(exc, InstitutionError)
        and 400 <= exc.status < 500
        and not isinstance(exc, RequestInProgress | RateLimited | Unauthenticated)
    )


def lookup(conn: Connection, req: Request) -> Stored | None:
    """The key's answer, None if it has none; :class:`IdempotencyConflict` if the key was used
    for another request."""
    return stored_answer(
        req, sql.run(conn, _SELECT, {"scope": req.scope, "key": req.key}).fetchone()
    )


async def lookup_async(db: Database, req: Request) -> Stored | None:
    """:func:`lookup` from the running event loop (PostgreSQL: :meth:`Database.read_one_async`,
    no worker thread)."""
    rows = await db.read_one_async(_SELECT, {"scope": req.scope, "key": req.key})
    return stored_answer(req, rows[0] if rows else None)


def stored_answer(req: Request, row: Any) -> Stored | None:
    """The key's answer from its record (``request_hash, status_code, response``; None: no
    record); :class:`IdempotencyConflict` if the key was used for another request."""
    if row is None:
        return None
    if row[0] != req.request_hash:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different request",
            param="Idempotency-Key",
        )
    return Stored(int(row[1]), json.loads(row[2]))


def claim(conn: Connection, req: Request, now: int, answer: Stored | None = None) -> None:
    """Take the key (first statement of the write transaction). With ``answer`` (the work's
    answer, when it is known in advance) the record is stored answered at once; otherwise call
    :func:`complete` before the transaction ends. Raises :class:`Answered` if the key already
    has an answer; on PostgreSQL waits at most :data:`CLAIM_WAIT` for a request holding it."""
    params = {
        "scope": req.scope,
        "key": req.key,
        "hash": req.request_hash,
        "status": answer.status if answer is not None else 0,
        "response": canonical_json(answer.body) if answer is not None else "",
        "now": now,
    }
    if conn.dialect.name == "postgresql":
        results = sql.run_batch(
            conn,
            [
                (f"SET LOCAL lock_timeout = '{CLAIM_WAIT}'", {}),
                (_CLAIM, params),
                ("SET LOCAL lock_timeout = DEFAULT", {}),
            ],
        )
        inserted = results[1][1] == 1
    else:
        inserted = sql.run(conn, _CLAIM, params).rowcount == 1
    if not inserted:
        raise Answered(lookup(conn, req))


def complete(conn: Connection, req: Request, answer: Stored, *, at: int | None = None) -> None:
    """Store the answer of a claimed key (same transaction as the work). ``at``: the time of
    the work the answer reports, when that work was done earlier (a status lookup storing an
    existing payment's answer under a new key): the record then carries that time, as every
    record of a success carries the time of the row it answers."""
    params = {
        "scope": req.scope,
        "key": req.key,
        "status": answer.status,
        "response": canonical_json(answer.body),
    }
    if at is None:
        sql.run(conn, _COMPLETE, params)
    else:
        sql.run(conn, _COMPLETE_DATED, params | {"at": at})


def replay(stored: Stored) -> Stored:
    """A stored answer as the caller gets it: the success, or the stored refusal raised."""
    if stored.status >= 400:
        raise error_from_dict(stored.body.get("error"), stored.status)
    return stored


def refusal(exc: InstitutionError) -> Stored:
    """A final refusal as a stored answer."""
    return Stored(exc.status, {"error": exc.to_dict()})


def _store_refusal(db: Database, req: Request, exc: InstitutionError, now: int) -> Stored:
    """Store a final refusal as the key's answer (in its own transaction); returns the key's
    answer, which is another request's if that one answered the key first."""

    def tx(conn: Connection) -> Stored:
        try:
            claim(conn, req, now, refusal(exc))
        except Answered as a:
            if a.stored is None:  # pragma: no cover - the row was just seen
                raise RequestInProgress("a request with this Idempotency-Key is running") from None
            return a.stored
        return refusal(exc)

    return db.write(tx)


def keyed(result: T, answer: Stored | None) -> T | Stored:
    """What a keyed operation returns: with a key, the ``answer`` recorded for it (built once,
    sent as stored); without one, the typed ``result``."""
    return result if answer is None else answer


def transaction(
    req: Request | None,
    now: int,
    work: Callable[[Connection], T],
    answer: Stored | None,
    record: Callable[[T], Stored] | None = None,
) -> Callable[[Connection], T | Stored]:
    """``work`` wrapped for one write transaction: the key claimed first, the answer stored
    with the effect: ``answer`` at the claim when it is known in advance, else ``record`` of
    the work's result before the transaction ends. The transaction returns the work's result
    without a key, and with one the answer recorded for it (:func:`keyed`)."""

    def tx(conn: Connection) -> T | Stored:
        if req is None:
            return work(conn)
        claim(conn, req, now, answer)
        result = work(conn)
        if answer is not None:
            return answer
        if record is None:  # pragma: no cover - a programming error
            raise TypeError("a keyed transaction needs its answer or a record function")
        stored = record(result)
        complete(conn, req, stored)
        return stored

    return tx


def recorded(db: Database, req: Request | None) -> Stored | None:
    """The key's recorded answer (a refusal raised), None when it has none (or no key)."""
    if req is None:
        return None
    stored = db.read(lambda c: lookup(c, req))
    return None if stored is None else replay(stored)


def execute(
    db: Database,
    req: Request | None,
    now: int,
    work: Callable[[Connection], T],
    *,
    answer: Stored | None = None,
    record: Callable[[T], Stored] | None = None,
) -> T | Stored:
    """Run ``work`` in one transaction, once per key (see the module docstring): its result
    without a key; with one, the key's answer (:class:`Stored`: the one recorded now, or on a
    retry the one recorded first). ``answer``: the work's answer when it is known before the
    transaction (stored with the claim); otherwise ``record`` makes it from the result."""
    stored = recorded(db, req)
    if stored is not None:
        return stored
    return run(db, req, now, work, answer=answer, record=record)


def run(
    db: Database,
    req: Request | None,
    now: int,
    work: Callable[[Connection], T],
    *,
    answer: Stored | None = None,
    record: Callable[[T], Stored] | None = None,
) -> T | Stored:
    """:func:`execute` after the caller looked for the key's answer itself
    (:func:`recorded`, before it built anything)."""
    tx = transaction(req, now, work, answer, record)
    return finish(db, req, now, lambda: db.write(tx))


def finish(db: Database, req: Request | None, now: int, attempt: Callable[[], T]) -> T | Stored:
    """Run ``attempt`` (a write that claims ``req`` first) and turn what it raises into the
    key's answer: the answer another request stored, or a final refusal, stored."""
    try:
        return attempt()
    except Answered as a:
        return answered(db, req, a)
    except InstitutionError as exc:
        if req is None or not is_final(exc):
            raise
        return replay(_store_refusal(db, req, exc, now))


async def finish_async(
    db: Database, req: Request | None, now: int, attempt: Awaitable[T]
) -> T | Stored:
    """:func:`finish` for an awaitable write (SQLite's writer, from an event loop)."""
    try:
        return await attempt
    except Answered as a:
        return answered(db, req, a)
    except InstitutionError as exc:
        if req is None or not is_final(exc):
            raise
        return replay(_store_refusal(db, req, exc, now))


def answered(db: Database, req: Request | None, a: Answered) -> Stored:
    """The answer of a key another request answered first."""
    stored = a.stored
    if stored is None and req is not None:
        stored = db.read(lambda c: lookup(c, req))
    if stored is None:  # pragma: no cover - the row was committed by the other request
        raise RequestInProgress(
            "a request with this Idempotency-Key is still being processed; retry"
        )
    return replay(stored)


def withdrawn() -> Stored:
    """The answer a key gets when its outcome was looked up before it was processed."""
    return refusal(
        RequestWithdrawn(
            "this request's outcome was looked up before it was processed, so it never will"
            " be: nothing was done",
            param="Idempotency-Key",
        )
    )


def settle(conn: Connection, req: Request, now: int) -> Stored | None:
    """For a status lookup: the key's answer, or None after recording "withdrawn" as its
    answer (the request, should it still arrive, will do nothing)."""
    try:
        claim(conn, req, now, withdrawn())
    except Answered as a:
        return a.stored
    return None


def outcome(stored: Stored | None, what: str) -> dict[str, Any]:
    """A lookup's JSON answer from the key's answer (None: nothing was done, and never will
    be)."""
    if stored is None or (
        stored.status >= 400 and stored.body.get("error", {}).get("code") == RequestWithdrawn.code
    ):
        return {
            "outcome": "not_processed",
            "message": f"the {what} was never processed and never will be: nothing was done",
        }
    if stored.status >= 400:
        return {"outcome": "refused", "status": stored.status, "error": stored.body.get("error")}
    return {"outcome": "succeeded", "status": stored.status, what: stored.body}


__all__ = [
    "CLAIM_WAIT",
    "Answered",
    "Request",
    "Stored",
    "answered",
    "api_key_request",
    "checkout_request",
    "claim",
    "complete",
    "execute",
    "finish",
    "finish_async",
    "is_final",
    "keyed",
    "lookup",
    "lookup_async",
    "order_request",
    "outcome",
    "payment_request",
    "recorded",
    "refund_request",
    "refusal",
    "replay",
    "request_hash",
    "run",
    "settle",
    "stored_answer",
    "transaction",
    "withdrawn",
]
