"""The root of every error Citadel reports to a person.

Every error carries one line of cause and one line of remedy, so the CLI and the engine can
print it without a traceback (DESIGN.md: bad input gets one clear error). Engine-safe: stdlib
only, importable on Python 3.9.
"""

from __future__ import annotations


class CitadelError(Exception):
    """Something went wrong that a user can act on."""

    #: process exit status the CLI and the engine use for this kind of error
    exit_code = 1

    def __init__(self, cause: str, remedy: str = "") -> None:
        super().__init__(cause)
        self.cause = cause
        self.remedy = remedy

    def diagnostics(self) -> str:
        """Two lines for a person: what went wrong, and what to do."""
        text = f"citadel: error: {self.cause}"
        if self.remedy:
            text += f"\ncitadel: hint: {self.remedy}"
        return text


class UsageError(CitadelError):
    """The command line or a setting is not valid."""

    exit_code = 2


class ImageError(CitadelError):
    """A sealed image cannot be used: missing, unreadable, or of an unknown format."""


class WrongKey(ImageError):
    """The key given does not open the image (any failed decryption of the manifest)."""


class TamperedImage(ImageError):
    """A file of the image differs from what the protection manifest records."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(
            f"sealed file {path!r} {what}; the image was changed after sealing",
            "re-seal the application from its source and copy the whole image again",
        )
        self.path = path


class SealedFileReadOnly(CitadelError):
    """A program inside the engine tried to change a sealed file."""


class EngineError(CitadelError):
    """The engine cannot start or continue."""


class VerificationError(CitadelError):
    """Evidence, a signature or a certificate chain did not verify; names the failed check."""

    def __init__(self, check: str, detail: str, remedy: str = "") -> None:
        super().__init__(f"{check}: {detail}", remedy or "the evidence is not acceptable; see the check named")
        self.check = check
        self.detail = detail
