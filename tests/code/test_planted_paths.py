"""(harden, thirteenth sitting) Names planted where the key and checkpoint code looks.

Someone able to write a key directory (or the state directory) plants:

* a rekey journal naming files outside its directory (absolute paths, ``..``, another
  directory's files, a link, a pointer of another rewrite): before, the journal listed absolute
  paths and the next key load renamed any ``F`` on the machine that had an ``F.rekey-old``;
* a link where the rekey lock or the checkpoint lock is created (the target was created);
* an entry of a key directory swapped for a FIFO or a link between ``resealing``'s check and
  its read (``stat`` then ``read_bytes``: a hang, or a file outside re-sealed through a link);
* a FIFO, a link to ``/dev/null`` or a link to nothing where the checkpoint file is appended to
  (records swallowed, or a file created at the link's target).

Each is a typed error and changes nothing. Every test here failed (or hung) before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from safescan.code.errors import KeyFileError
from safescan.code.rekeying import JOURNAL, LOCK, Rewrite, recover_if_interrupted, rewrite

# ---- the rekey journal --------------------------------------------------------------------


def _victim(tmp_path: Path) -> tuple[Path, Path]:
    """A directory the attacker cannot write, with a file F and a stale F.rekey-old."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "precious.conf"
    victim.write_text("the file as it is")
    (outside / "precious.conf.rekey-old").write_text("what the attacker wants it to say")
    return outside, victim


def _keys(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "root-1.pem").write_text("a key")
    return keys


def _state(*dirs: Path) -> dict[str, tuple[bool, bytes | str]]:
    out: dict[str, tuple[bool, bytes | str]] = {}
    for d in dirs:
        for p in sorted(d.iterdir()):
            if p.name == LOCK:
                continue
            if p.is_symlink():
                out[str(p)] = (True, os.readlink(p))
            else:
                out[str(p)] = (False, p.read_bytes() if p.is_file() else b"<not a file>")
    return out


@pytest.mark.parametrize(
    "entry",
    ["{victim}", "../outside/precious.conf", "{keys}/../outside/precious.conf"],
    ids=["absolute", "dotdot", "absolute-dotdot"],
)
def test_a_planted_journal_never_renames_a_file_outside_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    outside, victim = _victim(tmp_path)
    keys = _keys(tmp_path)
    monkeypatch.chdir(keys)  # a relative entry resolved against the loader's directory
    name = entry.format(victim=victim, keys=keys)
    for doc in (
        {"primary": str(keys), "files": [name]},  # the form the journal had
        {"files": [name], "others": []},
    ):
        (keys / JOURNAL).write_text(json.dumps(doc))
        before = _state(keys, outside)
        with pytest.raises(KeyFileError, match="rekey journal"):
            recover_if_interrupted(keys)
        assert victim.read_text() == "the file as it is"  # before: renamed over
        assert _state(keys, outside) == before


def test_a_primary_journal_reaches_another_directory_only_if_it_names_it_back(
    tmp_path: Path,
) -> None:
    outside, victim = _victim(tmp_path)
    keys = _keys(tmp_path)
    other = tmp_path / "other-keys"
    other.mkdir()
    cases = [
        None,  # no pointer at all
        {"primary": str(other), "files": ["precious.conf"]},  # names itself
        {"primary": str(tmp_path / "elsewhere"), "files": ["precious.conf"]},  # another rewrite
        {"primary": str(keys), "files": ["../outside/precious.conf"]},  # names it, escapes
        {"files": ["precious.conf"], "others": []},  # a primary journal, not a pointer
    ]
    for pointer in cases:
        if pointer is not None:
            (outside / JOURNAL).write_text(json.dumps(pointer))
        for others in ([str(outside)], [str(keys)], [str(outside), str(outside)]):
            (keys / JOURNAL).write_text(json.dumps({"files": [], "others": others}))
            before = _state(keys, outside)
            with pytest.raises(KeyFileError, match="rekey journal"):
                recover_if_interrupted(keys)
            assert victim.read_text() == "the file as it is", (pointer, others)
            assert _state(keys, outside) == before


