"""The engine's settings: every ``CITADEL_*`` variable, parsed once, with one clear error each.

The launcher passes the settings to the engine as environment variables (flags of `citadel run`
become the same variables), so this is the single place that reads and checks them
(docs/engine.md lists them all). Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

from citadel.errors import UsageError

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Callable, Dict, Mapping, Optional, Tuple

MODES = ("hw", "sim", "auto")
LOG_LEVELS = ("error", "warning", "info", "debug")
MIN_HEAP = 16 << 20  # the engine itself (interpreter, cryptography) needs about 8 MiB of data
MIN_STACK = 64 << 10
MAX_STACK = 1 << 30

# Every variable the engine knows; others starting with CITADEL_ get a warning (a typo, usually).
KNOWN = frozenset({
    "CITADEL_MODE", "CITADEL_HEAP", "CITADEL_STACK", "CITADEL_ALLOW_DLOPEN", "CITADEL_VERSION",
    "CITADEL_HASH", "CITADEL_LOG", "CITADEL_TEE_ROOT", "CITADEL_CACHE_DIR", "CITADEL_REBUILD",
    "CITADEL_LAUNCH_FD", "CITADEL_CAS_ADDR", "CITADEL_CONFIG_ID", "CITADEL_CAS_FINGERPRINT",
    "CITADEL_PLATFORM_KEY", "CITADEL_TPM", "CITADEL_ENGINE",
})
#: CITADEL_ENGINE by name (or an absolute path to an interpreter); engines.py finds them
ENGINES = ("cpython", "pypy3")
#: names of sessions and services (the CAS's rule): ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_HEX_DIGITS = frozenset("0123456789abcdef")

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_TRUE = ("1", "yes", "true", "on")
_FALSE = ("", "0", "no", "false", "off")


class Settings:
    """The parsed settings. ``heap``/``stack`` are bytes, None when not set (no limit / default)."""

    __slots__ = ("mode", "heap", "stack", "allow_dlopen", "version", "hash_only", "log", "tee_root", "unknown",
                 "cas_addr", "config_id", "cas_fingerprint", "platform_key", "tpm", "engine")

    def __init__(self, mode: str = "auto", heap: Optional[int] = None, stack: Optional[int] = None,
                 allow_dlopen: bool = False, version: bool = False, hash_only: bool = False,
                 log: str = "warning", tee_root: str = "/", unknown: Tuple[str, ...] = (),
                 cas_addr: Optional[str] = None, config_id: Optional[str] = None,
                 cas_fingerprint: Optional[str] = None, platform_key: Optional[str] = None,
                 tpm: Optional[str] = None, engine: Optional[str] = None) -> None:
        self.mode = mode
        self.heap = heap
        self.stack = stack
        self.allow_dlopen = allow_dlopen
        self.version = version
        self.hash_only = hash_only
        self.log = log
        self.tee_root = tee_root
        self.unknown = unknown  # names of CITADEL_* variables the engine does not know
        self.cas_addr = cas_addr  # "https://HOST:PORT" (canonical form), where to attest
        self.config_id = config_id  # "SESSION/SERVICE", the configuration to ask for
        self.cas_fingerprint = cas_fingerprint  # the pinned CAS key: 64 lowercase hex digits (measured)
        self.platform_key = platform_key  # the sim platform key file (absolute), None: the default path
        self.tpm = tpm  # the TPM channel for hw mode: "tcp:HOST:PORT" or a device path; None: /dev/tpmrm0
        self.engine = engine  # CITADEL_ENGINE as the launcher read it: cpython, pypy3 or a path; None: unset

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Settings({fields})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def describe(self) -> Dict[str, str]:
        """Each setting as a person would write it (CITADEL_VERSION=1 prints these)."""
        return {
            "CITADEL_MODE": self.mode,
            "CITADEL_HEAP": format_size(self.heap) if self.heap else "unlimited",
            "CITADEL_STACK": format_size(self.stack) if self.stack else "default",
            "CITADEL_ALLOW_DLOPEN": "1 (unprotected libraries allowed: debugging only)" if self.allow_dlopen else "0",
            "CITADEL_LOG": self.log,
            "CITADEL_CAS_ADDR": self.cas_addr or "none",
            "CITADEL_CONFIG_ID": self.config_id or "none",
            "CITADEL_CAS_FINGERPRINT": f"sha256:{self.cas_fingerprint}" if self.cas_fingerprint else "none",
        }


MAX_SIZE = 1 << 62


def parse_size(name: str, text: str) -> int:
    """Bytes from '256M', '1G', '65536' (K, M, G, T are powers of 1024); UsageError otherwise."""
    value = text.strip().upper()
    for suffix in ("IB", "B"):
        if value.endswith(suffix) and value[:-len(suffix)][-1:] in ("K", "M", "G", "T"):
            value = value[: -len(suffix)]
    unit = value[-1:] if value[-1:] in _UNITS else ""
    number = value[: len(value) - len(unit)].strip()
    example = "8M" if name == "CITADEL_STACK" else "256M"
    if not number.isdigit() or not number.isascii():
        raise UsageError(f"{name}={text!r} is not a size",
                         f"use a number with K, M or G, e.g. {name}={example}")
    size = int(number) * _UNITS[unit]
    if size >= MAX_SIZE:  # the kernel's limits are C longs: larger values cannot even be expressed
        raise UsageError(f"{name}={text!r} is larger than any machine's memory",
                         f"use a size such as {name}={example}")
    return size


def format_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def parse_bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"{name}={text!r} is not a yes/no value", f"use {name}=1 to turn it on or {name}=0 for off")


def parse_settings(env: Mapping[str, str]) -> Settings:
    """Settings from an environment mapping; the first bad value raises UsageError naming it."""
    mode = env.get("CITADEL_MODE", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise UsageError(f"CITADEL_MODE={env['CITADEL_MODE']!r} is not a mode",
                         "use CITADEL_MODE=hw (a TEE is required), sim (no TEE) or auto (hw if available)")
    heap = _optional_size(env, "CITADEL_HEAP")
    if heap is not None and heap < MIN_HEAP:
        raise UsageError(f"CITADEL_HEAP={env['CITADEL_HEAP']} is too small; the engine alone needs about 8M",
                         f"use at least CITADEL_HEAP={format_size(MIN_HEAP)}, e.g. CITADEL_HEAP=256M")
    stack = _optional_size(env, "CITADEL_STACK")
    if stack is not None and not MIN_STACK <= stack <= MAX_STACK:
        raise UsageError(f"CITADEL_STACK={env['CITADEL_STACK']} is outside 64K..1G",
                         "use a stack size such as CITADEL_STACK=8M")
    log = env.get("CITADEL_LOG", "warning").strip().lower() or "warning"
    if log not in LOG_LEVELS:
        raise UsageError(f"CITADEL_LOG={env['CITADEL_LOG']!r} is not a log level",
                         "use CITADEL_LOG=error, warning, info or debug")
    tee_root = env.get("CITADEL_TEE_ROOT", "/") or "/"
    if not tee_root.startswith("/"):
        raise UsageError(f"CITADEL_TEE_ROOT={tee_root!r} is not an absolute path",
                         "give the directory under which /dev and /sys are probed, e.g. /")
    unknown = tuple(sorted(k for k in env if k.startswith("CITADEL_") and k not in KNOWN))
    cas_addr = _optional(env, "CITADEL_CAS_ADDR", parse_cas_addr)
    config_id = _optional(env, "CITADEL_CONFIG_ID", parse_config_id)
    fingerprint = _optional(env, "CITADEL_CAS_FINGERPRINT", parse_fingerprint)
    platform_key = _optional(env, "CITADEL_PLATFORM_KEY", _absolute_path)
    tpm = _optional(env, "CITADEL_TPM", parse_tpm)
    engine = _optional(env, "CITADEL_ENGINE", parse_engine)
    return Settings(
        mode=mode,
        heap=heap,
        stack=stack,
        allow_dlopen=parse_bool("CITADEL_ALLOW_DLOPEN", env.get("CITADEL_ALLOW_DLOPEN", "")),
        version=parse_bool("CITADEL_VERSION", env.get("CITADEL_VERSION", "")),
        hash_only=parse_bool("CITADEL_HASH", env.get("CITADEL_HASH", "")),
        log=log,
        tee_root=tee_root,
        unknown=unknown,
        cas_addr=cas_addr,
        config_id=config_id,
        cas_fingerprint=fingerprint,
        platform_key=platform_key,
        tpm=tpm,
        engine=engine,
    )


def _optional_size(env: Mapping[str, str], name: str) -> Optional[int]:
    text = env.get(name, "").strip()
    return parse_size(name, text) if text else None


def _optional(env: Mapping[str, str], name: str, parse: Callable[[str, str], str]) -> Optional[str]:
    text = env.get(name, "").strip()
    return parse(name, text) if text else None


def parse_cas_addr(name: str, text: str) -> str:
    """``https://HOST[:PORT][/]``, ``HOST:PORT`` or ``[V6]:PORT`` -> ``https://HOST:PORT`` (port 8443 by default)."""
    example = f"use {name}=https://HOST:PORT, e.g. {name}=https://127.0.0.1:8443"
    rest = text[len("https://"):] if text.startswith("https://") else text
    if "://" in rest:
        raise UsageError(f"{name}={text!r} is not an https address; the CAS only speaks TLS", example)
    rest = rest.rstrip("/")
    host, port = rest, "8443"
    if rest.startswith("["):
        end = rest.find("]")
        host, tail = rest[1:end], rest[end + 1:] if end > 0 else ""
        if end < 0 or (tail and not tail.startswith(":")):
            raise UsageError(f"{name}={text!r} is not HOST:PORT", example)
        port = tail[1:] or port
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    if not host or any(c in host for c in "/ \t@?#") or (":" in host and not rest.startswith("[")):
        raise UsageError(f"{name}={text!r} is not HOST:PORT", example)
    if not port.isdigit() or not port.isascii() or not 0 < int(port) < 65536:
        raise UsageError(f"{name}={text!r} has no valid port (1..65535)", example)
    return f"https://[{host}]:{int(port)}" if ":" in host else f"https://{host}:{int(port)}"


