"""The checkpoint file itself: locked, fsync'd, hash-chained appends and the chain's check.

Every record carries ``"prev"`` and ``"n"``, signed with it (:mod:`.checkpoints` says what the
records mean; docs/protocol.md section 11 the layout):

``prev``  hex SHA-256 of the line before it (its exact bytes, without the newline). The first
          chained record of a file hashes everything before it instead: the lines of a file
          written before the chain existed (each with its newline), or nothing at all in a new
          file (``sha256(b"")``): such a *legacy prefix* is frozen by its first chained record.
``n``     the record's position in the chain: the record before it + 1 (the first: the number of
          lines before it + 1; after ``safescan institution reconcile --restart-checkpoints``,
          one past the position the database last saw).

A compaction rewrites the file with its essential records signed again, chained on from the
replaced file's last line; the first of them carries ``"compacted": true`` and is the only record
whose ``prev`` the file cannot show. Appends read the previous line under the same exclusive
``flock`` they write under, so processes appending at once keep one chain. Anything that
rearranges genuine records (an older record replayed, one moved, deleted from the middle,
duplicated, spliced in from another file) breaks the chain; a truncation does not, which is what
the database's :class:`Head` (the newest position it knows was written) is for.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safescan.api.errors import ConfigError
from safescan.code import strictjson
from safescan.code.atomicfile import fsync_dir, write_all, write_atomic
from safescan.code.keys import Signer
from safescan.code.smallfile import read_bounded
from safescan.institution.util import canonical_json

log = logging.getLogger("safescan.institution.checkpoints")
CONTEXT = b"SS1-CKPT\n"
VERSION = 1
EMPTY = hashlib.sha256(b"").hexdigest()
_TAIL_CHUNK = 64 << 10
_CHAIN_FIELDS = ("prev", "n", "compacted", "v", "kid", "sig")


class CheckpointError(ConfigError):
    """The checkpoint file is unreadable, forged, or belongs to another database."""

    code = "checkpoint_error"


class CheckpointUnavailable(CheckpointError):
    """The checkpoint file could not be read for want of a resource (descriptors, memory):
    nothing is known about the database from it, so a verdict already made stands."""


class CheckpointChainBroken(CheckpointError):
    """The checkpoint file's records are not the chain the institution wrote (one replayed,
    moved, deleted, duplicated or spliced in), or it is missing or shorter than the database
    knows it was: restore it from its copy, or ``safescan institution reconcile
    --restart-checkpoints``."""

    code = "checkpoint_chain_broken"


# out of descriptors or memory: the process's trouble, not the file's nor the database's
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EINTR})


#: the most the checkpoint file is read for at once: far past the size it is compacted at
#: (checkpoints.MAX_BYTES, 8 MiB); a larger file, a FIFO or a device is a typed error
READ_LIMIT = 256 << 20


def read_file(path: Path, offset: int = 0) -> bytes:
    """The checkpoint file's bytes from ``offset`` on: a regular file only (a link is followed:
    an operator may place the file through one), at most :data:`READ_LIMIT` bytes; ``OSError``
    (``EINVAL`` for a FIFO or a device, ``EFBIG``). Before: ``read_bytes()``/``read()``: a
    FIFO planted at the path hung the institution's start, ``/dev/zero`` ran it out of
    memory."""
    return read_bounded(path, READ_LIMIT, "a checkpoint file", regular=True, offset=offset)


def open_for_append(path: Path, *, create: bool) -> int:
    """A descriptor to append to the checkpoint file: a regular file only, checked on the
    opened descriptor (``fstat``). A new file is created where nothing stands (``O_EXCL``,
    never through a link); an existing one may be a link an operator placed (as for
    :func:`read_file`), but a link with no file behind it is not followed to create one, and
    a FIFO, a device (a link to ``/dev/null`` would swallow every record), a directory or a
    socket is ``OSError`` (``EINVAL``) with nothing written. The open never blocks
    (``O_NONBLOCK``: a FIFO without a reader). Before: ``O_RDWR | O_APPEND | O_CREAT`` on
    whatever stood there."""
    flags = os.O_RDWR | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC
    if create:
        flags |= os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(path, flags, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a pipe, a device, a directory?)")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_error(exc: OSError) -> CheckpointError:
    """The typed error for a failed read of the checkpoint file."""
    message = f"cannot read the checkpoint file: {exc.strerror}"
    if exc.errno in _RESOURCE_ERRNOS:
        return CheckpointUnavailable(message)
    return CheckpointError(message)


def sign(key: Signer, kid: int, body: dict[str, Any]) -> str:
    """One signed record as a line (no newline)."""
    doc = {"v": VERSION, "kid": kid, **body}
    sig = key.sign(CONTEXT + canonical_json(doc).encode())
    return canonical_json({**doc, "sig": base64.b64encode(sig).decode()})


def line_hash(line: str) -> str:
    """SHA-256 of one line (without its newline), hex: what the next record's ``prev`` holds."""
    return hashlib.sha256(line.encode()).hexdigest()


