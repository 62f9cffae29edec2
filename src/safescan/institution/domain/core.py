"""The core every domain module is built around: the database, the keys and the clock.

Like python-fido2's ``ctap2/base.py`` (one ``Ctap2`` object the sub-protocol classes
``ClientPin``, ``CredentialManagement``, ``Config`` each wrap), the institution has one
:class:`Core`; each domain module (:mod:`.merchants`, :mod:`.orders`, :mod:`.payments` ...) is a
small class holding it. The core decides nothing: it only knows where things are.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from safescan.code.envelope import Issuer
from safescan.institution import nonces
from safescan.institution.db import Database
from safescan.institution.epochs import EpochKeyring
from safescan.institution.keystore import InstitutionKeys
from safescan.institution.reservations import Journal
from safescan.institution.webhook_targets import TargetPolicy


class Core:
    """One database, one key set, one clock: what every domain module shares."""

    def __init__(
        self,
        db: Database,
        keys: InstitutionKeys,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        webhooks_enabled: bool = True,
        webhook_targets: TargetPolicy | None = None,
        merchant_rate: tuple[float, float] = (100.0, 200.0),
    ) -> None:
        self.db = db
        self.keys = keys
        self.clock = clock  # the wall clock: timestamps, expiry
        self.elapsed = nonces.ElapsedClock(monotonic)  # how long nonces are kept
        self.issuer = Issuer.institution(keys.root, keys.root_kid)
        self.trust = keys.trust_store()
        # static-code keys (key directory) + scheme-key epochs for dynamic codes (.epochs)
        self.scheme_keys = EpochKeyring(db, keys.scheme, keys.secret, clock=clock)
        self.webhooks_enabled = webhooks_enabled
        # where webhooks may go (the operator's rules)
        self.webhook_targets = webhook_targets or TargetPolicy()
        # serials and revocations journaled in the checkpoint file (when serving)
        self.journal: Journal | None = None
        # merchant requests per second and burst, one bucket per merchant in the database
        # (shared by every API process); rate 0 = no limit
        self.merchant_rate: tuple[float, float] = merchant_rate

    def now(self) -> int:
        """Server time, unix seconds."""
        return int(self.clock())


__all__ = ["Core"]
