"""TPM 2.0 command and response bytes (TCG TPM 2.0 Library, Parts 2 and 3) for the commands Citadel uses.

No I/O here: `build_command` makes the bytes a TPM reads; the `parse_*` functions read the bytes it
answers, which are untrusted (a host can put anything on the channel). Every parser consumes its whole
input and raises `TpmProtocolError` for anything malformed; a non-zero response code is
`TpmCommandError`. Big-endian throughout; a TPM2B is a UINT16 size and that many bytes.

Command   tag UINT16 (0x8001 no sessions, 0x8002 sessions), commandSize UINT32, commandCode UINT32,
          handles (UINT32 each), [authorizationSize UINT32, TPMS_AUTH_COMMAND...], parameters
Response  tag UINT16, responseSize UINT32, responseCode UINT32, handles (UINT32 each),
          [parameterSize UINT32], parameters, [TPMS_AUTH_RESPONSE...]
TPMS_AUTH_COMMAND   sessionHandle UINT32 (TPM_RS_PW 0x40000009), nonceCaller TPM2B, sessionAttributes
                    BYTE, hmac TPM2B (for a password session: the password)
TPMS_AUTH_RESPONSE  nonceTPM TPM2B, sessionAttributes BYTE, hmac TPM2B

Engine-safe: standard library and `cryptography` only, Python 3.9.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from citadel.attest.collect.errors import TpmProtocolError
from citadel.attest.collect.tpm_rc import command_error
from citadel.attest.tpm.layouts import ALG_ECDSA, ALG_RSAPSS, ALG_RSASSA, ALG_SHA256

# -- constants (Part 2) ---------------------------------------------------------------------------
TPM_ST_NO_SESSIONS = 0x8001
TPM_ST_SESSIONS = 0x8002
TPM_SU_CLEAR = 0x0000
TPM_RS_PW = 0x40000009
TPM_RH_OWNER = 0x40000001
TPM_RH_NULL = 0x40000007
TPM_RH_ENDORSEMENT = 0x4000000B

CC_STARTUP = 0x00000144
CC_CREATE_PRIMARY = 0x00000131
CC_PCR_RESET = 0x0000013D
CC_QUOTE = 0x00000158
CC_FLUSH_CONTEXT = 0x00000165
CC_PCR_READ = 0x0000017E
CC_PCR_EXTEND = 0x00000182
COMMAND_NAMES: Dict[int, str] = {
    CC_STARTUP: "TPM2_Startup",
    CC_CREATE_PRIMARY: "TPM2_CreatePrimary",
    CC_PCR_RESET: "TPM2_PCR_Reset",
    CC_QUOTE: "TPM2_Quote",
    CC_FLUSH_CONTEXT: "TPM2_FlushContext",
    CC_PCR_READ: "TPM2_PCR_Read",
    CC_PCR_EXTEND: "TPM2_PCR_Extend",
}

# algorithm ids the verifier also reads come from its layouts (one definition of TPM_ALG_ID values)
ALG_RSA = 0x0001
ALG_NULL = 0x0010
ALG_ECDAA = 0x001A
ALG_SM2 = 0x001B
ALG_ECSCHNORR = 0x001C
ALG_ECC = 0x0023
ECC_NIST_P256 = 0x0003
_ECC_SIG_ALGS = (ALG_ECDSA, ALG_ECDAA, ALG_SM2, ALG_ECSCHNORR)

# TPMA_OBJECT bits
ATTR_FIXED_TPM = 1 << 1
ATTR_FIXED_PARENT = 1 << 4
ATTR_SENSITIVE_DATA_ORIGIN = 1 << 5
ATTR_USER_WITH_AUTH = 1 << 6
ATTR_NO_DA = 1 << 10
ATTR_RESTRICTED = 1 << 16
ATTR_SIGN = 1 << 18
AK_ATTRIBUTES = (
    ATTR_FIXED_TPM
    | ATTR_FIXED_PARENT
    | ATTR_SENSITIVE_DATA_ORIGIN
    | ATTR_USER_WITH_AUTH
    | ATTR_NO_DA
    | ATTR_RESTRICTED
    | ATTR_SIGN
)  # 0x00050472
PCR_SELECT_SIZE = 3  # PCR_SELECT_MIN: 24 PCRs
MAX_RESPONSE = 8192  # real TPMs answer at most 4096 bytes (TPM_PT_MAX_RESPONSE_SIZE)

HEADER = struct.Struct(">HII")  # tag, size, command code / response code
U8, U16, U32 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I")
PCR_SELECTION_HEAD = struct.Struct(">HB")  # TPMS_PCR_SELECTION: hash, sizeofSelect (pcrSelect follows)
#: TPMT_PUBLIC of an ECC key, up to `unique`: type, nameAlg, objectAttributes (authPolicy TPM2B follows)
PUBLIC_HEAD = struct.Struct(">HHI")
#: TPMS_ECC_PARMS for an unrestricted-symmetric signing key: symmetric=NULL, scheme, hash, curve, kdf=NULL
ECC_SIGNING_PARMS = struct.Struct(">HHHHH")


# -- building --------------------------------------------------------------------------------------
def tpm2b(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError("a TPM2B holds at most 65535 bytes")
    return U16.pack(len(data)) + data


def password_session(password: bytes = b"") -> bytes:
    """TPMS_AUTH_COMMAND of the password session TPM_RS_PW (empty nonce, no attributes)."""
    return U32.pack(TPM_RS_PW) + tpm2b(b"") + U8.pack(0) + tpm2b(password)


def build_command(
    code: int, handles: Sequence[int] = (), params: bytes = b"", auths: Optional[Sequence[bytes]] = None
) -> bytes:
    """A whole command; `auths` (one password per authorized handle) makes it a session command."""
    body = b"".join(U32.pack(h) for h in handles)
    tag = TPM_ST_NO_SESSIONS
    if auths is not None:
        area = b"".join(password_session(p) for p in auths)
        body += U32.pack(len(area)) + area
        tag = TPM_ST_SESSIONS
    body += params
    return HEADER.pack(tag, HEADER.size + len(body), code) + body


def pcr_selection(bank: int, pcrs: Iterable[int]) -> bytes:
    """TPML_PCR_SELECTION of one bank (count UINT32 = 1, hash, sizeofSelect = 3, bitmap)."""
    bitmap = bytearray(PCR_SELECT_SIZE)
    for pcr in pcrs:
        if not 0 <= pcr < 8 * PCR_SELECT_SIZE:
            raise ValueError(f"PCR {pcr} is not 0..23")
        bitmap[pcr // 8] |= 1 << (pcr % 8)
    return U32.pack(1) + PCR_SELECTION_HEAD.pack(bank, PCR_SELECT_SIZE) + bytes(bitmap)


def ecc_ak_template(unique_x: bytes) -> bytes:
    """TPMT_PUBLIC of Citadel's AK: ECC P-256, restricted signing, ECDSA-SHA256, empty authPolicy.

    type ECC, nameAlg SHA-256, objectAttributes AK_ATTRIBUTES, authPolicy empty, parameters
    {symmetric NULL, scheme ECDSA, hash SHA-256, curve NIST P-256, kdf NULL}, unique {x, y empty}.
    """
    return (
        PUBLIC_HEAD.pack(ALG_ECC, ALG_SHA256, AK_ATTRIBUTES)
        + tpm2b(b"")
        + ECC_SIGNING_PARMS.pack(ALG_NULL, ALG_ECDSA, ALG_SHA256, ECC_NIST_P256, ALG_NULL)
        + tpm2b(unique_x)
        + tpm2b(b"")
    )


# -- reading ---------------------------------------------------------------------------------------
class Reader:
    """A cursor over untrusted response bytes; a short read is TpmProtocolError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.what = what

    def take(self, count: int, field: str) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise TpmProtocolError(f"the {self.what} ends inside {field}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def unpack(self, layout: struct.Struct, field: str) -> Tuple[int, ...]:
        return tuple(layout.unpack(self.take(layout.size, field)))

    def u8(self, field: str) -> int:
        return self.unpack(U8, field)[0]

    def u16(self, field: str) -> int:
        return self.unpack(U16, field)[0]

    def u32(self, field: str) -> int:
        return self.unpack(U32, field)[0]

    def tpm2b(self, field: str) -> bytes:
        return self.take(self.u16(f"{field}.size"), field)

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos, "the rest")

    def end(self) -> None:
        if self.pos != len(self.data):
            raise TpmProtocolError(f"the {self.what} has {len(self.data) - self.pos} unexpected trailing bytes")


