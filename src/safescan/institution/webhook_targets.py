"""Where a webhook may go: strict URL rules at registration, address rules on every connection.

A webhook URL is an instruction from a merchant to make the institution send requests: left
unchecked it reaches the institution's own network (loopback services, cloud metadata on
169.254.169.254, databases on RFC 1918 addresses). Two checks, both from :class:`TargetPolicy`:

* :meth:`TargetPolicy.check_registration` when a URL is set: the URL's syntax (one unambiguous
  reading: canonical dotted-quad IPv4, bracketed IPv6 or an ASCII DNS name; no user information,
  fragment, backslash or control character; ``https`` unless the operator allows ``http``), then
  the address(es) it names, after DNS resolution.
* :meth:`TargetPolicy.refusal` on every address the dispatcher is about to connect to (the
  resolver's answer at that moment: DNS rebinding after registration is caught there; the
  connection goes to that exact address, see :mod:`.webhook_transport`).

Refused unless the operator allow-lists their network: unspecified, loopback, private (RFC 1918,
ULA), shared (CGNAT), link-local (cloud metadata), documentation, benchmarking, reserved,
broadcast and multicast addresses, and every IPv6 form that embeds or tunnels to an IPv4 address
(IPv4-mapped, IPv4-compatible, IPv4-translated, 6to4, Teredo; NAT64 only when the embedded IPv4
address is itself refused). An allow-list entry matches its own address family only: allowing
``127.0.0.1`` does not allow ``::ffff:127.0.0.1``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from safescan.api.errors import ConfigError, WebhookUrlRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: ``resolver(host, port)`` -> the addresses a DNS name stands for (raises OSError on failure).
Resolver = Callable[[str, int], Sequence[str]]

MAX_URL = 512  # the database column
DEFAULT_PORTS = {"https": 443, "http": 80}
#: special-use DNS names (RFC 6761, 6762, 7686, 9476): never public receivers
SPECIAL_SUFFIXES = ("localhost", "local", "internal", "onion", "invalid", "arpa", "alt")

_N = ipaddress.ip_network
#: refused networks with the reason given (first match wins; checked before ``is_global``,
#: which misses several of them in Python 3.11)
DENIED: tuple[tuple[IPNetwork, str], ...] = (
    (_N("0.0.0.0/8"), "an unspecified ('this network') address"),
    (_N("10.0.0.0/8"), "a private (RFC 1918) address"),
    (_N("100.64.0.0/10"), "a shared (carrier-grade NAT) address"),
    (_N("127.0.0.0/8"), "a loopback address"),
    (_N("169.254.0.0/16"), "a link-local address (cloud metadata lives there)"),
    (_N("172.16.0.0/12"), "a private (RFC 1918) address"),
    (_N("192.0.0.0/24"), "an IETF protocol assignment"),
    (_N("192.0.2.0/24"), "a documentation address"),
    (_N("192.88.99.0/24"), "a 6to4 relay address"),
    (_N("192.168.0.0/16"), "a private (RFC 1918) address"),
    (_N("198.18.0.0/15"), "a benchmarking address"),
    (_N("198.51.100.0/24"), "a documentation address"),
    (_N("203.0.113.0/24"), "a documentation address"),
    (_N("224.0.0.0/4"), "a multicast address"),
    (_N("255.255.255.255/32"), "the broadcast address"),
    (_N("240.0.0.0/4"), "a reserved address"),
    (_N("::/128"), "the unspecified address"),
    (_N("::1/128"), "a loopback address"),
    (_N("::ffff:0:0/96"), "an IPv4-mapped IPv6 address"),
    (_N("::/96"), "an IPv4-compatible IPv6 address"),
    (_N("::ffff:0:0:0/96"), "an IPv4-translated IPv6 address"),
    (_N("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (_N("100::/64"), "a discard-only address"),
    (_N("2001::/32"), "a Teredo tunnel address"),
    (_N("2001::/23"), "an IETF protocol assignment"),
    (_N("2001:db8::/32"), "a documentation address"),
    (_N("2002::/16"), "a 6to4 address"),
    (_N("3fff::/20"), "a documentation address"),
    (_N("5f00::/16"), "a segment-routing address"),
    (_N("fc00::/7"), "a unique local (private) address"),
    (_N("fe80::/10"), "a link-local address"),
    (_N("fec0::/10"), "a site-local address"),
    (_N("ff00::/8"), "a multicast address"),
)
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_CANONICAL_V4 = re.compile(
    r"^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$"
)
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9A-Fa-f]*)$")
_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PCHARS = r"A-Za-z0-9\-._~!$&'()*+,;=:@/%"
_PATH = re.compile(rf"^(?:/[{_PCHARS}]*)?(?:\?[{_PCHARS}?]*)?$")


@dataclass(frozen=True)
class WebhookTarget:
    """A parsed, normalised webhook URL (syntax checked; addresses not yet)."""

    url: str  # normalised: lower-case scheme and host, default port omitted
    scheme: str
    host: str  # a DNS name, or an IP address without brackets
    port: int
    target: str  # path and query, at least "/"
    literal: IPAddress | None  # the address when the host is an IP literal

    @property
    def host_header(self) -> str:
        """The ``Host`` header value (and the name TLS verifies)."""
        host = f"[{self.host}]" if isinstance(self.literal, ipaddress.IPv6Address) else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def _refuse(message: str) -> WebhookUrlRefused:
    return WebhookUrlRefused(message, param="url")


def parse_webhook_url(url: object, *, allow_http: bool = False) -> WebhookTarget:
    """Check a webhook URL's syntax; the normalised target (raises :class:`WebhookUrlRefused`)."""
    if not isinstance(url, str) or not url:
        raise _refuse("the webhook URL must be a non-empty string")
    if len(url) > MAX_URL:
        raise _refuse(f"the webhook URL is longer than {MAX_URL} characters")
    if any(not 0x21 <= ord(c) <= 0x7E for c in url):
        raise _refuse(
            "the webhook URL may hold printable ASCII only (no spaces, control characters or"
            " non-ASCII letters: write international names in their xn-- form)"
        )
    if "\\" in url or "#" in url:
        raise _refuse("the webhook URL may not contain a backslash or a fragment ('#')")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise _refuse("the webhook URL must start with https://")
    if scheme == "http" and not allow_http:
        raise _refuse("the webhook URL must use https (plain http is not enabled here)")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, target = rest[:cut], rest[cut:]
    if "@" in authority:
        raise _refuse("the webhook URL may not contain user information ('user@host')")
    if not authority:
        raise _refuse("the webhook URL has no host")
    host, port = _split_authority(authority, scheme)
    literal = _literal(host)
    if literal is None:
        host = _dns_name(host)
    if target.startswith("?"):
        target = "/" + target
    if not target:
        target = "/"
    if not _PATH.match(target) or _PCT.search(target):
        raise _refuse("the webhook URL's path or query holds a character that must be %-encoded")
    shown = f"[{literal}]" if isinstance(literal, ipaddress.IPv6Address) else host
    norm = f"{scheme}://{shown}" + ("" if port == DEFAULT_PORTS[scheme] else f":{port}") + target
    if len(norm) > MAX_URL:
        raise _refuse(f"the webhook URL is longer than {MAX_URL} characters")
    return WebhookTarget(norm, scheme, str(literal) if literal else host, port, target, literal)


