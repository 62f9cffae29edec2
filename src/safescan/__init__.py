"""safescan: secure QR-code payments.

Architecture (dependencies point one way, downwards):

- ``safescan.code``: formats and crypto (payment smart code, certificates, EMV MPM, QR images).
- ``safescan.carrier``: the key carrier (emulated security token) and its host driver.
- ``safescan.institution``: the payment institution (API server, ledger).
- ``safescan.merchant``: the merchant terminal (POS).
- ``safescan.wallet``: the customer wallet.

Apps depend on ``code``; ``code`` depends on nothing else in safescan.
"""

__version__ = "0.1.0"
