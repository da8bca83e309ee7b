"""Seal a directory tree into an image that only the protected engine can read.

Every file of SRC is put in a region and written to the new directory IMAGE:
  encrypted      the default: AES-256-GCM, so the host can neither read nor change it unnoticed
  authenticated  a readable copy whose integrity is checked: the engine refuses a changed file
  unprotected    a plain copy, never checked: for files the host may change (caches, scratch)
Region rules are glob patterns relative to SRC (`*` also crosses `/`; a pattern naming a directory
covers everything below it). They apply in command-line order, the last match wins, and everything
else is encrypted. --skip leaves paths out of the image entirely. __pycache__ directories are always
left out: the engine compiles sealed code in memory. Symlinks are followed when they stay inside
their tree and refused (naming the link) when they leave it.

Dependencies: --venv VENV seals VENV/lib/python*/site-packages, --python-path DIR any directory of
packages; both become the sealed program's import path, encrypted unless a rule says otherwise
(patterns match them as .citadel/python-path/<i>/...).

The command prints the image tag (what a policy pins) and the image key. The key is a secret:
anyone who has it can decrypt the image. Write it to a private file (mode 0600) with --key-out,
and keep it out of version control.

examples:
  citadel seal app/ -o app.img --key-out app.key
  citadel seal app/ -o app.img --key-file app.key --force --json   # re-seal with the same key
  citadel seal app/ -o full.img --venv .venv --key-out full.key    # with the venv's packages
  citadel seal app/ -o web.img --authenticate 'static/*' --exclude cache --skip .git
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import signal
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from citadel.cli.output import emit_json, info, warn
from citadel.cli.progress import ProgressBar, human_bytes
from citadel.errors import UsageError
from citadel.seal.format import AUTHENTICATED, ENCRYPTED, UNPROTECTED
from citadel.seal.keyfile import key_file_is_shared, read_key_file
from citadel.seal.sealer import SealResult, seal_plan
from citadel.seal.walk import SealPlan, find_relative, plan_seal


class _Append(argparse.Action):
    """Append (tag, value) to one shared list, keeping command-line order across options."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: Optional[str] = None,
    ) -> None:
        items = list(getattr(namespace, self.dest) or [])
        items.append((self.const, values))
        setattr(namespace, self.dest, items)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="the directory to seal (your application)")
    parser.add_argument(
        "-o",
        "--output",
        metavar="IMAGE",
        required=True,
        help="the image directory to create (must not exist, or be empty, unless --force)",
    )
    regions = parser.add_argument_group("regions (applied in order, last match wins, default: encrypted)")
    regions.add_argument(
        "--encrypt",
        dest="rules",
        metavar="PATTERN",
        action=_Append,
        const=ENCRYPTED,
        default=[],
        help="encrypt matching paths",
    )
    regions.add_argument(
        "--authenticate",
        dest="rules",
        metavar="PATTERN",
        action=_Append,
        const=AUTHENTICATED,
        help="keep matching paths readable but integrity-protected",
    )
    regions.add_argument(
        "--exclude",
        dest="rules",
        metavar="PATTERN",
        action=_Append,
        const=UNPROTECTED,
        help="leave matching paths unprotected (copied as they are, never checked)",
    )
    regions.add_argument(
        "--skip",
        metavar="PATTERN",
        action="append",
        default=[],
        help="leave matching paths out of the image entirely (e.g. .git, tests)",
    )
    deps = parser.add_argument_group("dependencies")
    deps.add_argument(
        "--python-path",
        dest="python_paths",
        metavar="DIR",
        action=_Append,
        const="dir",
        default=[],
        help="seal a directory of packages onto the program's import path (repeatable)",
    )
    deps.add_argument(
        "--venv",
        dest="python_paths",
        metavar="VENV",
        action=_Append,
        const="venv",
        help="seal a virtual environment's site-packages (VENV/lib/python*/site-packages)",
    )
    keys = parser.add_argument_group("key")
    keys.add_argument(
        "--key-out", metavar="FILE", help="write the image key to FILE (mode 0600) instead of stdout"
    )
    keys.add_argument("--key-file", metavar="FILE", help="reuse the key in FILE instead of making a new one")
    parser.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="replace an existing IMAGE (only a sealed image) and an existing --key-out FILE",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar or notes (results and warnings stay)"
    )


