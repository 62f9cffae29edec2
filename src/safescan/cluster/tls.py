"""TLS inside the cluster, from the cluster's private CA (``STATE/tls``).

Every hop is TLS verified against that CA alone:

* clients -> HAProxy -> API processes (HAProxy re-encrypts; see :func:`.render.haproxy_config`);
* the institution, the supervisor and Patroni -> PostgreSQL (``sslmode=verify-full`` with
  ``sslrootcert`` the CA; through HAProxy's PostgreSQL frontend the TLS session runs end to end
  between the client and the node), and standbys -> the primary (streaming replication, the
  replica's ``pg_basebackup`` and ``pg_rewind``: Patroni puts the same settings into their
  connection strings). PostgreSQL runs with ``ssl = on`` and a ``pg_hba.conf`` whose TCP lines
  are ``hostssl`` only, with an explicit ``hostnossl ... reject``: a client that does not
  start TLS is refused before authentication.

Each PostgreSQL node has its own key and certificate (``STATE/pg/pgN/tls``), issued for the
names the cluster's clients use on this machine (``localhost``, 127.0.0.1, ::1).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safescan.web import pki

HBA_METHOD = "scram-sha-256"


@dataclass(frozen=True)
class NodeTls:
    """A node's TLS files: ``cert`` (its certificate, then the CA), ``key`` (0600) and ``ca``
    (the CA it verifies its peers with)."""

    path: Path

    @property
    def cert(self) -> Path:
        """Certificate chain (PEM)."""
        return self.path / "server.pem"

    @property
    def key(self) -> Path:
        """Private key (PEM, mode 0600, owned by the service user)."""
        return self.path / "server.key"

    @property
    def ca(self) -> Path:
        """The cluster's CA certificate."""
        return self.path / "ca.pem"


def node_tls(node_dir: Path) -> NodeTls:
    """Where node ``node_dir``'s TLS files live."""
    return NodeTls(node_dir / "tls")


def prepare_node(ca_dir: pki.TlsDir, node: NodeTls) -> None:
    """Issue the node's certificate from the CA (once) and give it a copy of the CA."""
    if not (node.cert.exists() and node.key.exists()):
        pki.issue_server_files(ca_dir, node.cert, node.key, list(pki.DEFAULT_NAMES))
    node.ca.write_text(ca_dir.ca_cert.read_text())


def prepare_frontend(ca_dir: pki.TlsDir, frontend_pem: Path, ca_copy: Path) -> None:
    """HAProxy's certificate and key in one PEM (once), and its copy of the CA."""
    if not frontend_pem.exists():
        tmp = frontend_pem.parent / "frontend.tmp"
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        pki.issue_server_files(ca_dir, cert, key, list(pki.DEFAULT_NAMES))
        pki.write_private(frontend_pem, (cert.read_text() + key.read_text()).encode())
        shutil.rmtree(tmp)
    ca_copy.write_text(ca_dir.ca_cert.read_text())


def client_settings(ca: Path) -> dict[str, str]:
    """libpq settings of every connection to PostgreSQL: TLS, the server's certificate checked
    against the cluster's CA and the name connected to."""
    return {"sslmode": "verify-full", "sslrootcert": str(ca)}


def server_parameters(node: NodeTls) -> dict[str, Any]:
    """PostgreSQL settings: TLS on, with the node's certificate; TLS 1.2 at least."""
    return {
        "ssl": "on",
        "ssl_cert_file": str(node.cert),
        "ssl_key_file": str(node.key),
        "ssl_ca_file": str(node.ca),
        "ssl_min_protocol_version": "TLSv1.2",
    }


def pg_hba(host: str) -> list[str]:
    """``pg_hba.conf``: the Unix socket for the service user, TCP only over TLS (password
    checked with SCRAM), and every TCP connection without TLS refused."""
    return [
        "local all all peer",
        f"hostssl replication replicator {host}/32 {HBA_METHOD}",
        f"hostssl all all {host}/32 {HBA_METHOD}",
        "hostnossl all all all reject",
    ]


__all__ = [
    "NodeTls",
    "client_settings",
    "node_tls",
    "pg_hba",
    "prepare_frontend",
    "prepare_node",
    "server_parameters",
]
