"""The errors of sealing and verifying (re-exported by :mod:`edgeproof.integrity.seal`)."""

from __future__ import annotations

from edgeproof.errors import InputFileError, UserError

__all__ = ["SealFileError", "SealedPathError", "SignatureKeyError"]


class SealFileError(InputFileError):
    """The seal file is missing, not JSON, of unknown schema version, or inconsistent."""


class SealedPathError(InputFileError):
    """A sealed path vanished or its format changed since sealing."""


class SignatureKeyError(UserError):
    """Kept for callers that catch it; :func:`verify_seal` now reports an unsigned seal or one
    signed by another key as a verification failure (``SignatureCheck.status``)."""
