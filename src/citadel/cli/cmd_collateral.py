"""Fetch verification collateral into a cache directory, or list what a cache holds.

  citadel collateral fetch --kind snp REPORT --cache DIR [--product Milan|Genoa|Turin] [--kds-url URL]
  citadel collateral fetch --kind sgx|tdx QUOTE --cache DIR [--pcs-url URL] [--intel-certs-url URL]
  citadel collateral fetch --kind sgx|tdx --fmspc HEX --ca processor|platform --cache DIR
  citadel collateral list DIR

Fetching needs the network (Intel PCS, AMD KDS, or a mirror named by the URL options); verifying
never does: pass the cache to `citadel evidence verify --collateral DIR`.
"""

from __future__ import annotations

import argparse
import math
import urllib.parse
from pathlib import Path
from typing import Optional

from citadel.cli.helptext import add_action
from citadel.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from citadel.attest import collateral_fetch as cf

    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    fetch = add_action(sub, "fetch", "fetch the collateral a piece of evidence needs into a cache directory", [
        "citadel collateral fetch --kind sgx quote.bin --cache collateral/",
        "citadel collateral fetch --kind snp report.bin --product Genoa --cache collateral/",
        "citadel collateral fetch --kind tdx --fmspc 00806f050000 --ca platform --cache collateral/",
    ])
    fetch.add_argument("evidence", type=Path, nargs="?", help="the quote or report to fetch collateral for")
    fetch.add_argument("--kind", required=True, choices=("sgx", "tdx", "snp"), help="what kind of evidence")
    fetch.add_argument(
        "--cache",
        type=Path,
        required=True,
        metavar="DIR",
        help="collateral cache directory (created if absent)",
    )
    fetch.add_argument("--fmspc", metavar="HEX", help="sgx/tdx without a quote: the platform's FMSPC (12 hex digits)")
    fetch.add_argument("--ca", choices=("processor", "platform"), help="sgx/tdx without a quote: the PCK CA")
    fetch.add_argument("--product", choices=("Milan", "Genoa", "Turin"), help="snp: the CPU of a v2 report")
    fetch.add_argument(
        "--pcs-url", default=cf.INTEL_PCS_URL, metavar="URL", help="Intel PCS base URL (default: %(default)s)"
    )
    fetch.add_argument("--intel-certs-url", default=cf.INTEL_CERTS_URL, metavar="URL", help="Intel root CRL base URL")
    fetch.add_argument(
        "--kds-url", default=cf.AMD_KDS_URL, metavar="URL", help="AMD KDS base URL (default: %(default)s)"
    )
    fetch.add_argument("--timeout", type=float, default=cf.TIMEOUT, metavar="SECONDS", help="seconds per request")
    fetch.set_defaults(_action=run_fetch)

    listing = add_action(sub, "list", "list the files of a collateral cache", ["citadel collateral list collateral/"])
    listing.add_argument("cache", type=Path)
    listing.set_defaults(_action=run_list)


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "_action", None)
    if action is None:
        raise UsageError("missing action", "use `citadel collateral fetch` or `citadel collateral list`")
    result: int = action(args)
    return result


def _evidence(path: Optional[Path]) -> Optional[bytes]:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the evidence {str(path)!r}: {exc.strerror or exc}",
                         "give the quote or report file the collateral is for") from None


def _check_fetch_arguments(args: argparse.Namespace) -> None:
    """Refuse what would fail after the network round trips: a --cache that is a file, a bad timeout or URL."""
    if args.cache.exists() and not args.cache.is_dir():
        raise UsageError(f"--cache {str(args.cache)!r} is a file, not a directory",
                         "give a directory (it is created if absent)")
    if not math.isfinite(args.timeout) or args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout} is not a positive number of seconds", "e.g. --timeout 30")
    for flag in ("pcs_url", "intel_certs_url", "kds_url"):
        url = getattr(args, flag)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            option = "--" + flag.replace("_", "-")
            raise UsageError(f"{option} {url!r} is not an http(s) URL", f"e.g. {option} https://pcs.example.com")


def run_fetch(args: argparse.Namespace) -> int:
    from citadel.attest import collateral_fetch as cf

    _check_fetch_arguments(args)
    evidence = _evidence(args.evidence)
    if args.kind == "snp":
        if evidence is None:
            raise UsageError(
                "fetching SEV-SNP collateral needs the report", "citadel collateral fetch --kind snp REPORT"
            )
        requests = cf.amd_requests(evidence, product=args.product, kds_url=args.kds_url)
    else:
        if evidence is not None:
            tee, fmspc, ca = cf.intel_keys_from_quote(evidence)
            if tee != args.kind:
                raise UsageError(f"the quote is {'an' if tee == 'sgx' else 'a'} {tee.upper()} quote, "
                                 f"not {args.kind.upper()}", f"use --kind {tee}")
        elif args.fmspc and args.ca:
            fmspc, ca = args.fmspc, args.ca
        else:
            raise UsageError("fetching Intel collateral needs the quote, or both --fmspc and --ca",
                             f"citadel collateral fetch --kind {args.kind} QUOTE --cache DIR")
        requests = cf.intel_requests(args.kind, fmspc, ca, pcs_url=args.pcs_url, certs_url=args.intel_certs_url)
    for path in cf.fetch_into(args.cache, requests, timeout=args.timeout):
        print(f"wrote {path}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    if not args.cache.is_dir():
        raise UsageError(f"the collateral cache {str(args.cache)!r} is not a directory",
                         "give the directory `citadel collateral fetch --cache DIR` filled")
    for path in sorted(p for p in args.cache.rglob("*") if p.is_file() and not p.name.startswith(".")):
        print(f"{path.stat().st_size:>8}  {path.relative_to(args.cache)}")
    return 0