@dataclass(frozen=True)
class Response:
    handles: Tuple[int, ...]
    params: bytes


def parse_response(data: bytes, *, command: int, handles: int = 0, sessions: bool = False) -> Response:
    """Split a response; raise TpmCommandError for a non-zero code, TpmProtocolError for bad bytes."""
    if len(data) < HEADER.size:
        raise TpmProtocolError(f"a response of {len(data)} bytes is shorter than its 10-byte header")
    tag, size, rc = HEADER.unpack_from(data)
    if size != len(data):
        raise TpmProtocolError(f"the header says {size} bytes, {len(data)} arrived")
    if tag not in (TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS):
        raise TpmProtocolError(f"tag {tag:#06x} is not a TPM 2.0 response tag (a TPM 1.2 answers 0x00c4)")
    if rc != 0:
        raise command_error(COMMAND_NAMES.get(command, f"command {command:#x}"), rc)
    if (tag == TPM_ST_SESSIONS) != sessions:
        raise TpmProtocolError(f"tag {tag:#06x} does not match a command {'with' if sessions else 'without'} sessions")
    reader = Reader(data[HEADER.size :], "response")
    found = tuple(reader.u32(f"handle {i}") for i in range(handles))
    if not sessions:
        return Response(found, reader.rest())
    params = reader.take(reader.u32("parameterSize"), "parameters")
    reader.tpm2b("authResponse.nonceTPM")  # one password session was sent, so one answer comes back
    reader.u8("authResponse.sessionAttributes")
    reader.tpm2b("authResponse.hmac")
    reader.end()
    return Response(found, params)