def _is_name(text: str) -> bool:
    return 0 < len(text) <= 128 and text[0] not in "._-" and set(text) <= _NAME_CHARS


def parse_config_id(name: str, text: str) -> str:
    """``SESSION/SERVICE``, each part a CAS name (letters, digits, '.', '_', '-'; at most 128)."""
    session, sep, service = text.partition("/")
    if not sep or not _is_name(session) or not _is_name(service):
        raise UsageError(f"{name}={text!r} is not SESSION/SERVICE",
                         f"name the session and its service, e.g. {name}=hello/app")
    return text


def parse_fingerprint(name: str, text: str) -> str:
    """The CAS pin: ``sha256:HEX``, ``HEX`` or ``AB:CD:...`` -> 64 lowercase hex digits."""
    value = text.lower()
    if value.startswith("sha256:"):
        value = value[len("sha256:"):]
    value = value.replace(":", "")
    if len(value) != 64 or not set(value) <= _HEX_DIGITS:
        raise UsageError(f"{name}={text!r} is not a CAS fingerprint (64 hex digits of SHA-256)",
                         "copy it from `citadel cas fingerprint` on the CAS's machine, e.g. sha256:6d2c...")
    return value


def _absolute_path(name: str, text: str) -> str:
    if not text.startswith("/") or "\0" in text:
        raise UsageError(f"{name}={text!r} is not an absolute path",
                         f"give the full path, e.g. {name}=/home/ada/.config/citadel/platform.key")
    return text


def parse_tpm(name: str, text: str) -> str:
    """``tcp:HOST:PORT`` (a software TPM such as swtpm) or an absolute device path (``/dev/tpmrm0``)."""
    if text.startswith("tcp:"):
        host, sep, port = text[4:].rpartition(":")
        if sep and host and port.isdigit() and port.isascii() and 0 < int(port) < 65536:
            return text
    elif text.startswith("/") and "\0" not in text:
        return text
    raise UsageError(f"{name}={text!r} is not a TPM channel",
                     f"use {name}=tcp:HOST:PORT (swtpm) or a device path such as {name}=/dev/tpmrm0")


def parse_engine(name: str, text: str) -> str:
    """``cpython``, ``pypy3`` (any case; ``pypy`` too) or an absolute path to an interpreter."""
    value = text.strip()
    lowered = value.lower()
    if lowered == "pypy":
        lowered = "pypy3"
    if lowered in ENGINES:
        return lowered
    if value.startswith("/") and "\0" not in value and not value.endswith("/"):
        return value
    raise UsageError(f"{name}={text!r} is not an engine",
                     f"use {name}=cpython (the default), {name}=pypy3 or the absolute path of an interpreter")