def _split_authority(authority: str, scheme: str) -> tuple[str, int]:
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise _refuse("the webhook URL has an unclosed '[' in its host")
        host, after = authority[: end + 1], authority[end + 1 :]
        if after and not after.startswith(":"):
            raise _refuse("the webhook URL has text after its IPv6 host")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text_ = authority.partition(":")
        port_text = port_text_ if colon else None
        if ":" in port_text_:
            raise _refuse("an IPv6 host must be written in brackets: https://[2001:db8::1]/")
    if port_text is None:
        return host, DEFAULT_PORTS[scheme]
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise _refuse("the webhook URL's port must be a number from 1 to 65535")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise _refuse("the webhook URL's port must be a number from 1 to 65535")
    if port < 1024 and port not in (80, 443):
        raise _refuse("the webhook URL's port must be 80, 443 or 1024 and above")
    return host, port


def _literal(host: str) -> IPAddress | None:
    """The IP address a host literal names; None for a DNS name; refuses ambiguous forms."""
    if host.startswith("["):
        inner = host[1:-1]
        if "%" in inner:
            raise _refuse("the webhook URL's IPv6 host may not carry a zone ('%')")
        try:
            return ipaddress.IPv6Address(inner)
        except ValueError:
            raise _refuse("the webhook URL's bracketed host is not an IPv6 address") from None
    if _CANONICAL_V4.match(host):
        return ipaddress.IPv4Address(host)
    last = host[:-1].rsplit(".", 1)[-1] if host.endswith(".") else host.rsplit(".", 1)[-1]
    if _NUMERIC_LABEL.match(last):  # browsers and resolvers read this as an IPv4 address
        raise _refuse(
            "the webhook URL's host is a number in a non-standard form (decimal, octal, hex or"
            " shortened): write an IPv4 address as four decimal numbers, e.g. 203.0.113.7"
        )
    return None


