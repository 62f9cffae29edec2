"""Replay protection of signed merchant requests that does not trust the wall clock.

A merchant request is accepted only once (its nonce is recorded) and only while its signed
timestamp is within :data:`~safescan.api.merchant_auth.TOLERANCE` of the server's wall clock, on
either side. The wall clock can jump (a mistaken ``date``, an NTP step, a VM restored from a
snapshot), so neither how long a nonce is kept nor whether a forgotten one can come back depends
on it:

* **Kept for the whole window, on a clock that cannot jump.** Each nonce records the
  institution's *elapsed clock* (:class:`ElapsedClock`): milliseconds of real time, measured
  with ``time.monotonic`` in each API process and shared through the database (table
  ``elapsed_clock``; each process publishes ``max(stored, its own reading)``, so the clock never
  goes back and runs at the rate of real time whatever the number of processes; it stands still
  while no process runs, which only keeps nonces longer). A nonce is forgotten only after
  :data:`RETENTION` seconds of that clock, twice the tolerance plus a margin: a forward jump of
  the wall clock forgets nothing early.
* **A forgotten nonce never comes back.** When nonces are forgotten, the newest signed timestamp
  among them is kept per merchant (its *floor*); a request whose timestamp is not newer than its
  merchant's floor is refused. So a request whose nonce is gone can never be accepted again,
  even if the wall clock is later set back to its time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import Connection

from safescan.api.errors import ReplayedRequest
from safescan.api.merchant_auth import TOLERANCE
from safescan.institution import sql

ELAPSED_COUNTER = "elapsed_ms"
RETENTION = 2 * TOLERANCE + 60  # seconds of elapsed time a nonce is kept

_INSERT_NONCE = (
    "INSERT INTO request_nonces (merchant_id, nonce, seen_at, seen_ms, ts)"
    " VALUES (:mid, :nonce, :now, :seen_ms, :ts) ON CONFLICT DO NOTHING"
)
_FLOOR = "SELECT ts FROM nonce_floors WHERE merchant_id = :mid"
_FORGET = "DELETE FROM request_nonces WHERE seen_ms < :cutoff RETURNING merchant_id, ts"
_RAISE_FLOOR = (
    "INSERT INTO nonce_floors (merchant_id, ts) VALUES (:mid, :ts) ON CONFLICT (merchant_id)"
    " DO UPDATE SET ts = CASE WHEN excluded.ts > nonce_floors.ts THEN excluded.ts"
    " ELSE nonce_floors.ts END"
)
_CREATE = "INSERT INTO elapsed_clock (name, value) VALUES (:name, 0) ON CONFLICT DO NOTHING"
_PUBLISH = "UPDATE elapsed_clock SET value = :v WHERE name = :name AND value < :v"
_READ = "SELECT value FROM elapsed_clock WHERE name = :name"


class ElapsedClock:
    """The institution's elapsed clock (see the module docstring), for one API process."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self._base: tuple[int, float] | None = None  # (database value, monotonic reading)
        self._lock = threading.Lock()

    def _reading(self) -> int | None:
        if self._base is None:
            return None
        value, mono = self._base
        return value + max(0, int((self.monotonic() - mono) * 1000))

    def now_ms(self, conn: Connection) -> int:
        """This process's reading (anchored to the database's value the first time)."""
        with self._lock:
            reading = self._reading()
        return reading if reading is not None else self.sync(conn)

    def sync(self, conn: Connection) -> int:
        """Publish this process's reading (the stored value only grows) and adopt a later
        one another process published; returns the clock's value."""
        with self._lock:
            reading = self._reading()
        if reading is not None:
            sql.run(conn, _PUBLISH, {"v": reading, "name": ELAPSED_COUNTER})
        row = sql.run(conn, _READ, {"name": ELAPSED_COUNTER}).fetchone()
        if row is None:  # created by migration 0004; made here if it was deleted
            sql.run(conn, _CREATE, {"name": ELAPSED_COUNTER})
        stored = int(row[0]) if row is not None else 0
        with self._lock:
            if reading is None or stored > reading:
                self._base = (stored, self.monotonic())
                return stored
        return reading


def record(
    conn: Connection, clock: ElapsedClock, merchant_id: str, nonce: str, ts: int, now: int
) -> bool:
    """Record a request's nonce (inside the caller's transaction); False if it was already
    recorded (a replay). Raises :class:`ReplayedRequest` for a timestamp not newer than the
    merchant's floor (its nonce may have been forgotten)."""
    params = {
        "mid": merchant_id,
        "nonce": nonce,
        "now": now,
        "seen_ms": clock.now_ms(conn),
        "ts": ts,
    }
    if sql.run(conn, _INSERT_NONCE, params).rowcount != 1:
        return False
    # after the insert: a concurrent purge that forgot this nonce has committed its floor
    row = sql.run(conn, _FLOOR, {"mid": merchant_id}).fetchone()
    if row is not None and ts <= int(row[0]):
        raise ReplayedRequest(
            "the request signature (created) is older than the replay window this institution"
            " remembers (replay, or a clock far behind)",
            param="created",
        )
    return True


def purge(conn: Connection, clock: ElapsedClock) -> int:
    """Forget nonces older than :data:`RETENTION` seconds of elapsed time, raising each
    merchant's floor to the newest timestamp forgotten; returns how many were forgotten."""
    cutoff = clock.sync(conn) - RETENTION * 1000
    floors: dict[str, int] = {}
    rows = sql.run(conn, _FORGET, {"cutoff": cutoff}).fetchall()
    for mid, ts in rows:
        floors[mid] = max(floors.get(mid, 0), int(ts))
    for mid, ts in sorted(floors.items()):
        sql.run(conn, _RAISE_FLOOR, {"mid": mid, "ts": ts})
    return len(rows)


__all__ = ["ELAPSED_COUNTER", "RETENTION", "ElapsedClock", "purge", "record"]