@dataclass(frozen=True)
class Head:
    """A chain position and the hash of the record there (``n`` 0: none)."""

    n: int = 0
    hash: str = ""


def _link(line: str) -> dict[str, Any] | None:
    """The JSON object of a chained line (one with ``prev``), else None (no signature check:
    that is the reader's)."""
    try:
        doc = strictjson.loads(line.encode("utf-8", "surrogateescape"))
    except ValueError:
        return None
    if isinstance(doc, dict) and "prev" in doc:
        return doc
    return None


@dataclass
class Chain:
    """The chain check, fed one line at a time (blank lines carry nothing and are skipped)."""

    links: int = 0  # chained records seen
    lines: int = 0
    last: Head = field(default_factory=Head)
    last_line: str = ""  # the hash of the line before the next one
    hashes: dict[int, str] = field(default_factory=dict)
    _prefix: Any = field(default_factory=hashlib.sha256)

    def feed(self, line: str) -> str | None:
        """Take the next line; a problem if it breaks the chain."""
        first, self.lines = self.lines == 0, self.lines + 1
        h = line_hash(line)
        doc = _link(line)
        problem = None
        if doc is None:
            if self.links:
                problem = (
                    "a record without a chain link after chained records (a record from before"
                    " the chain, replayed, or a damaged line)"
                )
            else:
                self._prefix.update(line.encode() + b"\n")
            self.last_line = h
            return problem
        n = doc.get("n")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            problem = "a record's chain position is not a positive integer"
            n = self.last.n + 1
        expect = self.last_line if self.links else self._prefix.hexdigest()
        if doc.get("prev") != expect and not (first and doc.get("compacted") is True):
            problem = problem or (
                "the chain is broken: this record was not written after the line before it"
                " (a record replayed, moved, duplicated, spliced in, or one before it deleted)"
            )
        elif self.links and n != self.last.n + 1:
            problem = f"the chain is broken: record {n} follows record {self.last.n}"
        self.links += 1
        self.last, self.last_line = Head(n, h), h
        self.hashes.setdefault(n, h)
        return problem

    def next_link(self) -> tuple[str, int]:
        """(``prev``, ``n``) of a record appended after the lines fed so far."""
        if self.links:  # damaged lines after the chain: chained on (the reader reports them)
            return self.last_line, self.last.n + 1
        return self._prefix.hexdigest(), self.lines + 1

    def against(self, head: Head | None, path: Path, exists: bool) -> list[str]:
        """What the database's head says about this file: missing, truncated or replaced."""
        if head is None or head.n <= 0:
            return []
        fix = (
            "restore the file from its copy, or run `safescan institution reconcile"
            " --restart-checkpoints --note ...`"
        )
        if not exists:
            return [
                f"the checkpoint file {path} is missing, but the database saw it hold record"
                f" {head.n}: it was deleted or moved ({fix})"
            ]
        if self.last.n < head.n:
            return [
                f"the checkpoint file ends at record {self.last.n}, but the database saw record"
                f" {head.n} written: it was truncated or replaced by an older copy ({fix})"
            ]
        if head.n in self.hashes and self.hashes[head.n] != head.hash:
            return [
                f"record {head.n} of the checkpoint file is not the one the database saw"
                f" written: the file was replaced ({fix})"
            ]
        return []


