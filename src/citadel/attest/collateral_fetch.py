"""Fetch verification collateral from Intel PCS (v4) and AMD KDS into a collateral cache directory.

Verifiers never fetch; this module is the one place that does, for `citadel collateral fetch`. It
is split in two: pure functions that say what to ask for (`intel_requests`, `amd_requests`) and
turn each response into files (`files_from_response`), and one I/O loop (`fetch_into`) that
performs the requests with urllib and writes the files atomically. Base URLs are parameters, so
tests (and air-gapped mirrors, or a PCCS) can stand in for Intel's and AMD's services.

Nothing fetched is trusted: responses are only checked for shape before they are cached, and the
verifiers check every signature when the collateral is used. Cache layout: the Intel files are those
`citadel.attest.intel.store` reads; the AMD files are those `citadel.attest.snp.collateral` reads.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from citadel import __version__
from citadel.attest.snp import collateral as snp_files
from citadel.attest.snp.layouts import PRODUCTS, TcbVersion, parse_report
from citadel.errors import CitadelError

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
INTEL_CERTS_URL = "https://certificates.trustedservices.intel.com"
AMD_KDS_URL = "https://kdsintf.amd.com"
TIMEOUT = 30.0
MAX_BODY = 4 * 1024 * 1024  # collateral is kilobytes; refuse anything absurd

# Issuer-chain headers: PCS v4 names, then the v3/PCCS names.
TCB_CHAIN_HEADERS = ("tcb-info-issuer-chain", "sgx-tcb-info-issuer-chain")
QE_CHAIN_HEADERS = ("sgx-enclave-identity-issuer-chain",)
CRL_CHAIN_HEADERS = ("sgx-pck-crl-issuer-chain",)


class CollateralFetchError(CitadelError):
    """A collateral service could not be reached or answered with an error (transport)."""

    def __init__(self, cause: str, remedy: str = "") -> None:
        super().__init__(cause, remedy or "check the network and the service URLs (--pcs-url, --kds-url)")


class CollateralFormatError(CitadelError):
    """A collateral service answered with something that is not the collateral asked for (data)."""

    def __init__(self, cause: str, remedy: str = "") -> None:
        super().__init__(cause, remedy or "check that the URL names Intel PCS, AMD KDS or a faithful mirror of it, "
                         "and that the evidence is what --kind says")


@dataclass(frozen=True)
class Request:
    """One GET and what its response becomes: `kind` names the parser in `files_from_response`."""

    url: str
    kind: str  # intel_tcb, intel_qe, intel_crl, intel_root_crl, amd_chain, amd_vcek
    dest: str  # cache-relative path of the main file


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes


# -- pure: what to ask for ------------------------------------------------------------------------


def intel_requests(
    tee: str, fmspc: str, ca: str, *, pcs_url: str = INTEL_PCS_URL, certs_url: str = INTEL_CERTS_URL
) -> List[Request]:
    """The PCS v4 requests for one platform: TCB info and QE identity of `tee`, the PCK CRL, the root CRL."""
    if tee not in ("sgx", "tdx"):
        raise CollateralFormatError(f"unknown Intel TEE {tee!r}", "use sgx or tdx")
    if ca not in ("processor", "platform"):
        raise CollateralFormatError(f"unknown PCK CA {ca!r}", "use processor or platform")
    try:
        fmspc_bytes = bytes.fromhex(fmspc)
    except ValueError:
        fmspc_bytes = b""
    if len(fmspc_bytes) != 6:
        raise CollateralFormatError(f"FMSPC {fmspc!r} is not 6 bytes of hex", "copy the FMSPC from the PCK certificate")
    pcs, name = pcs_url.rstrip("/"), fmspc_bytes.hex()
    query = urllib.parse.urlencode
    return [
        Request(
            f"{pcs}/{tee}/certification/v4/tcb?{query({'fmspc': name.upper()})}",
            "intel_tcb",
            f"{tee}/tcb_info_{name}.json",
        ),
        Request(f"{pcs}/{tee}/certification/v4/qe/identity", "intel_qe", f"{tee}/qe_identity.json"),
        Request(
            f"{pcs}/sgx/certification/v4/pckcrl?{query({'ca': ca, 'encoding': 'der'})}",
            "intel_crl",
            f"pck_crl_{ca}",
        ),
        Request(f"{certs_url.rstrip('/')}/IntelSGXRootCA.der", "intel_root_crl", "root_ca_crl"),
    ]


def intel_keys_from_quote(quote: bytes) -> Tuple[str, str, str]:
    """(tee, FMSPC hex, PCK CA) named by an SGX/TDX quote's PCK certificate (read, not verified)."""
    from citadel.attest.intel.chain import common_name, load_pem_chain
    from citadel.attest.intel.pck import pck_extensions
    from citadel.attest.intel.quote import parse_quote

    parsed = parse_quote(quote)
    certs = load_pem_chain(parsed.pck_chain_pem, "pck.chain")
    if not certs:
        raise CollateralFormatError("the quote carries no PCK certificate to name its FMSPC")
    ca = "processor" if "Processor" in common_name(certs[0].issuer) else "platform"
    return ("tdx" if parsed.is_tdx else "sgx"), pck_extensions(certs[0]).fmspc.hex(), ca


