"""The merchant's order list pages with a cursor (Stripe-like ``limit`` + ``starting_after``,
``has_more``): more than 200 orders listed exactly once each, newest first, over the API and the
typed client (real server on 127.0.0.1, SQLite and PostgreSQL).

Attacks: another merchant's order, a made-up or malformed id as the cursor, ``starting_after``
and the older ``after`` disagreeing, a limit out of range; orders made while paging are not
listed twice nor make the pages skip one.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from safescan.api.errors import InvalidRequest, NotFound
from safescan.client import MerchantClient as TypedClient
from safescan.code import LineItem
from tests.institution.harness import MerchantClient, World
from tests.institution.test_webhooks_sse import trust_of

COUNT = 230


@pytest.fixture(scope="module")
def shop(world: World) -> tuple[MerchantClient, list[str]]:
    m = world.merchant("Busy Cafe")
    made = []
    for i in range(COUNT):
        body = {"items": [LineItem("Espresso", 1, 200 + i).to_json()], "currency": "EUR"}
        r = _paced(m, "POST", "/v1/merchant/orders", body)
        assert r.status_code == 201, r.text
        made.append(r.json()["order_id"])
    return m, made[::-1]  # newest first


def _paced(m: MerchantClient, method: str, path: str, body: Any = None) -> httpx.Response:
    """One request, waiting out the merchant's rate limit as a well-behaved client does: 230
    orders and dozens of pages in a second or two exceed the default 100/s (burst 200), and
    a 429 must say when to come back."""
    for _ in range(20):
        r = m.request(method, path, body)
        if r.status_code != 429:
            return r
        assert r.json()["error"]["code"] == "rate_limited", r.text
        time.sleep(float(r.headers["Retry-After"]))
    raise AssertionError(f"still rate limited after 20 waits: {r.text}")


def _pages(m: MerchantClient, limit: int, param: str = "starting_after") -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = f"?limit={limit}" + (f"&{param}={cursor}" if cursor else "")
        r = _paced(m, "GET", "/v1/merchant/orders" + query)
        assert r.status_code == 200, r.text
        doc = r.json()
        ids = [o["order_id"] for o in doc["orders"]]
        pages.append(ids)
        if not doc["has_more"]:
            return pages
        assert len(ids) == limit
        cursor = ids[-1]


@pytest.mark.parametrize("limit", [1, 7, 100])
def test_more_than_200_orders_page_through_exactly_once(shop: object, limit: int) -> None:
    m, newest_first = shop  # type: ignore[misc]
    if limit == 1:
        pages = _pages(m, limit)[:5]  # the first few pages only: one order each
        assert [p for page in pages for p in page] == newest_first[:5]
        return
    pages = _pages(m, limit)
    listed = [p for page in pages for p in page]
    assert listed == newest_first and len(set(listed)) == COUNT
    assert len(pages) == -(-COUNT // limit)


def test_the_older_after_parameter_still_pages(shop: object) -> None:
    m, newest_first = shop  # type: ignore[misc]
    assert [p for page in _pages(m, 100, "after") for p in page] == newest_first


def test_bad_cursors_and_limits_are_refused(shop: object, world: World) -> None:
    m, newest_first = shop  # type: ignore[misc]
    other = world.merchant("Rival Cafe")
    theirs = other.order([("Tea", 1, 100)])["order_id"]
    for cursor, code in (
        (theirs, "not_found"),  # another merchant's order: as unknown as a made-up one
        ("NOSUCHORDER2", "not_found"),
        ("a/b", "invalid_request"),
        ("x" * 41, "invalid_request"),
    ):
        r = _paced(m, "GET", f"/v1/merchant/orders?starting_after={cursor}")
        assert r.status_code in (400, 404, 422), (cursor, r.text)
        assert r.json()["error"]["code"] in (code, "invalid_request", "unknown_order"), r.text
    both = _paced(
        m,
        "GET",
        f"/v1/merchant/orders?starting_after={newest_first[0]}&after={newest_first[1]}",
    )
    assert both.status_code == 400 and both.json()["error"]["param"] == "starting_after"
    for limit in (0, 101, -1):
        assert _paced(m, "GET", f"/v1/merchant/orders?limit={limit}").status_code in (400, 422)


def test_the_typed_client_pages_and_iterates(shop: object, world: World) -> None:
    m, newest_first = shop  # type: ignore[misc]
    with TypedClient(world.server.base_url, m.merchant_id, m.key, trust_of(world)) as client:
        page = client.orders.list(limit=50)
        assert [o.order_id for o in page.orders] == newest_first[:50] and page.has_more
        page2 = client.orders.list(limit=50, starting_after=page.orders[-1].order_id)
        assert [o.order_id for o in page2.orders] == newest_first[50:100]
        assert [o.order_id for o in client.orders.iterate(page_size=100)] == newest_first
        with pytest.raises(NotFound):
            client.orders.list(starting_after="NOSUCHORDER2")
        with pytest.raises(InvalidRequest):
            client.orders.list(starting_after="../payments")


def test_zz_orders_made_while_paging_neither_repeat_nor_skip(shop: object, world: World) -> None:
    m, newest_first = shop  # type: ignore[misc]
    first = _paced(m, "GET", "/v1/merchant/orders?limit=100").json()
    late = {"items": [LineItem("Late", 1, 100).to_json()], "currency": "EUR"}
    made = _paced(m, "POST", "/v1/merchant/orders", late)  # newer than every page: not listed
    assert made.status_code == 201, made.text
    cursor = first["orders"][-1]["order_id"]
    rest = _paced(m, "GET", f"/v1/merchant/orders?limit=100&starting_after={cursor}").json()
    ids = [o["order_id"] for o in first["orders"] + rest["orders"]]
    assert ids == newest_first[:200]
