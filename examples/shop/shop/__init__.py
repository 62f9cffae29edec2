"""An example web shop that sells through safescan's hosted checkout (docs/checkout.md).

It uses only what any web shop has: an HTTP client with its secret API key, and a webhook
endpoint verified with the Standard Webhooks library. Nothing of safescan's own code.
"""
