"""Check this machine: interpreter, memfd, TEE devices, settings and the engine itself.

Each check prints ok, warn or FAIL with what it found; the exit status is 1 if any check
failed. Run it first when `citadel run` does not start, and include its --json output in bug
reports.

examples:
  citadel doctor
  citadel doctor --json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Callable, List, Tuple

from citadel import __version__
from citadel.cli.output import emit_json
from citadel.errors import CitadelError

Check = Tuple[str, str, str]  # (name, status ok|warn|FAIL, detail)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON object for scripts")


def _python() -> Check:
    ok = sys.version_info >= (3, 9)
    return ("python", "ok" if ok else "FAIL", f"{platform.python_implementation()} {platform.python_version()} "
            f"at {sys.executable}")


def _cryptography() -> Check:
    try:
        import cryptography
    except ImportError:
        return ("cryptography", "FAIL", "not installed: pip install cryptography")
    return ("cryptography", "ok", f"{cryptography.__version__}")


def _memfd() -> Check:
    if not hasattr(os, "memfd_create"):
        return ("memfd", "FAIL", "os.memfd_create is missing: C extensions cannot load from memory")
    fd = os.memfd_create("citadel-doctor", os.MFD_CLOEXEC)
    os.close(fd)
    return ("memfd", "ok", "memfd_create works (sealed C extensions load from memory)")


def _tee() -> Check:
    from citadel.engine.tee import probe

    probes = probe(os.environ.get("CITADEL_TEE_ROOT", "/"))
    found = [p for p in probes if p.found]
    detail = "; ".join(p.describe() for p in probes)
    if found:
        return ("tee", "ok", f"hw mode available ({found[0].kind}): {detail}")
    return ("tee", "warn", f"no TEE found, engines run in simulation mode (memory not protected from root): {detail}")


def _settings() -> Check:
    from citadel.engine.settings import parse_settings

    env = {k: v for k, v in os.environ.items() if k.startswith("CITADEL_")}
    try:
        parsed = parse_settings(env)
    except CitadelError as exc:
        return ("settings", "FAIL", f"{exc.cause} ({exc.remedy})" if exc.remedy else exc.cause)
    return ("settings", "ok", ", ".join(f"{k}={v}" for k, v in parsed.describe().items()))


def _engine() -> Check:
    from citadel.engine.command import measure_engine

    try:
        measurement = measure_engine(settings_env={k: v for k, v in os.environ.items() if k.startswith("CITADEL_")})
    except CitadelError as exc:
        return ("engine", "FAIL", f"{exc.cause} ({exc.remedy})")
    return ("engine", "ok", f"starts and verifies itself; measurement {measurement}")


CHECKS: List[Callable[[], Check]] = [_python, _cryptography, _memfd, _tee, _settings, _engine]


def run(args: argparse.Namespace) -> int:
    results = [check() for check in CHECKS]
    if args.json:
        emit_json({"citadel": __version__, "checks": [{"name": n, "status": s, "detail": d} for n, s, d in results]})
    else:
        print(f"citadel {__version__}")
        for name, status, detail in results:
            print(f"  {status:<4} {name:<13} {detail}")
    return 1 if any(status == "FAIL" for _, status, _ in results) else 0
