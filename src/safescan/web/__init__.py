"""What every local web server of safescan shares: request guards and TLS options.

:mod:`.guard` holds the Host allow-list (DNS rebinding), the Origin check on state-changing
requests, in-memory sessions and the anti-CSRF check; :mod:`.tls` turns certificate options
into uvicorn's ``ssl_*`` settings; :mod:`.listen` binds the listening socket. The wallet app
(:mod:`safescan.wallet.web`) uses all three; the web POS uses the guards and the socket.
"""
