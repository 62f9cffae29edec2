"""A payment's outbox event and audit entry, their canonical JSON rendered in one step.

The payment path (:meth:`safescan.institution.domain.payments.Payments._plan_payment`) writes
three canonical JSON texts (:func:`safescan.institution.util.canonical_json`): the event's
payload, the audit entry's data and the entry's hashed tail (:func:`audit.entry_tail`, which
holds the data's text again, quoted). Each went through ``canonical_json``'s walk, orjson and
its checks, and the data's dictionary was built, merged and stamped twice (issue 20, twelfth
sitting in docs/performance.md).

Here the three texts come from one template when every text value of the payment is *plain*
(:data:`_PLAIN`: ASCII letters, digits and ``_ . : -``, which JSON writes as they are, between
quotes, with no escape); the template's fields are the payment's integers (exact ``int``s,
written as ``json`` writes them) and these plain texts, in the sorted key order
``canonical_json`` gives. Anything else (a name or id with another character, an integer
subclass) takes the general functions, :func:`safescan.institution.webhooks.event_params` and
:func:`audit.prepare_entry`. Both ways give the same bytes
(tests/institution/test_pay_records.py compares them on many payments, plain or not).
"""

from __future__ import annotations

import re
from typing import Any

from safescan.api.obslog import current_request_id
from safescan.api.states import EventType
from safescan.institution import audit
from safescan.institution.webhooks import event_params

PAYMENT_ACTION = "payment.create"
_TYPE = str(EventType.PAYMENT_SUCCEEDED.value)
# what JSON writes unescaped and unchanged between quotes (and audit.entry_tail quotes again
# unchanged): no quote, backslash, control, DEL or non-ASCII character
_PLAIN = re.compile(r"[A-Za-z0-9_.:\-]*").fullmatch


def payment_records(
    *,
    event_id: str,
    mid: str,
    order_id: str,
    payment_id: str,
    amount: int,
    currency: int,
    pseudonym: str,
    now: int,
    customer_id: str,
    counter: int,
    serial: int,
    entity: str,
    webhook: bool,
) -> tuple[dict[str, Any], audit.PreparedEntry]:
    """The ``e_*`` parameters of the payment's outbox event (``payment.succeeded``) and its
    audit entry (``payment.create`` by ``carrier:SERIAL``, data stamped with the current
    request id), exactly as :func:`event_params` and :func:`audit.prepare_entry` make them.
    Call it in the request's context (the request id)."""
    rid = current_request_id()
    actor = f"carrier:{serial}"
    if (
        type(amount) is int
        and type(currency) is int
        and type(now) is int
        and type(counter) is int
        and type(serial) is int
        and _PLAIN(f"{event_id}{mid}{order_id}{payment_id}{pseudonym}{customer_id}{entity}")
        and (rid is None or _PLAIN(rid))
    ):
        order = f'"order_id":"{order_id}","paid_at":{now},"payer_pseudonym":"{pseudonym}"'
        money = f'"amount":{amount},'
        ids = f',"payment_id":"{payment_id}"'
        payload = (
            f'{{"created":{now},"data":{{{money}"currency":{currency},{order}{ids}}},'
            f'"id":"{event_id}","merchant_id":"{mid}","type":"{_TYPE}"}}'
        )
        stamp = "}" if rid is None else f',"request_id":"{rid}"}}'
        data = (
            f'{{{money}"counter":{counter},"currency":{currency},'
            f'"customer_id":"{customer_id}",{order}{ids}{stamp}'
        )
        quoted = data.replace('"', '\\"')
        tail = f'{now},"{actor}","{PAYMENT_ACTION}","{entity}","{quoted}"]'
        event = {
            "e_id": event_id,
            "e_mid": mid,
            "e_type": EventType.PAYMENT_SUCCEEDED,
            "e_payload": payload,
            "e_created": now,
            "e_state": "pending" if webhook else "none",
            "e_next_ms": now * 1000,
            "e_request_id": rid,
        }
        return event, audit.PreparedEntry(now, actor, PAYMENT_ACTION, entity, data, tail)
    return general_records(
        event_id=event_id,
        mid=mid,
        order_id=order_id,
        payment_id=payment_id,
        amount=amount,
        currency=currency,
        pseudonym=pseudonym,
        now=now,
        customer_id=customer_id,
        counter=counter,
        serial=serial,
        entity=entity,
        webhook=webhook,
    )


def general_records(
    *,
    event_id: str,
    mid: str,
    order_id: str,
    payment_id: str,
    amount: int,
    currency: int,
    pseudonym: str,
    now: int,
    customer_id: str,
    counter: int,
    serial: int,
    entity: str,
    webhook: bool,
) -> tuple[dict[str, Any], audit.PreparedEntry]:
    """:func:`payment_records` by the general functions (any value): what the payment path
    did before, and what it does for a value the template does not take."""
    data = {
        "payment_id": payment_id,
        "order_id": order_id,
        "amount": amount,
        "currency": currency,
        "payer_pseudonym": pseudonym,
        "paid_at": now,
    }
    event = event_params(event_id, mid, EventType.PAYMENT_SUCCEEDED, data, now, webhook)
    entry = audit.prepare_entry(
        at=now,
        actor=f"carrier:{serial}",
        action=PAYMENT_ACTION,
        entity=entity,
        data=data | {"customer_id": customer_id, "counter": counter},
    )
    return event, entry


__all__ = ["PAYMENT_ACTION", "general_records", "payment_records"]
