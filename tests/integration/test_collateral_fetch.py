"""`citadel collateral fetch` against recorded Intel PCS and AMD KDS responses served over real HTTP.

There is no network here, so the responses are recorded from the vectors' own files (PCS bodies and
issuer-chain headers rebuilt from the dcap-qvl collateral, two genuine PCS bodies, the VCEKs and AMD's
cert_chain) and replayed by an HTTP server on 127.0.0.1; the base URLs point the command at it.
A fetched cache then verifies offline with `citadel evidence verify --collateral`.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.conftest import clean_env

PCS = "/pcs"  # base path of the recorded Intel PCS (so one server can play every service)
CERTS = "/intel-certs"
KDS = "/kds"
SNP_AT = "2025-06-01T00:00:00Z"
INTEL_AT = "2025-07-01T00:00:00Z"


def _signed_body(member: str, text: str, signature: str) -> bytes:
    return ('{"' + member + '":' + text + ',"signature":"' + signature + '"}').encode()


def build_recording(vectors: Path) -> List[Dict[str, object]]:
    """Request path -> response, as a PCS/KDS recording would hold them (bodies base64)."""
    entries: List[Tuple[str, int, Dict[str, str], bytes]] = []
    quoted = urllib.parse.quote
    for tee, name, fmspc, ca in (
        ("sgx", "sgx/prod_quote_v3", "00A067110000", "processor"),
        ("tdx", "tdx/quote_v4", "B0C06F000000", "platform"),
    ):
        c = json.loads((vectors / f"{name}.collateral.json").read_text())
        entries += [
            (
                f"{PCS}/{tee}/certification/v4/tcb?fmspc={fmspc}",
                200,
                {"TCB-Info-Issuer-Chain": quoted(c["tcb_info_issuer_chain"])},
                _signed_body("tcbInfo", c["tcb_info"], c["tcb_info_signature"]),
            ),
            (
                f"{PCS}/{tee}/certification/v4/qe/identity",
                200,
                {"SGX-Enclave-Identity-Issuer-Chain": quoted(c["qe_identity_issuer_chain"])},
                _signed_body("enclaveIdentity", c["qe_identity"], c["qe_identity_signature"]),
            ),
            (
                f"{PCS}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der",
                200,
                {"SGX-PCK-CRL-Issuer-Chain": quoted(c["pck_crl_issuer_chain"])},
                bytes.fromhex(c["pck_crl"]),
            ),
            (f"{CERTS}/IntelSGXRootCA.der", 200, {}, bytes.fromhex(c["root_ca_crl"])),
        ]
    # genuine PCS bodies, served verbatim, for the second TDX platform
    chain = json.loads((vectors / "tdx" / "quote_v4.collateral.json").read_text())["tcb_info_issuer_chain"]
    entries += [
        (
            f"{PCS}/tdx/certification/v4/tcb?fmspc=00A06D080000",
            200,
            {"TCB-Info-Issuer-Chain": quoted(chain)},
            (vectors / "tdx" / "quote_v4_b.tcbInfo.json").read_bytes(),
        ),
    ]
    for name in ("milan_report_v2", "milan_report_v2_b"):
        report = (vectors / "snp" / f"{name}.bin").read_bytes()
        tcb = report[0x180:0x188]
        query = f"blSPL={tcb[0]}&teeSPL={tcb[1]}&snpSPL={tcb[6]}&ucodeSPL={tcb[7]}"
        entries.append(
            (
                f"{KDS}/vcek/v1/Milan/{report[0x1A0:0x1E0].hex()}?{query}",
                200,
                {"Content-Type": "application/x-x509-ca-cert"},
                (vectors / "snp" / f"{name}.vcek.der").read_bytes(),
            )
        )
    entries.append((f"{KDS}/vcek/v1/Milan/cert_chain", 200, {}, (vectors / "roots" / "ask_ark_milan.pem").read_bytes()))
    return [{"path": p, "status": s, "headers": h, "body": base64.b64encode(b).decode()} for p, s, h, b in entries]


class Replay(ThreadingHTTPServer):
    """Serves a recording; anything not recorded is a 404. Remembers what was asked."""

    def __init__(self, recording: List[Dict[str, object]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.responses = {str(e["path"]): e for e in recording}
        self.seen: List[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Replay

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.seen.append(self.path)
        entry = self.server.responses.get(self.path)
        if entry is None:
            self.send_response(404)
            self.end_headers()
            return
        body = base64.b64decode(str(entry["body"]))
        self.send_response(int(entry["status"]))  # type: ignore[call-overload]
        for name, value in dict(entry["headers"]).items():  # type: ignore[call-overload]
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recording(vectors_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "recording.json"
    path.write_text(json.dumps(build_recording(vectors_dir), indent=1))
    return path


def _serve(recording: List[Dict[str, object]]) -> Iterator[Replay]:
    server = Replay(recording)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def services(recording: Path) -> Iterator[Replay]:
    yield from _serve(json.loads(recording.read_text()))


@pytest.fixture
def citadel(run_citadel):
    env = clean_env(CITADEL_MODE="sim", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    return lambda *args: run_citadel([str(a) for a in args], env=env)


def _files(cache: Path) -> List[str]:
    return sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())


def test_snp_collateral_is_fetched_then_verifies_offline(citadel, services, vectors_dir, tmp_path):
    cache = tmp_path / "cache"
    for name in ("milan_report_v2", "milan_report_v2_b"):
        report = vectors_dir / "snp" / f"{name}.bin"
        fetched = citadel(
            "collateral",
            "fetch",
            "--kind",
            "snp",
            report,
            "--product",
            "Milan",
            "--cache",
            cache,
            "--kds-url",
            services.url + KDS,
        )
        assert fetched.returncode == 0, fetched.stderr
        assert fetched.stdout.count("wrote ") == 2
    chip = (vectors_dir / "snp" / "milan_report_v2.bin").read_bytes()[0x1A0:0x1E0].hex()
    assert f"{KDS}/vcek/v1/Milan/{chip}?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68" in services.seen
    assert f"amd/Milan/vcek/{chip}/0200000000000544.der" in _files(cache)
    services.shutdown()  # verification never needs the network
    for name in ("milan_report_v2", "milan_report_v2_b"):
        verified = citadel(
            "evidence",
            "verify",
            vectors_dir / "snp" / f"{name}.bin",
            "--kind",
            "snp",
            "--collateral",
            cache,
            "--at",
            SNP_AT,
            "--json",
        )
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout)["details"]["certificate_chain"] == [
            "SEV-VCEK",
            "SEV-Milan",
            "ARK-Milan",
        ]


def test_a_v2_report_needs_its_product(citadel, services, vectors_dir, tmp_path):
    result = citadel(
        "collateral",
        "fetch",
        "--kind",
        "snp",
        vectors_dir / "snp" / "milan_report_v2.bin",
        "--cache",
        tmp_path / "c",
        "--kds-url",
        services.url + KDS,
    )
    assert result.returncode == 1 and "--product" in result.stderr
    assert services.seen == []


@pytest.mark.parametrize(
    ("kind", "quote", "files"),
    [
        (
            "sgx",
            "sgx/prod_quote_v3.bin",
            ["pck_crl_processor.der", "sgx/qe_identity.json", "sgx/tcb_info_00a067110000.json"],
        ),
        (
            "tdx",
            "tdx/quote_v4.bin",
            ["pck_crl_platform.der", "tdx/qe_identity.json", "tdx/tcb_info_b0c06f000000.json"],
        ),
    ],
)
def test_intel_collateral_is_fetched_from_a_quote_then_verifies_offline(
    citadel, services, vectors_dir, tmp_path, kind, quote, files
):
    cache = tmp_path / "cache"
    fetched = citadel(
        "collateral",
        "fetch",
        "--kind",
        kind,
        vectors_dir / quote,
        "--cache",
        cache,
        "--pcs-url",
        services.url + PCS,
        "--intel-certs-url",
        services.url + CERTS,
    )
    assert fetched.returncode == 0, fetched.stderr
    assert _files(cache) == sorted([*files, "root_ca_crl.der", "tcb_signing_chain.pem"])
    services.shutdown()
    verified = citadel(
        "evidence",
        "verify",
        vectors_dir / quote,
        "--kind",
        kind,
        "--collateral",
        cache,
        "--at",
        INTEL_AT,
        "--json",
    )
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["details"]["collateral"] == "verified"


def test_genuine_pcs_bodies_are_cached_byte_for_byte(citadel, services, vectors_dir, tmp_path):
    """Intel signs the exact text of tcbInfo: the cache keeps the body as served, and it still verifies."""
    from citadel.attest.intel.store import split_signed_body

    cache = tmp_path / "cache"
    result = citadel(
        "collateral",
        "fetch",
        "--kind",
        "tdx",
        "--fmspc",
        "00a06d080000",
        "--ca",
        "platform",
        "--cache",
        cache,
        "--pcs-url",
        services.url + PCS,
        "--intel-certs-url",
        services.url + CERTS,
    )
    assert result.returncode == 0, result.stderr
    cached = (cache / "tdx" / "tcb_info_00a06d080000.json").read_bytes()
    assert cached == (vectors_dir / "tdx" / "quote_v4_b.tcbInfo.json").read_bytes()
    text, signature = split_signed_body(cached, "tcbInfo")
    signer = x509.load_pem_x509_certificates((cache / "tcb_signing_chain.pem").read_bytes())[0].public_key()
    raw = bytes.fromhex(signature)
    assert isinstance(signer, ec.EllipticCurvePublicKey)
    signer.verify(
        encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")),
        text.encode(),
        ec.ECDSA(hashes.SHA256()),
    )


def test_a_missing_vcek_fails_and_leaves_the_cache_untouched(citadel, recording, vectors_dir, tmp_path):
    entries = [
        e
        for e in json.loads(recording.read_text())
        if "/vcek/v1/Milan/" not in str(e["path"]) or "cert_chain" in str(e["path"])
    ]
    cache = tmp_path / "cache"
    cache.mkdir()
    for server in _serve(entries):
        result = citadel(
            "collateral",
            "fetch",
            "--kind",
            "snp",
            vectors_dir / "snp" / "milan_report_v2.bin",
            "--product",
            "Milan",
            "--cache",
            cache,
            "--kds-url",
            server.url + KDS,
        )
    assert result.returncode == 1 and "HTTP 404" in result.stderr and "Traceback" not in result.stderr
    assert _files(cache) == []


def test_a_vcek_that_is_not_a_certificate_is_not_cached(citadel, recording, vectors_dir, tmp_path):
    entries = json.loads(recording.read_text())
    for entry in entries:
        if "/vcek/v1/Milan/" in str(entry["path"]) and "cert_chain" not in str(entry["path"]):
            entry["body"] = base64.b64encode(b"<html>rate limited</html>").decode()
    cache = tmp_path / "cache"
    for server in _serve(entries):
        result = citadel(
            "collateral",
            "fetch",
            "--kind",
            "snp",
            vectors_dir / "snp" / "milan_report_v2.bin",
            "--product",
            "Milan",
            "--cache",
            cache,
            "--kds-url",
            server.url + KDS,
        )
    assert result.returncode == 1 and "did not answer with a certificate" in result.stderr
    assert not cache.exists() or _files(cache) == []


def test_an_unreachable_service_is_one_clear_error(citadel, vectors_dir, tmp_path):
    server = Replay([])  # bound, then closed: nothing listens on its port any more
    url = server.url
    server.server_close()
    result = citadel(
        "collateral",
        "fetch",
        "--kind",
        "snp",
        vectors_dir / "snp" / "milan_report_v2.bin",
        "--product",
        "Milan",
        "--cache",
        tmp_path / "c",
        "--kds-url",
        url,
        "--timeout",
        "5",
    )
    assert result.returncode == 1 and "cannot reach" in result.stderr and "Traceback" not in result.stderr


def test_list_shows_the_cache(citadel, services, vectors_dir, tmp_path):
    cache = tmp_path / "cache"
    citadel(
        "collateral",
        "fetch",
        "--kind",
        "snp",
        vectors_dir / "snp" / "milan_report_v2_b.bin",
        "--product",
        "Milan",
        "--cache",
        cache,
        "--kds-url",
        services.url + KDS,
    )
    listing = citadel("collateral", "list", cache)
    assert listing.returncode == 0 and "amd/Milan/cert_chain.pem" in listing.stdout
