"""Errors of evidence collection: the TEE interface is missing, refused, or answered nonsense.

Engine-safe (standard library only, Python 3.9). All are `EngineError`s, so the engine exits with
its "cannot start" status and prints the two-line diagnostic.
"""

from __future__ import annotations

from citadel.errors import EngineError


class CollectionError(EngineError):
    """Evidence could not be obtained from this machine's trusted execution environment."""


class TpmProtocolError(CollectionError):
    """The TPM (or whatever answered on its channel) sent bytes that are not a valid TPM 2.0 response."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"the TPM sent a malformed response: {detail}",
            "check that the device or socket is a TPM 2.0 (not a TPM 1.2), and that nothing else writes to it",
        )
        self.detail = detail


class TpmCommandError(CollectionError):
    """The TPM answered a command with a non-zero response code."""

    def __init__(self, command: str, rc: int, description: str, remedy: str) -> None:
        super().__init__(f"the TPM refused {command}: response code {rc:#x} ({description})", remedy)
        self.command = command
        self.rc = rc
