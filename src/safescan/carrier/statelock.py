"""One process per carrier state file: two processes on one EEPROM image would be two live
copies of one card (two PIN counters, two signature counters).

The lock is ``fcntl.flock`` on ``STATE.lock`` beside the image (the image itself is replaced
atomically on every write, so its inode changes and cannot carry the lock). The kernel drops
the lock when the process dies, however it dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path

from safescan.carrier.errors import CarrierError


class StateInUse(CarrierError):
    """Another carrier process already serves this state file."""

    code = "carrier_state_in_use"


class StateFileRefused(CarrierError):
    """The state file's path names a symbolic link, not the image itself."""

    code = "carrier_state_file_refused"


def check_state_path(state: str | os.PathLike[str]) -> None:
    """Refuse a ``--state`` that is a symbolic link or not a regular file, before the card is
    powered (a directory given by mistake was served as a destroyed card that could not even
    record its destruction).

    The image is replaced by an atomic rename on every write, which replaces a link with a
    regular file: the link's target would stay behind as a stale copy, and the lock (taken on
    the resolved path) would no longer be the one a second process on the same spelling
    takes, so it would run a second live copy of the card. The card reads its image without
    following links (a link there is not its image), so the process says so instead.
    """
    if os.path.islink(state):
        raise StateFileRefused(
            f"the state file {state} is a symbolic link: give the image's own path"
            f" ({os.path.realpath(state)})"
        )
    try:
        mode = os.lstat(state).st_mode
    except FileNotFoundError:
        return  # a virgin chip: the image is made at power-on
    except OSError as exc:
        raise StateFileRefused(f"cannot use the state file {state}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise StateFileRefused(
            f"the state file {state} is not a regular file (a directory, a pipe or a device):"
            " give an image file's path"
        )


class StateLock:
    """An exclusive, non-blocking lock on a carrier state file, held until :meth:`release`."""

    def __init__(self, state: str | os.PathLike[str]) -> None:
        self.state = Path(state)
        real = self.state.resolve()  # a symlink or another spelling locks the same file
        self.path = real.with_name(real.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> StateLock:
        """Take the lock or raise :class:`StateInUse` at once (never waits)."""
        try:  # never through a link: the holder's pid is written into the lock file
            fd = os.open(
                self.path,
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK,
                0o600,
            )
        except OSError as exc:
            raise CarrierError(f"cannot open the lock file {self.path}: {exc.strerror}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            raise StateFileRefused(
                f"the lock file {self.path} is not a regular file of its own (a hard link, a"
                " pipe or a device): remove it"
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (process {holder})" if holder else ""
            raise StateInUse(
                f"another carrier process{who} already serves {self.state}: one state file is"
                " one card, and two live copies of a card are refused"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise CarrierError(f"cannot lock {self.path}: {exc.strerror}") from None
        with contextlib.suppress(OSError):  # the holder's pid, for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (also dropped by the kernel when the process ends)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
