"""The hosted checkout page's link is never built from the request's ``Host`` header (redteam:
``POST /v1/checkout/sessions`` with ``Host: evil.example`` answered
``"url": "http://evil.example/checkout/cs_..."``, a link the shop hands its customer: whoever
sets the header, a proxy or cache in between included, sends shoppers to a page of theirs).
The link starts with the operator's ``[server] public_url``, else the address the connection
reached. The app is served by uvicorn on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from safescan.institution.http import create_app
from safescan.institution.models import CheckoutSession as CSRow
from safescan.institution.models import IdempotencyRecord
from safescan.institution.settings import ServerSettings
from safescan.institution.util import canonical_json
from safescan.web.publicurl import public_base_url
from tests.institution.dispatch import make_institution
from tests.institution.inthread import Served, served_in_thread

SESSION = {
    "items": [{"name": "Tea", "quantity": 1, "unit_price": 350}],
    "currency": "EUR",
    "success_url": "https://shop.example/ok",
    "cancel_url": "https://shop.example/cancel",
}
HOSTS = (
    "evil.example",
    "evil.example:443",
    "127.0.0.1.evil.example",
    "[::1]@evil.example",
    "evil.example/checkout",
    "localhost",
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    inst = make_institution(Path(tmp_path_factory.mktemp("public-url")))
    with served_in_thread(Served(inst), start_within=60) as s:
        yield s


@pytest.fixture(scope="module")
def key(served: Served) -> str:
    m = served.http.post(
        "/v1/admin/merchants",
        json={
            "name": "Host Tea",
            "city": "Oslo",
            "country": "NO",
            "mcc": 5812,
            "settlement_account": "NO9386011117947",
        },
        headers=served.admin,
    )
    assert m.status_code == 201, m.text
    made = served.http.post(
        f"/v1/admin/merchants/{m.json()['id']}/api-keys",
        json={"scopes": ["checkout:write", "checkout:read"]},
        headers=served.admin,
    )
    assert made.status_code == 201, made.text
    secret: str = made.json()["key"]
    return secret


def _create(http: Any, key: str, host: str | None) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    if host is not None:
        headers["Host"] = host
    return http.post("/v1/checkout/sessions", json=SESSION, headers=headers)


def test_a_foreign_host_header_never_reaches_the_hosted_link(served: Served, key: str) -> None:
    own = f"http://127.0.0.1:{served.port}/checkout/"
    for host in HOSTS:
        r = _create(served.http, key, host)
        assert r.status_code == 201, (host, r.text)
        s = r.json()
        assert s["url"] == own + s["id"], (host, s["url"])
        # read back and cancelled with another foreign Host: the same link
        headers = {"Authorization": f"Bearer {key}", "Host": "evil.example"}
        got = served.http.get(f"/v1/checkout/sessions/{s['id']}", headers=headers)
        assert got.json()["url"] == s["url"]
        gone = served.http.post(f"/v1/checkout/sessions/{s['id']}/cancel", headers=headers)
        assert gone.json()["url"] == s["url"]
    # the link works
    r = _create(served.http, key, None)
    assert served.http.get(r.json()["url"]).status_code == 200


def test_the_configured_public_url_is_the_base_of_every_link(served: Served, key: str) -> None:
    other = Served(served.inst)  # the same institution, served with the setting
    other.server.config.app = create_app(
        served.inst, background=False, public_url=public_base_url("https://pay.example.com/")
    )
    with served_in_thread(other, start_within=60):
        for host in (*HOSTS, "pay.example.com", None):
            r = _create(other.http, key, host)
            assert r.status_code == 201, (host, r.text)
            s = r.json()
            assert s["url"] == f"https://pay.example.com/checkout/{s['id']}", (host, s["url"])


@pytest.mark.parametrize(
    "bad",
    ["pay.example.com", "ftp://pay.example.com", "https://pay.example.com/shop",
     "https://pay.example.com?x=1", "https://pay.example.com#x", "https://u@pay.example.com",
     "https://pay.example.com:99999", "https://pay.example.com\r\nX-A: b", "https://",
     "https://pay example.com", "https://pay.example.com\\@evil.example"],
)  # fmt: skip
def test_a_bad_public_url_setting_is_a_typed_error(bad: str) -> None:
    with pytest.raises(ValueError, match="public_url"):
        public_base_url(bad)
    with pytest.raises(ValueError, match="public_url"):
        ServerSettings.model_validate({"public_url": bad})
    assert public_base_url("https://Pay.Example.com:8443/") == "https://pay.example.com:8443"


def _age_the_recorded_answer(served: Served, idem: str, url: str) -> str:
    """Make the answer recorded for ``idem`` look as one recorded before 21fc511 (its link
    built from that request's Host header); the record's text as it was before."""

    def tx(c: Any) -> str:
        row = c.execute(select(IdempotencyRecord).where(IdempotencyRecord.key == idem)).one()
        body = json.loads(row.response)
        body["url"] = url
        c.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == idem)
            .values(response=canonical_json(body))
        )
        return canonical_json(body)

    aged: str = served.inst.db.write(tx)
    return aged


def test_a_replayed_answer_carries_todays_link_never_a_stored_one(served: Served, key: str) -> None:
    """Idempotent retries and lookups of a session creation whose recorded answer holds an old
    link (a foreign Host's, before 21fc511; or the address before ``public_url`` was set): the
    link is made again from today's base, every other field is as recorded, the record itself
    and the sessions are unchanged (docs/checkout.md, "Idempotency")."""
    idem = "retry-" + key[-12:]
    auth = {"Authorization": f"Bearer {key}", "Idempotency-Key": idem}
    first = served.http.post("/v1/checkout/sessions", json=SESSION, headers=auth)
    assert first.status_code == 201, first.text
    sid = first.json()["id"]
    own = f"http://127.0.0.1:{served.port}/checkout/{sid}"
    aged = _age_the_recorded_answer(served, idem, f"http://evil.example/checkout/{sid}")
    count = served.inst.db.read(lambda c: c.execute(select(func.count()).select_from(CSRow)).one())
    for host in (None, "evil.example", "127.0.0.1.evil.example"):
        retry = served.http.post(
            "/v1/checkout/sessions",
            json=SESSION,
            headers={**auth, **({"Host": host} if host else {})},
        )
        assert retry.status_code == 201, retry.text
        assert retry.json() == {**first.json(), "url": own}, host
        found = served.http.post("/v1/checkout/sessions/lookup", json=SESSION, headers=auth)
        assert found.status_code == 200, found.text
        assert found.json()["outcome"] == "succeeded"
        assert found.json()["checkout_session"] == {**first.json(), "url": own}
    # a server with public_url set: the same record answers with that base
    other = Served(served.inst)
    other.server.config.app = create_app(
        served.inst, background=False, public_url=public_base_url("https://pay.example.com")
    )
    with served_in_thread(other, start_within=60):
        again = other.http.post("/v1/checkout/sessions", json=SESSION, headers=auth)
        assert again.json()["url"] == f"https://pay.example.com/checkout/{sid}"
    # nothing was made again and the record was not rewritten
    assert (
        served.inst.db.read(lambda c: c.execute(select(func.count()).select_from(CSRow)).one())
        == count
    )
    assert (
        served.inst.db.read(
            lambda c: c.execute(
                select(IdempotencyRecord.response).where(IdempotencyRecord.key == idem)
            ).scalar_one()
        )
        == aged
    )
    # the key with another request is still refused, with no link at all
    other_body = {**SESSION, "reference": "another"}
    clash = served.http.post("/v1/checkout/sessions", json=other_body, headers=auth)
    assert clash.status_code == 409, clash.text
    assert clash.json()["error"]["code"] == "idempotency_conflict" and "url" not in clash.json()
