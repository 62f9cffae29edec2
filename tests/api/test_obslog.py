"""safescan.api.obslog units: request ids, the secret scrubber, JSON rendering of both kinds of
logger (the HTTP tests are in tests/institution/test_observability.py)."""

from __future__ import annotations

import asyncio
import enum
import io
import json
import logging
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from safescan.api import obslog


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    obslog.configure("info", "json", stream=buf)
    try:
        yield buf
    finally:
        obslog.configure("info", "json", stdlib=False)  # back to stderr
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@pytest.mark.parametrize(
    "raw",
    ["abcdefgh", "A" * 64, "req.1:2_3-4", b"client-id-0001"],
)
def test_sane_request_ids_are_kept(raw: str | bytes) -> None:
    want = raw.decode() if isinstance(raw, bytes) else raw
    assert obslog.accept_request_id(raw) == want


@pytest.mark.parametrize(
    "raw",
    [None, "", "short", "A" * 65, "with space", "quo\"te-000", "new\nline-000", "ümlaut-000",
     b"\xff\xfe-latin1-x", "{\"json\":1}", "semi;colon-000", "slash/path-000"],
)  # fmt: skip
def test_other_request_ids_are_replaced(raw: str | bytes | None) -> None:
    got = obslog.accept_request_id(raw)
    assert got.startswith("req_") and len(got) == 28 and got != raw


@pytest.mark.parametrize(
    ("headers", "want"),
    [
        ([(b"x-request-id", b"client-id-0001")], "client-id-0001"),
        ([(b"accept", b"*/*"), (b"x-request-id", b"client-id-0001")], "client-id-0001"),
        # the first one decides, sane or not (what both readers did before)
        ([(b"x-request-id", b"first-id-0001"), (b"x-request-id", b"second-id-01")],
         "first-id-0001"),
        ([(b"x-request-id", b"bad id"), (b"x-request-id", b"second-id-01")], None),
        ([(b"x-request-id", b"new\nline-000")], None),
        ([(b"x-request-idx", b"client-id-0001")], None),
        ([], None),
    ],
)  # fmt: skip
def test_the_request_id_of_a_scope_is_its_first_sane_header_or_a_new_one(
    headers: list[tuple[bytes, bytes]], want: str | None
) -> None:
    """``request_id_of``: the one reading of ``X-Request-Id`` the request log and the hot
    routes' layer share (they each scanned the headers before)."""
    got = obslog.request_id_of({"type": "http", "headers": headers})
    if want is None:
        assert got.startswith("req_") and len(got) == 28
    else:
        assert got == want
    assert obslog.request_id_of({"type": "http"}).startswith("req_")


def test_secret_fields_are_scrubbed(stream: io.StringIO) -> None:
    log = obslog.get_logger("test")
    values = {
        "pin": "1234",
        "admin_token": "t0k3n-value",
        "Authorization": "Bearer abc",
        "api_key": "k3y-value",
        "client_secret": "s3cret",
        "password": "hunter2-x",
        "passphrase": "long-passphrase",
        "cookie": "sid=1",
        "signature": "sig-value",
        "private_key": "priv-value",
        "seed": "seed-value",
    }
    log.info("something happened", harmless="visible", **values)
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["harmless"] == "visible" and line["event"] == "something happened"
    for key, value in values.items():
        assert line[key] == obslog.REDACTED
        assert value not in stream.getvalue()


def test_both_kinds_of_logger_write_json_with_the_request_id(stream: io.StringIO) -> None:
    token = obslog.set_request_id("unit-test-0001")
    try:
        obslog.get_logger("safescan.test").warning("structured", n=1)
        logging.getLogger("safescan.stdlib").error("plain %s", "record", extra={"pin": "9876"})
    finally:
        obslog.reset_request_id(token)
    logging.getLogger("safescan.stdlib").error("outside")
    docs = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert docs[0]["request_id"] == "unit-test-0001" and docs[0]["level"] == "warning"
    assert docs[1]["request_id"] == "unit-test-0001" and docs[1]["event"] == "plain record"
    assert docs[1]["logger"] == "safescan.stdlib" and docs[1]["level"] == "error"
    assert "request_id" not in docs[2]
    assert "9876" not in stream.getvalue()  # extra fields are not rendered from stdlib records


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="log level"):
        obslog.configure("verbose")
    with pytest.raises(ValueError, match="log format"):
        obslog.configure("info", "xml")


