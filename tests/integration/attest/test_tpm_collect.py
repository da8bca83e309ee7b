"""The TPM collector against a real software TPM (swtpm): extend, create the AK, quote, verify.

Everything here runs real TPM 2.0 commands on swtpm (libtpms) over its TCP socket, and checks the
result with Citadel's verifier and, as a second implementation, with tpm2-tools. What it cannot show:
the kernel device path (/dev/tpmrm0) with a hardware TPM, whose largest hash may be too small for 64
bytes of qualifying data (docs/evidence-collection.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import struct
import subprocess
from pathlib import Path
from typing import Dict

import pytest
from cryptography.hazmat.primitives import serialization

from citadel.attest import binding
from citadel.attest.collect import collect_evidence
from citadel.attest.collect.errors import CollectionError, TpmCommandError
from citadel.attest.collect.tpm import (
    AK_UNIQUE,
    ENGINE_PCR,
    QUOTE_PCRS,
    TpmClient,
    collect_tpm,
    engine_pcr_value,
    quote_engine,
    read_ak_public_pem,
)
from citadel.attest.collect.tpm_rc import rc_base
from citadel.attest.collect.tpm_transport import TcpTransport, open_transport
from citadel.attest.collect.tpm_wire import ALG_SHA256, CC_PCR_EXTEND, CC_QUOTE, HEADER, U16, U32, build_command
from citadel.attest.tpm.container import parse_container
from citadel.attest.tpm.verify import TpmVerifier, ak_fingerprint
from citadel.errors import VerificationError

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
MEASUREMENT = hashlib.sha256(b"citadel engine measurement for the tests").digest()
NONCE = bytes(range(48))
ENGINE_KEY = bytes(range(100, 132))
REPORT_DATA = binding.report_data(NONCE, ENGINE_KEY)


def _verify(evidence: bytes, ak_pem: bytes, nonce: bytes = REPORT_DATA):
    return TpmVerifier(ak_pem).verify(evidence, at=NOW, collateral={"nonce": nonce})


def test_quote_verifies_against_the_pinned_ak_with_pcr23_the_extend_chain(swtpm):
    evidence = collect_evidence("tpm", REPORT_DATA, measurement=MEASUREMENT.hex(), tpm=swtpm.address)
    ak = read_ak_public_pem(swtpm.address)
    facts = _verify(evidence, ak)
    assert facts.measurements["pcr23"] == hashlib.sha256(bytes(32) + MEASUREMENT).hexdigest()
    assert facts.measurements["pcr23"] == engine_pcr_value(MEASUREMENT).hex()
    assert sorted(facts.measurements) == sorted(f"pcr{p}" for p in QUOTE_PCRS)
    assert facts.report_data == REPORT_DATA
    assert facts.platform == "ak:" + ak_fingerprint(serialization.load_pem_public_key(ak))
    binding.verify_report_data(facts.report_data, NONCE, ENGINE_KEY)  # what the CAS checks next
    container = parse_container(evidence)
    assert container.ak_pem == ak and set(container.pcrs) == {"sha256"}


def test_a_second_collection_gives_the_same_pcr23_because_it_resets_first(swtpm):
    first = _verify(collect_tpm(REPORT_DATA, MEASUREMENT, tpm=swtpm.address), read_ak_public_pem(swtpm.address))
    second = _verify(collect_tpm(REPORT_DATA, MEASUREMENT, tpm=swtpm.address), read_ak_public_pem(swtpm.address))
    assert first.measurements["pcr23"] == second.measurements["pcr23"]


def test_quote_for_another_nonce_is_refused(swtpm):
    evidence = collect_tpm(REPORT_DATA, MEASUREMENT, tpm=swtpm.address)
    ak = read_ak_public_pem(swtpm.address)
    other = binding.report_data(bytes(48), ENGINE_KEY)
    with pytest.raises(VerificationError) as refused:
        _verify(evidence, ak, nonce=other)
    assert refused.value.check == "tpm.nonce"
    with pytest.raises(VerificationError) as unbound:
        binding.verify_report_data(_verify(evidence, ak).report_data, bytes(48), ENGINE_KEY)
    assert unbound.value.check == "binding"


def test_ak_is_the_same_across_create_primary_calls_and_restarts_and_differs_per_tpm(start_swtpm):
    tpm = start_swtpm()
    first, second = read_ak_public_pem(tpm.address), read_ak_public_pem(tpm.address)
    assert first == second
    tpm.stop()
    again = start_swtpm(state=tpm.state)  # the same TPM (same seeds) after a restart
    assert read_ak_public_pem(again.address) == first
    stranger = start_swtpm()  # another TPM: another endorsement seed, another AK
    assert read_ak_public_pem(stranger.address) != first
    forged = collect_tpm(REPORT_DATA, MEASUREMENT, tpm=stranger.address)
    with pytest.raises(VerificationError) as refused:
        _verify(forged, first)
    assert refused.value.check == "tpm.ak_untrusted"


def _tpm2_tools_pcrs(values: Dict[int, bytes]) -> bytes:
    """tpm2-tools' serialized PCR file (TPML_PCR_SELECTION + TPML_DIGESTs, little-endian, padded)."""
    bitmap = bytearray(4)
    for pcr in values:
        bitmap[pcr // 8] |= 1 << (pcr % 8)
    selection = struct.pack("<I", 1) + struct.pack("<HB4sx", ALG_SHA256, 3, bytes(bitmap)) + bytes(8 * 15)
    digests = [values[p] for p in sorted(values)]
    lists = [digests[i : i + 8] for i in range(0, len(digests), 8)]
    out = selection + struct.pack("<I", len(lists))
    for chunk in lists:
        out += struct.pack("<I", len(chunk)) + b"".join(struct.pack("<H64s", len(d), d) for d in chunk)
        out += bytes(66 * (8 - len(chunk)))
    return out


def _tools_env(swtpm) -> Dict[str, str]:
    return {**os.environ, "TPM2TOOLS_TCTI": swtpm.tcti}


def test_tpm2_checkquote_accepts_the_quote_and_refuses_another_nonce(swtpm, tmp_path: Path):
    """A second, independent implementation (tpm2-tools) checks signature, nonce and PCR digest."""
    container = parse_container(collect_tpm(REPORT_DATA, MEASUREMENT, tpm=swtpm.address))
    (tmp_path / "ak.pem").write_bytes(read_ak_public_pem(swtpm.address))
    (tmp_path / "attest").write_bytes(container.attest)
    (tmp_path / "sig").write_bytes(container.signature)
    (tmp_path / "pcrs").write_bytes(_tpm2_tools_pcrs(container.pcrs["sha256"]))
    command = ["tpm2_checkquote", "-u", "ak.pem", "-m", "attest", "-s", "sig", "-f", "pcrs", "-g", "sha256"]
    ok = subprocess.run([*command, "-q", REPORT_DATA.hex()], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert engine_pcr_value(MEASUREMENT).hex() in ok.stdout.lower()
    bad = subprocess.run([*command, "-q", bytes(64).hex()], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0 and "nonce" in bad.stderr


def test_tpm2_createprimary_derives_the_same_ak_from_the_documented_template(swtpm, tmp_path: Path):
    """The template in docs/evidence-collection.md, given to tpm2-tools, yields the AK Citadel pins."""
    (tmp_path / "unique.bin").write_bytes(struct.pack("<H", 32) + AK_UNIQUE + struct.pack("<H", 0))
    env = _tools_env(swtpm)
    attributes = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|sign"
    steps = [
        ["tpm2_createprimary", "-C", "e", "-g", "sha256", "-G", "ecc256:ecdsa-sha256:null", "-a", attributes,
         "-u", "unique.bin", "-c", "ak.ctx"],
        ["tpm2_readpublic", "-c", "ak.ctx", "-f", "pem", "-o", "ak.pem"],
        ["tpm2_flushcontext", "-t"],
    ]
    for step in steps:
        done = subprocess.run(step, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{step[0]}: {done.stderr}"
    assert (tmp_path / "ak.pem").read_bytes() == read_ak_public_pem(swtpm.address)


def test_many_quotes_in_a_row_do_not_exhaust_object_slots(swtpm):
    ak = read_ak_public_pem(swtpm.address)
    with open_transport(swtpm.address) as transport:
        client = TpmClient(transport)
        for i in range(100):
            report = hashlib.sha512(b"%d" % i).digest()
            assert _verify(quote_engine(client, report, MEASUREMENT), ak, nonce=report).report_data == report


def test_unflushed_aks_do_exhaust_swtpm_which_is_why_the_collector_flushes(swtpm):
    """Control for the test above: swtpm has no resource manager and only a few object slots."""
    with open_transport(swtpm.address) as transport:
        client = TpmClient(transport)
        handles = []
        with pytest.raises(TpmCommandError) as full:
            for _ in range(20):
                handles.append(client.create_ak()[0])
        assert rc_base(full.value.rc) == 0x902  # TPM_RC_OBJECT_MEMORY
        for handle in handles:
            client.flush(handle)
        client.flush(client.create_ak()[0])  # slots are free again


def test_startup_is_sent_when_the_tpm_was_never_started(start_swtpm):
    tpm = start_swtpm(startup=False)
    with open_transport(tpm.address) as transport:  # a raw command first: the TPM really is not started
        raw = transport.transact(build_command(CC_QUOTE, (0x80000000,), b""))
        assert HEADER.unpack(raw[: HEADER.size])[2] == 0x100  # TPM_RC_INITIALIZE
    evidence = collect_tpm(REPORT_DATA, MEASUREMENT, tpm=tpm.address)
    assert _verify(evidence, read_ak_public_pem(tpm.address)).report_data == REPORT_DATA


class InterferingTransport(TcpTransport):
    """Another process's writes, modelled on the same channel: after each of the first `times`
    quotes, PCR 23 is extended once more (as a second engine or a hostile tool would)."""

    def __init__(self, host: str, port: int, times: int) -> None:
        super().__init__(host, port)
        self.times = times

    def transact(self, command: bytes) -> bytes:
        answer = super().transact(command)
        if HEADER.unpack(command[: HEADER.size])[2] == CC_QUOTE and self.times > 0:
            self.times -= 1
            extend = U32.pack(1) + U16.pack(ALG_SHA256) + bytes(32)
            done = super().transact(build_command(CC_PCR_EXTEND, (ENGINE_PCR,), extend, [b""]))
            assert HEADER.unpack(done[: HEADER.size])[2] == 0, "the interfering extend must succeed"
        return answer


def test_pcr23_changed_by_another_writer_is_detected_and_the_quote_retried(swtpm):
    with InterferingTransport("127.0.0.1", swtpm.port, times=1) as transport:
        evidence = quote_engine(TpmClient(transport), REPORT_DATA, MEASUREMENT)
    facts = _verify(evidence, read_ak_public_pem(swtpm.address))
    assert facts.measurements["pcr23"] == engine_pcr_value(MEASUREMENT).hex()


def test_a_writer_that_never_stops_makes_a_clear_error_not_wrong_evidence(swtpm):
    with InterferingTransport("127.0.0.1", swtpm.port, times=100) as transport, \
            pytest.raises(CollectionError, match="kept changing"):
        quote_engine(TpmClient(transport), REPORT_DATA, MEASUREMENT)


def test_qualifying_data_larger_than_the_tpm_takes_is_a_clear_error(swtpm):
    """swtpm (SHA-512) takes 64 bytes; more is TPM_RC_SIZE from the TPM itself."""
    with open_transport(swtpm.address) as transport:
        client = TpmClient(transport)
        with client.attestation_key() as (handle, _public), \
                pytest.raises(CollectionError, match="cannot carry 80 bytes"):
            client.quote(handle, bytes(80), QUOTE_PCRS)


def test_nothing_listening_is_a_clear_error(swtpm):
    swtpm.stop()
    with pytest.raises(CollectionError, match="cannot connect to the TPM"):
        collect_tpm(REPORT_DATA, MEASUREMENT, tpm=swtpm.address)
