"""How a merchant client authenticates: a secret API key (``Authorization: Bearer``, the
scopes it was given) or the merchant's signing key (every request signed, every scope).

    MerchantClient(url, merchant_id, SecretKey("sk_live_..."), trust)   # API key
    MerchantClient(url, merchant_id, signing_key, trust)                # signed requests
"""

from __future__ import annotations

from dataclasses import dataclass, field

from safescan.api.api_keys import parse_key
from safescan.api.merchant_auth import H_IDEMPOTENCY, sign_request
from safescan.code.keys import SigningKey


@dataclass(frozen=True)
class SecretKey:
    """A merchant's secret API key (``sk_live_<id>_<secret>``; checked for form here)."""

    key: str = field(repr=False)

    def __post_init__(self) -> None:
        parse_key(self.key)  # InvalidApiKey for a malformed key

    @property
    def key_id(self) -> str:
        """The key's public id (as key lists show it)."""
        return parse_key(self.key)

    def __repr__(self) -> str:
        return f"SecretKey(sk_live_{self.key_id}_...)"


MerchantCredential = SigningKey | SecretKey


def auth_headers(
    credential: MerchantCredential,
    merchant_id: str,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    idempotency_key: str | None = None,
) -> dict[str, str]:
    """The headers that authenticate one request (``path`` with its query string), the
    Idempotency-Key among them (signed, for a signing key)."""
    if isinstance(credential, SecretKey):
        headers = {"Authorization": f"Bearer {credential.key}"}
        if idempotency_key is not None:
            headers[H_IDEMPOTENCY] = idempotency_key
        return headers
    return sign_request(
        credential, merchant_id, method, path, body, idempotency_key=idempotency_key
    )


__all__ = ["MerchantCredential", "SecretKey", "auth_headers"]
