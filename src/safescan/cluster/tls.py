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

* etcd: client and peer URLs are ``https``, and each side must present a certificate of the
  CA (``--client-cert-auth``, ``--peer-client-cert-auth``): only the cluster's members,
  its Patroni nodes and the supervisor can read or write the leader key;
* Patroni's REST API is HTTPS with the node's certificate; HAProxy's ``/primary`` check and
  the supervisor verify it with the CA, and Patroni nodes verify each other with it.

Each node (its PostgreSQL, its Patroni and etcd member ``i``) has its own key and certificate
(``STATE/pg/pgN/tls``), issued for the names the cluster's clients use on this machine
(``localhost``, 127.0.0.1, ::1) and usable on both ends of a TLS session (etcd's members are
each other's clients); the supervisor has a client certificate of its own
(``STATE/tls/supervisor``).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from safescan.cluster.errors import ClusterError
from safescan.code.atomicfile import write_atomic
from safescan.code.smallfile import read_bounded
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


def supervisor_tls(ca_dir: pki.TlsDir) -> NodeTls:
    """The supervisor's client certificate (etcd asks for one)."""
    return NodeTls(ca_dir.path / "supervisor")


def _usable(node: NodeTls) -> bool:
    """The node has a key and a certificate that also serves as a client certificate."""
    if not (node.cert.exists() and node.key.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(_own(node.cert))
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (OSError, ValueError, x509.ExtensionNotFound):  # a link, huge, damaged: issued anew
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in eku


def prepare_node(ca_dir: pki.TlsDir, node: NodeTls) -> None:
    """Issue the node's certificate from the CA (once; again if it predates client
    authentication) and give it a copy of the CA."""
    if not _usable(node):
        pki.issue_server_files(
            ca_dir, node.cert, node.key, list(pki.DEFAULT_NAMES), client_auth=True
        )
    _copy_ca(ca_dir, node.ca)


def prepare(ca_dir: pki.TlsDir, frontend_pem: Path, haproxy_ca: Path, nodes: list[Path]) -> None:
    """Everything the cluster's TLS needs, from the CA in ``ca_dir`` (made if missing): the API
    processes' certificate, HAProxy's, each node's and the supervisor's."""
    if not ca_dir.ca_cert.exists():
        pki.create_tls_dir(ca_dir)
    elif not ca_dir.exists():
        pki.issue_server_cert(ca_dir, list(pki.DEFAULT_NAMES))
    prepare_frontend(ca_dir, frontend_pem, haproxy_ca)
    for node_dir in nodes:
        prepare_node(ca_dir, node_tls(node_dir))
    prepare_node(ca_dir, supervisor_tls(ca_dir))


def check_patroni_https(patroni: str | None) -> None:
    """Patroni reaches etcd and its peers over https with urllib3, which needs ``idna`` in
    Patroni's Python (Debian: python3-idna, only a Recommends); say so before starting."""
    if patroni is None:
        return
    with open(patroni, "rb") as f:
        first = f.readline(4096)  # a binary's first "line" may be long: bounded
    python = first[2:].decode(errors="replace").split()[0] if first.startswith(b"#!") else ""
    if not python or python.endswith("env"):
        return  # not a script with a fixed interpreter: nothing to check here
    done = subprocess.run([python, "-c", "import idna"], capture_output=True, timeout=30)
    if done.returncode != 0:
        raise ClusterError(
            f"Patroni's Python ({python}) lacks the idna module it needs for https to etcd:"
            " install the Debian package python3-idna"
        )


def client_context(ca: Path, client: NodeTls | None = None) -> ssl.SSLContext:
    """Verify a server with the cluster's CA only (name checked); with ``client``, present its
    certificate (etcd)."""
    ctx = pki.client_context(ca)
    if client is not None:
        ctx.load_cert_chain(client.cert, client.key)
    return ctx


def etcd_tls_args(node: NodeTls) -> list[str]:
    """etcd's flags: serve clients and peers over TLS, and require a certificate of the CA from
    both."""
    files = [str(node.cert), str(node.key), str(node.ca)]
    return [
        *("--cert-file", files[0], "--key-file", files[1], "--trusted-ca-file", files[2]),
        "--client-cert-auth",
        *("--peer-cert-file", files[0], "--peer-key-file", files[1]),
        *("--peer-trusted-ca-file", files[2]),
        "--peer-client-cert-auth",
    ]


def patroni_etcd(node: NodeTls) -> dict[str, str]:
    """Patroni's ``etcd:`` TLS settings: https, the CA, the node's certificate as client."""
    return {"protocol": "https", "cacert": str(node.ca), "cert": str(node.cert),
            "key": str(node.key)}  # fmt: skip


def patroni_restapi(node: NodeTls) -> dict[str, str]:
    """Patroni's ``restapi:`` TLS settings (its clients need no certificate; the CA is what
    Patroni verifies the other nodes' REST APIs with)."""
    return {"certfile": str(node.cert), "keyfile": str(node.key), "cafile": str(node.ca)}


def prepare_frontend(ca_dir: pki.TlsDir, frontend_pem: Path, ca_copy: Path) -> None:
    """HAProxy's certificate and key in one PEM (once), and its copy of the CA."""
    if not frontend_pem.exists():
        tmp = frontend_pem.parent / "frontend.tmp"
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        pki.issue_server_files(ca_dir, cert, key, list(pki.DEFAULT_NAMES))
        pki.write_private(frontend_pem, _own(cert) + _own(key))
        shutil.rmtree(tmp)
    _copy_ca(ca_dir, ca_copy)


def _copy_ca(ca_dir: pki.TlsDir, copy: Path) -> None:
    """A copy of the cluster's CA certificate (public: 0644), whole or not at all: a half
    copy would make every verification with it fail."""
    try:
        write_atomic(copy, _own(ca_dir.ca_cert), 0o644)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ClusterError(f"cannot read the cluster's CA {ca_dir.ca_cert}: {reason}") from None


def _own(path: Path) -> bytes:
    """A TLS file the cluster wrote itself: at most ``pki.CA_FILE_LIMIT`` bytes, never through
    a symbolic link, a regular file only (``OSError`` else; review: read unbounded through
    links before)."""
    return read_bounded(path, pki.CA_FILE_LIMIT, "a PEM file", own=True)


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
    "check_patroni_https",
    "client_context",
    "client_settings",
    "etcd_tls_args",
    "node_tls",
    "patroni_etcd",
    "patroni_restapi",
    "pg_hba",
    "prepare",
    "prepare_frontend",
    "prepare_node",
    "server_parameters",
    "supervisor_tls",
]
