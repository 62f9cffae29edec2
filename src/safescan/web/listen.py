"""The listening socket of a local web server, bound before the server starts.

Binding first gives the real port at once (``--port 0``: any free port), so the server can
print it and build its Host allow-list for it before serving.
"""

from __future__ import annotations

import socket

from safescan.code.errors import SafescanError


def listen(
    host: str, port: int, *, error: type[SafescanError], backlog: int = 128
) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening; ``error`` (the caller's own type)
    with the system's reason if that address cannot be used."""
    if not 0 <= port <= 65535:  # bind() raised OverflowError: a traceback
        raise error(f"cannot listen on port {port}: a TCP port is 0-65535 (0: any free port)")
    if not host or any(ord(c) < 0x21 or ord(c) == 0x7F for c in host) or len(host) > 253:
        raise error(f"cannot listen on {host!r}: not a host name or address")  # bind: TypeError
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except (OSError, UnicodeError, TypeError) as exc:  # gaierror is an OSError; IDNA is not
        sock.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise error(f"cannot listen on {host}:{port}: {reason}") from None
    return sock
