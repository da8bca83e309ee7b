"""The PCK certificate: its chain to the Intel SGX Root CA and its SGX extensions (FMSPC, TCB, PCE id).

The SGX extension (OID 1.2.840.113741.1.13.1) is a DER SEQUENCE of (OID, value) pairs; Intel's "PCK
Certificate and Certificate Revocation List Profile Specification" defines it. A minimal DER reader
decodes it here, so the layout stays explicit. Engine-safe: stdlib + `cryptography`, Python 3.9.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Dict, List, Tuple

from cryptography import x509

from citadel.attest.intel.chain import PARSE_ERRORS, common_name, load_pem_chain, verify_chain
from citadel.errors import VerificationError

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_PPID = SGX_EXTENSION_OID + ".1"
_TCB = SGX_EXTENSION_OID + ".2"
_PCESVN = _TCB + ".17"
_CPUSVN = _TCB + ".18"
_PCEID = SGX_EXTENSION_OID + ".3"
_FMSPC = SGX_EXTENSION_OID + ".4"
_SGX_TYPE = SGX_EXTENSION_OID + ".5"

_TAG_INTEGER = 0x02
_TAG_OCTET_STRING = 0x04
_TAG_OID = 0x06
_TAG_ENUMERATED = 0x0A
_TAG_SEQUENCE = 0x30

PCK_LEAF_CN = "SGX PCK Certificate"
PCK_CA_CNS = ("SGX PCK Platform CA", "SGX PCK Processor CA")


@dataclass(frozen=True)
class PckExtensions:
    """What the PCK certificate says about the platform's TCB."""

    ppid: bytes
    tcb_components: Tuple[int, ...]  # 16 SGX TCB component SVNs
    pcesvn: int
    cpusvn: bytes
    pceid: bytes  # 2 bytes
    fmspc: bytes  # 6 bytes
    sgx_type: int  # 0 Standard, 1 Scalable, 2 Scalable with integrity


@dataclass(frozen=True)
class PckChain:
    """A PCK chain verified to the trusted root: the leaf, its issuing CA, and the leaf's extensions."""

    leaf: x509.Certificate
    ca: x509.Certificate
    extensions: PckExtensions


# --- minimal DER --------------------------------------------------------------------------------


def _bad(detail: str) -> VerificationError:
    return VerificationError("pck.extension", detail)


