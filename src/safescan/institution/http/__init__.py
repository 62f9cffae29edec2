"""The institution's HTTP layer: it only speaks HTTP (parses, authenticates, maps results and
typed errors to answers) and runs no SQL; the decisions are the domain's.

  app.py         create_app: the routers, the error handlers, the body limit
  errors.py      one handler per error type (the status and body of every error)
  wallet.py      public and wallet routes, and the payment fast path
  admin.py       administrator routes (bearer token)
  merchant.py    merchant routes (signed requests), the event stream (stream.py)
  webhooks.py    the merchant's webhook operations (signed requests)
  common.py      shared request types; asgi.py the body limit; docs_pages.py offline /docs
"""

from safescan.institution.http.app import create_app

__all__ = ["create_app"]
