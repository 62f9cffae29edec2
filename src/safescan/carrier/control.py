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

Anything else -> ``ERR <reason>``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from safescan.carrier.errors import CarrierUnavailable, TransportError

MAX_LINE = 256
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
                conn.settimeout(5.0)
                try:
                    self._one(conn)
                except OSError:
                    continue  # the client went away

    def _one(self, conn: socket.socket) -> None:
        if peer_uid(conn) != os.geteuid():
            conn.sendall(b"ERR only the carrier's owner may use this socket\n")
            return
        line = b""
        while not line.endswith(b"\n") and len(line) <= MAX_LINE:
            chunk = conn.recv(MAX_LINE)
            if not chunk:
                break
            line += chunk
        if len(line) > MAX_LINE:
            conn.sendall(b"ERR line too long\n")
            return
        try:
            text = line.decode("ascii").strip()
        except UnicodeDecodeError:
            conn.sendall(b"ERR not ASCII\n")
            return
        answer = self.handler(text)
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

    Raises :class:`CarrierUnavailable` if nothing listens there (or it is not ours), and
    :class:`TransportError` with the carrier's reason for an ``ERR`` answer.
    """
    path = Path(path)
    _check_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(os.fspath(path))
        except OSError as exc:
            raise CarrierUnavailable(
                f"no carrier process answers on {path}: {exc.strerror}"
            ) from None
        sock.sendall(command.encode("ascii") + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    except OSError as exc:
        raise TransportError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    text = answer.decode("utf-8", "replace").strip()
    if text.startswith("OK"):
        return text[2:].strip()
    raise TransportError(text[4:] if text.startswith("ERR ") else f"bad answer {text!r}")
