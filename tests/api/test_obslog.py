"""safescan.api.obslog units: request ids, the secret scrubber, JSON rendering of both kinds of
logger (the HTTP tests are in tests/institution/test_observability.py)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

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
    assert len(a_ts) == len(b_ts) and a_ts.endswith("Z") and b_ts.endswith("Z")
    assert b_ts[:10] == a_ts[:10] and b_ts[10] == "T"
    # the same text but for the time stamp
    assert logged.replace(a_ts, "TS") == direct[:-1].replace(b_ts, "TS")


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
