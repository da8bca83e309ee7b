"""Per-kind reference values in a service's `attestation` section: schema, names, normalization, checks.

A session pins hardware evidence with one section per kind (docs/policy.md):

    sgx:  mrenclave, mrsigner (lists), isvprodid (exact), isvsvn_min
    tdx:  mrtd, rtmr0..rtmr3, mrconfigid, mrowner, mrownerconfig (lists)
    snp:  measurement, host_data, id_key_digest, author_key_digest (lists), guest_svn_min, vmpl (list),
          minimum_tcb {bootloader, tee, snp, microcode, fmc}, policy {smt, migrate_ma, ...: bool}
    tpm:  pcrs {N: [sha256 values]} (PCR 23 is usually derived from the engine measurement)

`VOCABULARY` lists the measurement names each verifier reports, so `measurements` entries can be
matched to the kinds they apply to. `check_attestation` is the validation a schema cannot express:
each accepted kind must have its primary identity pinned, so no accepted kind accepts any code.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Tuple, Union

Path = Tuple[Union[str, int], ...]
AddIssue = Callable[[Path, str], None]

HEX32 = r"^[0-9a-fA-F]{64}$"
HEX48 = r"^[0-9a-fA-F]{96}$"
ADVISORY = r"^(\*|[A-Za-z0-9][A-Za-z0-9._-]{0,63})$"
PCR_INDEX = r"^([0-9]|1[0-9]|2[0-3])$"
ENGINE_PCR = 23


def _values(pattern: str, what: str) -> Dict[str, Any]:
    return {
        "type": "array",
        "minItems": 1,
        "uniqueItems": True,
        "items": {"type": "string", "pattern": pattern},
        "description": what,
    }


def _int(maximum: int, what: str) -> Dict[str, Any]:
    return {"type": "integer", "minimum": 0, "maximum": maximum, "description": what}


def _section(properties: Dict[str, Any], what: str) -> Dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": properties,
        "description": what,
    }


TDX_REGISTERS = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner", "mrownerconfig")
SNP_TCB_PARTS = ("bootloader", "tee", "snp", "microcode", "fmc")
SNP_TCB_FIELDS = ("reported_tcb", "current_tcb", "committed_tcb")
# guest policy bits a session may constrain (AMD SEV-SNP ABI, POLICY); name -> bit
SNP_POLICY_BITS = {
    "smt": 16,
    "migrate_ma": 18,
    "single_socket": 20,
    "cxl_allow": 21,
    "mem_aes_256_xts": 22,
    "rapl_dis": 23,
    "ciphertext_hiding": 24,
    "page_swap_disable": 25,
}

SECTIONS: Dict[str, Dict[str, Any]] = {
    "sgx": _section(
        {
            "mrenclave": _values(HEX32, "Accepted MRENCLAVE values (the enclave's code and data)."),
            "mrsigner": _values(HEX32, "Accepted MRSIGNER values (hash of the enclave signer's key)."),
            "isvprodid": _int(65535, "The product id the enclave must have (with mrsigner)."),
            "isvsvn_min": _int(65535, "The lowest accepted security version number of the enclave."),
        },
        "Reference values for Intel SGX quotes.",
    ),
    "tdx": _section(
        {name: _values(HEX48, f"Accepted {name.upper()} values.") for name in TDX_REGISTERS},
        "Reference values for Intel TDX quotes (48-byte registers, 96 hex digits).",
    ),
    "snp": _section(
        {
            "measurement": _values(HEX48, "Accepted launch measurements."),
            "host_data": _values(HEX32, "Accepted HOST_DATA values (set by the host at launch)."),
            "id_key_digest": _values(HEX48, "Accepted ID key digests."),
            "author_key_digest": _values(HEX48, "Accepted author key digests."),
            "guest_svn_min": _int(0xFFFFFFFF, "The lowest accepted guest security version number."),
            "vmpl": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": _int(3, "a VMPL"),
                "description": "Accepted VM privilege levels of the requesting guest software.",
            },
            "minimum_tcb": _section(
                {part: _int(255, f"lowest accepted {part} security patch level") for part in SNP_TCB_PARTS},
                "Each of the report's reported, current and committed TCB must be at least this.",
            ),
            "policy": _section(
                {name: {"type": "boolean"} for name in SNP_POLICY_BITS},
                "Guest policy bits that must have this value.",
            ),
        },
        "Reference values for AMD SEV-SNP reports.",
    ),
    "tpm": _section(
        {
            "pcrs": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": PCR_INDEX},
                "additionalProperties": _values(HEX32, "accepted sha256 values"),
                "description": "Accepted sha256 values per PCR index (0-23).",
            }
        },
        "Reference values for TPM 2.0 quotes.",
    ),
}

TOLERANCE_ITEM: Dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["advisories"],
    "properties": {
        "advisories": {
            "type": "array",
            "uniqueItems": True,
            "items": {"type": "string", "pattern": ADVISORY},
            "description": "Security advisories tolerated (e.g. INTEL-SA-00615; `*` for any).",
        }
    },
}

_BANKS = ("sha1", "sha256", "sha384", "sha512")
VOCABULARY: Dict[str, FrozenSet[str]] = {
    "sim": frozenset({"engine"}),
    "sgx": frozenset(
        {"mrenclave", "mrsigner", "isvprodid", "isvsvn", "attributes", "miscselect", "cpusvn", "configid"}
        | {"configsvn", "isvextprodid", "isvfamilyid"}
    ),
    "tdx": frozenset(
        set(TDX_REGISTERS)
        | {"tdattributes", "xfam", "tee_tcb_svn", "mrseam", "mrsignerseam", "seamattributes", "tee_tcb_svn2"}
        | {"mrservicetd"}
    ),
    "snp": frozenset(
        {"measurement", "policy", "guest_svn", "vmpl", "host_data", "family_id", "image_id", "id_key_digest"}
        | {"author_key_digest"}
    ),
    "tpm": frozenset(
        {"engine"}
        | {f"pcr{i}" for i in range(24)}
        | {f"{bank}:pcr{i}" for bank in _BANKS if bank != "sha256" for i in range(24)}
    ),
}
# what pins each kind's identity: a measurements entry naming one of these, or the section's fields
PRIMARY: Dict[str, Tuple[str, ...]] = {
    "sim": ("engine",),
    "sgx": ("mrenclave", "mrsigner"),
    "tdx": ("mrtd",),
    "snp": ("measurement",),
    "tpm": ("engine", "pcr23"),
}


def applies(entry: Mapping[str, str], kind: str) -> bool:
    """Whether a `measurements` entry speaks about evidence of `kind` (all its names are the kind's)."""
    return all(name in VOCABULARY[kind] for name in entry)


def normalize_section(kind: str, section: Mapping[str, Any]) -> Dict[str, Any]:
    """Hex lowercased, PCR indexes as decimal text; everything else as written."""
    out = copy.deepcopy(dict(section))
    if kind == "tpm":
        out["pcrs"] = {str(int(k)): [v.lower() for v in vs] for k, vs in section["pcrs"].items()}
        return out
    for name, value in out.items():
        if isinstance(value, list) and value and isinstance(value[0], str):
            out[name] = [v.lower() for v in value]
    return out


def normalize_tolerate(items: List[Any]) -> List[Any]:
    """Tolerance names first, then at most one `{advisories: [...]}` (merged, uppercase, sorted)."""
    names = [item for item in items if isinstance(item, str)]
    advisories = sorted({a.upper() for item in items if isinstance(item, dict) for a in item["advisories"]})
    merged = [item for item in items if isinstance(item, dict)]
    return names + ([{"advisories": advisories}] if merged else [])


def _primary_pinned(kind: str, att: Mapping[str, Any], entries: List[Mapping[str, str]]) -> bool:
    section = att.get(kind) or {}
    if kind == "tpm" and str(ENGINE_PCR) in section.get("pcrs", {}):
        return True
    if any(name in section for name in PRIMARY[kind]):
        return True
    applicable = [e for e in entries if applies(e, kind)]
    return bool(applicable) and all(any(name in e for name in PRIMARY[kind]) for e in applicable)


_HINT = {
    "sim": "add the engine measurement (`citadel measure`) under `measurements`",
    "sgx": "add `sgx: {mrenclave: [...]}` (or mrsigner with isvprodid)",
    "tdx": "add `tdx: {mrtd: [...]}` (and the RTMRs that measure your image)",
    "snp": "add `snp: {measurement: [...]}`",
    "tpm": "add the engine measurement (`citadel measure --mode hw`) under `measurements`, "
    "or `tpm: {pcrs: {23: [...]}}`",
}


def check_attestation(att: Mapping[str, Any], base: Path, add: AddIssue) -> None:
    """Rules the schema cannot say, for one service's `attestation` (issues via `add`)."""
    tee = list(att["tee"])
    raw = att.get("measurements", [])
    entries: List[Mapping[str, str]] = [{"engine": m} if isinstance(m, str) else m for m in raw]
    for i, entry in enumerate(entries):
        if not any(applies(entry, kind) for kind in tee):
            unknown = sorted(n for n in entry if not any(n in VOCABULARY[k] for k in tee))
            what = f"name(s) {', '.join(unknown)}" if unknown else "this combination of names"
            add(
                base + ("measurements", i),
                f"{what} not reported by {', '.join(tee)} evidence "
                f"(the engine measurement is carried by sim and tpm evidence only)",
            )
        engine = entry.get("engine")
        if "tpm" in tee and engine is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", engine):
            add(base + ("measurements", i), "an engine measurement is 64 hex digits (PCR 23 is derived from it)")
    for kind in ("sgx", "tdx", "snp", "tpm"):
        if kind in att and kind not in tee:
            add(base + (kind,), f"reference values for {kind}, which `tee` does not accept")
    for kind in tee:
        if not _primary_pinned(kind, att, entries):
            add(base + ("tee",), f"nothing pins what {kind} evidence runs: {_HINT[kind]}")
    sgx = att.get("sgx") or {}
    if "mrsigner" in sgx and "mrenclave" not in sgx and "isvprodid" not in sgx:
        add(
            base + ("sgx", "mrsigner"),
            "mrsigner alone accepts every enclave its key signed: add isvprodid (and isvsvn_min)",
        )
