"""The two hot routes (POST /v1/payments and POST /v1/payments/lookup) at their edges, through
every layer ``institution serve`` puts around the app (:func:`safescan.institution.server.
layers`: request id, access line, metrics, the rollback guard, the body limit, the fast route).

Served on 127.0.0.1 by uvicorn in a thread: an oversized body (declared and streamed) and a
body that stops arriving are answered exactly as on a route that is not hot; a malformed body
or content type gets the framework's answer; the request id is echoed when sane and made
otherwise, in the header and the access line; a refusing rollback guard answers the hot routes
as it answers every route; a failure inside the payment's transaction leaves the database as it
was. In-process, every kind of request is sent to :func:`~safescan.institution.server.layers`
and to the layers composed one by one (the stack before issue 20's twelfth sitting): the answer
(status, headers, body), the access line and the metrics observation must be the same.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from safescan.api import obslog
from safescan.institution import metrics
from safescan.institution import server as server_module
from safescan.institution.access_log import api_routes, observed
from safescan.institution.db import Database
from safescan.institution.http.app import create_app
from safescan.institution.keystore import KeyStore
from safescan.institution.ratelimit import RateLimiter
from safescan.institution.rollback import GuardedApp, RollbackGuard
from safescan.institution.service import Institution
from tests.institution.harness import PASSPHRASE, b64, init_db
from tests.institution.inthread import Served, served_in_thread
from tests.institution.loadprep import make_payables
from tests.institution.pg import free_port
from tests.institution.snapshot import diff, snapshot

PAY = "/v1/payments"
LOOKUP = "/v1/payments/lookup"
HOT = (PAY, LOOKUP)
OTHER = "/v1/codes/status"  # a POST route with a JSON body that is not hot
BODY_TIMEOUT = 0.5
GENERATED = re.compile(r"req_[0-9a-f]{24}")


class Lines(io.TextIOBase):
    """The log stream: JSON lines, waited for by the test (the access line is written after
    the answer is sent)."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.cond = threading.Condition()

    def write(self, s: str) -> int:
        with self.cond:
            for text in s.splitlines():
                if text.strip():
                    self.lines.append(json.loads(text))
            self.cond.notify_all()
        return len(s)

    def access(self, rid: str, within: float = 10.0) -> dict[str, Any]:
        """The one access line of request ``rid`` (waits for it)."""
        deadline = time.monotonic() + within
        with self.cond:
            while True:
                found = [
                    x for x in self.lines if x.get("request_id") == rid and x["event"] == "request"
                ]
                if found:
                    assert len(found) == 1, found
                    return found[0]
                left = deadline - time.monotonic()
                assert left > 0, f"no access line for {rid}"
                self.cond.wait(left)


