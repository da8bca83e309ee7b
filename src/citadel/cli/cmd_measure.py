"""Print the engine measurement: the value a policy pins to accept this engine.

The measurement is computed by the engine itself, exactly as at every start, from the engine
manifest (the interpreter, the standard library, `cryptography`, the engine's own files and the
libraries they map) and the security-relevant settings; docs/measurement.md lists the inputs so
anyone can recompute it. Settings that are part of it, such as --mode and --allow-dlopen,
change it. After upgrading Python or Citadel, --rebuild records the files installed now.

examples:
  citadel measure
  citadel measure --mode sim --json
  citadel measure --rebuild
"""

from __future__ import annotations

import argparse

from citadel.cli.engine_flags import add_engine_flags, engine_settings
from citadel.cli.output import emit_json
from citadel.engine.command import manifest_paths, measure_engine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_flags(parser)
    parser.add_argument("--rebuild", action="store_true",
                        help="rebuild the engine manifest from the files installed now, then measure")
    parser.add_argument("--json", action="store_true", help="print a JSON object for scripts")


def run(args: argparse.Namespace) -> int:
    settings = engine_settings(args)
    settings.pop("CITADEL_VERSION", None)
    measurement = measure_engine(settings_env=settings, rebuild=args.rebuild)
    if args.json:
        manifest, _cache = manifest_paths(settings_env=settings)
        emit_json({"measurement": measurement, "engine_manifest": manifest,
                   "settings": {k: v for k, v in settings.items() if k in ("CITADEL_MODE", "CITADEL_ALLOW_DLOPEN")}})
    else:
        print(measurement)
    return 0