@pytest.mark.parametrize(
    "fields",
    [
        {"method": "POST", "route": "/v1/payments", "status": 201, "duration_ms": 3.41,
         "caller": "wallet", "client": "127.0.0.1", "error": None},
        {"method": "GET", "route": "<unmatched>", "status": None, "duration_ms": 0.0,
         "caller": "unknown", "client": None, "error": None},
        {"method": "OTHER", "route": "/v1/merchant/orders/{order_id}", "status": 409,
         "duration_ms": 1234.5, "caller": "merchant", "client": "::1",
         "error": "order_not_payable"},
        {"method": "POST", "route": "/v1/payments", "status": 400, "duration_ms": 0.07,
         "caller": "wallet", "client": "10.0.0.1", "error": "invalid_request"},
    ],
)  # fmt: skip
def test_the_access_line_renderer_writes_what_structlog_writes(
    stream: io.StringIO, fields: dict[str, object]
) -> None:
    """The access line is rendered directly (one per request, the hot path): the same JSON
    object, key for key and in the same order, as the configured structlog logger writes."""
    name = "safescan.institution.access"
    token = obslog.set_request_id("req_0123456789abcdef")
    try:
        obslog.get_logger(name).info("request", **fields)
    finally:
        obslog.reset_request_id(token)
    logged = stream.getvalue().splitlines()[-1]
    direct = obslog.access_line(name, dict(fields), "req_0123456789abcdef")
    assert direct.endswith("\n") and "\n" not in direct[:-1]
    a, b = json.loads(logged), json.loads(direct)
    assert list(a) == list(b)  # same keys, same order
    a_ts, b_ts = a.pop("ts"), b.pop("ts")
    assert a == b
    for ts in (a_ts, b_ts):  # each is what isoformat writes for its own instant, Z for +00:00
        # (not their lengths compared: isoformat writes no fraction at 0 microseconds)
        assert ts.endswith("Z") and datetime.fromisoformat(ts).tzinfo == UTC, ts
        assert datetime.fromisoformat(ts).isoformat().replace("+00:00", "Z") == ts, ts
    # the same text but for the time stamp
    assert logged.replace(a_ts, "TS") == direct[:-1].replace(b_ts, "TS")


class _Code(enum.IntEnum):
    CREATED = 201


class _Word(enum.StrEnum):
    WALLET = "wallet"


class _LoudInt(int):
    def __repr__(self) -> str:
        return "LOUD"


_LINE_VALUES: list[object] = [
    "", "plain", "quote\" back\\slash", "\x00\x1f\x7f\x80", "é ü ß", "😀 astral", "\u2028\u2029",
    "\ud800 lone", "\u202e bidi", "tab\tnew\nline\r", "</script>", 0, 1, -1, 2**63, -(2**70),
    10**400, 0.0, -0.0, 3.41, 0.07, 1234.5, 1e16, 1e-7, 5e-324, 1.7976931348623157e308,
    float("nan"), float("inf"), float("-inf"), True, False, None, _Code.CREATED, _Word.WALLET,
    _LoudInt(5), [1, "a"], {"a": 1}, (1, 2),
]  # fmt: skip