class Observations:
    """What the metrics observer was given, per request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int, str | None]] = []
        self.lock = threading.Lock()

    def __call__(self, method: str, route: str, status: int, _s: float, error: str | None) -> None:
        with self.lock:
            self.seen.append((method, route, status, error))


class Guard(RollbackGuard):
    """The rollback guard with its verdict set by the test (no checkpoint thread)."""

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None


class Stack(Served):
    """The served layers over one institution, on 127.0.0.1 in a thread."""

    def __init__(self, inst: Institution, app: Any) -> None:
        self.inst = inst
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)


@dataclass
class World:
    inst: Institution
    db_url: str
    db_file: Path
    stack: Stack
    routed: Any  # the same layers over the app without fast routes, in-process
    parts: tuple[Any, Any, Any, Any]  # app, guard, collector, access
    guard: Guard
    log: Lines
    observed: Observations
    payables: list[Any]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    log = Lines()
    seen = Observations()
    with tempfile.TemporaryDirectory(prefix="safescan-hot-") as d:
        db_file = Path(d) / "h.db"
        db_url = f"sqlite:///{db_file}"
        keys = Path(d) / "keys"
        init_db(db_url, keys)
        inst = Institution(Database(db_url), KeyStore(keys).load(PASSPHRASE.encode()))
        payables = make_payables(inst, 1, 12, 1)[0]
        limiter = RateLimiter(1000.0, 1000.0)
        app: Any = create_app(inst, public_limiter=limiter, background=False)
        app.body_timeout = BODY_TIMEOUT  # the BodyLimit's (from SAFESCAN_HEAD_TIMEOUT otherwise)
        routed_app: Any = create_app(inst, public_limiter=limiter, background=False, fast=False)
        routed_app.body_timeout = BODY_TIMEOUT
        guard = Guard(inst.db, inst.keys, Path(d) / "checkpoints")
        collector = metrics.ProcessCollector(inst.db, None)
        access = metrics.MetricsAccess.load("loopback", None)
        obslog.configure("info", "json", stream=log, stdlib=False)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(metrics, "observe", seen)
            served = server_module.layers(app, guard, collector, access)
            routed = server_module.layers(routed_app, guard, collector, access)
        try:
            with served_in_thread(Stack(inst, served), start_within=30) as stack:
                yield World(
                    inst, db_url, db_file, stack, routed, (app, guard, collector, access),
                    guard, log, seen, list(payables),
                )  # fmt: skip
        finally:
            obslog.configure("info", "json", stdlib=False)  # back to stderr
            inst.db.dispose()


def _payment(world: World) -> bytes:
    p = world.payables.pop(0)
    return json.dumps({"code": p.code, "authorization": b64(p.authorization.to_bytes())}).encode()


JSON = {"content-type": "application/json"}


def _header_items(r: httpx.Response) -> list[tuple[str, str]]:
    """The answer's headers but the server's clock and the request id."""
    return [
        (k, v) for k, v in r.headers.multi_items() if k not in ("date", "server", "x-request-id")
    ]


def _route(path: str) -> str:
    """The route an answer given before the router is logged under: the hot routes by their
    path, any other by the template it would have matched (before: ``<unmatched>``; OTHER is
    its own template)."""
    return path


def _raw(port: int, head: bytes, body: bytes) -> bytes:
    """Send ``head`` and ``body`` (and nothing more) on one connection; everything answered
    until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head + body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def _parse(raw: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(lines[0].split()[1]), headers, body


# --- over a real socket -----------------------------------------------------------------------


@pytest.mark.parametrize("path", [*HOT, OTHER])
def test_a_sane_request_id_is_echoed_and_logged(world: World, path: str) -> None:
    rid = f"hot-{path.replace('/', '.')}-0001"
    r = world.stack.http.post(path, content=b"[]", headers={**JSON, "X-Request-Id": rid})
    assert r.status_code == 400, r.text  # not an object: refused
    assert r.headers.get_list("x-request-id") == [rid]
    line = world.log.access(rid)
    assert (line["method"], line["route"], line["status"]) == ("POST", path, 400)
    assert line["caller"] == "wallet"
    assert line["error"] == r.json()["error"]["code"]
    assert ("POST", path, 400, line["error"]) in world.observed.seen


@pytest.mark.parametrize("path", [*HOT, OTHER])
@pytest.mark.parametrize("given", [None, "sh0rt", "has space in it", "x" * 65, "ok\u00e9-id-123"])
def test_an_insane_or_missing_request_id_is_replaced(
    world: World, path: str, given: str | None
) -> None:
    headers = dict(JSON)
    if given is not None:
        headers["X-Request-Id"] = given
    with httpx.Client(base_url=str(world.stack.http.base_url), timeout=30) as client:
        r = client.post(path, content=b"{}", headers=[(k, v.encode()) for k, v in headers.items()])
    [rid] = r.headers.get_list("x-request-id")
    assert GENERATED.fullmatch(rid), rid
    line = world.log.access(rid)
    assert line["status"] == r.status_code == 400
    assert given is None or given not in json.dumps(world.log.lines)


def test_a_payment_and_its_lookup_are_answered_logged_and_counted_once(world: World) -> None:
    body = _payment(world)
    r = world.stack.http.post(PAY, content=body, headers={**JSON, "X-Request-Id": "hot-pay-ok-1"})
    assert r.status_code == 201, r.text
    assert [k for k, _ in r.headers.multi_items()] == [
        "date", "server", "content-type", "content-length", "x-request-id",
    ]  # fmt: skip
    assert r.headers["content-type"] == "application/json"
    line = world.log.access("hot-pay-ok-1")
    assert (line["route"], line["status"], line["error"], line["caller"]) == (
        PAY,
        201,
        None,
        "wallet",
    )
    assert world.observed.seen.count(("POST", PAY, 201, None)) >= 1
    found = world.stack.http.post(
        LOOKUP, content=body, headers={**JSON, "X-Request-Id": "hot-lookup-ok-1"}
    )
    assert found.status_code == 200, found.text
    assert found.json()["outcome"] == "succeeded"
    line = world.log.access("hot-lookup-ok-1")
    assert (line["route"], line["status"], line["error"]) == (LOOKUP, 200, None)
    again = world.stack.http.post(
        PAY, content=body, headers={**JSON, "X-Request-Id": "hot-pay-again"}
    )
    assert again.status_code == 409, again.text
    line = world.log.access("hot-pay-again")
    assert line["error"] == again.json()["error"]["code"]
    assert ("POST", PAY, 409, line["error"]) in world.observed.seen


def test_an_oversized_body_is_refused_413_as_on_any_route(world: World) -> None:
    big = b'{"code": "' + b"A" * 70_000 + b'"}'
    answers = {}
    for path in (*HOT, OTHER):
        declared = world.stack.http.post(
            path, content=big, headers={**JSON, "X-Request-Id": "big-d" + path.replace("/", ".")}
        )
        # streamed without a length (chunked): refused when the count passes the limit
        streamed = world.stack.http.post(
            path,
            content=iter([big[:40_000], big[40_000:]]),
            headers={**JSON, "X-Request-Id": "big-s" + path.replace("/", ".")},
        )
        for r, rid in (
            (declared, "big-d" + path.replace("/", ".")),
            (streamed, "big-s" + path.replace("/", ".")),
        ):
            assert r.status_code == 413, r.text
            assert r.json()["error"]["code"] == "body_too_large"
            line = world.log.access(rid)
            assert (line["route"], line["status"], line["error"]) == (
                _route(path),
                413,
                "body_too_large",
            )
        answers[path] = [(r.content, _header_items(r)) for r in (declared, streamed)]
    assert answers[PAY] == answers[LOOKUP] == answers[OTHER]


def test_a_body_that_stops_arriving_is_answered_408_as_on_any_route(world: World) -> None:
    answers = {}
    for path in (*HOT, OTHER):
        rid = "slow-body" + path.replace("/", ".")
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"X-Request-Id: {rid}\r\nContent-Length: 100\r\n\r\n"
        ).encode()
        status, headers, body = _parse(_raw(world.stack.port, head, b'{"code": "SS1.'))
        assert status == 408, body
        assert headers["connection"] == ["close"]
        assert headers["x-request-id"] == [rid]
        assert json.loads(body)["error"]["code"] == "request_timeout"
        line = world.log.access(rid)
        assert (line["route"], line["status"], line["error"]) == (
            _route(path),
            408,
            "request_timeout",
        )
        answers[path] = (
            body,
            {k: v for k, v in headers.items() if k not in ("date", "x-request-id")},
        )
    assert answers[PAY] == answers[LOOKUP] == answers[OTHER]


