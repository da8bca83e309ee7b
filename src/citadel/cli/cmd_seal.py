"""Seal a directory tree into an image that only the protected engine can read.

Every file of SRC is put in a region and written to the new directory IMAGE:
  encrypted      the default: AES-256-GCM, so the host can neither read nor change it unnoticed
  authenticated  a readable copy whose integrity is checked: the engine refuses a changed file
  unprotected    a plain copy, never checked: for files the host may change (caches, scratch)
Region rules are glob patterns relative to SRC (`*` also crosses `/`; a pattern naming a directory
covers everything below it). They apply in command-line order, the last match wins, and everything
else is encrypted. --skip leaves paths out of the image entirely. Symlinks are followed when they
stay inside their tree and refused (naming the link) when they leave it.

Bytecode: the host's __pycache__ directories are left out (they may be stale); instead every
protected .py is compiled, in memory, by the Python running this command, and sealed beside its
source as __pycache__/NAME.<tag>.pyc in the same region, so the engine (running the same Python
version) imports without compiling. Files that do not compile are sealed as source only.
--no-compile turns this off.

Dependencies: --venv VENV seals VENV/lib/python*/site-packages, --python-path DIR any directory of
packages; both become the sealed program's import path, encrypted unless a rule says otherwise
(patterns match them as .citadel/python-path/<i>/...). Host libraries that sealed C extensions
need (libstdc++.so.6, libz.so.1, ...; not glibc's core) are found as this machine's dynamic linker
would and sealed, authenticated, at .citadel/native/<name>, so the engine loads them verified
(--encrypt .citadel/native encrypts them; --no-bundle-native turns this off).

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
from citadel.seal.bytecode import CompileReport
from citadel.seal.format import AUTHENTICATED, ENCRYPTED, UNPROTECTED
from citadel.seal.keyfile import key_file_is_shared, read_key_file
from citadel.seal.native import NativePlan
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
    deps.add_argument(
        "--no-bundle-native",
        dest="bundle_native",
        action="store_false",
        help="do not seal the host libraries that sealed C extensions need (.citadel/native/)",
    )
    deps.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="do not seal freshly compiled bytecode beside each .py (the engine then compiles at import)",
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
    plan = plan_seal(
        args.src,
        rules=[(p, r) for r, p in args.rules],
        skip=skip,
        python_paths=python_paths,
        bundle_native=args.bundle_native,
    )
    _warn_about_plan(plan)
    with ProgressBar(plan.total_bytes, "sealing", enabled=False if args.quiet else None) as bar:
        result = seal_plan(
            plan,
            args.output,
            key=key,
            progress=bar,
            force=args.force,
            key_out=args.key_out,
            key_source=os.path.abspath(args.key_file) if args.key_file else None,
            compile_bytecode=args.compile,
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
    if plan.native is not None:
        _warn_about_native(plan.native)


def _warn_about_native(native: NativePlan) -> None:
    """Whatever will make the engine refuse a sealed extension's library, said before sealing."""
    for missing in native.missing:
        if missing.reason == "not found on this machine":
            remedy = (
                "install it here (so that `ldconfig -p` lists it, or put its directory on LD_LIBRARY_PATH) "
                "and seal again, or pass --no-bundle-native to stop bundling"
            )
        else:
            remedy = "rebuild the extension without it, or pass --no-bundle-native to stop bundling"
        warn(
            f"the library {missing.name}, needed by {missing.needed_by}, cannot be bundled: {missing.reason}; "
            f"the engine will refuse to load what needs it. To fix: {remedy}"
        )
    if native.unreadable:
        rel, why = native.unreadable[0]
        more = f" (and {len(native.unreadable) - 1} more)" if len(native.unreadable) > 1 else ""
        warn(f"the libraries of {rel}{more} were not bundled: {why}; the engine cannot load it either")
    for lib in native.libraries:
        if lib.region == UNPROTECTED:
            warn(
                f"{lib.rel} is unprotected by your --exclude rules: the engine loads only protected "
                "libraries, so it will refuse what needs it"
            )


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
        "bytecode": _bytecode_doc(result.bytecode),
        "native": _native_doc(result.native),
    }
    if show_key:
        doc["key"] = result.key.hex()
    return doc


def _bytecode_doc(report: CompileReport) -> Dict[str, Any]:
    return {
        "enabled": report.enabled,
        "cache_tag": report.cache_tag,
        "compiled": report.compiled,
        "bytes": report.bytes,
        "failed": [{"path": path, "reason": why} for path, why in report.failed],
    }


def _native_doc(native: Optional[NativePlan]) -> Dict[str, Any]:
    if native is None:
        return {"enabled": False, "libraries": [], "missing": [], "unreadable": [], "skipped": []}
    return {
        "enabled": True,
        "libraries": [
            {
                "name": lib.name,
                "image_path": lib.rel,
                "source": lib.host,
                "found": lib.found,
                "soname": lib.soname,
                "region": lib.region,
                "bytes": lib.size,
                "needed_by": list(lib.needed_by),
            }
            for lib in native.libraries
        ],
        "missing": [{"name": m.name, "needed_by": m.needed_by, "reason": m.reason} for m in native.missing],
        "unreadable": [{"path": path, "reason": why} for path, why in native.unreadable],
        "skipped": list(native.skipped),
    }


def _print_summary(result: SealResult, plan: SealPlan, show_key: bool) -> None:
    regions = ", ".join(f"{result.regions.get(r, 0)} {r}" for r in (ENCRYPTED, AUTHENTICATED, UNPROTECTED))
    lines = [("image", result.image), ("tag", result.tag)]
    lines.append(("key", result.key.hex()) if show_key else ("key file", str(result.key_file)))
    lines.append(("files", f"{result.files} ({human_bytes(result.bytes)}): {regions}"))
    for image_path, source in zip(result.python_path, plan.python_paths):
        lines.append(("python path", f"{image_path} <- {source}"))
    report = result.bytecode
    if report.enabled and report.cache_tag is None:
        lines.append(("bytecode", "none: this Python keeps no bytecode cache (sys.implementation.cache_tag)"))
    elif report.enabled:
        modules = "module" if report.compiled == 1 else "modules"
        text = f"{report.compiled} {modules} compiled for {report.cache_tag} ({human_bytes(report.bytes)})"
        if report.failed:
            text += f"; {len(report.failed)} sealed as source only (they do not compile; --json lists them)"
        lines.append(("bytecode", text))
    for lib in result.native.libraries if result.native is not None else []:
        lines.append(("native", f"{lib.name} <- {lib.host} ({lib.region})"))
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
