"""The launch request: the job the launcher hands the engine through a pipe (docs/engine.md).

The launcher writes one JSON document to a pipe and closes it; the engine finds the read end in
``CITADEL_LAUNCH_FD``, so the image key never appears in argv or the environment. Everything in
it is checked here before use. Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import json
import os

from citadel.engine.fdio import read_bounded
from citadel.errors import UsageError

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Any, Dict, List, Mapping, Optional

REQUEST_VERSION = 1
MAX_REQUEST_BYTES = 1 << 20
_HEX = frozenset("0123456789abcdefABCDEF")
ROLLBACK_PROTECTED = "rollback-protected"  # every commit is a compare-and-swap of the volume's tag
EPHEMERAL = "ephemeral"  # no tag store: the host's copy is trusted as it is (no rollback protection)
VOLUME_POLICIES = (ROLLBACK_PROTECTED, EPHEMERAL)
_VOLUME_FIELDS = frozenset({"name", "host_dir", "mount", "key", "expected_tag", "policy", "tag_store", "create",
                            "read_only"})
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_REMEDY = "start programs with `citadel run` or `citadel python`; the engine is not meant to be run by hand"


class LaunchRequest:
    """A validated launch request. Exactly one of script, module, command or interactive applies.

    ``argv`` is the program's sys.argv as the user wrote it: [script, *args], [module, *args], ...;
    the engine replaces ``argv[0]`` (the script's host path, the module's file, "-c", "").
    """

    __slots__ = ("image", "key", "expected_tag", "argv", "module", "interactive", "cwd", "command", "cas",
                 "volumes", "host_env", "host_args")

    def __init__(self, *, image: Optional[str], key: Optional[bytes], expected_tag: Optional[str],
                 argv: List[str], module: Optional[str], interactive: bool, cwd: Optional[str],
                 command: Optional[str] = None, cas: Optional[CasFields] = None,
                 volumes: Optional[List[VolumeSpec]] = None, host_env: Optional[Dict[str, str]] = None,
                 host_args: Optional[List[str]] = None) -> None:
        self.image = image
        self.key = key
        self.expected_tag = expected_tag
        self.argv = argv
        self.module = module
        self.interactive = interactive
        self.cwd = cwd
        self.command = command  # like `python -c`
        self.cas = cas  # the CAS flow: where to attest; the program and the keys come from its release
        self.volumes: List[VolumeSpec] = list(volumes or [])
        # the CAS flow only: the host's environment and arguments, which the engine passes to the
        # program only where the session's policy names them (host_environment, host_arguments)
        self.host_env: Dict[str, str] = dict(host_env or {})
        self.host_args: List[str] = list(host_args or [])

    def __repr__(self) -> str:  # never the key, nor the host's environment
        return (f"LaunchRequest(kind={self.kind!r}, image={self.image!r}, argv={self.argv!r}, "
                f"module={self.module!r}, cwd={self.cwd!r}, cas={self.cas!r}, volumes={self.volumes!r})")

    @property
    def kind(self) -> str:
        if self.interactive:
            return "interactive"
        if self.module is not None:
            return "module"
        if self.command is not None:
            return "command"
        return "script"


def read_request(env: Mapping[str, str]) -> LaunchRequest:
    """Read, close and validate the request whose descriptor CITADEL_LAUNCH_FD names."""
    text = env.get("CITADEL_LAUNCH_FD", "")
    if not text:
        raise UsageError("the engine was started without a launch request (CITADEL_LAUNCH_FD is not set)", _REMEDY)
    if not text.isdigit() or int(text) < 3:
        raise UsageError(f"CITADEL_LAUNCH_FD={text!r} is not a usable file descriptor", _REMEDY)
    fd = int(text)
    try:
        data = read_bounded(fd, MAX_REQUEST_BYTES)
    except OSError as exc:
        raise UsageError(f"cannot read the launch request from descriptor {fd}: {exc.strerror}", _REMEDY) from None
    finally:
        _close_quietly(fd)
    if data is None:
        raise UsageError("the launch request is larger than 1 MiB", _REMEDY)
    return parse_request(data)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        return


def parse_request(raw: bytes) -> LaunchRequest:
    """Validate a request document; UsageError names the first field that is wrong."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UsageError("the launch request is not valid JSON", _REMEDY) from None
    if not isinstance(doc, dict):
        raise UsageError("the launch request is not a JSON object", _REMEDY)
    if doc.get("version") != REQUEST_VERSION:
        raise UsageError(f"launch request version {doc.get('version')!r} is not supported (this engine reads 1)",
                         "use the citadel command of the same installation as the engine")
    image = _optional_str(doc, "image")
    if image is not None and not os.path.isabs(image):
        raise UsageError(f"the launch request's image path {image!r} is not absolute", _REMEDY)
    key = _key(doc.get("key"))
    cas = _cas(doc.get("cas"))
    if cas is not None:
        _check_cas_request(doc, image, key)
    if image is not None and key is None and cas is None:
        raise UsageError("the launch request names an image but no key", "pass --key-file with the image key")
    tag = _optional_str(doc, "expected_tag")
    if tag is not None and (len(tag) != 64 or not set(tag) <= _HEX):
        raise UsageError("the expected image tag is not 64 hex digits", "copy the tag `citadel seal` printed")
    argv = doc.get("argv", [])
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise UsageError("the launch request's argv is not a list of strings", _REMEDY)
    module = _optional_str(doc, "module")
    if module is not None and not all(part.isidentifier() for part in module.split(".")):
        raise UsageError(f"{module!r} is not a module name", "name a module like package.module")
    command = _optional_str(doc, "command")
    interactive = doc.get("interactive", False)
    if not isinstance(interactive, bool):
        raise UsageError("the launch request's 'interactive' is not true or false", _REMEDY)
    cwd = _optional_str(doc, "cwd")
    if cwd is not None and not os.path.isabs(cwd):
        raise UsageError(f"the launch request's cwd {cwd!r} is not absolute", _REMEDY)
    chosen = [name for name, present in (("module", module is not None), ("command", command is not None),
                                          ("interactive", interactive)) if present]
    if len(chosen) > 1:
        raise UsageError(f"the launch request asks for {' and '.join(chosen)} at once", "ask for one of them")
    if cas is None and not chosen and not argv:
        raise UsageError("the launch request names nothing to run", "give a script, -m MODULE, or ask for a console")
    if not chosen and image is None:
        raise UsageError(f"the script {argv[0]!r} can only be run from a sealed image",
                         "seal the application with `citadel seal` and pass --image")
    host_env = doc.get("host_env", {})
    if not isinstance(host_env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in host_env.items()):
        raise UsageError("the launch request's host_env is not an object of strings", _REMEDY)
    host_args = doc.get("host_args", [])
    if not isinstance(host_args, list) or not all(isinstance(a, str) for a in host_args):
        raise UsageError("the launch request's host_args is not a list of strings", _REMEDY)
    volumes = _volumes(doc.get("volumes"), cas is not None)
    return LaunchRequest(image=image, key=key, expected_tag=tag.lower() if tag else None, argv=list(argv),
                         module=module, interactive=interactive, cwd=cwd, command=command, cas=cas,
                         volumes=volumes, host_env=host_env, host_args=host_args)


