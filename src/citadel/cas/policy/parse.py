"""Validate a session policy and normalize it; every problem points at a line of the YAML.

Order: YAML syntax, then the JSON Schema (all violations, in document order), then the rules a
schema cannot say: unique names, secret references that exist and have a valid encoding for their
place, certificate issuers and keys of the right kind and without cycles, readable imported
values, service volumes that exist, a usable image key, a command that names a script or module.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import jsonschema

from citadel.cas import secrets as secretlib
from citadel.cas.errors import PolicyInvalid
from citadel.cas.policy import kinds, refs, yamlsrc
from citadel.cas.policy import volumes as volume_rules
from citadel.cas.policy.model import Policy, split_command
from citadel.cas.policy.schema import EXECUTABLE_PATH, SCHEMA
from citadel.cas.policy.yamlsrc import Path

MAX_ISSUES = 20
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class ParsedPolicy:
    policy: Policy
    marks: Dict[Path, Tuple[int, int]]

    @property
    def doc(self) -> Dict[str, Any]:
        return self.policy.doc

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def predecessor(self) -> Optional[str]:
        value = self.policy.doc.get("predecessor")
        return str(value) if value else None


class _Issues:
    def __init__(self, marks: Dict[Path, Tuple[int, int]]) -> None:
        self.marks = marks
        self.items: List[Dict[str, Any]] = []

    def add(self, path: Path, message: str) -> None:
        line, column = yamlsrc.where(self.marks, path)
        self.items.append(
            {
                "line": line,
                "column": column,
                "path": yamlsrc.dotted(path),
                "pointer": yamlsrc.pointer(path),
                "message": f"{yamlsrc.dotted(path)}: {message}",
            }
        )


def parse_policy(text: str, source: str = "policy") -> ParsedPolicy:
    """Parse and validate a YAML policy; raise PolicyInvalid listing the problems with their lines."""
    try:
        data, marks = yamlsrc.load(text)
    except yamlsrc.YamlProblem as exc:
        w = exc.where
        raise PolicyInvalid(
            [{"line": w.line, "column": w.column, "path": "", "pointer": "", "message": w.message}], source
        ) from None
    return validate(data, marks, source)


def validate(data: Any, marks: Dict[Path, Tuple[int, int]], source: str = "policy") -> ParsedPolicy:
    issues = _Issues(marks)
    for error in sorted(_VALIDATOR.iter_errors(data), key=lambda e: yamlsrc.where(marks, _error_path(e))):
        issues.add(_error_path(error), _schema_message(error))
        if len(issues.items) >= MAX_ISSUES:
            break
    if not issues.items:
        _semantic(data, issues)
    if issues.items:
        issues.items.sort(key=lambda i: (i["line"], i["column"]))
        raise PolicyInvalid(issues.items[:MAX_ISSUES], source)
    return ParsedPolicy(Policy.from_doc(normalize(data)), marks)


def _error_path(error: jsonschema.ValidationError) -> Path:
    """Where an error is: at the first unknown key for `additionalProperties`, else at the value."""
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = error.schema.get("properties", {})
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            return path + (extra[0],)
    return path


def _schema_message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown field(s)")
    alternatives = error.context or []
    if error.validator in ("anyOf", "oneOf") and alternatives and all(e.validator == "required" for e in alternatives):
        return "needs one of the fields " + ", ".join(repr(e.schema["required"][0]) for e in error.context)
    if error.validator == "pattern" and error.schema.get("pattern") == EXECUTABLE_PATH:
        return (f"{error.instance!r} is not an absolute path: allowed_executables names each program by its "
                "absolute path (e.g. /usr/bin/convert), shorter than 4096 bytes")
    if error.validator == "oneOf" and error.context:
        best = max(error.context, key=lambda e: len(e.path))  # the branch that got furthest (first on ties)
        return best.message if error.schema.get("required") is None else error.message
    return error.message


def _unique(items: List[Dict[str, Any]], key: str, base: Path, issues: _Issues, what: str) -> None:
    seen = set()
    for i, item in enumerate(items):
        if item.get(key) in seen:
            issues.add(base + (i, key), f"duplicate {what} {item.get(key)!r}")
        seen.add(item.get(key))


def _semantic(doc: Dict[str, Any], issues: _Issues) -> None:
    secret_list: List[Dict[str, Any]] = doc.get("secrets", [])
    secrets = {s["name"]: s for s in secret_list}
    _unique(doc.get("services", []), "name", ("services",), issues, "service")
    _unique(secret_list, "name", ("secrets",), issues, "secret")
    _unique(doc.get("volumes", []), "name", ("volumes",), issues, "volume")
    _check_secrets(secret_list, secrets, issues)
    volumes = {v["name"] for v in doc.get("volumes", [])}
    for i, svc in enumerate(doc.get("services", [])):
        base: Path = ("services", i)
        try:
            split_command(svc["command"])
        except ValueError as exc:
            issues.add(base + ("command",), str(exc))
        if isinstance(svc["command"], str):
            _check_text(svc["command"], base + ("command",), secrets, issues, binary_ok=False)
        else:
            for j, word in enumerate(svc["command"]):
                _check_text(word, base + ("command", j), secrets, issues, binary_ok=False)
        for name, value in svc.get("environment", {}).items():
            _check_text(value, base + ("environment", name), secrets, issues, binary_ok=False)
        _check_image_key(svc["image"]["key"], base + ("image", "key"), secrets, issues)
        kinds.check_attestation(svc["attestation"], base + ("attestation",), issues.add)
        _unique(svc.get("inject_files", []), "path", base + ("inject_files",), issues, "injected file")
        for j, item in enumerate(svc.get("inject_files", [])):
            if "content" in item:
                _check_text(item["content"], base + ("inject_files", j, "content"), secrets, issues, binary_ok=True)
            elif item["secret"] not in secrets:
                issues.add(base + ("inject_files", j, "secret"), f"no secret named {item['secret']!r}")
        for j, vol in enumerate(svc.get("volumes", [])):
            if vol["name"] not in volumes:
                issues.add(base + ("volumes", j, "name"), f"no volume named {vol['name']!r} under `volumes`")
    volume_rules.check(doc, secrets, issues.add)


def _check_text(text: str, path: Path, secrets: Dict[str, Dict[str, Any]], issues: _Issues, *, binary_ok: bool) -> None:
    try:
        found = refs.find(text)
    except refs.MalformedRef as exc:
        issues.add(path, str(exc))
        return
    for ref in found:
        spec = secrets.get(ref.name)
        if spec is None:
            issues.add(path, f"reference to unknown secret {ref.name!r}")
            continue
        encoding = refs.encoding_of(ref, spec["kind"])
        if encoding not in refs.ENCODINGS[spec["kind"]]:
            issues.add(
                path,
                f"encoding {encoding!r} does not exist for {spec['kind']} secret {ref.name!r} "
                f"(use one of {', '.join(refs.ENCODINGS[spec['kind']])})",
            )
        elif not binary_ok and (spec["kind"], encoding) in refs.BINARY_ONLY:
            issues.add(path, f"binary secret {ref.name!r} needs :hex or :base64 here (raw bytes only go into files)")


def _check_image_key(value: str, path: Path, secrets: Dict[str, Dict[str, Any]], issues: _Issues) -> None:
    if _HEX64.match(value):
        return
    match = refs.REF.fullmatch(value)
    spec = secrets.get(match.group(1)) if match else None
    if match is None or spec is None:
        issues.add(path, "the image key is 64 hex digits or $$citadel:NAME$$ naming a binary secret")
        return
    if spec["kind"] != "binary" or match.group(2) not in (None, "raw"):
        issues.add(path, f"the image key must reference a binary secret without encoding, not {spec['kind']}")
    elif spec.get("value") is None and spec.get("size", secretlib.DEFAULT_SIZE) != 32:
        issues.add(path, f"the image key secret {spec['name']!r} must be 32 bytes")


def _check_secrets(secret_list: List[Dict[str, Any]], secrets: Dict[str, Dict[str, Any]], issues: _Issues) -> None:
    for i, spec in enumerate(secret_list):
        base: Path = ("secrets", i)
        problem = secretlib.check_import(spec)
        if problem:
            issues.add(base + ("value",), problem)
        kind = spec["kind"]
        allowed = {
            "ascii": {"size", "value"},
            "binary": {"size", "value", "encoding"},
            "private-key": {"value", "algorithm"},
            "x509-ca": {"value", "algorithm", "common_name", "issuer", "private_key", "valid_days"},
            "x509": {
                "value",
                "algorithm",
                "common_name",
                "issuer",
                "private_key",
                "dns",
                "ip",
                "valid_days",
                "usage",
            },
        }[kind]
        for field in sorted(set(spec) - {"name", "kind"} - allowed):
            issues.add(base + (field,), f"`{field}` does not apply to a {kind} secret")
        if "value" in spec and "size" in spec:
            issues.add(base + ("size",), "an imported secret has no size to generate")
        for ref_field, want in (("issuer", "x509-ca"), ("private_key", "private-key")):
            target = spec.get(ref_field)
            if target is not None and (target not in secrets or secrets[target]["kind"] != want):
                issues.add(base + (ref_field,), f"{ref_field} must name a {want} secret, {target!r} is not one")
        if kind == "x509" and "value" not in spec and not spec.get("issuer"):
            issues.add(base, "a generated x509 certificate needs an `issuer` (an x509-ca secret)")
        issuer = secrets.get(spec.get("issuer") or "")
        if issuer is not None and "value" in issuer and not issuer.get("private_key"):
            issues.add(base + ("issuer",), f"the imported CA {issuer['name']!r} has no private_key to issue with")
        for j, address in enumerate(spec.get("ip", [])):
            if not _is_ip(address):
                issues.add(base + ("ip", j), f"{address!r} is not an IP address")
    # cycles through issuer / private_key
    for i, spec in enumerate(secret_list):
        seen, current = {spec["name"]}, spec
        while current.get("issuer") in secrets:
            current = secrets[current["issuer"]]
            if current["name"] in seen:
                issues.add(("secrets", i, "issuer"), f"issuer chain of {spec['name']!r} loops")
                break
            seen.add(current["name"])


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def normalize(data: Dict[str, Any]) -> Dict[str, Any]:
    """Defaults filled in, hex lowercased, measurement shorthands expanded: the stored form."""
    doc = copy.deepcopy(data)
    doc["version"] = "1"
    doc["predecessor"] = doc["predecessor"].lower() if doc.get("predecessor") else None
    access = doc.setdefault("access_policy", {})
    for action in ("read", "update", "delete"):
        access.setdefault(action, ["CREATOR"])
    doc.setdefault("services", [])
    doc.setdefault("secrets", [])
    doc.setdefault("volumes", [])
    for svc in doc["services"]:
        for key, default in (
            ("environment", {}),
            ("host_environment", []),
            ("host_arguments", False),
            ("inject_files", []),
            ("volumes", []),
        ):
            svc.setdefault(key, copy.deepcopy(default))
        svc.setdefault("pwd", None)
        image = svc["image"]
        if _HEX64.match(image["key"]):
            image["key"] = image["key"].lower()
        image["tag"] = image["tag"].lower() if image.get("tag") else None
        att = svc["attestation"]
        att["tolerate"] = kinds.normalize_tolerate(att.get("tolerate", []))
        if "measurements" in att:
            att["measurements"] = [
                {"engine": m.lower()} if isinstance(m, str) else {k: v.lower() for k, v in m.items()}
                for m in att["measurements"]
            ]
        for kind in kinds.SECTIONS:
            if kind in att:
                att[kind] = kinds.normalize_section(kind, att[kind])
    volume_rules.normalize_services(doc)
    return doc