MALFORMED: list[tuple[str, bytes, dict[str, str]]] = [
    ("bad JSON", b'{"code": "x", "authorization": ', JSON),
    ("not UTF-8", b'{"code": "SS1.\xff", "authorization": "AAAA"}', JSON),
    ("duplicate key", b'{"code": "SS1.x", "authorization": "AAAA", "code": "y"}', JSON),
    ("extra field", b'{"code": "SS1.x", "authorization": "AAAA", "n": 1}', JSON),
    ("text/plain", b'{"code": "SS1.x", "authorization": "AAAA"}', {"content-type": "text/plain"}),
    ("no content type", b'{"code": "SS1.x", "authorization": "AAAA"}', {}),
    ("bad key", b'{"code": "SS1.x", "authorization": "AAAA"}', {**JSON, "idempotency-key": "a b"}),
    ("tampered code", b'{"code": "SS1.x", "authorization": "AAAA"}', JSON),
]


@pytest.mark.parametrize("path", HOT)
@pytest.mark.parametrize(
    ("content", "headers"), [(c, h) for _, c, h in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_a_malformed_request_gets_the_frameworks_answer(
    world: World, path: str, content: bytes, headers: dict[str, str]
) -> None:
    rid = "malformed-" + format(abs(hash((path, content, tuple(headers.items())))), "x")
    r = world.stack.http.post(path, content=content, headers={**headers, "X-Request-Id": rid})
    routed = _call(
        world.routed,
        "POST",
        path,
        [*_h(headers), (b"x-request-id", b"routed-" + rid.encode())],
        [content],
    )
    assert r.status_code == routed.status >= 400, r.text
    assert r.content == routed.body
    # (the same headers: a fast route writes its two in another order than the framework)
    assert sorted(_header_items(r)) == sorted(
        (k.decode(), v.decode()) for k, v in routed.headers if k != b"x-request-id"
    )
    line = world.log.access(rid)
    assert (line["route"], line["status"], line["error"]) == (
        path,
        r.status_code,
        r.json()["error"]["code"],
    )


def test_a_refusing_rollback_guard_answers_the_hot_routes_as_every_route(world: World) -> None:
    world.guard.refusal = "a test's verdict"
    try:
        answers = {}
        for path in (*HOT, OTHER):
            rid = "refused" + path.replace("/", ".")
            r = world.stack.http.post(
                path, content=_payment(world), headers={**JSON, "X-Request-Id": rid}
            )
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "database_rolled_back"
            assert r.headers["x-request-id"] == rid
            line = world.log.access(rid)
            assert (line["route"], line["status"], line["error"]) == (
                _route(path),
                503,
                "database_rolled_back",
            )
            answers[path] = (r.content, _header_items(r))
        assert answers[PAY] == answers[LOOKUP] == answers[OTHER]
        assert world.stack.http.get("/healthz").status_code == 200  # alive while refusing
    finally:
        world.guard.refusal = None


def test_a_failure_inside_the_payments_transaction_changes_nothing(world: World) -> None:
    body = _payment(world)
    before = snapshot(world.db_url)
    con = sqlite3.connect(world.db_file)
    try:
        # after the order, the carrier's counter and both balances are updated
        con.execute(
            "CREATE TRIGGER hot_boom BEFORE INSERT ON payments BEGIN"
            " SELECT RAISE(ABORT, 'injected by the test'); END"
        )
        con.commit()
        r = world.stack.http.post(PAY, content=body, headers={**JSON, "X-Request-Id": "hot-boom-1"})
        assert r.status_code >= 500, r.text
        error = r.json()["error"]
        assert set(error) >= {"type", "code", "message"}
        assert "injected" not in r.text  # no driver text leaves
        line = world.log.access("hot-boom-1")
        assert (line["status"], line["error"]) == (r.status_code, error["code"])
        assert diff(before, snapshot(world.db_url)) == {}
    finally:
        con.execute("DROP TRIGGER IF EXISTS hot_boom")
        con.commit()
        con.close()
    r = world.stack.http.post(PAY, content=body, headers=JSON)
    assert r.status_code == 201, r.text  # nothing of the failed attempt stood in its way


# --- in-process: the layers and the layers composed one by one give the same -------------------


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def _h(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in headers.items()]


def _call(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    query: bytes = b"",
) -> Answer:
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        queue = list(chunks)

        async def receive() -> dict[str, Any]:
            if queue:
                part = queue.pop(0)
                return {"type": "http.request", "body": part, "more_body": bool(queue)}
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(dict(message))

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
            "root_path": "", "headers": [(b"host", b"127.0.0.1"), *headers],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8443),
        }  # fmt: skip
        await app(scope, receive, send)
        for _ in range(3):
            await asyncio.sleep(0)  # the access line is written at the next turn of the loop

    asyncio.run(go())
    if not sent:  # no answer (the client went away)
        return Answer(0, [], b"")
    start = sent[0]
    return Answer(
        start["status"], list(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])
    )


