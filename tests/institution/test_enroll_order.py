"""``wallet enroll`` asks the institution before it touches the key carrier (redteam: with
``--institution-key`` given, the first thing enrollment did was GENERATE KEYS on the carrier;
an unreachable institution, a TLS failure or a pinned key the institution does not publish
failed only after, with the carrier's key generation spent on an enrollment that could not
finish). The carrier here is a listening socket that is never answered: any connection to it
is the carrier being touched. The institution is served by uvicorn on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from safescan.client.wallet import WalletClient
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError
from safescan.code.keys import SigningKey
from safescan.wallet.enroll import enroll
from tests.institution.dispatch import make_institution
from tests.institution.inthread import Served, served_in_thread
from tests.institution.pg import free_port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    inst = make_institution(Path(tmp_path_factory.mktemp("enroll-order")))
    with served_in_thread(Served(inst), start_within=60) as s:
        yield s


@pytest.fixture
def carrier() -> Iterator[socket.socket]:
    """A carrier address whose connections are counted (never accepted, never answered)."""
    s = socket.socket()
    s.bind(("127.0.0.1", free_port()))
    s.listen(8)
    s.setblocking(False)
    yield s
    s.close()


def _touched(carrier: socket.socket) -> bool:
    try:
        conn, _ = carrier.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def _institution_key(served: Served) -> TrustStore:
    with WalletClient(f"http://127.0.0.1:{served.port}") as api:
        return api.keys.root_keys()


def test_nothing_touches_the_carrier_before_the_institution_answered(
    served: Served, carrier: socket.socket, tmp_path: Path
) -> None:
    port = carrier.getsockname()[1]
    closed = socket.socket()  # bound, not listening: connections to it are refused
    closed.bind(("127.0.0.1", free_port()))
    forged = TrustStore({1: SigningKey.generate().public_key})
    try:
        cases = {
            "unreachable": (f"http://127.0.0.1:{closed.getsockname()[1]}", forged),
            "TLS to a plain server": (f"https://127.0.0.1:{served.port}", forged),
            "pinned key not published": (f"http://127.0.0.1:{served.port}", forged),
        }
        for name, (url, trust) in cases.items():
            with pytest.raises(SafescanError) as refused:
                enroll(
                    directory=tmp_path / name.replace(" ", "-"),
                    institution_url=url,
                    carrier_url=f"tcp://127.0.0.1:{port}",
                    token="enr_" + "A" * 20,
                    pin="482913",
                    trust=trust,
                )
            assert "the key carrier:" not in str(refused.value), (name, refused.value)
            assert not _touched(carrier), f"{name}: the carrier was touched first"
            assert not (tmp_path / name.replace(" ", "-") / "wallet.json").exists()
    finally:
        closed.close()
    # the institution's own published key passes this first check and goes on to the carrier
    with pytest.raises(SafescanError):
        enroll(
            directory=tmp_path / "pinned",
            institution_url=f"http://127.0.0.1:{served.port}",
            carrier_url=f"tcp://127.0.0.1:{port}",
            token="enr_" + "A" * 20,
            pin="482913",
            trust=_institution_key(served),
        )
    assert _touched(carrier)
