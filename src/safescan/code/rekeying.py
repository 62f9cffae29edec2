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
4. in each other directory a pointer ``.rekey-journal.json`` naming the primary one and
   listing the names of that directory's files;
5. **the commit point**: ``<primary>/.rekey-journal.json`` listing the names of the primary's
   files and the other directories;
6. each ``F.rekey-new`` renamed over ``F`` (directories fsync'd);
7. **the done point**: the journal removed; then the pointers and ``.rekey-old`` files.

Whoever finds a journal (the next rekey, or any loader of a key file in that directory:
:func:`recover_if_interrupted`) and can take the lock puts every file back from its
``.rekey-old`` copy: a rewrite that did not reach its done point leaves every file as it was,
whatever moment it stopped at (an exception, ``kill -9``, a power cut). Nothing here is a
cryptographic primitive: the files' contents are sealed by :mod:`.keyfile`.

A journal is a file someone able to write its directory can plant. So each journal names only
files *of its own directory*, by name (never a path: no ``/``, no ``..``); another directory
is reached only when the primary journal names it *and* that directory's own pointer names the
primary back; files and copies that are links, pipes or directories are refused; and the
whole journal is checked before anything is renamed (a :class:`KeyFileError`, nothing
changed). Before (twelfth sitting) the journal listed absolute paths: one planted in a key
directory made the next key load rename any file ``F`` on the machine that had an
``F.rekey-old`` beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
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
    running): :class:`KeyFileError` if held and ``wait``, else yields whether it was taken.
    Never opened through a link (one planted at ``.rekey.lock`` created its target)."""
    try:
        fd = os.open(primary / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise KeyFileError(
            f"the rekey lock in {primary} cannot be opened ({exc.strerror}): a link or"
            " something else stands at its name; nothing was changed"
        ) from None
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


def _corrupt(directory: Path, why: str) -> KeyFileError:
    return KeyFileError(
        f"the rekey journal in {directory} is corrupt ({why}): nothing was put back; put the"
        " files back by hand"
    )


def _is_name(name: object) -> bool:
    """A file name of the journal's own directory: one component, never ``..``, never a path
    (before: absolute paths, so a journal planted in a key directory renamed any ``F`` that
    had an ``F.rekey-old`` anywhere on the machine)."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 200
        and name not in {".", ".."}
        and "/" not in name
        and "\0" not in name
        and not name.startswith(".")
        and not name.endswith((OLD, NEW, ".tmp"))
    )


def _names(directory: Path, doc: dict[str, object]) -> list[str]:
    files = doc.get("files")
    if not isinstance(files, list) or not all(_is_name(f) for f in files):
        raise _corrupt(directory, "a file that is not a name in its directory")
    if len(set(files)) != len(files):
        raise _corrupt(directory, "a file named twice")
    return [str(f) for f in files]


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return os.path.samestat(os.stat(a), os.stat(b))
    except OSError:
        return False


def _pointer_primary(directory: Path, doc: dict[str, object]) -> Path:
    """The primary directory a pointer (the journal of a directory other than the primary)
    names: an absolute, normalised path."""
    if set(doc) != {"primary", "files"}:
        raise _corrupt(directory, "not a journal this program writes")
    primary = doc["primary"]
    if (
        not isinstance(primary, str)
        or "\0" in primary
        or not os.path.isabs(primary)
        or os.path.normpath(primary) != primary
    ):
        raise _corrupt(directory, "its primary directory is not an absolute path")
    return Path(primary)


def _is_primary(doc: dict[str, object]) -> bool:
    return "others" in doc


def _plan(primary: Path, doc: dict[str, object]) -> list[tuple[Path, list[str]]]:
    """Every directory of the primary journal ``doc`` with the names its own journal lists:
    the primary's files are names in it; each other directory is named by the primary journal
    *and* holds a pointer naming the primary back, listing that directory's files (a journal
    planted in one directory reaches no file of another that did not take part)."""
    if set(doc) != {"files", "others"}:
        raise _corrupt(primary, "not a journal this program writes")
    plan = [(primary, _names(primary, doc))]
    others = doc["others"]
    if not isinstance(others, list):
        raise _corrupt(primary, "its other directories are not a list")
    for other in others:
        if (
            not isinstance(other, str)
            or "\0" in other
            or not os.path.isabs(other)
            or os.path.normpath(other) != other
        ):
            raise _corrupt(primary, "another directory that is not an absolute path")
        d = Path(other)
        pointer = _journal(d)
        if (
            pointer is None
            or _is_primary(pointer)
            or not _same_dir(_pointer_primary(d, pointer), primary)
            or _same_dir(d, primary)
            or any(_same_dir(d, seen) for seen, _ in plan)
        ):
            raise _corrupt(primary, f"{d} holds no rekey journal naming it")
        plan.append((d, _names(d, pointer)))
    return plan


