"""Verify TEE evidence (Intel SGX and TDX quotes, AMD SEV-SNP reports, TPM 2.0 quotes), or pack a
TPM quote into Citadel's TPM evidence container.

  citadel evidence verify FILE --kind sgx|tdx|snp|tpm [--collateral PATH] [--at TIME] [--json]
  citadel evidence pack-tpm --attest F --signature F --pcrs F [--ak AK.pem] -o OUT
  citadel evidence pack-tpm --trustee EVIDENCE.json -o OUT

`verify` prints the measurements, the report data, whether a debugger is allowed, the TCB status
and the verdict; it exits 0 when the evidence verifies and 1 (naming the failed check) when not.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from citadel.cli.helptext import add_action
from citadel.cli.output import emit_json
from citadel.errors import UsageError, VerificationError

VERIFY_KINDS = ("sgx", "tdx", "snp", "tpm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    verify = add_action(sub, "verify", "verify one piece of evidence and print what it attests", [
        "citadel evidence verify quote.bin --kind sgx --collateral cache/ --at 2025-06-01",
        "citadel evidence verify report.bin --kind snp --collateral cache/ --json",
        "citadel evidence verify quote.tpm --kind tpm --ak ak.pem --report-data 48656c6c6f",
    ])
    verify.add_argument("file", type=Path, help="the evidence: a quote, a report, or a TPM container")
    verify.add_argument("--kind", required=True, choices=VERIFY_KINDS, help="what kind of evidence FILE is")
    verify.add_argument(
        "--collateral",
        type=Path,
        metavar="PATH",
        help="collateral file or cache directory (sgx/tdx: Intel PCS data; snp: the VCEK)",
    )
    verify.add_argument("--at", metavar="TIME", help="verification time, ISO 8601 (default: now), e.g. 2025-06-01")
    verify.add_argument("--json", action="store_true", help="print one JSON document")
    verify.add_argument(
        "--intel-root", type=Path, metavar="PEM", help="sgx/tdx: trusted Intel SGX Root CA (default: bundled)"
    )
    verify.add_argument(
        "--amd-chain",
        type=Path,
        metavar="PEM",
        action="append",
        default=[],
        help="snp: an ASK+ARK PEM bundle to trust instead of the bundled one for its product (repeatable)",
    )
    verify.add_argument(
        "--ak",
        type=Path,
        metavar="PEM",
        action="append",
        default=[],
        help="tpm: a trusted attestation key, PEM (repeatable)",
    )
    verify.add_argument("--report-data", metavar="HEX", help="also require this report data (zero-padded)")
    verify.set_defaults(_action=run_verify)

    pack = add_action(sub, "pack-tpm", "build a Citadel TPM evidence container from tpm2-tools output", [
        "tpm2_quote -c ak.ctx -l sha256:16 -q NONCE -m attest.bin -s sig.bin -o pcrs.bin",
        "citadel evidence pack-tpm --attest attest.bin --signature sig.bin --pcrs pcrs.bin --ak ak.pem -o quote.tpm",
        "citadel evidence pack-tpm --trustee evidence.json -o quote.tpm",
    ])
    pack.add_argument("--attest", type=Path, help="TPMS_ATTEST (tpm2_quote -m)")
    pack.add_argument("--signature", type=Path, help="TPMT_SIGNATURE (tpm2_quote -s)")
    pack.add_argument("--pcrs", type=Path, help="PCR values (tpm2_quote -o, serialized format)")
    pack.add_argument("--ak", type=Path, help="the AK's public key, PEM (recorded in the container)")
    pack.add_argument("--trustee", type=Path, help="convert a trustee-style TPM evidence JSON instead")
    pack.add_argument("-o", "--output", type=Path, required=True, help="where to write the container")
    pack.set_defaults(_action=run_pack)


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "_action", None)
    if action is None:
        raise UsageError("missing action", "use `citadel evidence verify FILE --kind KIND` (see --help)")
    result: int = action(args)
    return result


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}",
                         "check the path; see `citadel evidence --help`") from None


def parse_time(text: Optional[str]) -> _dt.datetime:
    """An ISO 8601 time (a bare date is midnight; no zone means UTC), or now."""
    if text is None:
        return _dt.datetime.now(_dt.timezone.utc)
    remedy = "e.g. --at 2025-06-01T00:00:00Z"
    try:
        value = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        return value.replace(tzinfo=_dt.timezone.utc) if value.tzinfo is None else value.astimezone(_dt.timezone.utc)
    except ValueError:
        raise UsageError(f"--at {text!r} is not an ISO 8601 time", remedy) from None
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise UsageError(f"--at {text!r} is outside the years 1 to 9999 in UTC", remedy) from None


#: what to do when a trust anchor given on the command line does not load, per evidence kind
TRUST_REMEDIES = {
    "sgx": "give --intel-root the Intel SGX Root CA certificate in PEM, or leave it out to use the bundled one",
    "tdx": "give --intel-root the Intel SGX Root CA certificate in PEM, or leave it out to use the bundled one",
    "snp": "give --amd-chain a PEM bundle of the ASK then the ARK (AMD KDS's cert_chain), or leave it out",
    "tpm": "give --ak the attestation key's public key in PEM (`citadel platform add --kind tpm` reads it)",
}


def _trust(args: argparse.Namespace) -> Dict[str, Any]:
    if args.kind in ("sgx", "tdx"):
        return {"root": _read(args.intel_root, "the Intel root")} if args.intel_root else {}
    if args.kind == "snp" and args.amd_chain:
        from citadel.attest.snp.certs import bundle_key_of, default_bundles

        bundles = default_bundles()
        for path in args.amd_chain:
            pem = _read(path, "AMD chain")
            bundles[bundle_key_of(pem)] = pem
        return {"ark_ask_bundles": bundles}
    if args.kind == "tpm":
        return {"trusted_aks": [_read(path, "attestation key") for path in args.ak]}
    return {}


def run_verify(args: argparse.Namespace) -> int:
    from citadel.attest import registry

    evidence = _read(args.file, "evidence")
    at = parse_time(args.at)
    expected = None
    if args.report_data is not None:
        try:
            expected = bytes.fromhex(args.report_data)
        except ValueError:
            raise UsageError(f"--report-data {args.report_data!r} is not hex",
                             "give the expected report data as hex digits, e.g. --report-data 48656c6c6f") from None
    try:
        verifier = registry.verifier_for(args.kind, **_trust(args))
    except VerificationError as exc:  # a trust anchor the user gave, not the evidence, is at fault
        raise UsageError(f"a trust anchor given on the command line is unusable: {exc.cause}",
                         TRUST_REMEDIES.get(args.kind, "see `citadel evidence verify --help`")) from None
    try:
        collateral = registry.load_collateral(args.kind, args.collateral, evidence) if args.collateral else None
        verified = verifier.verify(evidence, at=at, collateral=collateral)
        if expected is not None:
            registry.require_report_data(verified, expected)
    except VerificationError as exc:
        if args.json:
            emit_json(
                {
                    "verdict": "refused",
                    "kind": args.kind,
                    "check": exc.check,
                    "detail": exc.detail,
                    "remedy": exc.remedy,
                    "at": at.isoformat(),
                }
            )
            return exc.exit_code
        raise
    doc = {
        "verdict": "verified",
        "kind": verified.kind,
        "at": at.isoformat(),
        "platform": verified.platform,
        "debug": verified.debug,
        "tcb_status": verified.tcb_status,
        "advisory_ids": list(verified.advisory_ids),
        "report_data": verified.report_data.hex(),
        "measurements": dict(verified.measurements),
        "details": verified.details,
    }
    if args.json:
        emit_json(doc)
    else:
        print("\n".join(render(doc)))
    return 0


def _debug_line(kind: str, debug: bool) -> str:
    if not debug:
        return "no"
    if kind == "tpm":
        return "cannot be ruled out (a TPM quote attests boot state, not memory isolation)"
    return "YES: the TEE allows a debugger; its memory is not confidential"


def render(doc: Dict[str, Any]) -> List[str]:
    """Plain lines for people: the verdict first, then the facts."""
    lines = [
        f"verdict:      {doc['verdict']} ({doc['kind']}, at {doc['at']})",
        f"platform:     {doc['platform']}",
        f"debug:        {_debug_line(doc['kind'], doc['debug'])}",
        f"tcb status:   {doc['tcb_status']}",
    ]
    if doc["advisory_ids"]:
        lines.append(f"advisories:   {', '.join(doc['advisory_ids'])}")
    lines.append(f"report data:  {doc['report_data']}")
    lines.append("measurements:")
    width = max((len(name) for name in doc["measurements"]), default=0)
    lines += [f"  {name:<{width}}  {value}" for name, value in doc["measurements"].items()]
    lines.append("details:")
    for name, value in doc["details"].items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        lines.append(f"  {name}: {text}")
    return lines


PACK_REMEDY = ("pass tpm2_quote's outputs unchanged: --attest (-m), --signature (-s), --pcrs (-o), and --ak "
               "the AK's PEM public key; or --trustee a trustee-style evidence JSON")


def run_pack(args: argparse.Namespace) -> int:
    from citadel.attest.tpm import container
    from citadel.attest.tpm.layouts import parse_attest
    from citadel.attest.tpm.verify import load_ak

    inputs = [p for p in (args.trustee, args.attest, args.signature, args.pcrs, args.ak) if p is not None]
    if any(_same_file(args.output, p) for p in inputs):
        raise UsageError(f"-o {str(args.output)!r} is one of the input files", "write the container to a new file")
    try:
        if args.trustee:
            evidence = container.from_trustee_json(_read(args.trustee, "trustee evidence"))
        else:
            if not (args.attest and args.signature and args.pcrs):
                raise UsageError("pack-tpm needs --attest, --signature and --pcrs (or --trustee)", PACK_REMEDY)
            evidence = container.from_tpm2_tools(
                _read(args.attest, "attest"),
                _read(args.signature, "signature"),
                _read(args.pcrs, "PCR values"),
                _read(args.ak, "attestation key") if args.ak else None,
            )
            parse_attest(evidence.attest)  # a swapped or truncated file is refused now, not at verification
            if evidence.ak_pem is not None:
                load_ak(evidence.ak_pem, check="tpm.container")
        data = container.encode_container(evidence)
        container.parse_container(data)  # what we write must read back
    except VerificationError as exc:
        raise UsageError(f"cannot pack the TPM quote: {exc.cause}", PACK_REMEDY) from None
    _write_new(args.output, data)
    print(f"wrote {args.output} ({len(data)} bytes)")
    return 0


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _write_new(path: Path, data: bytes) -> None:
    """Write all of ``data`` or nothing: a temporary file beside ``path``, renamed over it when complete."""
    import os
    import tempfile

    if path.is_dir():
        raise UsageError(f"-o {str(path)!r} is a directory", "name a file, e.g. -o quote.tpm")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.")
    except OSError as exc:
        raise UsageError(f"cannot write {str(path)!r}: {exc.strerror or exc}",
                         "name a file in a directory you can write to") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        raise UsageError(f"cannot write {str(path)!r}: {exc.strerror or exc}",
                         "check free space and permissions there") from None
