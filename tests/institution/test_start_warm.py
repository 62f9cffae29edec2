"""What a server's first payments would do on the event loop is done at its start, before it
takes connections (issue 20, ninth sitting in docs/performance.md): PostgreSQL's payment
connections opened, SQLite's writer thread started, the live scheme-key epochs read."""

from __future__ import annotations

from pathlib import Path

import pytest

from safescan.institution import db as dblayer
from safescan.institution.db import Database
from safescan.institution.keystore import KeyStore
from safescan.institution.service import Institution
from tests.institution.conftest import BACKENDS, Initialise
from tests.institution.harness import PASSPHRASE
from tests.institution.inthread import Served, served_in_thread


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_start_does_the_first_payments_cold_work(
    backend: str, request: pytest.FixtureRequest, initialised: Initialise, tmp_path: Path
) -> None:
    url, _ = initialised(backend, request, tmp_path)
    inst = Institution(Database(url), KeyStore(tmp_path / "keys").load(PASSPHRASE.encode()))
    assert inst.db.writer_status().get("started") in (False, None)  # nothing yet
    assert inst.scheme_keys._refreshed == float("-inf")
    with served_in_thread(Served(inst), start_within=60):
        # no request has been made: the start did it
        if backend == "sqlite":
            assert inst.db.writer_status()["started"] is True
        else:
            pools = list(inst.db._async_pools.values())
            assert [len(p._idle) for p in pools] == [dblayer.pay_threads()]
        assert inst.scheme_keys._refreshed > float("-inf")