def test_the_line_renderer_writes_json_dumps_bytes() -> None:
    """json_line (the access line's renderer) gives json.dumps' bytes for every value kind a
    line can hold and every other one (which it hands to json.dumps): text needing escapes,
    astral and lone surrogates, huge and negative integers, floats json writes its own way
    (-0.0, 1e16, 1e-07, NaN, Infinity), booleans, enums, an int subclass with its own repr,
    nested values, non-text keys."""
    rng = random.Random(16)
    keys: list[object] = ["logger", "k", "ключ", 'a"b', "\x00", 1, 2.5, None, True]
    cases: list[dict[object, object]] = [{"only": v} for v in _LINE_VALUES]
    for _ in range(400):
        n = rng.randint(0, 14)
        cases.append({rng.choice(keys): rng.choice(_LINE_VALUES) for _ in range(n)})
        cases.append({f"f{i}": rng.choice(_LINE_VALUES) for i in range(n)})
    for case in cases:
        assert obslog.json_line(case) == json.dumps(case) + "\n", case  # type: ignore[arg-type]


def test_the_request_line_is_the_access_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """request_line (RequestLog's one formatting step) writes access_line's bytes for the
    values a request gives (a status or None, a float duration, text or None for the client
    and the error) and for every other value (handed to access_line: json.dumps' words for
    NaN and infinities, enums, subclasses, wrong types)."""
    monkeypatch.setattr(obslog.time, "time_ns", lambda: 1_764_590_000_123_456_000)
    rng = random.Random(17)
    texts = [v for v in _LINE_VALUES if isinstance(v, str)]
    pool = _LINE_VALUES
    for _ in range(3000):
        status = rng.choice([None, 200, 201, 413, 0, *rng.sample(pool, 2)])
        duration = rng.choice([0.0, 0.07, 12.34, 1e16, *rng.sample(pool, 2)])
        client = rng.choice([None, "127.0.0.1", "::1", *rng.sample(pool, 2)])
        error = rng.choice([None, "order_not_payable", *rng.sample(pool, 2)])
        words = [rng.choice(["POST", "/v1/payments", "wallet", "req_0a", *texts]) for _ in "abcd"]
        if rng.random() < 0.1:
            words[rng.randrange(4)] = rng.choice(pool)  # a wrong type where text is expected
        logger = rng.choice(["safescan.institution.access", *texts])
        fields = {"method": words[0], "route": words[1], "status": status}
        fields |= {"duration_ms": duration, "caller": words[2], "client": client, "error": error}
        want = obslog.access_line(logger, dict(fields), words[3])  # type: ignore[arg-type]
        got = obslog.request_line(logger, *fields.values(), words[3])  # type: ignore[arg-type]
        assert got == want, fields


@pytest.mark.parametrize(
    "ns",
    [
        0,
        999,
        1_000,
        1_764_556_800_000_000_000,  # a midnight, no fraction
        1_764_556_800_000_001_000,
        1_764_556_799_999_999_999,
        1_764_556_859_123_456_789,
        4_102_444_800_500_000_000,
        -30_610_310_400_000_000_000,  # 0999-12-31T00:00:00Z: a 4-digit year, zero-padded
        -30_610_224_001_000_000_001,  # 0999-12-31T23:59:58.999999Z
        -62_135_596_800_000_000_000,  # 0001-01-01T00:00:00Z
        -62_135_596_799_000_001_000,
    ],
)
def test_the_line_time_stamp_is_what_isoformat_writes(ns: int) -> None:
    """utc_stamp writes datetime.isoformat's text (no fraction at 0 microseconds, Z for
    +00:00), whatever second its cache held before."""
    expect = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)).isoformat()
    for before in (ns - 10**9, ns, ns + 10**9, 0):
        obslog.utc_stamp(before)
        assert obslog.utc_stamp(ns) == expect.replace("+00:00", "Z")


def test_the_access_line_goes_through_structlog_when_not_json() -> None:
    """Only the json format (at info or below) uses the direct renderer; console lines and a
    level above info go through the configured logger as before."""
    buf = io.StringIO()
    try:
        obslog.configure("info", "console", stream=buf, stdlib=False)
        assert not obslog._configured["access_json"]
        obslog.configure("warning", "json", stream=buf, stdlib=False)
        assert not obslog._configured["access_json"]
        obslog.configure("debug", "json", stream=buf, stdlib=False)
        assert obslog._configured["access_json"]
    finally:
        obslog.configure("info", "json", stdlib=False)