class CheckpointFile:
    """The append-only file, with its lock file (``<path>.lock``, so compaction can rename)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @contextmanager
    def locked(self, exclusive: bool) -> Iterator[None]:
        """Hold the file's lock (shared to read, exclusive to write)."""
        # the program's own file: never created or opened through a link planted at its name
        fd = os.open(
            f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def exists(self) -> bool:
        """Whether the file exists (a failing stat, e.g. out of descriptors, is a typed
        :class:`CheckpointError`, not an answer)."""
        try:
            return self.path.exists()
        except OSError as exc:
            raise read_error(exc) from None

    def lines(self) -> list[str]:
        """Every complete line (a torn last line, from a crash mid-write, is left out)."""
        try:
            with self.locked(False):
                return self._read_lines()
        except OSError as exc:
            raise read_error(exc) from None

    def _read_lines(self) -> list[str]:
        try:
            data = read_file(self.path)
        except FileNotFoundError:
            return []
        return split_lines(data)

    def append(
        self,
        key: Signer,
        kid: int,
        bodies: list[dict[str, Any]],
        *,
        floor: Head | None = None,
        start: int | None = None,
    ) -> Head:
        """Sign ``bodies`` as the next records of the chain, append and fsync them (and the
        directory, when the file is new); returns the head after them. The previous record is
        read under the same exclusive lock. A file that is missing or ends before ``floor``
        (the database's head) is not extended: :class:`CheckpointChainBroken`. ``start``: the
        first position of a new chain (only into an empty file: a restarted one)."""
        try:
            with self.locked(True):
                new = not os.path.lexists(self.path)
                if new and floor is not None and floor.n > 0:
                    raise CheckpointChainBroken(
                        f"the checkpoint file {self.path} is missing, but the database saw it"
                        f" hold record {floor.n}: not starting another one"
                    )
                fd = open_for_append(self.path, create=new)
                try:
                    prev, n = self._next(fd)
                    if start is not None:
                        if n != 1:
                            raise CheckpointError(f"{self.path} is not empty: not restarting it")
                        n = start
                    if floor is not None and n - 1 < floor.n:
                        raise CheckpointChainBroken(
                            f"the checkpoint file ends at record {n - 1}, but the database saw"
                            f" record {floor.n} written: not extending a truncated file"
                        )
                    lines = []
                    for body in bodies:
                        line = sign(key, kid, {**body, "prev": prev, "n": n})
                        lines.append(line)
                        prev, n = line_hash(line), n + 1
                    write_all(fd, "".join(line + "\n" for line in lines).encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if new:
                    fsync_dir(self.path.parent)
                return Head(n - 1, prev)
        except OSError as exc:
            log.error("cannot append to the checkpoint file %s: %s", self.path, exc.strerror)
            raise CheckpointError(
                f"the checkpoint file cannot be written ({exc.strerror}); retry later"
            ) from None

    def _next(self, fd: int) -> tuple[str, int]:
        """(``prev``, ``n``) of the next record; a torn last line (a crash mid-write) is cut
        off first, so the next record starts on a line of its own."""
        size = os.fstat(fd).st_size
        tail = os.pread(fd, min(size, _TAIL_CHUNK), max(0, size - _TAIL_CHUNK))
        if size and not tail.endswith(b"\n"):
            cut = size - len(tail) + tail.rfind(b"\n") + 1
            if b"\n" not in tail and len(tail) < size:  # a torn line longer than the chunk
                cut = _last_newline(fd, size)
            log.warning("cutting a torn last line off the checkpoint file %s", self.path)
            os.ftruncate(fd, cut)
            os.fsync(fd)
            size = cut
            tail = os.pread(fd, min(size, _TAIL_CHUNK), max(0, size - _TAIL_CHUNK))
        found = split_lines(tail)
        # the chunk's first line may be cut; the last one is whole when another precedes it
        if found and (len(found) > 1 or len(tail) == size):
            last = _link(found[-1])
            if last is not None and isinstance(last.get("n"), int):
                return line_hash(found[-1]), int(last["n"]) + 1
        chain = Chain()
        for line in split_lines(os.pread(fd, size, 0)):
            chain.feed(line)
        return chain.next_link()

    def compact(
        self,
        key: Signer,
        kid: int,
        keep: Callable[[list[str]], list[dict[str, Any]]],
    ) -> Head:
        """Atomically replace the file with the records ``keep(its lines)`` returns, signed
        again and chained on from its last line, all under the exclusive lock (so no record
        appended meanwhile is lost); returns the new head. ``keep`` raises to refuse."""
        with self.locked(True):
            lines = self._read_lines()
            kept = keep(lines)
            chain = Chain()
            for line in lines:
                chain.feed(line)
            prev, n = chain.next_link()
            out = []
            for i, rec in enumerate(kept):
                body = {k: v for k, v in rec.items() if k not in _CHAIN_FIELDS}
                extra = {"compacted": True} if i == 0 else {}
                line = sign(key, kid, {**body, **extra, "prev": prev, "n": n})
                out.append(line)
                prev, n = line_hash(line), n + 1
            write_atomic(self.path, "".join(x + "\n" for x in out).encode())
            return Head(n - 1, prev)

    def size(self) -> int:
        """Bytes in the file (0 if none)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0


def split_lines(data: bytes) -> list[str]:
    """The complete, non-blank lines of ``data`` (a torn last line is left out)."""
    text = data.decode("utf-8", "replace")
    complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
    return [line for line in complete.split("\n") if line.strip()]


def _last_newline(fd: int, size: int) -> int:
    data = os.pread(fd, size, 0)
    return data.rfind(b"\n") + 1


__all__ = [
    "CONTEXT",
    "EMPTY",
    "VERSION",
    "Chain",
    "CheckpointChainBroken",
    "CheckpointError",
    "CheckpointFile",
    "CheckpointUnavailable",
    "Head",
    "line_hash",
    "read_error",
    "sign",
    "split_lines",
]
