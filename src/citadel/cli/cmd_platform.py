"""Register simulation-mode platforms with a CAS (operators).

In sim mode no TEE vouches for the engine; a machine instead signs its engines' evidence with an
Ed25519 platform key, and a CAS accepts that evidence only from registered platforms, and only for
sessions that tolerate `sim`. Sim mode does not protect memory from the machine's root.

examples:
  citadel platform add build-host-1                  # makes ~/.config/citadel/platform.key if absent
  citadel platform add ci --key /etc/citadel/platform.key
  citadel platform add remote-7 --public-key 3b6a27bc...   # a key made on another machine
  citadel platform list
  citadel platform remove ci
"""

from __future__ import annotations

import argparse
from pathlib import Path

from citadel.cli.cmd_session import add_client_arguments, call
from citadel.cli.output import emit_json, info
from citadel.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("add", help="register a platform key (made if the key file does not exist)")
    p.add_argument("name", help="a name for the platform (policies may list it under attestation.platforms)")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--key",
        type=Path,
        metavar="PATH",
        help="the platform key file (default: $CITADEL_PLATFORM_KEY or ~/.config/citadel/platform.key)",
    )
    source.add_argument("--public-key", metavar="HEX", help="register a public key made elsewhere (64 hex digits)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_client_arguments(p)
    p = sub.add_parser("list", help="registered platforms")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_client_arguments(p)
    p = sub.add_parser("remove", help="unregister a platform")
    p.add_argument("name")
    add_client_arguments(p)


def _public_key(args: argparse.Namespace) -> str:
    from citadel.attest import sim

    if args.public_key:
        value = args.public_key.strip().lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise UsageError(
                "--public-key takes 64 hex digits (a raw Ed25519 public key)",
                "print it on the platform with `citadel platform add NAME --key PATH --json`",
            )
        return value
    path = args.key or sim.default_platform_key_path()
    if path.exists():
        key = sim.load_platform_key(path)
    else:
        key = sim.create_platform_key(path)
        info(f"citadel: made the platform key {path} (engines on this machine sign sim evidence with it)")
    return sim.public_bytes(key).hex()


def run(args: argparse.Namespace) -> int:
    if args.action == "add":
        row = call(args, "add_platform", args.name, _public_key(args))
        if args.json:
            emit_json(row)
        else:
            print(f"platform {row['name']} registered: fingerprint {row['fingerprint']}")
            print("sim mode: engines on it prove which machine they run on, not that their memory is protected")
        return 0
    if args.action == "list":
        rows = call(args, "list_platforms")
        if args.json:
            emit_json(rows)
        else:
            for row in rows:
                print(f"{row['name']}\t{row['kind']}\t{row['fingerprint']}")
        return 0
    call(args, "remove_platform", args.name)
    print(f"platform {args.name} removed")
    return 0
