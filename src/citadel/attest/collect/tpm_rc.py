"""TPM 2.0 response codes (TCG TPM 2.0 Library, Part 2, section 6.6) in words, with remedies.

Format 0 (bit 7 clear, bit 8 set): bits 0-6 the error number, bit 11 set for a warning.
Format 1 (bit 7 set): bits 0-5 the error number (plus 0x80), bit 6 set when bits 8-11 name a
parameter, else bits 8-11 name a handle (bit 11 clear) or a session (bit 11 set, number in 8-10).
Bits 16 and up name the software layer (a resource manager or TSS) that produced the code.
Engine-safe: standard library only, Python 3.9.
"""

from __future__ import annotations

from typing import Dict

from citadel.attest.collect.errors import TpmCommandError

RC_INITIALIZE = 0x100
RC_RETRY = 0x922
RC_YIELDED = 0x908
RC_TESTING = 0x90A
RC_SIZE = 0x095  # format 1
TRANSIENT_RCS = (RC_RETRY, RC_YIELDED, RC_TESTING)
_FMT0_NAMES: Dict[int, str] = {
    0x100: "TPM_RC_INITIALIZE: TPM2_Startup has not run",
    0x101: "TPM_RC_FAILURE: the TPM is in failure mode",
    0x120: "TPM_RC_DISABLED: the command is disabled",
    0x127: "TPM_RC_PCR: the PCR cannot be used this way",
    0x143: "TPM_RC_COMMAND_CODE: the TPM does not implement the command",
    0x902: "TPM_RC_OBJECT_MEMORY: out of object slots",
    0x903: "TPM_RC_SESSION_MEMORY: out of session slots",
    0x904: "TPM_RC_MEMORY: out of memory",
    0x906: "TPM_RC_OBJECT_HANDLES: out of object handles",
    0x907: "TPM_RC_LOCALITY: the command is not allowed at this locality",
    0x908: "TPM_RC_YIELDED",
    0x909: "TPM_RC_CANCELED",
    0x90A: "TPM_RC_TESTING: the TPM is self-testing",
    0x921: "TPM_RC_LOCKOUT: dictionary-attack lockout",
    0x922: "TPM_RC_RETRY",
}
_FMT1_NAMES: Dict[int, str] = {
    0x084: "TPM_RC_VALUE: a value is out of range",
    0x085: "TPM_RC_HIERARCHY: the hierarchy is disabled",
    0x08B: "TPM_RC_HANDLE: no such handle",
    0x08E: "TPM_RC_AUTH_FAIL: wrong authorization",
    0x092: "TPM_RC_SCHEME: unsupported scheme",
    0x095: "TPM_RC_SIZE: a size is out of range",
    0x0A2: "TPM_RC_BAD_AUTH: wrong authorization",
    0x0A6: "TPM_RC_CURVE: unsupported curve",
}


def describe_rc(rc: int) -> str:
    """A response code in words: its name where known, and the handle/parameter/session it names."""
    layer = rc >> 16
    if layer:
        return f"layer {layer:#x} (resource manager or TSS), code {rc & 0xFFFF:#x}"
    if rc & 0x80:  # format one: error number, and which handle/parameter/session
        base = 0x80 | (rc & 0x3F)
        number = (rc >> 8) & 0xF
        where = f"parameter {number}" if rc & 0x40 else (f"session {number & 7}" if number & 8 else f"handle {number}")
        name = _FMT1_NAMES.get(base, f"format-1 error {base:#x}")
        return f"{name} ({where})" if number else name
    if not rc & 0x100:
        return "a TPM 1.2 response code"
    return _FMT0_NAMES.get(rc & 0xFFF, f"TPM error {rc:#x}")


def rc_base(rc: int) -> int:
    """The code without its handle/parameter/session number (format 1) -- what to compare against."""
    return (0x80 | (rc & 0x3F)) if rc & 0x80 and not rc >> 16 else rc


def command_error(name: str, rc: int) -> TpmCommandError:
    """The error for command `name` answered with `rc`, with a remedy that fits the code."""
    base = rc_base(rc)
    if base in (0x08E, 0x0A2, 0x921):
        remedy = "Citadel uses the empty hierarchy authorization; clear it (tpm2_changeauth) or use another TPM"
    elif base == 0x085:
        remedy = "enable the endorsement hierarchy in the firmware's TPM settings"
    elif base in (0x902, 0x903, 0x904, 0x906):
        remedy = "flush stale objects (tpm2_flushcontext -t) or use the kernel resource manager /dev/tpmrm0"
    elif base == 0x907:
        remedy = "PCR 23 must be resettable at locality 0 (PC Client TPMs allow it); use such a TPM"
    else:
        remedy = "check the TPM (tpm2_getcap properties-fixed) and docs/evidence-collection.md"
    return TpmCommandError(name, rc, describe_rc(rc), remedy)
