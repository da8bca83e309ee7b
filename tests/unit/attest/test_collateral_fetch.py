"""The pure half of collateral fetching: which URLs, and which files a response becomes."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

from citadel.attest import collateral_fetch as cf
from citadel.attest.snp.layouts import encode_tcb
from tests.unit.attest.snp.forge import set_field

REPO = Path(__file__).resolve().parents[3]
VECTORS = (REPO.parent / "shared" / "vectors").resolve()
REPORT = VECTORS / "snp" / "milan_report_v2.bin"


def test_amd_requests_name_the_kds_urls() -> None:
    report = REPORT.read_bytes()
    chain, vcek = cf.amd_requests(report, product="Milan", kds_url="http://kds.test/")
    chip = report[0x1A0:0x1E0].hex()
    assert chain.url == "http://kds.test/vcek/v1/Milan/cert_chain"
    assert vcek.url == f"http://kds.test/vcek/v1/Milan/{chip}?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68"
    assert vcek.dest == f"amd/Milan/vcek/{chip}/0200000000000544.der"
    assert chain.dest == "amd/Milan/cert_chain.pem"


def test_amd_requests_for_turin_use_fmc_and_8_byte_hwid() -> None:
    report = set_field(REPORT.read_bytes(), "version", 3)
    report = set_field(set_field(report, "cpuid_fam_id", 0x1A), "cpuid_mod_id", 0x02)
    report = set_field(report, "reported_tcb", encode_tcb("Turin", {"fmc": 1, "bl": 2, "tee": 3, "snp": 4, "ucode": 5}))
    _, vcek = cf.amd_requests(report)
    hwid = report[0x1A0:0x1A8].hex()
    assert vcek.url == f"https://kdsintf.amd.com/vcek/v1/Turin/{hwid}?fmcSPL=1&blSPL=2&teeSPL=3&snpSPL=4&ucodeSPL=5"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({}, "--product"), ({"product": "Genoa"}, None), ({"product": "Rome"}, "unknown AMD product")],
)
def test_amd_requests_need_a_known_product_for_v2(kwargs: dict, message: object) -> None:
    if message is None:
        assert cf.amd_requests(REPORT.read_bytes(), **kwargs)[0].url.endswith("/Genoa/cert_chain")
        return
    with pytest.raises(cf.CollateralFormatError) as caught:
        cf.amd_requests(REPORT.read_bytes(), **kwargs)
    assert str(message) in caught.value.cause + caught.value.remedy


def test_amd_requests_refuse_vlek_and_masked_reports() -> None:
    with pytest.raises(cf.CollateralFormatError):
        cf.amd_requests(set_field(REPORT.read_bytes(), "key_info", 1 << 2), product="Milan")
    with pytest.raises(cf.CollateralFormatError):
        cf.amd_requests(set_field(REPORT.read_bytes(), "chip_id", bytes(64)), product="Milan")


def test_intel_requests_name_the_pcs_v4_urls() -> None:
    tcb, qe, crl, root = cf.intel_requests(
        "tdx", "b0c06f000000", "platform", pcs_url="http://pcs.test", certs_url="http://c.test"
    )
    assert tcb.url == "http://pcs.test/tdx/certification/v4/tcb?fmspc=B0C06F000000"
    assert tcb.dest == "tdx/tcb_info_b0c06f000000.json"
    assert qe.url == "http://pcs.test/tdx/certification/v4/qe/identity" and qe.dest == "tdx/qe_identity.json"
    assert crl.url == "http://pcs.test/sgx/certification/v4/pckcrl?ca=platform&encoding=der"
    assert root.url == "http://c.test/IntelSGXRootCA.der"


@pytest.mark.parametrize(
    ("tee", "fmspc", "ca"),
    [("sev", "00" * 6, "platform"), ("sgx", "00", "platform"), ("sgx", "00" * 6, "root")],
)
def test_intel_requests_refuse_bad_keys(tee: str, fmspc: str, ca: str) -> None:
    with pytest.raises(cf.CollateralFormatError):
        cf.intel_requests(tee, fmspc, ca)


def test_tcb_response_becomes_body_and_signing_chain() -> None:
    collateral = json.loads((VECTORS / "sgx" / "prod_quote_v3.collateral.json").read_text())
    body = (
        '{"tcbInfo":' + collateral["tcb_info"] + ',"signature":"' + collateral["tcb_info_signature"] + '"}'
    ).encode()
    request = cf.intel_requests("sgx", "00a067110000", "processor")[0]
    headers = {"tcb-info-issuer-chain": urllib.parse.quote(collateral["tcb_info_issuer_chain"])}
    files = cf.files_from_response(request, cf.Response(200, headers, body))
    assert files == {
        "sgx/tcb_info_00a067110000.json": body,
        "tcb_signing_chain.pem": collateral["tcb_info_issuer_chain"].encode(),
    }


def test_responses_of_the_wrong_shape_are_refused() -> None:
    tcb, _, crl, _ = cf.intel_requests("sgx", "00a067110000", "processor")
    chain, vcek = cf.amd_requests(REPORT.read_bytes(), product="Milan")
    for request, body in ((tcb, b"{}"), (crl, b"not a crl"), (chain, b"nope"), (vcek, b"\x30\x00")):
        with pytest.raises(cf.CollateralFormatError):
            cf.files_from_response(request, cf.Response(200, {"tcb-info-issuer-chain": "x"}, body))
    with pytest.raises(cf.CollateralFormatError):  # right body, no issuer chain header
        cf.files_from_response(tcb, cf.Response(200, {}, b'{"tcbInfo": {}, "signature": "00"}'))


def test_http_errors_are_transport_errors() -> None:
    request = cf.amd_requests(REPORT.read_bytes(), product="Milan")[0]
    with pytest.raises(cf.CollateralFetchError) as caught:
        cf.files_from_response(request, cf.Response(429, {}, b""))
    assert "HTTP 429" in caught.value.cause


def test_only_http_urls_are_fetched() -> None:
    with pytest.raises(cf.CollateralFetchError):
        cf.http_get("file:///etc/passwd")