def _regular_or_missing(path: Path) -> bool:
    """True if ``path`` is a regular file (never through a link), False if there is none;
    :class:`KeyFileError` for a link, a FIFO, a directory, a device."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(
            f"{path} is not a regular file (a link, a pipe, a directory?): nothing was put"
            " back; put the files back by hand"
        )
    return True


def _same(a: Path, b: Path) -> bool:
    try:
        return read_bounded(a, FILE_LIMIT, "a key file", own=True) == read_bounded(
            b, FILE_LIMIT, "a key file", own=True
        )
    except FileNotFoundError:
        return False


def _put_back(primary: Path) -> bool:
    """Under the lock: undo an interrupted rewrite whose journal is in ``primary`` (every file
    from its ``.rekey-old`` copy), then remove what it left. True if there was one. The whole
    journal is checked before anything is renamed: a journal that names anything but the
    files of its own directory, or a file or copy that is not a regular file, is a
    :class:`KeyFileError` and nothing changes."""
    doc = _journal(primary)
    if doc is None:
        return False
    if not _is_primary(doc):
        raise _corrupt(primary, "a pointer where the primary journal should be")
    plan = _plan(primary, doc)
    backups: list[tuple[Path, Path]] = []
    for d, names in plan:
        for name in names:
            path, backup = d / name, d / (name + OLD)
            _regular_or_missing(path)
            _regular_or_missing(d / (name + NEW))
            if _regular_or_missing(backup):
                backups.append((path, backup))
    for path, backup in backups:
        if _same(path, backup):  # never replaced: nothing to put back
            _unlink(backup)
        else:
            os.replace(backup, path)
    for d, names in plan:
        for name in names:
            _unlink(d / (name + NEW))
    for d, _ in plan:
        fsync_dir(d)
    _unlink(primary / JOURNAL)
    fsync_dir(primary)
    for d, _ in plan[1:]:
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
    rewrite still running is left alone. A journal that does not read as one this module
    wrote is a :class:`KeyFileError` and nothing is changed."""
    directory = Path(os.path.abspath(directory))
    if not os.path.lexists(directory / JOURNAL):
        return
    doc = _journal(directory)
    if doc is None:
        return
    primary = directory if _is_primary(doc) else _pointer_primary(directory, doc)
    if not _is_primary(doc):
        _names(directory, doc)
    try:
        with _locked(primary, wait=False) as held:
            if not held:
                return  # a rewrite is running: it finishes or is put back by its own process
            if primary != directory:
                main = _journal(primary)
                if main is None:  # a pointer whose rewrite finished or never committed
                    _unlink(directory / JOURNAL)
                    return
                if not _is_primary(main) or not any(
                    _same_dir(d, directory) for d, _ in _plan(primary, main)[1:]
                ):
                    raise _corrupt(directory, f"the journal in {primary} does not name it")
            _put_back(primary)
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
    for f in files:
        if not _is_name(f.path.name):
            raise KeyFileError(f"{f.path}: a key file's name cannot be journaled")
    if len({f.path for f in files}) != len(files):
        raise KeyFileError("a key file given twice")
    with _locked(primary, wait=True):
        _put_back(primary)
        others = sorted({f.path.parent for f in files} - {primary})
        for d in [primary, *others]:
            _leftovers(d)
        for f in files:
            try:
                # never through a link: the rename would replace the link, not its target
                now = read_bounded(f.path, FILE_LIMIT, "a key file", own=True)
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
            # each journal lists the names of its own directory's files only (before: absolute
            # paths); the primary's names the other directories, each of which names it back
            for d in others:
                names = [f.path.name for f in files if f.path.parent == d]
                pointer = {"primary": str(primary), "files": names}
                write_atomic(d / JOURNAL, json.dumps(pointer).encode())
            doc = {
                "files": [f.path.name for f in files if f.path.parent == primary],
                "others": [str(d) for d in others],
            }
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
