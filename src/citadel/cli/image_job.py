"""Build a launch job from the image arguments of `citadel run` and `citadel python`."""

from __future__ import annotations

import argparse
import os

from citadel.errors import UsageError
from citadel.launch.launcher import LaunchJob
from citadel.seal.keytext import parse_key


def job_from_args(args: argparse.Namespace) -> LaunchJob:
    if args.cwd and not os.path.isdir(args.cwd):
        raise UsageError(f"--cwd {args.cwd!r} is not a directory", "pass an existing directory")
    job = LaunchJob(cwd=os.path.abspath(args.cwd) if args.cwd else os.getcwd())
    if args.image:
        if not os.path.isdir(args.image):
            raise UsageError(f"image {args.image!r} does not exist or is not a directory",
                             "pass the directory written by `citadel seal -o IMAGE`")
        if not args.key_file:
            raise UsageError("--image needs --key-file KEY",
                             "pass the key file written by `citadel seal --key-out` (or run with a CAS session)")
        job.image = args.image
        job.key = parse_key(_read_key_file(args.key_file))
        job.expected_tag = args.tag
    elif args.key_file:
        raise UsageError("--key-file given without --image", "add --image IMAGE")
    return job


def _read_key_file(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read(4096)
    except OSError as exc:
        raise UsageError(f"cannot read the key file {path!r}: {exc.strerror}", "check the --key-file path") from None
