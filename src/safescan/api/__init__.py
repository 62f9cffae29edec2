"""The institution's HTTP API contract, shared by the server and its clients.

What both sides of the wire must agree on, and nothing else: the error vocabulary
(:mod:`.errors`: every error's ``type``/``code`` and HTTP status), merchant request signatures
(:mod:`.merchant_auth`), event and webhook signatures (:mod:`.events`), the base64 forms
(:mod:`.encoding`) and the JSON forms of the signed wire objects (:mod:`.wire`). The
institution (server) and ``safescan.client`` (used by the POS and the wallet) depend on this
package; it depends only on ``safescan.code``.
"""
