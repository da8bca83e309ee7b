"""Volumes in a session policy: their schema, the checks a schema cannot say, and their defaults.

A session declares each volume once at the top level and each service mounts the ones it uses:

    volumes:
      - name: results                       # [A-Za-z0-9][A-Za-z0-9._-]{0,127}
        path: /data/out                     # optional: the default mount path inside the program
        update_policy: rollback-protected   # default; or `ephemeral` (no tag recorded: no rollback check)
        key: $$citadel:results_key$$        # optional: a 32-byte binary secret; else the CAS makes one
    services:
      - name: app
        volumes:
          - {name: results}                 # mounted at the volume's `path`...
          - {name: inputs, path: /data/in}  # ...or at the service's own `path`

Kept apart from parse.py and schema.py so the volume rules live in one place; those modules only
call `check` and `normalize_services` and embed the two schema fragments. This module must not
import schema.py or parse.py (they import it).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from citadel.cas import secrets as secretlib
from citadel.cas.policy import refs

ROLLBACK_PROTECTED = "rollback-protected"
EPHEMERAL = "ephemeral"
UPDATE_POLICIES = [ROLLBACK_PROTECTED, EPHEMERAL]
KEY_SIZE = 32

# the same patterns as schema.NAME and schema.ABS_PATH (not imported: schema.py imports this module)
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_ABS_PATH = r"^/[^\x00]{0,4095}$"

Path = Tuple[Union[str, int], ...]
AddIssue = Callable[[Path, str], None]

VOLUME_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "description": "An encrypted volume (docs/volumes.md): the program's input or output directory.",
    "properties": {
        "name": {"type": "string", "pattern": _NAME},
        "path": {
            "type": "string",
            "pattern": _ABS_PATH,
            "description": "Default mount path inside the program (a service's own `path` wins).",
        },
        "update_policy": {
            "enum": UPDATE_POLICIES,
            "description": "`rollback-protected` (default): the CAS records every commit's tag and releases "
            "the key only for the latest state; `ephemeral`: no tag is recorded (no rollback protection).",
        },
        "key": {
            "type": "string",
            "minLength": 1,
            "description": "Import the volume key: $$citadel:NAME$$ naming a 32-byte binary secret. "
            "Without it the CAS makes a random key at first use.",
        },
    },
}

SERVICE_VOLUME_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": _NAME, "description": "A volume declared under `volumes`."},
        "path": {
            "type": "string",
            "pattern": _ABS_PATH,
            "description": "Mount path inside the program (default: the volume's `path`).",
        },
    },
}


@dataclass(frozen=True)
class Mount:
    """One volume as one service sees it (from a validated, normalized policy)."""

    name: str
    mount: str
    update_policy: str
    key_secret: Optional[str]  # the binary secret holding an imported key, or None (the CAS's key)

    @property
    def rollback_protected(self) -> bool:
        return self.update_policy == ROLLBACK_PROTECTED


def update_policy(volume: Mapping[str, Any]) -> str:
    return str(volume.get("update_policy") or ROLLBACK_PROTECTED)


def key_secret(volume: Mapping[str, Any]) -> Optional[str]:
    match = refs.REF.fullmatch(str(volume["key"])) if volume.get("key") else None
    return match.group(1) if match else None


def mounts(volumes: Mapping[str, Mapping[str, Any]], service_volumes: Sequence[Mapping[str, Any]]) -> List[Mount]:
    """The volumes a service mounts: `volumes` is Policy.volumes, `service_volumes` Service.volumes."""
    out = []
    for entry in service_volumes:
        volume = volumes[entry["name"]]
        path = entry.get("path") or volume.get("path")
        assert path, "validation guarantees a mount path"
        out.append(Mount(str(entry["name"]), str(path), update_policy(volume), key_secret(volume)))
    return out


def imported_key(mount: Mount, stored: Mapping[str, Mapping[str, Any]]) -> Optional[bytes]:
    """The imported key of a volume (the secret's raw bytes), or None if the CAS makes the key."""
    if mount.key_secret is None:
        return None
    return bytes.fromhex(str(stored[mount.key_secret]["value"]))


# --- validation (after the JSON Schema passed) ----------------------------------------------------


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _check_key(value: str, path: Path, secrets: Mapping[str, Mapping[str, Any]], add: AddIssue) -> None:
    match = refs.REF.fullmatch(value)
    spec = secrets.get(match.group(1)) if match else None
    if match is None:
        add(path, "a volume key is imported as $$citadel:NAME$$ naming a 32-byte binary secret")
        return
    if spec is None:
        add(path, f"no secret named {match.group(1)!r}")
        return
    if spec["kind"] != "binary" or match.group(2) not in (None, "raw"):
        add(path, f"a volume key must reference a binary secret without encoding, not {spec['kind']}")
        return
    if spec.get("value") is None:
        size = spec.get("size", secretlib.DEFAULT_SIZE)
    else:
        try:
            size = len(secretlib.decode_binary(spec))
        except (ValueError, TypeError):
            return  # reported by the secret's own check
    if size != KEY_SIZE:
        add(path, f"the volume key secret {spec['name']!r} must be {KEY_SIZE} bytes, not {size}")


def check(doc: Mapping[str, Any], secrets: Mapping[str, Mapping[str, Any]], add: AddIssue) -> None:
    """Volume rules the schema cannot express; `add(path, message)` reports each problem.

    Imported keys name a 32-byte binary secret; every mount has a path (the service's or the
    volume's), which is not `/`; a service mounts a volume once and no two of its mounts overlap.
    (Unique volume names and mounts of declared volumes are checked by parse.py.)
    """
    declared = {v["name"]: v for v in doc.get("volumes", [])}
    for i, volume in enumerate(doc.get("volumes", [])):
        if volume.get("key") is not None:
            _check_key(str(volume["key"]), ("volumes", i, "key"), secrets, add)
        if volume.get("path") is not None and posixpath.normpath(volume["path"]) == "/":
            add(("volumes", i, "path"), "a volume cannot be mounted at '/'; use a directory such as /data")
    for i, svc in enumerate(doc.get("services", [])):
        seen: Dict[str, str] = {}
        paths: List[Tuple[str, str]] = []
        for j, entry in enumerate(svc.get("volumes", [])):
            base: Path = ("services", i, "volumes", j)
            name = entry["name"]
            if name in seen:
                add(base + ("name",), f"volume {name!r} is mounted twice by this service")
                continue
            seen[name] = name
            volume = declared.get(name)
            if volume is None:
                continue  # parse.py reports the unknown volume
            mount = entry.get("path") or volume.get("path")
            if not mount:
                add(base, f"volume {name!r} has no mount path: give `path` here or in its `volumes` entry")
                continue
            mount = posixpath.normpath(mount)
            if mount == "/":
                if entry.get("path"):  # (a volume's own default path of '/' is reported above)
                    add(base + ("path",), "a volume cannot be mounted at '/'; use a directory such as /data")
                continue
            for other_name, other in paths:
                if _overlap(mount, other):
                    add(base, f"volume {name!r} at {mount} overlaps volume {other_name!r} at {other}")
            paths.append((name, mount))


def normalize_services(doc: Dict[str, Any]) -> None:
    """Fill each service mount's path from its volume's default path (the stored form)."""
    declared = {v["name"]: v for v in doc.get("volumes", [])}
    for svc in doc.get("services", []):
        for entry in svc.get("volumes", []):
            if not entry.get("path") and declared.get(entry["name"], {}).get("path"):
                entry["path"] = declared[entry["name"]]["path"]
