"""Collect TPM 2.0 evidence: put the engine measurement in PCR 23, quote it with the report data.

The procedure (docs/evidence-collection.md, section 4), over /dev/tpmrm0 or swtpm's TCP socket:

1. TPM2_PCR_Reset(23), TPM2_PCR_Extend(23, sha256 = engine measurement), so that
   PCR[23] = SHA-256(32 zero bytes || measurement), a value a policy can pin as `pcr23`;
2. TPM2_CreatePrimary of Citadel's AK in the endorsement hierarchy: ECC P-256, restricted signing,
   ECDSA-SHA256, from a fixed template. A primary key is derived from the hierarchy's seed and the
   template, so the same TPM gives the same AK every time: it is registered once and pinned;
3. TPM2_Quote(AK, qualifyingData = the 64 report-data bytes, sha256 PCRs 0-7 and 23), then
   TPM2_FlushContext(AK) (swtpm has no resource manager: unflushed objects exhaust its slots);
4. TPM2_PCR_Read of the quoted PCRs; the values must hash to the quote's pcrDigest and PCR 23 must
   hold the expected value, else another process changed a PCR meanwhile and steps 1-4 repeat;
5. the Citadel TPM container (citadel.attest.tpm.container) with the AK's PEM.

Engine-safe: standard library and `cryptography` only, Python 3.9.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Sequence, Tuple

from citadel.attest.collect.errors import CollectionError, TpmCommandError, TpmProtocolError
from citadel.attest.collect.tpm_rc import RC_INITIALIZE, RC_SIZE, TRANSIENT_RCS, rc_base
from citadel.attest.collect.tpm_transport import Transport, open_transport
from citadel.attest.collect.tpm_wire import (
    AK_ATTRIBUTES,
    ALG_ECDSA,
    ALG_NULL,
    ALG_SHA256,
    CC_CREATE_PRIMARY,
    CC_FLUSH_CONTEXT,
    CC_PCR_EXTEND,
    CC_PCR_READ,
    CC_PCR_RESET,
    CC_QUOTE,
    CC_STARTUP,
    COMMAND_NAMES,
    ECC_NIST_P256,
    TPM_RH_ENDORSEMENT,
    TPM_SU_CLEAR,
    U16,
    U32,
    EccPublic,
    Response,
    build_command,
    ecc_ak_template,
    parse_create_primary,
    parse_pcr_read,
    parse_quote,
    parse_response,
    pcr_selection,
    tpm2b,
)
from citadel.attest.tpm.container import TpmEvidence, encode_container
from citadel.attest.tpm.layouts import parse_attest
from citadel.crypto import digests_equal
from citadel.errors import VerificationError

ENGINE_PCR = 23  # PC Client "application support" PCR: resettable and extendable at locality 0
BOOT_PCRS: Tuple[int, ...] = tuple(range(8))  # firmware, boot loader and secure-boot state
QUOTE_PCRS: Tuple[int, ...] = BOOT_PCRS + (ENGINE_PCR,)
AK_HIERARCHY = TPM_RH_ENDORSEMENT
#: the template's unique.x: makes Citadel's AK its own primary key, distinct from other software's
AK_UNIQUE = hashlib.sha256(b"citadel/tpm-ak/v1").digest()
MAX_REPORT_DATA = 64
MAX_ATTEMPTS = 3  # of the whole reset-extend-quote-read procedure
MAX_RETRIES = 8  # of one command answered TPM_RC_RETRY / YIELDED / TESTING


def engine_pcr_value(measurement: bytes) -> bytes:
    """PCR 23 (sha256 bank) after reset and one extend: SHA-256(32 zero bytes || measurement)."""
    return hashlib.sha256(bytes(32) + measurement).digest()


class TpmClient:
    """The few TPM 2.0 commands Citadel needs, with empty password authorization."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def call(self, code: int, handles: Sequence[int] = (), params: bytes = b"", *,
             authorized: bool = False, response_handles: int = 0) -> Response:
        """Send one command; start the TPM once if it says it was never started; retry transient codes."""
        command = build_command(code, handles, params, [b""] * len(handles) if authorized else None)
        started = False
        for attempt in range(MAX_RETRIES):
            answer = self.transport.transact(command)
            try:
                return parse_response(answer, command=code, handles=response_handles, sessions=authorized)
            except TpmCommandError as exc:
                if exc.rc == RC_INITIALIZE and code != CC_STARTUP and not started:
                    self.startup()
                    started = True
                elif exc.rc in TRANSIENT_RCS:
                    time.sleep(0.01 * (attempt + 1))
                else:
                    raise
        raise CollectionError(f"the TPM kept answering 'retry' to {COMMAND_NAMES.get(code, hex(code))}",
                              "the TPM is busy or self-testing; try again in a moment")

    def startup(self) -> None:
        """TPM2_Startup(CLEAR); a TPM that is already started answers TPM_RC_INITIALIZE, which is fine."""
        try:
            self.call(CC_STARTUP, (), U16.pack(TPM_SU_CLEAR))
        except TpmCommandError as exc:
            if exc.rc != RC_INITIALIZE:
                raise

    def pcr_reset(self, pcr: int) -> None:
        self.call(CC_PCR_RESET, (pcr,), authorized=True)

    def pcr_extend(self, pcr: int, sha256_digest: bytes) -> None:
        """Extend the sha256 bank only (TPML_DIGEST_VALUES of one TPMT_HA)."""
        if len(sha256_digest) != 32:
            raise ValueError("a sha256 PCR is extended with 32 bytes")
        self.call(CC_PCR_EXTEND, (pcr,), U32.pack(1) + U16.pack(ALG_SHA256) + sha256_digest, authorized=True)

    def pcr_read(self, pcrs: Sequence[int]) -> Dict[int, bytes]:
        """sha256 values of `pcrs`; TPM2_PCR_Read answers at most 8 per call, so it loops."""
        wanted = sorted(set(pcrs))
        values: Dict[int, bytes] = {}
        while wanted:
            answer = parse_pcr_read(self.call(CC_PCR_READ, (), pcr_selection(ALG_SHA256, wanted)).params)
            got = answer.selection.get(ALG_SHA256, [])
            if not got or len(answer.selection) != 1 or any(p not in wanted for p in got):
                raise CollectionError(
                    f"the TPM returned no sha256 values for PCR(s) {', '.join(map(str, wanted))}",
                    "allocate the sha256 PCR bank (tpm2_pcrallocate sha256:all) and reboot")
            for pcr, value in zip(got, answer.values):
                if len(value) != 32:
                    raise TpmProtocolError(f"a sha256 PCR value of {len(value)} bytes")
                values[pcr] = value
            wanted = [p for p in wanted if p not in values]
        return values

    def create_ak(self) -> Tuple[int, EccPublic]:
        """TPM2_CreatePrimary(endorsement, Citadel's AK template) -> (transient handle, public area)."""
        sensitive = tpm2b(tpm2b(b"") + tpm2b(b""))  # TPMS_SENSITIVE_CREATE: empty userAuth and data
        params = sensitive + tpm2b(ecc_ak_template(AK_UNIQUE)) + tpm2b(b"") + U32.pack(0)
        response = self.call(CC_CREATE_PRIMARY, (AK_HIERARCHY,), params, authorized=True, response_handles=1)
        handle = response.handles[0]
        try:
            public, _name = parse_create_primary(response.params)
            if (public.attributes, public.scheme, public.scheme_hash, public.curve) != (
                AK_ATTRIBUTES, ALG_ECDSA, ALG_SHA256, ECC_NIST_P256
            ):
                raise TpmProtocolError("TPM2_CreatePrimary returned a key unlike the template asked for")
        except CollectionError:
            self.flush(handle)
            raise
        return handle, public

    @contextmanager
    def attestation_key(self) -> Iterator[Tuple[int, EccPublic]]:
        """The AK, flushed when the block ends (whatever happens inside)."""
        handle, public = self.create_ak()
        try:
            yield handle, public
        finally:
            self.flush(handle)

    def quote(self, handle: int, qualifying_data: bytes, pcrs: Sequence[int]) -> Tuple[bytes, bytes]:
        """TPM2_Quote with the key's own scheme (inScheme NULL) over sha256 `pcrs`."""
        params = tpm2b(qualifying_data) + U16.pack(ALG_NULL) + pcr_selection(ALG_SHA256, pcrs)
        try:
            response = self.call(CC_QUOTE, (handle,), params, authorized=True)
        except TpmCommandError as exc:
            if rc_base(exc.rc) == RC_SIZE and len(qualifying_data) > 32:
                raise CollectionError(
                    f"this TPM cannot carry {len(qualifying_data)} bytes of qualifying data in a quote "
                    "(TPM2B_DATA holds the digest size of its largest hash; SHA-512 is needed for 64)",
                    "use a TPM with SHA-512 support, or another evidence kind (docs/evidence-collection.md)",
                ) from None
            raise
        return parse_quote(response.params)

    def flush(self, handle: int) -> None:
        self.call(CC_FLUSH_CONTEXT, (), U32.pack(handle))


