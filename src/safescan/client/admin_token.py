"""The administrator token as a user gives it (a file or ``$SAFESCAN_ADMIN_TOKEN``), checked
before any request; no HTTP client here, so a command line that refuses a missing or malformed
token never imports one (:mod:`safescan.client.admin` re-exports these names)."""

from __future__ import annotations

import os
from pathlib import Path

from safescan.api.errors import Unauthenticated
from safescan.code.smallfile import read_small_text

ENV_ADMIN_TOKEN = "SAFESCAN_ADMIN_TOKEN"  # noqa: S105 - a variable name

__all__ = ["ENV_ADMIN_TOKEN", "MAX_ADMIN_TOKEN", "check_admin_token", "read_admin_token"]


def read_admin_token(path: Path | None) -> str:
    """The administrator token from a file (first line) or ``$SAFESCAN_ADMIN_TOKEN``."""
    if path is not None:
        try:
            lines = read_small_text(path).splitlines()
        except OSError as exc:
            raise Unauthenticated(f"cannot read the token file {path}: {exc.strerror}") from None
        token = lines[0].strip() if lines else ""
    else:
        token = os.environ.get(ENV_ADMIN_TOKEN, "").strip()
    if not token:
        raise Unauthenticated(
            f"give the administrator token with --admin-token-file FILE or ${ENV_ADMIN_TOKEN}"
            " (`safescan institution init` printed it)"
        )
    check_admin_token(token)
    return token


#: the longest administrator token accepted from a user (``adm_`` + 43 base64url characters
#: are made; anything this long is a pasted file, not a token)
MAX_ADMIN_TOKEN = 256


def check_admin_token(token: str) -> None:
    """:class:`Unauthenticated` unless ``token`` is printable ASCII without spaces (what an HTTP
    header can carry) and at most :data:`MAX_ADMIN_TOKEN` characters; the token is never
    quoted (it is a secret)."""
    if not token or len(token) > MAX_ADMIN_TOKEN:
        raise Unauthenticated(
            f"the administrator token is malformed: it must be 1 to {MAX_ADMIN_TOKEN} characters"
        )
    if not all("!" <= ch <= "~" for ch in token):
        raise Unauthenticated(
            "the administrator token is malformed: it holds a space, a control character or a"
            " character outside ASCII (check the file or variable it came from)"
        )
