"""Start, stop, inspect and break a PostgreSQL high-availability cluster on one machine.

3 etcd members, 3 PostgreSQL nodes under Patroni (synchronous replication), HAProxy in front
of the primary and of the API processes, and the institution's API processes connected
through HAProxy. Everything lives in one state directory; :meth:`Cluster.down` stops it all.
No system service is used or left running.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from safescan.cluster import render
from safescan.cluster import tls as cluster_tls
from safescan.cluster.errors import ClusterError
from safescan.cluster.host import chown_tree, preflight, service_user
from safescan.cluster.procs import (
    ProcessTable,
    children_of,
    cmdline,
    http_get,
    http_json,
    port_free,
    wait_until,
)
from safescan.cluster.secretfile import read_secret
from safescan.cluster.spec import SPEC_FILE, ClusterSpec
from safescan.code.atomicfile import write_atomic
from safescan.code.smallfile import read_bounded
from safescan.web import pki

BOOT_TIMEOUT = 180.0
#: the API processes' ``[server] public_url`` (institution settings, environment layer)
PUBLIC_URL_ENV = "SAFESCAN_INSTITUTION_SERVER__PUBLIC_URL"


def _token() -> str:
    return secrets.token_urlsafe(24)


class Cluster:
    """One cluster, described by its spec (see :mod:`safescan.cluster.spec`)."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.state = spec.state_dir
        self.procs = ProcessTable(self.state / "run", self.state / "logs")
        self.user = service_user()

    # --- paths and addresses ------------------------------------------------------------------

    @property
    def secrets_dir(self) -> Path:
        """Passwords, the key passphrase and the administrator token (mode 0700)."""
        return self.state / "secrets"

    @property
    def keys_dir(self) -> Path:
        """The institution's key directory."""
        return self.state / "keys"

    @property
    def pgpass(self) -> Path:
        """libpq password file for the API processes and tools (``PGPASSFILE``)."""
        return self.secrets_dir / "pgpass"

    @property
    def passphrase_file(self) -> Path:
        """The institution's key passphrase."""
        return self.secrets_dir / "passphrase"

    def node_dir(self, i: int) -> Path:
        """Patroni node ``i``: its config, pgpass, socket and data directory."""
        return self.state / "pg" / render.node_name(i)

    def etcd_dir(self, i: int) -> Path:
        """etcd member ``i``'s data directory."""
        return self.state / "etcd" / f"etcd{i}"

    @property
    def db_url(self) -> str:
        """The institution's database, through HAProxy (password from :attr:`pgpass`)."""
        port = self.spec.ports.postgres
        # libpq refuses a session on a read-only server: HAProxy considers every server up
        # for the first checks after it starts, and a standby must never serve the institution;
        # TLS end to end to the node, verified with the cluster's CA (cluster/tls.py)
        ssl = "&".join(f"{k}={v}" for k, v in cluster_tls.client_settings(self.ca_file).items())
        return (
            f"postgresql://{render.APP_USER}@{render.HOST}:{port}/{render.APP_DB}"
            f"?target_session_attrs=read-write&{ssl}"
        )

    @property
    def api_url(self) -> str:
        """The institution's API, through HAProxy (HTTPS: verify it with :attr:`ca_file`)."""
        return f"https://{render.HOST}:{self.spec.ports.api}"

    def api_process_url(self, i: int) -> str:
        """API process ``i`` directly (HTTPS, the same CA)."""
        return f"https://{render.HOST}:{self.spec.ports.api_process(i)}"

    @property
    def haproxy_cfg(self) -> Path:
        """HAProxy's configuration (``STATE/haproxy.cfg``, 0600: it holds the statistics
        password)."""
        return self.state / "haproxy.cfg"

    @property
    def public_url(self) -> str:
        """The base of the links the API processes hand out (``[server] public_url``):
        ``--public-url``, else HAProxy's API frontend (:attr:`api_url`)."""
        return self.spec.hosted_base

    def stats_auth(self) -> str:
        """The ``Authorization`` header HAProxy's statistics page asks for."""
        import base64

        pair = f"{render.STATS_USER}:{self.secrets().stats_password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    @property
    def tls_dir(self) -> pki.TlsDir:
        """The cluster's private CA and the API processes' server certificate (``STATE/tls``)."""
        return pki.TlsDir(self.state / "tls")

    @property
    def ca_file(self) -> Path:
        """The CA every client of the cluster pins (``STATE/tls/ca.pem``)."""
        return self.tls_dir.ca_cert

    @property
    def haproxy_tls(self) -> render.HaproxyTls:
        """HAProxy's certificate (with its key) and its copy of the CA (``STATE/haproxy``)."""
        d = self.state / "haproxy"
        return render.HaproxyTls(d / "api-frontend.pem", d / "ca.pem")

    def client_context(self) -> ssl.SSLContext:
        """An SSL context trusting only the cluster's CA (hostname checked)."""
        return pki.client_context(self.ca_file)

    def tool_env(self) -> dict[str, str]:
        """Environment for institution commands run against this cluster (audit, migrate)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAFESCAN_INSTITUTION_")}
        env["PGPASSFILE"] = str(self.pgpass)
        return env

    def secrets(self) -> render.Secrets:
        """The cluster's generated secrets."""
        text = read_secret(self.secrets_dir / "secrets.json", "secrets")
        try:
            return render.Secrets.from_json(text)
        except (ValueError, TypeError) as exc:
            raise ClusterError(f"cannot read the cluster's secrets: {exc}") from None

    def admin_token(self) -> str:
        """The institution's first administrator token (kept in the secrets directory);
        :class:`ClusterError` when the file is missing, empty, too large, a link or not a
        regular file (:func:`safescan.cluster.secretfile.read_secret`)."""
        token = read_secret(self.secrets_dir / "admin-token", "administrator token").strip()
        if not token:
            raise ClusterError(
                f"the cluster's administrator token {self.secrets_dir / 'admin-token'} is empty"
            )
        return token

    # --- bring up ------------------------------------------------------------------------------

    def up(self) -> None:
        """Start every part that is not running (the first call also creates everything);
        returns once the API answers through HAProxy. On failure, stops what it started."""
        bin_dir = preflight(self.state)
        self._prepare(bin_dir)
        try:
            self.ensure_running()
        except BaseException:
            with contextlib.suppress(ClusterError):
                self.down()
            raise

    def ensure_running(self) -> None:
        """Start whatever part is not running (etcd members, Patroni nodes, HAProxy, API
        processes), in that order, waiting for each layer; the cluster must exist (``up``)."""
        self._start_etcd()
        self._start_patroni()
        self._start_haproxy()
        if not (self.state / "institution-initialised").exists():
            self._bootstrap_database()
        self._start_apis()

    def _prepare(self, bin_dir: Path) -> None:
        for d in ("run", "logs", "etcd", "pg", "haproxy"):
            (self.state / d).mkdir(parents=True, exist_ok=True)
        self.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.secrets_dir, 0o700)
        path = self.secrets_dir / "secrets.json"
        if not path.exists():
            s = render.Secrets(*(_token() for _ in range(7)))
            _write_private(path, s.to_json())
            _write_private(self.passphrase_file, s.passphrase + "\n")
        s = self.secrets()
        if not s.stats_password:  # a cluster made before HAProxy's statistics had a password
            s = replace(s, stats_password=_token())
            _write_private(path, s.to_json())
        _write_private(self.pgpass, f"{render.HOST}:*:*:{render.APP_USER}:{s.app_password}\n")
        for i in range(self.spec.nodes):
            self.etcd_dir(i).mkdir(parents=True, exist_ok=True)
            node = self.node_dir(i)
            node.mkdir(parents=True, exist_ok=True)
            cfg = render.patroni_config(self.spec, i, node, bin_dir, s)
            _write_private(node / "patroni.yml", _json(cfg))
        self._prepare_tls()
        # holds the statistics password: owner-only, whole or not at all (a crash mid-write
        # leaves the previous file, which `haproxy -c` checks before every start)
        haproxy_cfg = render.haproxy_config(
            self.spec, self.state / "haproxy", self.haproxy_tls, s.stats_password
        )
        _write_private(self.haproxy_cfg, haproxy_cfg)
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            os.chown(self.haproxy_cfg, pw.pw_uid, pw.pw_gid)  # HAProxy runs as the user
            for d in ("etcd", "pg", "haproxy", "logs"):
                chown_tree(self.state / d, pw.pw_uid, pw.pw_gid)
        for i in range(self.spec.nodes):
            os.chmod(self.node_dir(i), 0o700)

    def _prepare_tls(self) -> None:
        """The cluster's CA and every certificate it issues (cluster/tls.py), once."""
        front, nodes = self.haproxy_tls, [self.node_dir(i) for i in range(self.spec.nodes)]
        cluster_tls.prepare(self.tls_dir, front.frontend_pem, front.ca_file, nodes)

    def _wait(self, check: Callable[[], bool], names: list[str], what: str) -> None:
        """Wait for ``check``; fail at once (with the log's tail) if one of ``names`` dies."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not check():
            dead = [n for n in names if not self.procs.alive(n)]
            if dead or time.monotonic() > deadline:
                culprit = dead[0] if dead else names[0]
                why = f"{culprit} exited" if dead else f"timed out after {BOOT_TIMEOUT:g} s"
                raise ClusterError(
                    f"{what} ({why}); end of logs/{culprit}.log:\n{self.procs.log_tail(culprit)}"
                )
            time.sleep(0.2)

    def _service_env(self, home: Path) -> dict[str, str]:
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(home),
        }

    def _need_ports(self, name: str, *ports: int) -> None:
        for port in ports:
            if not port_free(port):
                raise ClusterError(
                    f"port {port} (needed by {name}) is in use; choose another --base-port"
                )

    def _start_etcd(self) -> None:
        p, s = self.spec.ports, self.secrets()
        for i in range(self.spec.nodes):
            name = f"etcd{i}"
            if self.procs.alive(name):
                continue
            self._need_ports(name, p.etcd_client(i), p.etcd_peer(i))
            node = cluster_tls.node_tls(self.node_dir(i))
            argv = render.etcd_argv(self.spec, i, self.etcd_dir(i), s.etcd_token, node)
            self.procs.start(
                name, argv, env=self._service_env(self.etcd_dir(i)), cwd=self.state, user=self.user
            )
        names = [f"etcd{i}" for i in range(self.spec.nodes)]
        self._wait(self._etcd_quorum, names, "etcd did not form a quorum")

    def etcd_health(self, i: int) -> bool:
        """Whether etcd member ``i`` answers healthy."""
        if not self.ca_file.exists():  # never brought up: nothing can answer
            return False
        ctx = cluster_tls.client_context(self.ca_file, cluster_tls.supervisor_tls(self.tls_dir))
        url = f"https://{render.HOST}:{self.spec.ports.etcd_client(i)}/health"
        status, body = http_json(url, context=ctx)
        return status == 200 and isinstance(body, dict) and body.get("health") == "true"

    def _etcd_quorum(self) -> bool:
        return sum(self.etcd_health(i) for i in range(self.spec.nodes)) > self.spec.nodes // 2

    def _start_patroni(self) -> None:
        p = self.spec.ports
        for i in range(self.spec.nodes):
            name = f"patroni{i}"
            if self.procs.alive(name):
                continue
            if self.postmaster_pid(i) is None:
                self._need_ports(name, p.pg(i), p.patroni(i))
            node = self.node_dir(i)
            self.procs.start(
                name,
                ["patroni", str(node / "patroni.yml")],
                env=self._service_env(node),
                cwd=node,
                user=self.user,
            )
        names = [f"patroni{i}" for i in range(self.spec.nodes)]
        self._wait(
            self._replication_ready,
            names,
            "Patroni did not elect a primary with a synchronous standby",
        )

    def members(self) -> list[dict[str, Any]]:
        """Patroni's view of the cluster (name, role, state, ...), from any node that answers."""
        if not self.ca_file.exists():  # never brought up: nothing can answer
            return []
        ctx = self.client_context()
        for i in range(self.spec.nodes):
            url = f"https://{render.HOST}:{self.spec.ports.patroni(i)}/cluster"
            status, body = http_json(url, context=ctx)
            if status == 200 and isinstance(body, dict):
                return list(body.get("members", []))
        return []

    def leader(self) -> str | None:
        """Name of the running primary (``pg0``...), or None during a failover."""
        for m in self.members():
            if m.get("role") in ("leader", "master", "primary") and m.get("state") == "running":
                return str(m["name"])
        return None

    def wait_leader(self, timeout: float) -> str | None:
        """The running primary, waiting up to ``timeout`` seconds for one (during a failover,
        or when a loaded machine answers late); None if there is still none."""
        found: list[str] = []

        def check() -> bool:
            leader = self.leader()
            if leader is not None:
                found.append(leader)
            return leader is not None

        return found[-1] if wait_until(check, timeout, 0.2) else None

    def _replication_ready(self) -> bool:
        members = self.members()
        leader = any(
            m.get("role") in ("leader", "master") and m.get("state") == "running" for m in members
        )
        sync = sum(
            m.get("role") == "sync_standby" and m.get("state") in ("running", "streaming")
            for m in members
        )
        return leader and sync >= self.spec.tuning.synchronous_node_count

    def _start_haproxy(self) -> None:
        if not self.procs.alive("haproxy"):
            p = self.spec.ports
            self._need_ports("haproxy", p.api, p.postgres, p.stats)
            cfg = self.haproxy_cfg
            check = subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], capture_output=True)
            if check.returncode != 0:
                raise ClusterError(f"haproxy rejects {cfg}: {check.stderr.decode()[-800:]}")
            self.procs.start(
                "haproxy",
                ["haproxy", "-db", "-f", str(cfg)],
                env=self._service_env(self.state),
                cwd=self.state,
                user=self.user,
            )
        self._wait(self._haproxy_settled, ["haproxy"], "HAProxy does not lead to the primary")

    def haproxy_servers(self) -> dict[str, str]:
        """HAProxy's view: server name -> status (``UP``, ``DOWN``...), from its stats page."""
        import csv

        url = f"http://{render.HOST}:{self.spec.ports.stats}/;csv"
        # no redirect followed, no proxy: the credentials go to HAProxy only
        status, body = http_get(url, headers={"Authorization": self.stats_auth()}, timeout=2)
        if status != 200:
            return {}
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return {}
        rows = csv.DictReader(text.lstrip("# ").splitlines())
        return {
            f"{row['pxname']}/{row['svname']}": row["status"]
            for row in rows
            if row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def _haproxy_settled(self) -> bool:
        """Exactly the leader is UP behind HAProxy's PostgreSQL frontend, and it answers."""
        servers = self.haproxy_servers()
        up = [
            k.split("/")[1]
            for k, v in servers.items()
            if k.startswith("postgres_primary/") and v.startswith("UP")
        ]
        return up == [self.leader()] and self._primary_via_haproxy()

    def _superuser_connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(
            host=render.HOST,
            port=self.spec.ports.postgres,
            user="postgres",
            password=self.secrets().superuser_password,
            dbname=dbname,
            target_session_attrs="read-write",
            autocommit=True,
            connect_timeout=3,
            sslmode="verify-full",  # cluster_tls.client_settings
            sslrootcert=str(self.ca_file),
        )

    def _primary_via_haproxy(self) -> bool:
        import psycopg

        try:
            with self._superuser_connect() as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                return row is not None and row[0] is False
        except psycopg.Error:
            return False

    def _bootstrap_database(self) -> None:
        """The institution's role and database, then ``safescan institution init``."""
        from psycopg import sql

        s = self.secrets()
        user, db = sql.Identifier(render.APP_USER), sql.Identifier(render.APP_DB)
        with self._superuser_connect() as conn:
            if (
                conn.execute(
                    "SELECT 1 FROM pg_roles WHERE rolname = %s", (render.APP_USER,)
                ).fetchone()
                is None
            ):
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        user, sql.Literal(s.app_password)
                    )
                )
            if (
                conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (render.APP_DB,)
                ).fetchone()
                is None
            ):
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, user))
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "safescan.institution",
                "init",
                "--db",
                self.db_url,
                "--keys",
                str(self.keys_dir),
                "--passphrase-file",
                str(self.passphrase_file),
                *self._tls_args(),
            ],
            env=self.tool_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode != 0:
            raise ClusterError(f"institution init failed: {out.stderr.strip()[-800:]}")
        _write_private(self.secrets_dir / "admin-token", out.stdout.strip().splitlines()[-1] + "\n")
        _write_private(self.state / "institution-initialised", "yes\n")

    def _api_argv(self, i: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "safescan.institution",
            "serve",
            "--db",
            self.db_url,
            "--keys",
            str(self.keys_dir),
            "--passphrase-file",
            str(self.passphrase_file),
            "--host",
            render.HOST,
            "--port",
            str(self.spec.ports.api_process(i)),
            *self._tls_args(),  # HTTPS: HAProxy verifies it (docs/operations.md, "TLS")
            *self.spec.api_args,
        ]

    def _api_env(self) -> dict[str, str]:
        """The API processes' environment: :meth:`tool_env` and their ``[server] public_url``
        (:attr:`public_url`), so a checkout link leads through HAProxy (before: unset, each
        process built links on its own socket's address, ``https://127.0.0.1:<base+50+i>``,
        which bypasses HAProxy and is refused from anywhere HAProxy is the way in)."""
        return self.tool_env() | {PUBLIC_URL_ENV: self.public_url}

    def _tls_args(self) -> list[str]:
        """The API processes' certificate from the cluster's CA (``init`` makes none then)."""
        return [
            "--tls-cert",
            str(self.tls_dir.server_cert),
            "--tls-key",
            str(self.tls_dir.server_key),
        ]

    def _start_apis(self) -> None:
        for i in range(self.spec.api_processes):
            name = f"api{i}"
            if self.procs.alive(name):
                continue
            self._need_ports(name, self.spec.ports.api_process(i))
            self.procs.start(name, self._api_argv(i), env=self._api_env(), cwd=self.state)
        for i in range(self.spec.api_processes):
            self._wait(
                partial(_answers, self.api_process_url(i) + "/health", self.client_context()),
                [f"api{i}"],
                f"API process {i} did not start",
            )
        if not wait_until(
            partial(_answers, self.api_url + "/health", self.client_context()), 30, 0.2
        ):
            raise ClusterError("the API does not answer through HAProxy")

    # --- faults --------------------------------------------------------------------------------

    def postmaster_pid(self, i: int) -> int | None:
        """The running postmaster of node ``i`` (from its postmaster.pid), or None."""
        try:
            raw = read_bounded(  # PostgreSQL's file: bounded, never through a link (review)
                self.node_dir(i) / "data" / "postmaster.pid", 4096, "a pid file", own=True
            )
            pid = int(raw.split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if str(self.node_dir(i) / "data") in cmdline(pid) else None

    def kill_postgres(self, i: int) -> None:
        """SIGKILL node ``i``'s PostgreSQL: the postmaster and every backend, at once (a crash;
        its Patroni stays and, if it was the primary, hands over to the synchronous standby)."""
        pm = self.postmaster_pid(i)
        if pm is None:
            raise ClusterError(f"PostgreSQL of {render.node_name(i)} is not running")
        victims = [pm, *children_of(pm)]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill_primary(self) -> int:
        """SIGKILL the current primary's PostgreSQL; returns the node index."""
        leader = self.wait_leader(30)
        if leader is None:
            raise ClusterError("there is no running primary to kill")
        i = int(leader.removeprefix("pg"))
        self.kill_postgres(i)
        return i

    def kill(self, name: str) -> None:
        """SIGKILL one process of the cluster by name (``etcd1``, ``api0``, ``patroni2``...).
        ``up`` starts it again."""
        known = self.process_names()
        if name not in known:
            raise ClusterError(f"no process {name!r} in this cluster (one of {', '.join(known)})")
        if not self.procs.send(name, signal.SIGKILL):
            raise ClusterError(f"{name} is not running")
        wait_until(lambda: not self.procs.alive(name), 10)

    # --- status and shutdown -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What runs and how it is: etcd health, Patroni roles, HAProxy, API processes."""
        n, a = self.spec.nodes, self.spec.api_processes
        ctx = self.client_context()
        return {
            "state_dir": str(self.state),
            "api_url": self.api_url,
            "public_url": self.public_url,
            "db_url": self.db_url,
            "etcd": [
                {
                    "name": f"etcd{i}",
                    "running": self.procs.alive(f"etcd{i}"),
                    "healthy": self.etcd_health(i),
                }
                for i in range(n)
            ],
            "patroni": [
                {
                    "name": f"patroni{i}",
                    "running": self.procs.alive(f"patroni{i}"),
                    "postgres_running": self.postmaster_pid(i) is not None,
                }
                for i in range(n)
            ],
            "members": self.members(),
            "leader": self.leader(),
            "haproxy": {"running": self.procs.alive("haproxy"), "servers": self.haproxy_servers()},
            "api": [
                {
                    "name": f"api{i}",
                    "running": self.procs.alive(f"api{i}"),
                    "healthy": _answers(self.api_process_url(i) + "/health", ctx),
                }
                for i in range(a)
            ],
        }

    def down(self, *, wipe: bool = False) -> None:
        """Stop everything (API processes, HAProxy, Patroni and PostgreSQL, etcd); with
        ``wipe`` also delete the state directory."""
        for i in range(self.spec.api_processes):
            self.procs.stop(f"api{i}", timeout=15)
        self.procs.stop("haproxy", timeout=10)
        leader = self.leader()
        order = sorted(range(self.spec.nodes), key=lambda i: render.node_name(i) == leader)
        for i in order:  # standbys first, so stopping them causes no failover
            self.procs.stop(f"patroni{i}", timeout=60)
        for i in range(self.spec.nodes):
            self._stop_orphan_postgres(i)
        for i in range(self.spec.nodes):
            self.procs.stop(f"etcd{i}", timeout=15)
        if wipe:
            if not (self.state / SPEC_FILE).is_file():
                raise ClusterError(f"{self.state} is not a cluster state directory")
            shutil.rmtree(self.state)

    def _stop_orphan_postgres(self, i: int) -> None:
        """A PostgreSQL left running without its Patroni (e.g. Patroni was SIGKILLed)."""
        pm = self.postmaster_pid(i)
        if pm is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pm, signal.SIGINT)  # fast shutdown
        if not wait_until(lambda: self.postmaster_pid(i) is None, 30):
            with contextlib.suppress(ProcessLookupError):
                for pid in [pm, *children_of(pm)]:
                    os.kill(pid, signal.SIGKILL)
            wait_until(lambda: self.postmaster_pid(i) is None, 10)

    def process_names(self) -> list[str]:
        """Every process the cluster runs (PostgreSQL aside: Patroni runs it)."""
        names = [f"etcd{i}" for i in range(self.spec.nodes)]
        names += [f"patroni{i}" for i in range(self.spec.nodes)]
        return names + ["haproxy"] + [f"api{i}" for i in range(self.spec.api_processes)]

    def running(self) -> list[str]:
        """Names of the cluster's processes that run (for checks that nothing is left)."""
        out = [n for n in self.process_names() if self.procs.alive(n)]
        out += [f"postgres{i}" for i in range(self.spec.nodes) if self.postmaster_pid(i)]
        return out

    def wait_for(self, what: str, timeout: float) -> bool:
        """Wait for ``"replication"`` (a primary with its synchronous standbys) or ``"api"``."""
        if what == "replication":
            return wait_until(self._replication_ready, timeout, 0.2)
        if what == "api":
            return wait_until(
                partial(_answers, self.api_url + "/health", self.client_context()), timeout
            )
        raise ClusterError(f"unknown condition {what!r}")


def _answers(url: str, context: ssl.SSLContext) -> bool:
    return http_json(url, 2, context)[0] == 200


def _json(data: Any) -> str:
    import json

    return json.dumps(data, indent=2)


def _write_private(path: Path, text: str) -> None:
    """``text`` to ``path``, owner-only, whole or not at all (:func:`write_atomic`): a link
    planted at ``path`` or at its temporary name is replaced, never written through (before:
    ``O_TRUNC`` without ``O_NOFOLLOW`` wrote the cluster's secrets to whatever a planted link
    named, then made that file 0600; tests/cluster/test_private_files.py)."""
    write_atomic(path, text.encode("utf-8"), 0o600)
