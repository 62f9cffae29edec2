"""Query strings are as strict as bodies: a parameter a route does not declare, or one given
twice, is a typed ``400`` (``unknown_parameter`` / ``duplicate_parameter``, ``param`` naming
it), never silently ignored or resolved by "the last one wins".

Found by schemathesis in negative mode (unknown query parameters were accepted) and kept in
agreement with the OpenAPI document: :func:`strict_query` is one app-wide dependency (it runs
before each route's own), and :func:`declare_strict_query` says so in every operation of the
document (``x-unknown-query-parameters: refused``). A credential-looking parameter keeps its
own refusal (``401 api_key_in_url``, :mod:`.auth`), checked first. The routes outside the
document (the hosted checkout page, its session JSON, QR image, events and assets) are pages a
shopper reaches by link: they read no query parameter and ignore the ones links carry
(``?utm_source=...``, ``?lang=``; a ``?success_url=`` is ignored, never followed), as a web page
does; only the key-in-URL refusal applies to them.

The same dependency holds bodies to what the document says (:func:`check_body`): one
``Content-Type: application/json`` in UTF-8 (else ``415 unsupported_media_type``), no body on
GET/HEAD (``400 body_not_allowed``), no key twice in a JSON object (``400 duplicate_key``).
"""

# No `from __future__ import annotations`: FastAPI must see the parameter annotations.

import json
import re
import types
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Union, get_args, get_origin
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute

from safescan.api.errors import (
    BodyNotAllowed,
    DuplicateKey,
    DuplicateParameter,
    InvalidRequest,
    UnknownParameter,
    UnsupportedMediaType,
)
from safescan.institution.http.asgi import BODY_KEY
from safescan.institution.http.auth import refuse_key_in_url

#: the name of a query parameter as shown in an error (at most this many characters)
_SHOWN = 40
#: an integer in a query: plain ASCII digits, an optional minus, no leading zero; not "+5",
#: " 5", "05", "-0", "5.0", "1_0" or "0x5", which the framework's lax parsing took as numbers
_INTEGER = re.compile(r"0|-?[1-9][0-9]{0,17}")
#: per route: the query parameter names it declares -> whether each is an integer
_declared: dict[int, dict[str, bool]] = {}


def _is_int(annotation: Any) -> bool:
    if annotation is int:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_int(a) for a in get_args(annotation))
    return False


def declared_query(route: APIRoute) -> Mapping[str, bool]:
    """The query parameter names (aliases) ``route`` declares, its dependencies' included,
    each with whether it is an integer."""
    found = _declared.get(id(route))
    if found is None:
        found = {}
        stack = [route.dependant]
        while stack:
            dep = stack.pop()
            for p in dep.query_params:
                found[p.alias] = _is_int(p.field_info.annotation)
            stack.extend(dep.dependencies)
        _declared[id(route)] = found
    return found


def check_query(query: bytes, allowed: Mapping[str, bool]) -> None:
    """Refuse a query string naming a parameter outside ``allowed`` or one twice, or an
    integer parameter not written in plain digits."""
    if not query:
        return
    seen: set[str] = set()
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name not in allowed:
            raise UnknownParameter(
                f"this route takes no query parameter {name[:_SHOWN]!r}"
                + (f" (it takes: {', '.join(sorted(allowed))})" if allowed else ""),
                param=name[:_SHOWN],
            )
        if name in seen:
            raise DuplicateParameter(
                f"the query parameter {name!r} is given more than once", param=name
            )
        seen.add(name)
        if allowed[name] and not _INTEGER.fullmatch(value):
            raise InvalidRequest(
                f"{name}: must be a whole number in plain digits (no sign, spaces, leading zeros,"
                " decimals or separators)",
                param=name,
            )
    if query.strip(b"&") and not seen:  # "?=x", "?&&": a query with no parameter in it
        raise UnknownParameter("the query string names no parameter", param="query")


#: the one media type of request bodies (as the payment fast routes take it too), lower case
JSON_TYPES = frozenset({b"application/json", b"application/json; charset=utf-8"})


def _repeated(pairs: list[tuple[str, Any]]) -> str | None:
    """The first key of a JSON object's ``pairs`` that stands there twice (None: no key)."""
    seen: set[str] = set()
    for key, _value in pairs:
        if key in seen:
            return key
        seen.add(key)
    return None


