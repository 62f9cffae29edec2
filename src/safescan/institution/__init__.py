"""safescan.institution: the payment institution (API server, double-entry ledger, audit).

See docs/institution.md (API, state machines, ledger rules, keys) and
docs/operations-institution.md (running it). The helpers merchants use are light to import:

- :func:`safescan.institution.merchant_auth.sign_request`: sign a merchant API request;
- :func:`safescan.institution.webhooks.verify_webhook` / :func:`~.webhooks.verify_event`:
  verify a webhook delivery or a server-sent event before trusting it.
"""

from safescan.institution.merchant_auth import sign_request

__all__ = ["sign_request"]