@pytest.mark.parametrize(
    "files",
    [["", "root-1.pem"], ["."], [".."], ["a/b"], ["root-1.pem\x00x"], [".rekey.lock"],
     ["root-1.pem.rekey-old"], ["root-1.pem", "root-1.pem"], "root-1.pem", [1], [None]],
    ids=["empty", "dot", "dotdot", "slash", "nul", "hidden", "copy", "twice", "string",
         "number", "null"],
)  # fmt: skip
def test_journal_entries_that_are_not_names_of_its_directory_are_refused(
    tmp_path: Path, files: object
) -> None:
    keys = _keys(tmp_path)
    (keys / "root-1.pem.rekey-old").write_text("an older key")
    (keys / JOURNAL).write_text(json.dumps({"files": files, "others": []}))
    before = _state(keys)
    with pytest.raises(KeyFileError, match="rekey journal"):
        recover_if_interrupted(keys)
    assert _state(keys) == before


def test_a_copy_or_file_that_is_a_link_or_fifo_is_refused_before_anything_moves(
    tmp_path: Path,
) -> None:
    outside, victim = _victim(tmp_path)
    keys = _keys(tmp_path)
    (keys / "scheme-1.json").write_text("the scheme key now")
    (keys / "scheme-1.json.rekey-old").write_text("the scheme key before")
    # the first file's copy is genuine; the second's is a link to a file outside
    (keys / "root-1.pem.rekey-old").symlink_to(victim)
    (keys / JOURNAL).write_text(
        json.dumps({"files": ["scheme-1.json", "root-1.pem"], "others": []})
    )
    before = _state(keys, outside)
    with pytest.raises(KeyFileError, match="not a regular file"):
        recover_if_interrupted(keys)
    assert _state(keys, outside) == before  # the genuine copy was not put back either
    assert not (keys / "root-1.pem").is_symlink()  # before: the link renamed over the key
    (keys / "root-1.pem.rekey-old").unlink()
    os.mkfifo(keys / "root-1.pem.rekey-old")
    with pytest.raises(KeyFileError, match="not a regular file"):
        recover_if_interrupted(keys)
    (keys / "root-1.pem.rekey-old").unlink()
    (keys / "root-1.pem").unlink()
    (keys / "root-1.pem").symlink_to(victim)  # the key file itself a link
    (keys / "root-1.pem.rekey-old").write_text("an older key")
    before = _state(keys, outside)
    with pytest.raises(KeyFileError, match="not a regular file"):
        recover_if_interrupted(keys)
    assert _state(keys, outside) == before


