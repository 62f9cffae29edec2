"""In-process webhook dispatcher harness: an institution over SQLite, events, and a driver that
runs the real dispatcher until a condition holds (receivers are real servers on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from safescan.code import TrustStore
from safescan.code.keys import SchemeKeyring
from safescan.institution.db import Database, migrate
from safescan.institution.keystore import InstitutionKeys, KeyStore
from safescan.institution.models import Event, MerchantRow
from safescan.institution.service import Institution
from safescan.institution.webhook_dispatcher import DeliveryLimits, WebhookDispatcher
from safescan.institution.webhook_targets import TargetPolicy
from safescan.institution.webhook_transport import Attempt
from safescan.institution.webhooks import RetryPolicy, new_event

PASSPHRASE = b"webhook-test-passphrase"


_TEMPLATE: tuple[Path, InstitutionKeys] | None = None


def _template() -> tuple[Path, InstitutionKeys]:
    """One migrated database and key set per process, copied by :func:`make_institution`:
    making them is three scrypt derivations and the migrations, ~0.4 s of CPU, which ran once
    per test (docs/operations.md, "Test suite wall time")."""
    global _TEMPLATE
    if _TEMPLATE is None:
        where = Path(tempfile.mkdtemp(prefix="safescan-hooks-template-"))
        db = Database(f"sqlite:///{where / 'hooks.db'}")
        migrate(db.engine)
        db.dispose()
        keys = KeyStore(where / "keys").create(PASSPHRASE)
        atexit.register(shutil.rmtree, where, True)
        _TEMPLATE = (where, keys)
    return _TEMPLATE


def make_institution(tmp: Path) -> Institution:
    """A fresh institution over SQLite in ``tmp`` (no server); ``inst.test_admin_token``.
    Its own database file and key directory, copies of one made per process: the tests here
    share the keys (never rotated here), not any row."""
    where, keys = _template()
    for f in where.glob("hooks.db*"):
        shutil.copy2(f, tmp / f.name)
    shutil.copytree(where / "keys", tmp / "keys")
    ring = SchemeKeyring()
    for key in keys.scheme.keys.values():
        ring.add(key)
    inst = Institution(
        Database(f"sqlite:///{tmp / 'hooks.db'}"), dataclasses.replace(keys, scheme=ring)
    )
    inst.test_admin_token = inst.setup.bootstrap()  # type: ignore[attr-defined]
    return inst


def trust(inst: Institution) -> TrustStore:
    """The merchants' view of the institution's webhook key."""
    return TrustStore({inst.keys.root_kid: inst.keys.root.public_key})


def merchant(inst: Institution, name: str, url: str | None = None) -> str:
    """Onboard a merchant (its URL goes through the registration check)."""
    m = inst.merchants.create(
        name=name,
        city="Berlin",
        country="DE",
        mcc=5814,
        settlement_account="DE89370400440532013000",
        api_public_key=None,
        webhook_url=url,
    )
    return m.merchant.id


def store_url(inst: Institution, mid: str, url: str | None) -> None:
    """Write a webhook URL straight into the database (as if registered under older rules)."""
    inst.db.write(
        lambda c: c.execute(
            update(MerchantRow).where(MerchantRow.id == mid).values(webhook_url=url)
        )
    )


def emit(inst: Institution, mid: str, n: int = 1) -> list[str]:
    """``n`` pending webhook events for ``mid``; their ids."""
    now = int(time.time())

    def tx(conn: Any) -> list[str]:
        return [
            new_event(
                conn, merchant_id=mid, type_="test.ping", data={"n": i}, now=now, webhook=True
            )
            for i in range(n)
        ]

    return inst.db.write(tx)


def events(inst: Institution, ids: Sequence[str]) -> dict[str, Any]:
    """Event rows by id."""
    rows = inst.db.read(lambda c: c.execute(select(Event).where(Event.id.in_(list(ids)))).all())
    return {r.id: r for r in rows}


@dataclass
class Dispatch:
    """A dispatcher over ``inst`` with a recorder of every attempt."""

    inst: Institution
    targets: TargetPolicy
    limits: DeliveryLimits = field(default_factory=lambda: DeliveryLimits(deadline=5.0))
    ssl_context: ssl.SSLContext | None = None
    base_delay: float = 0.05
    attempts: list[tuple[str, Attempt]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dispatcher = WebhookDispatcher(
            self.inst.db,
            self.inst.keys.root,
            self.inst.keys.root_kid,
            policy=RetryPolicy(base_delay=self.base_delay, max_delay=0.2),
            targets=self.targets,
            limits=self.limits,
            poll_interval=0.05,
            ssl_context=self.ssl_context,
            on_attempt=lambda eid, att: self.attempts.append((eid, att)),
        )

    def of(self, event_id: str) -> list[Attempt]:
        """The attempts made for one event."""
        return [a for e, a in self.attempts if e == event_id]

    def run_until(self, cond: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Run the dispatcher until ``cond()`` holds (True) or ``timeout`` passes (False)."""

        async def main() -> bool:
            stop = asyncio.Event()
            task = asyncio.create_task(self.dispatcher.run(stop))
            deadline = time.monotonic() + timeout
            ok = False
            while time.monotonic() < deadline and not task.done():
                if cond():
                    ok = True
                    break
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.wait_for(task, 15)
            return ok

        return asyncio.run(main())


class Resolver:
    """A DNS stand-in: name -> answers, switchable at any time; counts lookups."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = dict(table or {})
        self.calls: list[str] = []
        self.lock = threading.Lock()
        self.script: dict[str, list[list[str]]] = {}  # name -> answers for successive lookups

    def __call__(self, host: str, port: int) -> list[str]:
        with self.lock:
            self.calls.append(host)
            script = self.script.get(host)
            if script:
                answer = script.pop(0)
                script.append(answer)  # cycle
                return answer
            if host not in self.table:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return list(self.table[host])
