"""Build TPMS_ATTEST / TPMT_SIGNATURE bytes for quotes no TPM made (other schemes, other banks)."""

from __future__ import annotations

import hashlib
import struct
from typing import Dict, List, Tuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from citadel.attest.tpm import layouts as L


def selection(banks: List[Tuple[int, List[int]]]) -> bytes:
    out = struct.pack(">I", len(banks))
    for alg, pcrs in banks:
        bitmap = bytearray(3)
        for pcr in pcrs:
            bitmap[pcr // 8] |= 1 << (pcr % 8)
        out += struct.pack(">HB", alg, 3) + bytes(bitmap)
    return out


def attest(
    nonce: bytes, banks: List[Tuple[int, List[int]]], values: Dict[int, Dict[int, bytes]], digest_alg: str
) -> bytes:
    """A quote TPMS_ATTEST whose pcrDigest covers `values` (alg -> pcr -> value) in selection order."""
    concatenated = b"".join(values[alg][pcr] for alg, pcrs in banks for pcr in sorted(pcrs))
    digest = hashlib.new(digest_alg, concatenated).digest()
    signer = struct.pack(">H", L.ALG_SHA256) + bytes(32)
    return (
        struct.pack(">IH", L.TPM_GENERATED_VALUE, L.TPM_ST_ATTEST_QUOTE)
        + struct.pack(">H", len(signer))
        + signer
        + struct.pack(">H", len(nonce))
        + nonce
        + struct.pack(">QIIB", 1234, 1, 0, 1)
        + struct.pack(">Q", 0x2019102300163636)
        + selection(banks)
        + struct.pack(">H", len(digest))
        + digest
    )


def sign_ecdsa(key: ec.EllipticCurvePrivateKey, message: bytes, alg: hashes.HashAlgorithm, alg_id: int) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(alg)))
    size = (key.curve.key_size + 7) // 8
    rb, sb = r.to_bytes(size, "big"), s.to_bytes(size, "big")
    return struct.pack(">HH", L.ALG_ECDSA, alg_id) + struct.pack(">H", size) + rb + struct.pack(">H", size) + sb


def sign_rsapss(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    sig = key.sign(message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    return struct.pack(">HH", L.ALG_RSAPSS, L.ALG_SHA256) + struct.pack(">H", len(sig)) + sig