@dataclass(frozen=True)
class EccPublic:
    """The parts of a TPMT_PUBLIC of an ECC key that Citadel checks."""

    raw: bytes  # the TPMT_PUBLIC bytes as the TPM returned them
    name_alg: int
    attributes: int
    scheme: int
    scheme_hash: int
    curve: int
    x: bytes
    y: bytes

    def public_key(self) -> ec.EllipticCurvePublicKey:
        if self.curve != ECC_NIST_P256:
            raise TpmProtocolError(f"the key's curve {self.curve:#06x} is not NIST P-256")
        try:
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(self.x, "big"), int.from_bytes(self.y, "big"), ec.SECP256R1()
            )
            return numbers.public_key()
        except ValueError:
            raise TpmProtocolError("the key's point is not on NIST P-256") from None

    def pem(self) -> bytes:
        """The public key as PEM SubjectPublicKeyInfo (what TpmVerifier pins)."""
        return self.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _scheme(reader: Reader, field: str) -> Tuple[int, int]:
    """A TPMT_*_SCHEME: scheme, then its hash unless NULL (ECDAA adds a count, which is refused)."""
    scheme = reader.u16(f"{field}.scheme")
    if scheme == ALG_NULL:
        return scheme, ALG_NULL
    if scheme == ALG_ECDAA:
        raise TpmProtocolError("ECDAA keys are not supported")
    return scheme, reader.u16(f"{field}.hashAlg")


def parse_public(data: bytes) -> EccPublic:
    """A TPMT_PUBLIC of an ECC key (TPMS_ECC_PARMS, TPMS_ECC_POINT); other key types are refused."""
    reader = Reader(data, "TPMT_PUBLIC")
    key_type, name_alg, attributes = reader.unpack(PUBLIC_HEAD, "type/nameAlg/objectAttributes")
    if key_type != ALG_ECC:
        raise TpmProtocolError(f"key type {key_type:#06x} is not ECC")
    reader.tpm2b("authPolicy")
    symmetric = reader.u16("symmetric.algorithm")
    if symmetric != ALG_NULL:
        reader.u16("symmetric.keyBits")
        reader.u16("symmetric.mode")
    scheme, scheme_hash = _scheme(reader, "scheme")
    curve = reader.u16("curveID")
    _scheme(reader, "kdf")
    x = reader.tpm2b("unique.x")
    y = reader.tpm2b("unique.y")
    reader.end()
    return EccPublic(bytes(data), name_alg, attributes, scheme, scheme_hash, curve, x, y)


