"""The engine's main sequence, after boot.py put the verifying importer in place.

settings -> mode (TEE detection) -> hardening -> measurement -> CITADEL_HASH / CITADEL_VERSION
-> launch request -> [CAS flow: evidence, attestation, the released configuration] -> image -> volumes
-> shields (guard, sealed importer, file shield, injected files) -> [CAS flow: the program's
environment] -> the program (-> the volumes' exit commit, from atexit).
Every engine error ends here as two lines (cause, remedy) and an exit status from
`citadel.engine.exits`; the program's own status passes through. Engine-safe, Python 3.9.
"""

from __future__ import annotations

import os
import sys
import time

from citadel import __version__
from citadel.engine import exits, log, tee
from citadel.engine.measure import compute_measurement, measured_settings
from citadel.engine.settings import Settings, parse_settings
from citadel.engine.trusted_base import TrustedBase
from citadel.errors import CitadelError, EngineError

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Dict, Optional, Sequence

    from citadel.engine.request import LaunchRequest
    from citadel.engine.volumes import VolumeSet
    from citadel.seal.image import SealedImage


_started = 0.0
_child_fd: Optional[str] = None  # CITADEL_CHILD_FD: this engine is a child engine (citadel.engine.processes)
_engine_env: Dict[str, str] = {}  # the environment the engine started with (a child engine gets it too)


def run(base: TrustedBase, *, started: float = 0.0) -> int:
    """Run the engine to the end; returns the exit status (boot.py exits with it).

    ``started`` is boot.py's time.perf_counter() at its first line (for CITADEL_LOG=debug timings).
    """
    global _started, _child_fd
    _started = started or time.perf_counter()
    _child_fd = os.environ.pop("CITADEL_CHILD_FD", None)
    _engine_env.update(os.environ)
    settings: Optional[Settings] = None
    try:
        settings = parse_settings(os.environ)
        return _run(base, settings)
    except CitadelError as exc:
        _report(exc.diagnostics())
        return exits.exit_code_for(exc)
    except ImportError as exc:  # the engine's own code (the program's errors end in the runner)
        _report(f"citadel: error: the engine cannot import {exc.name or 'a module'}: {exc}\n"
                "citadel: hint: reinstall Citadel, then run `citadel measure --rebuild`")
        return exits.EXIT_ENGINE
    except MemoryError:
        heap = settings.heap if settings is not None else None
        _report("citadel: error: the engine ran out of heap while starting"
                + (f"\ncitadel: hint: raise CITADEL_HEAP (now {heap >> 20}M)" if heap else ""))
        return exits.EXIT_HEAP


def _run(base: TrustedBase, settings: Settings) -> int:
    log.configure(settings.log)
    _phase("boot and trusted base verified")
    for name in settings.unknown:
        log.warning(f"{name} is not a Citadel setting; it is ignored")
    probes = tee.probe(settings.tee_root)
    if settings.hash_only:
        mode = tee.decide_mode_for_hash(settings.mode, probes)
        base.verify_all()
        print(measurement_for(base, mode, settings))
        return exits.EXIT_OK
    decision = tee.decide_mode(settings.mode, probes)
    if decision.warning:
        log.warning(decision.warning)
    if decision.mode == "hw":
        base.set_strict()

    from citadel.engine import hardening

    hardening.apply(settings, note=log.info)
    _phase("hardened")
    measurement = measurement_for(base, decision.mode, settings)
    if settings.version:
        _print_version(settings, decision, measurement, base)

    program_env: Optional[Dict[str, str]] = None
    if _child_fd is not None:  # a child engine: its parent sends the configuration (engine/processes.py)
        from citadel.engine.processes import receive_launch

        request, program_env = receive_launch(_child_fd, measurement)
    else:
        from citadel.engine.request import read_request

        request = read_request(os.environ)
    os.environ.pop("CITADEL_LAUNCH_FD", None)
    _phase("launch request read")
    if request.cas is not None:  # the CAS flow (engine/cas.py)
        return _run_attested(base, settings, decision, measurement, request)
    image = _open_image(request) if request.image is not None else None
    _phase("image opened")
    _report_image(settings, image)
    volumes = _open_volumes(request, image) if request.volumes else None
    _report_volumes(settings, volumes)
    if request.cwd is not None:
        _change_directory(request)
    _install_shields(base, settings, request, image, volumes)
    _install_processes(image, request.key, measurement)
    if program_env is not None:
        from citadel.engine.processes import set_environment

        set_environment(program_env)
    _phase("shields installed; running the program")

    from citadel.engine import runner

    context = runner.Context(mode=decision.mode, tee=decision.tee, measurement=measurement,
                             heap=settings.heap, image=image, volumes=volumes)
    return runner.run(request, context)


def _install_processes(image: Optional[SealedImage], key: Optional[bytes], measurement: str,
                       allowed_programs: Sequence[str] = ()) -> None:
    """Let the program start child engines (multiprocessing spawn/forkserver, subprocess of sys.executable)
    and, in the CAS flow, the programs the session allows (allowed_executables)."""
    from citadel.engine import processes

    processes.install(image=image, key=key, measurement=measurement, engine_env=_engine_env,
                      allowed_programs=allowed_programs)


