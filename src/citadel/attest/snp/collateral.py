"""Where SEV-SNP collateral lives on disk, and loading it for a report (no network here).

Cache layout (under the collateral cache directory, shared with Intel's `intel/` subtree):

    amd/<Product>/cert_chain.pem                    KDS /vcek/v1/<Product>/cert_chain (ASK, ARK)
    amd/<Product>/vlek_cert_chain.pem               KDS /vlek/v1/<Product>/cert_chain (ASVK, ARK)
    amd/<Product>/vcek/<hwid hex>/<tcb hex>.der     KDS /vcek/v1/<Product>/<hwid>?<spl args>
    amd/<Product>/vlek/<tcb hex>.der                a VLEK placed by its cloud provider

<Product> is Milan, Genoa or Turin; <hwid hex> is the report's CHIP_ID in lowercase hex (its first
8 bytes on Turin); <tcb hex> is the report's 8 REPORTED_TCB bytes in lowercase hex, as they appear in
the report. Reading a report to find its files uses unverified fields only as a lookup key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from citadel.attest.snp.layouts import PRODUCTS, SIGNING_KEY_VLEK, SnpReport, parse_report
from citadel.errors import VerificationError

AMD_DIR = "amd"


def kds_hwid(report: SnpReport, product: str) -> bytes:
    """The chip id as the KDS names it: 64 bytes, or the first 8 on Turin."""
    return report.chip_id[:8] if product == "Turin" else report.chip_id


def product_dir(cache: Path, product: str) -> Path:
    return cache / AMD_DIR / product


def vcek_path(cache: Path, product: str, hwid: bytes, reported_tcb: bytes) -> Path:
    return product_dir(cache, product) / "vcek" / hwid.hex() / f"{reported_tcb.hex()}.der"


def vlek_path(cache: Path, product: str, reported_tcb: bytes) -> Path:
    return product_dir(cache, product) / "vlek" / f"{reported_tcb.hex()}.der"


def chain_path(cache: Path, product: str, vlek: bool) -> Path:
    return product_dir(cache, product) / ("vlek_cert_chain.pem" if vlek else "cert_chain.pem")


def candidate_products(report: SnpReport) -> List[str]:
    """The product a v3+ report names, or every product for a v2 report."""
    named = report.cpuid_product
    return [named] if named else list(PRODUCTS)


def load_collateral(path: Path, evidence: bytes, product: Optional[str] = None) -> Dict[str, bytes]:
    """The collateral mapping for `SnpVerifier.verify`, from a certificate file or a cache directory.

    A file is the VCEK (or VLEK) itself, DER or PEM. A directory is a collateral cache (layout above).
    """
    report = parse_report(evidence)
    vlek = report.signing_key == SIGNING_KEY_VLEK
    key = "vlek" if vlek else "vcek"
    if path.is_file():
        return {key: path.read_bytes()}
    if not path.is_dir():
        raise VerificationError("snp.collateral", f"collateral {str(path)!r} is neither a file nor a directory")
    products = [product] if product else candidate_products(report)
    for name in products:
        leaf = (
            vlek_path(path, name, report.reported_tcb)
            if vlek
            else vcek_path(path, name, kds_hwid(report, name), report.reported_tcb)
        )
        if leaf.is_file():
            found = {key: leaf.read_bytes()}
            chain = chain_path(path, name, vlek)
            if chain.is_file():
                found["cert_chain"] = chain.read_bytes()
            return found
    raise VerificationError(
        "snp.collateral",
        f"the cache {str(path)!r} holds no {key.upper()} for chip {report.chip_id.hex()[:16]}... "
        f"at TCB {report.reported_tcb.hex()}",
        "run `citadel collateral fetch --kind snp REPORT --cache DIR` where the network is reachable",
    )