# --- access lines written once per turn of the event loop ---------------------------------------


class CountingStream(io.StringIO):
    """A stream that counts its writes and flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def _burst(n: int, *, middle: int | None = None) -> list[str]:
    """``n`` concurrent requests through RequestLog; each app logs nothing, except request
    ``middle``, which writes an ordinary log line before it answers. The request ids in the
    order the requests finished."""
    finished: list[str] = []

    async def app(scope: obslog.Scope, receive: obslog.Receive, send: obslog.Send) -> None:
        rid = scope[obslog.REQUEST_ID_KEY]
        if scope["path"] == f"/r/{middle}":
            obslog.get_logger("test.middle").info("middle", at=rid)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
        finished.append(rid)

    logged = obslog.RequestLog(app, service="test")

    async def one(i: int) -> None:
        scope = {"type": "http", "method": "GET", "path": f"/r/{i}", "headers": [],
                 "client": ("127.0.0.1", 1)}  # fmt: skip

        async def receive() -> obslog.Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(_m: obslog.Message) -> None:
            return None

        await logged(scope, receive, send)

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(n)))

    asyncio.run(main())
    return finished


def _access_ids(text: str) -> list[str]:
    docs = [json.loads(x) for x in text.splitlines()]
    return [d["request_id"] for d in docs if d.get("event") == "request"]


@pytest.mark.parametrize("n", [1, 2, 17, 300])
def test_every_access_line_is_written_once_in_order_and_batched(n: int) -> None:
    buf = CountingStream()
    try:
        obslog.configure("info", "json", stream=buf, stdlib=False)
        finished = _burst(n)
        assert _access_ids(buf.getvalue()) == finished  # all of them, once, in order
        assert len(set(finished)) == n
        # they finished in one turn of the loop: one write and one flush for all of them
        assert buf.writes == 1 and buf.flushes >= 1
    finally:
        obslog.configure("info", "json", stdlib=False)


@pytest.mark.parametrize("middle", [0, 5, 19])
def test_another_log_line_writes_the_queued_access_lines_first(middle: int) -> None:
    """A line logged from anywhere while access lines are queued comes after them: the log
    stays in the order things happened."""
    buf = io.StringIO()
    try:
        obslog.configure("info", "json", stream=buf, stdlib=False)
        finished = _burst(20, middle=middle)
        docs = [json.loads(x) for x in buf.getvalue().splitlines()]
        events = [d.get("request_id") if d["event"] == "request" else "MIDDLE" for d in docs]
        mid = [d for d in docs if d["event"] == "middle"]
        assert len(mid) == 1
        # the middle request logged before it finished: after the ones finished before it
        assert events == [*finished[:middle], "MIDDLE", *finished[middle:]]
    finally:
        obslog.configure("info", "json", stdlib=False)


def test_swapping_the_stream_writes_the_queued_lines_to_the_old_one() -> None:
    old, new = io.StringIO(), io.StringIO()
    try:
        obslog.configure("info", "json", stream=old, stdlib=False)
        loop = asyncio.new_event_loop()
        try:
            for i in range(5):
                obslog._SINK.defer(obslog.access_line("t", {"i": i}, f"req_{i:08d}"), loop)
            assert old.getvalue() == ""  # queued until the loop turns
            obslog.configure("info", "json", stream=new, stdlib=False)
        finally:
            loop.close()
        assert _access_ids(old.getvalue()) == [f"req_{i:08d}" for i in range(5)]
        assert new.getvalue() == ""
    finally:
        obslog.configure("info", "json", stdlib=False)


_EXIT_SCRIPT = """
import asyncio, sys
sys.path[:0] = {paths!r}
from tests.api.test_obslog import _burst
from safescan.api import obslog
obslog.configure("info", "json", stdlib=False)  # stderr
if {drive!r} == "run":
    finished = _burst({n})
