"""The configuration files and command lines of each part, rendered from a :class:`ClusterSpec`.

Nothing here starts anything; :mod:`safescan.cluster.supervisor` writes these out and runs them.
The same settings, with real host addresses instead of 127.0.0.1, are the multi-host
configuration described in docs/operations.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safescan.cluster import tls as cluster_tls
from safescan.cluster.errors import ClusterError
from safescan.cluster.spec import HOST as HOST
from safescan.cluster.spec import ClusterSpec
from safescan.code import strictjson

SCOPE = "safescan"
APP_USER = "safescan"
APP_DB = "safescan"
PG_BIN_DIRS = (
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
)


@dataclass(frozen=True)
class Secrets:
    """Generated once per cluster and kept in ``STATE/secrets/secrets.json`` (mode 0600)."""

    superuser_password: str
    replication_password: str
    app_password: str
    rest_password: str
    passphrase: str
    etcd_token: str
    #: HAProxy's statistics page (user :data:`STATS_USER`); ``""`` in a ``secrets.json`` written
    #: before it existed: the supervisor then generates one and stores it (``_prepare``)
    stats_password: str = ""

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps(self.__dict__, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Secrets:
        """Inverse of :meth:`to_json`."""
        doc = strictjson.loads(text.encode("utf-8", "surrogateescape"))  # a key named twice
        if not isinstance(doc, dict):
            raise TypeError("not a JSON object")
        return cls(**doc)


def node_name(i: int) -> str:
    """Name of PostgreSQL/Patroni node ``i`` (also its etcd member: ``etcd{i}``)."""
    return f"pg{i}"


def etcd_argv(
    spec: ClusterSpec, i: int, data_dir: Path, token: str, node: cluster_tls.NodeTls
) -> list[str]:
    """Command line of etcd member ``i`` (with the v2 API, the one Patroni uses: see
    :func:`patroni_config`), over TLS with ``node``'s certificate (clients and peers must
    present one of the cluster's CA)."""
    p = spec.ports
    peers = ",".join(f"etcd{k}=https://{HOST}:{p.etcd_peer(k)}" for k in range(spec.nodes))
    return [
        "etcd",
        "--name",
        f"etcd{i}",
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        f"https://{HOST}:{p.etcd_client(i)}",
        "--advertise-client-urls",
        f"https://{HOST}:{p.etcd_client(i)}",
        "--listen-peer-urls",
        f"https://{HOST}:{p.etcd_peer(i)}",
        "--initial-advertise-peer-urls",
        f"https://{HOST}:{p.etcd_peer(i)}",
        "--initial-cluster",
        peers,
        "--initial-cluster-token",
        token,
        "--initial-cluster-state",
        "new",
        "--heartbeat-interval",
        str(spec.tuning.etcd_heartbeat_ms),
        "--election-timeout",
        str(spec.tuning.etcd_election_ms),
        "--enable-v2=true",
        "--logger",
        "zap",
        "--log-outputs",
        "stderr",
        *cluster_tls.etcd_tls_args(node),
    ]


