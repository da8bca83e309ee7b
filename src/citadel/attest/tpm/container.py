"""Citadel's TPM evidence container, and converters from the formats other tools write.

A TPM quote alone does not carry the PCR values it digests, so Citadel ships them together, as one
UTF-8 JSON object (version 1; unknown members are refused):

    {"type": "citadel-tpm-quote", "version": 1,
     "attest": "<base64 TPMS_ATTEST>",            # the quoted structure, exactly as the TPM signed it
     "signature": "<base64 TPMT_SIGNATURE>",
     "pcrs": {"sha256": {"16": "<hex>", ...}},   # bank -> PCR index (decimal) -> value (hex)
     "ak_pem": "-----BEGIN PUBLIC KEY-----..."}  # optional: which AK signed (must be a trusted one)

Converters: tpm2-tools (`tpm2_quote -m attest -s sig -o pcrs`, pcrs in its default serialized
format) and the trustee/keylime-style JSON (`ak_public` DER SPKI base64, `tpm_quote.message`,
`tpm_quote.signature`, `tpm_quote.pcrs` = list of hex values of PCR 0..n-1 of the quoted bank).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any, Dict, Optional

from cryptography.hazmat.primitives import serialization

from citadel.attest.tpm.layouts import HASH_NAMES, HASH_SIZES, parse_attest
from citadel.errors import VerificationError

CONTAINER_TYPE = "citadel-tpm-quote"
CONTAINER_VERSION = 1
_MEMBERS = {"type", "version", "attest", "signature", "pcrs", "ak_pem"}
_BANK_SIZES = {name: HASH_SIZES[alg] for alg, name in HASH_NAMES.items()}


@dataclass(frozen=True)
class TpmEvidence:
    attest: bytes
    signature: bytes
    pcrs: Dict[str, Dict[int, bytes]]  # bank name -> PCR index -> value
    ak_pem: Optional[bytes] = None


def _fail(detail: str) -> VerificationError:
    return VerificationError(
        "tpm.container", detail, "TPM evidence must be a Citadel TPM container (docs/evidence-amd-tpm.md)"
    )


def _b64(doc: Dict[str, Any], name: str) -> bytes:
    value = doc.get(name)
    if not isinstance(value, str):
        raise _fail(f"member {name!r} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(f"member {name!r} is not valid base64") from None


def _pcr_values(value: Any) -> Dict[str, Dict[int, bytes]]:
    if not isinstance(value, dict):
        raise _fail("member 'pcrs' must be an object of banks")
    banks: Dict[str, Dict[int, bytes]] = {}
    for bank, entries in value.items():
        if bank not in _BANK_SIZES or not isinstance(entries, dict):
            raise _fail(f"PCR bank {bank!r} is not one of {sorted(_BANK_SIZES)} with an object of values")
        values: Dict[int, bytes] = {}
        for index, hexvalue in entries.items():
            if not (
                isinstance(index, str)
                and index.isascii()
                and index.isdigit()
                and len(index) <= 3
                and isinstance(hexvalue, str)
            ):
                raise _fail(f"PCR {bank}:{index!r} must map a decimal index to a hex string")
            try:
                digest = bytes.fromhex(hexvalue)
            except ValueError:
                raise _fail(f"PCR {bank}:{index} is not hex") from None
            if len(digest) != _BANK_SIZES[bank]:
                raise _fail(f"PCR {bank}:{index} has {len(digest)} bytes, not {_BANK_SIZES[bank]}")
            values[int(index)] = digest
        banks[bank] = values
    return banks


def parse_container(data: bytes) -> TpmEvidence:
    """Read a container; raises VerificationError('tpm.container') for anything malformed."""
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _fail("the evidence is not UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise _fail("the evidence is not a JSON object")
    if doc.get("type") != CONTAINER_TYPE or doc.get("version") != CONTAINER_VERSION:
        raise _fail(f"type/version must be {CONTAINER_TYPE!r}/{CONTAINER_VERSION}")
    unknown = set(doc) - _MEMBERS
    if unknown:
        raise _fail(f"unknown member(s): {', '.join(sorted(unknown))}")
    ak = doc.get("ak_pem")
    if ak is not None and not isinstance(ak, str):
        raise _fail("member 'ak_pem' must be a PEM string")
    return TpmEvidence(
        attest=_b64(doc, "attest"),
        signature=_b64(doc, "signature"),
        pcrs=_pcr_values(doc.get("pcrs")),
        ak_pem=ak.encode() if ak is not None else None,
    )


def encode_container(evidence: TpmEvidence) -> bytes:
    """The container's JSON bytes (stable key order)."""
    doc: Dict[str, Any] = {
        "type": CONTAINER_TYPE,
        "version": CONTAINER_VERSION,
        "attest": base64.b64encode(evidence.attest).decode(),
        "signature": base64.b64encode(evidence.signature).decode(),
        "pcrs": {
            bank: {str(i): value.hex() for i, value in sorted(values.items())} for bank, values in evidence.pcrs.items()
        },
    }
    if evidence.ak_pem is not None:
        doc["ak_pem"] = evidence.ak_pem.decode()
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


