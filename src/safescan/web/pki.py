"""A private certificate authority for safescan's HTTPS hops, and the pinned client side.

``safescan institution init`` makes a CA (ECDSA P-256, ``cryptography``'s x509 builder) and a
server certificate it signs (SANs: 127.0.0.1, ::1, localhost and the configured names). Clients
trust *only* that CA (:func:`client_context`: the CA file pinned when the merchant or wallet
was set up, optionally checked against its SHA-256 fingerprint); hostname checking stays on and
verification is never turned off.

Keys at rest: the CA's private key (it signs certificates every client of the deployment
trusts, for ten years) is sealed under the institution's passphrase with scrypt and AES-256-GCM
(:func:`safescan.code.keyfile.seal_der`, as the institution's other keys), and is opened only to
issue a certificate. A CA key written in clear by an older release (0600 PEM) still loads. The
server's key stays a 0600 PEM: every server process (each ``--workers`` process, the web POS,
HAProxy and etcd in the cluster) loads it at every start, unattended, and it only proves the
name for one certificate's life (397 days at most); a stolen one is replaced with ``tls issue``
without any client changing, since clients pin the CA, not the server key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from safescan.code import keyfile
from safescan.code.atomicfile import write_atomic
from safescan.code.errors import KeyFileError, SafescanError
from safescan.code.keys import KEY_FILE_LIMIT
from safescan.code.rekeying import recover_if_interrupted
from safescan.code.smallfile import read_bounded

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
SERVER_DAYS = 397  # the CA/Browser Forum's ceiling for a server certificate


class TlsTrustError(SafescanError):
    """A CA to pin is missing, unreadable, not a CA, or not the expected one."""

    code = "tls_trust_error"


class CertificateNameError(SafescanError):
    """A name for a server certificate is neither a DNS name nor an IP address."""

    code = "certificate_name_error"


@dataclass(frozen=True)
class TlsDir:
    """The files ``institution init`` writes (``<key directory>.tls/`` by default)."""

    path: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate clients pin (public)."""
        return self.path / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The CA's private key (0600, sealed under the passphrase; needed only to issue
        server certificates)."""
        return self.path / "ca.key"

    @property
    def server_cert(self) -> Path:
        """The server certificate chain (server, then CA)."""
        return self.path / "server.pem"

    @property
    def server_key(self) -> Path:
        """The server certificate's private key (0600)."""
        return self.path / "server.key"

    def exists(self) -> bool:
        """Whether a server certificate and key are there."""
        return self.server_cert.is_file() and self.server_key.is_file()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(
    common_name: str = "safescan private CA",
    *,
    not_before: dt.datetime | None = None,
    days: int = CA_DAYS,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate (path length 0: it signs server certificates only)."""
    key = _key()
    start = not_before or _now() - dt.timedelta(minutes=5)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def san_entries(names: tuple[str, ...] | list[str]) -> list[x509.GeneralName]:
    """DNS names and IP addresses as subject-alternative-name entries (duplicates dropped)."""
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in names:
        name = raw.strip()
        if not name or name.lower() in seen:
            continue
        seen.add(name.lower())
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        labels = name.rstrip(".").split(".")
        if not all(
            0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
            for label in labels
        ):
            raise CertificateNameError(f"{name[:80]!r} is neither a DNS name nor an IP address")
        out.append(x509.DNSName(name.rstrip(".").lower()))
    return out


def make_server_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: tuple[str, ...] | list[str] = DEFAULT_NAMES,
    *,
    not_before: dt.datetime | None = None,
    days: int = SERVER_DAYS,
    client_auth: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server certificate for ``names`` (DNS names and IP addresses), signed by the CA
    (``client_auth``: usable as a TLS client certificate as well, e.g. between etcd members)."""
    sans = san_entries(names)
    if not sans:
        raise CertificateNameError("a server certificate needs at least one name")
    key = _key()
    start = not_before or _now() - dt.timedelta(minutes=5)
    first = names[0] if names else "safescan"
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(first)[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH]
                + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [])
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def cert_pem(cert: x509.Certificate) -> bytes:
    """PEM encoding of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (written only to 0600 files)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as a 0600 file, atomically (code/atomicfile.write_atomic):
    an existing file is replaced whole, never truncated or left with its old mode, since
    rotation (:func:`issue_server_files`) and sealing (:func:`seal_ca_key`) overwrite on
    purpose; refusing a directory that already holds a CA is :func:`create_tls_dir`'s job.
    The parent directory is created 0700 if missing."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data)


def create_tls_dir(
    target: TlsDir, names: tuple[str, ...] | list[str] = (), *, passphrase: bytes | None = None
) -> TlsDir:
    """A new CA and a server certificate for the default names plus ``names`` in ``target``;
    refuses a directory that already holds a CA. With ``passphrase`` (the institution's) the CA
    key is sealed under it; without (a test's or the HA cluster's own CA) it is a 0600 PEM."""
    if target.ca_cert.exists() or target.ca_key.exists():
        raise TlsTrustError(f"{target.path} already holds a CA")
    all_names = [*DEFAULT_NAMES, *names]
    san_entries(all_names)  # a bad name fails before anything is written
    ca, ca_key = make_ca()
    write_private(target.ca_key, ca_key_file(ca_key, passphrase))
    write_private(target.ca_cert, cert_pem(ca))
    os.chmod(target.ca_cert, 0o644)
    issue_server_cert(target, all_names, passphrase=passphrase)
    return target


def ca_key_file(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None) -> bytes:
    """The CA key file's bytes: sealed under ``passphrase``, or PEM in clear without one."""
    if passphrase is None:
        return key_pem(key)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return keyfile.seal_der(der, passphrase)


def ca_key_sealed(ca_dir: TlsDir) -> bool:
    """Whether the CA key in ``ca_dir`` is sealed (needs the passphrase to issue)."""
    try:
        return keyfile.is_sealed(read_bounded(ca_dir.ca_key, KEY_FILE_LIMIT, "a key file"))
    except FileNotFoundError:
        return False


def load_ca_key(ca_dir: TlsDir, passphrase: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """The CA's private key: sealed (``passphrase`` needed: :class:`KeyFileError` without it
    or with a wrong one), or a clear PEM written by an older release; :class:`TlsTrustError`
    if it is missing or not an EC key."""
    recover_if_interrupted(ca_dir.path)  # a rekey killed midway: the key as it was
    try:
        data = read_bounded(ca_dir.ca_key, KEY_FILE_LIMIT, "a key file")
    except FileNotFoundError:
        raise TlsTrustError(f"the CA key {ca_dir.ca_key} is missing") from None
    except OSError as exc:
        raise TlsTrustError(f"cannot read the CA key {ca_dir.ca_key}: {exc.strerror}") from None
    if keyfile.is_sealed(data):
        if not passphrase:
            raise KeyFileError(
                f"the CA key {ca_dir.ca_key} is sealed: the institution's passphrase is needed"
            )
        der = keyfile.unseal_der(data, passphrase)
        try:
            key = serialization.load_der_private_key(der, None)
        except (ValueError, TypeError):
            raise KeyFileError(f"{ca_dir.ca_key}: the sealed key is not PKCS#8") from None
    else:
        try:
            key = serialization.load_pem_private_key(data, None)
        except (ValueError, TypeError) as exc:
            raise TlsTrustError(f"{ca_dir.ca_key} is not a usable CA key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsTrustError(f"{ca_dir.ca_key} is not an EC key")
    return key


def seal_ca_key(ca_dir: TlsDir, passphrase: bytes) -> bool:
    """Seal a CA key written in clear (by an older release) under ``passphrase``, atomically;
    True if it was sealed now, False if it already was (it must then open under
    ``passphrase``: :class:`KeyFileError` otherwise). The CA key is read back before the
    function returns."""
    key = load_ca_key(ca_dir, passphrase)
    if ca_key_sealed(ca_dir):
        return False
    write_private(ca_dir.ca_key, ca_key_file(key, passphrase))
    if load_ca_key(ca_dir, passphrase).public_key() != key.public_key():
        raise TlsTrustError(f"{ca_dir.ca_key} did not read back as the key just sealed")
    return True


def issue_server_cert(
    target: TlsDir, names: tuple[str, ...] | list[str], *, passphrase: bytes | None = None
) -> x509.Certificate:
    """A new server certificate from the CA in ``target`` (rotation: clients pin the CA, so
    they accept it without any change); replaces server.pem and server.key atomically
    (``passphrase``: to open a sealed CA key)."""
    return issue_server_files(
        target, target.server_cert, target.server_key, names, passphrase=passphrase
    )


def issue_server_files(
    ca_dir: TlsDir,
    cert_path: Path,
    key_path: Path,
    names: tuple[str, ...] | list[str],
    *,
    client_auth: bool = False,
    passphrase: bytes | None = None,
) -> x509.Certificate:
    """A server certificate from the CA in ``ca_dir`` written to ``cert_path`` (chain: the
    certificate, then the CA) and ``key_path`` (0600): another server of the same deployment
    (the web POS, an API node behind a proxy) that clients verify with the same pinned CA
    (``passphrase``: to open a sealed CA key, :func:`load_ca_key`)."""
    ca = load_ca(ca_dir.ca_cert)
    ca_key = load_ca_key(ca_dir, passphrase)
    cert, key = make_server_cert(ca, ca_key, list(names), client_auth=client_auth)
    write_private(key_path, key_pem(key))
    write_private(cert_path, cert_pem(cert) + cert_pem(ca))
    return cert


def load_ca(path: Path) -> x509.Certificate:
    """The CA certificate in ``path`` (PEM); a :class:`TlsTrustError` if it is not one."""
    data = _read_ca_file(Path(path))
    if not data.strip():
        raise TlsTrustError(f"the CA certificate file {path} is empty: expected a PEM certificate")
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise TlsTrustError(f"{path} is not a PEM certificate") from None
    _require_ca(cert, str(path))
    return cert


#: the most a CA certificate file may hold (a PEM certificate is a few KiB)
CA_FILE_LIMIT = 1 << 20


def _read_ca_file(path: Path) -> bytes:
    """The bytes of the CA file ``path`` (at most :data:`CA_FILE_LIMIT`), else a
    :class:`TlsTrustError` (a directory; ``/dev/zero`` or a huge file, read whole before)."""
    from safescan.code.smallfile import read_bounded

    try:
        return read_bounded(path, CA_FILE_LIMIT, "a PEM certificate")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise TlsTrustError(f"cannot read the CA certificate {path}: {reason}") from None


def _require_ca(cert: x509.Certificate, where: str) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise TlsTrustError(f"{where} is not a CA certificate") from None
    if not constraints.ca:
        raise TlsTrustError(f"{where} is not a CA certificate")


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def ca_fingerprint(path: Path) -> str:
    """:func:`fingerprint` of the CA certificate in ``path``."""
    return fingerprint(load_ca(path))


def client_context(ca_file: Path, expected_sha256: str | None = None) -> ssl.SSLContext:
    """An SSL context trusting only the CA in ``ca_file`` (not the system's CAs), hostname
    checked, TLS 1.2 at least. With ``expected_sha256`` the file must be that very CA."""
    return context_for_ca(load_ca(ca_file), expected_sha256, str(ca_file))


def ca_from_pem(pem: str | bytes, where: str = "the pinned CA") -> x509.Certificate:
    """The CA certificate in ``pem`` (as stored in a configuration file)."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    except ValueError:
        raise TlsTrustError(f"{where} is not a PEM certificate") from None
    _require_ca(cert, where)
    return cert


def context_for_ca(
    ca: x509.Certificate, expected_sha256: str | None = None, where: str = "the CA"
) -> ssl.SSLContext:
    """:func:`client_context` for a loaded CA certificate."""
    if expected_sha256 is not None and fingerprint(ca) != expected_sha256.lower():
        raise TlsTrustError(
            f"{where} is not the CA pinned at set-up (SHA-256 {expected_sha256[:16]}...)"
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=cert_pem(ca).decode())
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    return ctx


# --- the pins of this process: which CA each institution URL is verified with -------------

ENV_CA = "SAFESCAN_TLS_CA"  # a CA file every https:// hop of this process is verified with


class InsecureUrl(SafescanError):
    """A plain ``http://`` URL to a host that is not loopback (nothing would protect it)."""

    code = "insecure_url"


@dataclass(frozen=True)
class Hop:
    """One HTTP hop this process made: the origin, and whether it was TLS checked against a
    pinned CA (``verified``)."""

    origin: str
    tls: bool
    verified: bool


_PINS: dict[str, ssl.SSLContext] = {}
_HOPS: dict[str, Hop] = {}


class InvalidUrl(SafescanError):
    """An institution URL that is not ``http(s)://host[:port][/path]``: another scheme, no host,
    a bad port or IPv6 literal, or user information (a password in a URL ends up in shell
    histories, process lists and error messages)."""

    code = "invalid_url"


def origin_of(url: str) -> str:
    """``scheme://host:port`` of ``url`` (default ports filled in), lower case;
    :class:`InvalidUrl` for anything but an ``http(s)://host[:port]`` URL."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError as exc:  # an unclosed IPv6 literal, a port not a number or out of range
        raise InvalidUrl(f"not a usable URL ({exc}): use https://host[:port]") from None
    if parts.username is not None or parts.password is not None:
        raise InvalidUrl("the URL holds user information (user:password@): leave it out")
    if scheme not in ("http", "https") or not host:
        shown = f"{scheme}://" if scheme else "no scheme"
        raise InvalidUrl(f"not an http(s) URL with a host ({shown}): use https://host[:port]")
    port = port or (443 if scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def pin(url: str, ca_file: Path, expected_sha256: str | None = None) -> ssl.SSLContext:
    """Verify every connection of this process to ``url``'s origin with the CA in ``ca_file``
    only (checked against ``expected_sha256`` if given); returns the context."""
    return pin_ca(url, load_ca(ca_file), expected_sha256)


def pin_ca(url: str, ca: x509.Certificate, expected_sha256: str | None = None) -> ssl.SSLContext:
    """:func:`pin` for a loaded CA certificate (from a configuration file's PEM)."""
    ctx = context_for_ca(ca, expected_sha256, "the CA")
    _PINS[origin_of(url)] = ctx
    return ctx


def verify_for(url: str) -> ssl.SSLContext | bool:
    """What an ``httpx`` client for ``url`` passes as ``verify``: the pinned CA of its origin,
    else ``$SAFESCAN_TLS_CA``, else the system's CAs (``True``). Never ``False``; a plain
    ``http://`` URL is accepted for loopback hosts only (:class:`InsecureUrl`)."""
    origin = origin_of(url)
    if origin.startswith("http://"):
        host = origin[len("http://") :].rsplit(":", 1)[0].strip("[]")
        from safescan.web.tls import is_loopback

        if not is_loopback(host):
            raise InsecureUrl(f"{origin} is plain HTTP off loopback: use https://")
        return True
    if origin in _PINS:
        return _PINS[origin]
    env = os.environ.get(ENV_CA)
    if env is not None:
        try:
            return pin(url, env_ca_file(env))
        except TlsTrustError as exc:
            if exc.message.startswith(f"${ENV_CA}"):
                raise
            raise TlsTrustError(f"${ENV_CA}: {exc.message}") from None
    return True


def env_ca_file(value: str) -> Path:
    """The CA file ``$SAFESCAN_TLS_CA`` names; :class:`TlsTrustError` when it is set but empty
    or blank (before: silently the system's CAs, then an unclear certificate failure)."""
    if not value.strip():
        raise TlsTrustError(
            f"${ENV_CA} is set but empty: point it at the institution's CA certificate"
            " (PEM file) or unset it"
        )
    return Path(value)


def record_hop(url: str) -> None:
    """Note that this process made an HTTP request to ``url`` (see :func:`hops`)."""
    origin = origin_of(url)
    tls = origin.startswith("https://")
    _HOPS[origin] = Hop(origin, tls, tls and origin in _PINS)


def hops() -> list[Hop]:
    """The origins this process sent requests to, with how each was protected."""
    return list(_HOPS.values())


def all_verified(made: list[Hop]) -> bool:
    """True when there was at least one hop and every one was TLS checked against a pinned CA."""
    return bool(made) and all(h.tls and h.verified for h in made)
