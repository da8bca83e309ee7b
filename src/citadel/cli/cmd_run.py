"""Run a sealed program in the protected engine.

The engine starts as an isolated interpreter (python -I -S, a clean environment), checks the
image against its key (and --tag, when given), installs its shields, and runs the program: a
script path inside the image, or a module with -m. The program's exit status is citadel's.
Encrypted volumes (--volume) appear to the program as ordinary directories at their mount paths;
what it writes there is committed at every os.fsync, when the last writer closes, and at exit.

With a CAS (--cas, --config-id) the engine first attests and receives its configuration: the
image key and tag, the program, its environment, injected files and volume keys all come from
the session's policy, and the host names only the image, where volumes are stored, and the
arguments after -- (passed on only if the policy allows).

examples:
  citadel run --image app.img --key-file app.key app.py --input data.csv
  citadel run --image app.img --key-file app.key -m mypackage.cli
  citadel run --image app.img --key-file app.key --tag-store tags.json \\
      --volume in=vol-in:/data/in:ro --volume-key in=in.key \\
      --volume out=vol-out:/data/out --volume-key out=out.key --volume-create out -- app.py
  CITADEL_HEAP=512M CITADEL_VERSION=1 citadel run --image app.img --key-file app.key app.py
  citadel run --cas https://127.0.0.1:8443 --config-id hello/app --image hello.img
  citadel run --cas https://cas.example:8443 --cas-fingerprint sha256:6d2c... --config-id demo/job \\
      --image job.img --volume results=./vol-results -- --verbose
"""

from __future__ import annotations

import argparse

from citadel.cli.engine_flags import (
    CAS_HELP,
    CAS_SETTINGS_HELP,
    SETTINGS_HELP,
    VOLUMES_HELP,
    add_cas_arguments,
    add_engine_flags,
    add_image_arguments,
    add_volume_arguments,
    engine_settings,
)
from citadel.cli.image_job import cas_job_from_args, cas_requested, job_from_args, volumes_from_args
from citadel.errors import UsageError
from citadel.launch.launcher import launch

#: below the engine's own statuses: the engine attested and the program ran (its own status)
_PROGRAM_STATUSES = range(0, 64)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_arguments(parser, required=False)
    parser.add_argument("-m", dest="module", metavar="MODULE", help="run a sealed module, like python -m")
    add_volume_arguments(parser)
    add_cas_arguments(parser)
    add_engine_flags(parser)
    parser.add_argument("program", nargs=argparse.REMAINDER, metavar="[--] SCRIPT ARGS",
                        help="the script (a path inside the image) and its arguments; with a CAS, arguments "
                             "the session's policy may pass on")
    parser.epilog = VOLUMES_HELP + "\n" + CAS_HELP + "\n" + SETTINGS_HELP + CAS_SETTINGS_HELP


def run(args: argparse.Namespace) -> int:
    program = list(args.program)
    if program and program[0] == "--":
        program = program[1:]
    if cas_requested(args):
        return _run_with_cas(args, program)
    if not args.image:
        raise UsageError("--image is required", "pass the sealed image: --image IMAGE --key-file KEY, or "
                         "--cas URL --config-id SESSION/SERVICE --image IMAGE")
    job = job_from_args(args, volumes_from_args(args))
    if args.module:
        job.module = args.module
        job.argv = [args.module, *program]
    elif program:
        job.argv = program
    else:
        raise UsageError("nothing to run", "name a script inside the image (e.g. app.py) or a module with -m")
    return launch(job, engine_settings(args))


def _run_with_cas(args: argparse.Namespace, host_args: list) -> int:
    from citadel.launch.caspin import remember

    cas_job = cas_job_from_args(args, host_args)
    status = launch(cas_job.job, engine_settings(args, dict(cas_job.settings)))
    if cas_job.pinned.explicit and status in _PROGRAM_STATUSES:
        remember(cas_job.pinned)  # the engine got past the pinned connection: remember it, as session commands do
    return status
