"""safescan.institution: the payment institution (API server, double-entry ledger, audit).

See docs/institution.md (API, state machines, ledger rules, keys) and docs/operations.md
(running it). What merchants and wallets share with it (error vocabulary, request, event and
webhook signatures) lives in :mod:`safescan.api`, so that clients never import the server.
"""