# -- tpm2-tools -------------------------------------------------------------------------------------
# Its "serialized" PCR file is a memory image of TSS2 structures (little-endian, padded):
#   TPML_PCR_SELECTION: count UINT32, 16 x {hash UINT16, sizeofSelect UINT8, pcrSelect[4], pad 1}
#   count UINT32 of TPML_DIGEST that follow, each {count UINT32, 8 x {size UINT16, buffer[64]}}
# The digests fill the selected PCRs bank by bank, in ascending PCR order.
_T2T_SELECTION = struct.Struct("<I" + "HB4sx" * 16)
_T2T_DIGEST_LIST = struct.Struct("<I" + "H64s" * 8)


def parse_tpm2_tools_pcrs(data: bytes) -> Dict[str, Dict[int, bytes]]:
    """PCR values from a tpm2-tools serialized PCR file (`tpm2_quote -o`)."""
    if len(data) < _T2T_SELECTION.size + 4:
        raise _fail("the tpm2-tools PCR file is too short")
    fields = _T2T_SELECTION.unpack_from(data)
    (lists,) = struct.unpack_from("<I", data, _T2T_SELECTION.size)
    start = _T2T_SELECTION.size + 4
    if fields[0] > 16 or len(data) != start + lists * _T2T_DIGEST_LIST.size:
        raise _fail("the tpm2-tools PCR file has an unexpected size")
    digests = []
    for n in range(lists):
        entry = _T2T_DIGEST_LIST.unpack_from(data, start + n * _T2T_DIGEST_LIST.size)
        count = min(entry[0], 8)
        digests += [entry[1 + 2 * i + 1][: entry[1 + 2 * i]] for i in range(count)]
    banks: Dict[str, Dict[int, bytes]] = {}
    for b in range(fields[0]):
        hash_alg, size, bitmap = fields[1 + 3 * b : 4 + 3 * b]
        name = HASH_NAMES.get(hash_alg)
        if name is None:
            raise _fail(f"the tpm2-tools PCR file uses hash {hash_alg:#06x}")
        for pcr in (i for i in range(min(size, 4) * 8) if bitmap[i // 8] >> (i % 8) & 1):
            if not digests:
                raise _fail("the tpm2-tools PCR file has fewer values than it selects")
            banks.setdefault(name, {})[pcr] = digests.pop(0)
    return banks


def from_tpm2_tools(attest: bytes, signature: bytes, pcrs: bytes, ak_pem: Optional[bytes] = None) -> TpmEvidence:
    return TpmEvidence(attest, signature, parse_tpm2_tools_pcrs(pcrs), ak_pem)


def from_trustee_json(data: bytes) -> TpmEvidence:
    """Convert `{"ak_public": DER b64, "tpm_quote": {"message", "signature", "pcrs": [hex...]}}`."""
    try:
        doc = json.loads(data)
        quote = doc["tpm_quote"]
        attest = base64.b64decode(quote["message"], validate=True)
        signature = base64.b64decode(quote["signature"], validate=True)
        values = [bytes.fromhex(v) for v in quote["pcrs"]]
        ak_der = base64.b64decode(doc["ak_public"], validate=True)
        ak = serialization.load_der_public_key(ak_der)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _fail("not a trustee-style TPM evidence JSON document") from None
    banks = parse_attest(attest).pcr_select
    if len(banks) != 1:
        raise _fail("a trustee-style document carries one PCR bank; the quote selects several")
    pem = ak.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    selected = {i: v for i, v in enumerate(values) if i in banks[0].pcrs}
    return TpmEvidence(attest, signature, {banks[0].bank: selected}, pem)
