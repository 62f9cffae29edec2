"""safescan.merchant (see docs/)."""
