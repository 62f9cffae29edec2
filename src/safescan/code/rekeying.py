"""Rewriting a set of private key files all or nothing, across crashes (``rekey`` commands).

Re-sealing key files under a new passphrase touches several files (an institution's root,
scheme and secret files and its TLS CA key; a POS's configuration and code-signing key), and
they must never be left half under the old passphrase and half under the new one. A rewrite
of files ``F1..Fn`` (one *primary* directory holds the journal; the files may lie in others):

1. an exclusive lock on ``<primary>/.rekey.lock`` (a second rekey is refused; the kernel
   drops the lock when the holder dies), and any earlier interrupted rewrite put back;
2. each file checked to still hold the bytes the plan was made from;
3. beside each file, ``F.rekey-old`` (its bytes now) and ``F.rekey-new`` (what it becomes),
   each written to a temporary file, fsync'd and renamed, the directory fsync'd;
4. in each other directory a pointer ``.rekey-journal.json`` naming the primary one;
5. **the commit point**: ``<primary>/.rekey-journal.json`` listing the files;
6. each ``F.rekey-new`` renamed over ``F`` (directories fsync'd);
7. **the done point**: the journal removed; then the pointers and ``.rekey-old`` files.

Whoever finds a journal (the next rekey, or any loader of a key file in that directory:
:func:`recover_if_interrupted`) and can take the lock puts every file back from its
``.rekey-old`` copy: a rewrite that did not reach its done point leaves every file as it was,
whatever moment it stopped at (an exception, ``kill -9``, a power cut). Nothing here is a
cryptographic primitive: the files' contents are sealed by :mod:`.keyfile`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from safescan.code import strictjson
from safescan.code.atomicfile import fsync_dir, write_atomic
from safescan.code.errors import KeyFileError
from safescan.code.smallfile import FILE_LIMIT, read_bounded

JOURNAL = ".rekey-journal.json"
LOCK = ".rekey.lock"
OLD = ".rekey-old"
NEW = ".rekey-new"
#: the most a journal is read for (a few file names)
JOURNAL_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Rewrite:
    """One file of a rewrite: the bytes it holds now and the bytes it becomes."""

    path: Path
    old: bytes
    new: bytes


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def _locked(primary: Path, *, wait: bool) -> Iterator[bool]:
    """The primary directory's rekey lock, never waited for (a held lock means a rewrite is
    running): :class:`KeyFileError` if held and ``wait``, else yields whether it was taken."""
    fd = os.open(primary / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if wait:
                raise KeyFileError(
                    f"another rekey of {primary} is running: wait for it to end"
                ) from None
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _journal(directory: Path) -> dict[str, object] | None:
    try:
        # the program's own file (write_atomic: one regular file): bounded, never through a
        # link, never a FIFO (before: read_text(); every key loader reads it first, so a FIFO
        # planted here hung every start, /dev/zero ran it out of memory), read strictly
        doc = strictjson.loads(
            read_bounded(directory / JOURNAL, JOURNAL_LIMIT, "a rekey journal", own=True)
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"the rekey journal in {directory} cannot be read: {exc}") from None
    if not isinstance(doc, dict):
        raise KeyFileError(f"the rekey journal in {directory} is corrupt")
    return doc


def _same(a: Path, b: Path) -> bool:
    try:
        return read_bounded(a, FILE_LIMIT, "a key file") == read_bounded(
            b, FILE_LIMIT, "a key file"
        )
    except FileNotFoundError:
        return False


def _put_back(primary: Path) -> bool:
    """Under the lock: undo an interrupted rewrite whose journal is in ``primary`` (every file
    from its ``.rekey-old`` copy), then remove what it left. True if there was one."""
    doc = _journal(primary)
    if doc is None:
        return False
    files = doc.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise KeyFileError(f"the rekey journal in {primary} is corrupt: put the files back by hand")
    dirs = {primary}
    for name in files:
        path = Path(name)
        dirs.add(path.parent)
        backup = path.with_name(path.name + OLD)
        if backup.exists():
            if _same(path, backup):  # never replaced: nothing to put back
                _unlink(backup)
            else:
                os.replace(backup, path)
        _unlink(path.with_name(path.name + NEW))
    for d in dirs:
        fsync_dir(d)
    _unlink(primary / JOURNAL)
    fsync_dir(primary)
    for d in dirs - {primary}:
        _unlink(d / JOURNAL)
    return True


def _leftovers(directory: Path) -> None:
    """Under the lock, with no journal: copies a finished or never-committed rewrite left."""
    for p in directory.iterdir():
        if p.name.endswith((OLD, NEW, OLD + ".tmp", NEW + ".tmp")) or p.name == JOURNAL + ".tmp":
            _unlink(p)


def recover_if_interrupted(directory: Path) -> None:
    """If a rewrite was interrupted in (or through) ``directory``, put its files back now (a
    loader calls this before reading a key file; cheap when there is nothing: one stat). A
    rewrite still running is left alone."""
    directory = Path(directory)
    if not (directory / JOURNAL).exists():
        return
    doc = _journal(directory)
    if doc is None:
        return
    primary = Path(str(doc.get("primary", directory)))
    try:
        with _locked(primary, wait=False) as held:
            if not held:
                return  # a rewrite is running: it finishes or is put back by its own process
            if not _put_back(primary):  # a pointer whose rewrite finished or never committed
                _unlink(directory / JOURNAL)
    except OSError as exc:
        raise KeyFileError(
            f"an interrupted rekey in {directory} cannot be put back ({exc.strerror}): run"
            " the rekey command again"
        ) from None


def rewrite(primary: Path, files: Sequence[Rewrite]) -> None:
    """Replace every file's bytes, all or nothing (module docstring). Raises
    :class:`KeyFileError` (every file then as it was) if anything fails."""
    # absolute (the journal is read from any working directory), symlinks kept as they are
    primary = Path(os.path.abspath(primary))
    files = [Rewrite(Path(os.path.abspath(f.path)), f.old, f.new) for f in files]
    with _locked(primary, wait=True):
        _put_back(primary)
        others = sorted({f.path.parent for f in files} - {primary})
        for d in [primary, *others]:
            _leftovers(d)
        for f in files:
            try:
                now = read_bounded(f.path, FILE_LIMIT, "a key file")
            except OSError as exc:
                raise KeyFileError(f"cannot read {f.path}: {exc.strerror}") from None
            if now != f.old:
                raise KeyFileError(f"{f.path} changed while it was being re-sealed: run again")
            _unlink(f.path.with_name(f.path.name + ".tmp"))  # an older writer's leftover
        committed = False
        try:
            for f in files:
                write_atomic(f.path.with_name(f.path.name + OLD), f.old)
                write_atomic(f.path.with_name(f.path.name + NEW), f.new)
            for d in others:
                write_atomic(d / JOURNAL, json.dumps({"primary": str(primary)}).encode())
            doc = {"primary": str(primary), "files": [str(f.path) for f in files]}
            write_atomic(primary / JOURNAL, json.dumps(doc).encode())
            committed = True
            for f in files:
                os.replace(f.path.with_name(f.path.name + NEW), f.path)
            for d in {primary, *others}:
                fsync_dir(d)
            _unlink(primary / JOURNAL)  # the done point
        except OSError as exc:
            if committed:
                try:
                    _put_back(primary)
                except OSError as again:
                    raise KeyFileError(
                        f"re-sealing stopped ({exc.strerror or exc}) and the files could not"
                        f" be put back yet ({again.strerror or again}): the journal in"
                        f" {primary} puts them back at the next load or rekey"
                    ) from None
            for d in [primary, *others]:
                with contextlib.suppress(OSError):
                    _leftovers(d)
                    if d != primary:
                        _unlink(d / JOURNAL)
            raise KeyFileError(
                f"re-sealing stopped ({exc.strerror or exc}): every key file is as it was"
            ) from None
        # done: a crash from here on leaves the new files (a journal that reappears finds no
        # copies to put back once they are removed, and leaves the files as they are)
        with contextlib.suppress(OSError):
            fsync_dir(primary)
            for d in [primary, *others]:
                _leftovers(d)
                if d != primary:
                    _unlink(d / JOURNAL)


__all__ = ["JOURNAL", "NEW", "OLD", "Rewrite", "recover_if_interrupted", "rewrite"]
