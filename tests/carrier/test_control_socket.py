"""(harden, thirteenth sitting) The carrier's control socket, attacked from both ends.

The server (:class:`safescan.carrier.control.ControlServer`, a real Unix socket served on its
thread, as the carrier process does) gets malformed request lines: each is answered ``ERR``
and reaches nothing (the handler, i.e. the card's tamper sensor and buttons, is never called);
before, the line was ``strip()``ped, so ``" TAMPER "``, ``"TAMPER\\t"`` or ``TAMPER`` without
its newline fired the sensor. An error raised while answering no longer ends the serving loop
(before: only ``OSError`` was caught, the thread died and the socket answered no one).

The client (:func:`~safescan.carrier.control.send_control`) talks to fake processes at the
path: an endless answer, two lines, bytes that are not UTF-8, an answer dripped a byte at a
time, a command that is not one printable line, a process of another user. Each is a typed
:class:`TransportError` (before: read whole, returned as given, or hung).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from safescan.carrier.control import ControlServer, send_control
from safescan.carrier.errors import CarrierUnavailable, TransportError


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (a Unix socket path has at most 107 bytes)."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="ctl") as d:
        yield Path(d)


class Recorder:
    """The card's physical side as the handler sees it: every command it was given."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, line: str) -> str:
        self.calls.append(line)
        if line == "BOOM":
            raise RuntimeError("a fault inside the card")
        if line == "STATUS":
            return "OK personalized"
        if line == "TAMPER":
            return "OK destroyed"
        return "ERR unknown control command"


@pytest.fixture
def served(short_dir: Path) -> Iterator[tuple[Path, Recorder]]:
    recorder = Recorder()
    server = ControlServer(short_dir / "c.ctl", recorder)
    server.start()
    try:
        yield server.path, recorder
    finally:
        server.close()


def raw_request(path: Path, data: bytes, *, close_write: bool = False) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(os.fspath(path))
        s.sendall(data)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while chunk := s.recv(4096):
                out += chunk
        except ConnectionResetError:  # closed with our unread bytes (a line too long)
            return out or b"ERR <reset>\n"
        return out


MALFORMED = [
    (b" TAMPER\n", False),
    (b"TAMPER \n", False),
    (b"TAMPER\t\n", False),
    (b"\tTAMPER\n", False),
    (b"TAMPER", True),  # no newline, then the client closes its side
    (b"TAMPER\nSTATUS\n", False),
    (b"TAMPER\n\n", False),
    (b"TAM\x00PER\n", False),
    (b"TAMPER\x00\n", False),
    (b"\xefTAMPER\n", False),
    (b"TAMPER\r\r\n", False),
    (b"\x0bTAMPER\n", False),
    (b"PRESS  OK\n", False),
    (b"\n", False),
    (b"T" * 300 + b"\n", False),
    (b"TAMPER" + b" " * 400 + b"\n", False),
]


def test_malformed_request_lines_are_refused_and_reach_nothing(
    served: tuple[Path, Recorder],
) -> None:
    path, recorder = served
    for data, close_write in MALFORMED:
        answer = raw_request(path, data, close_write=close_write)
        assert answer.startswith(b"ERR ") and answer.endswith(b"\n"), (data, answer)
        assert recorder.calls == [], data  # before: " TAMPER", "TAMPER\t", "TAMPER" fired it
    # the well-formed ones still work, \r\n too
    assert raw_request(path, b"STATUS\r\n") == b"OK personalized\n"
    assert send_control(path, "STATUS") == "personalized"
    assert recorder.calls == ["STATUS", "STATUS"]


def test_an_error_while_answering_does_not_end_the_serving_loop(
    served: tuple[Path, Recorder],
) -> None:
    path, recorder = served
    with pytest.raises(TransportError, match="internal error"):
        send_control(path, "BOOM", timeout=10)
    # before: the thread had died; this connected (the backlog) and waited for ever
    assert send_control(path, "STATUS", timeout=10) == "personalized"
    assert recorder.calls == ["BOOM", "STATUS"]


class FakeProcess:
    """Whatever listens at the control path: accepts one client, records what it sent,
    answers with ``answer(conn)``."""

    def __init__(self, path: Path, answer: Callable[[socket.socket], None]) -> None:
        self.received = b""
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(os.fspath(path))
        self.sock.listen(1)
        self.answer = answer
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(0.5)
                with contextlib.suppress(OSError):
                    self.received += conn.recv(4096)
                self.answer(conn)

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(30)


@contextlib.contextmanager
def fake(short_dir: Path, answer: Callable[[socket.socket], None]) -> Iterator[FakeProcess]:
    f = FakeProcess(short_dir / "f.ctl", answer)
    try:
        yield f
    finally:
        f.close()
        (short_dir / "f.ctl").unlink(missing_ok=True)


def test_answers_that_are_not_one_bounded_utf8_line_are_refused(short_dir: Path) -> None:
    def endless(conn: socket.socket) -> None:
        conn.settimeout(30)
        with contextlib.suppress(OSError):
            for _ in range(128):  # 8 MiB without a newline, then close
                conn.sendall(b"x" * 65536)

    cases: list[tuple[Callable[[socket.socket], None], str]] = [
        (endless, "too long"),  # before: read whole, then "bad answer" with 8 MiB in it
        (lambda c: c.sendall(b"OK destroyed\nOK but also this\n"), "more than one line"),
        (lambda c: c.sendall(b"OK \xff\xfe\n"), "not UTF-8"),  # before: returned as U+FFFD
        (lambda c: c.sendall(b"OK destroyed"), "before its newline"),  # before: "destroyed"
        (lambda c: c.sendall(b"OKAY\n"), "bad answer"),
    ]
    for answer, why in cases:
        with fake(short_dir, answer) as f, pytest.raises(TransportError, match=why):
            send_control(f.sock.getsockname(), "STATUS", timeout=30)


@pytest.mark.timeout(60)
def test_an_answer_dripped_a_byte_at_a_time_is_bounded_in_all(short_dir: Path) -> None:
    def drip(conn: socket.socket) -> None:
        conn.settimeout(30)
        f = current[0]
        with contextlib.suppress(OSError):
            while not f.stop.wait(0.02):  # before: each recv had its own timeout: for ever
                conn.sendall(b"x")

    current: list[FakeProcess] = []
    f = FakeProcess(short_dir / "d.ctl", drip)
    current.append(f)
    try:
        with pytest.raises(TransportError, match="time"):
            send_control(short_dir / "d.ctl", "STATUS", timeout=0.5)
    finally:
        f.close()


def test_a_command_that_is_not_one_printable_line_is_never_sent(short_dir: Path) -> None:
    for command in ["STATUS\nTAMPER", "STATUS é", " STATUS", "STATUS\r", "", "A" * 300, "X\x00"]:
        with (
            fake(short_dir, lambda c: c.sendall(b"OK sure\n")) as f,
            pytest.raises(TransportError, match="not a control command"),
        ):
            send_control(f.sock.getsockname(), command, timeout=30)
        assert f.received == b"", command  # before: "STATUS é" a UnicodeEncodeError


def test_a_control_socket_of_another_user_is_not_talked_to(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real + 1)  # as if the listener were another's
    with (
        fake(short_dir, lambda c: c.sendall(b"OK destroyed\n")) as f,
        pytest.raises(CarrierUnavailable, match="another user"),
    ):
        send_control(f.sock.getsockname(), "TAMPER", timeout=30)
    assert f.received == b""
