"""Flags shared by the commands that start the engine (run, python, measure).

Each flag is the command-line twin of a CITADEL_* setting; a flag wins over the environment.
The engine itself validates the values, so the messages are the same whichever way they came.
"""

from __future__ import annotations

import argparse
import os
from typing import Dict, Optional

from citadel.launch.launcher import settings_from_environment

# (flag, setting, help)
ENGINE_FLAGS = (
    ("--mode", "CITADEL_MODE", "hw, sim or auto (default auto: hw where a TEE is found, else sim with a warning)"),
    ("--heap", "CITADEL_HEAP", "heap limit with K/M/G suffix, e.g. 256M (enforced)"),
    ("--stack", "CITADEL_STACK", "stack size for threads with K/M/G suffix, e.g. 8M"),
    ("--allow-dlopen", "CITADEL_ALLOW_DLOPEN",
     "1 = allow loading unprotected libraries (debug only; warns; changes the measurement)"),
    ("--log", "CITADEL_LOG", "engine log level: error, warning, info or debug"),
    ("--engine", "CITADEL_ENGINE",
     "the interpreter the engine runs on: cpython (default), pypy3 or an absolute path (changes the measurement)"),
)

SETTINGS_HELP = """\
settings (environment variables; the flags above override them):
  CITADEL_MODE          hw | sim | auto
  CITADEL_HEAP          heap limit, e.g. 256M
  CITADEL_STACK         thread stack size, e.g. 8M
  CITADEL_ALLOW_DLOPEN  1 to allow unprotected libraries (debug; part of the measurement)
  CITADEL_VERSION=1     print every setting, the mode, the measurement and the image tag on stderr
  CITADEL_HASH=1        print the engine measurement and exit
  CITADEL_LOG           error | warning | info | debug
  CITADEL_ENGINE        cpython | pypy3 | /path/to/python (the engine's interpreter; part of the measurement)
"""

CAS_SETTINGS_HELP = """\
  CITADEL_CAS_ADDR      the CAS to attest to (--cas), e.g. https://127.0.0.1:8443
  CITADEL_CONFIG_ID     the configuration to ask it for (--config-id), SESSION/SERVICE
  CITADEL_CAS_FINGERPRINT  the CAS key the engine pins (--cas-fingerprint; part of the measurement)
  CITADEL_PLATFORM_KEY  sim mode: the platform key the engine signs its evidence with
                        (default ~/.config/citadel/platform.key; `citadel platform add` makes it)
  CITADEL_TPM           hw mode with a TPM: tcp:HOST:PORT (swtpm) or a device (default /dev/tpmrm0)
"""


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine settings")
    for flag, _setting, help_text in ENGINE_FLAGS:
        group.add_argument(flag, metavar=flag.lstrip("-").split("-")[0].upper(), help=help_text)


def engine_settings(args: argparse.Namespace, extra: Optional[Dict[str, Optional[str]]] = None) -> Dict[str, str]:
    overrides: Dict[str, Optional[str]] = {
        setting: getattr(args, flag.lstrip("-").replace("-", "_"), None) for flag, setting, _ in ENGINE_FLAGS
    }
    overrides.update(extra or {})
    return settings_from_environment(os.environ, overrides)


def add_image_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--image", required=required, metavar="IMAGE", help="the sealed image directory")
    parser.add_argument("--key-file", metavar="KEY", help="file holding the image key (64 hex digits)")
    parser.add_argument("--tag", metavar="TAG", help="refuse the image unless its tag is this (hex)")
    parser.add_argument("--cwd", metavar="DIR", help="working directory of the program (default: the current one)")


VOLUMES_HELP = """\
volumes:
  A volume is an encrypted directory that `citadel volume create` makes; the program sees it at
  MOUNT, an absolute path that need not exist on this machine (:ro mounts it read-only). Keys are
  read from the key files and reach the engine through a pipe, never its command line or
  environment; --volume-create also writes a new key file (mode 0600) if there is none.
  --tag-store FILE is the local record of each volume's latest tag, by NAME (`citadel volume
  create DIR --tag-store FILE --name NAME` starts it): an older copy of a volume is refused (exit
  status 74) and every commit of the run updates it. It is a stand-in kept on this machine: only
  a CAS also catches a host that rolls this file back. :ephemeral volumes need no tag store and
  have no rollback protection.
"""


def add_volume_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("volumes")
    group.add_argument("--volume", action="append", default=[], metavar="NAME=HOST_DIR:MOUNT[:OPTS]",
                       help="mount an encrypted volume (repeat for more); OPTS: ro, ephemeral")
    group.add_argument("--volume-key", action="append", default=[], metavar="NAME=FILE",
                       help="the key file of volume NAME")
    group.add_argument("--volume-create", action="append", default=[], metavar="NAME",
                       help="create volume NAME if its directory holds none yet")
    group.add_argument("--tag-store", metavar="FILE",
                       help="local tag store: refuse older states of rollback-protected volumes, record commits")


CAS_HELP = """\
with a CAS (--cas, --config-id):
  The engine attests to the CAS and receives the configuration SESSION/SERVICE: the image key and
  tag, the program and its arguments, environment, working directory, injected files and volume
  keys, as the session's policy says. The host names only the image (--image), where each volume
  is stored (--volume NAME=HOST_DIR) and, after --, arguments the policy may pass to the program
  (host_arguments: true); host environment variables reach the program only if the policy names
  them (host_environment). The CAS's key is pinned (--cas-fingerprint, else known_cas.json, else,
  on this machine, the local CAS's own fingerprint) and is part of the engine measurement.
  Exit status 77: the CAS refused (its reason is printed) or its key is not the pinned one;
  75: the CAS cannot be reached; 78: no sim platform key (run `citadel platform add`).
"""


def add_cas_arguments(parser: argparse.ArgumentParser, *, config_id: bool = True) -> None:
    group = parser.add_argument_group("CAS (attestation and configuration)")
    group.add_argument("--cas", metavar="URL", help="attest to this CAS, e.g. https://127.0.0.1:8443 "
                       "(default: $CITADEL_CAS_ADDR)")
    if config_id:
        group.add_argument("--config-id", metavar="SESSION/SERVICE",
                           help="the configuration to ask for (default: $CITADEL_CONFIG_ID)")
    group.add_argument("--cas-fingerprint", metavar="SHA256",
                       help="pin the CAS's key (from `citadel cas fingerprint`); part of the engine measurement")
