"""A private ``pcscd`` with a vsmartcard ``vpcd`` reader, for tests, benchmarks and demos.

:class:`PcscDaemon` starts ``pcscd --foreground`` as a child process (supervised by
:mod:`safescan.procs`: own process group, log file, SIGTERM then SIGKILL), with its own reader
configuration directory (``-c``) holding one ``vpcd`` reader, and stops it at the end: no
system service is used or left running. Prepare the machine with ``scripts/pcsc-setup.sh``.

Why a namespace: pcsc-lite 1.9.9 (Debian 12) has its socket and pid file compiled in
(``/run/pcscd/pcscd.comm``; only the *client* library reads ``PCSCLITE_CSOCK_NAME``), so the
daemon runs in a private mount namespace where a temporary directory is bind-mounted over
``/run/pcscd``; clients reach it with ``PCSCLITE_CSOCK_NAME=<dir>/run/pcscd.comm``. And why a
network namespace: ``vpcd`` listens on ``0.0.0.0:35963`` (and 35964 for its second slot);
its "reversed" mode (a host name in ``DEVICENAME``, the driver connects to the card) aborts
pcscd in Debian's build as soon as a slot is not connected (``FD_SET(-1)``). So pcscd runs in
a private network namespace that has nothing but its own loopback, and the card process joins
it (:meth:`PcscDaemon.netns_command`) to connect to ``tcp://127.0.0.1:35963``: nothing listens
on any address of the host. Needs root (namespaces) and ``unshare``/``nsenter``/``ip``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from safescan.carrier.errors import CarrierTimeout, CarrierUnavailable
from safescan.procs import ManagedProcess, ProcessError, ProcessNotReady

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
VPCD_PORT = 0x8C7B  # 35963; slot 1 is port + 1
READER_NAME = "Safescan vpcd"

_START = (
    'ip link set lo up && mkdir -p /run/pcscd && mount --bind "$1" /run/pcscd && '
    'exec "$2" --foreground "$3" -c "$4"'
)


def missing_requirements() -> str | None:
    """What this machine lacks to run a private pcscd with vpcd (None if nothing)."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root (namespaces for a private pcscd)")
    if _pcscd_binary() is None:
        missing.append("pcscd (Debian package pcscd)")
    if not VPCD_DRIVER.exists():
        missing.append("the vpcd driver (Debian package vsmartcard-vpcd)")
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (util-linux / iproute2)")
    try:
        import smartcard.scard  # noqa: F401
    except ImportError:
        missing.append("pyscard (pip install 'safescan[pcsc]'; builds against libpcsclite-dev)")
    if not missing:
        return None
    return "missing: " + ", ".join(missing) + " (run scripts/pcsc-setup.sh as root)"


def _pcscd_binary() -> str | None:
    found = shutil.which("pcscd")
    if found is None and os.access("/usr/sbin/pcscd", os.X_OK):
        found = "/usr/sbin/pcscd"
    return found


class PcscDaemon:
    """``pcscd`` in the foreground on a private socket, with one vpcd reader (two slots)."""

    def __init__(self, workdir: str | os.PathLike[str], *, debug: bool = False) -> None:
        self.workdir = Path(workdir)
        self.debug = debug
        self.proc: ManagedProcess | None = None

    @property
    def socket_path(self) -> Path:
        """The daemon's socket: give it to clients as ``PCSCLITE_CSOCK_NAME``."""
        return self.workdir / "run" / "pcscd.comm"

    @property
    def log_path(self) -> Path:
        """pcscd's own log (stdout/stderr of the foreground process)."""
        return self.workdir / "pcscd.log"

    @property
    def reader(self) -> str:
        """The PC/SC name of the reader our card sits in (slot 0)."""
        return f"{READER_NAME} 00 00"

    @property
    def vpcd_url(self) -> str:
        """Where the card connects, from inside the namespace (``serve --vpcd URL``)."""
        return f"tcp://127.0.0.1:{VPCD_PORT}"

    @property
    def pid(self) -> int:
        """pcscd's process id."""
        if self.proc is None:
            raise CarrierUnavailable("pcscd is not running")
        return self.proc.pid

    def env(self) -> dict[str, str]:
        """Environment variables a PC/SC client needs to reach this daemon."""
        return {"PCSCLITE_CSOCK_NAME": str(self.socket_path)}

    def netns_command(self) -> list[str]:
        """Prefix that runs a command inside the daemon's network namespace."""
        return ["nsenter", f"--net=/proc/{self.pid}/ns/net", "--"]

    def start(self, timeout: float = 10.0) -> None:
        """Write the reader configuration, start pcscd and wait for its socket."""
        reason = missing_requirements()
        if reason is not None:
            raise CarrierUnavailable(f"cannot run pcscd here: {reason}")
        pcscd = _pcscd_binary()
        assert pcscd is not None
        conf = self.workdir / "reader.conf.d"
        run = self.workdir / "run"
        conf.mkdir(parents=True, exist_ok=True)
        run.mkdir(parents=True, exist_ok=True)
        (conf / "vpcd").write_text(
            f'FRIENDLYNAME "{READER_NAME}"\n'
            f"DEVICENAME   /dev/null:0x{VPCD_PORT:X}\n"
            f"LIBPATH      {VPCD_DRIVER}\n"
            f"CHANNELID    0x{VPCD_PORT:X}\n"
        )
        level = "--debug" if self.debug else "--error"
        # pcscd writes its own messages to stdout: into the log with stderr
        proc = ManagedProcess(
            "pcscd",
            [
                *("unshare", "--net", "--mount", "--propagation", "private"),
                *("sh", "-c", _START, "sh", str(run), pcscd, level, str(conf)),
            ],
            log=self.log_path,
        )
        try:
            proc.start().wait_until(self.socket_path.exists, timeout, what="create its socket")
        except ProcessNotReady:
            raise CarrierTimeout("pcscd did not create its socket in time") from None
        except ProcessError as exc:
            raise CarrierUnavailable(f"pcscd exited at start-up: {exc.log_tail}") from None
        self.proc = proc

    def wait_for_card(self, present: bool = True, timeout: float = 10.0) -> None:
        """Block until pcscd sees a card in :attr:`reader` (or none, ``present=False``)."""
        from smartcard import scard

        os.environ.update(self.env())
        hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hresult != scard.SCARD_S_SUCCESS:
            raise CarrierUnavailable(f"cannot reach pcscd: {scard.SCardGetErrorMessage(hresult)}")
        try:
            deadline = time.monotonic() + timeout
            state = scard.SCARD_STATE_UNAWARE
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CarrierTimeout(
                        f"pcscd did not see the card {'arrive' if present else 'leave'} in time"
                    )
                hresult, states = scard.SCardGetStatusChange(
                    context, int(min(left, 1.0) * 1000), [(self.reader, state)]
                )
                if hresult == scard.SCARD_S_SUCCESS:
                    _, state, _ = states[0]
                    if bool(state & scard.SCARD_STATE_PRESENT) == present:
                        return
                    state &= ~scard.SCARD_STATE_CHANGED
                elif hresult != scard.SCARD_E_TIMEOUT:
                    raise CarrierUnavailable(
                        f"pcscd reader state: {scard.SCardGetErrorMessage(hresult)}"
                    )
        finally:
            scard.SCardReleaseContext(context)

    def stop(self) -> None:
        """SIGTERM pcscd (it removes its socket), SIGKILL if it lingers; reap it."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.stop(grace=5.0)

    def __enter__(self) -> PcscDaemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
