"""An interactive Python inside the protected engine.

Opens the sealed image when --image is given (its modules import as usual), otherwise only the
engine's trusted base is there. The banner states the mode and the engine measurement; in
simulation mode it says plainly what is not protected.

examples:
  citadel python
  citadel python --image app.img --key-file app.key
"""

from __future__ import annotations

import argparse

from citadel.cli.engine_flags import SETTINGS_HELP, add_engine_flags, add_image_arguments, engine_settings
from citadel.cli.image_job import job_from_args
from citadel.launch.launcher import launch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_arguments(parser, required=False)
    add_engine_flags(parser)
    parser.epilog = SETTINGS_HELP


def run(args: argparse.Namespace) -> int:
    job = job_from_args(args)
    job.interactive = True
    return launch(job, engine_settings(args))