def _tlvs(data: bytes) -> List[Tuple[int, bytes]]:
    """Split `data` into (tag, value) pairs; only single-byte tags and definite lengths (DER)."""
    out: List[Tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise _bad("truncated DER element")
        tag = data[pos]
        if tag & 0x1F == 0x1F:
            raise _bad("multi-byte DER tags are not used in the SGX extension")
        length = data[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 4 or pos + count > len(data):
                raise _bad("bad DER length")
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        if pos + length > len(data):
            raise _bad("DER element runs past its container")
        out.append((tag, data[pos : pos + length]))
        pos += length
    return out


def _oid(value: bytes) -> str:
    if not value or value[-1] & 0x80:
        raise _bad("malformed OBJECT IDENTIFIER")
    arcs: List[int] = []
    acc = 0
    for byte in value:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def _pairs(value: bytes, what: str) -> Dict[str, Tuple[int, bytes]]:
    """A SEQUENCE OF SEQUENCE { OID, value } as {oid: (tag, value)}."""
    pairs: Dict[str, Tuple[int, bytes]] = {}
    for tag, item in _tlvs(value):
        if tag != _TAG_SEQUENCE:
            raise _bad(f"{what}: expected a SEQUENCE")
        parts = _tlvs(item)
        if len(parts) != 2 or parts[0][0] != _TAG_OID:
            raise _bad(f"{what}: expected SEQUENCE {{ OID, value }}")
        oid = _oid(parts[0][1])
        if oid in pairs:
            raise _bad(f"{what}: {oid} appears twice")
        pairs[oid] = parts[1]
    return pairs


def _get(pairs: Dict[str, Tuple[int, bytes]], oid: str, tag: int, what: str) -> bytes:
    if oid not in pairs:
        raise _bad(f"the SGX extension has no {what} ({oid})")
    got_tag, value = pairs[oid]
    if got_tag != tag:
        raise _bad(f"{what} ({oid}) has DER tag {got_tag:#x}, expected {tag:#x}")
    return value


def _uint(value: bytes, what: str) -> int:
    if not value or len(value) > 3:
        raise _bad(f"{what} is not a small integer")
    number = int.from_bytes(value, "big", signed=True)
    if number < 0 or number > 0xFFFF:
        raise _bad(f"{what} is out of range")
    return number


def _octets(value: bytes, size: int, what: str) -> bytes:
    if len(value) != size:
        raise _bad(f"{what} is {len(value)} bytes, expected {size}")
    return value


def parse_sgx_extensions(der: bytes) -> PckExtensions:
    """Decode the value of the SGX extension (OID 1.2.840.113741.1.13.1)."""
    top = _tlvs(der)
    if len(top) != 1 or top[0][0] != _TAG_SEQUENCE:
        raise _bad("the SGX extension is not one SEQUENCE")
    pairs = _pairs(top[0][1], "SGX extension")
    tcb = _pairs(_get(pairs, _TCB, _TAG_SEQUENCE, "TCB"), "TCB")
    components = tuple(
        _uint(_get(tcb, f"{_TCB}.{i}", _TAG_INTEGER, f"TCB component {i}"), f"TCB component {i}")
        for i in range(1, 17)
    )
    if any(c > 255 for c in components):
        raise _bad("a TCB component SVN is larger than one byte")
    return PckExtensions(
        ppid=_octets(_get(pairs, _PPID, _TAG_OCTET_STRING, "PPID"), 16, "PPID"),
        tcb_components=components,
        pcesvn=_uint(_get(tcb, _PCESVN, _TAG_INTEGER, "PCESVN"), "PCESVN"),
        cpusvn=_octets(_get(tcb, _CPUSVN, _TAG_OCTET_STRING, "CPUSVN"), 16, "CPUSVN"),
        pceid=_octets(_get(pairs, _PCEID, _TAG_OCTET_STRING, "PCE-ID"), 2, "PCE-ID"),
        fmspc=_octets(_get(pairs, _FMSPC, _TAG_OCTET_STRING, "FMSPC"), 6, "FMSPC"),
        sgx_type=_uint(_get(pairs, _SGX_TYPE, _TAG_ENUMERATED, "SGX type"), "SGX type"),
    )


def pck_extensions(cert: x509.Certificate) -> PckExtensions:
    """The SGX extensions of a PCK certificate."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    except x509.ExtensionNotFound:
        raise _bad("the PCK certificate has no SGX extension") from None
    except PARSE_ERRORS as exc:  # duplicate or malformed extensions
        raise _bad(f"the PCK certificate's extensions do not parse: {exc}") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise _bad("the SGX extension has an unexpected type")
    return parse_sgx_extensions(value.value)


# --- chain ---------------------------------------------------------------------------------------


def verify_pck_chain(pem: bytes, root: x509.Certificate, at: _dt.datetime) -> PckChain:
    """Verify the PCK chain from a quote's certification data up to `root`, and read the leaf."""
    certs = load_pem_chain(pem, "pck.certificate")
    if not 2 <= len(certs) <= 3:
        raise VerificationError(
            "pck.chain", f"expected PCK, PCK CA and root certificates, found {len(certs)} certificates"
        )
    leaf, ca = certs[0], certs[1]
    if PCK_LEAF_CN not in common_name(leaf.subject):
        raise VerificationError(
            "pck.certificate", f"the leaf {common_name(leaf.subject)!r} is not an SGX PCK certificate"
        )
    if not any(cn in common_name(ca.subject) for cn in PCK_CA_CNS):
        raise VerificationError(
            "pck.chain", f"the PCK issuer {common_name(ca.subject)!r} is not an SGX PCK CA"
        )
    verify_chain(certs, root, at, check="pck.chain", expired_check="pck.expired")
    return PckChain(leaf=leaf, ca=ca, extensions=pck_extensions(leaf))
