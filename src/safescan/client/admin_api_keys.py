"""``/v1/admin/merchants/{id}/api-keys``: a merchant's secret API keys, by the administrator.

The same answers as the merchant's own ``/v1/merchant/api-keys`` (:mod:`.merchant`): a new key
(``key``, the secret) is in the creation or rotation answer only. Creation and rotation carry
an ``Idempotency-Key``: sent again with it, the request makes nothing new and the institution
answers ``api_key_already_created`` naming the key made (the secret is never stored).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any

from safescan.api.errors import InvalidRequest
from safescan.client.answers_merchant import ApiKeyInfo, ApiKeyList, NewApiKey
from safescan.client.http import InstitutionHttp, JsonDoc
from safescan.client.merchant import _key_id, _new_key_request

_BASE = "/v1/admin/merchants"


def _merchant(merchant_id: str) -> str:
    """A merchant id safe in a path (no ``/``, ``.``, ``?``, ``%``), or InvalidRequest."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", merchant_id):
        raise InvalidRequest(f"not a merchant id: {merchant_id!r}", param="merchant_id")
    return merchant_id


class AdminApiKeyService:
    """A merchant's API keys: create, list, rotate, revoke (administrator token)."""

    def __init__(self, http: InstitutionHttp, auth: dict[str, str]) -> None:
        self._http, self._auth = http, auth

    def _call(self, method: str, path: str, payload: Any = None, key: str | None = None) -> JsonDoc:
        headers = dict(self._auth)
        if key is not None:
            headers["Idempotency-Key"] = key
        return self._http.call_object(method, path, payload, headers=headers)

    def create(
        self,
        merchant_id: str,
        scopes: Sequence[str],
        *,
        name: str | None = None,
        expires_in: int | None = None,
        idempotency_key: str | None = None,
    ) -> NewApiKey:
        """A new key for the merchant with ``scopes`` (``key``: the secret, shown this once)."""
        payload, key = _new_key_request(scopes, name, expires_in, idempotency_key)
        path = f"{_BASE}/{_merchant(merchant_id)}/api-keys"
        return NewApiKey.from_json(self._call("POST", path, payload, key))

    def list(self, merchant_id: str) -> ApiKeyList:
        """The merchant's keys: prefix, scopes, state, dates, last use; never a secret."""
        path = f"{_BASE}/{_merchant(merchant_id)}/api-keys"
        return ApiKeyList.from_json(self._call("GET", path))

    def rotate(
        self,
        merchant_id: str,
        key_id: str,
        grace_seconds: int,
        *,
        idempotency_key: str | None = None,
    ) -> NewApiKey:
        """A replacement key (``key``, shown once); the old one works ``grace_seconds`` more."""
        path = f"{_BASE}/{_merchant(merchant_id)}/api-keys/{_key_id(key_id)}/rotate"
        key = idempotency_key or "rot-" + secrets.token_urlsafe(16)
        return NewApiKey.from_json(self._call("POST", path, {"grace_seconds": grace_seconds}, key))

    def revoke(self, merchant_id: str, key_id: str) -> ApiKeyInfo:
        """Revoke a key now."""
        path = f"{_BASE}/{_merchant(merchant_id)}/api-keys/{_key_id(key_id)}/revoke"
        return ApiKeyInfo.from_json(self._call("POST", path))


__all__ = ["AdminApiKeyService"]
