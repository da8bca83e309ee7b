"""Start the engine as an isolated interpreter and hand it its job through a pipe.

The job (image, key, program, volumes with their keys) travels as a JSON launch request through
a pipe whose read end the engine inherits (CITADEL_LAUNCH_FD), so no key ever appears in argv or
the environment (docs/engine.md). The engine reports its own errors; the launcher only explains signals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any, Dict, List, Mapping, NamedTuple, Optional

from citadel.engine.command import engine_command, engine_environment
from citadel.launch.advice import advice_for, exit_status

LAUNCH_REQUEST_VERSION = 1
#: CITADEL_* variables of the client commands and the CAS server, not engine settings: never passed on
CLIENT_ONLY = frozenset({"CITADEL_CAS_STATE_DIR", "CITADEL_CLIENT_KEY", "CITADEL_CAS_SETTINGS"})


class LaunchJob:
    """What the engine should run. Without an image only the trusted base is available.

    (A plain class: `citadel run` starts on every invocation, and dataclasses cost milliseconds.)
    """

    def __init__(self, argv: Optional[List[str]] = None, module: Optional[str] = None, interactive: bool = False,
                 image: Optional[str] = None, key: Optional[bytes] = None, expected_tag: Optional[str] = None,
                 cwd: Optional[str] = None, cas: Optional[Dict[str, str]] = None,
                 volumes: Optional[List[Dict[str, Any]]] = None, host_env: Optional[Mapping[str, str]] = None,
                 host_args: Optional[List[str]] = None) -> None:
        self.argv: List[str] = list(argv or [])  # script (or module) and its arguments
        self.module = module  # run like `python -m module`
        self.interactive = interactive
        self.image = image
        self.key = key
        self.expected_tag = expected_tag
        self.cwd = cwd or os.getcwd()
        self.cas = cas  # where to attest and which configuration to ask for (the CAS flow)
        # volumes to mount: the launch request's "volumes" entries (docs/engine.md); keys travel only here
        self.volumes: List[Dict[str, Any]] = list(volumes or [])
        # the CAS flow: the host's environment and arguments; the engine passes on only what the policy names
        self.host_env: Dict[str, str] = dict(host_env or {})
        self.host_args: List[str] = list(host_args or [])

    def request(self) -> bytes:
        doc: Dict[str, Any] = {
            "version": LAUNCH_REQUEST_VERSION,
            "image": os.path.abspath(self.image) if self.image else None,
            "key": self.key.hex() if self.key else None,
            "expected_tag": self.expected_tag,
            "argv": list(self.argv),
            "module": self.module,
            "interactive": self.interactive,
            "cwd": os.path.abspath(self.cwd),
        }
        if self.cas is not None:
            doc["cas"] = self.cas
            doc["host_env"] = self.host_env
            doc["host_args"] = self.host_args
        if self.volumes:
            doc["volumes"] = self.volumes
        return json.dumps(doc).encode()


def launch(job: LaunchJob, settings: Mapping[str, str], *, python: Optional[str] = None) -> int:
    """Run the engine to completion; return the exit status to give the user."""
    return run_engine(job, settings, python=python).status


class EngineResult(NamedTuple):
    status: int  # what citadel should exit with
    stdout: Optional[bytes]  # the engine's output, when captured


def run_engine(job: LaunchJob, settings: Mapping[str, str], *, python: Optional[str] = None,
               capture: bool = False) -> EngineResult:
    """Start the engine, give it its job, wait, and explain a violent end."""
    read_end, write_end = os.pipe()
    env = engine_environment(settings)
    env["CITADEL_LAUNCH_FD"] = str(read_end)
    payload = job.request()
    try:
        proc = subprocess.Popen(engine_command(python, settings.get("CITADEL_ENGINE")), env=env,
                                pass_fds=(read_end,), cwd=job.cwd, stdout=subprocess.PIPE if capture else None)
    except OSError as exc:
        os.close(read_end)
        os.close(write_end)
        from citadel.errors import EngineError

        raise EngineError(f"cannot start the engine interpreter: {exc.strerror}",
                          "check that Python is installed where citadel was installed from") from None
    os.close(read_end)
    try:
        _write_all(write_end, payload)
    finally:
        os.close(write_end)
    # The terminal delivers Ctrl-C to the engine too; the launcher waits for it to finish.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        output = proc.communicate()[0] if capture else None
        returncode = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    advice = advice_for(returncode)
    if advice is not None:
        print(advice.render(), file=sys.stderr)
    return EngineResult(exit_status(returncode), output)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BrokenPipeError:
            return  # the engine exited before reading its job; its exit status tells why
        view = view[written:]


def settings_from_environment(environ: Mapping[str, str], overrides: Mapping[str, Optional[str]]) -> Dict[str, str]:
    """CITADEL_* settings from the host environment, with command-line flags taking precedence."""
    settings = {k: v for k, v in environ.items()
                if k.startswith("CITADEL_") and k != "CITADEL_LAUNCH_FD" and k not in CLIENT_ONLY}
    for key, value in overrides.items():
        if value is not None:
            settings[key] = value
    return settings
