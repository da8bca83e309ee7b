"""The typed view of a validated policy that evaluation and rendering use."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from citadel.cas.policy.references import KindRefs, refs_from_section

_PYTHON = re.compile(r"^(.*/)?(python|python3|python3\.\d+|pypy3?)$")


def split_command(command: Any) -> Tuple[List[str], Optional[str]]:
    """`app.py A B` / `-m pkg.mod A` / a list (a leading `python` dropped) -> (argv, module).

    Raises ValueError with a message for the policy author.
    """
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    if words and _PYTHON.match(words[0]):
        words = words[1:]
    if not words:
        raise ValueError("the command names no script or module")
    if words[0] == "-m":
        if len(words) < 2 or words[1].startswith("-"):
            raise ValueError("`-m` must be followed by a module name")
        return [words[1]] + words[2:], words[1]
    if words[0].startswith("-"):
        raise ValueError(f"interpreter option {words[0]!r} is not supported; start with a script or -m MODULE")
    return words, None


@dataclass(frozen=True)
class Attestation:
    tee: Tuple[str, ...]
    measurements: Tuple[Mapping[str, str], ...]
    tolerate: Tuple[str, ...]  # tolerance names
    platforms: Optional[Tuple[str, ...]]
    refs: Mapping[str, KindRefs] = field(default_factory=dict)  # kind -> its reference values
    advisories: Tuple[str, ...] = ()  # advisory ids tolerated ("*": any)

    @classmethod
    def from_doc(cls, att: Mapping[str, Any]) -> Attestation:
        tolerate = att.get("tolerate", [])
        return cls(
            tee=tuple(att["tee"]),
            measurements=tuple(att.get("measurements", [])),
            tolerate=tuple(t for t in tolerate if isinstance(t, str)),
            platforms=tuple(att["platforms"]) if att.get("platforms") else None,
            refs={kind: refs_from_section(kind, att[kind]) for kind in ("sgx", "tdx", "snp", "tpm") if att.get(kind)},
            advisories=tuple(a for t in tolerate if isinstance(t, dict) for a in t.get("advisories", [])),
        )


@dataclass(frozen=True)
class Service:
    name: str
    argv: List[str]
    module: Optional[str]
    environment: Dict[str, str]
    host_environment: List[str]
    host_arguments: bool
    pwd: Optional[str]
    image_key: str
    image_tag: Optional[str]
    attestation: Attestation
    inject_files: List[Dict[str, str]]
    volumes: List[Dict[str, str]]
    allowed_executables: Tuple[str, ...] = ()  # host programs the engine may start, unprotected


@dataclass(frozen=True)
class Policy:
    doc: Dict[str, Any]  # the normalized document (what is stored)
    services: Dict[str, Service]
    secrets: Dict[str, Dict[str, Any]]  # name -> spec
    volumes: Dict[str, Dict[str, Any]]

    @property
    def name(self) -> str:
        return str(self.doc["name"])

    def access(self, action: str) -> Sequence[str]:
        return list(self.doc["access_policy"][action])

    @classmethod
    def from_doc(cls, doc: Dict[str, Any]) -> Policy:
        services = {}
        for raw in doc.get("services", []):
            argv, module = split_command(raw["command"])
            att = raw["attestation"]
            services[raw["name"]] = Service(
                name=raw["name"],
                argv=argv,
                module=module,
                environment=dict(raw["environment"]),
                host_environment=list(raw["host_environment"]),
                host_arguments=bool(raw["host_arguments"]),
                pwd=raw.get("pwd"),
                image_key=raw["image"]["key"],
                image_tag=raw["image"].get("tag"),
                attestation=Attestation.from_doc(att),
                inject_files=list(raw["inject_files"]),
                volumes=list(raw["volumes"]),
                allowed_executables=tuple(raw.get("allowed_executables", ())),
            )
        return cls(
            doc=doc,
            services=services,
            secrets={s["name"]: s for s in doc.get("secrets", [])},
            volumes={v["name"]: v for v in doc.get("volumes", [])},
        )
