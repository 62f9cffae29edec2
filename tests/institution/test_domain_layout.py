"""The institution's domain modules (docs/institution.md, "Layout") know nothing of HTTP, answer
with frozen dataclasses, and name each failure with its own error type."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from safescan.api import errors
from safescan.api.errors import NotFound, error_from_dict
from safescan.api.states import PAID_STATES, CodeState, EventType, OrderState, Status
from safescan.institution.domain import idempotency, results
from safescan.institution.util import canonical_json

DOMAIN = Path(__file__).resolve().parents[2] / "src" / "safescan" / "institution" / "domain"
HTTP_MODULES = ("fastapi", "starlette", "uvicorn", "httpx", "safescan.institution.http")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted(DOMAIN.glob("*.py")), ids=lambda p: p.name)
def test_a_domain_module_knows_no_http(path: Path) -> None:
    wrong = {m for m in _imports(path) if m.startswith(HTTP_MODULES)}
    assert not wrong, f"{path.name} imports {sorted(wrong)}"
    # no status decided here: a stored answer's status comes from wire.CREATED or the error
    decided = [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Stored"
        and any(isinstance(a, ast.Constant) for a in node.args[:1])
    ]
    assert not decided, f"{path.name} writes a status code on lines {decided}"


def test_every_result_is_a_frozen_dataclass() -> None:
    classes = [getattr(results, name) for name in results.__all__]
    assert len(classes) >= 20
    for cls in classes:
        assert dataclasses.is_dataclass(cls), cls
        params = cls.__dataclass_params__
        assert params.frozen, f"{cls.__name__} is not frozen"


NOT_FOUND = [
    errors.UnknownMerchant,
    errors.UnknownCustomer,
    errors.UnknownCarrier,
    errors.UnknownOrder,
    errors.UnknownPayment,
    errors.UnknownManufacturerKey,
    errors.UnknownAdminToken,
]


@pytest.mark.parametrize("cls", NOT_FOUND, ids=lambda c: c.__name__)
def test_each_meaning_of_not_found_is_its_own_type_with_the_same_wire_form(
    cls: type[NotFound],
) -> None:
    exc = cls("no such thing", param="some_id")
    others = [c for c in NOT_FOUND if c is not cls]
    assert isinstance(exc, NotFound) and not any(isinstance(exc, c) for c in others)
    assert exc.to_dict() == {
        "type": "NotFound",
        "code": "not_found",
        "message": "no such thing",
        "param": "some_id",
    }
    assert exc.status == 404
    # a refusal stored for an Idempotency-Key replays as the same answer, byte for byte
    stored = idempotency.refusal(exc)
    with pytest.raises(NotFound) as replayed:
        idempotency.replay(stored)
    assert canonical_json(replayed.value.to_dict()) == canonical_json(exc.to_dict())
    assert type(error_from_dict(json.loads(canonical_json(exc.to_dict())), 404)) is NotFound


def test_the_state_enums_are_the_wire_and_database_strings() -> None:
    assert [s.value for s in OrderState] == [
        "CREATED",
        "PAID",
        "PARTIALLY_REFUNDED",
        "REFUNDED",
        "CLOSED",
        "EXPIRED",
    ]
    assert {e.value for e in EventType} == {
        "payment.succeeded",
        "refund.succeeded",
        "order.closed",
        "order.expired",
        "checkout.session.completed",
    }
    assert {s.value for s in CodeState} == {
        "payable",
        "paid",
        "refunded",
        "closed",
        "expired",
        "revoked",
        "unknown",
    }
    assert (Status.ACTIVE, Status.REVOKED) == ("active", "revoked")
    # what is signed, hashed and stored reads exactly as the literal did
    record = {"state": OrderState.PARTIALLY_REFUNDED, "type": EventType.ORDER_CLOSED}
    assert canonical_json(record) == '{"state":"PARTIALLY_REFUNDED","type":"order.closed"}'
    assert f"the order is {OrderState.CLOSED}" == "the order is CLOSED"
    assert OrderState("REFUNDED").is_paid and not OrderState.REFUNDED.is_refundable
    assert {OrderState.PAID, OrderState.PARTIALLY_REFUNDED, OrderState.REFUNDED} == PAID_STATES
    with pytest.raises(ValueError):
        OrderState("paid")  # a state the database never holds is refused, not guessed


def test_the_request_form_of_an_order_line_is_line_items_json_form() -> None:
    from safescan.api.fields import LineItemJson
    from safescan.code.payment import LineItem

    assert tuple(LineItemJson.model_fields) == LineItem.JSON_FIELDS