def amd_requests(report: bytes, *, product: Optional[str] = None, kds_url: str = AMD_KDS_URL) -> List[Request]:
    """The KDS requests for a report: the product's ASK/ARK chain and the VCEK for its chip and TCB."""
    parsed = parse_report(report)
    named = parsed.cpuid_product
    if product is not None and product not in PRODUCTS:
        raise CollateralFormatError(f"unknown AMD product {product!r}", f"use one of {', '.join(PRODUCTS)}")
    if named and product and named != product:
        raise CollateralFormatError(f"the report comes from a {named} CPU, not {product}")
    chosen = named or product
    if chosen is None:
        raise CollateralFormatError(
            f"a version {parsed.version} report does not name its CPU",
            f"pass --product ({', '.join(PRODUCTS)})",
        )
    if parsed.signing_key != 0:
        raise CollateralFormatError(
            "this report is signed with a VLEK, which only the cloud provider can fetch",
            "place the VLEK in amd/<Product>/vlek/ of the cache (docs/evidence-amd-tpm.md)",
        )
    if parsed.chip_id_masked:
        raise CollateralFormatError("the report's CHIP_ID is masked; the KDS cannot name its VCEK")
    hwid = snp_files.kds_hwid(parsed, chosen)
    tcb = TcbVersion.decode(parsed.reported_tcb, chosen)
    args = {"blSPL": tcb.bootloader, "teeSPL": tcb.tee, "snpSPL": tcb.snp, "ucodeSPL": tcb.microcode}
    if tcb.fmc is not None:
        args = {"fmcSPL": tcb.fmc, **args}
    base = f"{kds_url.rstrip('/')}/vcek/v1/{chosen}"
    cache = Path()
    return [
        Request(f"{base}/cert_chain", "amd_chain", str(snp_files.chain_path(cache, chosen, vlek=False))),
        Request(
            f"{base}/{hwid.hex()}?{urllib.parse.urlencode(args)}",
            "amd_vcek",
            str(snp_files.vcek_path(cache, chosen, hwid, parsed.reported_tcb)),
        ),
    ]


# -- pure: responses into files -------------------------------------------------------------------


def _header(response: Response, names: tuple, url: str) -> str:
    for name in names:
        if name in response.headers:
            return urllib.parse.unquote(response.headers[name])
    raise CollateralFormatError(f"{url} answered without the {names[0]} header")