def _dns_name(host: str) -> str:
    name = host.lower()
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(x) for x in labels):
        raise _refuse(
            "the webhook URL's host must be a full DNS name (labels of letters, digits and"
            " hyphens, at least one dot, no trailing dot) or an IP address"
        )
    if labels[-1] in SPECIAL_SUFFIXES:
        raise _refuse(f"the webhook URL's host is a special-use name (.{labels[-1]})")
    return name


def address_refusal(ip: IPAddress, allow: Sequence[IPNetwork] = ()) -> str | None:
    """Why ``ip`` may not receive webhooks (None when it may)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return "a scoped IPv6 address"
    if any(ip.version == net.version and ip in net for net in allow):
        return None
    for net, why in DENIED:
        if ip.version == net.version and ip in net:
            return why
    if isinstance(ip, ipaddress.IPv6Address) and ip in NAT64:
        # the embedded IPv4 address is judged alone: an allow-list entry never extends to it
        inner = address_refusal(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return None if inner is None else f"a NAT64 address of {inner}"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a public address"
    return None


def parse_allow_list(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Operator allow-list entries (``10.1.2.0/24``, ``127.0.0.1``, ``fd00::/8``)."""
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=True))
        except ValueError as exc:
            raise ConfigError(f"bad webhook allow-list entry {entry!r}: {exc}") from None
    return tuple(out)


def system_resolver(host: str, port: int) -> list[str]:
    """The system resolver (``getaddrinfo``): every TCP address of ``host``."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    seen: dict[str, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


class TargetPolicy:
    """The operator's webhook target rules: schemes, allow-listed networks, the resolver."""

    def __init__(
        self,
        *,
        allow: Iterable[str] = (),
        allow_http: bool = False,
        resolver: Resolver = system_resolver,
        resolve_timeout: float = 3.0,
    ) -> None:
        self.allow = parse_allow_list(allow)
        self.allow_http = allow_http
        self.resolver = resolver
        self.resolve_timeout = resolve_timeout
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def parse(self, url: object) -> WebhookTarget:
        """Syntax check (see :func:`parse_webhook_url`)."""
        return parse_webhook_url(url, allow_http=self.allow_http)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why ``ip`` may not be connected to (None when it may)."""
        return address_refusal(ip, self.allow)

    def check_addresses(self, target: WebhookTarget, answers: Sequence[str]) -> list[IPAddress]:
        """Parse a resolver's answers and refuse the lot if any one is refused."""
        if not answers:
            raise _refuse(f"the webhook host {target.host} has no address")
        addresses: list[IPAddress] = []
        for text in answers:
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                raise _refuse(f"the webhook host {target.host} resolved to a non-address") from None
            why = self.refusal(ip)
            if why is not None:
                shown = target.host if target.literal is not None else f"{target.host} ({ip})"
                raise _refuse(f"the webhook host {shown} is {why}")
            addresses.append(ip)
        return addresses

    def resolve(self, target: WebhookTarget) -> list[IPAddress]:
        """The checked addresses of ``target`` now (blocking, at most ``resolve_timeout``)."""
        if target.literal is not None:
            return self.check_addresses(target, [str(target.literal)])
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(4, thread_name_prefix="safescan-webhook-dns")
            pool = self._pool
        future = pool.submit(self.resolver, target.host, target.port)
        try:
            answers = future.result(timeout=self.resolve_timeout)
        except FutureTimeout:
            raise _refuse(f"the webhook host {target.host} did not resolve in time") from None
        except (OSError, UnicodeError, ValueError):
            raise _refuse(f"the webhook host {target.host} does not resolve") from None
        return self.check_addresses(target, answers)

    def check_registration(self, url: object) -> str:
        """Registration check: syntax, then every address the host resolves to now.

        Returns the normalised URL to store."""
        target = self.parse(url)
        self.resolve(target)
        return target.url
