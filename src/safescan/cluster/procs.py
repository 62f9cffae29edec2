"""Background processes recorded in pid files, identified by pid *and* start time (so a reused
pid is never signalled), plus the small probes the supervisor waits on."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import socket
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from safescan.cluster.errors import ClusterError
from safescan.code import strictjson
from safescan.code.atomicfile import write_atomic
from safescan.code.smallfile import read_bounded

T = TypeVar("T")
#: a pid file: the pid and its start time in clock ticks (``/proc/PID/stat`` field 22)
PID_LINE = re.compile(rb"([1-9][0-9]{0,9}) ([0-9]{1,20})\n")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields from 3 (state) on


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone (or a zombie)."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def parent_of(pid: int) -> int | None:
    """Parent pid, or None."""
    fields = _stat(pid)
    return None if fields is None else int(fields[1])


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (scanned from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_of(int(entry.name)) == pid:
            out.append(int(entry.name))
    return out


def cmdline(pid: int) -> str:
    """The process's command line, NUL bytes as spaces ('' if gone)."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


class ProcessTable:
    """Processes started detached (own session), one pid file each in ``run_dir``."""

    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.run_dir, self.log_dir = run_dir, log_dir
        self._popen: dict[str, subprocess.Popen[bytes]] = {}

    def pid(self, name: str) -> int | None:
        """The recorded pid of ``name`` if that process is still the one we started (``None``
        without a pid file). A pid file that is not exactly ``<pid> <start time>\n`` is the
        typed :class:`ClusterError`, never "not running": the supervisor writes it whole or not
        at all (:func:`write_atomic`), so such a file was damaged by something else, and taking
        it for "not running" would start a second copy beside a live one, or leave a live one
        running at ``down``."""
        path = self.run_dir / f"{name}.pid"
        try:
            data = read_bounded(path, 64, "a pid file", own=True)  # no link, no /dev/zero
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ClusterError(f"cannot read {path}: {exc.strerror or exc}") from None
        found = PID_LINE.fullmatch(data)
        if found is None:
            raise ClusterError(
                f"{path} is damaged (not '<pid> <start time>'): see whether {name} still runs"
                " (ps), stop it if so, then remove the file and run the command again"
            )
        pid, start_s = int(found[1]), found[2]
        proc = self._popen.get(name)
        if proc is not None:
            proc.poll()  # reap our own child if it died
        return pid if start_time(pid) == int(start_s) else None

    def alive(self, name: str) -> bool:
        """Whether ``name`` runs."""
        return self.pid(name) is not None

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        user: str | None = None,
    ) -> int:
        """Start ``argv`` detached, output appended to ``logs/NAME.log``; returns its pid."""
        log = self._open_log(name)
        try:
            kwargs: dict[str, Any] = {}
            if user is not None:
                pw = pwd.getpwnam(user)
                kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
                **kwargs,
            )
        except OSError as exc:
            raise ClusterError(f"cannot start {name} ({argv[0]}): {exc}") from None
        finally:
            log.close()
        started = None
        for _ in range(100):
            started = start_time(proc.pid)
            if started is not None:
                break
            time.sleep(0.01)
        if started is None:
            raise ClusterError(f"{name} exited at once; see {self.log_dir / (name + '.log')}")
        write_atomic(self.run_dir / f"{name}.pid", f"{proc.pid} {started}\n".encode())
        self._popen[name] = proc
        return proc.pid

    def send(self, name: str, sig: signal.Signals) -> bool:
        """Send ``sig`` to ``name`` if it runs; returns whether it did."""
        pid = self.pid(name)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return True

    def stop(
        self, name: str, *, timeout: float = 30.0, sig: signal.Signals = signal.SIGTERM
    ) -> None:
        """``sig`` (default SIGTERM), then SIGKILL after ``timeout``; waits until it is gone."""
        if not self.send(name, sig):
            self.forget(name)
            return
        if not wait_until(lambda: not self.alive(name), timeout):
            self.send(name, signal.SIGKILL)
            if not wait_until(lambda: not self.alive(name), 10):
                raise ClusterError(f"{name} does not stop even on SIGKILL")
        self.forget(name)

    def _open_log(self, name: str) -> BinaryIO:
        """``logs/NAME.log`` opened to append, never through a link: the log directory belongs
        to the service user, and the supervisor (often root) opened it with ``open(.., "ab")``,
        so a symbolic link planted there made it append the child's output to any file
        (review). A symbolic link (``O_NOFOLLOW``), a second name, a FIFO or anything but a
        regular file is the typed :class:`ClusterError`, and nothing is started."""
        path = self.log_dir / f"{name}.log"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(path, flags | os.O_CLOEXEC, 0o666)  # as open(.., "ab"): umask applies
        except OSError as exc:
            raise ClusterError(f"cannot open {path} (a link?): {exc.strerror or exc}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            raise ClusterError(f"{path} is not the cluster's own log file (a link or a device)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "ab")

    def forget(self, name: str) -> None:
        """Drop the pid file of a stopped process."""
        (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        self._popen.pop(name, None)

    def log_tail(self, name: str, chars: int = 1500) -> str:
        """The end of ``name``'s log."""
        try:  # only the end is read (review: the whole log was, and it grows without bound)
            fd = os.open(self.log_dir / f"{name}.log", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return ""
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return ""
            want = 4 * chars  # UTF-8: at most 4 bytes a character
            return os.pread(fd, want, max(0, st.st_size - want)).decode(errors="replace")[-chars:]
        except OSError:
            return ""
        finally:
            os.close(fd)


def wait_until(check: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``check`` until it returns something true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is the answer, never followed (urllib follows any by default, to any host and
    scheme, carrying the request's headers: the statistics credentials)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http_get(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 3.0,
    context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """GET ``url`` on a service of the cluster: (status, body); (0, b"") when nothing answers
    within ``timeout`` or an ``https://`` server fails verification with ``context`` (the
    pinned CA). Redirects are answers, not followed; no proxy from the environment is used
    (``http_proxy`` would see the credentials and the cluster's state)."""
    if not url.startswith(("http://", "https://")):  # never file:, ftp:, data:
        raise ValueError(f"not an http(s) URL: {url!r}")
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        _NoRedirects(),
        urllib.request.HTTPSHandler(context=context),
    )
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - http(s)
    try:
        with opener.open(request, timeout=timeout) as r:
            status, body = int(r.status), r.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            status, body = exc.code, exc.read(MAX_ANSWER + 1)
    except (OSError, ValueError):
        return 0, b""
    if len(body) > MAX_ANSWER:  # before: read whole, however long (a service gone wrong)
        return 0, b""
    return status, body


#: the most of a cluster service's answer that is read (Patroni's /cluster is a few KiB)
MAX_ANSWER = 1 << 20


def http_json(
    url: str, timeout: float = 3.0, context: ssl.SSLContext | None = None
) -> tuple[int, Any]:
    """GET ``url``: (status, parsed JSON or None); (0, None) when nothing answers within
    ``timeout`` (generous: a loaded machine answers loopback slowly, and a miss reads as "down")
    or an ``https://`` server fails verification with ``context`` (the pinned CA). Through
    :func:`http_get`: no redirect followed, no proxy."""
    status, body = http_get(url, timeout=timeout, context=context)
    if status == 0:
        return 0, None
    try:
        # strictly: Patroni's {"role": "replica", ..., "role": "primary"} is no answer (before:
        # json.loads took the last "role", a first-wins reader the first), nor NaN
        return status, strictjson.loads(body)
    except ValueError:
        return status, None


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` (we can bind it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
