"""Typed errors of the customer wallet (all :class:`~safescan.code.errors.SafescanError`)."""

from __future__ import annotations

from safescan.code.errors import SafescanError


class WalletError(SafescanError):
    """Something the wallet could not do."""

    code = "wallet_error"


class WalletNotEnrolled(WalletError):
    """There is no wallet configuration yet: run ``safescan wallet enroll``."""

    code = "wallet_not_enrolled"


class EnrollmentFailed(WalletError):
    """Enrolling the key carrier failed (token, carrier, or the institution's answer)."""

    code = "enrollment_failed"


class CodeRefusedByWallet(WalletError):
    """A payment code was refused before the customer was asked anything.

    ``reason`` is a stable identifier: ``signature_invalid`` (forged or swapped code),
    ``decryption_failed`` (altered), ``code_expired``, ``certificate_revoked``,
    ``merchant_revoked``, ``already_paid``, ``order_closed`` ...
    """

    code = "code_refused"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotPayable(WalletError):
    """The input is not a safescan payment code (an EMV code, a link, other text)."""

    code = "not_payable"


class PaymentNotMade(WalletError):
    """The payment did not happen (carrier gone, institution unreachable or refusing).

    ``cause`` is the underlying error's code. No money moved.
    """

    code = "payment_not_made"

    def __init__(self, message: str, *, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


class ReceiptInvalid(WalletError):
    """The institution's receipt does not verify or does not match what was approved."""

    code = "receipt_invalid"


class PaymentOutcomeUnknown(WalletError):
    """The payment was sent but its outcome is not known: the institution did not answer and
    could not be asked. It may or may not have been charged; the wallet keeps it pending and
    finds out later (``Wallet.resolve_pending``, ``safescan wallet pending``)."""

    code = "payment_outcome_unknown"

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class RevocationListInvalid(WalletError):
    """A revocation list the wallet would rely on does not verify, or is older than one it
    already holds (a damaged, swapped or rolled-back ``crl.cbor``; an institution answer that
    does not verify). Never treated as "nothing is revoked": nothing was written or signed."""

    code = "revocation_list_invalid"


class RevocationListStale(RevocationListInvalid):
    """The newest revocation list the wallet can get is past its signed ``next_update`` plus
    the grace (:data:`safescan.code.certs.STALE_GRACE`): offline with an old list (or one
    someone swapped in), or an institution answer that is a replay. Nothing was paid; the
    message says until when the list was current and to connect."""

    code = "revocation_list_stale"


class DeviceClockBehind(RevocationListInvalid):
    """This device's clock reads more than :data:`safescan.code.timefloor.CLOCK_TOLERANCE`
    earlier than a time the institution signed (a revocation list's ``issued_at``) that the
    wallet verified: the clock was set back (or is wrong), and freshness, expiry and validity
    cannot be judged by it. Nothing was paid; the message says to set the clock right."""

    code = "device_clock_behind"


class RevocationListRolledBack(RevocationListInvalid):
    """The newest revocation list the wallet holds (offline: its cache) is older than one it
    verified before, by the signed ``issued_at`` kept in ``trusted-time``
    (:mod:`safescan.code.timefloor`): ``crl.cbor`` was swapped for an older genuine list (which
    may not revoke a merchant revoked since), or a newer one could not be cached. Nothing was
    paid; connecting lets the wallet fetch the institution's current list."""

    code = "revocation_list_rolled_back"
