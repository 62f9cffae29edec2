"""The hosted checkout page's link is never built from the request's ``Host`` header (redteam:
``POST /v1/checkout/sessions`` with ``Host: evil.example`` answered
``"url": "http://evil.example/checkout/cs_..."``, a link the shop hands its customer: whoever
sets the header, a proxy or cache in between included, sends shoppers to a page of theirs).
The link starts with the operator's ``[server] public_url``, else the address the connection
reached. The app is served by uvicorn on 127.0.0.1 in a thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safescan.institution.http import create_app
from safescan.institution.settings import ServerSettings
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
