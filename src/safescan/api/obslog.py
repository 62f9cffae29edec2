"""Structured JSON logs (structlog) and the request id, shared by safescan's HTTP services.

One JSON object per line on stderr (``ts``, ``level``, ``logger``, ``event``, ``request_id``
when a request is being served, then the event's own fields); stdlib ``logging`` records (the
institution's modules, uvicorn's errors) go through the same renderer, so every line of a
server's log is JSON. ``configure(fmt="console")`` gives readable lines for people instead.

Request id: :class:`RequestLog` takes a sane ``X-Request-Id`` from the client (8-64 characters
of ``[A-Za-z0-9._:-]``) or makes one (``req_`` + 24 hex digits), keeps it in a context variable
for the request (``current_request_id()``: the audit entries and webhook events a request writes
record it), echoes it in the response header and writes one access line when the response
ends. The access line holds the method, the route *template* (never the raw path, which can
carry identifiers or tokens), the status, the duration, the request id, the caller kind and
the client address: never a header, a query string or a body.

Defence in depth: :func:`scrub` replaces the value of any field whose name says it holds a
secret (``authorization``, ``token``, ``pin``, ``secret``, ``password``, ``passphrase``,
``api_key``, ``cookie``, ``signature``, ``private``...) before rendering.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
from asyncio import get_running_loop
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: (method, route template, status, seconds, error code or None) -> None, per request
Observer = Callable[[str, str, int, float, str | None], None]

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_KEY = "safescan.request_id"  # where the id also sits in the ASGI scope
UNMATCHED = "<unmatched>"  # the route label of a request no route matched
#: statuses answered before the router (the body limit's 408 and 413, the rollback guard's
#: 503): the route they are logged under is looked up when :class:`RequestLog` has the routes
EARLY_STATUSES = frozenset({408, 413, 503})
LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("json", "console")

_request_id: ContextVar[str | None] = ContextVar("safescan_request_id", default=None)
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{8,64}")
_ERROR_CODE = re.compile(rb'"code"\s*:\s*"([a-z_]{1,48})"')
_SECRET_NAME = re.compile(
    r"authori[sz]ation|token|(^|_)pin($|_)|secret|passw|passphrase|api_?key|cookie|signature"
    r"|private|seed|credential",
    re.IGNORECASE,
)
REDACTED = "[redacted]"


def current_request_id() -> str | None:
    """The id of the request being served in this context (None outside a request)."""
    return _request_id.get()


def set_request_id(value: str | None) -> Any:
    """Make ``value`` the current request id; returns a token for :func:`reset_request_id`
    (for code that carries a request's work to another thread)."""
    return _request_id.set(value)


def reset_request_id(token: Any) -> None:
    """Undo :func:`set_request_id`."""
    _request_id.reset(token)


_ID_PREFIX = "req_" + secrets.token_hex(6)  # random per process (os.register_at_fork renews it)
_id_counter = itertools.count(1)


def _new_prefix() -> None:
    global _ID_PREFIX, _id_counter  # a forked child must not repeat the parent's ids
    _ID_PREFIX = "req_" + secrets.token_hex(6)
    _id_counter = itertools.count(1)


os.register_at_fork(after_in_child=_new_prefix)


def new_request_id() -> str:
    """A fresh request id: ``req_`` + 12 random hex digits of this process + a 12-hex-digit
    counter (unique without a system call per request)."""
    return f"{_ID_PREFIX}{next(_id_counter):012x}"


def is_sane_request_id(value: str | None) -> bool:
    """Whether ``value`` may be written as an ``X-Request-Id`` (8-64 of ``[A-Za-z0-9._:-]``:
    no CR/LF, control character, space or non-ASCII letter can reach a header or a log)."""
    return value is not None and _SANE_ID.fullmatch(value) is not None


def accept_request_id(raw: bytes | str | None) -> str:
    """The client's ``X-Request-Id`` if it is sane (8-64 of ``[A-Za-z0-9._:-]``), else a new
    one: an id with spaces, quotes, control characters or kilobytes never reaches a log."""
    if raw is not None:
        text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        if _SANE_ID.fullmatch(text):
            return text
    return new_request_id()


# --- rendering ------------------------------------------------------------------------------


_secret_names: dict[str, bool] = {}  # field name -> whether it names a secret (a few dozen)


def scrub(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Replace the value of every field whose name says it is a secret."""
    for key in event:
        secret = _secret_names.get(key)
        if secret is None:
            secret = key != "event" and bool(_SECRET_NAME.search(key))
            if len(_secret_names) < 1024:
                _secret_names[key] = secret
        if secret:
            event[key] = REDACTED
    return event


def _add_request_id(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    rid = _request_id.get()
    if rid is not None and "request_id" not in event:
        event["request_id"] = rid
    return event


class _Sink:
    """The stream every log line goes to (swappable, so loggers built once keep working).

    :meth:`write` writes and flushes at once (any thread). :meth:`defer` (the access lines, on
    the event loop) queues a line and writes everything queued in that turn of the loop with one
    write and one flush at the start of the next turn; a :meth:`write` from anywhere, swapping
    the stream (``configure``), :meth:`drain` and the interpreter's exit write the queued lines
    first, so lines stay in order and none is lost on a clean shutdown."""

    def __init__(self) -> None:
        self.stream: TextIO | None = None  # None: whatever sys.stderr is at the time
        self.lock = threading.Lock()
        self._pending: list[str] = []
        self._scheduled: asyncio.AbstractEventLoop | None = None  # the loop a drain waits in

    def write(self, text: str) -> int:
        stream = self.stream or sys.stderr
        with self.lock:
            if self._pending:  # queued lines first: the log stays in order
                text = "".join(self._pending) + text
                self._pending.clear()
            n = stream.write(text)
            stream.flush()
            return n

    def defer(self, text: str, loop: asyncio.AbstractEventLoop) -> None:
        """Queue ``text`` (a whole line); written at the start of ``loop``'s next turn, with
        every other line queued in this one."""
        with self.lock:
            self._pending.append(text)
            if self._scheduled is loop:
                return
            self._scheduled = loop  # (another loop's drain, if it never runs, is not waited on)
        try:
            loop.call_soon(self.drain)
        except RuntimeError:  # the loop is closing: nothing will run the drain, write now
            self.drain()

    def drain(self) -> None:
        """Write and flush every queued line now."""
        with self.lock:
            self._scheduled = None
            if not self._pending:
                return
            text = "".join(self._pending)
            self._pending.clear()
            stream = self.stream or sys.stderr
            stream.write(text)
            stream.flush()

    def flush(self) -> None:
        self.drain()
        (self.stream or sys.stderr).flush()


_SINK = _Sink()
atexit.register(_SINK.drain)  # a clean exit writes the lines queued in the loop's last turn
_configured: dict[str, Any] = {}


#: values the console renderer writes with ``repr`` that cannot hold a control character
_PLAIN = (int, float, bool, type(None))
#: keys whose text keeps its lines (each indented, so no line of it reads as a record)
_MULTILINE = ("exception", "stack")


def _visible_values(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Every value (a merchant's name or URL, a request's path, a client's header, a stored
    event id) with control, bidi and zero-width characters as escapes: the console format
    writes strings as they are and other values with ``repr`` (the JSON format escapes them
    itself), and a log is read in a terminal. A value of any other type is written as its
    escaped ``repr`` (review: an object whose ``repr`` held a line feed forged a line), and a
    key as escaped text. A traceback or stack keeps its lines, each escaped and indented by two
    spaces: a line feed in an exception's message (``ValueError("x\\n[info ] paid")``) can no
    longer start a line that reads as a record (review: it did)."""
    from safescan.code.display import visible

    for key, value in list(event.items()):
        if isinstance(value, str):
            if key in _MULTILINE:
                value = "\n".join("  " + visible(line) for line in value.split("\n"))
            else:
                value = visible(value)
        elif not isinstance(value, _PLAIN):
            text = repr(value)
            shown = visible(text)
            if shown != text:  # bytes, lists, dicts: their repr escapes already
                value = shown
        safe_key = visible(key)
        if safe_key != key:
            del event[key]
        event[safe_key] = value
    return event


def _renderer(fmt: str) -> Processor:
    if fmt == "console":
        console = structlog.dev.ConsoleRenderer(colors=False)

        def render(logger: WrappedLogger, name: str, event: EventDict) -> str:
            return str(console(logger, name, _visible_values(logger, name, event)))

        return render
    return structlog.processors.JSONRenderer(sort_keys=False)


def configure(
    level: str = "info", fmt: str = "json", *, stream: TextIO | None = None, stdlib: bool = True
) -> None:
    """Set up structlog (and, with ``stdlib``, the root ``logging`` handler) to write ``fmt``
    lines at ``level`` and above to ``stream`` (stderr). Safe to call again (tests do)."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    _SINK.drain()  # lines queued for the old stream go to it
    _SINK.stream = stream
    numeric = getattr(logging, level.upper())
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        _add_request_id,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            scrub,
            _renderer(fmt),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=_SINK),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # the access line's own renderer (access_line) writes what this configuration would
    _configured.update(level=level, fmt=fmt, access_json=fmt == "json" and numeric <= logging.INFO)
    if not stdlib:
        return
    handler = logging.StreamHandler(_SINK)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                scrub,
                _renderer(fmt),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))  # its start-up chatter
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    # the old plain access logger, if anything still uses it, goes through the same handler
    access = logging.getLogger("safescan.institution.access")
    access.handlers = []
    access.propagate = True


def access_line(logger: str, fields: dict[str, Any], request_id: str) -> str:
    """The access line of one request, rendered directly: the same JSON object, key for key and
    in the same order, as ``get_logger(logger).info("request", **fields)`` writes with the
    ``json`` format (``configure``), at a fraction of the cost (one line per request). The
    fields' names hold no secret (``scrub`` would leave them), ``request_id`` is the request's."""
    event: dict[str, Any] = {"logger": logger, **fields}
    event["event"] = "request"
    event["level"] = "info"
    event["ts"] = utc_stamp(time.time_ns())
    event["request_id"] = request_id
    return json_line(event)


def request_line(
    logger: str,
    method: str,
    route: str,
    status: int | None,
    duration_ms: float,
    caller: str,
    client: str | None,
    error: str | None,
    request_id: str,
) -> str:
    """``access_line(logger, {"method": method, "route": route, "status": status,
    "duration_ms": duration_ms, "caller": caller, "client": client, "error": error},
    request_id)``, byte for byte, written in one formatting step (no dictionaries, no loop
    over the fields): :class:`RequestLog`'s line per request. Values of other types than
    these go through :func:`access_line` (tests/api/test_obslog.py compares both)."""
    plain = (
        (status is None or type(status) is int)
        and type(duration_ms) is float
        and duration_ms - duration_ms == 0.0  # finite (NaN, infinities: json's words)
        and (client is None or type(client) is str)
        and (error is None or type(error) is str)
        and type(logger) is type(method) is type(route) is type(caller) is str
        and type(request_id) is str
    )
    if not plain:
        fields: dict[str, Any] = {"method": method, "route": route, "status": status}
        fields |= {"duration_ms": duration_ms, "caller": caller, "client": client}
        return access_line(logger, fields | {"error": error}, request_id)
    return (
        f'{{"logger": {_esc(logger)}, "method": {_esc(method)}, "route": {_esc(route)},'
        f' "status": {"null" if status is None else int.__repr__(status)},'
        f' "duration_ms": {float.__repr__(duration_ms)}, "caller": {_esc(caller)},'
        f' "client": {"null" if client is None else _esc(client)},'
        f' "error": {"null" if error is None else _esc(error)}, "event": "request",'
        f' "level": "info", "ts": "{utc_stamp(time.time_ns())}",'
        f' "request_id": {_esc(request_id)}}}\n'
    )


_esc = json.encoder.encode_basestring_ascii  # what json.dumps uses for text (ensure_ascii)
_stamp: tuple[int, str] = (-1, "")  # (second, its date and time of day): one object, so
# threads never see one second's text paired with another second


def utc_stamp(ns: int) -> str:
    """``ns`` (nanoseconds since the epoch) as ``datetime.isoformat()`` writes it in UTC, with
    ``Z`` for ``+00:00`` (no fraction when the microseconds are 0, as ``isoformat`` does; a
    4-digit year, zero-padded before 1000); the date and time of day are formatted once per
    second."""
    global _stamp
    second, micro = divmod(ns // 1000, 1_000_000)
    cached = _stamp
    if cached[0] != second:
        t = time.gmtime(second)  # not strftime: its %Y writes year 999 as "999", not "0999"
        cached = (
            second,
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
            f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}",
        )
        _stamp = cached
    return f"{cached[1]}.{micro:06d}Z" if micro else f"{cached[1]}Z"


def json_line(event: dict[str, Any]) -> str:
    """``json.dumps(event) + "\\n"``, byte for byte, for a flat object of exact ``str``, ``int``,
    finite ``float``, ``bool`` and None values with ``str`` keys (an access line); any other
    value renders through ``json.dumps`` itself. About 3x cheaper: no encoder object, no
    recursion, no check for cycles."""
    parts = []
    for key, value in event.items():
        kind = type(value)
        if kind is str:
            text = _esc(value)
        elif value is None:
            text = "null"
        elif kind is int:
            text = int.__repr__(value)
        elif kind is bool:
            text = "true" if value else "false"
        elif kind is float and value - value == 0.0:  # finite (NaN and infinities: json's words)
            text = float.__repr__(value)
        else:
            return json.dumps(event) + "\n"
        head = _heads.get(key)
        if head is None:
            if type(key) is not str:
                return json.dumps(event) + "\n"
            head = _esc(key) + ": "
            if len(_heads) < 256:
                _heads[key] = head
        parts.append(head + text)
    return "{" + ", ".join(parts) + "}\n"


_heads: dict[str, str] = {}  # a key's rendering and its colon (a few dozen keys)


def get_logger(name: str) -> Any:
    """A structlog logger named ``name`` (build it once, not per request)."""
    return structlog.get_logger().bind(logger=name)


# --- the per-request middleware ---------------------------------------------------------------


def request_id_of(scope: Scope) -> str:
    """The request's id: the first ``X-Request-Id`` header of ``scope`` when it is sane
    (:func:`accept_request_id`), else a new one. The one reading of the header (the request
    log and the hot routes' layer, :mod:`safescan.institution.http.hot`)."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            return accept_request_id(value)
    return new_request_id()


def route_template(scope: Scope, exact: frozenset[str] = frozenset()) -> str:
    """The matched route's path template (``/v1/merchant/orders/{order_id}``), the path itself
    when it is one of ``exact`` (routes answered before the router), else ``<unmatched>``:
    a bounded set of values whatever paths clients send."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    raw = scope.get("path", "")
    return raw if raw in exact else UNMATCHED


_TEMPLATE_PARAM = re.compile(r"\{([^{}:]+)(?::([^{}]+))?\}")


def template_regex(template: str) -> re.Pattern[str]:
    """The paths a route template (``/v1/merchant/orders/{order_id}``) takes: a parameter is
    one path segment, a ``{name:path}`` parameter any rest."""
    parts, pos = [], 0
    for found in _TEMPLATE_PARAM.finditer(template):
        parts.append(re.escape(template[pos : found.start()]))
        parts.append(".*" if found.group(2) == "path" else "[^/]+")
        pos = found.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts))


class RouteTable:
    """The API's route templates and their methods, to name the route of an answer given
    before the router (:data:`EARLY_STATUSES`). ``source`` gives ``(template, methods,
    caller)`` in the router's order (``caller``: the route's caller kind, its first tag). It
    is read and compiled at the first such answer, never at start (a process that answers
    none pays nothing), and walked only for those answers."""

    def __init__(
        self, source: Callable[[], Iterable[tuple[str, Iterable[str], str | None]]]
    ) -> None:
        self.source = source
        self._table: list[tuple[re.Pattern[str], frozenset[str], str, str | None]] | None = None

    def match(self, method: str, path: str) -> tuple[str, str | None] | None:
        """The template and caller kind of the first route taking ``method`` at ``path``,
        else ``None``."""
        if self._table is None:
            self._table = [
                (template_regex(t), frozenset(m.upper() for m in methods), t, caller)
                for t, methods, caller in self.source()
            ]
        for regex, methods, template, caller in self._table:
            if method in methods and regex.fullmatch(path):
                return template, caller
        return None


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The method, or ``OTHER`` for anything outside the usual seven (bounded labels)."""
    return method if method in _METHODS else "OTHER"


def caller_from_tags(scope: Scope, default: str) -> str:
    """The caller kind a route declares as its first OpenAPI tag (``admin``, ``merchant``,
    ``wallet``, ``public``), else ``default``."""
    tags = getattr(scope.get("route"), "tags", None)
    if tags:
        first = tags[0]
        return first if isinstance(first, str) else default
    return default


class RequestLog:
    """ASGI middleware: request id in, request id out, one access line and one observation
    (``observe``: metrics) per HTTP request when its response ends."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        access_log: bool = True,
        observe: Observer | None = None,
        exact_routes: dict[str, str] | None = None,
        default_caller: str = "public",
        routes: RouteTable | None = None,
    ) -> None:
        """``exact_routes`` maps paths answered before the router (fast routes) to their
        caller kind; ``routes`` (the app's templates, :class:`RouteTable`) name the route of
        an answer given before the router (:data:`EARLY_STATUSES`: 408, 413, 503), which is
        otherwise logged and counted as ``<unmatched>``."""
        self.app = app
        self.access_log = access_log
        self.observe = observe
        self.exact_routes = dict(exact_routes or {})
        self._exact = frozenset(self.exact_routes)
        self.default_caller = default_caller
        self.routes = routes
        self.log_name = f"safescan.{service}.access"
        self.log = get_logger(self.log_name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope)
        scope[REQUEST_ID_KEY] = rid
        token = _request_id.set(rid)
        started = time.perf_counter()
        answer = Answer(send, rid)
        try:
            await self.app(scope, receive, answer)
        finally:
            self.finish(scope, rid, started, answer.status, answer.error)
            _request_id.reset(token)

    def finish(
        self, scope: Scope, rid: str, started: float, status: int, error: str | None
    ) -> None:
        """The request's observation and access line (its response has ended: ``status`` 0
        when there was none)."""
        elapsed = time.perf_counter() - started
        method = method_label(scope.get("method", ""))
        route = route_template(scope, self._exact)
        early: str | None = None  # the caller kind of a route found for an early answer
        if route == UNMATCHED and status in EARLY_STATUSES and self.routes is not None:
            # answered before the router set scope["route"]: the route it would have matched
            # (before: <unmatched>, so a 413 on an order route was not told from a junk path)
            found = self.routes.match(method, scope.get("path", ""))
            if found is not None:
                route, early = found[0], found[1] or self.default_caller
        if self.observe is not None:
            self.observe(method, route, status, elapsed, error)
        if self.access_log:
            caller = (
                self.exact_routes.get(route)
                or early
                or caller_from_tags(scope, self.default_caller if route != UNMATCHED else "unknown")
            )
            client = scope.get("client")
            address = client[0] if client else None
            ms = round(elapsed * 1000, 2)
            shown = status or None  # None: no response (client gone, or a crash)
            if _configured.get("access_json"):  # written once per turn of the loop
                line = request_line(
                    self.log_name, method, route, shown, ms, caller, address, error, rid
                )
                _SINK.defer(line, get_running_loop())
            else:
                self.log.info(
                    "request", method=method, route=route, status=shown, duration_ms=ms,
                    caller=caller, client=address, error=error,
                )  # fmt: skip


class Answer:
    """The ``send`` of one request as :class:`RequestLog` sees it: adds the ``X-Request-Id``
    header to the response's start, keeps its status and, for an error answer, the error
    code of a typed error (never its message) from the first part of its body."""

    __slots__ = ("echo", "error", "peek", "send", "status")

    def __init__(self, send: Send, rid: str) -> None:
        self.send = send
        self.echo = (b"x-request-id", rid.encode())
        self.status = 0
        self.error: str | None = None
        self.peek = False

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            status = self.status = message["status"]
            message["headers"] = [*message.get("headers", ()), self.echo]
            self.peek = status >= 400
        elif self.peek and kind == "http.response.body":
            self.peek = False
            found = _ERROR_CODE.search(message.get("body", b"")[:4096])
            if found:
                self.error = found.group(1).decode()
        await self.send(message)


__all__ = [
    "EARLY_STATUSES",
    "REQUEST_ID_HEADER",
    "REQUEST_ID_KEY",
    "UNMATCHED",
    "Answer",
    "Observer",
    "RequestLog",
    "RouteTable",
    "accept_request_id",
    "access_line",
    "caller_from_tags",
    "configure",
    "current_request_id",
    "get_logger",
    "method_label",
    "new_request_id",
    "request_id_of",
    "reset_request_id",
    "route_template",
    "scrub",
    "set_request_id",
    "template_regex",
]