def _signed_json(body: bytes, member: str, url: str) -> None:
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CollateralFormatError(f"{url} did not answer with JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(member), dict) or not isinstance(doc.get("signature"), str):
        raise CollateralFormatError(f"{url} answered without {member!r} and 'signature'")


def _der_or_pem(body: bytes, dest: str, url: str, crl: bool) -> Dict[str, bytes]:
    pem = body.lstrip().startswith(b"-----BEGIN")
    try:
        if crl:
            (x509.load_pem_x509_crl if pem else x509.load_der_x509_crl)(body)
        else:
            with warnings.catch_warnings():  # real VCEKs carry non-positive serials; cryptography warns
                warnings.simplefilter("ignore")
                cert = (x509.load_pem_x509_certificate if pem else x509.load_der_x509_certificate)(body)
            return {dest: cert.public_bytes(Encoding.DER)}
    except ValueError:
        raise CollateralFormatError(f"{url} did not answer with a {'CRL' if crl else 'certificate'}") from None
    return {dest + (".pem" if pem else ".der"): body}


def files_from_response(request: Request, response: Response) -> Dict[str, bytes]:
    """The cache files (relative path -> bytes) a successful response becomes; checks shape only."""
    if response.status != 200:
        raise CollateralFetchError(
            f"{request.url} answered HTTP {response.status}",
            "check the FMSPC / chip and TCB, or try again later (the services rate-limit)",
        )
    url, body = request.url, response.body
    if request.kind == "intel_tcb":
        _signed_json(body, "tcbInfo", url)
        chain = _header(response, TCB_CHAIN_HEADERS, url)
        return {request.dest: body, "tcb_signing_chain.pem": chain.encode()}
    if request.kind == "intel_qe":
        _signed_json(body, "enclaveIdentity", url)
        _header(response, QE_CHAIN_HEADERS, url)
        return {request.dest: body}
    if request.kind in ("intel_crl", "intel_root_crl"):
        return _der_or_pem(body, request.dest, url, crl=True)
    if request.kind == "amd_chain":
        try:
            certs = x509.load_pem_x509_certificates(body)
        except ValueError:
            certs = []
        if len(certs) != 2:
            raise CollateralFormatError(f"{url} did not answer with an ASK and an ARK")
        return {request.dest: body}
    if request.kind == "amd_vcek":
        return _der_or_pem(body, request.dest, url, crl=False)
    raise CollateralFormatError(f"unknown request kind {request.kind!r}")


# -- I/O --------------------------------------------------------------------------------------------


def http_get(url: str, timeout: float = TIMEOUT) -> Response:
    """GET with urllib; HTTP errors become a Response, unreachable hosts a CollateralFetchError."""
    if not url.startswith(("https://", "http://")):
        raise CollateralFetchError(f"{url!r} is not an http(s) URL",
                                   "give --pcs-url, --intel-certs-url or --kds-url as https://HOST[/PATH]")
    request = urllib.request.Request(url, headers={"User-Agent": f"citadel/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 (scheme checked)
            body = reply.read(MAX_BODY + 1)
            headers = {k.lower(): v for k, v in reply.headers.items()}
            status = int(reply.status)
    except urllib.error.HTTPError as exc:
        return Response(exc.code, {k.lower(): v for k, v in exc.headers.items()}, b"")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CollateralFetchError(
            f"cannot reach {url}: {reason}", "check the network, a proxy (https_proxy), or the base URL"
        ) from None
    if len(body) > MAX_BODY:
        raise CollateralFormatError(f"{url} answered with more than {MAX_BODY} bytes")
    return Response(status, headers, body)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fetch-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch_into(cache: Path, requests: List[Request], *, timeout: float = TIMEOUT) -> List[Path]:
    """Perform `requests` and write their files under `cache`; all responses are checked before any
    file is written, so a failed fetch leaves the cache as it was."""
    staged: Dict[str, bytes] = {}
    for request in requests:
        staged.update(files_from_response(request, http_get(request.url, timeout)))
    written = []
    for relpath, data in staged.items():
        target = cache / relpath
        try:
            _write_atomically(target, data)
        except OSError as exc:
            raise CollateralFetchError(
                f"cannot write {str(target)!r} into the collateral cache: {exc.strerror or exc}",
                "give --cache a directory you can write to",
            ) from None
        written.append(target)
    return written
