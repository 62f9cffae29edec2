"""The web POS's staff file is changed under a lock: two changes at once never write over each
other (a sibling of the journal's last-writer-wins, tests/merchant/test_journal_forward.py).

Before, ``StaffStore.add`` and ``remove`` read the file, changed it and wrote it back with
nothing between two of them: ``pos staff remove mallory`` while ``pos staff add bob`` ran in
another shell could be undone (bob's add read the file before the removal and wrote it after:
mallory's account, and password, came back). The interleaving is forced here: a second change
is made at the moment the first one has read the file.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from safescan.merchant.staff import StaffError, StaffStore

PASSWORD = "correct horse battery"


@pytest.fixture
def store(tmp_path: Path) -> StaffStore:
    s = StaffStore(tmp_path / "pos-staff.json")
    for name in ("ann", "mallory"):
        s.add(name, PASSWORD)
    return s


def _held(lock: Path) -> bool:
    """Whether another change holds the staff file's lock now (without waiting for it)."""
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_removal_made_while_an_add_runs_is_not_undone(
    store: StaffStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = StaffStore(store.path)  # another shell's ``pos staff remove mallory``
    read = StaffStore.users
    seen: list[bool] = []
    removal: list[threading.Thread] = []

    def users_then_removal(self: StaffStore) -> dict[str, dict[str, Any]]:
        found = read(self)
        if self is store and not removal:
            # the add has read the file: the removal starts now, and must wait for the add
            seen.append(_held(store.path.with_name(store.path.name + ".lock")))
            t = threading.Thread(target=other.remove, args=("mallory",))
            removal.append(t)
            t.start()  # before: it could end before the add wrote; now it waits for the add
        return found

    monkeypatch.setattr(StaffStore, "users", users_then_removal)
    store.add("bob", PASSWORD)
    removal[0].join()
    monkeypatch.undo()
    assert seen == [True]  # a change reads and writes under the lock
    assert sorted(store.users()) == ["ann", "bob"]  # both changes: mallory stays removed
    assert not store.verify("mallory", PASSWORD) and store.verify("bob", PASSWORD)


def test_a_refused_change_writes_nothing_and_frees_the_lock(store: StaffStore) -> None:
    before = store.path.read_bytes()
    with pytest.raises(StaffError):
        store.remove("nobody")
    with pytest.raises(StaffError):
        store.add("Not A Name", PASSWORD)
    assert store.path.read_bytes() == before
    assert not _held(store.path.with_name(store.path.name + ".lock"))
    store.remove("mallory")
    assert sorted(store.users()) == ["ann"]
