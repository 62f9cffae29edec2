"""Refuse to serve a rolled-back database; write checkpoints while serving.

:class:`RollbackGuard` compares the database with the checkpoint file when the process starts
and then every ``interval`` seconds, each time also appending a new ``checkpoint`` record when
the audit log has grown (never when the comparison fails: a checkpoint must not paper over a
rollback). :class:`GuardedApp` wraps the ASGI app: while the guard refuses, ``/health`` answers
503 ``{"status": "rolled_back", ...}`` and every other request the typed error
``database_rolled_back`` (503), until ``safescan institution reconcile`` has been run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from safescan.api.errors import DatabaseRolledBack
from safescan.code.errors import SafescanError
from safescan.institution.checkpoints import (
    MAX_BYTES,
    CheckpointError,
    CheckpointFile,
    CheckpointUnavailable,
    Head,
    Tail,
    db_lookup,
    detect,
    essential_records,
    read_state,
    save_head,
)
from safescan.institution.db import Database
from safescan.institution.keystore import InstitutionKeys

log = logging.getLogger("safescan.institution.rollback")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


class RollbackGuard:
    """This process's verdict on its database, kept current by a checkpointer thread."""

    def __init__(
        self, db: Database, keys: InstitutionKeys, path: Path, *, interval: float = 1.0
    ) -> None:
        self.db, self.keys, self.interval = db, keys, interval
        self.file = CheckpointFile(path)
        self.tail = Tail(self.file)
        self.refusal: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._warned_missing = False

    def tick(self) -> None:
        """Compare the database with the file; append a checkpoint if the log grew."""
        with self._lock:
            # the database first: its head of the file must not be newer than the file read
            state = self.db.read(lambda c: read_state(c, self.file.path.name))
            if state is None:
                return
            try:
                if not self._warned_missing and state.head.n == 0 and not self.file.exists():
                    self._warned_missing = True
                    log.warning(
                        "no checkpoint file at %s: starting one now; a restore made before now"
                        " cannot be recognised (if the file was moved, stop and point"
                        " --checkpoints at it)",
                        self.file.path,
                    )
                records = self.tail.refresh(self.keys.trust_store(), state.db, state.head)
            except CheckpointUnavailable:
                raise  # out of descriptors or memory: no verdict either way (check() logs it)
            except CheckpointError as exc:
                self._refuse(exc.message)
                return
            if self.tail.problems or self.tail.lost:
                self._refuse(
                    "the checkpoint file holds records that do not verify, or is not the chain"
                    " the institution wrote: "
                    + "; ".join([*self.tail.problems, *self.tail.lost][:3])
                )
                return
            verdict = self.db.read(lambda c: detect(records, db_lookup(c)))
            if verdict.rolled_back:
                self._refuse("; ".join(verdict.rolled_back))
                return
            if self.refusal is not None:
                log.warning("the database matches its checkpoints again: serving")
            self.refusal = None
            newest = verdict.newest
            if newest is not None and newest.get("seqs") == [s for s, _ in state.heads]:
                return
            head = self.file.append(
                self.keys.root,
                self.keys.root_kid,
                [state.body(int(time.time()))],
                floor=state.head,
            )
            self._save(head)
            if self.file.size() > MAX_BYTES:
                self._compact(state.db)

    def _save(self, head: Head) -> None:
        """The database learns how far the file reaches (after the records are fsync'd)."""
        self.db.write(lambda c: save_head(c, self.file.path.name, head))

    def _compact(self, db: str) -> None:
        trust = self.keys.trust_store()
        head = self.file.compact(
            self.keys.root, self.keys.root_kid, lambda lines: essential_records(lines, trust, db)
        )
        self._save(head)

    def _refuse(self, reason: str) -> None:
        if self.refusal != reason:
            log.error("refusing to serve: %s", reason)
        self.refusal = reason

    def check(self) -> None:
        """One comparison now (storage errors leave the verdict as it was)."""
        try:
            self.tick()
        except SafescanError as exc:
            log.warning("checkpoint paused: %s", exc.message)

    def error(self) -> DatabaseRolledBack | None:
        """The typed error to answer with while refusing."""
        if self.refusal is None:
            return None
        return DatabaseRolledBack(
            f"the database was restored from an older copy ({self.refusal}); an operator must"
            " reconcile it: safescan institution reconcile"
        )

    def start(self) -> None:
        """Run :meth:`check` every ``interval`` seconds in a thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="safescan-checkpoints", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def stop(self) -> None:
        """Stop the thread after a last checkpoint."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.check()


class GuardedApp:
    """ASGI wrapper: the guard's thread lives with the app; requests are refused while the
    guard refuses."""

    def __init__(self, app: ASGIApp, guard: RollbackGuard) -> None:
        self.app, self.guard = app, guard

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":

            async def lifespan_receive() -> Message:
                message: Message = await receive()
                if message["type"] == "lifespan.startup":
                    self.guard.start()
                elif message["type"] == "lifespan.shutdown":
                    self.guard.stop()
                return message

            await self.app(scope, lifespan_receive, send)
            return
        error = self.guard.error() if scope["type"] == "http" else None
        if error is None or scope.get("path") == "/healthz":  # alive even while refusing
            await self.app(scope, receive, send)
            return
        if scope.get("path") == "/health":
            body: dict[str, Any] = {"status": "rolled_back", "error": error.to_dict()}
        else:
            body = {"error": error.to_dict()}
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


__all__ = ["GuardedApp", "RollbackGuard"]
