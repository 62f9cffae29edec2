"""The customer's mobile web wallet (``safescan wallet serve``).

:mod:`.service` owns the wallet store and the key carrier on one worker thread and calls the
same library as the command line (:mod:`safescan.wallet.flow`); :mod:`.server` is the local
web service (Starlette) with its guards; :mod:`.frames` decodes camera frames with zxing-cpp;
``static/`` holds the pages, scripts, styles, the web manifest, the service worker and the
vendored zxing-wasm reader (package data, see ``static/vendor/README.md``).
"""
