"""Entry point of the `citadel` command.

Each subcommand lives in its own module ``citadel.cli.cmd_<name>`` exposing
``add_arguments(parser)`` and ``run(args) -> int``. Only the module of the command being run is
imported, so `citadel run` starts fast; `citadel --help` lists the commands from the table below.
"""

from __future__ import annotations

import argparse
import importlib
import os
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
    "platform": ("citadel.cli.cmd_platform", "register the machines (sim keys, TPMs) whose engines a CAS accepts"),
    "volume": ("citadel.cli.cmd_volume", "create, inspect, import into and export from encrypted volumes"),
    "engine": ("citadel.cli.cmd_engine", "set up the interpreters the engine can run on (PyPy)"),
    "doctor": ("citadel.cli.cmd_doctor", "check this machine: interpreter, TEE devices, settings"),
}

EPILOG = """\
examples:
  citadel seal app/ -o app.img --key-out app.key          # seal; prints the image tag
  citadel run --image app.img --key-file app.key app.py   # run it in the protected engine
  citadel doctor                                          # check this machine first
  citadel COMMAND --help                                  # each command, with examples

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
    try:
        status = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" at interpreter exit
        return status
    except SystemExit:  # argparse: --help, --version, usage errors
        if not _flushed():
            return 141
        raise
    except BrokenPipeError:  # `citadel ... | head`: the reader left; say nothing more, like other tools
        _silence_stdout()
        return 141


def _flushed() -> bool:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return False
    return True


def _main(argv: Optional[List[str]]) -> int:
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
    except BrokenPipeError:
        raise  # main() stops quietly
    except OSError as exc:  # a file or network error no command turned into a CitadelError
        print(_os_error(exc).diagnostics(), file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, reported without a traceback
        print(_internal_error(exc).diagnostics(), file=sys.stderr)
        return 70


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _os_error(exc: OSError) -> CitadelError:
    what = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    return CitadelError(f"{what}{where}",
                        "check that the path exists and that you may read or write it, then run the command again")


def _internal_error(exc: Exception) -> CitadelError:
    """An unexpected exception: one line for the person, the traceback in a private file for the bug report."""
    import tempfile
    import traceback

    saved = ""
    try:
        fd, path = tempfile.mkstemp(prefix="citadel-error-", suffix=".txt")  # mode 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(f"citadel {__version__}\nargv: {sys.argv!r}\n\n")
            fh.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        saved = f" (details in {path})"
    except OSError:
        pass
    return CitadelError(f"internal error: {type(exc).__name__}: {exc}",
                        f"this is a bug in Citadel, not in your input; please report it{saved}")


if __name__ == "__main__":
    sys.exit(main())
