"""The institution's HTTP API contract, shared by the server and its clients.

What both sides of the wire must agree on, and nothing else: the error vocabulary
(:mod:`.errors`: every error's ``type``/``code`` and HTTP status), merchant request signatures
(:mod:`.merchant_auth`), event and webhook signatures (:mod:`.events`) and the base64 forms
(:mod:`.encoding`). The institution (server) and ``safescan.remote``, the POS and the wallet
(clients) depend on this package; it depends only on ``safescan.code``.
"""
