"""The server is as strict as its OpenAPI document (redteam; schemathesis in negative mode found
unknown query parameters silently ignored): on every operation of the document, a query
parameter the operation does not declare, or one given twice, is a typed ``400``
(``unknown_parameter`` / ``duplicate_parameter``), an integer in a query is plain digits, and
the document says so for each operation. The app is served by uvicorn on 127.0.0.1; the
refusals change nothing (a balance funded through a refused request stays as it was).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.institution.dispatch import make_institution
from tests.institution.inthread import Served, served_in_thread

JSON = "application/json"
JSON_HEADER = {"Content-Type": JSON}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    inst = make_institution(Path(tmp_path_factory.mktemp("strict")))
    with served_in_thread(Served(inst), start_within=60) as s:
        yield s


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """Every (method, path with its path parameters filled, declared query names)."""
    ops = []
    for path, item in doc["paths"].items():
        filled = re.sub(r"\{(serial|kid)\}", "1", path)
        filled = re.sub(r"\{[^}]+\}", "X1", filled)
        for method, op in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            names = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
            ops.append((method.upper(), filled, names))
    return ops


def _error(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"].startswith("application/json"), r.text
    body: dict[str, Any] = r.json()["error"]
    return body


def test_every_operation_refuses_an_unknown_query_parameter_and_says_so(served: Served) -> None:
    doc = served.http.get("/openapi.json").json()
    ops = _operations(doc)
    assert len(ops) > 40, "the document lists the API"
    assert "unknown_parameter" in doc["info"]["description"]
    for item in doc["paths"].values():
        for method, op in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                assert op["x-unknown-query-parameters"] == "refused"
                assert op["x-repeated-query-parameters"] == "refused"
    for method, path, names in ops:
        # with and without credentials: the refusal comes first, whatever else is wrong
        for headers in ({}, served.admin):
            for query in ("zz_unknown=1", "LIMIT=1", "limit[]=1", "=1", "%00=1", "a%3Db=1"):
                if query.split("=")[0] in names:
                    continue
                body = None if method == "GET" else {}
                r = served.http.request(method, f"{path}?{query}", headers=headers, json=body)
                assert r.status_code == 400, (method, path, query, r.text)
                assert _error(r)["code"] == "unknown_parameter", (method, path, query)


def test_a_declared_query_parameter_given_twice_is_refused(served: Served) -> None:
    doc = served.http.get("/openapi.json").json()
    tried = 0
    for method, path, names in _operations(doc):
        for name in names:
            for query in (f"{name}=1&{name}=2", f"{name}=1&%{ord(name[0]):02X}{name[1:]}=2"):
                r = served.http.request(method, f"{path}?{query}", headers=served.admin)
                assert r.status_code == 400, (method, path, query, r.text)
                assert _error(r) == {
                    "type": "DuplicateParameter",
                    "code": "duplicate_parameter",
                    "message": f"the query parameter {name!r} is given more than once",
                    "param": name,
                }
                tried += 1
    assert tried >= 20


@pytest.mark.parametrize(
    "value", ["+5", "05", "-0", "5.0", "%205", "5%20", "1_0", "0x5", "1e1", "%D9%A1", "", "5abc"]
)
def test_integers_in_a_query_are_plain_digits(served: Served, value: str) -> None:
    r = served.http.get(f"/v1/admin/customers?limit={value}", headers=served.admin)
    assert r.status_code == 400, r.text
    assert _error(r)["code"] == "invalid_request"
    assert _error(r)["param"] == "limit"
    ok = served.http.get("/v1/admin/customers?limit=5", headers=served.admin)
    assert ok.status_code == 200


def test_refused_queries_change_nothing_and_the_fast_path_refuses_them_too(
    served: Served,
) -> None:
    cid = served.http.post("/v1/admin/customers", json={"name": "Q"}, headers=served.admin)
    cid_text = cid.json()["id"]
    fund = f"/v1/admin/customers/{cid_text}/fund"
    for query in ("amount=999", "currency=USD", "dry_run=1", "x=1&x=2"):
        r = served.http.post(
            f"{fund}?{query}", json={"currency": "EUR", "amount": 5}, headers=served.admin
        )
        assert r.status_code == 400, r.text
    balances = served.http.get(f"/v1/admin/customers/{cid_text}", headers=served.admin)
    assert balances.json()["balances"] == []
    # the framework-free payment routes: a query string is the framework's typed refusal
    for path in ("/v1/payments", "/v1/payments/lookup"):
        r = served.http.post(f"{path}?x=1", json={"code": "SS1.x", "authorization": "AAAA"})
        assert r.status_code == 400, r.text
        assert _error(r)["code"] == "unknown_parameter"


def test_a_key_in_the_url_keeps_its_own_refusal(served: Served) -> None:
    for path in ("/v1/keys", "/v1/merchant/orders", "/health"):
        r = served.http.get(f"{path}?api_key=sk_live_x")
        assert r.status_code == 401, r.text
        assert _error(r)["code"] == "api_key_in_url"


FUND_BODIES: dict[str, tuple[bytes, str | None, int, str]] = {
    # name: (body, Content-Type, status, code)
    "amount twice": (b'{"currency":"EUR","amount":1,"amount":999}', JSON, 400, "duplicate_key"),
    "currency twice": (b'{"currency":"USD","currency":"EUR","amount":1}', JSON, 400,
                       "duplicate_key"),
    "escaped twice": (b'{"currency":"EUR","amount":1,"\\u0061mount":999}', JSON, 400,
                      "duplicate_key"),
    "byte-order mark": (b'\xef\xbb\xbf{"currency":"EUR","amount":1}', JSON, 415,
                        "unsupported_media_type"),
    "UTF-16": ('{"currency":"EUR","amount":1}'.encode("utf-16"), JSON, 415,
               "unsupported_media_type"),
    "text/plain": (b'{"currency":"EUR","amount":1}', "text/plain", 415, "unsupported_media_type"),
    "no type": (b'{"currency":"EUR","amount":1}', None, 415, "unsupported_media_type"),
    "vnd+json": (b'{"currency":"EUR","amount":1}', "application/vnd.x+json", 415,
                 "unsupported_media_type"),
    "latin-1": (b'{"currency":"EUR","amount":1}', "application/json; charset=latin-1", 415,
                "unsupported_media_type"),
    "form": (b"currency=EUR&amount=1", "application/x-www-form-urlencoded", 415,
             "unsupported_media_type"),
    "trailing JSON": (b'{"currency":"EUR","amount":1} {"amount":999}', JSON, 400,
                      "invalid_request"),
    "NaN": (b'{"currency":"EUR","amount":NaN}', JSON, 400, "invalid_request"),
    "-0": (b'{"currency":"EUR","amount":-0}', JSON, 400, "invalid_request"),
    "1.0": (b'{"currency":"EUR","amount":1.0}', JSON, 400, "invalid_request"),
    "string": (b'{"currency":"EUR","amount":"1"}', JSON, 400, "invalid_request"),
    "true": (b'{"currency":"EUR","amount":true}', JSON, 400, "invalid_request"),
    "2**64": (b'{"currency":"EUR","amount":18446744073709551616}', JSON, 400,
              "invalid_request"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FUND_BODIES))
def test_bodies_a_strict_reader_would_refuse_are_refused_and_change_nothing(
    served: Served, name: str
) -> None:
    body, ctype, status, code = FUND_BODIES[name]
    cid = served.http.post("/v1/admin/customers", json={"name": "B"}, headers=served.admin)
    fund = f"/v1/admin/customers/{cid.json()['id']}/fund"
    headers = dict(served.admin)
    if ctype is not None:
        headers["Content-Type"] = ctype
    r = served.http.post(fund, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert _error(r)["code"] == code
    after = served.http.get(f"/v1/admin/customers/{cid.json()['id']}", headers=served.admin)
    assert after.json()["balances"] == []
    ok = served.http.post(
        fund, content=b'{"currency":"EUR","amount":1}', headers={**served.admin, **JSON_HEADER}
    )
    assert ok.status_code == 200, ok.text


def test_a_payment_with_a_key_twice_is_refused_on_the_fast_path_too(served: Served) -> None:
    """The framework-free payment routes take only bodies with each key once, literally:
    anything else is the routed route's typed refusal."""
    for path in ("/v1/payments", "/v1/payments/lookup"):
        for body in (
            b'{"code":"SS1.A","authorization":"AAAA","code":"SS1.B"}',
            b'{"code":"SS1.A","authorization":"AAAA","\\u0063ode":"SS1.B"}',
            b'{"authorization":"AAAA","authorization":"BBBB","code":"SS1.A"}',
        ):
            r = served.http.post(path, content=body, headers=JSON_HEADER)
            assert r.status_code == 400, (path, body, r.text)
            assert _error(r)["code"] == "duplicate_key"


