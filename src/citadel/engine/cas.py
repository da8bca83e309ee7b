"""The engine's CAS flow: attest, receive the configuration, and turn it into the run (docs/engine.md).

1. `cas_target`: where to attest, what to ask for and the pinned CAS key, from the launch request's
   "cas" and the settings (CITADEL_CAS_ADDR, CITADEL_CONFIG_ID, CITADEL_CAS_FINGERPRINT). The pin is
   a measured setting, so it must come from the settings: a request may repeat it, never change it.
2. `evidence_source`: sim -> a statement signed with this machine's platform key (`citadel.attest.sim`);
   hw -> the TEE's own evidence (`citadel.attest.collect`), SEV-SNP with its certificate table.
3. `attest`: `citadel.attest.client.attest_and_fetch` (nonce, ephemeral key, evidence binding both,
   the release sealed to that key); a refusal becomes `CasRefusal` naming the CAS's reason.
4. `program_request`: the program the policy names (argv with host arguments only if the policy
   passes them, module, working directory) and `program_environment` (the policy's environment plus
   the host variables it passes through by name, nothing else).
5. `cas_binder`: the volumes' keys, latest tags, mount paths and compare-and-swap from the release.

Engine-safe: stdlib + `cryptography` (through citadel.attest), Python 3.9; imported only in the CAS flow.
"""

from __future__ import annotations

import os

from citadel.engine.request import LaunchRequest
from citadel.errors import CitadelError, UsageError

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Any, Callable, Dict, List, Optional, Tuple

    from citadel.attest.client import ReleasedConfig
    from citadel.attest.volume_client import CasVolumeTagStore
    from citadel.engine.request import VolumeSpec
    from citadel.engine.settings import Settings
    from citadel.engine.tee import ModeDecision
    from citadel.engine.volumes import VolumeBinding

    Provider = Callable[[str, bytes], bytes]

PIN_REMEDY = "start the engine with `citadel run --cas URL --config-id SESSION/SERVICE` (it pins the CAS's key)"


class CasRefusal(CitadelError):
    """The CAS verified the engine's request and refused it; ``code`` is the CAS's reason (exit 77)."""

    def __init__(self, cause: str, remedy: str, code: str) -> None:
        super().__init__(cause, remedy)
        self.code = code


class CasTarget:
    """Where the engine attests, which configuration it asks for, and the CAS key it pins."""

    __slots__ = ("addr", "config_id", "fingerprint")

    def __init__(self, addr: str, config_id: str, fingerprint: str) -> None:
        self.addr = addr
        self.config_id = config_id
        self.fingerprint = fingerprint

    def __repr__(self) -> str:
        return f"CasTarget({self.addr!r}, {self.config_id!r}, sha256:{self.fingerprint[:16]}...)"


def wants_cas(request: LaunchRequest) -> bool:
    """The CAS flow: the launch request has "cas" (the settings alone only fill in its parts)."""
    return request.cas is not None


def cas_target(request: LaunchRequest, settings: Settings) -> CasTarget:
    """The request's "cas" merged with the settings; every part present, and both agree where both give one."""
    given = request.cas
    parts: Dict[str, Optional[str]] = {}
    for field, setting, value in (("addr", "CITADEL_CAS_ADDR", settings.cas_addr),
                                  ("config_id", "CITADEL_CONFIG_ID", settings.config_id),
                                  ("fingerprint", "CITADEL_CAS_FINGERPRINT", settings.cas_fingerprint)):
        requested = getattr(given, field) if given is not None else None
        if requested is not None and value is not None and requested != value:
            raise UsageError(f"the launch request's cas.{field} ({requested}) differs from {setting} ({value})",
                             f"give the same value in both places, or only in {setting}")
        parts[field] = value if value is not None else requested
    addr, config_id, fingerprint = parts["addr"], parts["config_id"], parts["fingerprint"]
    if addr is None:
        raise UsageError("the engine was asked to attest but no CAS address is set",
                         "pass --cas URL (CITADEL_CAS_ADDR)")
    if config_id is None:
        raise UsageError("the engine was asked to attest but no configuration is named",
                         "pass --config-id SESSION/SERVICE (CITADEL_CONFIG_ID)")
    if fingerprint is None or settings.cas_fingerprint is None:
        # the pin decides which CAS the engine trusts, so it must be part of the measurement
        raise UsageError("the engine was asked to attest but CITADEL_CAS_FINGERPRINT (the pinned CAS key, part "
                         "of the measurement) is not set", PIN_REMEDY)
    return CasTarget(addr, config_id, fingerprint)


# --- evidence --------------------------------------------------------------------------------------
def evidence_source(decision: ModeDecision, settings: Settings, measurement: str
                    ) -> Tuple[str, Provider, Optional[Dict[str, Any]]]:
    """(kind, provider, collateral) for this engine: sim signs with the platform key; hw asks the TEE.

    ``collateral`` is a dict the provider fills while it collects (SEV-SNP's certificates), or None.
    """
    if decision.mode == "sim":
        return "sim", _sim_provider(settings, measurement), None
    kind = decision.tee or ""
    if kind == "snp":
        collateral: Dict[str, Any] = {}
        return kind, _snp_provider(settings, collateral), collateral
    root, tpm = settings.tee_root, settings.tpm

    def collect(requested: str, report_data: bytes) -> bytes:
        from citadel.attest.collect import collect_evidence

        return collect_evidence(requested, report_data, root=root, measurement=measurement, tpm=tpm)

    return kind, collect, None


