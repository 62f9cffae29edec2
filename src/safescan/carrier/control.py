"""The carrier's physical side: an owner-only Unix control socket of the carrier process.

A real token's tamper sensor (a mesh, a light sensor, a case switch) and its buttons are wired
to the chip, not to its I/O interface: nothing a host sends over USB, serial, PC/SC or audio
can fire them. The emulation keeps them off every transport too. They are reached through a
Unix stream socket of the carrier process (default ``STATE.ctl``), created with mode 0600
and checked with ``SO_PEERCRED``: only the process owner (who can also kill the process and
read its state file: the person holding the token) can use it.

Protocol: one ASCII line per connection, one line back::

    TAMPER          -> "OK destroyed"          the tamper sensor fires: self-destruct
    STATUS          -> "OK <lifecycle>"        blank / personalized / destroyed
    SCREEN          -> "OK <JSON>"             what the display shows (display model)
    PRESS OK        -> "OK pressed"            the confirm button (display model)
    PRESS CANCEL    -> "OK pressed"            the cancel button (display model)

Anything else -> ``ERR <reason>``, and nothing happens: a request is exactly one line of
printable ASCII words separated by single spaces, ended by ``\\n`` (``\\r\\n`` taken), at
most :data:`MAX_LINE` bytes, all of it within :data:`LINE_TIMEOUT` seconds; a line with
spaces around it, a second line, a control byte or no newline is refused. Whatever a request
does, the loop goes on serving (an error inside the card answers ``ERR internal error``).
An answer is one UTF-8 line of at most :data:`MAX_ANSWER` bytes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from safescan.carrier.errors import CarrierUnavailable, TransportError

log = logging.getLogger("safescan.carrier")

MAX_LINE = 256
#: the most an answer may hold (SCREEN's JSON: a merchant, an amount, a few items)
MAX_ANSWER = 64 * 1024
#: seconds for a whole request line to arrive once a client connected
LINE_TIMEOUT = 5.0
#: sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_PATH_BYTES = 107
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


def default_control_path(state: str | os.PathLike[str]) -> Path:
    """Where a carrier process on ``state`` puts its control socket: ``STATE.ctl``."""
    return Path(str(state) + ".ctl")


def _check_path(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise TransportError(
            f"the control socket path {path} is longer than {MAX_PATH_BYTES} bytes;"
            " give a shorter one with --control PATH"
        )


def read_line(conn: socket.socket, limit: int, deadline: float) -> tuple[bytes, str | None]:
    """One line from ``conn``, its newline included: (line, None), or (what came, why not)
    when more than ``limit`` bytes came without a newline, the peer closed before one, or
    sent anything after it. The whole line must arrive before ``deadline`` (monotonic):
    ``TimeoutError`` (before: each ``recv`` had its own timeout, so a peer dripping a byte
    at a time held the socket for as long as it liked)."""
    data = b""
    while b"\n" not in data:
        if len(data) > limit:
            return data, "line too long"
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the line did not arrive in time")
        conn.settimeout(left)
        chunk = conn.recv(limit + 1 - len(data))
        if not chunk:
            return data, "the line ended before its newline"
        data += chunk
    if len(data) > limit + 1:
        return data, "line too long"
    if data.index(b"\n") != len(data) - 1:
        return data, "more than one line"
    return data, None


def parse_command(line: bytes) -> str | None:
    """The command of one request line (``b"STATUS\\n"``): printable ASCII words separated
    by single spaces, nothing before or after but the newline (``\\r\\n`` taken too);
    else None. Before: the line was ``strip()``ped, so ``" TAMPER "``, a line without its
    newline and ``"TAMPER\\t"`` all fired the tamper sensor."""
    body = line[:-1]
    if body.endswith(b"\r"):
        body = body[:-1]
    if not body or not all(0x21 <= b <= 0x7E or b == 0x20 for b in body):
        return None
    text = body.decode("ascii")
    if "  " in text or text != text.strip(" "):
        return None
    return text


def peer_uid(conn: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return int(_PEERCRED.unpack(raw)[1])


class ControlServer:
    """Serves the control socket on a daemon thread; ``handler(line) -> answer line``."""

    def __init__(self, path: str | os.PathLike[str], handler: Callable[[str], str]) -> None:
        self.path = Path(path)
        self.handler = handler
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Bind the socket (mode 0600) and start serving; refuses a path in use."""
        _check_path(self.path)
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is created 0600: only the owner may connect
        try:
            sock.bind(os.fspath(self.path))
        except OSError as exc:
            sock.close()
            raise TransportError(
                f"cannot create the control socket {self.path}: {exc.strerror}"
            ) from None
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(4)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="carrier-control", daemon=True)
        self._thread.start()

    def _remove_stale(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise TransportError(f"{self.path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(os.fspath(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)  # left behind by a process that died
            return
        finally:
            probe.close()
        raise TransportError(f"another carrier process is using the control socket {self.path}")

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self._one(conn)
                except OSError:
                    continue  # the client went away, or took longer than LINE_TIMEOUT
                except Exception:  # the loop serves the owner whatever one request did
                    # (before: only OSError was caught, so anything else raised while
                    # answering ended the thread and the socket answered no one again)
                    log.exception("internal error while answering a control request")
                    with contextlib.suppress(OSError):
                        conn.sendall(b"ERR internal error\n")

    def _one(self, conn: socket.socket) -> None:
        if peer_uid(conn) != os.geteuid():
            conn.sendall(b"ERR only the carrier's owner may use this socket\n")
            return
        line, why = read_line(conn, MAX_LINE, time.monotonic() + LINE_TIMEOUT)
        command = None if why else parse_command(line)
        if command is None:
            conn.sendall(f"ERR {why or 'not a control command line'}\n".encode("ascii"))
            return
        answer = self.handler(command)
        conn.settimeout(LINE_TIMEOUT)
        conn.sendall(answer.encode("utf-8", "replace").replace(b"\n", b" ") + b"\n")

    def close(self) -> None:
        """Stop serving and remove the socket file."""
        self._stop.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        with contextlib.suppress(OSError):
            self.path.unlink()
        if self._thread is not None:
            self._thread.join(2)


def send_control(path: str | os.PathLike[str], command: str, *, timeout: float = 10.0) -> str:
    """Send one control line to a carrier process; returns its answer (without ``OK``).

    Raises :class:`CarrierUnavailable` if nothing listens there, or a process of another
    user does, and :class:`TransportError` with the carrier's reason for an ``ERR`` answer,
    for a command that is not one line of printable ASCII (nothing is sent), and for an
    answer that is not one UTF-8 line of at most :data:`MAX_ANSWER` bytes arriving within
    ``timeout`` seconds in all (before: read whole, however long, and each ``recv`` had its
    own timeout: whatever answered at the path could run the client out of memory or keep
    it for ever).
    """
    path = Path(path)
    _check_path(path)
    raw = command.encode("ascii", "replace") + b"\n"
    if not command.isascii() or parse_command(raw) != command or len(raw) > MAX_LINE:
        raise TransportError(f"not a control command: {command[:40]!r}")
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(os.fspath(path))
        except OSError as exc:
            raise CarrierUnavailable(
                f"no carrier process answers on {path}: {exc.strerror}"
            ) from None
        if peer_uid(sock) != os.geteuid():
            raise CarrierUnavailable(f"the control socket {path} is another user's process")
        sock.sendall(raw)
        answer, why = read_line(sock, MAX_ANSWER, deadline)
    except OSError as exc:
        raise TransportError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if why:
        raise TransportError(f"control socket {path}: bad answer ({why})")
    try:
        text = answer[:-1].decode("utf-8").removesuffix("\r")
    except UnicodeDecodeError:
        raise TransportError(f"control socket {path}: bad answer (not UTF-8)") from None
    if text == "OK" or text.startswith("OK "):
        return text[2:].strip()
    if text.startswith("ERR "):
        raise TransportError(text[4:][:MAX_LINE])
    raise TransportError(f"control socket {path}: bad answer {text[:40]!r}")