def parse_create_primary(params: bytes) -> Tuple[EccPublic, bytes]:
    """TPM2_CreatePrimary's parameters -> (outPublic, name)."""
    reader = Reader(params, "TPM2_CreatePrimary response")
    public = parse_public(reader.tpm2b("outPublic"))
    reader.tpm2b("creationData")
    reader.tpm2b("creationHash")
    reader.u16("creationTicket.tag")
    reader.u32("creationTicket.hierarchy")
    reader.tpm2b("creationTicket.digest")
    name = reader.tpm2b("name")
    reader.end()
    return public, name


def _signature_end(reader: Reader) -> None:
    """Advance over one TPMT_SIGNATURE."""
    sig_alg = reader.u16("signature.sigAlg")
    if sig_alg == ALG_NULL:
        return
    reader.u16("signature.hash")
    if sig_alg in _ECC_SIG_ALGS:
        reader.tpm2b("signature.signatureR")
        reader.tpm2b("signature.signatureS")
    elif sig_alg in (ALG_RSASSA, ALG_RSAPSS):
        reader.tpm2b("signature.sig")
    else:
        raise TpmProtocolError(f"signature algorithm {sig_alg:#06x} is not one Citadel reads")


def parse_quote(params: bytes) -> Tuple[bytes, bytes]:
    """TPM2_Quote's parameters -> (TPMS_ATTEST bytes, TPMT_SIGNATURE bytes), exactly as the TPM sent them."""
    reader = Reader(params, "TPM2_Quote response")
    attest = reader.tpm2b("quoted")
    start = reader.pos
    _signature_end(reader)
    signature = reader.data[start : reader.pos]
    reader.end()
    return attest, signature


def read_pcr_selection(reader: Reader) -> Dict[int, List[int]]:
    """TPML_PCR_SELECTION -> hash algorithm -> selected PCRs, ascending."""
    count = reader.u32("TPML_PCR_SELECTION.count")
    if count > 16:
        raise TpmProtocolError(f"a PCR selection of {count} banks is more than 16")
    banks: Dict[int, List[int]] = {}
    for index in range(count):
        bank, size = reader.unpack(PCR_SELECTION_HEAD, f"pcrSelections[{index}]")
        if size > 8:
            raise TpmProtocolError(f"sizeofSelect {size} is more than 8")
        bitmap = reader.take(size, f"pcrSelections[{index}].pcrSelect")
        banks.setdefault(bank, []).extend(i for i in range(size * 8) if bitmap[i // 8] >> (i % 8) & 1)
    return banks


@dataclass(frozen=True)
class PcrRead:
    update_counter: int
    selection: Dict[int, List[int]]  # hash algorithm -> PCRs whose values follow, ascending
    values: Tuple[bytes, ...]


def parse_pcr_read(params: bytes) -> PcrRead:
    """TPM2_PCR_Read's parameters: pcrUpdateCounter, pcrSelectionOut, pcrValues (TPML_DIGEST, <= 8)."""
    reader = Reader(params, "TPM2_PCR_Read response")
    counter = reader.u32("pcrUpdateCounter")
    selection = read_pcr_selection(reader)
    count = reader.u32("pcrValues.count")
    if count > 8:
        raise TpmProtocolError(f"{count} PCR values in one answer is more than 8")
    values = tuple(reader.tpm2b(f"pcrValues[{i}]") for i in range(count))
    reader.end()
    if count != sum(len(pcrs) for pcrs in selection.values()):
        raise TpmProtocolError(f"{count} PCR values answer a selection of a different size")
    return PcrRead(counter, selection, values)
