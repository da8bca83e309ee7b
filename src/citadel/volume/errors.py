"""Errors of encrypted volumes (engine-safe).

Ordinary file-system conditions (a missing file, a directory that is not empty...) are raised as
the same `OSError` subclasses the `os` module raises, so programs behave as on a plain directory.
The errors below are different in kind: the volume itself cannot be trusted or used, and the
program must not carry on as if it had read or saved its data.
"""

from __future__ import annotations

from citadel.errors import CitadelError


class VolumeError(CitadelError):
    """A volume cannot be opened or used: missing, unreadable, or of an unknown format."""



class VolumeWrongKey(VolumeError):
    """The key does not open the volume's manifest (or the manifest was changed)."""


class TamperedVolume(VolumeError):
    """Stored bytes of a volume differ from what its manifest pins."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(
            f"volume file {path!r} {what}; the volume was changed outside Citadel",
            "restore the volume directory from a trusted copy of its latest state",
        )
        self.path = path


class VolumeRollback(VolumeError):
    """The volume's directory holds another state than the latest one the tag store records."""

    def __init__(self, root: str, found: str, expected: str, detail: str = "") -> None:
        super().__init__(
            f"volume {root!r} is not at its latest state: it holds tag {found[:16] or '(none)'}..."
            f"{detail} but the latest recorded tag is {expected[:16]}...; the host restored an "
            "older copy of the volume or replaced it",
            "give the engine the volume directory's latest copy; Citadel refuses older states",
        )
        self.found = found
        self.expected = expected


class VolumeConflict(VolumeError):
    """Another engine committed this volume first; this engine's commit was refused."""

    def __init__(self, root: str, detail: str, kept_as: str = "") -> None:
        kept = (f"; this engine's changes are kept, unapplied, as conflict state {kept_as[:16]}... "
                "in the volume's conflicts/ directory") if kept_as else ""
        super().__init__(
            f"volume {root!r} was changed by another engine since this one opened it ({detail}){kept}",
            "re-run the program on the volume's new state; the owner can export the conflict state "
            "with `citadel volume export --state TAG`",
        )
        self.kept_as = kept_as


class VolumeClosed(VolumeError):
    """The volume was closed, or a refused commit left this session unusable."""
