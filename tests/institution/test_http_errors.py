"""Every error type reaches the client through its own handler (safescan.institution.http.errors):
the status and ``Retry-After`` of ``safescan.api.errors.http_status`` / ``retry_after``, the body
``{"error": {"type", "code", "message", "param"?}}``, and for an exception nobody expected a
generic 500 that leaks nothing. Errors are raised from inside real routes of the real app,
served by uvicorn on 127.0.0.1: a framework route (``GET /v1/keys``) and the payment fast path
(``POST /v1/payments``), which answers from the same handler table.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import safescan.api.account
import safescan.api.events
import safescan.code.attestation
from safescan.api.errors import (
    InstitutionError,
    InvalidRequest,
    RateLimited,
    http_status,
    retry_after,
)
from safescan.code.errors import SafescanError
from safescan.institution.http.errors import INTERNAL_ERROR
from tests.institution import inthread
from tests.institution.dispatch import make_institution

assert safescan.api.account and safescan.api.events and safescan.code.attestation  # loaded


def _error_types() -> list[type[SafescanError]]:
    seen: list[type[SafescanError]] = []
    stack: list[type[SafescanError]] = [SafescanError]
    while stack:
        cls = stack.pop()
        if cls.__module__.startswith(("safescan.api", "safescan.code")) and cls not in seen:
            seen.append(cls)
        stack.extend(cls.__subclasses__())
    return sorted(seen, key=lambda c: c.__qualname__)


def _instance(cls: type[SafescanError]) -> SafescanError:
    if issubclass(cls, InstitutionError):
        return cls(f"refused by {cls.__name__} \u00e9\u00e8", param="some.field")
    return cls(f"refused by {cls.__name__}")


ERROR_TYPES = _error_types()


class Served(inthread.Served):
    """The app over one institution, served on 127.0.0.1 in a thread."""

    def raising(self, name: str, exc: BaseException) -> None:
        """Make the institution's method ``name`` (``module.method``, e.g.
        ``payments.pay_async``) raise ``exc``."""

        def boom(*_args: Any, **_kwargs: Any) -> Any:
            raise exc

        async def boom_async(*_args: Any, **_kwargs: Any) -> Any:
            raise exc

        module, method = name.split(".")
        target = getattr(self.inst, module)
        setattr(target, method, boom_async if method.endswith("_async") else boom)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    inst = make_institution(Path(tmp_path_factory.mktemp("errors")))
    with inthread.served_in_thread(Served(inst), start_within=30) as s:
        yield s


def _keys(s: Served) -> httpx.Response:
    return s.http.get("/v1/keys")


def _pay(s: Served) -> httpx.Response:
    return s.http.post("/v1/payments", json={"code": "SS1.x", "authorization": "AAAA"})


ROUTES: dict[str, tuple[str, Callable[[Served], httpx.Response]]] = {
    "framework route": ("setup.public_keys", _keys),
    "payment fast path": ("payments.pay_async", _pay),
}


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("cls", ERROR_TYPES, ids=lambda c: c.__name__)
def test_each_error_type_answers_with_its_status_and_body(
    served: Served, route: str, cls: type[SafescanError]
) -> None:
    method, call = ROUTES[route]
    try:
        exc = _instance(cls)
    except TypeError:
        pytest.skip(f"{cls.__name__} takes other arguments")
    served.raising(method, exc)
    r = call(served)
    assert r.status_code == http_status(exc), (cls, r.text)
    assert r.json() == {"error": exc.to_dict()}
    wait = retry_after(exc)
    assert r.headers.get("retry-after") == (None if wait is None else str(wait))
    assert r.headers["content-type"].startswith("application/json")


def test_the_vocabulary_is_wide_enough_to_mean_something() -> None:
    statuses = {http_status(_instance(c)) for c in ERROR_TYPES if c is not SafescanError}
    assert {400, 401, 402, 403, 404, 409, 422, 429, 500, 503} <= statuses
    assert {"RequestInProgress", "OutcomeUnknown", "SignatureInvalid", "MalformedCode"} <= {
        c.__name__ for c in ERROR_TYPES
    }


class _Surprise(Exception):
    pass


UNEXPECTED: list[BaseException] = [
    RuntimeError("secret-detail /srv/safescan/service.py line 12"),
    KeyError("secret-detail"),
    ZeroDivisionError("secret-detail"),
    ValueError("secret-detail"),
    _Surprise("secret-detail"),
    OSError(errno.EIO, "secret-detail"),
    TypeError("secret-detail"),
]


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("exc", UNEXPECTED, ids=lambda e: type(e).__name__)
def test_an_unexpected_exception_is_a_generic_500_that_leaks_nothing(
    served: Served, route: str, exc: BaseException
) -> None:
    method, call = ROUTES[route]
    served.raising(method, exc)
    r = call(served)
    assert r.status_code == 500
    assert r.json() == INTERNAL_ERROR
    for leak in ("secret-detail", "Traceback", type(exc).__name__, "service.py"):
        assert leak not in r.text
    # the server still answers (on a new connection: after an unexpected error the server
    # may close the one it answered on)
    served.http.close()
    served.http = httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=30)
    served.raising(method, InvalidRequest("after the surprise"))
    assert call(served).status_code == 400


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("number", [errno.EMFILE, errno.ENFILE])
def test_out_of_descriptors_is_a_retryable_503(served: Served, route: str, number: int) -> None:
    method, call = ROUTES[route]
    served.raising(method, OSError(number, "Too many open files"))
    r = call(served)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "outcome_unknown"
    assert r.headers["retry-after"] == "1"


def test_a_rate_limit_from_a_route_says_when_to_retry(served: Served) -> None:
    served.raising("orders.code_status", RateLimited("slow down"))
    r = served.http.post("/v1/codes/status", json={"code": "SS1.x"})
    assert (r.status_code, r.headers["retry-after"]) == (429, "1")
    assert r.json()["error"] == {
        "type": "RateLimited",
        "code": "rate_limited",
        "message": "slow down",
    }


@pytest.mark.parametrize(
    ("method", "path", "status", "kind"),
    [
        ("GET", "/v1/no-such-thing", 404, ("NotFound", "not_found")),
        ("GET", "/v1/admin/merchants/x/y/z", 404, ("NotFound", "not_found")),
        ("DELETE", "/v1/keys", 405, ("MethodNotAllowed", "method_not_allowed")),
        ("PUT", "/v1/payments/lookup", 405, ("MethodNotAllowed", "method_not_allowed")),
    ],
)
def test_the_framework_errors_have_their_own_handlers(
    served: Served, method: str, path: str, status: int, kind: tuple[str, str]
) -> None:
    r = served.http.request(method, path)
    assert r.status_code == status
    err = r.json()["error"]
    assert (err["type"], err["code"]) == kind and err["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/keys/"),
        ("GET", "/health/"),
        ("GET", "/v1/admin/customers/"),
        ("GET", "/checkout/cs_abc/"),  # the customer-facing hosted page
        ("GET", "/v1/merchant/orders/"),
        ("POST", "/v1/payments/"),
        ("POST", "/v1/codes/status/"),
        ("POST", "/v1/admin/merchants/"),
    ],
)
def test_a_trailing_slash_is_a_typed_404_never_a_redirect_to_the_host_header(
    served: Served, method: str, path: str
) -> None:
    """redteam: the framework answered ``/v1/keys/`` with ``307`` and ``Location`` built from
    the request's ``Host`` header (``https://evil.example/v1/keys``): an open redirect for
    whoever sets the header (a cache, a proxy), and an untyped empty answer. Now every
    unknown path, a trailing slash included, is the typed 404, whatever the Host says."""
    for host in ("evil.example", "127.0.0.1", "evil.example:8443", "[::1]:1"):
        r = served.http.request(method, path, headers={"Host": host}, json={})
        assert r.status_code == 404, (path, host, r.status_code, r.headers)
        assert "location" not in r.headers
        assert r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"code": "SS1.x"}, "authorization"),
        ({"code": "SS1.x", "authorization": "AAAA", "extra": 1}, "extra"),
        ({"code": 5, "authorization": "AAAA"}, "code"),
    ],
)
def test_a_schema_refusal_is_400_naming_the_field_on_both_paths(
    served: Served, body: dict[str, Any], param: str
) -> None:
    for path in ("/v1/payments", "/v1/payments/lookup"):
        r = served.http.post(path, json=body)
        assert r.status_code == 400, (path, r.text)
        err = r.json()["error"]
        assert (err["code"], err["param"]) == ("invalid_request", param), (path, err)
