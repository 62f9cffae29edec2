"""Every state-changing operation is all or nothing (issue #13 item 3), in process.

For each operation of :class:`Institution` a refusal is injected at each step inside its
transaction (the certificate issuer, the ledger transfer, the bundle sealer, the audit log:
whatever the operation reaches), and the whole database must be exactly as before, on SQLite
and PostgreSQL. The HTTP-level refusals (bad keys, spent tokens) are attacked against a real
server in ``test_hardening.py``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan.code import LineItem, SigningKey
from safescan.code.errors import SafescanError
from safescan.institution import audit, ledger
from safescan.institution.domain import certificates as certificates_module
from safescan.institution.domain import enrollment
from safescan.institution.domain.results import OrderCreated
from safescan.institution.service import Institution
from safescan.institution.webhook_targets import TargetPolicy
from tests.institution.conftest import BACKENDS, make_db
from tests.institution.harness import attest, institution_in
from tests.institution.snapshot import diff, snapshot


class Injected(SafescanError):
    """The refusal injected into an operation."""

    code = "injected"


@pytest.fixture(scope="module", params=BACKENDS)
def inst(request: pytest.FixtureRequest) -> Iterator[Institution]:
    with tempfile.TemporaryDirectory(prefix="safescan-aon-") as d:
        url = make_db(request.param, request, Path(d))
        with institution_in(url, Path(d) / "keys") as institution:
            institution.db_url = url  # type: ignore[attr-defined]
            # the webhook operation needs a target the operator allows (nothing is delivered)
            institution.webhook_targets = TargetPolicy(allow=["127.0.0.1/32"])
            yield institution


class Setup:
    """A merchant, a funded customer with a carrier token, a paid... enough to call every
    operation."""

    def __init__(self, inst: Institution) -> None:
        self.inst = inst
        m = inst.merchants.create(
            name="Atomic Shop",
            city="Berlin",
            country="DE",
            mcc=5814,
            settlement_account="DE89370400440532013000",
            api_public_key=None,
            webhook_url=None,
        )
        self.mid = m.merchant.id
        self.cid = inst.customers.create("Atomic Customer").id
        inst.customers.fund(self.cid, "EUR", 10_000)
        self.token = inst.customers.issue_enrollment_token(self.cid).token
        order = inst.orders.create(
            self.mid,
            items=[LineItem("Tea", 1, 300)],
            currency_code="EUR",
            expires_in=900,
            reference=None,
            idempotency_key=None,
        )
        assert isinstance(order, OrderCreated)
        self.order_id = order.order_id
        token = inst.customers.issue_enrollment_token(self.cid).token
        signing = SigningKey.generate().public_key.raw
        transport = X25519PrivateKey.generate().public_key().public_bytes_raw()
        enrolled = inst.carriers.enroll(
            token, signing, transport, attest(inst, token, signing, transport)
        )
        self.serial = enrolled.carrier_serial


def operations(s: Setup) -> dict[str, Callable[[Institution], Any]]:
    """Every state-changing call, with valid arguments."""
    key = SigningKey.generate().public_key.raw
    transport = X25519PrivateKey.generate().public_key().public_bytes_raw()
    attestation = attest(s.inst, s.token, key, transport)  # a genuine carrier's keys
    return {
        "create_merchant": lambda i: i.merchants.create(
            name="Other Shop",
            city="Paris",
            country="FR",
            mcc=5411,
            settlement_account="FR7630006000011234567890189",
            api_public_key=key,
            webhook_url=None,
        ),
        "set_webhook": lambda i: i.merchants.set_webhook(s.mid, "https://127.0.0.1:9443/hook"),
        "certify_merchant_key": lambda i: i.merchants.certify_key(s.mid, key, 30),
        "create_customer": lambda i: i.customers.create("Bob"),
        "fund_customer": lambda i: i.customers.fund(s.cid, "EUR", 500),
        "issue_enrollment_token": lambda i: i.customers.issue_enrollment_token(s.cid),
        "enroll_carrier": lambda i: i.carriers.enroll(s.token, key, transport, attestation),
        "create_order": lambda i: i.orders.create(
            s.mid,
            items=[LineItem("Cake", 2, 250)],
            currency_code="EUR",
            expires_in=900,
            reference="r-1",
            idempotency_key="idem-aon-1",
        ),
        "close_order": lambda i: i.orders.close(s.mid, s.order_id),
        "revoke_carrier": lambda i: i.carriers.revoke(s.serial),
        "revoke_merchant": lambda i: i.merchants.revoke(s.mid),
    }


#: Where a refusal can be injected: (module, attribute) of the steps operations reach.
STEPS = {
    "audit": (audit, "append"),
    "ledger_transfer": (ledger, "post_transfer"),
    "ledger_account": (ledger, "ensure_account"),
    "certificate": (certificates_module, "issue_certificate"),
    "bundle": (enrollment, "seal_bundle"),
    "key_update": (enrollment, "seal_key_update"),
}


def test_a_refusal_at_any_step_of_any_operation_changes_nothing(
    inst: Institution, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Setup(inst)
    url = inst.db_url  # type: ignore[attr-defined]
    reached: dict[str, list[str]] = {}
    for name, op in operations(s).items():
        for step, (module, attr) in STEPS.items():
            calls = {"n": 0}
            original = getattr(module, attr)

            def boom(
                *args: Any, _calls: dict[str, int] = calls, _step: str = step, **kwargs: Any
            ) -> Any:
                _calls["n"] += 1
                raise Injected(f"refused at {_step}")

            def backstop(*args: Any, **kwargs: Any) -> Any:
                raise Injected("refused at the audit entry (backstop)")

            before = snapshot(url)
            with monkeypatch.context() as mp:
                if step != "audit":  # whatever the step, the operation is refused at the end
                    mp.setattr(audit, "append", backstop)
                mp.setattr(module, attr, boom)
                with pytest.raises(Injected):
                    op(inst)
            assert getattr(module, attr) is original
            assert diff(before, snapshot(url)) == {}, f"{name} refused at {step} left changes"
            if calls["n"]:
                reached.setdefault(name, []).append(step)
        # and without any injected refusal the operation does change the database
        before = snapshot(url)
        op(inst)
        assert diff(before, snapshot(url)) != {}, name
    # every operation wrote an audit entry, so every one was refused at least there
    assert set(reached) == set(operations(s)), reached
    assert {"audit", "certificate", "bundle", "key_update"} <= set(reached["enroll_carrier"])
    assert "ledger_transfer" in reached["fund_customer"]
    assert "certificate" in reached["certify_merchant_key"]
