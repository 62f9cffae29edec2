"""What the routers share: the request model bases, field and header types, the client address
of rate limits, the settlement report's two formats, the answer of a keyed operation."""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases.

from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Header, Path, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from safescan.api.fields import StrictModel
from safescan.institution import settlement
from safescan.institution.domain.idempotency import Stored
from safescan.institution.settlement import SettlementRow
from safescan.institution.util import canonical_json
from safescan.institution.wire import CREATED

T = TypeVar("T")


class Strict(StrictModel):
    """Base of every request model: unknown fields refused, JSON integers only (strict)."""


class Closed(BaseModel):
    """Base of the carrier-lifecycle request models: unknown fields refused (numbers are
    strict field by field)."""

    model_config = ConfigDict(extra="forbid")


CurrencyCode = Annotated[
    str, Field(min_length=3, max_length=3, pattern=r"^([A-Za-z]{3}|[0-9]{3})$")
]
Url = Annotated[str, Field(min_length=1, max_length=512)]  # rules: institution.webhook_targets
KeyText = Annotated[str, Field(min_length=40, max_length=88, pattern=r"^[A-Za-z0-9+/=_\-]+$")]
CodeText = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^[\x20-\x7e]+$")]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$"),
]
#: a merchant, customer, order or payment id in a path
ObjectId = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._:\-]+$")]
Serial = Annotated[int, Path(ge=1, le=2**31 - 1)]  # a carrier serial in a path
Day = r"^\d{4}-\d{2}-\d{2}$"  # a UTC day in a query
PageAfter = r"^[A-Za-z0-9._:\-]+$"  # the last id of the page before


def client_address(request: Request) -> str:
    """The key of per-address rate limits."""
    return request.client.host if request.client else "unknown"


def settlement_report(rows: Sequence[SettlementRow], format: str) -> Response:
    """The settlement rows as ``{"rows": [...]}`` or (``format="csv"``) a CSV file."""
    if format == "csv":
        return PlainTextResponse(settlement.to_csv(rows), media_type="text/csv")
    return JSONResponse({"rows": [r.to_dict() for r in rows]})


class RecordedResponse(JSONResponse):
    """A JSON answer rendered as canonical JSON (the bytes an Idempotency-Key's record keeps)."""

    def render(self, content: Any) -> bytes:
        """The canonical JSON of ``content``."""
        return canonical_json(content).encode()


def created(result: T | Stored, encode: Callable[[T], dict[str, Any]]) -> JSONResponse:
    """The answer of a keyed operation (order, payment, refund): its result as created (201,
    the JSON form of :mod:`safescan.institution.wire`), or on a retry the answer stored for its
    Idempotency-Key, sent back exactly as recorded (its canonical JSON, the stored bytes: the
    first answer and every retry's are byte for byte the same)."""
    if isinstance(result, Stored):
        return RecordedResponse(result.body, status_code=result.status)
    return JSONResponse(encode(result), status_code=CREATED)
