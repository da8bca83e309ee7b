"""Print the engine measurement: the value a policy pins to accept this engine.

The measurement is computed by the engine itself, exactly as at every start, from the
interpreter, the engine's files and their dependencies, and the security-relevant settings
(docs/measurement.md lists the inputs so anyone can recompute it). Settings that are part of
it, such as --mode and --allow-dlopen, change it.

examples:
  citadel measure
  citadel measure --mode sim --json
"""

from __future__ import annotations

import argparse

from citadel.cli.engine_flags import add_engine_flags, engine_settings
from citadel.cli.output import emit_json
from citadel.errors import EngineError
from citadel.launch.launcher import LaunchJob, run_engine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_flags(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON object for scripts")


def run(args: argparse.Namespace) -> int:
    settings = engine_settings(args, {"CITADEL_HASH": "1"})
    settings.pop("CITADEL_VERSION", None)
    result = run_engine(LaunchJob(interactive=True), settings, capture=True)
    if result.status != 0:
        return result.status  # the engine has said why on stderr
    measurement = (result.stdout or b"").decode().strip()
    if len(measurement) != 64:
        raise EngineError(f"the engine printed an unexpected measurement {measurement[:80]!r}",
                          "reinstall citadel; run with CITADEL_LOG=debug for details")
    if args.json:
        emit_json({"measurement": measurement, "settings": {k: v for k, v in settings.items() if k != "CITADEL_HASH"}})
    else:
        print(measurement)
    return 0