def _consistent(attest: bytes, report_data: bytes, values: Dict[int, bytes], expected_pcr: bytes) -> bool:
    """The quote binds `report_data`, the read values hash to its pcrDigest, and PCR 23 is ours."""
    try:
        quoted = parse_attest(attest)
    except VerificationError as exc:
        raise TpmProtocolError(f"the quote's TPMS_ATTEST does not parse ({exc.detail})") from None
    if not digests_equal(quoted.extra_data, report_data):
        raise TpmProtocolError("the quote does not carry the qualifying data it was asked for")
    digest = hashlib.sha256(b"".join(values[p] for p in sorted(values))).digest()
    return digests_equal(digest, quoted.pcr_digest) and digests_equal(values[ENGINE_PCR], expected_pcr)


def quote_engine(client: TpmClient, report_data: bytes, measurement: bytes,
                 pcrs: Sequence[int] = QUOTE_PCRS) -> bytes:
    """Steps 1-5 (see above) on an open client: a Citadel TPM container, JSON bytes."""
    if len(measurement) != 32:
        raise ValueError("the engine measurement is a SHA-256 digest of 32 bytes")
    if not 0 < len(report_data) <= MAX_REPORT_DATA:
        raise ValueError(f"report data must be 1..{MAX_REPORT_DATA} bytes")
    selected = tuple(sorted(set(pcrs) | {ENGINE_PCR}))
    expected = engine_pcr_value(measurement)
    for _attempt in range(MAX_ATTEMPTS):
        client.pcr_reset(ENGINE_PCR)
        client.pcr_extend(ENGINE_PCR, measurement)
        with client.attestation_key() as (handle, public):
            attest, signature = client.quote(handle, report_data, selected)
        values = client.pcr_read(selected)
        if _consistent(attest, report_data, values, expected):
            return encode_container(TpmEvidence(attest, signature, {"sha256": values}, public.pem()))
    raise CollectionError(
        f"PCR {ENGINE_PCR} or a quoted PCR kept changing while Citadel quoted it ({MAX_ATTEMPTS} attempts)",
        f"another process resets or extends PCR {ENGINE_PCR}; stop it, or run engines one at a time",
    )


def collect_tpm(report_data: bytes, measurement: bytes, *, tpm: Optional[str] = None, root: str = "/",
                pcrs: Sequence[int] = QUOTE_PCRS) -> bytes:
    """A Citadel TPM container quoting `report_data` and PCR 23 = the engine measurement.

    `tpm` is a channel spec (`tcp:HOST:PORT` or a device path; default ROOT/dev/tpmrm0).
    """
    with open_transport(tpm, root=root) as transport:
        return quote_engine(TpmClient(transport), report_data, measurement, pcrs)


def read_ak_public_pem(tpm: Optional[str] = None, *, root: str = "/") -> bytes:
    """The PEM public key of this TPM's Citadel AK: what an operator registers and the CAS pins."""
    with open_transport(tpm, root=root) as transport, TpmClient(transport).attestation_key() as (_h, public):
        return public.pem()