def _duplicate_key(key: str) -> DuplicateKey:
    return DuplicateKey(
        f"the JSON body names the key {key[:_SHOWN]!r} twice in one object", param=key[:_SHOWN]
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise _duplicate_key(_repeated(pairs) or "")
    return doc


class JSONRequest(Request):
    """A request whose JSON body the framework reads in one parse that also finds the first
    key named twice in an object (:func:`check_body` refuses it, as a dependency, after the
    framework's own refusals). It decodes and parses as Starlette's ``json.loads(body)`` does,
    byte for byte the same errors, and the model gets the same ``dict`` (the last value of a
    key given twice)."""

    #: the framework has parsed the body, and read it as strict UTF-8 (no BOM)
    utf8_parsed = False
    #: the first key the body names twice in one object (when ``utf8_parsed``)
    duplicate: str | None = None

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            found: list[str] = []

            def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
                doc = dict(items)
                if len(doc) != len(items) and not found:
                    found.append(_repeated(items) or "")
                return doc

            encoding = json.detect_encoding(body)
            try:
                text = body.decode(encoding)
                utf8 = encoding == "utf-8"
            except UnicodeDecodeError:  # json.loads decodes with "surrogatepass"; not UTF-8
                text = body.decode(encoding, "surrogatepass")
                utf8 = False
            self._json = json.JSONDecoder(object_pairs_hook=pairs).decode(text)
            self.utf8_parsed = utf8
            self.duplicate = found[0] if found else None
        return self._json


class JSONRoute(APIRoute):
    """The route class of every router: its handler reads the request as a
    :class:`JSONRequest` (the body is parsed once, duplicate keys found in that parse)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(JSONRequest(request.scope, request.receive, request._send))

        return strict


def check_body(
    method: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    parsed: JSONRequest | None = None,
) -> None:
    """Refuse a body on GET/HEAD, a body that is not UTF-8 ``application/json`` (no BOM), and
    JSON naming a key twice in an object. The framework has parsed the body already (its own
    refusals of broken JSON come first); this is what it let through. ``parsed``: the request,
    when the framework's parse of the UTF-8 text found the duplicate keys already (else the
    body is parsed here: a route that takes no body, or a body json read as UTF-16/32)."""
    if not body:
        return
    if method in ("GET", "HEAD"):
        raise BodyNotAllowed(f"a {method} request takes no body")
    types = [v for k, v in headers if k == b"content-type"]
    if len(types) != 1 or types[0].lower().replace(b";charset", b"; charset") not in JSON_TYPES:
        raise UnsupportedMediaType(
            "request bodies are JSON: one Content-Type: application/json (UTF-8)",
            param="Content-Type",
        )
    if body.startswith(b"\xef\xbb\xbf"):
        raise UnsupportedMediaType("the body starts with a byte-order mark: send plain UTF-8")
    if parsed is not None and parsed.utf8_parsed:
        if parsed.duplicate is not None:
            raise _duplicate_key(parsed.duplicate)
        return
    try:
        json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise UnsupportedMediaType("the body is not UTF-8") from None
    except ValueError:
        raise InvalidRequest("the body is not valid JSON") from None


def strict_query(request: Request) -> None:
    """The app-wide dependency: the request's query against its route's declared names, and
    its body (:func:`check_body`)."""
    scope = request.scope
    check_body(
        scope["method"],
        scope.get("headers", []),
        scope.get(BODY_KEY) or b"",
        request if isinstance(request, JSONRequest) else None,
    )
    query: bytes = scope.get("query_string") or b""
    if not query:
        return
    refuse_key_in_url(query)  # a key in the URL keeps its own answer, whatever the route
    route = request.scope.get("route")
    if isinstance(route, APIRoute) and not route.include_in_schema:
        return  # a browser page (the hosted checkout): not an API operation, see the module
    allowed = declared_query(route) if isinstance(route, APIRoute) else {}
    check_query(query, allowed)


def declare_strict_query(app: FastAPI) -> None:
    """Say in the OpenAPI document that unknown and repeated query parameters are refused."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = plain()
            for item in doc.get("paths", {}).values():
                for op in item.values():
                    if isinstance(op, dict) and "responses" in op:
                        op["x-unknown-query-parameters"] = "refused"
                        op["x-repeated-query-parameters"] = "refused"
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = [
    "JSON_TYPES",
    "JSONRequest",
    "JSONRoute",
    "check_query",
    "declare_strict_query",
    "declared_query",
    "strict_query",
]
