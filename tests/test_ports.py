"""Port reservations (safescan.procs.free_port / reserve_port): test workers (pytest-xdist runs
4 processes) and demos pick ports at the same time and start their servers a moment later; no
two processes may ever be handed the same port in between. Attacked with processes that pick
many ports at once, a kernel that offers a port another process holds, and restarts."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from safescan import procs
from safescan.procs import free_port, release_port, reserve_port

# a process that picks N ports, prints them, and holds them until its stdin closes
PICKER = textwrap.dedent(
    """
    import sys
    from safescan.procs import free_port
    ports = [free_port() for _ in range(int(sys.argv[1]))]
    print(" ".join(map(str, ports)), flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lock directory of this test's own (child processes inherit it)."""
    d = tmp_path / "ports"
    monkeypatch.setenv(procs.PORT_LOCKS_ENV, str(d))
    return d


@pytest.fixture
def pickers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.stdin is not None:
            p.stdin.close()
        p.wait(30)


def pick(pickers: list[subprocess.Popen[str]], n: int) -> list[int]:
    """Start a process that reserves ``n`` ports and keeps them; the ports."""
    p = subprocess.Popen(
        [sys.executable, "-c", PICKER, str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    pickers.append(p)
    assert p.stdout is not None
    return [int(x) for x in p.stdout.readline().split()]


def test_processes_picking_at_once_never_share_a_port(
    locks: Path, pickers: list[subprocess.Popen[str]]
) -> None:
    # 4 processes x 150 ports, none bound: the kernel alone hands out some port twice almost
    # surely (600 draws from ~28,000); the reservations must not
    procs_ = [
        subprocess.Popen(
            [sys.executable, "-c", PICKER, "150"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    pickers.extend(procs_)
    seen: list[int] = []
    for p in procs_:
        assert p.stdout is not None
        seen += [int(x) for x in p.stdout.readline().split()]
    assert len(seen) == 600
    assert len(set(seen)) == 600
    mine = [free_port() for _ in range(50)]  # and this process's own picks too
    assert not set(mine) & set(seen) and len(set(mine)) == 50


def test_a_port_another_process_holds_is_never_handed_out(
    locks: Path, pickers: list[subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    held = pick(pickers, 3)
    for port in held:
        assert not reserve_port(port)
    # the kernel offers the held ports first (they are unbound: it may): each is skipped
    offers = [*held, *held]
    real = procs._unbound_port
    monkeypatch.setattr(procs, "_unbound_port", lambda: offers.pop(0) if offers else real())
    got = free_port()
    assert got not in held and not offers
    # once the holder exits, its ports can be reserved again
    holder = pickers.pop()
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(30)
    assert all(reserve_port(p) for p in held)
    for p in [*held, got]:
        release_port(p)


def test_this_process_never_gets_its_own_port_twice(
    locks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = free_port()
    assert not reserve_port(first)  # held (by us: a second lock of ours fails too)
    offers = [first, first]
    real = procs._unbound_port
    monkeypatch.setattr(procs, "_unbound_port", lambda: offers.pop(0) if offers else real())
    second = free_port()
    assert second != first and not offers
    # a server stopped and restarted on `first` keeps it: the reservation outlives the server
    assert not reserve_port(first)
    release_port(first)
    assert reserve_port(first)
    release_port(first)
    release_port(second)
    release_port(second)  # releasing twice is harmless


def test_no_port_left_is_a_typed_error(locks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = free_port()
    monkeypatch.setattr(procs, "_unbound_port", lambda: taken)
    with pytest.raises(procs.ProcessError, match="no free port"):
        free_port()
    release_port(taken)


def test_reservations_under_another_lock_directory_do_not_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that holds a port under one lock directory (a test worker's servers, under
    the machine's) may reserve it under another (a test's own): the reservations of one
    directory never make another's fail (this once failed the holder test in CI at random)."""
    monkeypatch.setenv(procs.PORT_LOCKS_ENV, str(tmp_path / "machine"))
    port = free_port()
    monkeypatch.setenv(procs.PORT_LOCKS_ENV, str(tmp_path / "own"))
    assert reserve_port(port)
    assert not reserve_port(port)  # but twice in one directory: never
    release_port(port)
    monkeypatch.setenv(procs.PORT_LOCKS_ENV, str(tmp_path / "machine"))
    assert not reserve_port(port)  # still held there
    release_port(port)
    assert reserve_port(port)
    release_port(port)


#: what lets the kernel choose a port in a test's server: it can choose one that another
#: process reserved with free_port() and has not bound yet, and that process's server then
#: fails to start (the POS and wallet-app servers were started with ``--port 0``)
KERNEL_CHOSEN = (
    re.compile(r"""["']--port["'],\s*["']0["']"""),  # a server's command line
    re.compile(r"""--port[ =]0\b"""),
    re.compile(r"""^\s*port\s*=\s*0\s*$|\\nport = 0\\n""", re.MULTILINE),  # a settings file
    re.compile(r"""\(\s*["'](?:127\.0\.0\.1|localhost|)["'],\s*0\s*\)"""),  # bind((host, 0))
)
#: the one place that may ask the kernel (and then reserves what it was given)
KERNEL_ALLOWED = {Path("src/safescan/procs.py")}


def test_no_test_server_lets_the_kernel_choose_its_port() -> None:
    """Every server a test starts listens on a port from :func:`free_port` (reserved for the
    test's process), never on port 0: the tests, and the test helpers in ``src``."""
    root = Path(__file__).resolve().parent.parent
    files = [*sorted((root / "tests").rglob("*.py")), root / "src/safescan/carrier/testing.py"]
    found = []
    for path in files:
        rel = path.relative_to(root)
        if rel in KERNEL_ALLOWED or path == Path(__file__).resolve():
            continue
        text = path.read_text()
        for pattern in KERNEL_CHOSEN:
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{rel}:{line}: {m.group(0).strip()}")
    assert found == [], "use tests.institution.pg.free_port(), not port 0:\n" + "\n".join(found)