def _sim_provider(settings: Settings, measurement: str) -> Provider:
    from pathlib import Path

    from citadel.attest import sim

    path = Path(settings.platform_key) if settings.platform_key else sim.default_platform_key_path(os.environ)
    if not path.exists():
        raise sim.PlatformKeyError(
            f"this machine has no sim platform key at {path} (simulation mode signs its evidence with it)",
            "register this machine with the CAS: citadel platform add NAME (it makes the key), or point "
            "CITADEL_PLATFORM_KEY at the key that was registered")
    key = sim.load_platform_key(path)
    measurements = {"engine": measurement}

    def sign(kind: str, report_data: bytes) -> bytes:
        return sim.make_evidence(key, report_data, measurements)

    return sign


def _snp_provider(settings: Settings, collateral: Dict[str, Any]) -> Provider:
    root = settings.tee_root

    def collect(kind: str, report_data: bytes) -> bytes:
        import ssl

        from citadel.attest.collect.tsm import collect_tsm

        report = collect_tsm(report_data, kind="snp", root=root)
        # the certificate table the host supplied (VCEK/VLEK, ASK, ARK), as PEM text for the JSON request;
        # attest_and_fetch copies `collateral` into the request after calling the provider
        collateral.update({name: ssl.DER_cert_to_PEM_cert(der) for name, der in report.collateral().items()})
        return report.outblob

    return collect


# --- attestation -----------------------------------------------------------------------------------
def attest(target: CasTarget, kind: str, provider: Provider, collateral: Optional[Dict[str, Any]]
           ) -> ReleasedConfig:
    """Attest and return the released configuration; a refusal is CasRefusal with the CAS's reason."""
    from citadel.attest.client import AttestationRefused, attest_and_fetch

    try:
        return attest_and_fetch(target.addr, target.config_id, target.fingerprint, provider, kind=kind,
                                collateral=collateral)
    except AttestationRefused as exc:
        raise CasRefusal(f"the CAS at {target.addr} refused to release {target.config_id} ({exc.code}): {exc.cause}",
                         exc.remedy or "ask the session's owner to check its policy (citadel session show)",
                         exc.code) from None


# --- the program the policy names -------------------------------------------------------------------
def program_request(request: LaunchRequest, config: ReleasedConfig) -> LaunchRequest:
    """The request the runner gets: the policy's program, in the policy's directory (else the host's)."""
    argv = config.effective_argv(request.host_args)
    cwd = config.pwd or request.cwd
    return LaunchRequest(image=request.image, key=None, expected_tag=config.image_tag, argv=argv,
                         module=config.module, interactive=False, cwd=cwd, cas=request.cas,
                         volumes=request.volumes)


def program_environment(request: LaunchRequest, config: ReleasedConfig) -> Dict[str, str]:
    """Exactly what the program's os.environ holds: the policy's variables and the passed-through host ones."""
    return config.effective_environment(request.host_env)


def set_environment(env: Dict[str, str]) -> None:
    """Make os.environ (and the C environment) exactly ``env``."""
    for name in list(os.environ):
        if name not in env:
            del os.environ[name]
    os.environ.update(env)


# --- volumes -----------------------------------------------------------------------------------------
def cas_binder(config: ReleasedConfig, store: Optional[CasVolumeTagStore],
               requested: List[VolumeSpec]) -> Callable[[VolumeSpec], VolumeBinding]:
    """A binder for `open_volumes`: what the CAS released for each volume the host says where it is.

    Every volume the service mounts must be given a host directory, and the host may give no other.
    """
    from citadel.engine.volumes import VolumeBinding

    released = {rv.name: rv for rv in config.released_volumes()}
    named = {spec.name for spec in requested}
    missing = sorted(set(released) - named)
    if missing:
        rv = released[missing[0]]
        raise UsageError(f"the session mounts volume {rv.name!r} at {rv.mount}, but no host directory was given "
                         "for it", f"say where it is stored: --volume {rv.name}=HOST_DIR")

    def bind(spec: VolumeSpec) -> VolumeBinding:
        rv = released.get(spec.name)
        if rv is None:
            raise UsageError(f"the session's service {config.config_id} mounts no volume {spec.name!r}",
                             f"mount only the volumes the policy names ({', '.join(sorted(released)) or 'none'})")
        if rv.rollback_protected:
            if store is None:  # from_release always makes one when the release has rollback-protected volumes
                raise UsageError(f"volume {rv.name!r} has no tag store", "report this as a bug")
            return VolumeBinding(rv.key, rv.expected_tag, store.on_commit(rv.name), mount=rv.mount, create=True)
        return VolumeBinding(rv.key, None, None, mount=rv.mount, create=True)  # ephemeral: no tag, no CAS

    return bind


def volume_store(target: CasTarget, config: ReleasedConfig) -> Optional[CasVolumeTagStore]:
    """The CAS as the tag store of this run's rollback-protected volumes (None when there are none)."""
    if not any(rv.rollback_protected for rv in config.released_volumes()):
        return None
    from citadel.attest.volume_client import CasVolumeTagStore

    return CasVolumeTagStore.from_release(target.addr, target.fingerprint, config)