def run(args: argparse.Namespace) -> int:
    _exit_cleanly_on_termination()
    python_paths, skip = _python_paths(args.src, args.python_paths, list(args.skip))
    key = None
    if args.key_file:
        key = read_key_file(args.key_file)
        if key_file_is_shared(args.key_file):
            warn(f"the key file {args.key_file!r} is readable by others: chmod 600 {args.key_file}")
    plan = plan_seal(args.src, rules=[(p, r) for r, p in args.rules], skip=skip, python_paths=python_paths)
    _warn_about_plan(plan)
    with ProgressBar(plan.bytes, "sealing", enabled=False if args.quiet else None) as bar:
        result = seal_plan(
            plan,
            args.output,
            key=key,
            progress=bar,
            force=args.force,
            key_out=args.key_out,
            key_source=os.path.abspath(args.key_file) if args.key_file else None,
        )
    show_key = result.key_file is None
    if args.json:
        emit_json(_json_doc(result, plan, show_key))
    else:
        _print_summary(result, plan, show_key)
        if show_key and not args.quiet:
            info(
                "citadel: note: the key above is a secret: anyone who has it can decrypt the image. "
                "Store it privately (or use --key-out FILE) and never commit it."
            )
    return 0


def _python_paths(src: str, given: Sequence[Tuple[str, str]], skip: List[str]) -> Tuple[List[str], List[str]]:
    """Resolve --venv into site-packages; venvs inside SRC are left out of SRC's own walk."""
    paths = []
    for kind, value in given:
        if kind == "dir":
            paths.append(value)
            continue
        paths.append(site_packages_of(value))
        rel = find_relative(src, value) if os.path.isdir(src) else None
        if rel:
            skip.append(glob.escape(rel))
    return paths, skip


def site_packages_of(venv: str) -> str:
    """VENV/lib/python*/site-packages, exactly one of them."""
    remedy = "pass the virtual environment's directory (the one holding pyvenv.cfg), or use --python-path DIR"
    if not os.path.isdir(venv):
        raise UsageError(f"--venv {venv!r} does not exist or is not a directory", remedy)
    found = sorted(glob.glob(os.path.join(glob.escape(venv), "lib", "python*", "site-packages")))
    if not found:
        raise UsageError(f"--venv {venv!r} has no lib/python*/site-packages", remedy)
    if len(found) > 1:
        raise UsageError(
            f"--venv {venv!r} has several site-packages: {', '.join(found)}",
            "pick one with --python-path DIR",
        )
    version = os.path.basename(os.path.dirname(found[0]))[len("python") :]
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if version != running:
        warn(
            f"the virtual environment is for Python {version}, this citadel runs Python {running}; "
            f"its compiled extensions load only in an engine running Python {version}"
        )
    return found[0]


def _warn_about_plan(plan: SealPlan) -> None:
    for pattern, region in plan.unmatched:  # a mistyped rule silently changes how the program runs
        if region == "skip":
            continue
        option = {ENCRYPTED: "--encrypt", AUTHENTICATED: "--authenticate", UNPROTECTED: "--exclude"}.get(
            region, "--skip"
        )
        warn(f"{option} {pattern!r} matched no path (patterns are relative to SRC; `*` also crosses `/`)")
    counts = plan.region_counts()
    if not plan.files:
        warn("there are no files to seal; the image will be empty")
    elif counts[UNPROTECTED] == len(plan.files):
        warn("every file is unprotected (--exclude matched them all); the image protects nothing")


def _json_doc(result: SealResult, plan: SealPlan, show_key: bool) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "image": result.image,
        "tag": result.tag,
        "key_file": result.key_file,
        "files": result.files,
        "bytes": result.bytes,
        "regions": dict(result.regions),
        "python_path": [
            {"image_path": image_path, "source": source}
            for image_path, source in zip(result.python_path, plan.python_paths)
        ],
    }
    if show_key:
        doc["key"] = result.key.hex()
    return doc


def _print_summary(result: SealResult, plan: SealPlan, show_key: bool) -> None:
    regions = ", ".join(f"{result.regions.get(r, 0)} {r}" for r in (ENCRYPTED, AUTHENTICATED, UNPROTECTED))
    lines = [("image", result.image), ("tag", result.tag)]
    lines.append(("key", result.key.hex()) if show_key else ("key file", str(result.key_file)))
    lines.append(("files", f"{result.files} ({human_bytes(result.bytes)}): {regions}"))
    for image_path, source in zip(result.python_path, plan.python_paths):
        lines.append(("python path", f"{image_path} <- {source}"))
    width = max(len(label) for label, _ in lines) + 1
    for label, value in lines:
        print(f"{label + ':':<{width}} {value}")


def _exit_cleanly_on_termination() -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so the staging directory is removed, not left behind."""

    def _stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            with contextlib.suppress(ValueError):  # not the main thread (embedded use): keep the default
                signal.signal(sig, _stop)
