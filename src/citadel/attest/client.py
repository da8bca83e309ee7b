"""The engine's side of attestation: ask a pinned CAS for this engine's configuration.

Engine-safe: standard library (`http.client`, `ssl`) + `cryptography`, Python 3.9. The flow
(docs/attestation-protocol.md):

1. connect over TLS and check that the server's public key is the pinned one (SHA-256 of its
   SubjectPublicKeyInfo); the pin comes from the engine's measured configuration, so pointing the
   engine at another CAS changes its measurement;
2. ``POST /v1/attest/nonce`` -> a fresh nonce;
3. make an ephemeral X25519 key pair; ask the evidence provider for evidence of `kind` whose report
   data is ``binding.report_data(nonce, public key)``;
4. ``POST /v1/attest`` with the config id, the nonce, the public key and the evidence;
5. open the release (sealed to the ephemeral key, bound to nonce and config id) -> ReleasedConfig.

Typical use in the engine::

    from citadel.attest.client import attest_and_fetch
    config = attest_and_fetch(os.environ["CITADEL_CAS_ADDR"], os.environ["CITADEL_CONFIG_ID"],
                              pinned_fingerprint, provider, kind="sim")
    image = SealedImage.open(root, config.image_key, expected_tag=config.image_tag)

Volumes (docs/volumes.md, section 14): the release carries each volume's key, latest tag and a
commit token; `CasVolumeTagStore` (volume_client.py) is the CAS as the volumes' tag store::

    store = CasVolumeTagStore.from_release(cas_addr, pinned_fingerprint, config)
    for rv in config.released_volumes():
        on_commit = store.on_commit(rv.name) if rv.rollback_protected else None
        vol = Volume.open(host_dir, rv.key, expected_tag=rv.expected_tag, on_commit=on_commit, create=True)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import ipaddress
import json
import re
import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from citadel.attest import binding
from citadel.errors import CitadelError

if TYPE_CHECKING:  # volume_client imports this module
    from citadel.attest.volume_client import ReleasedVolume

DEFAULT_PORT = 8443
RELEASE_VERSION = 1
MAX_RESPONSE = 16 * 1024 * 1024

#: (kind, report_data) -> evidence bytes of that kind whose report data is `report_data`
EvidenceProvider = Callable[[str, bytes], bytes]
#: (method, path, body) -> extra headers (the CLI signs its requests this way)
RequestSigner = Callable[[str, str, bytes], Dict[str, str]]


class CasError(CitadelError):
    """Talking to the CAS failed."""

    exit_code = 75  # EX_TEMPFAIL: the CAS may be reachable later


class CasUnreachable(CasError):
    """No connection to the CAS (refused, timed out, name not found)."""


class CasPinMismatch(CasError):
    """The server's key is not the pinned one: another server, or someone in between."""

    exit_code = 77


class CasProtocolError(CasError):
    """The CAS answered something this client does not understand."""


class CasRequestFailed(CasError):
    """The CAS refused an administrative request (not found, conflict, forbidden, invalid...)."""

    exit_code = 1

    def __init__(
        self,
        status: int,
        code: str,
        cause: str,
        remedy: str = "",
        issues: Optional[List[Dict[str, Any]]] = None,
    ) -> None:
        super().__init__(cause, remedy)
        self.status = status
        self.code = code
        self.issues = issues or []


class AttestationRefused(CasRequestFailed):
    """The CAS verified the request and said no; `code` names the reason (docs/attestation-protocol.md)."""

    exit_code = 77  # EX_NOPERM


# --- addresses and pins -------------------------------------------------------------------------

_FP = re.compile(r"^[0-9a-f]{64}$")


def normalize_fingerprint(text: str) -> str:
    """Accept `sha256:AB:CD...`, `abcd...` and the like; return 64 lowercase hex digits."""
    value = text.strip().lower()
    if value.startswith("sha256:"):
        value = value[len("sha256:") :]
    value = value.replace(":", "")
    if not _FP.match(value):
        raise CasError(
            f"{text!r} is not a CAS fingerprint (64 hex digits of SHA-256)",
            "copy it from `citadel cas fingerprint` on the CAS's machine",
        )
    return value