def test_a_json_body_is_parsed_once(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """The framework's parse (query.JSONRequest) finds a key given twice: on every operation
    with a request body, check_body refuses it from that parse, never parsing the body again
    (its own reader, counted here, reads only bodies sent to operations that take none)."""
    from safescan.institution.http import query

    second: list[int] = []
    plain = query._no_duplicates

    def counted(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        second.append(len(pairs))
        return plain(pairs)

    monkeypatch.setattr(query, "_no_duplicates", counted)
    doc = served.http.get("/openapi.json").json()
    headers = {**served.admin, **JSON_HEADER}
    taken = {True: 0, False: 0}
    for path, item in doc["paths"].items():
        filled = re.sub(r"\{[^}]+\}", "X1", re.sub(r"\{(serial|kid)\}", "1", path))
        for method, op in item.items():
            if method not in {"post", "put", "patch", "delete"}:
                continue
            second.clear()
            r = served.http.request(
                method.upper(), filled, content=b'{"name":"A","name":"B"}', headers=headers
            )
            assert r.status_code == 400, (method, path, r.text)
            assert _error(r)["code"] == "duplicate_key", (method, path, r.text)
            takes_body = "requestBody" in op
            taken[takes_body] += 1
            assert bool(second) is not takes_body, (method, path, second)
    assert taken[True] > 10 and taken[False] > 0, taken


def test_a_body_on_a_get_is_refused(served: Served) -> None:
    for path in ("/v1/keys", "/v1/admin/customers", "/health"):
        r = served.http.request(
            "GET", path, content=b'{"limit":1}', headers={**served.admin, **JSON_HEADER}
        )
        assert r.status_code == 400, (path, r.text)
        assert _error(r)["code"] == "body_not_allowed"


HUGE = b"9" * 5000  # beyond Python's 4,300-digit int-from-text bound (int_max_str_digits)
NUMBER_BODIES: dict[str, tuple[bytes, str]] = {
    # name: (the amount as written, the typed code)
    "5000 digits": (HUGE, "number_out_of_range"),
    "-5000 digits": (b"-" + HUGE, "number_out_of_range"),
    "60000 digits": (b"1" + b"0" * 60000, "number_out_of_range"),
    "5000 digits in a list": (b"[" + HUGE + b"]", "number_out_of_range"),
    "4000 digits": (b"9" * 4000, "invalid_request"),  # read, then too large for the field
    "5000-digit fraction": (b"1." + HUGE, "invalid_request"),
    "1e400": (b"1e400", "invalid_request"),
    "1e-400": (b"1e-400", "invalid_request"),
    "30000 brackets": (b"[" * 30000 + b"]" * 30000, "nested_too_deeply"),
}


@pytest.mark.parametrize("name", sorted(NUMBER_BODIES))
def test_numbers_of_thousands_of_digits_are_a_typed_refusal_that_changes_nothing(
    served: Served, name: str
) -> None:
    """A JSON number no field can hold is a typed 400 (it was the generic ``http_error`` "There
    was an error parsing the body"), on the routed routes and the payment fast routes alike,
    and nothing is funded."""
    value, code = NUMBER_BODIES[name]
    cid = served.http.post("/v1/admin/customers", json={"name": "N"}, headers=served.admin)
    fund = f"/v1/admin/customers/{cid.json()['id']}/fund"
    body = b'{"currency":"EUR","amount":' + value + b"}"
    r = served.http.post(fund, content=body, headers={**served.admin, **JSON_HEADER})
    assert r.status_code == 400, r.text
    assert _error(r)["code"] == code, r.text
    after = served.http.get(f"/v1/admin/customers/{cid.json()['id']}", headers=served.admin)
    assert after.json()["balances"] == []
    for path in ("/v1/payments", "/v1/payments/lookup"):
        body = b'{"code":"SS1.A","authorization":"AAAA","n":' + value + b"}"
        r = served.http.post(path, content=body, headers=JSON_HEADER)
        assert r.status_code == 400, (path, r.text)
        assert _error(r)["code"] == code, (path, r.text)


def test_the_framework_routes_follow_the_same_query_rules(served: Served) -> None:
    """The routes the framework adds outside the app-wide dependency: ``/openapi.json`` is read
    by programs and refuses an unknown parameter like every operation it lists (it answered
    200, ignoring it); the documentation pages and their files are reached by link and ignore
    link parameters, like the hosted checkout page; a key in the URL is refused on all."""
    files = served.http.get("/docs").text
    asset = re.search(r'"(/static-offline-docs/[^"?]+)', files)
    assert asset is not None, "the docs page loads its files from this server"
    for method in ("GET", "HEAD"):
        for query, param in (("x=1", "x"), ("utm_source=mail", "utm_source"),
                             ("format=yaml", "format"), ("x=1&x=2", "x")):  # fmt: skip
            r = served.http.request(method, f"/openapi.json?{query}")
            assert r.status_code == 400, (method, query, r.status_code)
            if method == "GET":
                assert _error(r) == {**_error(r), "code": "unknown_parameter", "param": param}
    for path in ("/openapi.json", "/docs", "/redoc", asset.group(1)):
        r = served.http.get(f"{path}?api_key=sk_live_x")
        assert r.status_code == 401, (path, r.status_code)
        assert _error(r)["code"] == "api_key_in_url"
        r = served.http.get(f"{path}?access_token=abc")
        assert r.status_code == 401, (path, r.status_code)
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect", asset.group(1)):
        r = served.http.get(f"{path}?utm_source=mail&v=3")
        assert r.status_code == 200, (path, r.status_code)
    assert served.http.get("/openapi.json").status_code == 200


def test_metrics_take_no_query_parameter_and_no_token_in_the_url() -> None:
    """``/metrics`` (outside the app: the Prometheus wrapper) is read by programs too: a query
    parameter is ``400 unknown_parameter`` (it was ignored), a token in the URL ``401
    api_key_in_url`` (the metrics token goes in the header), before the access check."""
    import asyncio

    from safescan.institution.metrics import MetricsAccess, MetricsEndpoint

    class Empty:
        def collect(self) -> list[Any]:
            return []

    async def app(_scope: Any, _receive: Any, _send: Any) -> None:
        raise AssertionError("the wrapper answers /metrics itself")

    endpoint = MetricsEndpoint(app, Empty(), MetricsAccess("loopback"))  # type: ignore[arg-type]

    def get(query: bytes) -> tuple[int, dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {"type": "http", "method": "GET", "path": "/metrics", "query_string": query,
                 "headers": [], "client": ("127.0.0.1", 5000)}  # fmt: skip
        asyncio.run(endpoint(scope, receive, send))
        body = b"".join(m.get("body", b"") for m in sent[1:])
        import json

        return sent[0]["status"], json.loads(body) if sent[0]["status"] != 200 else {}

    assert get(b"")[0] == 200
    for query, param in ((b"x=1", "x"), (b"name[]=up", "name[]"), (b"format=json", "format")):
        status, doc = get(query)
        assert (status, doc["error"]["code"], doc["error"]["param"]) == (
            400, "unknown_parameter", param), query  # fmt: skip
    for query in (b"token=abcdefghijklmnop", b"access_token=x", b"x=sk_live_abc"):
        status, doc = get(query)
        assert (status, doc["error"]["code"]) == (401, "api_key_in_url"), query
