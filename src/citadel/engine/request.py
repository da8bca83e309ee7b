"""The launch request: the job the launcher hands the engine through a pipe (docs/engine.md).

The launcher writes one JSON document to a pipe and closes it; the engine finds the read end in
``CITADEL_LAUNCH_FD``, so the image key never appears in argv or the environment. Everything in
it is checked here before use. Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import json
import os

from citadel.errors import UsageError

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Any, Dict, List, Mapping, Optional

REQUEST_VERSION = 1
MAX_REQUEST_BYTES = 1 << 20
_HEX = frozenset("0123456789abcdefABCDEF")
_REMEDY = "start programs with `citadel run` or `citadel python`; the engine is not meant to be run by hand"


class LaunchRequest:
    """A validated launch request. Exactly one of script, module, command or interactive applies.

    ``argv`` is the program's sys.argv as the user wrote it: [script, *args], [module, *args], ...;
    the engine replaces ``argv[0]`` (the script's host path, the module's file, "-c", "").
    """

    __slots__ = ("image", "key", "expected_tag", "argv", "module", "interactive", "cwd", "command", "cas")

    def __init__(self, *, image: Optional[str], key: Optional[bytes], expected_tag: Optional[str],
                 argv: List[str], module: Optional[str], interactive: bool, cwd: Optional[str],
                 command: Optional[str] = None, cas: Optional[Dict[str, Any]] = None) -> None:
        self.image = image
        self.key = key
        self.expected_tag = expected_tag
        self.argv = argv
        self.module = module
        self.interactive = interactive
        self.cwd = cwd
        self.command = command  # like `python -c`
        self.cas = cas

    def __repr__(self) -> str:  # never the key
        return (f"LaunchRequest(kind={self.kind!r}, image={self.image!r}, argv={self.argv!r}, "
                f"module={self.module!r}, cwd={self.cwd!r})")

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
    chunks = []
    total = 0
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_REQUEST_BYTES:
                raise UsageError("the launch request is larger than 1 MiB", _REMEDY)
            chunks.append(chunk)
    except OSError as exc:
        raise UsageError(f"cannot read the launch request from descriptor {fd}: {exc.strerror}", _REMEDY) from None
    finally:
        _close_quietly(fd)
    return parse_request(b"".join(chunks))


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
    cas = doc.get("cas")
    if cas is not None and not isinstance(cas, dict):
        raise UsageError("the launch request's 'cas' is not an object", _REMEDY)
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
    if not chosen and not argv:
        raise UsageError("the launch request names nothing to run", "give a script, -m MODULE, or ask for a console")
    if not chosen and image is None:
        raise UsageError(f"the script {argv[0]!r} can only be run from a sealed image",
                         "seal the application with `citadel seal` and pass --image")
    return LaunchRequest(image=image, key=key, expected_tag=tag.lower() if tag else None, argv=list(argv),
                         module=module, interactive=interactive, cwd=cwd, command=command, cas=cas)


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
