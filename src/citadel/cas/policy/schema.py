"""The JSON Schema of a session policy (draft 2020-12), for validation and for editors."""

from __future__ import annotations

from typing import Any, Dict

from citadel.cas.policy.kinds import SECTIONS, TOLERANCE_ITEM
from citadel.cas.policy.volumes import SERVICE_VOLUME_SCHEMA, VOLUME_SCHEMA

KINDS = ["sim", "sgx", "tdx", "snp", "tpm"]
TOLERANCES = ["debug", "outdated-tcb", "sw-hardening-needed", "configuration-needed", "unevaluated-tcb", "sim"]
SECRET_KINDS = ["ascii", "binary", "private-key", "x509-ca", "x509"]
KEY_ALGORITHMS = ["ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096"]

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,255}$"
HEX64 = r"^[0-9a-fA-F]{64}$"
ABS_PATH = r"^/[^\x00]{0,4095}$"
EXECUTABLE_PATH = r"^/[^\x00]{0,4094}$"  # the engine pins it, NUL-terminated, in one 4 KiB page
MAX_ALLOWED_EXECUTABLES = 16  # the engine's exec pages (citadel.engine.hardening.MAX_ALLOWED_PROGRAMS)
IDENTITY_OR_WORD = r"^(CREATOR|ANY|ed25519:[0-9a-f]{64})$"
MEASUREMENT = r"^[0-9a-fA-F]{1,256}$"
MEASUREMENT_NAME = r"^[a-z0-9_-]{1,64}$"

_str_list: Dict[str, Any] = {"type": "array", "items": {"type": "string"}}

_access_list = {
    "type": "array",
    "items": {"type": "string", "pattern": IDENTITY_OR_WORD},
    "description": "CREATOR, ANY, or client identities `ed25519:<64 hex>` (`citadel session whoami`).",
}

_attestation = {
    "type": "object",
    "additionalProperties": False,
    "required": ["tee"],
    "anyOf": [{"required": ["measurements"]}] + [{"required": [kind]} for kind in SECTIONS],
    "description": "Which engines may receive this service's configuration: `measurements` and/or "
    "reference values per evidence kind (sgx, tdx, snp, tpm).",
    "properties": {
        "tee": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {"enum": KINDS},
            "description": "Accepted evidence kinds.",
        },
        "measurements": {
            "type": "array",
            "minItems": 1,
            "description": "Accepted measurements: a hex string is the engine measurement "
            "(`citadel measure`); a mapping names values that must all match.",
            "items": {
                "oneOf": [
                    {"type": "string", "pattern": MEASUREMENT},
                    {
                        "type": "object",
                        "minProperties": 1,
                        "propertyNames": {"pattern": MEASUREMENT_NAME},
                        "additionalProperties": {"type": "string", "pattern": MEASUREMENT},
                    },
                ]
            },
        },
        "tolerate": {
            "type": "array",
            "uniqueItems": True,
            "items": {"oneOf": [{"enum": TOLERANCES}, TOLERANCE_ITEM]},
            "description": "Weaknesses accepted: sim mode, a debuggable TEE, TCB states, "
            "and `advisories: [...]` (security advisories the platform may be affected by).",
        },
        **SECTIONS,
        "platforms": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "minLength": 1},
            "description": "Only these platforms: registered platform names (sim, tpm), or platform ids "
            "(sim key fingerprint, ak:<fingerprint> of a TPM, FMSPC, SNP chip id).",
        },
    },
}

_inject_file = {
    "type": "object",
    "additionalProperties": False,
    "required": ["path"],
    "oneOf": [{"required": ["content"]}, {"required": ["secret"]}],
    "properties": {
        "path": {"type": "string", "pattern": ABS_PATH},
        "content": {
            "type": "string",
            "description": "Text; $$citadel:NAME[:ENCODING]$$ references are rendered.",
        },
        "secret": {"type": "string", "pattern": NAME, "description": "The raw value of one secret."},
    },
}

_service = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "command", "image", "attestation"],
    "properties": {
        "name": {"type": "string", "pattern": NAME},
        "command": {
            "description": "The Python command line: `app.py ARGS` or `-m module ARGS` (a leading "
            "`python` is allowed); a string is split like a shell would, a list is taken as is.",
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
            ],
        },
        "environment": {
            "type": "object",
            "propertyNames": {"pattern": ENV_NAME},
            "additionalProperties": {"type": "string"},
        },
        "host_environment": {
            "type": "array",
            "uniqueItems": True,
            "items": {"type": "string", "pattern": ENV_NAME},
            "description": "Host variables passed through by name (others are ignored).",
        },
        "host_arguments": {"type": "boolean", "description": "Append the host's arguments to the command."},
        "pwd": {"type": ["string", "null"], "pattern": ABS_PATH},
        "allowed_executables": {
            "type": "array",
            "uniqueItems": True,
            "maxItems": MAX_ALLOWED_EXECUTABLES,
            "items": {"type": "string", "pattern": EXECUTABLE_PATH},
            "description": "Absolute paths of host programs the engine may start (subprocess); they run "
            "OUTSIDE the engine's protection: no sealed files, no volumes, unprotected output.",
        },
        "image": {
            "type": "object",
            "additionalProperties": False,
            "required": ["key"],
            "properties": {
                "key": {
                    "type": "string",
                    "minLength": 1,
                    "description": "64 hex digits, or a reference to a 32-byte binary secret.",
                },
                "tag": {"type": ["string", "null"], "pattern": HEX64},
            },
        },
        "attestation": _attestation,
        "inject_files": {"type": "array", "items": _inject_file},
        "volumes": {"type": "array", "items": SERVICE_VOLUME_SCHEMA},
    },
}

_secret = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "kind"],
    "properties": {
        "name": {"type": "string", "pattern": NAME},
        "kind": {"enum": SECRET_KINDS},
        "size": {"type": "integer", "minimum": 1, "maximum": 65536},
        "value": {"type": "string", "description": "Import this value instead of generating one."},
        "encoding": {"enum": ["hex", "base64"], "description": "How an imported binary value is written."},
        "algorithm": {"enum": KEY_ALGORITHMS},
        "common_name": {"type": "string", "minLength": 1, "maxLength": 64},
        "issuer": {"type": "string", "pattern": NAME},
        "private_key": {"type": "string", "pattern": NAME},
        "dns": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "ip": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "valid_days": {"type": "integer", "minimum": 1, "maximum": 36500},
        "usage": {"type": "array", "uniqueItems": True, "items": {"enum": ["server", "client"]}},
    },
}

SCHEMA: Dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://citadel.invalid/schemas/session-v1.json",
    "title": "Citadel session policy",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "version"],
    "properties": {
        "name": {"type": "string", "pattern": NAME},
        "version": {"enum": ["1", 1], "description": "The policy language version."},
        "predecessor": {
            "type": ["string", "null"],
            "pattern": HEX64,
            "description": "Hash of the session this one replaces (required on update).",
        },
        "access_policy": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"read": _access_list, "update": _access_list, "delete": _access_list},
        },
        "services": {"type": "array", "items": _service},
        "secrets": {"type": "array", "items": _secret},
        "volumes": {"type": "array", "items": VOLUME_SCHEMA},
    },
}
