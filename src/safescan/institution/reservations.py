"""Numbers that must never repeat, even after a restore: certificate serials (a carrier's
serial is its identity, and its certificate stays valid for years) and the revocation list
sequence (holders refuse a list that is not newer than theirs).

Both come from counters in the database, but before one is used it is journaled in the
checkpoint file (``issue`` and ``revoke`` records, fsync'd, inside the issuing transaction), and
a value the file has already seen is never used again: the counter skips past the file's
highest. A database restored from an older copy therefore cannot hand out the serial of a
carrier enrolled after the copy was made, nor a revocation list sequence a wallet already holds,
whether or not it has been reconciled yet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import Connection, select, update

from safescan.code.certs import Role
from safescan.institution.checkpoints import (
    CheckpointFile,
    Head,
    Tail,
    database_id,
    high_water,
    read_head,
    save_head,
)
from safescan.institution.keystore import InstitutionKeys
from safescan.institution.models import Counter

SERIAL_COUNTER = "certificate_serial"
CRL_COUNTER = "crl_sequence"


def _bump(conn: Connection, name: str) -> int:
    return int(
        conn.execute(
            update(Counter)
            .where(Counter.name == name)
            .values(value=Counter.value + 1)
            .returning(Counter.value)
        ).scalar_one()
    )


def _skip_to(conn: Connection, name: str, value: int) -> int:
    conn.execute(update(Counter).where(Counter.name == name).values(value=value))
    return value


class Journal:
    """This process's writer of ``issue`` and ``revoke`` records (the checkpoint file)."""

    def __init__(self, file: CheckpointFile, keys: InstitutionKeys) -> None:
        self.file, self.keys = file, keys
        self.tail = Tail(file)
        self._db: str | None = None
        self._lock = threading.Lock()

    def _marks(self, conn: Connection) -> tuple[str, dict[str, int]]:
        if self._db is None:
            db = database_id(conn)
            if db is None:
                raise RuntimeError("serials are journaled only for an initialised database")
            self._db = db
        return self._db, high_water(self.tail.refresh(self.keys.trust_store(), self._db))

    def _append(self, conn: Connection, body: dict[str, object]) -> None:
        """Chain the record onto the file (never onto a file that is missing or shorter than
        the database knows it was) and move the database's head of it, in ``conn``'s
        transaction."""
        name = self.file.path.name
        floor: Head = read_head(conn, name)
        head = self.file.append(self.keys.root, self.keys.root_kid, [body], floor=floor)
        save_head(conn, name, head)

    def serial(self, conn: Connection, role: Role, subject_for: Callable[[int], str]) -> int:
        """The next certificate serial: above the counter and above every serial the file has
        seen; journaled before it is used."""
        with self._lock:
            serial = _bump(conn, SERIAL_COUNTER)
            db, marks = self._marks(conn)
            if serial <= marks["serial"]:
                serial = _skip_to(conn, SERIAL_COUNTER, marks["serial"] + 1)
            self._append(
                conn,
                {
                    "type": "issue",
                    "db": db,
                    "at": int(time.time()),
                    "serial": serial,
                    "role": role.name.lower(),
                    "subject": subject_for(serial),
                },
            )
            return serial

    def revocation(self, conn: Connection, role: Role, subject: str, serials: list[int]) -> int:
        """Step the revocation list sequence (past every one the file has seen) and journal
        the revocation; returns the new sequence."""
        with self._lock:
            crl = int(
                conn.execute(select(Counter.value).where(Counter.name == CRL_COUNTER)).scalar_one()
            )
            db, marks = self._marks(conn)
            if crl <= marks["crl"]:
                crl = _skip_to(conn, CRL_COUNTER, marks["crl"] + 1)
            self._append(
                conn,
                {
                    "type": "revoke",
                    "db": db,
                    "at": int(time.time()),
                    "role": role.name.lower(),
                    "subject": subject,
                    "serials": sorted(serials),
                    "crl": crl,
                },
            )
            return crl


def allocate_serial(
    conn: Connection, journal: Journal | None, role: Role, subject_for: Callable[[int], str]
) -> int:
    """A fresh certificate serial (journaled when there is a checkpoint file)."""
    if journal is None:
        return _bump(conn, SERIAL_COUNTER)
    return journal.serial(conn, role, subject_for)


__all__ = ["CRL_COUNTER", "SERIAL_COUNTER", "Journal", "allocate_serial"]
