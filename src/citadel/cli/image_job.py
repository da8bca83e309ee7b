"""Build a launch job from the image and volume arguments of `citadel run` and `citadel python`."""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List, Optional

from citadel.errors import UsageError
from citadel.launch.launcher import LaunchJob
from citadel.seal.keytext import parse_key


def job_from_args(args: argparse.Namespace, volumes: Optional[List[Dict[str, Any]]] = None) -> LaunchJob:
    if args.cwd and not os.path.isdir(args.cwd):
        cwd = os.path.abspath(args.cwd)
        mount = next((v["mount"] for v in volumes or [] if _inside(cwd, v["mount"])), None)
        if mount is not None:
            raise UsageError(f"--cwd {args.cwd!r} is inside the volume mounted at {mount} and does not exist on "
                             "this machine", "create the directory here (it stays empty: the engine serves the "
                             "volume in its place), or use a working directory outside the volume")
        raise UsageError(f"--cwd {args.cwd!r} is not a directory", "pass an existing directory")
    job = LaunchJob(cwd=os.path.abspath(args.cwd) if args.cwd else os.getcwd(), volumes=volumes)
    if args.image:
        if not os.path.isdir(args.image):
            raise UsageError(f"image {args.image!r} does not exist or is not a directory",
                             "pass the directory written by `citadel seal -o IMAGE`")
        if not args.key_file:
            raise UsageError("--image needs --key-file KEY",
                             "pass the key file written by `citadel seal --key-out` (or run with a CAS session)")
        job.image = args.image
        job.key = parse_key(_read_key_file(args.key_file))
        job.expected_tag = args.tag
    elif args.key_file:
        raise UsageError("--key-file given without --image", "add --image IMAGE")
    return job