class CasFields:
    """The request's "cas": where to attest (``addr``), what to ask for (``config_id``) and the pin
    (``fingerprint``). Each may be None: the engine's settings (CITADEL_CAS_ADDR, CITADEL_CONFIG_ID,
    CITADEL_CAS_FINGERPRINT) supply it, and a value given in both places must agree (engine/cas.py)."""

    __slots__ = ("addr", "config_id", "fingerprint")

    def __init__(self, addr: Optional[str] = None, config_id: Optional[str] = None,
                 fingerprint: Optional[str] = None) -> None:
        self.addr = addr
        self.config_id = config_id
        self.fingerprint = fingerprint

    def __repr__(self) -> str:
        return f"CasFields(addr={self.addr!r}, config_id={self.config_id!r}, fingerprint={self.fingerprint!r})"


_CAS_FIELDS = ("addr", "config_id", "fingerprint")


def _cas(value: Any) -> Optional[CasFields]:
    """The request's "cas" object: {"addr", "config_id", "fingerprint"}, each a string or absent."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise UsageError("the launch request's 'cas' is not an object", _REMEDY)
    unknown = sorted(set(value) - set(_CAS_FIELDS))
    if unknown:
        raise UsageError(f"the launch request's 'cas' has an unknown field {unknown[0]!r}", _REMEDY)
    from citadel.engine.settings import parse_cas_addr, parse_config_id, parse_fingerprint

    parsed: Dict[str, Optional[str]] = {}
    for field, parse in (("addr", parse_cas_addr), ("config_id", parse_config_id),
                         ("fingerprint", parse_fingerprint)):
        text = value.get(field)
        if text is not None and not isinstance(text, str):
            raise UsageError(f"the launch request's cas.{field} is not a string", _REMEDY)
        parsed[field] = parse(f"cas.{field}", text.strip()) if text else None
    return CasFields(parsed["addr"], parsed["config_id"], parsed["fingerprint"])


def _check_cas_request(doc: Dict[str, Any], image: Optional[str], key: Optional[bytes]) -> None:
    """With a CAS, the session's policy names the program and its image key and tag: the host does not."""
    remedy = "with a CAS, the session's policy names the image key and tag and the program; pass only --image"
    if image is None:
        raise UsageError("the launch request asks a CAS for its configuration but names no image",
                         "pass --image IMAGE (the sealed image the session's policy names)")
    if key is not None:
        raise UsageError("the launch request gives an image key and asks a CAS for one", remedy)
    if doc.get("expected_tag") is not None:
        raise UsageError("the launch request gives an image tag and asks a CAS for one", remedy)
    for field in ("module", "command"):
        if doc.get(field) is not None:
            raise UsageError(f"the launch request names a {field} to run and asks a CAS for its program", remedy)
    if doc.get("interactive"):
        raise UsageError("an interactive console cannot be combined with a CAS: the session's policy names "
                         "the program", "run the policy's command with `citadel run --cas ...`")


