"""tests.logread: a live process's log is read in whole lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import logread


def test_a_half_written_last_line_is_left_for_the_next_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logread, "LINE_WAIT", 0.0)
    log = tmp_path / "server.log"
    log.write_bytes(b'{"event": "listening"}\n{"event": "requ')
    assert logread.written(log) == '{"event": "listening"}\n'
    assert [json.loads(x) for x in logread.written(log).splitlines()]
    assert logread.written(log, finished=True).endswith('"requ')  # the writer exited
    log.write_bytes(b"no line yet")
    assert logread.written(log) == ""
    log.write_bytes(b"caf\xc3")  # a character cut in two is left out with its line
    assert logread.written(log) == ""
    assert logread.complete(b"a\nb\n") == b"a\nb\n"


def test_a_line_being_written_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "server.log"
    log.write_bytes(b"first\nsafescan institution listening on ")
    waits: list[float] = []

    def writer_ends_the_line(seconds: float) -> None:  # the writer runs while the reader waits
        waits.append(seconds)
        with log.open("ab") as f:
            f.write(b"https://127.0.0.1:1\n")

    monkeypatch.setattr(logread.time, "sleep", writer_ends_the_line)
    assert logread.written(log).endswith("listening on https://127.0.0.1:1\n")
    assert len(waits) == 1
