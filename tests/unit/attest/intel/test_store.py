"""Collateral from files: the canonical JSON file and the collateral directory of PCS responses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from citadel.attest.intel import SgxVerifier, TdxVerifier
from citadel.attest.intel.collateral import crl_der
from citadel.attest.intel.store import load_collateral, split_signed_body
from citadel.errors import VerificationError
from tests.unit.attest.intel.conftest import PINNED
from tests.unit.attest.intel.factory import AT, Pki, make_collateral, make_quote


def _pcs_body(member: str, text: str, signature: str) -> bytes:
    """A PCS response body as Intel sends it: the signed member text, then the signature."""
    return ('{"' + member + '":' + text + ',"signature":"' + signature + '"}').encode()


def write_cache(root: Path, collateral: Dict[str, Any], tee: str, fmspc: str, ca: str) -> Path:
    (root / tee).mkdir(parents=True)
    (root / tee / f"tcb_info_{fmspc}.json").write_bytes(
        _pcs_body("tcbInfo", collateral["tcb_info"], collateral["tcb_info_signature"])
    )
    (root / tee / "qe_identity.json").write_bytes(
        _pcs_body("enclaveIdentity", collateral["qe_identity"], collateral["qe_identity_signature"])
    )
    (root / "tcb_signing_chain.pem").write_text(collateral["tcb_info_issuer_chain"])
    (root / f"pck_crl_{ca}.der").write_bytes(crl_der(collateral["pck_crl"], "pck_crl"))
    (root / "root_ca_crl.der").write_bytes(crl_der(collateral["root_ca_crl"], "root_ca_crl"))
    return root


def test_split_signed_body_returns_the_exact_member_text() -> None:
    body = b'{ "tcbInfo" :  {"a": [1, 2],\n "b": "x"} ,\n "signature" : "abcd" }'
    assert split_signed_body(body, "tcbInfo") == ('{"a": [1, 2],\n "b": "x"}', "abcd")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"tcbInfo": {}}',
        b'{"signature": "ab"}',
        b'{"tcbInfo": {}, "signature": 5}',
        b'{"tcbInfo" {}}',
    ],
    ids=["empty", "not_an_object", "no_signature", "no_member", "signature_not_text", "no_colon"],
)
def test_malformed_pcs_body_is_refused(body: bytes) -> None:
    with pytest.raises(VerificationError) as err:
        split_signed_body(body, "tcbInfo")
    assert err.value.check == "collateral.format"


def test_tdx_vector_collateral_directory_verifies(
    tmp_path: Path, tdx_quote: bytes, tdx_collateral: Dict[str, Any]
) -> None:
    cache = write_cache(tmp_path, tdx_collateral, "tdx", "b0c06f000000", "platform")
    collateral = load_collateral(cache, tdx_quote)
    assert TdxVerifier().verify(tdx_quote, at=PINNED, collateral=collateral).tcb_status == "UpToDate"


def test_sgx_vector_collateral_directory_picks_the_processor_ca_crl(
    tmp_path: Path, sgx_quote: bytes, sgx_collateral: Dict[str, Any]
) -> None:
    cache = write_cache(tmp_path, sgx_collateral, "sgx", "00a067110000", "processor")
    result = SgxVerifier().verify(sgx_quote, at=PINNED, collateral=load_collateral(cache, sgx_quote))
    assert result.tcb_status == "ConfigurationAndSWHardeningNeeded"


def test_synthetic_collateral_directory_with_pem_crls_verifies(tmp_path: Path, pki: Pki) -> None:
    collateral = make_collateral(pki)
    cache = write_cache(tmp_path, collateral, "sgx", pki.fmspc.hex(), "platform")
    for name in ("pck_crl_platform", "root_ca_crl"):
        der = (cache / f"{name}.der").read_bytes()
        (cache / f"{name}.der").unlink()
        (cache / f"{name}.pem").write_bytes(x509.load_der_x509_crl(der).public_bytes(Encoding.PEM))
    quote = make_quote(pki)
    result = SgxVerifier(pki.root).verify(quote, at=AT, collateral=load_collateral(cache, quote))
    assert result.tcb_status == "UpToDate"


def test_collateral_directory_without_this_fmspc_is_refused(
    tmp_path: Path, tdx_quote: bytes, tdx_collateral: Dict[str, Any]
) -> None:
    cache = write_cache(tmp_path, tdx_collateral, "tdx", "00a06d080000", "platform")
    with pytest.raises(VerificationError) as err:
        load_collateral(cache, tdx_quote)
    assert err.value.check == "collateral.missing"


def test_collateral_directory_needs_the_quote(tmp_path: Path) -> None:
    with pytest.raises(VerificationError) as err:
        load_collateral(tmp_path)
    assert err.value.check == "collateral.missing"


def test_collateral_json_file_loads(tmp_path: Path, sgx_quote: bytes, sgx_collateral: Dict[str, Any]) -> None:
    path = tmp_path / "collateral.json"
    path.write_text(json.dumps(sgx_collateral))
    collateral = load_collateral(path, sgx_quote)
    assert SgxVerifier().verify(sgx_quote, at=PINNED, collateral=collateral).platform == "00a067110000"


@pytest.mark.parametrize(
    "content,check",
    [(None, "collateral.missing"), (b"not json", "collateral.format"), (b"[1]", "collateral.format")],
    ids=["file_missing", "file_not_json", "file_not_an_object"],
)
def test_bad_collateral_file_is_refused(tmp_path: Path, content: Any, check: str) -> None:
    path = tmp_path / "collateral.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VerificationError) as err:
        load_collateral(path)
    assert err.value.check == check
