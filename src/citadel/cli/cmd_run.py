"""Run a sealed program in the protected engine.

The engine starts as an isolated interpreter (python -I -S, a clean environment), checks the
image against its key (and --tag, when given), installs its shields, and runs the program: a
script path inside the image, or a module with -m. The program's exit status is citadel's.
Encrypted volumes (--volume) appear to the program as ordinary directories at their mount paths;
what it writes there is committed at every os.fsync, when the last writer closes, and at exit.

examples:
  citadel run --image app.img --key-file app.key app.py --input data.csv
  citadel run --image app.img --key-file app.key -m mypackage.cli
  citadel run --image app.img --key-file app.key --tag-store tags.json \\
      --volume in=vol-in:/data/in:ro --volume-key in=in.key \\
      --volume out=vol-out:/data/out --volume-key out=out.key --volume-create out -- app.py
  CITADEL_HEAP=512M CITADEL_VERSION=1 citadel run --image app.img --key-file app.key app.py
"""

from __future__ import annotations

import argparse

from citadel.cli.engine_flags import (
    SETTINGS_HELP,
    VOLUMES_HELP,
    add_engine_flags,
    add_image_arguments,
    add_volume_arguments,
    engine_settings,
)
from citadel.cli.image_job import job_from_args, volumes_from_args
from citadel.errors import UsageError
from citadel.launch.launcher import launch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_arguments(parser, required=True)
    parser.add_argument("-m", dest="module", metavar="MODULE", help="run a sealed module, like python -m")
    add_volume_arguments(parser)
    add_engine_flags(parser)
    parser.add_argument("program", nargs=argparse.REMAINDER, metavar="[--] SCRIPT ARGS",
                        help="the script (a path inside the image) and its arguments")
    parser.epilog = VOLUMES_HELP + "\n" + SETTINGS_HELP


def run(args: argparse.Namespace) -> int:
    program = list(args.program)
    if program and program[0] == "--":
        program = program[1:]
    job = job_from_args(args, volumes_from_args(args))
    if args.module:
        job.module = args.module
        job.argv = [args.module, *program]
    elif program:
        job.argv = program
    else:
        raise UsageError("nothing to run", "name a script inside the image (e.g. app.py) or a module with -m")
    return launch(job, engine_settings(args))