def patroni_config(
    spec: ClusterSpec, i: int, node_dir: Path, bin_dir: Path, secrets: Secrets
) -> dict[str, Any]:
    """Patroni's configuration for node ``i`` (written as JSON, which YAML readers accept).

    Synchronous replication with ``synchronous_mode_strict``: a commit returns only once
    ``synchronous_node_count`` standbys have flushed it, and with no standby left writes wait
    rather than being acknowledged on the primary alone. Only a synchronous standby may be
    promoted, so a failover never loses an acknowledged commit. Data checksums are on (initdb);
    pg_rewind lets a crashed primary rejoin as a standby. PostgreSQL serves TCP over TLS only
    (:mod:`safescan.cluster.tls`).
    """
    p, t = spec.ports, spec.tuning
    node = cluster_tls.node_tls(node_dir)
    return {
        "scope": SCOPE,
        "namespace": "/service/",
        "name": node_name(i),
        "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
        "restapi": {
            "listen": f"{HOST}:{p.patroni(i)}",
            "connect_address": f"{HOST}:{p.patroni(i)}",
            "authentication": {"username": "patroni", "password": secrets.rest_password},
            **cluster_tls.patroni_restapi(node),  # HTTPS (cluster/tls.py)
        },
        # etcd's v2 API on purpose: Patroni 3.0.2 (Debian 12) renews the leader key over the v3
        # API with an unconditional put when its lease has expired, so a primary whose Patroni
        # stalled past ttl takes the key back from the promoted standby on waking (split brain,
        # acknowledged commits rewound; fixed upstream in 3.0.3, patroni/patroni#2689). Over
        # v2 the renewal is a compare-and-swap on the key's value, which then fails.
        "etcd": {
            "hosts": [f"{HOST}:{p.etcd_client(k)}" for k in range(spec.nodes)],
            **cluster_tls.patroni_etcd(node),
        },
        "bootstrap": {
            "dcs": {
                "ttl": t.ttl,
                "loop_wait": t.loop_wait,
                "retry_timeout": t.retry_timeout,
                "maximum_lag_on_failover": 1048576,
                "primary_start_timeout": t.primary_start_timeout,
                "synchronous_mode": True,
                "synchronous_mode_strict": t.synchronous_mode_strict,
                "synchronous_node_count": t.synchronous_node_count,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "max_connections": 200,
                        "shared_buffers": "128MB",
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "wal_keep_size": "256MB",
                        "wal_log_hints": "on",
                        "synchronous_commit": "on",
                        "wal_retrieve_retry_interval": "500ms",
                        "password_encryption": "scram-sha-256",
                    },
                },
            },
            "initdb": ["data-checksums", {"encoding": "UTF8"}, {"locale": "C.UTF-8"}],
        },
        "postgresql": {
            "listen": f"{HOST}:{p.pg(i)}",
            "connect_address": f"{HOST}:{p.pg(i)}",
            "data_dir": str(node_dir / "data"),
            "bin_dir": str(bin_dir),
            "pgpass": str(node_dir / "pgpass"),
            # Patroni's own sessions, replication, a new replica's pg_basebackup and pg_rewind
            # all connect over TLS verified against the cluster's CA (cluster/tls.py)
            "authentication": {
                "superuser": {
                    "username": "postgres",
                    "password": secrets.superuser_password,
                    **cluster_tls.client_settings(node.ca),
                },
                "replication": {
                    "username": "replicator",
                    "password": secrets.replication_password,
                    **cluster_tls.client_settings(node.ca),
                },
            },
            "parameters": {
                "unix_socket_directories": str(node_dir),
                **cluster_tls.server_parameters(node),
            },
            "pg_hba": cluster_tls.pg_hba(HOST),
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


TLS_NAME = "localhost"  # the name HAProxy checks in the API processes' certificates
STATS_USER = "stats"  # HAProxy's statistics page: this user, Secrets.stats_password


@dataclass(frozen=True)
class HaproxyTls:
    """The files HAProxy's API hop uses: ``frontend_pem`` (its certificate chain and key, one
    PEM, what clients verify with the cluster's CA) and ``ca_file`` (the CA it verifies each API
    process's certificate with)."""

    frontend_pem: Path
    ca_file: Path


def haproxy_config(spec: ClusterSpec, run_dir: Path, tls: HaproxyTls, stats_password: str) -> str:
    """HAProxy: the PostgreSQL frontend leads to whichever node's Patroni answers 200 on
    ``/primary`` (asked over TLS, Patroni's certificate verified with the cluster's CA, name
    ``localhost``); the PostgreSQL sessions themselves pass through (TLS end to end). Sessions
    to a node marked down are cut at once, so clients reconnect to the new primary. The API
    frontend spreads requests over the API processes and moves a request to another process
    only if it could not connect (never after sending it).

    The API hop is TLS on both sides: HAProxy terminates the clients' TLS with its certificate
    from the cluster's CA and re-encrypts to each API process, verifying its certificate
    (``verify required``, the cluster's CA only, name ``localhost``); a process whose
    certificate does not verify, or whose ``GET /readyz`` (database reachable, schema current,
    keys loaded) is not 200, is taken out of rotation until it is again.

    The statistics page (loopback, read-only: no ``stats admin``) asks for
    :data:`STATS_USER` and ``stats_password`` (HTTP basic authentication; 401 without): the
    file therefore holds a secret and is written owner-only (``supervisor._prepare``)."""
    if re.fullmatch(r"[A-Za-z0-9_-]{16,}", stats_password) is None:
        raise ClusterError("the statistics password is a token of 16+ characters (A-Z a-z 0-9 - _)")
    p, t = spec.ports, spec.tuning
    inter = t.check_interval_ms
    lines = [
        "global",
        "    maxconn 4000",
        f"    stats socket {run_dir / 'haproxy.sock'} mode 600 level admin",
        "",
        "defaults",
        "    mode tcp",
        "    timeout connect 2s",
        "    timeout client 1h",
        "    timeout server 1h",
        "    timeout check 1s",
        "",
        "listen stats",
        "    mode http",
        f"    bind {HOST}:{p.stats}",
        "    stats enable",
        "    stats uri /",
        f"    stats auth {STATS_USER}:{stats_password}",
        "    timeout client 10s",
        "    timeout server 10s",
        "",
        "listen postgres_primary",
        f"    bind {HOST}:{p.postgres}",
        "    option httpchk GET /primary",
        "    http-check expect status 200",
        f"    default-server inter {inter}ms fastinter {max(inter // 2, 100)}ms "
        f"downinter {inter}ms fall 2 rise 1 on-marked-down shutdown-sessions",
    ]
    lines += [
        f"    server {node_name(i)} {HOST}:{p.pg(i)} maxconn 190 check port {p.patroni(i)}"
        f" check-ssl verify required ca-file {tls.ca_file} verifyhost {TLS_NAME}"
        f" check-sni {TLS_NAME}"
        for i in range(spec.nodes)
    ]
    lines += [
        "",
        "listen api",
        "    mode http",
        f"    bind {HOST}:{p.api} ssl crt {tls.frontend_pem} ssl-min-ver TLSv1.2 alpn http/1.1",
        "    balance roundrobin",
        "    option redispatch 1",
        "    retries 3",
        "    retry-on conn-failure",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-keep-alive 10s",
        "    option httpchk",
        f"    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host {TLS_NAME}",
        "    http-check expect status 200",
        f"    default-server inter {inter}ms fall 2 rise 1"
        f" ssl verify required ca-file {tls.ca_file} sni str({TLS_NAME}) verifyhost {TLS_NAME}"
        f" check-ssl check-sni {TLS_NAME} ssl-min-ver TLSv1.2",
    ]
    lines += [
        f"    server api{i} {HOST}:{p.api_process(i)} check" for i in range(spec.api_processes)
    ]
    return "\n".join(lines) + "\n"


def find_pg_bin() -> Path | None:
    """The directory holding PostgreSQL's server binaries, or None."""
    for d in PG_BIN_DIRS:
        if (Path(d) / "postgres").exists() and (Path(d) / "pg_rewind").exists():
            return Path(d)
    return None
