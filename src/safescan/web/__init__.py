"""What every local web server of safescan shares: request guards and TLS options.

:mod:`.guard` holds the Host allow-list (DNS rebinding), the Origin check on state-changing
requests, in-memory sessions and the anti-CSRF check; :mod:`.tls` turns certificate options
into uvicorn's ``ssl_*`` settings; :mod:`.listen` binds the listening socket. The wallet app
(:mod:`safescan.wallet.web`) uses all three; the web POS uses the guards and the socket.
:mod:`.netguard` is the connection guard (TLS handshake, connection bounds, head deadline) of
all three HTTPS servers, the institution's included; :mod:`.serving` starts the POS and the
wallet app behind it (and a body deadline).
"""