def test_a_link_planted_as_the_rekey_lock_creates_nothing(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    target = tmp_path / "created-by-the-loader"
    (keys / LOCK).symlink_to(target)
    (keys / JOURNAL).write_text(json.dumps({"files": [], "others": []}))
    with pytest.raises(KeyFileError, match="rekey lock"):
        recover_if_interrupted(keys)
    assert not target.exists()  # before: O_CREAT through the link made it
    with pytest.raises(KeyFileError):
        rewrite(keys, [])
    assert not target.exists()


def test_a_pointer_whose_primary_does_not_name_it_changes_nothing(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    (keys / "root-1.pem.rekey-old").write_text("an older key")
    (keys / JOURNAL).write_text(json.dumps({"files": ["root-1.pem"], "others": []}))
    planted = tmp_path / "writable"
    planted.mkdir()
    (planted / JOURNAL).write_text(json.dumps({"primary": str(keys), "files": []}))
    before = _state(keys, planted)
    with pytest.raises(KeyFileError, match="does not name it"):
        recover_if_interrupted(planted)  # before: the key directory was put back from here
    assert _state(keys, planted) == before
    for primary in ("relative/keys", f"{keys}/../keys", 7):
        (planted / JOURNAL).write_text(json.dumps({"primary": primary, "files": []}))
        with pytest.raises(KeyFileError, match="rekey journal"):
            recover_if_interrupted(planted)
        assert _state(keys) == before_keys(before, keys)


def before_keys(state: dict[str, tuple[bool, bytes | str]], keys: Path) -> dict[str, object]:
    return {k: v for k, v in state.items() if Path(k).parent == keys}


def test_the_journal_lists_names_and_a_killed_rewrite_is_still_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = _keys(tmp_path)
    tls = tmp_path / "keys.tls"
    tls.mkdir()
    (tls / "ca.key").write_text("the CA key")
    files = [
        Rewrite(keys / "root-1.pem", b"a key", b"the key re-sealed"),
        Rewrite(tls / "ca.key", b"the CA key", b"the CA key re-sealed"),
    ]
    before = _state(keys, tls)
    seen: dict[str, object] = {}
    real = os.replace

    def stop_after_first(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        if str(src).endswith(".rekey-new") and (keys / "root-1.pem.rekey-new").exists() is False:
            seen["primary"] = json.loads((keys / JOURNAL).read_text())
            seen["pointer"] = json.loads((tls / JOURNAL).read_text())
            raise KeyboardInterrupt  # not an OSError: left as a kill leaves it
        real(src, dst)

    monkeypatch.setattr(os, "replace", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        rewrite(keys, files)
    monkeypatch.setattr(os, "replace", real)
    assert seen["primary"] == {"files": ["root-1.pem"], "others": [str(tls)]}
    assert seen["pointer"] == {"primary": str(keys), "files": ["ca.key"]}
    recover_if_interrupted(tls)  # the other directory's loader puts both back
    assert {k: v for k, v in _state(keys, tls).items() if k in before} == before
    assert not (keys / JOURNAL).exists() and not (tls / JOURNAL).exists()
    rewrite(keys, files)
    assert (keys / "root-1.pem").read_bytes() == b"the key re-sealed"
    assert (tls / "ca.key").read_bytes() == b"the CA key re-sealed"


def test_a_key_file_that_is_a_link_is_not_rewritten(tmp_path: Path) -> None:
    outside, victim = _victim(tmp_path)
    keys = _keys(tmp_path)
    (keys / "linked.key").symlink_to(victim)
    before = _state(keys, outside)
    with pytest.raises(KeyFileError, match="cannot read"):
        rewrite(keys, [Rewrite(keys / "linked.key", victim.read_bytes(), b"new")])
    assert _state(keys, outside) == before


# ---- resealing.plan_directory -------------------------------------------------------------


def _key_dir(tmp_path: Path) -> Path:
    from safescan.code.keys import SigningKey

    d = tmp_path / "kd"
    d.mkdir()
    SigningKey.generate().save(d / "a-signing.key", b"old passphrase 1")
    return d


@pytest.fixture
def cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from safescan.code import keyfile

    monkeypatch.setattr(
        keyfile, "_derive", lambda pw, salt, n: hashlib.sha256(b"kdf" + salt + pw).digest()
    )


@pytest.mark.usefixtures("cheap_kdf")
@pytest.mark.timeout(60)
@pytest.mark.parametrize("planted", ["link", "fifo", "socket"])
def test_plan_directory_refuses_links_fifos_and_sockets(tmp_path: Path, planted: str) -> None:
    import socket

    from safescan.code.keys import SigningKey
    from safescan.code.resealing import plan_directory, rekey_path

    d = _key_dir(tmp_path)
    elsewhere = tmp_path / "elsewhere.key"
    SigningKey.generate().save(elsewhere, b"old passphrase 1")
    entry = d / "b-entry.key"
    sock = None
    if planted == "link":
        entry.symlink_to(elsewhere)  # before: re-sealed through the link
    elif planted == "fifo":
        os.mkfifo(entry)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(entry))
    try:
        before = _state(d) if planted != "socket" else None
        outside = elsewhere.read_bytes()
        with pytest.raises(KeyFileError, match=r"link|not a regular file"):
            plan_directory(d, b"old passphrase 1", b"new passphrase 2")
        with pytest.raises(KeyFileError, match=r"link|not a regular file"):
            rekey_path(d, b"old passphrase 1", b"new passphrase 2")
        assert elsewhere.read_bytes() == outside
        if before is not None:
            assert _state(d) == before
    finally:
        if sock is not None:
            sock.close()


@pytest.mark.usefixtures("cheap_kdf")
@pytest.mark.timeout(60)
def test_an_entry_swapped_for_a_fifo_after_the_old_check_is_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old code's window, between ``stat``/``is_file`` and ``read_bytes``: a key file
    swapped for a FIFO there hung the rekey (no writer ever comes). What is opened is what is
    checked now."""
    from safescan.code.resealing import plan_directory

    d = _key_dir(tmp_path)
    swapped = d / "b-swapped.key"
    swapped.write_bytes((d / "a-signing.key").read_bytes())
    real_stat = Path.stat
    done: list[bool] = []

    def swap_after_check(self: Path, **kw: bool) -> os.stat_result:
        st = real_stat(self, **kw)
        if self == swapped and not done:
            done.append(True)
            self.unlink()
            os.mkfifo(self)
        return st

    monkeypatch.setattr(Path, "stat", swap_after_check)
    # the old code stat()ed the entry (is_file), then read it by name: the FIFO swapped in
    # by then was read, forever; the new code opens once, checks and reads that descriptor
    rewrites, found = plan_directory(d, b"old passphrase 1", b"new passphrase 2")
    assert {p.name for p in found} == {"a-signing.key", "b-swapped.key"}
    assert len(rewrites) == 2


# ---- the checkpoint file, write side ------------------------------------------------------


def _signer() -> object:
    from safescan.code.keys import SigningKey

    return SigningKey.from_seed(b"\x07" * 32)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("planted", ["dev-null", "fifo", "dangling", "directory", "lock-link"])
def test_the_checkpoint_file_is_appended_to_only_as_a_regular_file(
    tmp_path: Path, planted: str
) -> None:
    from safescan.institution.checkpoint_file import CheckpointError, CheckpointFile

    path = tmp_path / "inst.checkpoints"
    target = tmp_path / "created-elsewhere"
    if planted == "dev-null":
        path.symlink_to("/dev/null")  # before: every record appended to nothing, a head returned
    elif planted == "fifo":
        os.mkfifo(path)
    elif planted == "dangling":
        path.symlink_to(target)  # before: created the target
    elif planted == "directory":
        path.mkdir()
    else:
        Path(f"{path}.lock").symlink_to(target)  # before: the lock created the target
    with pytest.raises(CheckpointError):
        CheckpointFile(path).append(_signer(), 1, [{"type": "issue", "serial": 1}])  # type: ignore[arg-type]
    assert not target.exists()
    if planted == "lock-link":
        assert not path.exists()


def test_a_checkpoint_file_placed_through_a_link_is_still_appended_to(tmp_path: Path) -> None:
    from safescan.institution.checkpoint_file import CheckpointFile

    real = tmp_path / "worm" / "inst.checkpoints"
    real.parent.mkdir()
    path = tmp_path / "inst.checkpoints"
    f = CheckpointFile(path)
    head = f.append(_signer(), 1, [{"type": "issue", "serial": 1}])  # type: ignore[arg-type]
    assert head.n == 1 and path.is_file() and not path.is_symlink()
    os.replace(path, real)
    path.symlink_to(real)  # an operator's placement: allowed, as for reading
    head = f.append(_signer(), 1, [{"type": "issue", "serial": 2}])  # type: ignore[arg-type]
    assert head.n == 2 and len(real.read_text().splitlines()) == 2
