"""A checkout session and its order are created at one instant: one clock read.

The audit compares a session's ``created_at`` with its order's, so two reads of the clock (the
session's, then the order's a moment later) failed the audit whenever a second boundary fell
between them. Here every read of the institution's clock moves it on (by 1 s, 7 s, and by a
jump of an hour): the session, its order, the stored answer and the audit entries must all
name the first read, and the audit must pass.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from safescan.code import SigningKey
from safescan.code.payment import LineItem
from safescan.institution.auditing import run_audit
from safescan.institution.db import Database, migrate, normalize_url
from safescan.institution.domain.idempotency import Stored
from safescan.institution.keystore import KeyStore
from safescan.institution.models import CheckoutSession, OrderRow
from safescan.institution.service import Institution
from tests.institution.harness import PASSPHRASE


class Drifting:
    """A clock that moves on by ``step`` seconds every time it is read."""

    def __init__(self, step: int) -> None:
        self.reads = itertools.count()
        self.start = int(time.time())
        self.step = step

    def __call__(self) -> float:
        return float(self.start + next(self.reads) * self.step)


@pytest.mark.parametrize("step", [1, 7, 3600])
def test_session_and_order_share_one_clock_read(step: int) -> None:
    with tempfile.TemporaryDirectory(prefix="safescan-clock-") as d:
        url = f"sqlite:///{Path(d) / 'i.db'}"
        db = Database(url)
        migrate(db.engine)
        keys = KeyStore(Path(d) / "keys").create(PASSPHRASE.encode())
        clock = Drifting(step)
        inst = Institution(db, keys, clock=clock)
        try:
            inst.setup.bootstrap()
            mid = inst.merchants.create(
                name="Clock Shop",
                city="Berlin",
                country="DE",
                mcc=5814,
                settlement_account="DE89370400440532013000",
                api_public_key=SigningKey.generate().public_key.raw,
                webhook_url=None,
            ).merchant.id
            made = []
            for key in (None, "keyed-1"):  # without and with an Idempotency-Key
                s = inst.checkout.create(
                    mid,
                    items=[LineItem("Teapot", 1, 2500)],
                    currency_code="EUR",
                    success_url="https://shop.example/done",
                    cancel_url="https://shop.example/cart",
                    idempotency_key=key,
                    page_url=lambda sid: f"https://pay.example/c/{sid}",
                )
                made.append(s.body["id"] if isinstance(s, Stored) else s.id)
            rows = db.read(
                lambda c: c.execute(
                    select(
                        CheckoutSession.id, CheckoutSession.created_at, OrderRow.created_at
                    ).join(
                        OrderRow,
                        (OrderRow.merchant_id == CheckoutSession.merchant_id)
                        & (OrderRow.order_id == CheckoutSession.order_id),
                    )
                ).all()
            )
            assert {r[0] for r in rows} == set(made)
            for sid, session_at, order_at in rows:
                assert session_at == order_at, (sid, session_at, order_at)
            report = run_audit(normalize_url(url), storage_checks=False)
            assert report.problems == []
            assert report.checks["checkout_sessions"] == 0
        finally:
            db.dispose()
