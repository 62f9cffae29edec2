"""Background loops of an API process that are not webhooks: the maintenance sweep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from safescan.code.errors import SafescanError
from safescan.institution.domain.health import Heartbeat

if TYPE_CHECKING:
    from safescan.institution.service import Institution

log = logging.getLogger("safescan.institution.background")


async def maintenance_loop(
    inst: Institution, stop: asyncio.Event, interval: float, beat: Heartbeat
) -> None:
    """Expire unpaid orders, settle checkout sessions after their orders and forget old
    nonces, periodically. No error stops it: it logs,
    and the next round tries again (readiness shows a loop that stopped making rounds)."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(inst.orders.expire)
            await asyncio.to_thread(inst.checkout.sweep)
            await asyncio.to_thread(inst.access.purge_nonces)
        except SafescanError as exc:
            log.warning("maintenance paused: %s", exc.message)
        except Exception as exc:
            log.error("maintenance round failed: %s", type(exc).__name__, exc_info=exc)
        beat.beat()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
