"""Read Intel collateral from files into the mapping the verifiers take (no network, ever).

Two sources:

* one JSON file holding the canonical mapping (see `collateral.py`; the layout of the test vectors);
* a collateral directory, a cache of Intel PCS (or PCCS) responses saved as files:

      root_ca_crl.der|.pem              GET /sgx/certification/v4/rootcacrl (or the root CA's CDP)
      pck_crl_platform.der|.pem         GET /sgx/certification/v4/pckcrl?ca=platform
      pck_crl_processor.der|.pem        GET /sgx/certification/v4/pckcrl?ca=processor
      tcb_signing_chain.pem             the TCB-Info-Issuer-Chain response header, URL-decoded
      sgx/tcb_info_<fmspc>.json         body of GET /sgx/certification/v4/tcb?fmspc=<fmspc>
      sgx/qe_identity.json              body of GET /sgx/certification/v4/qe/identity
      tdx/tcb_info_<fmspc>.json         body of GET /tdx/certification/v4/tcb?fmspc=<fmspc>
      tdx/qe_identity.json              body of GET /tdx/certification/v4/qe/identity

  The quote picks its files: its TEE type (sgx/ or tdx/), the FMSPC and the issuing CA (platform or
  processor) named in its PCK certificate. These are read unverified; the verifier checks everything.

Missing or malformed files raise `VerificationError` (`collateral.missing`, `collateral.format`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from citadel.attest.intel.chain import common_name, load_pem_chain
from citadel.attest.intel.pck import pck_extensions
from citadel.attest.intel.quote import parse_quote
from citadel.errors import VerificationError

_WS = " \t\r\n"


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def split_signed_body(body: Union[bytes, str], member: str) -> Tuple[str, str]:
    """From a PCS response body {"<member>": {...}, "signature": "<hex>"}, return the member's exact
    JSON text (what Intel signed) and the signature hex."""
    decoder = json.JSONDecoder()
    spans: Dict[str, Tuple[int, int, Any]] = {}
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        pos = _skip(text, 0)
        if text[pos : pos + 1] != "{":
            raise ValueError("not a JSON object")
        pos = _skip(text, pos + 1)
        while text[pos : pos + 1] != "}":
            key, pos = decoder.raw_decode(text, pos)
            pos = _skip(text, pos)
            if not isinstance(key, str) or text[pos : pos + 1] != ":":
                raise ValueError("expected a member name and ':'")
            start = _skip(text, pos + 1)
            value, pos = decoder.raw_decode(text, start)
            spans[key] = (start, pos, value)
            pos = _skip(text, pos)
            if text[pos : pos + 1] == ",":
                pos = _skip(text, pos + 1)
            elif text[pos : pos + 1] != "}":
                raise ValueError("expected ',' or '}'")
    except (ValueError, IndexError, RecursionError) as exc:
        raise VerificationError("collateral.format", f"a PCS response is not valid JSON: {exc}") from None
    if member not in spans or "signature" not in spans or not isinstance(spans["signature"][2], str):
        raise VerificationError("collateral.format", f"a PCS response lacks {member!r} or 'signature'")
    start, end, _ = spans[member]
    return text[start:end], spans["signature"][2]


def collateral_from_pcs(
    *,
    tcb_info_body: Union[bytes, str],
    qe_identity_body: Union[bytes, str],
    issuer_chain: Union[bytes, str],
    pck_crl: Union[bytes, str],
    root_ca_crl: Union[bytes, str],
    qe_identity_issuer_chain: Optional[Union[bytes, str]] = None,
) -> Dict[str, Any]:
    """The canonical collateral mapping from Intel PCS responses (bodies, issuer chain, CRLs)."""
    tcb_info, tcb_sig = split_signed_body(tcb_info_body, "tcbInfo")
    qe_identity, qe_sig = split_signed_body(qe_identity_body, "enclaveIdentity")
    chain = issuer_chain.decode("ascii", "replace") if isinstance(issuer_chain, bytes) else issuer_chain
    qe_chain = qe_identity_issuer_chain if qe_identity_issuer_chain is not None else chain
    return {
        "tcb_info": tcb_info,
        "tcb_info_signature": tcb_sig,
        "tcb_info_issuer_chain": chain,
        "qe_identity": qe_identity,
        "qe_identity_signature": qe_sig,
        "qe_identity_issuer_chain": qe_chain,
        "pck_crl": pck_crl,
        "root_ca_crl": root_ca_crl,
    }


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise VerificationError(
            "collateral.missing", f"cannot read collateral file {str(path)!r}: {exc.strerror or exc}"
        ) from None


def _first(directory: Path, *names: str) -> Path:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise VerificationError(
        "collateral.missing",
        f"the collateral directory {str(directory)!r} has none of {', '.join(names)}",
        "save the Intel PCS responses for this platform into the collateral directory",
    )


def _quote_keys(evidence: bytes) -> Tuple[str, str, str]:
    """(tee 'sgx'|'tdx', FMSPC hex, CA 'platform'|'processor') read from the quote, unverified."""
    quote = parse_quote(evidence)
    certs = load_pem_chain(quote.pck_chain_pem, "pck.certificate")
    if not certs:
        raise VerificationError("pck.chain", "the quote carries no PCK certificate")
    fmspc = pck_extensions(certs[0]).fmspc.hex()
    issuer = common_name(certs[0].issuer)
    ca = "processor" if "Processor" in issuer else "platform"
    return ("tdx" if quote.is_tdx else "sgx"), fmspc, ca


def load_collateral_dir(directory: Union[str, Path], evidence: bytes) -> Dict[str, Any]:
    """The collateral for the quote `evidence` from a collateral directory (layout above)."""
    root = Path(directory)
    tee, fmspc, ca = _quote_keys(evidence)
    tee_dir = root / tee
    return collateral_from_pcs(
        tcb_info_body=_read(_first(tee_dir, f"tcb_info_{fmspc}.json", f"tcb_info_{fmspc.upper()}.json")),
        qe_identity_body=_read(_first(tee_dir, "qe_identity.json")),
        issuer_chain=_read(_first(root, "tcb_signing_chain.pem")),
        pck_crl=_read(_first(root, f"pck_crl_{ca}.der", f"pck_crl_{ca}.pem")),
        root_ca_crl=_read(_first(root, "root_ca_crl.der", "root_ca_crl.pem")),
    )


def load_collateral(path: Union[str, Path], evidence: Optional[bytes] = None) -> Dict[str, Any]:
    """Collateral from a JSON file (canonical mapping) or a collateral directory (needs `evidence`)."""
    target = Path(path)
    if target.is_dir():
        if evidence is None:
            raise VerificationError(
                "collateral.missing", "a collateral directory needs the quote to pick files"
            )
        return load_collateral_dir(target, evidence)
    try:
        mapping = json.loads(_read(target).decode("utf-8"))
    except (ValueError, RecursionError):
        raise VerificationError(
            "collateral.format", f"{str(target)!r} is not a JSON collateral file"
        ) from None
    if not isinstance(mapping, dict):
        raise VerificationError("collateral.format", f"{str(target)!r} does not hold a JSON object")
    return mapping
