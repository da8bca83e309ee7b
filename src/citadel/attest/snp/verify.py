"""Verify an AMD SEV-SNP attestation report against AMD's certificate chain.

Steps, each raising `VerificationError` with the check named in brackets (docs/evidence-amd-tpm.md):
parse the report [snp.parse, snp.version]; require ECDSA P-384 [snp.signature_algo] and a VCEK or
VLEK signer [snp.signing_key]; read the VCEK/VLEK from the collateral [snp.collateral] and its KDS
extensions [snp.vcek_extensions]; settle the product from the report's CPUID (v3+) and the
certificate [snp.product]; check ARK (pinned, self-signed) -> ASK -> VCEK, RSA-PSS SHA-384
[snp.ark_untrusted, snp.chain, snp.ark_signature, snp.ask_signature, snp.vcek_signature] and their
validity at the verification time [snp.cert_validity]; match the chip id [snp.chip_id] and the
reported TCB [snp.tcb] with the certificate; verify the report's signature [snp.report_signature].

The verifier never fetches: the VCEK comes in `collateral` (see `citadel.attest.snp.collateral`).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from citadel.attest.evidence import VerifiedEvidence
from citadel.attest.snp import certs
from citadel.attest.snp.layouts import (
    PLATFORM_INFO_BITS,
    POLICY_BITS,
    PRODUCTS,
    SIG_ALGO_ECDSA_P384_SHA384,
    SIGNING_KEY_VCEK,
    SIGNING_KEY_VLEK,
    SnpReport,
    TcbVersion,
    bit_names,
    encode_tcb,
    parse_report,
)
from citadel.errors import VerificationError

KIND = "snp"


def utc(at: _dt.datetime) -> _dt.datetime:
    """The verification time as an aware UTC datetime (a naive one is taken as UTC)."""
    if at.tzinfo is None:
        return at.replace(tzinfo=_dt.timezone.utc)
    return at.astimezone(_dt.timezone.utc)


def _as_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, (bytes, bytearray)):
        raise VerificationError("snp.collateral", f"the collateral's {what} is not bytes")
    return bytes(value)


def _version(major: int, minor: int, build: int) -> str:
    return f"{major}.{minor}.{build}"


class SnpVerifier:
    """SEV-SNP reports, trusting one ASK+ARK bundle per product (default: the bundled AMD roots).

    `ark_ask_bundles` maps a bundle key (`milan`, `genoa`, `turin`, and `milan_vlek` etc. for VLEK
    chains) to the PEM text (bytes or str) of the KDS `cert_chain` (ASK or ASVK first, then ARK).
    """

    kind = KIND

    def __init__(self, ark_ask_bundles: Optional[Mapping[str, Union[bytes, str]]] = None) -> None:
        bundles = certs.default_bundles() if ark_ask_bundles is None else ark_ask_bundles
        self._bundles: Dict[str, bytes] = {
            key: value.encode() if isinstance(value, str) else bytes(value) for key, value in bundles.items()
        }

    def verify(
        self,
        evidence: bytes,
        *,
        at: _dt.datetime,
        collateral: Optional[Mapping[str, Any]] = None,
    ) -> VerifiedEvidence:
        at = utc(at)
        report = parse_report(evidence)
        if report.signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
            raise VerificationError(
                "snp.signature_algo", f"signature algorithm {report.signature_algo} is not ECDSA P-384 (1)"
            )
        if report.mask_chip_key:
            raise VerificationError("snp.signing_key", "MASK_CHIP_KEY is set: the firmware did not sign this report")
        if report.signing_key not in (SIGNING_KEY_VCEK, SIGNING_KEY_VLEK):
            raise VerificationError("snp.signing_key", f"signing key {report.signing_key} is neither VCEK nor VLEK")
        vlek = report.signing_key == SIGNING_KEY_VLEK
        leaf_name = "VLEK" if vlek else "VCEK"
        collateral = collateral or {}
        leaf_bytes = collateral.get("vlek" if vlek else "vcek")
        if leaf_bytes is None:
            raise VerificationError(
                "snp.collateral",
                f"no {leaf_name} certificate was supplied",
                "pass --collateral with the VCEK (DER/PEM) or a cache filled by `citadel collateral fetch`",
            )
        leaf = certs.load_cert(_as_bytes(leaf_bytes, leaf_name), leaf_name, check="snp.collateral")
        ext = certs.parse_kds_extensions(leaf, vlek)
        product = self._product(report, ext)
        ask, ark = self._chain(product, vlek, collateral)

        certs.check_is_ca(ark, "ARK")
        certs.verify_pss(ark, ark, "snp.ark_signature", "ARK")
        certs.check_is_ca(ask, "ASK")
        certs.verify_pss(ask, ark, "snp.ask_signature", "ASK")
        certs.verify_pss(leaf, ask, "snp.vcek_signature", leaf_name)
        for cert, what in ((ark, "ARK"), (ask, "ASK"), (leaf, leaf_name)):
            certs.check_validity(cert, what, at)
        key = leaf.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
            raise VerificationError("snp.chain", f"the {leaf_name} key is not an ECDSA P-384 key")

        self._check_chip_id(report, ext, product)
        expected_tcb = encode_tcb(product, ext.spl)
        if report.reported_tcb != expected_tcb:
            raise VerificationError(
                "snp.tcb",
                f"REPORTED_TCB ({TcbVersion.decode(report.reported_tcb, product)}) is not the TCB "
                f"the {leaf_name} was issued for ({TcbVersion.decode(expected_tcb, product)})",
                f"fetch the {leaf_name} for this report's TCB (`citadel collateral fetch`)",
            )
        self._check_signature(report, key)
        return self._facts(report, product, ext, leaf, (ask, ark), vlek)

    # -- steps -----------------------------------------------------------------------------------

    def _product(self, report: SnpReport, ext: certs.KdsExtensions) -> str:
        cert_product = ext.product
        if cert_product not in PRODUCTS:
            raise VerificationError("snp.product", f"the certificate names an unknown product {ext.product_name!r}")
        if report.has_cpuid:
            named = report.cpuid_product
            if named is None:
                raise VerificationError(
                    "snp.product",
                    f"CPUID family 0x{report.cpuid_fam_id:x} model 0x{report.cpuid_mod_id:x} "
                    "is not a known SEV-SNP product",
                )
            if named != cert_product:
                raise VerificationError(
                    "snp.product",
                    f"the report comes from a {named} CPU but the certificate is for {cert_product}",
                )
        return cert_product

    def _chain(
        self, product: str, vlek: bool, collateral: Mapping[str, Any]
    ) -> Tuple[x509.Certificate, x509.Certificate]:
        key = certs.bundle_key(product, vlek)
        if key not in self._bundles:
            raise VerificationError("snp.chain", f"no trusted ASK/ARK bundle for {key!r}")
        trusted_ask, trusted_ark = certs.load_bundle(self._bundles[key], f"trusted {key} bundle")
        ask, ark = trusted_ask, trusted_ark
        if collateral.get("cert_chain") is not None:
            ask, ark = certs.load_bundle(_as_bytes(collateral["cert_chain"], "cert_chain"), "collateral cert_chain")
        if collateral.get("ask") is not None:
            ask = certs.load_cert(_as_bytes(collateral["ask"], "ASK"), "ASK")
        if collateral.get("ark") is not None:
            ark = certs.load_cert(_as_bytes(collateral["ark"], "ARK"), "ARK")
        der = serialization.Encoding.DER
        if ark.public_bytes(der) != trusted_ark.public_bytes(der):
            raise VerificationError(
                "snp.ark_untrusted",
                f"the chain ends in {certs.common_name(ark.subject)!r}, not in the trusted {product} ARK",
                "only AMD's ARK is trusted; remove the foreign certificates from the collateral",
            )
        return ask, ark

    @staticmethod
    def _check_chip_id(report: SnpReport, ext: certs.KdsExtensions, product: str) -> None:
        if ext.hwid is None or report.chip_id_masked:
            return  # VLEK, or MASK_CHIP_ID: the VCEK signature alone binds the chip
        if len(ext.hwid) == certs.CHIP_ID_SIZE:
            same = report.chip_id == ext.hwid
        else:  # an 8-byte hwID: only Turin names its chips with the first 8 bytes of CHIP_ID
            same = product == "Turin" and report.chip_id[: certs.TURIN_HWID_SIZE] == ext.hwid
        if not same:
            raise VerificationError(
                "snp.chip_id",
                f"the VCEK belongs to chip {ext.hwid.hex()[:16]}..., the report to chip {report.chip_id.hex()[:16]}...",
                "supply the VCEK of the chip that produced this report",
            )

    @staticmethod
    def _check_signature(report: SnpReport, key: ec.EllipticCurvePublicKey) -> None:
        r = int.from_bytes(report.signature_r, "little")
        s = int.from_bytes(report.signature_s, "little")
        try:
            key.verify(encode_dss_signature(r, s), report.signed_bytes, ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            raise VerificationError(
                "snp.report_signature", "the report's signature does not verify with the VCEK"
            ) from None

    @staticmethod
    def _facts(
        report: SnpReport,
        product: str,
        ext: certs.KdsExtensions,
        leaf: x509.Certificate,
        chain: Tuple[x509.Certificate, x509.Certificate],
        vlek: bool,
    ) -> VerifiedEvidence:
        measurements = {
            "measurement": report.measurement.hex(),
            "policy": f"0x{report.policy:x}",
            "guest_svn": str(report.guest_svn),
            "vmpl": str(report.vmpl),
            "host_data": report.host_data.hex(),
            "family_id": report.family_id.hex(),
            "image_id": report.image_id.hex(),
            "id_key_digest": report.id_key_digest.hex(),
            "author_key_digest": report.author_key_digest.hex(),
        }
        tcb = {
            name: TcbVersion.decode(getattr(report, name), product).as_dict()
            for name in ("reported_tcb", "current_tcb", "committed_tcb", "launch_tcb")
        }
        details: Dict[str, Any] = {
            "version": report.version,
            "product": product,
            "product_name": ext.product_name,
            "signing_key": "VLEK" if vlek else "VCEK",
            "policy_flags": bit_names(report.policy, POLICY_BITS),
            "policy_abi_min": f"{report.policy >> 8 & 0xFF}.{report.policy & 0xFF}",
            "platform_info": f"0x{report.platform_info:x}",
            "platform_flags": bit_names(report.platform_info, PLATFORM_INFO_BITS),
            "author_key_en": report.author_key_en,
            "chip_id": report.chip_id.hex(),
            "chip_id_masked": report.chip_id_masked,
            "report_id": report.report_id.hex(),
            "report_id_ma": report.report_id_ma.hex(),
            "firmware_current": _version(report.current_major, report.current_minor, report.current_build),
            "firmware_committed": _version(report.committed_major, report.committed_minor, report.committed_build),
            "certificate_chain": certs.chain_summary([leaf, *chain]),
            **tcb,
        }
        if report.has_cpuid:
            details["cpuid"] = {
                "family": report.cpuid_fam_id,
                "model": report.cpuid_mod_id,
                "stepping": report.cpuid_step,
            }
        if report.version >= 5:
            details["launch_mit_vector"] = f"0x{report.launch_mit_vector:x}"
            details["current_mit_vector"] = f"0x{report.current_mit_vector:x}"
        platform = f"vlek:{ext.csp_id}" if vlek else (ext.hwid or b"").hex()
        return VerifiedEvidence(
            kind=KIND,
            report_data=report.report_data,
            measurements=measurements,
            debug=report.debug,
            tcb_status="n/a",
            platform=platform,
            details=details,
        )
