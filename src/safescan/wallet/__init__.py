"""safescan.wallet (see docs/)."""
