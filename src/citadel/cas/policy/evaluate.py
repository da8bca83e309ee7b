"""Does verified evidence satisfy a service's `attestation` section? Pure; raises Refused.

Checks, in this order (docs/policy.md): the TEE kind is accepted; sim evidence needs `sim`
tolerated; the platform is among `platforms` (if listed); one accepted measurement entry matches
all its named values; a debuggable TEE needs `debug`; a TCB state other than up to date needs
its tolerance (Revoked never passes).
"""

from __future__ import annotations

import hmac
from typing import Mapping

from citadel.attest.evidence import VerifiedEvidence
from citadel.cas.errors import Refused
from citadel.cas.policy.model import TCB_TOLERANCES, Attestation

_ADD = "add it to services[].attestation in the session, if you trust it, and update the session"


def _matches(entry: Mapping[str, str], observed: Mapping[str, str]) -> bool:
    ok = True
    for name, expected in entry.items():
        value = observed.get(name, "").lower()
        ok &= hmac.compare_digest(value.encode(), expected.encode())
    return ok


def evaluate(att: Attestation, ev: VerifiedEvidence, platform_name: str = "") -> None:
    if ev.kind not in att.tee:
        raise Refused(
            "tee_not_accepted",
            f"{ev.kind} evidence is not accepted (the service accepts {', '.join(att.tee)})",
            f"run the engine on an accepted TEE, or {_ADD}",
        )
    if ev.kind == "sim" and "sim" not in att.tolerate:
        raise Refused(
            "sim_not_tolerated",
            "simulation-mode evidence is not tolerated by this service",
            "run on a TEE, or add `sim` to attestation.tolerate (memory is then not protected)",
        )
    if att.platforms is not None and ev.platform not in att.platforms and platform_name not in att.platforms:
        raise Refused(
            "platform_not_accepted",
            f"platform {platform_name or ev.platform[:16]} is not among the service's platforms",
            f"run on a listed platform, or {_ADD}",
        )
    if not any(_matches(entry, ev.measurements) for entry in att.measurements):
        shown = ", ".join(f"{k}={v[:16]}..." for k, v in sorted(ev.measurements.items())) or "none"
        raise Refused(
            "measurement_not_accepted",
            f"measurement not accepted: the engine's ({shown}) match "
            f"none of the {len(att.measurements)} the service accepts",
            f"check the engine version (`citadel measure`); {_ADD}",
        )
    if ev.debug and "debug" not in att.tolerate:
        raise Refused(
            "debug_not_tolerated",
            f"the {ev.kind} engine is debuggable and debug is not tolerated",
            "run a production (non-debug) engine, or add `debug` to attestation.tolerate",
        )
    needed = TCB_TOLERANCES.get(ev.tcb_status)
    if needed is None:
        raise Refused(
            "tcb_not_tolerated",
            f"the platform's TCB is {ev.tcb_status}, which is never accepted",
            "update the platform's firmware and microcode",
        )
    missing = [t for t in needed if t not in att.tolerate]
    if missing:
        raise Refused(
            "tcb_not_tolerated",
            f"the platform's TCB is {ev.tcb_status}; tolerating it needs {', '.join(missing)}",
            "update the platform, or add the tolerance to attestation.tolerate",
        )
