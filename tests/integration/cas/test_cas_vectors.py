"""Real SGX, TDX and SEV-SNP evidence (../shared/vectors) posted to a real CAS as attestations.

The vectors bind report data their makers chose, not our nonce and key, so every attestation must
end in `binding_mismatch`, and only after the real verifiers accepted the evidence: the audit entry
of each refusal holds the measurements the verifier read (MRENCLAVE, MRTD, the SNP launch digest).
The CAS reads collateral from its cache directory (`--collateral`): the SNP VCEKs are there; the
Intel collateral of the SGX vector is there too and has expired by now, which the CAS reports;
collateral a request carries is used only when the cache has none for the evidence.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from citadel.attest import binding, client
from citadel.attest.intel.collateral import crl_der
from citadel.attest.snp.collateral import vcek_path
from citadel.attest.snp.layouts import parse_report
from citadel.cas.admin_client import AdminClient
from citadel.cas.auth import default_client_key_path, load_or_create_client_key

from .server import CITADEL, CasServer

VECTORS = (Path(__file__).resolve().parents[3] / ".." / "shared" / "vectors").resolve()
SGX_FMSPC = "00a067110000"

# (vector, kind, measurement name, its value's first hex digits) from shared/vectors/README.md
EVIDENCE = [
    ("sgx/debug_quote_v3_occlum.bin", "sgx", "mrenclave", "8f173e46"),
    ("tdx/quote_v4.bin", "tdx", "mrtd", "91eb2b44"),
    ("tdx/quote_v4_b.bin", "tdx", "mrtd", "21e8dead"),
    ("snp/milan_report_v2.bin", "snp", "measurement", "b07af962"),
]


def _pcs_body(member: str, text: str, signature: str) -> bytes:
    return ('{"' + member + '":' + text + ',"signature":"' + signature + '"}').encode()


def _fill_cache(cache: Path) -> None:
    """A PCCS-style cache: the first SNP report's VCEK, and the SGX vector's (expired) collateral."""
    report = parse_report((VECTORS / "snp/milan_report_v2.bin").read_bytes())
    leaf = vcek_path(cache, "Milan", report.chip_id, report.reported_tcb)
    leaf.parent.mkdir(parents=True)
    leaf.write_bytes((VECTORS / "snp/milan_report_v2.vcek.der").read_bytes())
    sgx = json.loads((VECTORS / "sgx/prod_quote_v3.collateral.json").read_text())
    (cache / "sgx").mkdir()
    (cache / "sgx" / f"tcb_info_{SGX_FMSPC}.json").write_bytes(
        _pcs_body("tcbInfo", sgx["tcb_info"], sgx["tcb_info_signature"])
    )
    (cache / "sgx" / "qe_identity.json").write_bytes(
        _pcs_body("enclaveIdentity", sgx["qe_identity"], sgx["qe_identity_signature"])
    )
    (cache / "tcb_signing_chain.pem").write_text(sgx["tcb_info_issuer_chain"])
    for ca in ("platform", "processor"):
        (cache / f"pck_crl_{ca}.der").write_bytes(crl_der(sgx["pck_crl"], "pck_crl"))
    (cache / "root_ca_crl.der").write_bytes(crl_der(sgx["root_ca_crl"], "root_ca_crl"))


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CasServer]:
    if not (VECTORS / "README.md").is_file():
        pytest.fail(f"test vectors not found at {VECTORS}: clone the shared/ tree beside the repository")
    root = tmp_path_factory.mktemp("cas-vectors")
    cache = root / "collateral"
    cache.mkdir()
    _fill_cache(cache)
    home = root / "alice"
    home.mkdir()
    load_or_create_client_key(default_client_key_path({"HOME": str(home)}))
    server = CasServer(root / "state", home, extra_args=["--collateral", str(cache)]).start()
    try:
        yield server
    finally:
        server.stop()


def _attest(cas: CasServer, kind: str, evidence: bytes, collateral: Optional[Dict[str, Any]] = None) -> Tuple[int, Any]:
    """POST evidence for a fresh nonce and key, as an engine would; (status, answer)."""
    with client.CasClient(cas.url, cas.fingerprint) as conn:
        nonce = conn.nonce()
        _, public = binding.generate_key_pair()
        request: Dict[str, Any] = {
            "config_id": "vectors/app",
            "kind": kind,
            "nonce": client.b64(nonce),
            "public_key": client.b64(public),
            "evidence": client.b64(evidence),
        }
        if collateral is not None:
            request["collateral"] = collateral
        return conn.transport.request("POST", "/v1/attest", request)


def _last_attest(cas: CasServer) -> Dict[str, Any]:
    key, _ = load_or_create_client_key(default_client_key_path({"HOME": str(cas.home)}))
    with AdminClient(cas.url, cas.fingerprint, key) as admin:
        entries = admin.audit_page(limit=1000)["entries"]
    return dict([e for e in entries if e["event"] == "attest"][-1])


@pytest.mark.parametrize(("vector", "kind", "name", "prefix"), EVIDENCE, ids=[e[0] for e in EVIDENCE])
def test_real_evidence_verifies_and_is_refused_for_its_binding(
    cas: CasServer, vector: str, kind: str, name: str, prefix: str
) -> None:
    status, answer = _attest(cas, kind, (VECTORS / vector).read_bytes())
    assert status == 403 and answer["error"]["code"] == "binding_mismatch", answer
    assert "does not bind this nonce and public key" in answer["error"]["cause"]
    entry = _last_attest(cas)  # verified by the real verifier, then refused for its report data
    assert entry["reason"] == "binding_mismatch" and entry["details"]["kind"] == kind
    assert entry["details"]["measurements"][name].startswith(prefix)
    # SGX/TDX without collateral for their platform in the cache: the TCB stays unevaluated
    assert entry["details"]["tcb"] == "n/a"


def test_expired_collateral_in_the_cache_is_refused(cas: CasServer) -> None:
    """The SGX vector's collateral is in the cache and expired long ago: the CAS verifies at its own
    time and says so, and does not fall back to verifying without collateral."""
    status, answer = _attest(cas, "sgx", (VECTORS / "sgx/prod_quote_v3.bin").read_bytes())
    assert status == 403 and answer["error"]["code"] == "evidence_invalid"
    assert "expired" in answer["error"]["cause"]


@pytest.mark.filterwarnings("ignore:Parsed a serial number:cryptography.utils.CryptographyDeprecationWarning")
def test_snp_vcek_from_the_request_when_the_cache_has_none(cas: CasServer) -> None:
    evidence = (VECTORS / "snp/milan_report_v2_b.bin").read_bytes()
    status, answer = _attest(cas, "snp", evidence)
    assert status == 403 and answer["error"]["code"] == "evidence_invalid"
    assert "snp.collateral" in answer["error"]["cause"]
    vcek = x509.load_der_x509_certificate((VECTORS / "snp/milan_report_v2_b.vcek.der").read_bytes())
    pem = vcek.public_bytes(Encoding.PEM).decode()
    status, answer = _attest(cas, "snp", evidence, {"vcek": pem})
    assert status == 403 and answer["error"]["code"] == "binding_mismatch", answer
    assert _last_attest(cas)["details"]["measurements"]["measurement"].startswith("a1f39304")


def test_forged_evidence_is_refused_by_the_real_verifier(cas: CasServer) -> None:
    quote = bytearray((VECTORS / "tdx/quote_v4.bin").read_bytes())
    quote[48 + 136] ^= 1  # one bit of MRTD: the quote signature no longer verifies
    status, answer = _attest(cas, "tdx", bytes(quote))
    assert status == 403 and answer["error"]["code"] == "evidence_invalid"
    assert "quote.signature" in answer["error"]["cause"]


def test_collateral_setting_must_be_a_directory(tmp_path: Path) -> None:
    server = CasServer(tmp_path / "state", tmp_path)
    result = subprocess.run(
        CITADEL
        + [
            "cas",
            "serve",
            "--state-dir",
            str(tmp_path / "state"),
            "--port",
            "0",
            "--collateral",
            str(tmp_path / "nowhere"),
        ],
        capture_output=True,
        text=True,
        env=server.env(),
        timeout=60,
    )
    assert result.returncode != 0 and "collateral" in result.stderr and "not a directory" in result.stderr


@pytest.mark.parametrize(
    ("trust", "words"),
    [
        ({"tpm": {"ek_roots": "/x"}}, "do not fit its verifier"),
        ({"sim": {}}, "not a hardware evidence kind"),
        ({"tpm": {"trusted_aks": ["not a key"]}}, "anchors are unusable"),
        ({"sgx": {"root": "/nowhere/root.pem"}}, "anchors are unusable"),
    ],
    ids=["unknown_argument", "sim_is_not_configured_here", "malformed_ak", "missing_intel_root"],
)
def test_bad_trust_file_stops_the_cas(tmp_path: Path, trust: Dict[str, Any], words: str) -> None:
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(trust))
    server = CasServer(tmp_path / "state", tmp_path)
    result = subprocess.run(
        CITADEL + ["cas", "serve", "--state-dir", str(tmp_path / "state"), "--port", "0", "--trust", str(path)],
        capture_output=True,
        text=True,
        env=server.env(),
        timeout=60,
    )
    assert result.returncode != 0 and words in result.stderr, result.stderr
