"""The card's firmware, one module per command family (the security logic unit).

Every handler is ``handler(card, command) -> response data`` and refuses by raising
:class:`~safescan.carrier.firmware.common.Refusal`; :mod:`safescan.carrier.device` parses,
checks the access rules and dispatches to them.

* :mod:`.identity`: SELECT, GET DATA (card info, last error), OPEN SECURE CHANNEL
* :mod:`.personalization`: GENERATE KEYS, PERSONALIZE
* :mod:`.pin_commands`: VERIFY PIN, CHANGE PIN
* :mod:`.payment`: OPEN CODE, AUTHORIZE PAYMENT
* :mod:`.keys`: the scheme keyring, UPDATE REVOCATIONS
"""