def spki_fingerprint(cert_der: bytes) -> str:
    """SHA-256 of a certificate's SubjectPublicKeyInfo (stable when the certificate is renewed)."""
    cert = x509.load_der_x509_certificate(cert_der)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def parse_cas_address(addr: str) -> Tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` or `https://host:port[/]` -> (host, port)."""
    text = addr.strip()
    if text.startswith("https://"):
        text = text[len("https://") :]
    elif "://" in text:
        raise CasError(f"CAS address {addr!r} is not https", "the CAS only speaks TLS: use https://HOST:PORT")
    text = text.rstrip("/")
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise CasError(f"CAS address {addr!r} has no closing ']'", "for example https://[::1]:8443")
        host, rest = text[1:end], text[end + 1 :]
        if rest.startswith(":"):
            port = _port(rest[1:], addr)
        elif rest:
            raise CasError(f"CAS address {addr!r} is not HOST[:PORT]", "for example https://[::1]:8443")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text, addr)
    if not host or "/" in host:
        raise CasError(f"CAS address {addr!r} is not HOST[:PORT]", "for example https://127.0.0.1:8443")
    return host, port


def _port(text: str, addr: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise CasError(f"CAS address {addr!r} has an invalid port", "for example https://127.0.0.1:8443")
    return int(text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- transport ----------------------------------------------------------------------------------


class _PinnedConnection(http.client.HTTPSConnection):
    """HTTPS whose server key must hash to the pin; checked before any request byte is sent."""

    def __init__(self, host: str, port: int, pin: str, timeout: float) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The pin replaces the web PKI: the handshake proves possession of the server key, and the
        # key's hash must be the pinned one.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        super().__init__(host, port, timeout=timeout, context=context)
        self._pin = pin

    def connect(self) -> None:
        super().connect()
        der = self.sock.getpeercert(binary_form=True) if isinstance(self.sock, ssl.SSLSocket) else None
        if not der or spki_fingerprint(der) != self._pin:
            seen = spki_fingerprint(der) if der else "none"
            self.close()
            raise CasPinMismatch(
                f"the server at {self.host}:{self.port} has key {seen[:16]}..., not the pinned {self._pin[:16]}...",
                "check the address; if the CAS's key really changed, pin its new fingerprint "
                "(`citadel cas fingerprint` on its machine)",
            )


class CasTransport:
    """One keep-alive connection to a CAS, JSON in and out; reconnects once if the server closed it."""

    def __init__(
        self, addr: str, fingerprint: str, *, timeout: float = 10.0, signer: Optional[RequestSigner] = None
    ) -> None:
        self.host, self.port = parse_cas_address(addr)
        self.fingerprint = normalize_fingerprint(fingerprint)
        self.timeout = timeout
        self.signer = signer
        self._conn: Optional[_PinnedConnection] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> CasTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, method: str, path: str, doc: Any = None) -> Tuple[int, Any]:
        """Send JSON (or nothing), return (status, decoded JSON body or None)."""
        body = b"" if doc is None else json.dumps(doc, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.signer is not None:
            headers.update(self.signer(method, path, body))
        for attempt in (0, 1):
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.request(method, path, body=body or None, headers=headers)
                response = conn.getresponse()
                raw = response.read(MAX_RESPONSE + 1)
                status = response.status
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                break
            except CasError:
                raise
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if reused and attempt == 0:
                    continue
                raise CasUnreachable(
                    f"the CAS at {self.url} closed the connection", "check that it is running and reachable"
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise CasUnreachable(
                    f"cannot reach the CAS at {self.url}: {_describe(exc)}",
                    "check CITADEL_CAS_ADDR / --cas and that the CAS is running",
                ) from None
        if len(raw) > MAX_RESPONSE:
            raise CasProtocolError(f"the CAS at {self.url} sent an oversized answer", "check the address")
        try:
            return status, (json.loads(raw) if raw else None)
        except ValueError:
            raise CasProtocolError(
                f"the CAS at {self.url} answered {status} with a body that is not JSON",
                "check that the address is a Citadel CAS",
            ) from None

    def _connection(self) -> _PinnedConnection:
        if self._conn is None:
            conn = _PinnedConnection(self.host, self.port, self.fingerprint, self.timeout)
            try:
                conn.connect()
            except CasError:
                raise
            except (OSError, ssl.SSLError) as exc:
                conn.close()
                raise CasUnreachable(
                    f"cannot reach the CAS at {self.url}: {_describe(exc)}",
                    "check CITADEL_CAS_ADDR / --cas and that the CAS is running",
                ) from None
            self._conn = conn
        return self._conn

    def call(self, method: str, path: str, doc: Any = None, *, ok: Sequence[int] = (200, 201)) -> Any:
        """Like `request`, but any status not in `ok` raises the CAS's error (code, cause, remedy)."""
        status, answer = self.request(method, path, doc)
        if status in ok:
            return answer
        raise error_from_answer(status, answer, self.url)


def error_from_answer(status: int, answer: Any, url: str) -> CasRequestFailed:
    err = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(err, dict):
        return CasRequestFailed(
            status,
            "http_error",
            f"the CAS at {url} answered HTTP {status}",
            "check the address and the CAS's log",
        )
    cls = AttestationRefused if err.get("kind") == "refusal" else CasRequestFailed
    return cls(
        status,
        str(err.get("code", "error")),
        str(err.get("cause", "request failed")),
        str(err.get("remedy", "")),
        err.get("issues") if isinstance(err.get("issues"), list) else None,
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# --- the released configuration ------------------------------------------------------------------


@dataclass(frozen=True)
class ReleasedConfig:
    """What the CAS released for one service of one session (docs/attestation-protocol.md)."""

    config_id: str  # "session/service"
    session_hash: str  # the session version this release was made from
    image_key: Optional[bytes]  # 32 bytes: the sealed image's key
    image_tag: Optional[str]  # hex; the image's manifest must have this tag (None: any tag)
    argv: List[str]  # the program's argv (argv[0] is the script, or the module name with `module`)
    module: Optional[str]  # run like `python -m module`
    environment: Dict[str, str]  # the program's environment, secrets already substituted
    pwd: Optional[str]  # working directory
    files: Dict[str, bytes]  # injected files: absolute path -> content (serve from memory only)
    host_environment: Tuple[str, ...] = ()  # names the host may supply (policy pass-through)
    host_arguments: bool = False  # whether the host's arguments are appended to argv
    volumes: List[Dict[str, Any]] = field(default_factory=list)  # the session's volumes for this service
    allowed_executables: Tuple[str, ...] = ()  # absolute paths of programs the engine may start (unprotected)

    def effective_environment(self, host_env: Mapping[str, str]) -> Dict[str, str]:
        """The policy's environment plus only the host variables the policy passes through by name."""
        env = {name: host_env[name] for name in self.host_environment if name in host_env}
        env.update(self.environment)
        return env

    def effective_argv(self, host_args: Sequence[str]) -> List[str]:
        """The policy's argv, plus the host's arguments only if the policy passes them through."""
        return list(self.argv) + (list(host_args) if self.host_arguments else [])

    def released_volumes(self) -> List[ReleasedVolume]:
        """The volumes this service mounts, with their keys, latest tags and commit tokens."""
        from citadel.attest.volume_client import parse_volumes

        return parse_volumes(self.volumes)


def parse_release(plaintext: bytes, expected_config_id: str) -> ReleasedConfig:
    """Decode the decrypted release document; any deviation is a protocol error."""
    try:
        doc = json.loads(plaintext)
        if doc.get("version") != RELEASE_VERSION or doc.get("config_id") != expected_config_id:
            raise ValueError("version or config id")
        image = doc["image"]
        key = bytes.fromhex(image["key"]) if image.get("key") else None
        if key is not None and len(key) != 32:
            raise ValueError("image key size")
        files = {str(f["path"]): base64.b64decode(f["content"], validate=True) for f in doc["files"]}
        env = {str(k): str(v) for k, v in doc["environment"].items()}
        return ReleasedConfig(
            config_id=doc["config_id"],
            session_hash=str(doc["session_hash"]),
            image_key=key,
            image_tag=image.get("tag"),
            argv=[str(a) for a in doc["argv"]],
            module=doc.get("module"),
            environment=env,
            pwd=doc.get("pwd"),
            files=files,
            host_environment=tuple(str(n) for n in doc.get("host_environment", [])),
            host_arguments=bool(doc.get("host_arguments", False)),
            volumes=list(doc.get("volumes", [])),
            allowed_executables=_absolute_paths(doc.get("allowed_executables", [])),
        )
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise CasProtocolError(
            "the CAS's release is not a valid configuration document",
            "the CAS and the engine may be of different versions",
        ) from None


def _absolute_paths(items: Any) -> Tuple[str, ...]:
    """The release's allowed_executables: a list of absolute paths without NUL (else a protocol error)."""
    if not isinstance(items, list) or not all(isinstance(p, str) and p.startswith("/") and "\0" not in p
                                              for p in items):
        raise ValueError("allowed_executables")
    return tuple(items)


# --- the flow -------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise CasProtocolError(f"the CAS sent a {what} that is not base64", "check the CAS version") from None


class CasClient:
    """The attestation calls on one pinned connection (reuse it for several attestations)."""

    def __init__(self, cas_addr: str, fingerprint: str, *, timeout: float = 10.0) -> None:
        self.transport = CasTransport(cas_addr, fingerprint, timeout=timeout)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> CasClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def nonce(self) -> bytes:
        answer = self.transport.call("POST", "/v1/attest/nonce")
        return unb64(answer.get("nonce") if isinstance(answer, dict) else None, "nonce")

    def attest(
        self,
        config_id: str,
        provider: EvidenceProvider,
        *,
        kind: str,
        collateral: Optional[Mapping[str, Any]] = None,
    ) -> ReleasedConfig:
        """One full attestation: nonce, ephemeral key, evidence, release, decryption."""
        nonce = self.nonce()
        private, public = binding.generate_key_pair()
        evidence = provider(kind, binding.report_data(nonce, public))
        request: Dict[str, Any] = {
            "config_id": config_id,
            "kind": kind,
            "nonce": b64(nonce),
            "public_key": b64(public),
            "evidence": b64(evidence),
        }
        if collateral is not None:
            request["collateral"] = dict(collateral)
        answer = self.transport.call("POST", "/v1/attest", request)
        sealed = unb64(answer.get("release") if isinstance(answer, dict) else None, "release")
        plaintext = binding.open_sealed(private, sealed, context=binding.release_context(nonce, config_id))
        return parse_release(plaintext, config_id)


def attest_and_fetch(
    cas_addr: str,
    config_id: str,
    fingerprint: str,
    provider: EvidenceProvider,
    *,
    kind: str,
    collateral: Optional[Mapping[str, Any]] = None,
    timeout: float = 10.0,
) -> ReleasedConfig:
    """Attest to the CAS at `cas_addr` (pinned to `fingerprint`) and return the released configuration.

    Raises CasUnreachable, CasPinMismatch, AttestationRefused (with `.code`), CasProtocolError,
    or VerificationError (the release does not decrypt); all are CitadelErrors.
    """
    with CasClient(cas_addr, fingerprint, timeout=timeout) as client:
        return client.attest(config_id, provider, kind=kind, collateral=collateral)


# The CAS as the volumes' tag store lives in volume_client.py; its names are also reachable here.
_VOLUME_NAMES = frozenset(
    {
        "CasVolumeTagStore",
        "ReleasedVolume",
        "VolumeCommitUnknown",
        "VolumeTagRefused",
        "commit_volume_tag",
        "parse_volumes",
        "post_volume_commit",
        "volume_commit_answer",
    }
)


def __getattr__(name: str) -> Any:
    if name in _VOLUME_NAMES:
        from citadel.attest import volume_client

        return getattr(volume_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