def _run_attested(base: TrustedBase, settings: Settings, decision: tee.ModeDecision, measurement: str,
                  request: LaunchRequest) -> int:
    """The CAS flow (engine/cas.py): attest, then run what the release says with the keys it holds."""
    from citadel.engine import cas
    from citadel.seal.image import SealedImage

    target = cas.cas_target(request, settings)
    kind, provider, collateral = cas.evidence_source(decision, settings, measurement)
    config = cas.attest(target, kind, provider, collateral)
    _phase("attested")
    if settings.version:
        _report(f"citadel: attested to {target.addr} as {target.config_id} ({kind} evidence); "
                f"session version {config.session_hash[:16]}...")
    if config.image_key is None:
        raise EngineError(f"the CAS released {target.config_id} without an image key",
                          "ask the session's owner to set image.key in the policy")
    program = cas.program_request(request, config)
    image = SealedImage.open(request.image or "", config.image_key, expected_tag=config.image_tag)
    _phase("image opened")
    _report_image(settings, image)
    from citadel.engine.volumes import open_volumes

    binder = cas.cas_binder(config, cas.volume_store(target, config), request.volumes)
    volumes = open_volumes(request.volumes, image_root=image.root, bind=binder) if request.volumes else None
    _report_volumes(settings, volumes)
    if program.cwd is not None:
        _change_directory(program, from_policy=config.pwd is not None)
    _install_shields(base, settings, program, image, volumes)
    if config.files:
        from citadel.engine import injected

        injected.install(config.files, [m.mount_path for m in volumes.mounts] if volumes is not None else [])
    _install_processes(image, config.image_key, measurement, config.allowed_executables)
    cas.set_environment(cas.program_environment(request, config))
    _phase("shields installed; running the program")

    from citadel.engine import runner

    context = runner.Context(mode=decision.mode, tee=decision.tee, measurement=measurement,
                             heap=settings.heap, image=image, volumes=volumes)
    return runner.run(program, context)


def _report_image(settings: Settings, image: Optional[SealedImage]) -> None:
    if settings.version:
        _report(f"citadel: image: {image.tag} ({image.root})" if image is not None else "citadel: image: none")


def _report_volumes(settings: Settings, volumes: Optional[VolumeSet]) -> None:
    if volumes is None:
        return
    _phase("volumes opened")
    if settings.version:
        _report("\n".join(f"citadel: volume {name}: {m.volume.tag} ({m.volume.root} at {m.mount_path})"
                          for name, m in zip(volumes.names, volumes.mounts)))


def _phase(what: str) -> None:
    if log.enabled("debug"):
        log.debug(f"{(time.perf_counter() - _started) * 1000:.1f} ms: {what}")


def measurement_for(base: TrustedBase, mode: str, settings: Settings) -> str:
    return compute_measurement(base.manifest_sha256,
                               measured_settings(mode=mode, allow_dlopen=settings.allow_dlopen,
                                                 cas_fingerprint=settings.cas_fingerprint))


def _open_image(request: LaunchRequest) -> SealedImage:
    from citadel.seal.image import SealedImage

    if request.key is None:  # the request parser makes this impossible without a CAS
        raise EngineError("the launch request names an image but no key", "pass the image key with --key-file")
    return SealedImage.open(request.image or "", request.key, expected_tag=request.expected_tag)


def _open_volumes(request: LaunchRequest, image: Optional[SealedImage]) -> VolumeSet:
    """Open the request's volumes (the CAS flow will pass its own binder: key, latest tag, on_commit)."""
    from citadel.engine.volumes import open_volumes

    return open_volumes(request.volumes, image_root=image.root if image is not None else None)


def _change_directory(request: LaunchRequest, *, from_policy: bool = False) -> None:
    cwd = request.cwd or "/"
    try:
        os.chdir(cwd)
    except OSError as exc:
        mount = next((v.mount for v in request.volumes
                      if cwd == v.mount or cwd.startswith(v.mount.rstrip("/") + "/")), None)
        if mount is not None:
            raise EngineError(f"the working directory {cwd} is inside the volume mounted at {mount}, and it does "
                              "not exist on the host", "create the directory on the host (it stays empty: the engine "
                              "serves the volume there), or use a working directory outside the volume") from None
        if from_policy:
            raise EngineError(f"cannot change to the directory {cwd} the session's policy names (pwd): "
                              f"{exc.strerror}", f"create {cwd} on this machine, or ask the session's owner to "
                              "change pwd") from None
        raise EngineError(f"cannot change to the directory {cwd}: {exc.strerror}",
                          "run citadel from a directory that exists") from None


def _install_shields(base: TrustedBase, settings: Settings, request: LaunchRequest,
                     image: Optional[SealedImage], volumes: Optional[VolumeSet]) -> None:
    from citadel.engine import guard

    guard.install(base, allow_dlopen=settings.allow_dlopen)
    if image is None and volumes is None:
        return
    from citadel.engine import fileshield

    if image is not None:
        from citadel.engine import importer

        entry_dir: Optional[str] = ""
        if request.kind == "script":
            from citadel.engine.runner import script_relpath

            entry_dir = script_relpath(image, request.argv[0], request.cwd).rpartition("/")[0]
        importer.install(image, entry_dir=entry_dir)
    fileshield.install(image, volumes)


def _print_version(settings: Settings, decision: tee.ModeDecision, measurement: str, base: TrustedBase) -> None:
    impl = sys.implementation.name
    version = ".".join(str(v) for v in sys.version_info[:3])
    lines = [f"citadel: version: citadel {__version__}, engine {impl} {version} ({sys.executable})"]
    described = settings.describe()
    mode = decision.mode + (f" ({decision.tee})" if decision.tee else "")
    if settings.mode == "auto":
        mode += " (requested auto" + ("" if decision.tee else "; no TEE found") + ")"
    described["CITADEL_MODE"] = mode
    lines += [f"citadel: {name}={value}" for name, value in described.items()]
    if decision.mode == "sim":
        lines.append(f"citadel: {tee.SIMULATION_NOTICE}")
    lines.append(f"citadel: engine manifest: sha256 {base.manifest_sha256}")
    lines.append(f"citadel: measurement: {measurement}")
    _report("\n".join(lines))


def _report(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
