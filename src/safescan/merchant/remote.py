"""HTTP plumbing shared by the merchant terminal and the wallet: one client, typed errors.

Every answer of the institution that is not a success becomes the *same* typed error the
institution raised (``OrderNotPayable``, ``CounterReplay``, ``PaymentRefused`` ...), rebuilt
from the error body's ``code``; a network failure becomes :class:`InstitutionUnreachable`.
No raw ``httpx`` exception escapes.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from safescan.code.errors import SafescanError
from safescan.institution import errors as inst_errors

DEFAULT_TIMEOUT = 10.0


class RemoteError(SafescanError):
    """The institution answered with an error this client has no type for."""

    code = "remote_error"

    def __init__(self, message: str, *, status: int = 0, remote_code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.remote_code = remote_code or self.code


class InstitutionUnreachable(SafescanError):
    """The institution could not be reached (down, wrong address, network failure)."""

    code = "institution_unreachable"


class InstitutionProtocolError(SafescanError):
    """The institution's answer is not what the protocol says (not JSON, missing fields)."""

    code = "institution_protocol_error"


def _error_classes() -> dict[str, type[inst_errors.InstitutionError]]:
    table: dict[str, type[inst_errors.InstitutionError]] = {}
    stack: list[type[inst_errors.InstitutionError]] = [inst_errors.InstitutionError]
    while stack:
        cls = stack.pop()
        table.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return table


_BY_CODE = _error_classes()


def error_from_response(resp: httpx.Response) -> SafescanError:
    """The typed error for a non-2xx answer."""
    try:
        body = resp.json()
        err = body["error"]
        code, message = str(err["code"]), str(err["message"])
        param = err.get("param")
    except (ValueError, KeyError, TypeError):
        return RemoteError(
            f"the institution answered HTTP {resp.status_code} without an error description",
            status=resp.status_code,
        )
    cls = _BY_CODE.get(code)
    if cls is not None:
        exc: SafescanError = cls(message, param=param if isinstance(param, str) else None)
    else:
        exc = RemoteError(message, status=resp.status_code, remote_code=code)
        exc.code = code
    return exc


class InstitutionHttp:
    """A small synchronous HTTP client for the institution's API."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> InstitutionHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request; raises :class:`InstitutionUnreachable` on network failure."""
        try:
            return self.http.request(method, path, content=body or None, headers=headers)
        except httpx.TimeoutException:
            raise InstitutionUnreachable(
                f"the institution at {self.base_url} did not answer in time"
            ) from None
        except httpx.HTTPError as exc:
            raise InstitutionUnreachable(
                f"the institution at {self.base_url} cannot be reached ({type(exc).__name__})"
            ) from None

    def call(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """JSON in, JSON out; a typed error for any non-2xx answer."""
        body = b"" if payload is None else encode_json(payload)
        h = {"Content-Type": "application/json", **(headers or {})}
        return decode_answer(self.send(method, path, body=body, headers=h))


def encode_json(payload: Any) -> bytes:
    """The exact bytes sent (and, for merchants, signed)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_answer(resp: httpx.Response) -> Any:
    """The JSON body of a 2xx answer, or the typed error."""
    if not 200 <= resp.status_code < 300:
        raise error_from_response(resp)
    try:
        return resp.json()
    except ValueError:
        raise InstitutionProtocolError("the institution's answer is not JSON") from None
