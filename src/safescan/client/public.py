"""The institution's public documents, shared by every caller: its root keys, the signed
scheme key list and the signed revocation lists."""

from __future__ import annotations

from typing import Literal

from safescan.client.answers import PublicKeys
from safescan.client.errors import InstitutionProtocolError
from safescan.client.http import InstitutionHttp
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError
from safescan.code.keys import VerifyKey

KEYS = "/v1/keys"
REVOCATION_LIST = "/v1/revocation-list"

RevocationScope = Literal["all", "merchant"]


class KeyService:
    """``GET /v1/keys``: the institution's published keys."""

    def __init__(self, http: InstitutionHttp) -> None:
        self._http = http

    def document(self) -> PublicKeys:
        """The key document as published (root keys, live scheme keys, the signed scheme key
        list, the epoch)."""
        return PublicKeys.from_json(self._http.call_object("GET", KEYS))

    def root_keys(self) -> TrustStore:
        """The institution's root keys (trust on first use; pin them after)."""
        published = self.document().root_keys
        try:
            keys = {k.kid: VerifyKey(k.public_key) for k in published}
        except SafescanError:  # not an Ed25519 public key
            raise InstitutionProtocolError("the institution's key list is malformed") from None
        if not keys:
            raise InstitutionProtocolError("the institution published no root key")
        return TrustStore(keys)

    def current_scheme_key(self) -> tuple[int, bytes]:
        """The current scheme key (key id, X25519 public key): codes are sealed to it."""
        for k in self.document().scheme_keys:
            if k.current:
                return k.kid, k.public_key
        raise InstitutionProtocolError("the institution publishes no current scheme key")

    def scheme_key_list(self) -> bytes:
        """The institution-signed scheme key list (CBOR; verify before use)."""
        return self.document().scheme_key_list


class RevocationService:
    """``GET /v1/revocation-list``: the signed revocation list (CBOR; verify before use)."""

    def __init__(self, http: InstitutionHttp) -> None:
        self._http = http

    def signed(self, scope: RevocationScope = "all") -> bytes:
        """The signed list: every revocation, or (``scope="merchant"``) the merchant-scoped list
        key carriers keep. A typed error for any non-200 answer."""
        query = "?format=cbor" + ("&scope=merchant" if scope == "merchant" else "")
        return self._http.get_bytes(REVOCATION_LIST + query)


def fetch_trust(http: InstitutionHttp) -> TrustStore:
    """The institution's root keys (``GET /v1/keys``; trust on first use)."""
    return KeyService(http).root_keys()
