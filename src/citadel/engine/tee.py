"""Which trusted execution environment (TEE) this engine runs in, and what CITADEL_MODE becomes.

Detection only looks for the interfaces the attestation code will use (docs/engine.md):
Intel SGX through Gramine's ``/dev/attestation``, Intel TDX and AMD SEV-SNP through the kernel's
configfs-tsm (``/sys/kernel/config/tsm/report``) with their guest device, and a TPM 2.0 through
the kernel's resource manager ``/dev/tpmrm0``. ``CITADEL_TEE_ROOT`` moves the probed tree (tests
build fake ones). Evidence itself is obtained and verified elsewhere (citadel.attest).
Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import os

from citadel.errors import EngineError

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import List, Optional, Tuple

SIMULATION_NOTICE = ("simulation mode: code and data are protected at rest and in transit, but memory is "
                     "not protected from this machine's administrator")


class NoTrustedHardware(EngineError):
    """CITADEL_MODE=hw, and no TEE interface was found."""


class Probe:
    """One TEE interface looked for: its kind, what it is, the paths that must exist, what was found."""

    __slots__ = ("kind", "label", "paths", "found", "detail")

    def __init__(self, kind: str, label: str, paths: Tuple[str, ...], found: bool, detail: str) -> None:
        self.kind = kind  # sgx, tdx, snp, tpm
        self.label = label
        self.paths = paths
        self.found = found
        self.detail = detail

    def __repr__(self) -> str:
        return f"Probe({self.kind!r}, found={self.found!r}, detail={self.detail!r})"

    def describe(self) -> str:
        return f"{' with '.join(self.paths)} ({self.label}): {self.detail}"


class ModeDecision:
    """The mode the engine runs in, the TEE kind in hw mode, and a one-line warning when auto fell back."""

    __slots__ = ("mode", "tee", "warning", "probes")

    def __init__(self, mode: str, tee: Optional[str], warning: Optional[str], probes: Tuple[Probe, ...]) -> None:
        self.mode = mode  # "hw" or "sim"
        self.tee = tee
        self.warning = warning
        self.probes = probes

    def __repr__(self) -> str:
        return f"ModeDecision({self.mode!r}, tee={self.tee!r})"


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/")) if root not in ("", "/") else path


def _probe_sgx(root: str) -> Probe:
    base = _under(root, "/dev/attestation")
    kind_file = os.path.join(base, "attestation_type")
    if not os.path.isdir(base):
        return Probe("sgx", "Intel SGX via Gramine", ("/dev/attestation",), False, "absent")
    try:
        with open(kind_file, encoding="ascii", errors="replace") as fh:
            attestation = fh.read().strip()
    except OSError:
        attestation = "unknown"
    if attestation in ("none", ""):
        return Probe("sgx", "Intel SGX via Gramine", ("/dev/attestation",), False,
                     "present, but Gramine was started without remote attestation (attestation_type=none)")
    return Probe("sgx", "Intel SGX via Gramine", ("/dev/attestation",), True, f"present ({attestation})")


def _probe_paths(root: str, kind: str, label: str, paths: Tuple[str, ...]) -> Probe:
    missing = [p for p in paths if not os.path.exists(_under(root, p))]
    if not missing:
        return Probe(kind, label, paths, True, "present")
    detail = "absent" if len(missing) == len(paths) else f"{', '.join(missing)} absent"
    return Probe(kind, label, paths, False, detail)


def probe(root: str = "/") -> List[Probe]:
    """Every interface looked for, in order of preference (SGX, TDX, SEV-SNP, TPM)."""
    tsm = "/sys/kernel/config/tsm/report"
    return [
        _probe_sgx(root),
        _probe_paths(root, "tdx", "Intel TDX via configfs-tsm", (tsm, "/dev/tdx_guest")),
        _probe_paths(root, "snp", "AMD SEV-SNP via configfs-tsm", (tsm, "/dev/sev-guest")),
        _probe_paths(root, "tpm", "TPM 2.0", ("/dev/tpmrm0",)),
    ]


def decide_mode(requested: str, probes: List[Probe]) -> ModeDecision:
    """hw needs a TEE (else NoTrustedHardware listing what was checked); auto falls back to sim."""
    found = next((p for p in probes if p.found), None)
    if requested == "sim":
        return ModeDecision("sim", None, None, tuple(probes))
    if found is not None:
        return ModeDecision("hw", found.kind, None, tuple(probes))
    checked = "; ".join(p.describe() for p in probes)
    if requested == "hw":
        raise NoTrustedHardware(
            f"CITADEL_MODE=hw, but no trusted execution environment was found (checked {checked})",
            "run on a machine with SGX (in Gramine), TDX, SEV-SNP or a TPM, or set CITADEL_MODE=auto to "
            "fall back to simulation mode, where memory is not protected from the machine's administrator")
    warning = ("no trusted execution environment found (checked SGX, TDX, SEV-SNP, TPM); running in "
               "simulation mode: memory is not protected from this machine's administrator")
    return ModeDecision("sim", None, warning, tuple(probes))


def decide_mode_for_hash(requested: str, probes: List[Probe]) -> str:
    """The mode CITADEL_HASH=1 measures: the one requested (hw without a TEE too), auto as detected."""
    if requested in ("hw", "sim"):
        return requested
    return "hw" if any(p.found for p in probes) else "sim"
