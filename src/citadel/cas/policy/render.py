"""Render one service's released configuration: secrets substituted, files in memory, volumes."""

from __future__ import annotations

import base64
from typing import Any, Dict, Mapping, Union

from citadel.cas import secrets as secretlib
from citadel.cas.policy import refs
from citadel.cas.policy.model import Policy, Service

RELEASE_VERSION = 1


def _resolver(stored: Mapping[str, secretlib.Stored]):
    def resolve(ref: refs.Ref) -> Union[str, bytes]:
        item = stored[ref.name]
        return secretlib.encode(item, refs.encoding_of(ref, item["kind"]), stored)

    return resolve


def _text(value: str, stored: Mapping[str, secretlib.Stored]) -> str:
    out = refs.substitute(value, _resolver(stored))
    return out if isinstance(out, str) else out.decode("utf-8")  # validation keeps raw bytes out of text


def _bytes(value: Union[str, bytes]) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def image_key_hex(service: Service, stored: Mapping[str, secretlib.Stored]) -> str:
    match = refs.REF.fullmatch(service.image_key)
    return str(stored[match.group(1)]["value"]) if match else service.image_key


def render_release(
    policy: Policy,
    stored: Mapping[str, secretlib.Stored],
    service_name: str,
    *,
    config_id: str,
    session_hash: str,
) -> Dict[str, Any]:
    """The release document (docs/attestation-protocol.md) for `service_name`; it holds secrets."""
    service = policy.services[service_name]
    files = []
    for item in service.inject_files:
        if "content" in item:
            content = _bytes(refs.substitute(item["content"], _resolver(stored)))
        else:
            secret = stored[item["secret"]]
            kind = secret["kind"]
            content = _bytes(secretlib.encode(secret, refs.ENCODINGS[kind][0], stored))
        files.append({"path": item["path"], "content": base64.b64encode(content).decode()})
    volumes = []
    for mount in service.volumes:
        entry = dict(policy.volumes[mount["name"]])
        entry["path"] = mount["path"]
        volumes.append(entry)
    return {
        "version": RELEASE_VERSION,
        "config_id": config_id,
        "session": policy.name,
        "service": service.name,
        "session_hash": session_hash,
        "image": {"key": image_key_hex(service, stored), "tag": service.image_tag},
        "argv": [_text(word, stored) for word in service.argv],
        "module": service.module,
        "environment": {name: _text(value, stored) for name, value in service.environment.items()},
        "pwd": service.pwd,
        "files": files,
        "host_environment": list(service.host_environment),
        "host_arguments": service.host_arguments,
        "volumes": volumes,
        "allowed_executables": list(service.allowed_executables),
    }
