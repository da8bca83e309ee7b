"""Does verified evidence satisfy a service's `attestation` section? Pure; raises Refused.

Checks, in this order (docs/policy.md), each refusal naming what did not match:

1. the evidence kind is in `tee` (tee_not_accepted);
2. sim evidence needs `sim` tolerated (sim_not_tolerated);
3. the platform is among `platforms`, if listed (platform_not_accepted);
4. identity (measurement_not_accepted): of the `measurements` entries that apply to the kind, one
   must match all its named values (for tpm, an `engine` value stands for PCR 23 =
   SHA-256(32 zero bytes || engine measurement)); then the kind's own reference values
   (`attestation.<kind>`: accepted values, minimum versions, SNP guest policy bits);
5. a debuggable TEE needs `debug` (debug_not_tolerated); tpm evidence is exempt (a quote can never
   rule out a debugger: accepting tpm at all is that decision);
6. the TCB (tcb_not_tolerated): the status needs its tolerances (Revoked never passes); SGX/TDX
   verified without collateral needs `unevaluated-tcb`; every reported advisory must be tolerated;
   SNP's TCB must reach `minimum_tcb`.
"""

from __future__ import annotations

import hmac
from typing import Mapping, Optional, Tuple

from citadel.attest.collect.tpm import ENGINE_PCR, engine_pcr_value
from citadel.attest.evidence import VerifiedEvidence
from citadel.attest.policy import check_tolerances, tolerated_statuses
from citadel.cas.errors import Refused
from citadel.cas.policy.kinds import applies
from citadel.cas.policy.model import Attestation
from citadel.cas.policy.references import check_minimum_tcb, check_values
from citadel.errors import VerificationError

_ADD = "add it to services[].attestation in the session, if you trust it, and update the session"
_INTEL = ("sgx", "tdx")
_DEBUG_NOUN = {"sgx": "enclave", "tdx": "trust domain", "snp": "guest", "sim": "engine"}


def _expected(kind: str, name: str, value: str) -> Tuple[str, Optional[str]]:
    """The evidence's name and value an entry member stands for (tpm: `engine` -> PCR 23)."""
    if kind == "tpm" and name == "engine":
        try:
            digest = bytes.fromhex(value)
        except ValueError:
            return f"pcr{ENGINE_PCR}", None
        return f"pcr{ENGINE_PCR}", engine_pcr_value(digest).hex() if len(digest) == 32 else None
    return name, value


def _matches(entry: Mapping[str, str], ev: VerifiedEvidence) -> bool:
    ok = True
    for name, value in entry.items():
        observed_name, expected = _expected(ev.kind, name, value)
        observed = ev.measurements.get(observed_name)
        if observed is None or expected is None:
            ok = False
            continue
        ok &= hmac.compare_digest(observed.lower().encode(), expected.lower().encode())
    return ok


def _check_entries(att: Attestation, ev: VerifiedEvidence) -> None:
    entries = [e for e in att.measurements if applies(e, ev.kind)]
    if not entries:
        if ev.kind in att.refs:
            return  # the kind's own reference values pin it (validation requires its primary value)
        raise Refused(  # fail closed, also for policies stored before per-kind sections existed
            "measurement_not_accepted",
            f"measurement not accepted: nothing in the service pins what {ev.kind} evidence runs",
            f"add reference values for {ev.kind} (docs/policy.md) and update the session",
        )
    if any(_matches(entry, ev) for entry in entries):
        return
    if ev.kind == "tpm" and any("engine" in e for e in entries):
        pcr = ev.measurements.get(f"pcr{ENGINE_PCR}", "absent")
        raise Refused(
            "measurement_not_accepted",
            f"PCR 23 does not match the engine measurement: the quote's PCR 23 is {pcr[:16]}..., which none "
            f"of the {len(entries)} accepted measurement(s) gives (PCR 23 = SHA-256(32 zero bytes || measurement))",
            f"check the engine version (`citadel measure --mode hw`); {_ADD}",
        )
    names = sorted({name for e in entries for name in e})
    shown = ", ".join(f"{k}={ev.measurements.get(k, 'absent')[:16]}..." for k in names) or "none"
    raise Refused(
        "measurement_not_accepted",
        f"measurement not accepted: the {ev.kind} evidence's ({shown}) match "
        f"none of the {len(entries)} the service accepts",
        f"check the engine version (`citadel measure`); {_ADD}",
    )


def _check_tolerances(att: Attestation, ev: VerifiedEvidence) -> None:
    try:
        check_tolerances(
            ev,
            allow_debug=ev.kind == "tpm" or "debug" in att.tolerate,
            tcb_statuses=tolerated_statuses(att.tolerate),
            allow_unevaluated_tcb=ev.kind not in _INTEL or "unevaluated-tcb" in att.tolerate,
            tolerated_advisories=att.advisories,
        )
    except VerificationError as exc:
        if exc.check == "policy.debug":
            raise Refused(
                "debug_not_tolerated",
                f"debug {_DEBUG_NOUN.get(ev.kind, ev.kind)} not tolerated: the {ev.kind} evidence comes from a "
                "debuggable TEE, whose memory a debugger can read",
                "run a production (non-debug) build, or add `debug` to attestation.tolerate (for testing only)",
            ) from None
        raise Refused("tcb_not_tolerated", exc.detail, exc.remedy) from None


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
    _check_entries(att, ev)
    refs = att.refs.get(ev.kind)
    if refs is not None:
        check_values(ev.kind, refs, ev)
    _check_tolerances(att, ev)
    if refs is not None and refs.minimum_tcb:
        check_minimum_tcb(refs, ev)
