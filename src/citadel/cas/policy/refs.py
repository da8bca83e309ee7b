"""Secret references: `$$citadel:NAME$$` or `$$citadel:NAME:ENCODING$$` inside text values.

Which encodings each kind of secret has, and which need a binary-safe place (a file):

    ascii        raw (default), hex, base64
    binary       raw (default; injected files only), hex, base64
    private-key  pem (default: PKCS#8 private key), public (SubjectPublicKeyInfo PEM)
    x509-ca      pem (default: the certificate), key (its private key, PKCS#8), chain (cert + issuers)
    x509         same as x509-ca
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Union

PREFIX = "$$citadel:"
REF = re.compile(r"\$\$citadel:([A-Za-z0-9][A-Za-z0-9._-]{0,127})(?::([a-z0-9-]{1,16}))?\$\$")

ENCODINGS = {
    "ascii": ("raw", "hex", "base64"),
    "binary": ("raw", "hex", "base64"),
    "private-key": ("pem", "public"),
    "x509-ca": ("pem", "key", "chain"),
    "x509": ("pem", "key", "chain"),
}
BINARY_ONLY = {("binary", "raw")}


@dataclass(frozen=True)
class Ref:
    name: str
    encoding: Optional[str]  # None: the kind's default
    start: int
    end: int


class MalformedRef(ValueError):
    pass


def find(text: str) -> List[Ref]:
    """Every reference in `text`; raise MalformedRef if `$$citadel:` starts something else."""
    refs = [Ref(m.group(1), m.group(2), m.start(), m.end()) for m in REF.finditer(text)]
    starts = {r.start for r in refs}
    index = text.find(PREFIX)
    while index != -1:
        if index not in starts:
            raise MalformedRef(
                f"malformed secret reference near {text[index : index + 40]!r}; "
                "write $$citadel:NAME$$ or $$citadel:NAME:ENCODING$$"
            )
        index = text.find(PREFIX, index + 1)
    return refs


def encoding_of(ref: Ref, kind: str) -> str:
    return ref.encoding or ENCODINGS[kind][0]


def substitute(text: str, resolve: Callable[[Ref], Union[str, bytes]]) -> Union[str, bytes]:
    """Replace each reference by `resolve(ref)`; bytes anywhere make the whole result bytes."""
    parts: List[Union[str, bytes]] = []
    last = 0
    for ref in find(text):
        parts.append(text[last : ref.start])
        parts.append(resolve(ref))
        last = ref.end
    parts.append(text[last:])
    if any(isinstance(p, bytes) for p in parts):
        return b"".join(p if isinstance(p, bytes) else p.encode("utf-8") for p in parts)
    return "".join(p for p in parts if isinstance(p, str))
