"""The typed per-kind reference values of a service, and their checks against verified evidence.

Pure: a `KindRefs` (built from a validated `attestation.<kind>` section, see kinds.py) and a
`VerifiedEvidence` in; nothing out, or `Refused` naming the value that did not match.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Tuple

from citadel.attest.evidence import VerifiedEvidence
from citadel.cas.errors import Refused
from citadel.cas.policy.kinds import SNP_POLICY_BITS, SNP_TCB_FIELDS, SNP_TCB_PARTS, TDX_REGISTERS

_UPDATE = "update the session if this value is to be trusted, or run the expected image"


@dataclass(frozen=True)
class KindRefs:
    """One kind's reference values: each listed value set must contain the evidence's value."""

    values: Dict[str, Tuple[str, ...]] = field(default_factory=dict)  # measurement name -> accepted
    minimums: Dict[str, int] = field(default_factory=dict)  # measurement name -> lowest accepted integer
    policy_bits: Dict[str, bool] = field(default_factory=dict)  # SNP guest policy bit name -> required value
    minimum_tcb: Dict[str, int] = field(default_factory=dict)  # SNP TCB part -> lowest accepted level


def refs_from_section(kind: str, section: Mapping[str, Any]) -> KindRefs:
    """The typed view of a normalized `attestation.<kind>` section."""
    values: Dict[str, Tuple[str, ...]] = {}
    minimums: Dict[str, int] = {}
    if kind == "sgx":
        for name in ("mrenclave", "mrsigner"):
            if name in section:
                values[name] = tuple(section[name])
        if "isvprodid" in section:
            values["isvprodid"] = (str(int(section["isvprodid"])),)
        if "isvsvn_min" in section:
            minimums["isvsvn"] = int(section["isvsvn_min"])
    elif kind == "tdx":
        values = {name: tuple(section[name]) for name in TDX_REGISTERS if name in section}
    elif kind == "snp":
        for name in ("measurement", "host_data", "id_key_digest", "author_key_digest"):
            if name in section:
                values[name] = tuple(section[name])
        if "vmpl" in section:
            values["vmpl"] = tuple(str(int(v)) for v in section["vmpl"])
        if "guest_svn_min" in section:
            minimums["guest_svn"] = int(section["guest_svn_min"])
        return KindRefs(
            values,
            minimums,
            {k: bool(v) for k, v in section.get("policy", {}).items()},
            {k: int(v) for k, v in section.get("minimum_tcb", {}).items()},
        )
    elif kind == "tpm":
        values = {f"pcr{int(i)}": tuple(vs) for i, vs in sorted(section["pcrs"].items(), key=lambda kv: int(kv[0]))}
    return KindRefs(values, minimums)


def equal_text(observed: str, expected: str) -> bool:
    """Case-insensitive, constant-time equality of two measurement texts."""
    return hmac.compare_digest(observed.lower().encode(), expected.lower().encode())


def one_of(observed: str, accepted: Tuple[str, ...]) -> bool:
    ok = False
    for value in accepted:  # no early exit: the time does not say which value was close
        ok |= equal_text(observed, value)
    return ok


def _label(kind: str, name: str) -> str:
    if kind == "tpm" and name.startswith("pcr"):
        return f"PCR {name[3:]}"
    return name


def check_values(kind: str, refs: KindRefs, ev: VerifiedEvidence) -> None:
    """Listed values, minimum versions and SNP guest policy bits (measurement_not_accepted)."""
    for name, accepted in refs.values.items():
        observed = ev.measurements.get(name)
        if observed is None or not one_of(observed, accepted):
            shown = f"{observed[:16]}..." if observed and len(observed) > 16 else (observed or "absent")
            raise Refused(
                "measurement_not_accepted",
                f"{_label(kind, name)} not accepted: the {kind} evidence has {shown}, "
                f"which is not among the {len(accepted)} value(s) in attestation.{kind}",
                _UPDATE,
            )
    for name, minimum in refs.minimums.items():
        try:
            observed_int = int(ev.measurements.get(name, ""), 10)
        except ValueError:
            observed_int = -1
        if observed_int < minimum:
            raise Refused(
                "measurement_not_accepted",
                f"{name} {observed_int} is below the session's minimum {minimum} (attestation.{kind})",
                "run a newer build of the enclave or guest, or lower the minimum",
            )
    if refs.policy_bits:
        try:
            policy = int(ev.measurements.get("policy", ""), 16)
        except ValueError:
            policy = -1
        for name, wanted in refs.policy_bits.items():
            actual = policy >= 0 and bool(policy >> SNP_POLICY_BITS[name] & 1)
            if policy < 0 or actual != wanted:
                raise Refused(
                    "measurement_not_accepted",
                    f"guest policy bit {name.upper()} is {'set' if actual else 'clear'}; "
                    f"attestation.snp.policy requires it {'set' if wanted else 'clear'}",
                    "launch the guest with the required policy, or change attestation.snp.policy",
                )


def check_minimum_tcb(refs: KindRefs, ev: VerifiedEvidence) -> None:
    """SNP: each of the reported, current and committed TCB at least the minimum (tcb_not_tolerated)."""
    for tcb_field in SNP_TCB_FIELDS:
        levels = ev.details.get(tcb_field)
        if not isinstance(levels, dict):
            raise Refused(
                "tcb_not_tolerated",
                f"the {ev.kind} evidence reports no {tcb_field} to compare with minimum_tcb",
                "use a Citadel SEV-SNP verifier that reports the TCB",
            )
        for part in SNP_TCB_PARTS:
            minimum = refs.minimum_tcb.get(part)
            if minimum is None or (part == "fmc" and part not in levels):
                continue  # fmc exists on Turin only
            level = levels.get(part)
            if not isinstance(level, int) or level < minimum:
                raise Refused(
                    "tcb_not_tolerated",
                    f"SNP {tcb_field} {part}={level} is below the session's minimum_tcb {part}={minimum}",
                    "update the platform's firmware (and let the host commit it), or lower minimum_tcb",
                )
