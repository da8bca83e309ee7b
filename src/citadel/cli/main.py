"""Entry point of the `citadel` command.

Each subcommand lives in its own module ``citadel.cli.cmd_<name>`` exposing
``add_arguments(parser)`` and ``run(args) -> int``. Only the module of the command being run is
imported, so `citadel run` starts fast; `citadel --help` lists the commands from the table below.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from citadel import __version__
from citadel.errors import CitadelError

# name -> (module, one-line help). Order is the order `citadel --help` shows.
COMMANDS = {
    "seal": ("citadel.cli.cmd_seal", "seal a directory tree (and its python path) into an image"),
    "run": ("citadel.cli.cmd_run", "run a sealed program in the protected engine"),
    "python": ("citadel.cli.cmd_python", "an interactive Python inside the protected engine"),
    "measure": ("citadel.cli.cmd_measure", "print the engine measurement a policy pins"),
    "evidence": ("citadel.cli.cmd_evidence", "verify TEE evidence (SGX, TDX, SEV-SNP, TPM)"),
    "collateral": ("citadel.cli.cmd_collateral", "fetch or inspect verification collateral"),
    "cas": ("citadel.cli.cmd_cas", "run and operate a Configuration and Attestation Service"),
    "session": ("citadel.cli.cmd_session", "create, update and inspect policies (sessions) on a CAS"),
    "platform": ("citadel.cli.cmd_platform", "register simulation-mode platforms with a CAS"),
    "volume": ("citadel.cli.cmd_volume", "create, inspect, import into and export from encrypted volumes"),
    "doctor": ("citadel.cli.cmd_doctor", "check this machine: interpreter, TEE devices, settings"),
}

EPILOG = """\
Settings come from CITADEL_* environment variables or flags (see `citadel run --help`).
Documentation: README.md and docs/ in the Citadel source tree."""


def _available() -> dict:
    """Commands whose module is present in this installation."""
    from importlib.util import find_spec

    return {name: spec for name, spec in COMMANDS.items() if find_spec(spec[0]) is not None}


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="citadel",
        description="Run Python on machines you don't trust: seal code and data, run it in an attested engine.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"citadel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in _available().items():
        if name != only:  # only the command being run is imported: start-up stays fast
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        command = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    first = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(only=first if first in COMMANDS else None)
    args = parser.parse_args(args_list)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except CitadelError as exc:
        print(exc.diagnostics(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("citadel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