else:  # lines queued on a loop that never turns again: the exit must write them
    loop = asyncio.new_event_loop()
    finished = [f"req_{{i:08d}}" for i in range({n})]
    for rid in finished:
        obslog._SINK.defer(obslog.access_line("t", {{}}, rid), loop)
print(" ".join(finished))
"""


@pytest.mark.parametrize("drive", ["run", "queued"])
def test_a_clean_exit_loses_no_access_line(drive: str) -> None:
    """The process ends right after its last requests ("run"), or with lines still queued on a
    loop that will never run the drain ("queued"): every line is on stderr, once, in order."""
    root = Path(__file__).resolve().parents[2]
    script = _EXIT_SCRIPT.format(paths=[str(root), str(root / "src")], n=64, drive=drive)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    finished = done.stdout.split()
    assert len(finished) == 64
    assert _access_ids(done.stderr) == finished


def test_a_line_queued_on_a_new_loop_is_not_held_by_a_dead_one() -> None:
    """A loop closed with its drain pending does not hold the lines another loop queues."""
    buf = io.StringIO()
    try:
        obslog.configure("info", "json", stream=buf, stdlib=False)
        dead = asyncio.new_event_loop()
        obslog._SINK.defer(obslog.access_line("t", {}, "req_dead0001"), dead)
        dead.close()
        finished = _burst(3)
        assert _access_ids(buf.getvalue()) == ["req_dead0001", *finished]
    finally:
        obslog.configure("info", "json", stdlib=False)


HOSTILE_LOG = ["\x1b[2J\x1b[Hok", "\x1b]0;owned\x07", "\x9b31m", "a\rb", "x\u202ey", "z\u200dw"]


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_untrusted_values_reach_the_log_inert_in_every_format(fmt: str) -> None:
    """A merchant name, a path or a header holding terminal controls or bidi characters is
    written escaped, as a structlog value, as the event text and through stdlib ``logging``
    (redteam: the console format wrote them raw, so ``tail -f`` of the log ran them)."""
    buf = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        obslog.configure("info", fmt, stream=buf)
        log = obslog.get_logger("safescan.test")
        for value in HOSTILE_LOG:
            log.info("merchant", name=value, path="/v1/" + value)
            log.info(value)
            logging.getLogger("safescan.test.std").warning("webhook to %s failed", value)
        try:
            raise ValueError("\x1b[2J in a traceback")
        except ValueError:
            log.exception("failed")
    finally:
        obslog.configure("info", "json", stdlib=False)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    text = buf.getvalue()
    assert text.count("\n") >= 3 * len(HOSTILE_LOG)
    for raw in ("\x1b", "\x07", "\x9b", "\r", "\u202e", "\u200d"):
        assert raw not in text, (raw, text)
    if fmt == "console":
        assert "Traceback" in text and "\n" in text.split("Traceback", 1)[1]


FORGED = "\n[info     ] payment settled                [safescan.pay] amount=100000"


class _Hostile:
    """A value whose repr holds a line feed (what the console renderer writes for a non-str)."""

    def __repr__(self) -> str:
        return "event" + FORGED + "\r\x1b[2K"


def test_a_value_holding_cr_lf_cannot_forge_a_console_log_line() -> None:
    """(review) A stored event id, a non-text value or an exception's message holding CR/LF
    (or an ANSI escape) cannot start a line of its own in the console-format log: string
    values and keys are escaped, any other value is written as its escaped repr, and a
    traceback keeps its lines but each is indented, so no line of it reads as a record.
    Before: an object's repr and an exception's message were written raw, and
    ``ValueError("x\\n[info ] payment settled ...")`` forged a record."""
    buf = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        obslog.configure("info", "console", stream=buf)
        log = obslog.get_logger("safescan.test")
        log.info("webhook delivered", event_id="evt_1" + FORGED + "\r\x1b[2K")
        log.info("webhook delivered", stored=_Hostile(), **{"key" + FORGED: 1})
        logging.getLogger("safescan.test.std").warning("delivered %s", _Hostile())
        try:
            raise ValueError("bad event" + FORGED + "\r\x1b[2K")
        except ValueError:
            log.exception("delivery failed")
            logging.getLogger("safescan.test.std").exception("delivery failed")
    finally:
        obslog.configure("info", "json", stdlib=False)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = buf.getvalue().splitlines()
    records = [line for line in lines if not line.startswith("  ")]
    assert len(records) == 5, lines  # one line each; the two tracebacks indented under theirs
    assert not any(line.startswith("[info     ] payment settled") for line in lines), lines
    assert sum("Traceback" in line for line in lines) == 2
    for raw in ("\r", "\x1b"):
        assert raw not in buf.getvalue()


def test_an_answer_given_before_the_router_is_counted_under_the_route_it_asked_for() -> None:
    """A 408/413/503 answered before the router (the body limit, the rollback guard) was
    logged and counted as ``<unmatched>``: a refused order was not told apart from a junk
    path. Given the app's route templates, the request log names the route it would have
    matched (and its caller kind); a path or method no route takes stays ``<unmatched>``, and
    so does any other status (the router's own 404/405: no second walk of the routes). The
    table is read at the first early answer, not before."""
    read: list[int] = []

    def source() -> list[tuple[str, list[str], str | None]]:
        read.append(1)
        return [
            ("/v1/orders/lookup", ["POST"], "merchant"),
            ("/v1/orders/{order_id}", ["POST", "GET"], "merchant"),
            ("/files/{rest:path}", ["GET"], None),
        ]

    status = [413]

    async def early(scope: Any, receive: Any, send: Any) -> None:  # answers before a router
        await send({"type": "http.response.start", "status": status[0], "headers": []})
        await send({"type": "http.response.body", "body": b'{"error": {"code": "early_one"}}'})

    seen: list[tuple[str, str, int, str | None]] = []

    def observe(method: str, route: str, code: int, _s: float, error: str | None) -> None:
        seen.append((method, route, code, error))

    def call(app: Any, method: str, path: str) -> tuple[str, str, int, str | None]:
        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        async def send(_message: Any) -> None:
            return None

        scope = {"type": "http", "method": method, "path": path, "root_path": "",
                 "query_string": b"", "headers": []}  # fmt: skip
        asyncio.run(app(scope, receive, send))
        return seen.pop()

    table = obslog.RouteTable(source)
    log = obslog.RequestLog(early, service="t", access_log=False, observe=observe, routes=table)
    status[0] = 404
    assert call(log, "POST", "/v1/orders/o-123")[1] == obslog.UNMATCHED
    assert read == []  # not read for the router's own answers
    for code in (408, 413, 503):
        status[0] = code
        assert call(log, "POST", "/v1/orders/o-123") == (
            "POST", "/v1/orders/{order_id}", code, "early_one"
        )  # fmt: skip
        assert call(log, "POST", "/v1/orders/lookup")[1] == "/v1/orders/lookup"
        assert call(log, "GET", "/files/a/b/c")[1] == "/files/{rest:path}"
        assert call(log, "POST", "/v1/orders/o-1/extra")[1] == obslog.UNMATCHED
        assert call(log, "POST", "/no/such/o-123")[1] == obslog.UNMATCHED
        assert call(log, "DELETE", "/v1/orders/o-123")[1] == obslog.UNMATCHED  # no such method
    assert read == [1]  # read once
    bare = obslog.RequestLog(early, service="t", access_log=False, observe=observe)
    assert call(bare, "POST", "/v1/orders/o-123")[1] == obslog.UNMATCHED  # no table: as before