class VolumeSpec:
    """One volume of the launch request: where it is on the host, where the program sees it, how it is
    protected. ``key`` is None only in the CAS flow, where the CAS releases it (docs/engine.md)."""

    __slots__ = ("name", "host_dir", "mount", "key", "expected_tag", "policy", "tag_store", "create", "read_only")

    def __init__(self, *, name: str, host_dir: str, mount: str, key: Optional[bytes],
                 expected_tag: Optional[str] = None, policy: str = ROLLBACK_PROTECTED,
                 tag_store: Optional[str] = None, create: bool = False, read_only: bool = False) -> None:
        self.name = name
        self.host_dir = host_dir
        self.mount = mount
        self.key = key
        self.expected_tag = expected_tag
        self.policy = policy
        self.tag_store = tag_store
        self.create = create
        self.read_only = read_only

    def __repr__(self) -> str:  # never the key
        return (f"VolumeSpec(name={self.name!r}, host_dir={self.host_dir!r}, mount={self.mount!r}, "
                f"policy={self.policy!r}, tag_store={self.tag_store!r}, create={self.create}, "
                f"read_only={self.read_only})")


def _volumes(value: Any, cas: bool) -> List[VolumeSpec]:
    """The request's "volumes": a list of objects with the fields of `VolumeSpec` (docs/engine.md)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise UsageError("the launch request's 'volumes' is not a list", _REMEDY)
    specs: List[VolumeSpec] = []
    for index, item in enumerate(value):
        spec = _volume(item, index, cas)
        if any(other.name == spec.name for other in specs):
            raise UsageError(f"the launch request names the volume {spec.name!r} twice", "give each volume one name")
        specs.append(spec)
    return specs


def _volume(item: Any, index: int, cas: bool) -> VolumeSpec:
    if not isinstance(item, dict):
        raise UsageError(f"volume {index} of the launch request is not an object", _REMEDY)
    name = item.get("name")
    if not isinstance(name, str) or not _is_volume_name(name):
        raise UsageError(f"volume {index} of the launch request has no valid name ({name!r})",
                         "name volumes with letters, digits, '.', '_' and '-' (at most 128), e.g. input")
    what = f"volume {name!r} of the launch request"
    unknown = sorted(set(item) - _VOLUME_FIELDS)
    if unknown:
        raise UsageError(f"{what} has an unknown field {unknown[0]!r}", _REMEDY)
    host_dir = _abs_path(item, "host_dir", what)
    mount = _abs_path(item, "mount", what)
    if host_dir is None or (mount is None and not cas):
        raise UsageError(f"{what} needs both 'host_dir' and 'mount'", _REMEDY)
    if mount is None:
        mount = ""  # the CAS flow: the session's policy names the mount path (VolumeBinding.mount)
    if mount == "/":
        raise UsageError(f"{what} is mounted at '/'", "mount volumes at a directory such as /data/out")
    key_text = item.get("key")
    if key_text is None and not cas:
        raise UsageError(f"{what} has no key", "pass the volume's key file (--volume-key NAME=FILE)")
    if key_text is not None and (not isinstance(key_text, str) or len(key_text) != 64 or not set(key_text) <= _HEX):
        raise UsageError(f"the key of {what} is not 64 hex digits",
                         "pass the key file written by `citadel volume create`")
    tag = item.get("expected_tag")
    if tag is not None and (not isinstance(tag, str) or len(tag) != 64 or not set(tag) <= _HEX):
        raise UsageError(f"the expected tag of {what} is not 64 hex digits", "copy the tag `citadel volume` printed")
    policy = item.get("policy", ROLLBACK_PROTECTED)
    if policy not in VOLUME_POLICIES:
        raise UsageError(f"the policy of {what} is {policy!r}", f"use one of {', '.join(VOLUME_POLICIES)}")
    tag_store = _abs_path(item, "tag_store", what)
    if tag_store is not None and policy == EPHEMERAL:
        raise UsageError(f"{what} is ephemeral but names a tag store",
                         "drop the tag store, or make the volume rollback-protected")
    create, read_only = _flag(item, "create", what), _flag(item, "read_only", what)
    if create and read_only:
        raise UsageError(f"{what} is to be created but is read-only", "create it in a writable run first")
    return VolumeSpec(name=name, host_dir=host_dir, mount=mount,
                      key=bytes.fromhex(key_text) if key_text is not None else None,
                      expected_tag=tag.lower() if tag else None, policy=policy, tag_store=tag_store,
                      create=create, read_only=read_only)


def _is_volume_name(name: str) -> bool:
    """The CAS's volume names: ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ (without importing re at start-up)."""
    return 0 < len(name) <= 128 and name[0] not in "._-" and set(name) <= _NAME_CHARS


def _abs_path(item: Dict[str, Any], field: str, what: str) -> Optional[str]:
    value = item.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise UsageError(f"the {field!r} of {what} is not an absolute path ({value!r})", _REMEDY)
    return os.path.normpath(value)


def _flag(item: Dict[str, Any], field: str, what: str) -> bool:
    value = item.get(field, False)
    if not isinstance(value, bool):
        raise UsageError(f"the {field!r} of {what} is not true or false", _REMEDY)
    return value


def _optional_str(doc: Dict[str, Any], name: str) -> Optional[str]:
    value = doc.get(name)
    if value is not None and (not isinstance(value, str) or not value or "\0" in value):
        raise UsageError(f"the launch request's {name!r} is not a non-empty string", _REMEDY)
    return value


def _key(value: Any) -> Optional[bytes]:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64 or not set(value) <= _HEX:
        raise UsageError("the image key in the launch request is not 64 hex digits",
                         "pass the key file written by `citadel seal`")
    return bytes.fromhex(value)