def _old_stack(world: World) -> Any:
    """The layers composed one by one, as before the hot layer."""
    app, guard, collector, access = world.parts
    return observed(
        metrics.MetricsEndpoint(GuardedApp(app, guard), collector, access),
        routes=api_routes(app.app),
    )


def _cases(paid: bytes) -> Iterator[tuple[str, str, list[tuple[bytes, bytes]], list[bytes], bytes]]:
    for path in HOT:
        yield f"paid {path}", path, _h(JSON), [paid], b""
        yield f"chunked {path}", path, _h(JSON), [paid[:10], paid[10:30], paid[30:]], b""
        yield f"keyed {path}", path, _h({**JSON, "Idempotency-Key": "k-0001"}), [paid], b""
        yield f"query {path}", path, _h(JSON), [paid], b"a=1"
        yield f"declared 413 {path}", path, _h({**JSON, "content-length": "70000"}), [b"{}"], b""
        yield f"bad length {path}", path, _h({**JSON, "content-length": "1e3"}), [b"{}"], b""
        yield f"sent 413 {path}", path, _h(JSON), [b"A" * 40_000, b"A" * 40_000], b""
        yield f"disconnect {path}", path, _h(JSON), [], b""
        for name, content, headers in MALFORMED:
            yield f"{name} {path}", path, _h(headers), [content], b""
    yield "GET pay", "GET", [], [b""], b""


def test_the_layers_answer_log_and_count_as_the_layers_composed_one_by_one(world: World) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "observe", world.observed)
        new, old = server_module.layers(*world.parts), _old_stack(world)
    paid = _payment(world)
    assert _call(new, "POST", PAY, _h(JSON), [paid]).status == 201
    cases = list(_cases(paid))
    for refusing in (False, True):
        world.guard.refusal = "refused by the test" if refusing else None
        try:
            for n, (name, path, headers, chunks, query) in enumerate(cases):
                method = "POST"
                if name == "GET pay":
                    method, path = "GET", PAY
                seen = []
                for app in (new, old):
                    rid = f"same-{int(refusing)}-{n:03d}-{'new' if app is new else 'old'}"
                    k = len(world.observed.seen)
                    answer = _call(
                        app,
                        method,
                        path,
                        [*headers, (b"x-request-id", rid.encode())],
                        chunks,
                        query,
                    )
                    line = {
                        k: v for k, v in world.log.access(rid).items()
                        if k not in ("ts", "duration_ms", "request_id")
                    }  # fmt: skip
                    headers_out = [(k, v) for k, v in answer.headers if k != b"x-request-id"]
                    assert answer.status == 0 or (b"x-request-id", rid.encode()) in answer.headers
                    seen.append(
                        (answer.status, headers_out, answer.body, line, world.observed.seen[k:])
                    )
                assert seen[0] == seen[1], name
        finally:
            world.guard.refusal = None
