"""Typed views of Intel's signed collateral documents: TCB info (v2/v3) and enclave (QE) identity (v2).

Intel PCS API v4 ("Get TCB Info", "Get Quoting Enclave Identity") defines the JSON. Parsing is strict:
a field of the wrong type or size raises `VerificationError` (`tcb_info.format`, `qe_identity.format`)
rather than being guessed at. Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from citadel.errors import VerificationError

TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)
QE_STATUSES = ("UpToDate", "OutOfDate", "Revoked")


@dataclass(frozen=True)
class TcbLevel:
    sgx_components: Tuple[int, ...]  # 16 SVNs
    pcesvn: int
    tdx_components: Tuple[int, ...]  # 16 SVNs for TDX, empty for SGX
    tcb_date: str
    status: str
    advisory_ids: Tuple[str, ...]


@dataclass(frozen=True)
class EnclaveLevel:
    isvsvn: int
    tcb_date: str
    status: str
    advisory_ids: Tuple[str, ...]


@dataclass(frozen=True)
class TdxModule:
    id: str  # "" for the tcbInfo.tdxModule default entry
    mrsigner: bytes  # 48 bytes
    attributes: bytes  # 8 bytes
    attributes_mask: bytes  # 8 bytes
    levels: Tuple[EnclaveLevel, ...]


@dataclass(frozen=True)
class TcbInfo:
    id: str  # "SGX" or "TDX"
    version: int
    issue_date: _dt.datetime
    next_update: _dt.datetime
    fmspc: bytes
    pceid: bytes
    tcb_type: int
    tcb_evaluation_data_number: int
    levels: Tuple[TcbLevel, ...]
    tdx_module: Optional[TdxModule]
    tdx_module_identities: Tuple[TdxModule, ...]


@dataclass(frozen=True)
class EnclaveIdentity:
    id: str  # "QE", "TD_QE" (or "QVE")
    version: int
    issue_date: _dt.datetime
    next_update: _dt.datetime
    tcb_evaluation_data_number: int
    miscselect: bytes
    miscselect_mask: bytes
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isvprodid: int
    levels: Tuple[EnclaveLevel, ...]


class _Fields:
    """Typed access to one JSON object; any defect raises `VerificationError(check)`."""

    def __init__(self, obj: Any, check: str, where: str) -> None:
        if not isinstance(obj, dict):
            raise VerificationError(check, f"{where} is not a JSON object")
        self.obj: Dict[str, Any] = obj
        self.check = check
        self.where = where

    def _get(self, key: str) -> Any:
        if key not in self.obj:
            raise VerificationError(self.check, f"{self.where} has no {key!r}")
        return self.obj[key]

    def has(self, key: str) -> bool:
        return key in self.obj

    def integer(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFFFFFF:
            raise VerificationError(self.check, f"{self.where}.{key} is not a non-negative integer")
        return value

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise VerificationError(self.check, f"{self.where}.{key} is not a string")
        return value

    def hexbytes(self, key: str, size: int) -> bytes:
        text = self.text(key)
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise VerificationError(self.check, f"{self.where}.{key} is not hex") from None
        if len(value) != size:
            raise VerificationError(self.check, f"{self.where}.{key} is {len(value)} bytes, expected {size}")
        return value

    def timestamp(self, key: str) -> _dt.datetime:
        text = self.text(key)
        try:
            value = _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise VerificationError(self.check, f"{self.where}.{key} is not an ISO 8601 time") from None
        if value.tzinfo is None:
            raise VerificationError(self.check, f"{self.where}.{key} has no time zone")
        return value.astimezone(_dt.timezone.utc)

    def array(self, key: str) -> List[Any]:
        value = self._get(key)
        if not isinstance(value, list):
            raise VerificationError(self.check, f"{self.where}.{key} is not a list")
        return value

    def sub(self, key: str) -> _Fields:
        return _Fields(self._get(key), self.check, f"{self.where}.{key}")

    def status(self, allowed: Tuple[str, ...]) -> str:
        value = self.text("tcbStatus")
        if value not in allowed:
            raise VerificationError(self.check, f"{self.where}.tcbStatus {value!r} is not a known status")
        return value

    def advisories(self) -> Tuple[str, ...]:
        if not self.has("advisoryIDs"):
            return ()
        ids = self.array("advisoryIDs")
        if not all(isinstance(i, str) for i in ids):
            raise VerificationError(self.check, f"{self.where}.advisoryIDs holds a non-string")
        return tuple(ids)


def _svn_list(fields: _Fields, key: str) -> Tuple[int, ...]:
    items = fields.array(key)
    if len(items) != 16:
        raise VerificationError(fields.check, f"{fields.where}.{key} has {len(items)} entries, expected 16")
    return tuple(
        _Fields(item, fields.check, f"{fields.where}.{key}[{i}]").integer("svn")
        for i, item in enumerate(items)
    )


def _tcb_level(fields: _Fields, version: int, tdx: bool) -> TcbLevel:
    tcb = fields.sub("tcb")
    if version >= 3:
        sgx = _svn_list(tcb, "sgxtcbcomponents")
    else:
        sgx = tuple(tcb.integer(f"sgxtcbcomp{i:02d}svn") for i in range(1, 17))
    return TcbLevel(
        sgx_components=sgx,
        pcesvn=tcb.integer("pcesvn"),
        tdx_components=_svn_list(tcb, "tdxtcbcomponents") if tdx else (),
        tcb_date=fields.text("tcbDate"),
        status=fields.status(TCB_STATUSES),
        advisory_ids=fields.advisories(),
    )


def _enclave_levels(fields: _Fields, key: str) -> Tuple[EnclaveLevel, ...]:
    levels = []
    for i, item in enumerate(fields.array(key)):
        level = _Fields(item, fields.check, f"{fields.where}.{key}[{i}]")
        levels.append(
            EnclaveLevel(
                isvsvn=level.sub("tcb").integer("isvsvn"),
                tcb_date=level.text("tcbDate"),
                status=level.status(TCB_STATUSES),
                advisory_ids=level.advisories(),
            )
        )
    return tuple(levels)


def _tdx_module(fields: _Fields, with_levels: bool) -> TdxModule:
    return TdxModule(
        id=fields.text("id") if with_levels else "",
        mrsigner=fields.hexbytes("mrsigner", 48),
        attributes=fields.hexbytes("attributes", 8),
        attributes_mask=fields.hexbytes("attributesMask", 8),
        levels=_enclave_levels(fields, "tcbLevels") if with_levels else (),
    )


def parse_tcb_info(obj: Mapping[str, Any]) -> TcbInfo:
    """A TCB info JSON object (the `tcbInfo` member of a PCS response)."""
    f = _Fields(obj, "tcb_info.format", "tcbInfo")
    version = f.integer("version")
    tcb_id = f.text("id") if version >= 3 else "SGX"
    if version not in (2, 3) or tcb_id not in ("SGX", "TDX"):
        raise VerificationError("tcb_info.format", f"unsupported TCB info {tcb_id!r} version {version}")
    tdx = tcb_id == "TDX"
    levels = tuple(
        _tcb_level(_Fields(item, f.check, f"tcbInfo.tcbLevels[{i}]"), version, tdx)
        for i, item in enumerate(f.array("tcbLevels"))
    )
    return TcbInfo(
        id=tcb_id,
        version=version,
        issue_date=f.timestamp("issueDate"),
        next_update=f.timestamp("nextUpdate"),
        fmspc=f.hexbytes("fmspc", 6),
        pceid=f.hexbytes("pceId", 2),
        tcb_type=f.integer("tcbType"),
        tcb_evaluation_data_number=f.integer("tcbEvaluationDataNumber"),
        levels=levels,
        tdx_module=_tdx_module(f.sub("tdxModule"), False) if tdx else None,
        tdx_module_identities=tuple(
            _tdx_module(_Fields(item, f.check, f"tcbInfo.tdxModuleIdentities[{i}]"), True)
            for i, item in enumerate(f.array("tdxModuleIdentities"))
        )
        if tdx and f.has("tdxModuleIdentities")
        else (),
    )


def parse_enclave_identity(obj: Mapping[str, Any]) -> EnclaveIdentity:
    """An enclave identity JSON object (the `enclaveIdentity` member of a PCS response)."""
    f = _Fields(obj, "qe_identity.format", "enclaveIdentity")
    version = f.integer("version")
    if version != 2:
        raise VerificationError("qe_identity.format", f"unsupported enclave identity version {version}")
    levels = _enclave_levels(f, "tcbLevels")
    for level in levels:
        if level.status not in QE_STATUSES:
            raise VerificationError("qe_identity.format", f"QE TCB status {level.status!r} is not known")
    return EnclaveIdentity(
        id=f.text("id"),
        version=version,
        issue_date=f.timestamp("issueDate"),
        next_update=f.timestamp("nextUpdate"),
        tcb_evaluation_data_number=f.integer("tcbEvaluationDataNumber"),
        miscselect=f.hexbytes("miscselect", 4),
        miscselect_mask=f.hexbytes("miscselectMask", 4),
        attributes=f.hexbytes("attributes", 16),
        attributes_mask=f.hexbytes("attributesMask", 16),
        mrsigner=f.hexbytes("mrsigner", 32),
        isvprodid=f.integer("isvprodid"),
        levels=levels,
    )
