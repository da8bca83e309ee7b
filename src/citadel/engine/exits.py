"""The engine's exit statuses (docs/engine.md). A program's own status passes through unchanged.

The engine's own statuses are 64 and above, after BSD's sysexits.h where one fits, so scripts
can tell an engine failure from the program's own ``sys.exit(n)`` with a small n. Engine-safe.
"""

from __future__ import annotations

import sys

from citadel.errors import (
    CitadelError,
    ImageError,
    SealedFileReadOnly,
    UsageError,
    VerificationError,
)

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Optional

EXIT_OK = 0
EXIT_PROGRAM_ERROR = 1  # the program raised an uncaught exception (traceback printed), as python does
EXIT_USAGE = 64  # a setting or the launch request is not valid
EXIT_IMAGE = 65  # the image cannot be used: wrong key, tampered, not an image, script not sealed
EXIT_NO_TEE = 69  # CITADEL_MODE=hw and no TEE was found
EXIT_ENGINE = 70  # the engine cannot start: its own files differ from the measurement, ...
EXIT_HEAP = 71  # the program ran out of heap (MemoryError)
EXIT_SEALED_WRITE = 73  # the program tried to change a sealed file, and did not catch the refusal
EXIT_VOLUME = 74  # a volume cannot be used or saved: rollback, conflict, tampering, wrong key, exit commit failed
EXIT_CAS_UNAVAILABLE = 75  # the CAS cannot be reached, or answered something the engine does not understand
EXIT_VERIFICATION = 76  # evidence or a certificate did not verify (also: the CAS's release does not decrypt)
EXIT_REFUSED = 77  # refused: the CAS refused the engine (its reason is printed), the CAS's key is not the
#                    pinned one, or the guard refused an operation (a library, a program) the program did not catch
EXIT_CONFIG = 78  # the engine's attestation set-up is missing or unusable (e.g. no sim platform key)
EXIT_INTERRUPTED = 130  # Ctrl-C


def exit_code_for(exc: CitadelError) -> int:
    """The status for an engine error (the class decides; see the table above)."""
    from citadel.engine.guard import GuardRefusal
    from citadel.engine.tee import NoTrustedHardware

    volume_errors = sys.modules.get("citadel.volume.errors")  # never loaded unless a volume was used
    if volume_errors is not None and isinstance(exc, volume_errors.VolumeError):
        return EXIT_VOLUME
    cas_status = _cas_status(exc)
    if cas_status is not None:
        return cas_status

    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, ImageError):
        return EXIT_IMAGE
    if isinstance(exc, NoTrustedHardware):
        return EXIT_NO_TEE
    if isinstance(exc, GuardRefusal):
        return EXIT_REFUSED
    if isinstance(exc, SealedFileReadOnly):
        return EXIT_SEALED_WRITE
    if isinstance(exc, VerificationError):
        return EXIT_VERIFICATION
    return EXIT_ENGINE


def _cas_status(exc: CitadelError) -> Optional[int]:
    """The CAS flow's statuses; its modules are looked up only if the engine loaded them."""
    engine_cas = sys.modules.get("citadel.engine.cas")
    if engine_cas is not None and isinstance(exc, engine_cas.CasRefusal):
        return EXIT_REFUSED
    client = sys.modules.get("citadel.attest.client")
    if client is not None:
        if isinstance(exc, (client.CasPinMismatch, client.AttestationRefused)):
            return EXIT_REFUSED
        if isinstance(exc, client.CasError):
            return EXIT_CAS_UNAVAILABLE
    sim = sys.modules.get("citadel.attest.sim")
    if sim is not None and isinstance(exc, sim.PlatformKeyError):
        return EXIT_CONFIG
    return None
