"""Re-sealing private key files under a new passphrase (the ``rekey`` commands' planning).

:func:`reseal_file` turns one key file into its current-format bytes under the new passphrase
(checking that it opens under the old one first); :func:`plan_directory` does it for every key
file of a directory, recognised by content. The files are then written all or nothing by
:func:`safescan.code.rekeying.rewrite`.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

from safescan.code import keyfile, strictjson
from safescan.code.errors import KeyFileError
from safescan.code.keys import SchemeKey
from safescan.code.rekeying import NEW, OLD, Rewrite, recover_if_interrupted, rewrite
from safescan.code.smallfile import read_bounded

MAX_KEY_FILE = 16384  # a key file is under 4 KiB; bigger files are not looked into


def reseal_file(path: Path, data: bytes, old: bytes, new: bytes) -> bytes | None:
    """A key file's bytes sealed under ``new`` in the current format, or None when there is
    nothing to change (already current, same passphrase). Either way it must open under
    ``old`` (:class:`KeyFileError` naming the file: a wrong passphrase or a damaged file)
    and the result must open under ``new`` to the same key. Handles sealed and legacy PEM
    key files (any PKCS#8 key: the TLS CA's too) and scheme-key JSON files."""
    try:
        if data.lstrip().startswith(b"{"):
            key = SchemeKey.from_json(data, old)
            if old == new and not keyfile.is_legacy(_scheme_pem(data)):
                return None
            out = key.to_json(new).encode("ascii")
            if SchemeKey.from_json(out, new).public != key.public:  # pragma: no cover
                raise KeyFileError("the re-sealed key does not read back")
            return out
        if keyfile.is_legacy(data):  # Ed25519 / X25519 under PBKDF2: the current format now
            out = keyfile.seal(keyfile.unseal(data, old), new)
            keyfile.unseal(out, new)
            return out
        der = keyfile.unseal_der(data, old)
        if old == new:
            return None
        out = keyfile.seal_der(der, new)
        if keyfile.unseal_der(out, new) != der:  # pragma: no cover - a broken library
            raise KeyFileError("the re-sealed key does not read back")
        return out
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc.message}") from None


def _scheme_pem(data: bytes) -> bytes:
    try:
        doc = strictjson.loads(data)  # a "pem" named twice is refused, never the last taken
        if not isinstance(doc, dict):
            raise TypeError("not a JSON object")
        return str(doc["pem"]).encode("ascii")
    except (ValueError, KeyError, TypeError, UnicodeEncodeError):
        raise KeyFileError("corrupt scheme key file") from None


def is_key_file(data: bytes) -> bool:
    """Whether ``data`` looks like a private key file this module re-seals (sealed or legacy
    PEM, or a scheme-key JSON file); public files (trust lists, certificates) are not."""
    if keyfile.is_sealed(data) or keyfile.is_legacy(data):
        return True
    if not data.lstrip().startswith(b"{"):
        return False
    try:
        doc = strictjson.loads(data)  # a "pem" named twice: not a key file this re-seals
    except ValueError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("pem"), str)


def _read_entry(path: Path) -> bytes | None:
    """A directory entry's bytes, checked and read through one descriptor (before: ``stat``
    then ``read_bytes``, so an entry swapped for a FIFO between the two hung the rekey and
    one swapped for a link or a large file was read whole). None for a subdirectory or a
    file larger than any key file (not looked into); :class:`KeyFileError` for a link, a
    FIFO, a device or a socket (a key directory holds none, and a link would be replaced by
    the rewrite, not its target)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyFileError(f"{path} is a symbolic link: not re-sealed through it") from None
        if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):  # a socket
            raise KeyFileError(f"{path} is not a regular file") from None
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            return None
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path} is not a regular file (a pipe or a device?)")
        if st.st_size > MAX_KEY_FILE:
            return None
        data = os.read(fd, MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return None if len(data) > MAX_KEY_FILE else data


def plan_directory(directory: Path, old: bytes, new: bytes) -> tuple[list[Rewrite], list[Path]]:
    """Every private key file directly in ``directory`` (by content): the rewrites to make and
    every key file found (each checked to open under ``old`` first)."""
    rewrites: list[Rewrite] = []
    found: list[Path] = []
    for path in sorted(Path(directory).iterdir()):
        if path.name.startswith(".") or path.name.endswith((OLD, NEW, ".tmp")):
            continue
        data = _read_entry(path)
        if data is None or not is_key_file(data):
            continue
        found.append(path)
        out = reseal_file(path, data, old, new)
        if out is not None:
            rewrites.append(Rewrite(path, data, out))
    return rewrites, found


#: key files that share their passphrase with a file this module does not re-seal: their own
#: command re-seals both together
SHARED = {"code-signing.key": "safescan pos rekey (with the POS configuration's API key)"}


def rekey_path(path: Path, old: bytes, new: bytes) -> dict[str, Any]:
    """``safescan keys rekey PATH``: every private key file of a directory (a ``safescan
    keys`` directory, a carrier factory's, any directory of key files), or one key file (a
    merchant's signing key), moved to the current sealed format and, with ``new`` not
    ``old``, re-sealed under ``new``; all or nothing (:func:`.rekeying.rewrite`)."""
    path = Path(path)
    recover_if_interrupted(path if path.is_dir() else path.parent)
    if path.is_dir():
        rewrites, found = plan_directory(path, old, new)
        primary = path
        if not found:
            raise KeyFileError(f"{path} holds no private key file")
    else:
        try:
            data = read_bounded(path, MAX_KEY_FILE, "a key file", own=True)
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
        if not is_key_file(data):
            raise KeyFileError(f"{path} is not a safescan private key file")
        out = reseal_file(path, data, old, new)
        rewrites, found, primary = (
            ([] if out is None else [Rewrite(path, data, out)]),
            [path],
            path.parent,
        )
    if new != old:
        for f in found:
            if f.name in SHARED:
                raise KeyFileError(
                    f"{f} shares its passphrase with another file: use {SHARED[f.name]}"
                )
    rewrite(primary, rewrites)
    changed = {r.path for r in rewrites}
    return {
        "path": str(path),
        "passphrase": "changed" if new != old else "unchanged",
        "files": [{"file": f.name, "resealed": f in changed} for f in found],
        "resealed": len(rewrites),
    }


__all__ = ["is_key_file", "plan_directory", "rekey_path", "reseal_file"]