def _read_key_file(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read(4096)
    except OSError as exc:
        raise UsageError(f"cannot read the key file {path!r}: {exc.strerror}", "check the --key-file path") from None


VOLUME_OPTIONS = ("ro", "ephemeral")


def volumes_from_args(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """The launch request's "volumes" from --volume, --volume-key, --volume-create and --tag-store.

    Key files are read here and their contents go into the request (a pipe), never argv or env.
    """
    specs: Dict[str, Dict[str, Any]] = {}
    for text in getattr(args, "volume", None) or []:
        spec = _parse_volume(text)
        if spec["name"] in specs:
            raise UsageError(f"--volume names {spec['name']!r} twice", "give each volume its own name")
        specs[spec["name"]] = spec
    for name in getattr(args, "volume_create", None) or []:
        if name not in specs:
            raise UsageError(f"--volume-create names {name!r}, but no --volume has that name",
                             f"add --volume {name}=HOST_DIR:MOUNT, or fix the name")
        if specs[name]["read_only"]:  # before any key file is written for it
            raise UsageError(f"volume {name!r} is read-only (:ro) and cannot be created", "drop :ro or --volume-create")
        specs[name]["create"] = True
    keys = _named_values(getattr(args, "volume_key", None) or [], "--volume-key", "NAME=FILE")
    for name, path in keys.items():
        if name not in specs:
            raise UsageError(f"--volume-key names {name!r}, but no --volume has that name",
                             f"add --volume {name}=HOST_DIR:MOUNT, or fix the name")
        if specs[name]["create"] and not os.path.exists(path):
            specs[name]["key"] = _new_volume_key(path, name)
        else:
            specs[name]["key"] = _read_volume_key(path, name)
    tag_store = getattr(args, "tag_store", None)
    for name, spec in specs.items():
        if "key" not in spec:
            raise UsageError(f"volume {name!r} has no key", f"add --volume-key {name}=FILE (the file "
                             "`citadel volume create --key-file` wrote)")
        if spec["policy"] == "rollback-protected":
            if not tag_store:
                raise UsageError(f"volume {name!r} is rollback-protected, but no --tag-store was given",
                                 "pass --tag-store FILE (the file `citadel volume create --tag-store` used), or "
                                 f"mount it with {name}=DIR:MOUNT:ephemeral to run without rollback protection")
            spec["tag_store"] = os.path.abspath(tag_store)
    return list(specs.values())


def _parse_volume(text: str) -> Dict[str, Any]:
    """NAME=HOST_DIR:MOUNT[:ro][:ephemeral] (options also comma-separated) -> a request entry."""
    name, sep, rest = text.partition("=")
    usage = "write --volume NAME=HOST_DIR:MOUNT[:ro][:ephemeral], e.g. --volume out=./vol-out:/data/out"
    if not sep or not name or not rest:
        raise UsageError(f"--volume {text!r} is not NAME=HOST_DIR:MOUNT", usage)
    parts = rest.split(":")
    options: List[str] = []
    while len(parts) > 2 and all(o in VOLUME_OPTIONS for o in parts[-1].split(",")):
        options += parts.pop().split(",")
    if len(parts) > 2 and not parts[-1].startswith("/") and parts[-2].startswith("/"):
        raise UsageError(f"--volume {text!r} has an unknown option {parts[-1]!r}",
                         f"the options are {', '.join(sorted(VOLUME_OPTIONS))}; {usage}")
    if len(parts) < 2 or not parts[-1].startswith("/"):
        raise UsageError(f"--volume {text!r} has no absolute mount path", usage)
    host_dir, mount = ":".join(parts[:-1]), parts[-1]
    if not host_dir:
        raise UsageError(f"--volume {text!r} has no host directory", usage)
    return {"name": name, "host_dir": os.path.abspath(host_dir), "mount": os.path.normpath(mount),
            "expected_tag": None, "policy": "ephemeral" if "ephemeral" in options else "rollback-protected",
            "tag_store": None, "create": False, "read_only": "ro" in options}


def _named_values(items: List[str], flag: str, form: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"{flag} {item!r} is not {form}", f"write {flag} {form}")
        if name in out:
            raise UsageError(f"{flag} names {name!r} twice", f"give one {flag} per volume")
        out[name] = value
    return out


def _new_volume_key(path: str, name: str) -> str:
    """--volume-create with a key file that does not exist yet: a new random key, written mode 0600."""
    from citadel.cli.output import info

    key = os.urandom(32).hex()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot write the new key file of volume {name!r} ({path}): {exc.strerror}",
                         "choose a writable path for --volume-key") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    info(f"citadel: wrote a new key for volume {name!r} to {path} (keep it secret; without it the data is lost)")
    return key


def _read_volume_key(path: str, name: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            text = fh.read(4096).strip()
    except OSError as exc:
        raise UsageError(f"cannot read the key file of volume {name!r} ({path}): {exc.strerror}",
                         "check the --volume-key path") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise UsageError(f"the key file of volume {name!r} ({path}) does not hold 64 hex digits",
                         "pass the key file written by `citadel volume create --key-file`")
    return key.hex()


def _inside(path: str, mount: str) -> bool:
    return path == mount or path.startswith(mount.rstrip("/") + "/")


# --- the CAS flow --------------------------------------------------------------------------------
LOCAL_ONLY_FLAGS = (("key_file", "--key-file"), ("tag", "--tag"), ("module", "-m"), ("volume_key", "--volume-key"),
                    ("volume_create", "--volume-create"), ("tag_store", "--tag-store"))


def cas_requested(args: argparse.Namespace, environ: Optional[Dict[str, str]] = None) -> bool:
    """`citadel run` asks a CAS when --cas or --config-id is given, or CITADEL_CONFIG_ID is set without --key-file."""
    env = os.environ if environ is None else environ
    if getattr(args, "cas", None) or getattr(args, "config_id", None):
        return True
    return bool(env.get("CITADEL_CONFIG_ID")) and not getattr(args, "key_file", None)


class CasJob:
    """A launch job for the CAS flow and the settings that go with it (the pin is measured)."""

    def __init__(self, job: LaunchJob, settings: Dict[str, str], pinned: Any) -> None:
        self.job = job
        self.settings = settings
        self.pinned = pinned  # citadel.launch.caspin.PinnedCas


def cas_job_from_args(args: argparse.Namespace, host_args: List[str],
                      environ: Optional[Dict[str, str]] = None) -> CasJob:
    """The job for `citadel run --cas URL --config-id SESSION/SERVICE --image IMAGE [--volume NAME=DIR] [-- ARGS]`."""
    from citadel.engine.settings import parse_config_id
    from citadel.launch.caspin import platform_key_path, resolve_pin

    env = dict(os.environ if environ is None else environ)
    for attr, flag in LOCAL_ONLY_FLAGS:
        if getattr(args, attr, None):
            raise UsageError(f"{flag} cannot be used with a CAS: the session's policy decides it",
                             "drop it; with a CAS the host names only --image, --volume NAME=HOST_DIR and "
                             "the arguments after --")
    config_text = getattr(args, "config_id", None) or env.get("CITADEL_CONFIG_ID")
    if not config_text:
        raise UsageError("--cas needs --config-id SESSION/SERVICE (the configuration to ask for)",
                         "name the session and its service, e.g. --config-id hello/app")
    config_id = parse_config_id("--config-id", config_text.strip())
    if not args.image:
        raise UsageError("--image is required with a CAS", "pass the sealed image the session's policy names")
    if not os.path.isdir(args.image):
        raise UsageError(f"image {args.image!r} does not exist or is not a directory",
                         "pass the directory written by `citadel seal -o IMAGE`")
    if args.cwd and not os.path.isdir(args.cwd):
        raise UsageError(f"--cwd {args.cwd!r} is not a directory", "pass an existing directory")
    pinned = resolve_pin(getattr(args, "cas", None), getattr(args, "cas_fingerprint", None), env)
    cas = {"addr": pinned.url, "config_id": config_id, "fingerprint": pinned.fingerprint}
    job = LaunchJob(image=args.image, cwd=os.path.abspath(args.cwd) if args.cwd else os.getcwd(), cas=cas,
                    volumes=cas_volumes_from_args(args), host_env=env, host_args=host_args)
    settings = {"CITADEL_CAS_ADDR": pinned.url, "CITADEL_CONFIG_ID": config_id,
                "CITADEL_CAS_FINGERPRINT": pinned.fingerprint, "CITADEL_PLATFORM_KEY": platform_key_path(env)}
    return CasJob(job, settings, pinned)


def cas_volumes_from_args(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """--volume NAME=HOST_DIR: with a CAS the host says only where each volume is stored."""
    entries: Dict[str, Dict[str, Any]] = {}
    usage = "with a CAS write --volume NAME=HOST_DIR: the session's policy names the mount path"
    for text in getattr(args, "volume", None) or []:
        name, sep, host_dir = text.partition("=")
        if not sep or not name or not host_dir:
            raise UsageError(f"--volume {text!r} is not NAME=HOST_DIR", usage)
        if ":/" in host_dir or host_dir.endswith((":ro", ":ephemeral")):
            raise UsageError(f"--volume {text!r} names a mount path or options", usage)
        if name in entries:
            raise UsageError(f"--volume names {name!r} twice", "give each volume its own name")
        entries[name] = {"name": name, "host_dir": os.path.abspath(host_dir)}
    return list(entries.values())
