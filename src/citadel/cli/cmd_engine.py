"""Set up the interpreters the engine can run on.

`citadel engine setup pypy3` makes the PyPy engine's environment (a PyPy 3.9 venv with the
`cryptography` release that has a PyPy wheel) where `--engine pypy3` looks for it, and compiles
the engine's own modules for PyPy. Debian's `pypy3` and `pypy3-venv` packages must be installed.
After it, `citadel measure --engine pypy3` prints the PyPy engine's measurement.

examples:
  sudo apt-get install -y pypy3 pypy3-venv
  citadel engine setup pypy3
  citadel engine setup pypy3 --target /opt/citadel/pypy-engine
"""

from __future__ import annotations

import argparse

from citadel.cli.output import emit_json
from citadel.engine.engines import pypy_engine_dir, setup_pypy_engine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    setup = actions.add_parser("setup", help="make an engine's environment", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    setup.add_argument("engine", choices=["pypy3"], help="the engine to set up")
    setup.add_argument("--target", metavar="DIR", help=f"where to make it (default: {pypy_engine_dir()})")
    setup.add_argument("--pypy", default="pypy3", metavar="PYPY", help="the PyPy interpreter to use (default: pypy3)")
    setup.add_argument("--json", action="store_true", help="print a JSON object for scripts")


def run(args: argparse.Namespace) -> int:
    python = setup_pypy_engine(args.target, pypy=args.pypy)
    if args.json:
        emit_json({"engine": args.engine, "python": python})
    else:
        print(f"the {args.engine} engine is ready: {python}")
        print("use it with `citadel run --engine pypy3 ...`; `citadel measure --engine pypy3` prints its measurement")
    return 0
