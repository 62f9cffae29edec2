"""SQLite WAL checkpoints off the writer's critical path.

By default SQLite checkpoints inside a commit: the commit that takes the write-ahead log past
1,000 pages copies the log back into the database file and syncs it, so one group of payments
in every few thousand waited for that copy (tens of milliseconds: the worst one-second
window's p99 under load). The institution's writer connections turn that off
(``PRAGMA wal_autocheckpoint=0``, :data:`NO_AUTOCHECKPOINT`) and this thread checkpoints
instead, on its own connection, while the writer goes on: ``PRAGMA wal_checkpoint(PASSIVE)``
every :data:`INTERVAL_S` seconds when something was committed since the last one. A passive
checkpoint never blocks the writer or readers; the log restarts from its beginning at the
first commit after a checkpoint that copied all of it.

If the writer commits faster than the checkpoints catch up for long enough that the log grows
past :data:`MAX_LOG_FRAMES`, :attr:`WalCheckpointer.due` asks the writer to checkpoint itself
after its next commit (SQLite's own behaviour, just rarer): the log stays bounded either way.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger("safescan.institution.wal")

NO_AUTOCHECKPOINT = "PRAGMA wal_autocheckpoint=0"
CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"
INTERVAL_S = 0.2
MAX_LOG_FRAMES = 16_000  # pages (4 KiB): about 64 MB of log


class WalCheckpointer:
    """A thread that checkpoints one SQLite database's WAL (see the module docstring)."""

    def __init__(self, path: str, interval: float = INTERVAL_S) -> None:
        self.path, self.interval = path, interval
        self.commits = 0  # bumped by the writer after each commit
        self.checkpoints = 0
        self.failures = 0
        self.log_frames = 0  # the log's size at the last checkpoint, in pages
        self.due = False  # the writer should checkpoint after its next commit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="safescan-wal", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        seen = 0
        try:
            while not self._stop.wait(self.interval):
                if self.commits == seen:
                    continue
                seen = self.commits
                try:
                    if conn is None:
                        conn = sqlite3.connect(self.path, isolation_level=None, timeout=1)
                    self.checkpoint(conn)
                except sqlite3.Error as exc:  # e.g. another process checkpoints: next time
                    self.failures += 1
                    if self.failures % 100 == 1:
                        log.warning("a WAL checkpoint failed (%d so far): %s", self.failures, exc)
        finally:
            if conn is not None:
                conn.close()

    @property
    def alive(self) -> bool:
        """Whether the checkpoint thread runs."""
        return self._thread.is_alive()

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        """One passive checkpoint on ``conn`` (a connection outside any transaction)."""
        row = conn.execute(CHECKPOINT).fetchone()
        self.checkpoints += 1
        self.log_frames = int(row[1]) if row else 0
        self.due = self.log_frames > MAX_LOG_FRAMES

    def close(self) -> None:
        """Stop the thread (a last checkpoint is SQLite's when its last connection closes)."""
        self._stop.set()
        self._thread.join(5)


__all__ = ["NO_AUTOCHECKPOINT", "WalCheckpointer"]
