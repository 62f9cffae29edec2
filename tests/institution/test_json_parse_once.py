"""The institution's routes parse a JSON body once (tidy): the framework's parse, done by
:class:`safescan.institution.http.query.JSONRequest`, also finds a key named twice, and
:func:`~safescan.institution.http.query.check_body` refuses it from that parse. Against the
two parses it replaced (Starlette's ``json.loads(body)`` for the model, then ``check_body``'s
own with a duplicate-key hook), every body gives the same outcome: the same value for the
model (key order included), or the same error, the framework's first."""

from __future__ import annotations

import json
from collections.abc import Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safescan.api.errors import SafescanError
from safescan.institution.http.query import JSONRequest, check_body

JSON = [(b"content-type", b"application/json")]

BODIES = [
    b'{"currency":"EUR","amount":1}',
    b'{"a":1,"a":2}',
    b'{"a":{"b":1,"b":2},"c":1,"c":2}',
    b'{"a":1,"b":{"c":1,"c":2},"a":3}',
    b'[{"x":1},{"y":1,"y":2}]',
    b'{"":1,"":2}',
    b'{"a":1,"\\u0061":2}',
    b"\xef\xbb\xbf{}",
    '{"a":1}'.encode("utf-16"),
    '{"a":1,"a":2}'.encode("utf-16-le"),
    '{"a":1}'.encode("utf-32-be"),
    b"{\x00}\x00",
    b'{"a":"\xed\xa0\x80"}',
    b'{"a":"\xff"}',
    b'{"a":"\xc3\xa9"}',
    b'{"a":1} {"b":2}',
    b'{"a":NaN,"a":Infinity}',
    b'{"a":',
    b"[" * 100_000 + b"]" * 100_000,
    b"  7 ",
    b'{"amount":' + b"9" * 5000 + b"}",
    b'"\\ud800"',
]


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """The coroutine run to its end: nothing in it waits (its body is at hand)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the body read waited")


def _value(value: Any) -> str:
    return json.dumps(value, allow_nan=True)  # key order and duplicates' last values count


def _outcome(run: Any) -> tuple[Any, ...]:
    try:
        return ("ok", run())
    except json.JSONDecodeError as e:  # the framework's 422 json_invalid: msg, pos, doc
        return ("json", e.msg, e.pos, e.doc)
    except SafescanError as e:  # check_body's typed refusal, as sent
        return ("refused", e.status, e.to_dict())
    except (ValueError, RecursionError) as e:  # the framework's 400 "error parsing the body"
        return ("parse", type(e).__name__, str(e))  # errors.body_parse_error reads it


def _two_parses(body: bytes) -> tuple[Any, ...]:
    framework = _outcome(lambda: _value(json.loads(body)))
    if framework[0] != "ok":
        return framework
    checked = _outcome(lambda: check_body("POST", JSON, body))
    return framework if checked[0] == "ok" else checked


def _one_parse(body: bytes) -> tuple[Any, ...]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    request = JSONRequest({"type": "http", "method": "POST", "headers": JSON}, receive)
    framework = _outcome(lambda: _value(_run(request.json())))
    if framework[0] != "ok":
        return framework
    checked = _outcome(lambda: check_body("POST", JSON, body, request))
    return framework if checked[0] == "ok" else checked


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_one_parse_answers_every_body_as_the_two_parses_did(body: bytes) -> None:
    assert _one_parse(body) == _two_parses(body)


@settings(max_examples=80, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=3),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.lists(st.tuples(st.sampled_from(["a", "b", "", "é"]), inner), max_size=4)
        ),
        max_leaves=8,
    ),
    st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32"]),
)
def test_one_parse_answers_generated_bodies_as_the_two_parses_did(doc: Any, encoding: str) -> None:
    def render(v: Any) -> str:  # lists of pairs are objects, keys possibly twice
        if isinstance(v, list) and v and all(isinstance(p, tuple) for p in v):
            return "{" + ",".join(f"{json.dumps(k)}:{render(x)}" for k, x in v) + "}"
        if isinstance(v, list):
            return "[" + ",".join(render(x) for x in v) + "]"
        return json.dumps(v)

    body = render(doc).encode(encoding)
    assert _one_parse(body) == _two_parses(body)
