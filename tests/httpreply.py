"""One whole answer of a test's own HTTP handler (http.server): the status line, the headers,
Content-Length, the body."""

from __future__ import annotations

from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler


def send_answer(
    handler: BaseHTTPRequestHandler, status: int, headers: Mapping[str, str], body: bytes
) -> None:
    """Answer ``handler``'s request with ``status``, ``headers`` and ``body`` (its length
    said, so a keep-alive connection knows where the answer ends)."""
    handler.send_response(status)
    for k, v in headers.items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
