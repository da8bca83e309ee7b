"""Print the engine measurement: the value a policy pins to accept this engine.

The measurement is computed by the engine itself, exactly as at every start, from the engine
manifest (the interpreter, the standard library, `cryptography`, the engine's own files and the
libraries they map) and the security-relevant settings; docs/measurement.md lists the inputs so
anyone can recompute it. Settings that are part of it, such as --mode and --allow-dlopen,
change it, and so does the pinned CAS key: measure with the --cas (and --cas-fingerprint) that
`citadel run` will use, since an engine pointed at another CAS has another measurement.
After upgrading Python or Citadel, --rebuild records the files installed now.

examples:
  citadel measure
  citadel measure --mode sim --json
  citadel measure --mode sim --cas https://127.0.0.1:8443      # the value a session pins for this CAS
  citadel measure --rebuild
"""

from __future__ import annotations

import argparse
import os
from typing import Dict, Optional

from citadel.cli.engine_flags import SETTINGS_HELP, add_cas_arguments, add_engine_flags, engine_settings
from citadel.cli.output import emit_json
from citadel.engine.command import manifest_paths, measure_engine

#: set, they mean a CAS is in use: measure with its pin, as `citadel run` will run
CAS_VARIABLES = ("CITADEL_CAS_ADDR", "CITADEL_CONFIG_ID", "CITADEL_CAS_FINGERPRINT")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_flags(parser)
    add_cas_arguments(parser, config_id=False)
    parser.add_argument("--rebuild", action="store_true",
                        help="rebuild the engine manifest from the files installed now, then measure")
    parser.add_argument("--json", action="store_true", help="print a JSON object for scripts")
    parser.epilog = SETTINGS_HELP


def run(args: argparse.Namespace) -> int:
    extra: Dict[str, Optional[str]] = {}
    url = None
    if args.cas or args.cas_fingerprint or any(os.environ.get(name) for name in CAS_VARIABLES):
        from citadel.launch.caspin import resolve_pin

        pinned = resolve_pin(args.cas, args.cas_fingerprint)  # what `citadel run --cas` pins, by the same rules
        extra["CITADEL_CAS_FINGERPRINT"] = pinned.fingerprint
        url = pinned.url
    settings = engine_settings(args, extra)
    settings.pop("CITADEL_VERSION", None)
    measurement = measure_engine(settings_env=settings, rebuild=args.rebuild)
    if args.json:
        manifest, _cache = manifest_paths(settings_env=settings)
        measured = ("CITADEL_MODE", "CITADEL_ALLOW_DLOPEN", "CITADEL_CAS_FINGERPRINT")
        emit_json({"measurement": measurement, "engine_manifest": manifest, "cas": url,
                   "settings": {k: v for k, v in settings.items() if k in measured}})
    else:
        print(measurement)
    return 0
