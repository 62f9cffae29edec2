"""web.jsonbody: the local web apps' strict JSON reader refuses what other code trips over."""

from __future__ import annotations

import pytest

from safescan.web import jsonbody


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1e999}',
        b'{"a": -1e999}',
        b"[1E400]",
        b'{"a": 0.5e309}',
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'{"a": "\\ud800"}',
        b'{"\\udc80": 1}',
        b"[" * 5000 + b"]" * 5000,
        b'{"a": "\xff"}',
        b'{"a": 1',
        b'{"a": 1, "a": 1}',
        b'{"x": [{"b": 1, "b": 2}]}',
        b'{"\\u0061": 1, "a": 2}',
    ],
)
def test_hostile_bodies_are_value_errors(raw: bytes) -> None:
    with pytest.raises(ValueError):
        jsonbody.loads(raw)


def test_ordinary_numbers_read_as_before() -> None:
    doc = jsonbody.loads(b'{"a": 1.5, "b": 1e308, "c": -2.5e-300, "d": 12345678901234567890}')
    assert doc == {"a": 1.5, "b": 1e308, "c": -2.5e-300, "d": 12345678901234567890}
