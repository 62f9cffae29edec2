"""The one HTTP transport of every client of the institution (admin, merchant, wallet).

:func:`sync_client` and :func:`async_client` are the only places an ``httpx`` client is made
(TLS settings belong here). :class:`InstitutionHttp` sends one request and turns network
failures into :class:`~safescan.client.errors.InstitutionUnreachable`, non-2xx answers into
the institution's typed errors.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any, Self

import httpx

from safescan.client.errors import (
    InstitutionProtocolError,
    InstitutionUnreachable,
    error_from_response,
    tls_verification_failure,
)
from safescan.web.pki import record_hop, verify_for

DEFAULT_TIMEOUT = 10.0
JsonDoc = dict[str, Any]


def sync_client(base_url: str, timeout: float | httpx.Timeout) -> httpx.Client:
    """The synchronous ``httpx`` client for the institution at ``base_url``: HTTPS verified
    with the CA pinned for it (:func:`safescan.web.pki.verify_for`; never verification off),
    every request recorded as a hop (:func:`safescan.web.pki.hops`)."""
    return httpx.Client(
        base_url=base_url,
        timeout=timeout,
        verify=verify_for(base_url),
        event_hooks={"request": [_note_hop]},
    )


def async_client(base_url: str, timeout: float | httpx.Timeout) -> httpx.AsyncClient:
    """The asyncio ``httpx`` client for the institution at ``base_url`` (the web POS's stream),
    verified like :func:`sync_client`."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=timeout,
        verify=verify_for(base_url),
        event_hooks={"request": [_note_hop_async]},
    )


def _note_hop(request: httpx.Request) -> None:
    record_hop(str(request.url))


async def _note_hop_async(request: httpx.Request) -> None:
    record_hop(str(request.url))


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


def decode_object(resp: httpx.Response) -> JsonDoc:
    """The JSON object of a 2xx answer (anything else is a protocol error)."""
    doc = decode_answer(resp)
    if not isinstance(doc, dict):
        raise InstitutionProtocolError("the institution's answer is not a JSON object")
    return doc


class InstitutionHttp:
    """A small synchronous HTTP client for the institution's API."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = sync_client(self.base_url, timeout)

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
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # no connection: the request never left (a certificate that does not verify: said)
            refused = tls_verification_failure(exc, self.base_url)
            if refused is not None:
                raise refused from None
            raise InstitutionUnreachable(
                f"the institution at {self.base_url} cannot be reached ({type(exc).__name__})",
                maybe_delivered=False,
            ) from None
        except httpx.TimeoutException:
            raise InstitutionUnreachable(
                f"the institution at {self.base_url} did not answer in time"
            ) from None
        except httpx.HTTPError as exc:
            raise InstitutionUnreachable(
                f"the connection to the institution at {self.base_url} failed"
                f" ({type(exc).__name__})"
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

    def call_object(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> JsonDoc:
        """:meth:`call` whose answer must be a JSON object."""
        doc = self.call(method, path, payload, headers=headers)
        if not isinstance(doc, dict):
            raise InstitutionProtocolError("the institution's answer is not a JSON object")
        return doc

    def get_bytes(self, path: str) -> bytes:
        """A binary document (CBOR); a typed error for any non-200 answer."""
        resp = self.send("GET", path)
        if resp.status_code != 200:
            raise error_from_response(resp)
        return resp.content

    @contextlib.contextmanager
    def stream(
        self, path: str, headers: dict[str, str], timeout: httpx.Timeout
    ) -> Iterator[httpx.Response]:
        """A streamed ``GET`` (server-sent events): the open 200 response, else the typed
        error; network failures while opening are :class:`InstitutionUnreachable`."""
        try:
            cm = self.http.stream("GET", path, headers=headers, timeout=timeout)
            resp = cm.__enter__()
        except httpx.HTTPError as exc:
            raise InstitutionUnreachable(
                f"the institution's event stream cannot be opened ({type(exc).__name__})"
            ) from None
        try:
            if resp.status_code != 200:
                resp.read()
                raise error_from_response(resp)
            yield resp
        finally:
            with contextlib.suppress(httpx.HTTPError):
                cm.__exit__(None, None, None)


class ApiClient:
    """What every client of the institution shares: one connection pool and its lifetime."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.http = InstitutionHttp(base_url, timeout=timeout)

    @property
    def base_url(self) -> str:
        """The institution's base URL."""
        return self.http.base_url

    def close(self) -> None:
        """Close connections."""
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
