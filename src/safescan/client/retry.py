"""Riding through a failover: a state-changing request is sent again, with the same
Idempotency-Key, until its outcome is known, and never guessed (:func:`send_until_known`).

The budget is ``$SAFESCAN_RETRY_SECONDS`` (30 s by default, longer than a cluster failover);
then the request's lookup twin is asked what happened.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

from safescan.api import errors as inst_errors
from safescan.client.errors import (
    InstitutionProtocolError,
    InstitutionUnreachable,
    OutcomeUnknown,
    RequestNotProcessed,
    RetrySettingInvalid,
    error_outcome,
)
from safescan.code.errors import SafescanError

ENV_RETRY_SECONDS = "SAFESCAN_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 30.0  # longer than a cluster failover (about 5-8 s, docs/operations.md)
BACKOFF_CAP = 4.0  # the longest pause between two attempts (seconds), unless Retry-After says more
RETRYABLE_STATUSES = frozenset({502, 503, 504})


def retry_budget(value: float | None = None) -> float:
    """How long (seconds) a state-changing request is retried before its status is looked up:
    ``value``, else ``$SAFESCAN_RETRY_SECONDS``, else 30 s (long enough to ride through a
    failover). A malformed setting is refused, never silently replaced."""
    if value is None:
        raw = os.environ.get(ENV_RETRY_SECONDS, "").strip()
        if not raw:
            return DEFAULT_RETRY_SECONDS
        try:
            value = float(raw)
        except ValueError:
            raise RetrySettingInvalid(
                f"${ENV_RETRY_SECONDS} must be a number of seconds (0-3600), not {raw[:40]!r}"
            ) from None
    if not 0 <= value <= 3600:  # also refuses NaN
        raise RetrySettingInvalid(f"the retry budget must be 0-3600 seconds, not {value}")
    return float(value)


def _retry_after(exc: SafescanError) -> float | None:
    """The ``Retry-After`` seconds the institution (or a proxy) sent with this error, if any."""
    return None if exc.retry_after_s is None else float(exc.retry_after_s)


def _worth_retrying(exc: SafescanError) -> bool:
    """Errors a failover produces (no connection, a cut connection, a timeout, 502/503/504, a
    lost COMMIT, "still in progress", a rate limit): the same request may succeed soon."""
    if isinstance(exc, InstitutionUnreachable | inst_errors.RateLimited):
        return True
    if isinstance(exc, inst_errors.RequestInProgress | inst_errors.StorageError):
        return True
    status = getattr(exc, "status", 0)
    return isinstance(status, int) and status in RETRYABLE_STATUSES


def send_until_known(
    attempt: Callable[[], Any],
    lookup: Callable[[], Any],
    what: str,
    *,
    budget: float | None = None,
    tries: int | None = None,
    lookups: int = 3,
    backoff: float = 0.5,
    cap: float = BACKOFF_CAP,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    jitter: Callable[[], float] = random.random,
) -> Any:
    """Send a state-changing request (every ``attempt()`` sends it with the same
    Idempotency-Key) until its outcome is known, and never guess it.

    Attempts are repeated on the errors a failover produces (see :func:`_worth_retrying`)
    with capped exponential back-off and jitter, or after the ``Retry-After`` the answer
    asked for, for at most ``budget`` seconds (:func:`retry_budget`: ``$SAFESCAN_RETRY_SECONDS``,
    30 s by default) and, when given, at most ``tries`` attempts. A definite refusal (a 4xx)
    is never retried. Then, if an attempt may have been delivered, the outcome is asked
    (``lookup()``, the endpoint's lookup twin, which settles the request) up to ``lookups``
    times.

    Returns the success answer. Raises the institution's typed refusal (certain: not done);
    :class:`InstitutionUnreachable` when no attempt ever left this client (certain: not done);
    :class:`RequestNotProcessed` when the status lookup says it was never processed (certain:
    not done, and never will be); and :class:`OutcomeUnknown` when neither the request nor its
    lookup got a definite answer. ``what`` names the answer's field in the lookup's
    ``succeeded`` document.
    """
    deadline = clock() + retry_budget(budget)
    maybe_done = False
    last: SafescanError | None = None
    n = 0
    while True:
        try:
            return attempt()
        except SafescanError as exc:
            kind = error_outcome(exc)
            if kind == "refused":
                raise
            maybe_done = maybe_done or kind == "unknown"
            last = exc
            retry = _worth_retrying(exc)
        n += 1
        if not retry or (tries is not None and n >= tries):
            break
        pause = min(cap, backoff * 2 ** min(n - 1, 16)) * (0.5 + 0.5 * jitter())
        asked = _retry_after(last)
        if asked is not None:
            pause = max(pause, min(asked, 60.0))
        if clock() + pause > deadline:
            break
        sleep(pause)
    assert last is not None
    if not maybe_done:
        raise last  # it never reached the institution (or was refused before running)
    for k in range(max(1, lookups)):
        try:
            doc = lookup()
        except SafescanError as exc:
            last = exc
        else:
            state = doc.get("outcome") if isinstance(doc, dict) else None
            if state == "succeeded" and isinstance(doc.get(what), dict):
                return doc[what]
            if state == "refused":
                raise inst_errors.error_from_dict(doc.get("error"), int(doc.get("status", 400)))
            if state == "not_processed":
                raise RequestNotProcessed(
                    str(doc.get("message", f"the {what} was never processed: nothing was done"))
                )
            last = InstitutionProtocolError("the institution's lookup answer is malformed")
        if k < lookups - 1:
            sleep(min(cap, backoff * 2**k))
    detail = last.message
    raise OutcomeUnknown(
        f"the institution did not confirm the {what} and could not be asked what happened"
        f" ({detail}): it may or may not have been done"
    )
